"""The admin APIs: CreateTopics, DeleteTopics, CreatePartitions, DeleteRecords,
DescribeConfigs, AlterConfigs, IncrementalAlterConfigs and DescribeCluster.

One node holds one replica of every partition, so a replication factor other than 1 (or
-1, "the broker's default") is refused with INVALID_REPLICATION_FACTOR and replica
assignments may name this node only. Topic configs are validated against the keys in
``configs.py`` (an unknown key or a bad value is INVALID_CONFIG naming it) and stored
with the topic; ``retention.ms``, ``retention.bytes``, ``segment.bytes`` and
``segment.ms`` become the partition shards' config, so a change takes effect at the next
retention pass. Broker configs (the ``[kafka]`` section) are described but read-only.
Group deletion is with the group coordinator (``coordinator.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from robustmq._core.kafka_codec import RequestHeader
from robustmq.broker.kafka import configs as topic_configs
from robustmq.broker.kafka.configs import RESOURCE_BROKER, RESOURCE_TOPIC
from robustmq.broker.kafka.registry import (
    MAX_PARTITIONS,
    check_partition_count,
    shard_name,
    validate_topic_name,
)
from robustmq.errors import (
    KafkaError,
    KafkaInvalidConfig,
    KafkaInvalidPartitions,
    KafkaInvalidReplicaAssignment,
    KafkaInvalidReplicationFactor,
    KafkaInvalidRequest,
    KafkaOffsetOutOfRange,
    KafkaRequestTimedOut,
    KafkaTopicAlreadyExists,
    KafkaUnknownTopicOrPartition,
    MetaError,
    StorageError,
    kafka_error_code,
)

if TYPE_CHECKING:
    from robustmq.broker.kafka.server import KafkaBroker, KafkaConnection


async def handle_create_topics(
    broker: KafkaBroker, conn: KafkaConnection, header: RequestHeader, req: dict[str, Any]
) -> dict[str, Any]:
    results = []
    for t in req["topics"]:
        name = t["name"]
        configs = {c["name"]: c["value"] for c in t["configs"] if c["value"] is not None}
        partitions = len(t["assignments"]) or t["num_partitions"]
        if partitions == -1:
            partitions = broker.config.default_partitions
        out: dict[str, Any] = {"name": name, "error_code": 0, "error_message": None}
        try:
            validate_topic_name(name)
            if t["replication_factor"] not in (-1, 1):
                raise KafkaInvalidReplicationFactor(
                    f"replication factor {t['replication_factor']}; this cluster has 1 broker"
                )
            if not 1 <= partitions <= MAX_PARTITIONS:
                raise KafkaInvalidPartitions(f"{partitions} partitions; 1 to {MAX_PARTITIONS}")
            if broker.topics.get(name) is not None:
                raise KafkaTopicAlreadyExists(f"topic {name!r} already exists")
            topic_configs.validate(configs)
            if not req.get("validate_only"):
                await broker.topics.create(name, partitions, configs)
            out.update(num_partitions=partitions, replication_factor=1, configs=[])
        except (KafkaError, StorageError) as exc:
            out.update(error_code=kafka_error_code(exc), error_message=str(exc))
        results.append(out)
    return {"topics": results}


async def handle_delete_topics(
    broker: KafkaBroker, conn: KafkaConnection, header: RequestHeader, req: dict[str, Any]
) -> dict[str, Any]:
    responses = []
    for name in req["topic_names"]:
        topic = broker.topics.get(name)
        try:
            if topic is not None:
                # Committed offsets go first: if that fails the topic stays, whole, and
                # the client's retry deletes both; the other order could leave offsets
                # behind for a topic of the same name created later.
                await _delete_offsets(broker, name)
            await broker.topics.delete(name)
            code = 0
            for partition in range(topic.partitions if topic else 0):
                shard = shard_name(name, partition)
                broker.producers.forget_shard(shard)
                # A Fetch long-polling on the partition answers now (UNKNOWN_TOPIC_OR_PARTITION),
                # as Kafka completes a delayed fetch whose partition is gone.
                broker.arrivals.notify(shard)
        except (KafkaError, StorageError, MetaError) as exc:
            code = kafka_error_code(exc)
        responses.append({"name": name, "error_code": code})
    return {"responses": responses}


async def _delete_offsets(broker: KafkaBroker, topic: str) -> None:
    try:
        await broker.offsets.delete_topic(topic)
    except MetaError as exc:
        if exc.retriable:
            raise KafkaRequestTimedOut(
                f"topic {topic!r}: its committed offsets could not be deleted ({exc}); retry"
            ) from exc
        raise


async def handle_create_partitions(
    broker: KafkaBroker, conn: KafkaConnection, header: RequestHeader, req: dict[str, Any]
) -> dict[str, Any]:
    results = []
    names = [t["name"] for t in req["topics"]]
    for t in req["topics"]:
        name = t["name"]
        out: dict[str, Any] = {"name": name, "error_code": 0, "error_message": None}
        try:
            if names.count(name) > 1:
                raise KafkaInvalidRequest(f"topic {name!r} appears more than once")
            topic = broker.topics.get(name)
            if topic is None:
                raise KafkaUnknownTopicOrPartition(f"topic {name!r} does not exist")
            check_partition_count(topic, t["count"])
            assignments = t["assignments"]
            if assignments is not None:
                if len(assignments) != t["count"] - topic.partitions:
                    raise KafkaInvalidReplicaAssignment(
                        f"{len(assignments)} assignments for "
                        f"{t['count'] - topic.partitions} new partitions"
                    )
                if any(a["broker_ids"] != [broker.node_id] for a in assignments):
                    raise KafkaInvalidReplicaAssignment(
                        f"replicas may be on broker {broker.node_id} only"
                    )
            if not req["validate_only"]:
                await broker.topics.add_partitions(name, t["count"])
        except (KafkaError, StorageError) as exc:
            out.update(error_code=kafka_error_code(exc), error_message=str(exc))
        results.append(out)
    return {"results": results}


async def handle_delete_records(
    broker: KafkaBroker, conn: KafkaConnection, header: RequestHeader, req: dict[str, Any]
) -> dict[str, Any]:
    topics = []
    for t in req["topics"]:
        partitions = []
        for p in t["partitions"]:
            out = {"partition_index": p["partition_index"], "low_watermark": -1, "error_code": 0}
            try:
                shard = broker.topics.shard(t["name"], p["partition_index"])
                latest = await broker.engine.latest_offset(shard)
                # -1 is "up to the high watermark" (Kafka's DeleteRecordsRequest.HIGH_WATERMARK).
                offset = latest if p["offset"] == -1 else p["offset"]
                if not 0 <= offset <= latest:
                    raise KafkaOffsetOutOfRange(
                        f"offset {p['offset']} is outside [0, {latest}] (-1: the high watermark)"
                    )
                out["low_watermark"] = await broker.engine.delete_before(shard, offset)
            except (KafkaError, StorageError) as exc:
                out["error_code"] = kafka_error_code(exc)
            partitions.append(out)
        topics.append({"name": t["name"], "partitions": partitions})
    return {"topics": topics}


async def handle_describe_configs(
    broker: KafkaBroker, conn: KafkaConnection, header: RequestHeader, req: dict[str, Any]
) -> dict[str, Any]:
    results = []
    synonyms = req.get("include_synonyms", False)
    documentation = req.get("include_documentation", False)
    for r in req["resources"]:
        kind, name, keys = r["resource_type"], r["resource_name"], r["configuration_keys"]
        out: dict[str, Any] = {
            "error_code": 0,
            "error_message": None,
            "resource_type": kind,
            "resource_name": name,
            "configs": [],
        }
        try:
            if kind == RESOURCE_TOPIC:
                topic = broker.topics.get(name)
                if topic is None:
                    raise KafkaUnknownTopicOrPartition(f"topic {name!r} does not exist")
                out["configs"] = topic_configs.describe_topic(
                    topic.configs, broker.config, keys, synonyms, documentation
                )
            elif kind == RESOURCE_BROKER:
                _check_broker(broker, name)
                out["configs"] = topic_configs.describe_broker(
                    broker.config, broker.node_id, keys, synonyms, documentation
                )
            else:
                raise KafkaInvalidRequest(
                    f"resource type {kind} is not supported; 2 (topic), 4 (broker)"
                )
        except KafkaError as exc:
            out.update(error_code=exc.code, error_message=exc.message)
        results.append(out)
    return {"results": results}


async def handle_alter_configs(
    broker: KafkaBroker, conn: KafkaConnection, header: RequestHeader, req: dict[str, Any]
) -> dict[str, Any]:
    """AlterConfigs replaces a topic's whole config set: keys left out return to their
    defaults, as in Kafka."""

    def change(current: dict[str, str], entries: list[dict[str, Any]]) -> dict[str, str]:
        return {c["name"]: c["value"] for c in entries if c["value"] is not None}

    return await _alter(broker, req, change)


# IncrementalAlterConfigsRequest ConfigOperation (Kafka's AlterConfigOp.OpType).
_SET, _DELETE, _APPEND, _SUBTRACT = 0, 1, 2, 3


async def handle_incremental_alter_configs(
    broker: KafkaBroker, conn: KafkaConnection, header: RequestHeader, req: dict[str, Any]
) -> dict[str, Any]:
    def change(current: dict[str, str], entries: list[dict[str, Any]]) -> dict[str, str]:
        configs = dict(current)
        for c in entries:
            op, key = c["config_operation"], c["name"]
            if op == _SET:
                if c["value"] is None:
                    raise KafkaInvalidConfig(f"{key}: SET needs a value")
                configs[key] = c["value"]
            elif op == _DELETE:
                configs.pop(key, None)
            elif op in (_APPEND, _SUBTRACT):
                # Only list-typed keys take them, and the one list here (cleanup.policy)
                # has a single allowed value.
                raise KafkaInvalidConfig(
                    f"{key}: APPEND and SUBTRACT are not supported; use SET or DELETE"
                )
            else:
                raise KafkaInvalidRequest(f"{key}: unknown config operation {op}")
        return configs

    return await _alter(broker, req, change)


ConfigChange = Callable[[dict[str, str], list[dict[str, Any]]], dict[str, str]]


async def _alter(broker: KafkaBroker, req: dict[str, Any], change: ConfigChange) -> dict[str, Any]:
    responses = []
    for r in req["resources"]:
        kind, name = r["resource_type"], r["resource_name"]
        out: dict[str, Any] = {
            "error_code": 0,
            "error_message": None,
            "resource_type": kind,
            "resource_name": name,
        }
        try:
            keys = [c["name"] for c in r["configs"]]
            duplicates = sorted({k for k in keys if keys.count(k) > 1})
            if duplicates:
                raise KafkaInvalidRequest(f"config keys given more than once: {duplicates}")
            if kind == RESOURCE_BROKER:
                _check_broker(broker, name)
                raise KafkaInvalidRequest(
                    "broker configs are read-only at run time: set them under [kafka] in the "
                    "config file"
                )
            if kind != RESOURCE_TOPIC:
                raise KafkaInvalidRequest(f"resource type {kind} is not supported; 2 (topic)")
            topic = broker.topics.get(name)
            if topic is None:
                raise KafkaUnknownTopicOrPartition(f"topic {name!r} does not exist")
            configs = change(topic.configs, r["configs"])
            topic_configs.validate(configs)
            if not req["validate_only"]:
                await broker.topics.alter_configs(name, configs)
        except (KafkaError, StorageError) as exc:
            message = exc.message if isinstance(exc, KafkaError) else str(exc)
            out.update(error_code=kafka_error_code(exc), error_message=message)
        responses.append(out)
    return {"responses": responses}


def _check_broker(broker: KafkaBroker, name: str) -> None:
    # "" is the cluster-wide default resource, which on one node is this broker's.
    if name not in ("", str(broker.node_id)):
        raise KafkaInvalidRequest(f"broker {name!r}: this cluster has broker {broker.node_id}")


async def handle_describe_cluster(
    broker: KafkaBroker, conn: KafkaConnection, header: RequestHeader, req: dict[str, Any]
) -> dict[str, Any]:
    return {
        "error_code": 0,
        "endpoint_type": req.get("endpoint_type", 1),
        "cluster_id": broker.cluster_id,
        "controller_id": broker.node_id,
        "brokers": [{"broker_id": broker.node_id, "host": conn.host, "port": conn.port}],
    }
