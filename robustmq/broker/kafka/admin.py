"""CreateTopics and DeleteTopics.

One node holds one replica of every partition, so a replication factor other than 1 (or
-1, "the broker's default") is refused with INVALID_REPLICATION_FACTOR. Explicit replica
assignments only set the partition count. Topic configs are stored with the topic;
``retention.ms``, ``retention.bytes``, ``segment.bytes`` and ``segment.ms`` become the
partition shards' config, the others have no effect yet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from robustmq._core.kafka_codec import RequestHeader
from robustmq.broker.kafka.registry import MAX_PARTITIONS, shard_name, validate_topic_name
from robustmq.errors import (
    ConfigError,
    KafkaError,
    KafkaInvalidConfig,
    KafkaInvalidPartitions,
    KafkaInvalidReplicationFactor,
    KafkaTopicAlreadyExists,
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
            try:
                broker.topics.shard_config(configs)
            except (ValueError, ConfigError) as exc:
                raise KafkaInvalidConfig(str(exc)) from None
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
            await broker.topics.delete(name)
            code = 0
            for partition in range(topic.partitions if topic else 0):
                shard = shard_name(name, partition)
                broker.producers.forget_shard(shard)
                # A Fetch long-polling on the partition answers now (UNKNOWN_TOPIC_OR_PARTITION),
                # as Kafka completes a delayed fetch whose partition is gone.
                broker.arrivals.notify(shard)
        except (KafkaError, StorageError) as exc:
            code = kafka_error_code(exc)
        responses.append({"name": name, "error_code": code})
    return {"responses": responses}
