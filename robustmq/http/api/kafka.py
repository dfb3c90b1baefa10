"""``/api/v1/kafka``: topics (list, create, delete, describe with partition offsets) and
consumer groups (list, describe with committed offsets and lag) of this node's Kafka
listener.

Topics go through the broker's ``TopicRegistry`` (the same path as CreateTopics and
DeleteTopics), partition offsets through the storage engine interface, committed
offsets through the broker's offset store (the Meta Service's ``offsets`` group, or the
engine), groups through the group coordinator. Groups known here are those whose members joined through this node's
coordinator; offsets committed by consumers outside a group are found by describing
their group id.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from robustmq.broker.kafka.registry import MAX_PARTITIONS, shard_name
from robustmq.errors import (
    ApiBadRequest,
    ApiConflict,
    ApiNotFound,
    ConfigError,
    KafkaInvalidConfig,
    KafkaInvalidPartitions,
    KafkaInvalidTopic,
    KafkaTopicAlreadyExists,
    KafkaUnknownTopicOrPartition,
    ShardNotFound,
)
from robustmq.http.api.common import (
    INT,
    NONEMPTY,
    PAGING,
    STR,
    Context,
    Param,
    Route,
    field_of,
    json_body,
    no_extra_fields,
    obj,
    page_of,
    paged,
)

_TOPIC = obj({"name": STR, "partitions": INT}, ["name", "partitions"])
_PARTITION = obj(
    {"partition": INT, "earliest_offset": INT, "latest_offset": INT},
    ["partition", "earliest_offset", "latest_offset"],
)
_TOPIC_DETAIL = obj(
    {
        "name": STR,
        "partitions": {"type": "array", "items": _PARTITION},
        "configs": {"type": "object", "additionalProperties": STR},
    },
    ["name", "partitions", "configs"],
)
_NAME = Param("name", "path", NONEMPTY, "topic name", required=True)


async def list_topics(ctx: Context, request: web.Request) -> Any:
    topics = ctx.kafka.topics.topics
    return paged(request, [{"name": n, "partitions": topics[n].partitions} for n in sorted(topics)])


def _configs_of(registry: Any, body: dict[str, Any]) -> dict[str, str] | None:
    """The body's ``configs`` (None when absent), checked as the shard config takes them."""
    configs = field_of(body, "configs", dict, None)
    if configs is None:
        return None
    for key, value in configs.items():
        if not isinstance(value, str):
            raise ApiBadRequest(f"configs.{key}", "expected a string value")
    try:
        registry.shard_config(configs)
    except (ValueError, ConfigError) as exc:
        raise ApiBadRequest("configs", str(exc)) from None
    return configs


async def create_topic(ctx: Context, request: web.Request) -> Any:
    registry = ctx.kafka.topics
    body = await json_body(request)
    no_extra_fields(body, ("name", "partitions", "configs"))
    name = field_of(body, "name", str)
    partitions = field_of(body, "partitions", int, registry.config.default_partitions)
    configs = _configs_of(registry, body) or {}
    try:
        topic = await registry.create(name, partitions, configs)
    except KafkaInvalidTopic as exc:
        raise ApiBadRequest("name", exc.message) from None
    except KafkaInvalidPartitions as exc:
        raise ApiBadRequest("partitions", exc.message) from None
    except KafkaTopicAlreadyExists as exc:
        raise ApiConflict(exc.message) from None
    except KafkaInvalidConfig as exc:
        raise ApiBadRequest("configs", exc.message) from None
    return {"name": topic.name, "partitions": topic.partitions}


async def describe_topic(ctx: Context, request: web.Request) -> Any:
    kafka = ctx.kafka
    name = request.match_info["name"]
    topic = kafka.topics.get(name)
    if topic is None:
        raise ApiNotFound(f"no topic {name!r}")
    partitions = []
    for p in range(topic.partitions):
        shard = shard_name(name, p)
        partitions.append(
            {
                "partition": p,
                "earliest_offset": await kafka.engine.earliest_offset(shard),
                "latest_offset": await kafka.engine.latest_offset(shard),
            }
        )
    return {"name": name, "partitions": partitions, "configs": dict(topic.configs)}


async def alter_topic(ctx: Context, request: web.Request) -> Any:
    """Grow a topic's partitions and/or replace its own configs (as Kafka's
    CreatePartitions and AlterConfigs do)."""
    registry = ctx.kafka.topics
    name = request.match_info["name"]
    body = await json_body(request)
    no_extra_fields(body, ("partitions", "configs"))
    partitions = field_of(body, "partitions", int, None)
    configs = _configs_of(registry, body)
    if partitions is None and configs is None:
        raise ApiBadRequest("partitions", "give partitions, configs or both")
    topic = registry.get(name)
    if topic is None:
        raise ApiNotFound(f"no topic {name!r}")
    try:
        if partitions is not None and partitions != topic.partitions:
            topic = await registry.add_partitions(name, partitions)
        if configs is not None:
            topic = await registry.alter_configs(name, configs)
    except KafkaUnknownTopicOrPartition:
        raise ApiNotFound(f"no topic {name!r}") from None
    except KafkaInvalidPartitions as exc:
        raise ApiBadRequest("partitions", exc.message) from None
    except KafkaInvalidConfig as exc:
        raise ApiBadRequest("configs", exc.message) from None
    return {"name": name, "partitions": topic.partitions, "configs": dict(topic.configs)}


