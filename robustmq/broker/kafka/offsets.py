"""ListOffsets, OffsetCommit and OffsetFetch: positions in partitions.

ListOffsets answers earliest (-2), latest (-1) and by timestamp from the storage engine.
A timestamp look-up is as fine-grained as the stored batches: it finds the first batch
whose max timestamp is at or after the one asked for, and answers its base offset and
max timestamp (records inside a batch are never decoded). Committed offsets are stored
with the engine's ``commit_offset`` / ``committed_offset``, per group and partition
shard; a commit from a group member is checked against the group's generation first, and
metadata over ``MAX_METADATA_BYTES`` is refused with OFFSET_METADATA_TOO_LARGE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from robustmq._core.kafka_codec import RequestHeader
from robustmq.errors import (
    KafkaError,
    KafkaOffsetMetadataTooLarge,
    StorageError,
    kafka_error_code,
)

if TYPE_CHECKING:
    from robustmq.broker.kafka.server import KafkaBroker, KafkaConnection

LATEST = -1
EARLIEST = -2
# Kafka's offset.metadata.max.bytes: committed metadata is kept forever per group and
# partition, so its size is bounded.
MAX_METADATA_BYTES = 4096


async def handle_list_offsets(
    broker: KafkaBroker, conn: KafkaConnection, header: RequestHeader, req: dict[str, Any]
) -> dict[str, Any]:
    topics = []
    for topic in req["topics"]:
        partitions = []
        for p in topic["partitions"]:
            out = {"partition_index": p["partition_index"], "error_code": 0}
            try:
                shard = broker.topics.shard(topic["name"], p["partition_index"])
                out.update(await _lookup(broker, shard, p["timestamp"]))
            except (KafkaError, StorageError) as exc:
                out["error_code"] = kafka_error_code(exc)
            partitions.append(out)
        topics.append({"name": topic["name"], "partitions": partitions})
    return {"topics": topics}


async def _lookup(broker: KafkaBroker, shard: str, timestamp: int) -> dict[str, int]:
    engine = broker.engine
    if timestamp == LATEST:
        return {"offset": await engine.latest_offset(shard), "timestamp": -1, "leader_epoch": 0}
    if timestamp == EARLIEST:
        return {"offset": await engine.earliest_offset(shard), "timestamp": -1, "leader_epoch": 0}
    offset = await engine.offset_for_timestamp(shard, timestamp)
    if offset is None:
        return {"offset": -1, "timestamp": -1}
    batches = await engine.read_batches(shard, offset, 1)
    found = batches[0].max_timestamp_ms if batches else timestamp
    return {"offset": offset, "timestamp": found, "leader_epoch": 0}


async def handle_offset_commit(
    broker: KafkaBroker, conn: KafkaConnection, header: RequestHeader, req: dict[str, Any]
) -> dict[str, Any]:
    group = req["group_id"]
    try:
        broker.groups.check_commit(group, req.get("member_id", ""), req.get("generation_id", -1))
        group_error = 0
    except KafkaError as exc:
        group_error = exc.code
    topics = []
    for topic in req["topics"]:
        partitions = []
        for p in topic["partitions"]:
            error = group_error
            if not error:
                try:
                    shard = broker.topics.shard(topic["name"], p["partition_index"])
                    metadata = p["committed_metadata"] or ""
                    if len(metadata.encode()) > MAX_METADATA_BYTES:
                        raise KafkaOffsetMetadataTooLarge(f"over {MAX_METADATA_BYTES} bytes")
                    await broker.engine.commit_offset(group, shard, p["committed_offset"], metadata)
                except (KafkaError, StorageError) as exc:
                    error = kafka_error_code(exc)
            partitions.append({"partition_index": p["partition_index"], "error_code": error})
        topics.append({"name": topic["name"], "partitions": partitions})
    return {"topics": topics}


async def handle_offset_fetch(
    broker: KafkaBroker, conn: KafkaConnection, header: RequestHeader, req: dict[str, Any]
) -> dict[str, Any]:
    group = req["group_id"]
    wanted: list[tuple[str, list[int]]]
    if req["topics"] is None:  # v2+: every partition the group committed
        by_topic: dict[str, list[int]] = {}
        for name, partition, shard in broker.topics.partitions():
            if await broker.engine.committed_offset(group, shard) is not None:
                by_topic.setdefault(name, []).append(partition)
        wanted = sorted(by_topic.items())
    else:
        wanted = [(t["name"], t["partition_indexes"]) for t in req["topics"]]
    topics = []
    for name, indexes in wanted:
        partitions = []
        for index in indexes:
            out: dict[str, Any] = {
                "partition_index": index,
                "committed_offset": -1,
                "metadata": "",
                "error_code": 0,
            }
            topic = broker.topics.get(name)
            if topic is not None and 0 <= index < topic.partitions:
                committed = await broker.engine.committed_offset(
                    group, broker.topics.shard(name, index)
                )
                if committed is not None:
                    out.update(committed_offset=committed.offset, metadata=committed.metadata)
            partitions.append(out)
        topics.append({"name": name, "partitions": partitions})
    return {"topics": topics, "error_code": 0}
