"""Produce: record batches are checked (magic 2, lengths, CRC32C), get their base offset
patched and are appended to the partition's shard as received, never re-encoded, so the
producer's compression stays as it was. Topics are auto-created here when enabled. A
batch larger than the topic's ``max.message.bytes`` (by default the broker's
``message.max.bytes``, 1048588 as in Kafka) refuses that partition's records with
MESSAGE_TOO_LARGE; the other partitions of the request are not affected.

The partitions of one request are appended concurrently, so with ``fsync=always`` they
share one fsync round. acks 0, 1 and -1 are accepted; on one node -1 waits for nothing
more than 1 does (the storage engine's fsync policy decides durability). acks=0 gets no
response at all.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from robustmq._core import kafka
from robustmq._core.kafka_codec import RequestHeader
from robustmq.broker.kafka.configs import MESSAGE_MAX_BYTES
from robustmq.errors import (
    KafkaCorruptMessage,
    KafkaError,
    KafkaInvalidRequiredAcks,
    KafkaMessageTooLarge,
    KafkaUnknownTopicOrPartition,
    StorageError,
    kafka_error_code,
)
from robustmq.storage.engine import wall_clock_ms

if TYPE_CHECKING:
    from robustmq.broker.kafka.server import KafkaBroker, KafkaConnection


async def handle_produce(
    broker: KafkaBroker, conn: KafkaConnection, header: RequestHeader, req: dict[str, Any]
) -> dict[str, Any] | None:
    acks = req["acks"]
    work = [
        (topic_data["name"], pd["index"], pd["records"])
        for topic_data in req["topic_data"]
        for pd in topic_data["partition_data"]
    ]
    if len(work) == 1:
        results = [await _produce_partition(broker, acks, *work[0])]
    else:
        # Every partition writes before any waits, so with fsync=always the whole request
        # shares one fsync round (the engine's group commit) instead of one per partition.
        results = await asyncio.gather(*(_produce_partition(broker, acks, *w) for w in work))
    responses: dict[str, list[dict[str, int]]] = {}
    for (name, index, _), (base, error) in zip(work, results, strict=True):
        responses.setdefault(name, []).append(
            {"index": index, "error_code": error, "base_offset": base, "log_start_offset": -1}
        )
    if acks == 0:
        return None
    return {
        "responses": [
            {"name": name, "partition_responses": parts} for name, parts in responses.items()
        ]
    }


async def _produce_partition(
    broker: KafkaBroker, acks: int, name: str, index: int, records: bytes | None
) -> tuple[int, int]:
    """(base offset, error code) of one partition's records."""
    try:
        if acks not in (0, 1, -1):
            raise KafkaInvalidRequiredAcks(f"acks={acks}; allowed 0, 1, -1")
        return await _append(broker, name, index, records), 0
    except (KafkaError, StorageError) as exc:
        broker.stats["produce_errors"] += 1
        return -1, kafka_error_code(exc)


async def _append(broker: KafkaBroker, topic: str, partition: int, records: bytes | None) -> int:
    if not records:
        raise KafkaCorruptMessage("produce request without record batches")
    batches = kafka.parse_batches(records)
    found = await broker.topics.ensure(topic)
    if found is None:
        raise KafkaUnknownTopicOrPartition(f"topic {topic!r} does not exist")
    shard = broker.topics.shard(topic, partition)
    # Kafka compares each batch's whole size (log overhead included) with the limit, and
    # refuses the partition's records when one is over it.
    limit = int(found.configs.get("max.message.bytes", MESSAGE_MAX_BYTES))
    for h in batches:
        if h.size > limit:
            raise KafkaMessageTooLarge(
                f"{topic}-{partition}: a {h.size}-byte record batch is over the topic's "
                f"max.message.bytes {limit}"
            )
    view = memoryview(records)
    first = -1
    for h in batches:
        duplicate = broker.producers.duplicate_of(shard, h)
        if duplicate is not None:
            first = duplicate if first < 0 else first
            continue
        base = await broker.engine.append_batch(
            shard,
            records if h.size == len(records) else view[h.position : h.position + h.size],
            count=h.last_offset_delta + 1,
            max_timestamp_ms=h.max_timestamp if h.max_timestamp >= 0 else wall_clock_ms(),
            base_offset_at=0,
        )
        broker.producers.appended(shard, h, base)
        if first < 0:
            first = base
        broker.stats["records_in"] += h.record_count
    broker.stats["bytes_in"] += len(records)
    broker.arrivals.notify(shard)
    return first