async def delete_topic(ctx: Context, request: web.Request) -> Any:
    name = request.match_info["name"]
    try:
        await ctx.kafka.topics.delete(name)
    except KafkaUnknownTopicOrPartition:
        raise ApiNotFound(f"no topic {name!r}") from None
    return None


_GROUP = obj(
    {"group_id": STR, "state": STR, "protocol_type": STR, "members": INT},
    ["group_id", "state", "members"],
)
_OFFSET = obj(
    {"topic": STR, "partition": INT, "committed_offset": INT, "latest_offset": INT, "lag": INT},
    ["topic", "partition", "committed_offset", "latest_offset", "lag"],
)
_MEMBER = obj({"member_id": STR, "client_id": STR, "client_host": STR}, ["member_id"])
_GROUP_DETAIL = obj(
    {
        "group_id": STR,
        "state": STR,
        "protocol_type": STR,
        "protocol": STR,
        "generation": INT,
        "members": {"type": "array", "items": _MEMBER},
        "offsets": {"type": "array", "items": _OFFSET},
        "lag": INT,
    },
    ["group_id", "state", "members", "offsets", "lag"],
)


async def list_groups(ctx: Context, request: web.Request) -> Any:
    groups = ctx.kafka.groups.groups
    return paged(
        request,
        [
            {
                "group_id": g.group_id,
                "state": g.state,
                "protocol_type": g.protocol_type or "",
                "members": len(g.members),
            }
            for g in (groups[i] for i in sorted(groups))
        ],
    )


async def describe_group(ctx: Context, request: web.Request) -> Any:
    kafka = ctx.kafka
    group_id = request.match_info["group"]
    offsets = []
    for (topic, partition), committed in (await kafka.offsets.group_offsets(group_id)).items():
        if committed.offset < 0:
            continue  # deleted (EngineOffsets marks a deleted group's offsets with -1)
        try:
            latest = await kafka.engine.latest_offset(kafka.topics.shard(topic, partition))
        except ShardNotFound:
            continue  # its topic was deleted
        offsets.append(
            {
                "topic": topic,
                "partition": partition,
                "committed_offset": committed.offset,
                "latest_offset": latest,
                "lag": max(latest - committed.offset, 0),
            }
        )
    group = kafka.groups.groups.get(group_id)
    if group is None and not offsets:
        raise ApiNotFound(f"no group {group_id!r} (no members, no committed offsets)")
    offsets.sort(key=lambda o: (o["topic"], o["partition"]))
    members = [] if group is None else list(group.members.values())
    return {
        "group_id": group_id,
        "state": "Empty" if group is None else group.state,
        "protocol_type": (group.protocol_type if group else None) or "",
        "protocol": (group.protocol_name if group else None) or "",
        "generation": group.generation if group else 0,
        "members": [
            {"member_id": m.member_id, "client_id": m.client_id, "client_host": m.client_host}
            for m in members
        ],
        "offsets": offsets,
        "lag": sum(o["lag"] for o in offsets),
    }


ROUTES = (
    Route(
        "GET",
        "/api/v1/kafka/topics",
        list_topics,
        "Kafka topics",
        "kafka",
        page_of(_TOPIC),
        PAGING,
        errors=(400, 404),
    ),
    Route(
        "POST",
        "/api/v1/kafka/topics",
        create_topic,
        "Create a topic",
        "kafka",
        _TOPIC,
        body=obj(
            {
                "name": {"type": "string", "pattern": "^[a-zA-Z0-9._-]{1,249}$"},
                "partitions": {"type": "integer", "minimum": 1, "maximum": MAX_PARTITIONS},
                "configs": {"type": "object", "additionalProperties": STR},
            },
            ["name"],
        ),
        status=201,
        errors=(400, 404, 409),
    ),
    Route(
        "GET",
        "/api/v1/kafka/topics/{name}",
        describe_topic,
        "A topic with the earliest and latest offset of each partition",
        "kafka",
        _TOPIC_DETAIL,
        (_NAME,),
        errors=(404,),
    ),
    Route(
        "PATCH",
        "/api/v1/kafka/topics/{name}",
        alter_topic,
        "Grow a topic's partitions (never shrink) and/or replace its own configs",
        "kafka",
        obj(
            {
                "name": STR,
                "partitions": INT,
                "configs": {"type": "object", "additionalProperties": STR},
            },
            ["name", "partitions", "configs"],
        ),
        (_NAME,),
        body=obj(
            {
                "partitions": {"type": "integer", "minimum": 1, "maximum": MAX_PARTITIONS},
                "configs": {"type": "object", "additionalProperties": STR},
            },
            [],
        ),
        errors=(400, 404),
    ),
    Route(
        "DELETE",
        "/api/v1/kafka/topics/{name}",
        delete_topic,
        "Delete a topic and its data",
        "kafka",
        {},
        (_NAME,),
        status=204,
        errors=(404,),
    ),
    Route(
        "GET",
        "/api/v1/kafka/groups",
        list_groups,
        "Consumer groups",
        "kafka",
        page_of(_GROUP),
        PAGING,
        errors=(400, 404),
    ),
    Route(
        "GET",
        "/api/v1/kafka/groups/{group}",
        describe_group,
        "A group: members, committed offsets and lag per partition",
        "kafka",
        _GROUP_DETAIL,
        (Param("group", "path", NONEMPTY, "group id", required=True),),
        errors=(404,),
    ),
)
