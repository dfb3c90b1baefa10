"""ListOffsets, OffsetCommit and OffsetFetch: positions in partitions.

ListOffsets answers earliest (-2), latest (-1) and by timestamp from the storage engine.
A timestamp look-up is as fine-grained as the stored batches: it finds the first batch
whose max timestamp is at or after the one asked for, and answers its base offset and
max timestamp (records inside a batch are never decoded).

Committed offsets live behind an ``OffsetStore``: ``MetaOffsets`` keeps them in the Meta
Service's ``offsets`` group (DESIGN.md, "Metadata"), one proposal per OffsetCommit
request and linearizable reads for OffsetFetch; ``EngineOffsets`` keeps them with the
storage engine's ``commit_offset`` (the ``memory`` engine, where they live in memory
only, and nodes that reach no meta role). ``MetaOffsets`` moves what the engine holds to
the Meta Service once, at the first start after an upgrade. A commit from a group member
is checked against the group's generation first, and metadata over
``MAX_METADATA_BYTES`` is refused with OFFSET_METADATA_TOO_LARGE.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from robustmq._core.kafka_codec import RequestHeader
from robustmq.errors import (
    KafkaError,
    KafkaOffsetMetadataTooLarge,
    MetaError,
    StorageError,
    kafka_error_code,
)
from robustmq.storage.engine import CommittedOffset

if TYPE_CHECKING:
    from robustmq.broker.kafka.registry import TopicRegistry
    from robustmq.broker.kafka.server import KafkaBroker, KafkaConnection
    from robustmq.storage import StorageEngine

log = logging.getLogger(__name__)

LATEST = -1
EARLIEST = -2
# Kafka's offset.metadata.max.bytes: committed metadata is kept forever per group and
# partition, so its size is bounded.
MAX_METADATA_BYTES = 4096
GROUP = "offsets"  # the Meta Service group
# Set in the engine's key-value space once its committed offsets are in the Meta Service.
MIGRATED_KEY = b"kafka/offsets/migrated"

Partition = tuple[str, int]  # (topic, partition)


class OffsetStore(Protocol):
    """Where a node keeps consumer groups' committed offsets. ``-1`` is no position."""

    async def start(self, topics: TopicRegistry) -> None:
        """Called once the topics are loaded, before the listener opens."""

    async def commit(self, group: str, offsets: dict[Partition, CommittedOffset]) -> None:
        """Store the positions of one OffsetCommit, all or none."""

    async def fetch(self, group: str, partitions: list[Partition]) -> list[CommittedOffset | None]:
        """The positions of ``partitions``, in order (None: nothing committed)."""

    async def group_offsets(self, group: str) -> dict[Partition, CommittedOffset]:
        """Every position ``group`` has committed."""

    async def delete_group(self, group: str) -> int:
        """Forget ``group``'s positions (Kafka DeleteGroups); how many there were."""

    async def delete_topic(self, topic: str) -> None:
        """Forget every group's positions in a deleted topic."""


class MetaProposer(Protocol):
    """What both ``MultiRaftHost`` (in process) and ``MetaClient`` (over gRPC) offer."""

    async def propose(self, group: str, command: bytes) -> Any: ...

    async def read(self, group: str, key: str) -> Any: ...


def _command(op: str, **fields: Any) -> bytes:
    # robustmq.meta.groups.encode_command's encoding, without importing the meta package
    # (grpc, protobuf) into the broker.
    return orjson.dumps({"v": 1, "op": op, **fields})


class MetaOffsets:
    """Committed offsets in the Meta Service ``offsets`` group (keys
    ``<group>/<topic>/<partition>``, robustmq/meta/groups/offsets.py)."""

    def __init__(self, meta: MetaProposer, engine: StorageEngine) -> None:
        self.meta = meta
        self.engine = engine

    async def start(self, topics: TopicRegistry) -> None:
        try:
            await self._migrate(topics)
        except MetaError as exc:
            log.warning(
                "kafka: committed offsets not moved from the storage engine to the Meta "
                "Service yet (%s); the next start tries again",
                exc,
            )

    async def _migrate(self, topics: TopicRegistry) -> None:
        """Positions committed before offsets moved to the Meta Service (the engine's
        ``commit_offset``) are copied once; a position the Meta Service already holds is
        newer and stays."""
        if await self.engine.get(MIGRATED_KEY) is not None:
            return
        by_group: dict[str, dict[Partition, CommittedOffset]] = {}
        for name, partition, shard in topics.partitions():
            for group, committed in (await self.engine.committed_offsets(shard)).items():
                if committed.offset >= 0:  # -1: deleted
                    by_group.setdefault(group, {})[(name, partition)] = committed
        moved = 0
        for group, offsets in by_group.items():
            held = await self.group_offsets(group)
            fresh = {p: c for p, c in offsets.items() if p not in held}
            if fresh:
                await self.commit(group, fresh)
                moved += len(fresh)
        await self.engine.put(MIGRATED_KEY, b"1")
        if moved:
            log.info(
                "kafka: moved %d committed offsets of %d groups from the storage engine to "
                "the Meta Service",
                moved,
                len(by_group),
            )

    async def commit(self, group: str, offsets: dict[Partition, CommittedOffset]) -> None:
        rows = [
            {"topic": t, "partition": p, "offset": c.offset, "metadata": c.metadata}
            for (t, p), c in offsets.items()
        ]
        await self.meta.propose(GROUP, _command("offset.commit_batch", group=group, offsets=rows))

    async def fetch(self, group: str, partitions: list[Partition]) -> list[CommittedOffset | None]:
        records = await asyncio.gather(
            *(self.meta.read(GROUP, f"{GROUP}/{group}/{t}/{p}") for t, p in partitions)
        )
        return [None if r is None else CommittedOffset(r["offset"], r["metadata"]) for r in records]

    async def group_offsets(self, group: str) -> dict[Partition, CommittedOffset]:
        # The whole table: what a group committed is not a key range of it.
        table = await self.meta.read(GROUP, GROUP) or {}
        found = {}
        for key, record in table.items():
            owner, topic, partition = key.rsplit("/", 2)
            if owner == group:
                found[(topic, int(partition))] = CommittedOffset(
                    record["offset"], record["metadata"]
                )
        return found

    async def delete_group(self, group: str) -> int:
        result = await self.meta.propose(GROUP, _command("group.delete", group=group))
        return int(result["deleted"])

    async def delete_topic(self, topic: str) -> None:
        await self.meta.propose(GROUP, _command("topic.delete", topic=topic))


class EngineOffsets:
    """Committed offsets in the storage engine (``commit_offset``): durable as the engine
    is, in memory with the ``memory`` engine. A deleted group's positions become -1."""

    def __init__(self, engine: StorageEngine) -> None:
        self.engine = engine
        self.topics: TopicRegistry | None = None

    async def start(self, topics: TopicRegistry) -> None:
        self.topics = topics

    def _registry(self) -> TopicRegistry:
        assert self.topics is not None, "EngineOffsets.start was not called"
        return self.topics

    async def commit(self, group: str, offsets: dict[Partition, CommittedOffset]) -> None:
        topics = self._registry()
        for (topic, partition), c in offsets.items():
            shard = topics.shard(topic, partition)
            await self.engine.commit_offset(group, shard, c.offset, c.metadata)

    async def fetch(self, group: str, partitions: list[Partition]) -> list[CommittedOffset | None]:
        topics = self._registry()
        out: list[CommittedOffset | None] = []
        for topic, partition in partitions:
            committed = await self.engine.committed_offset(group, topics.shard(topic, partition))
            out.append(committed if committed is not None and committed.offset >= 0 else None)
        return out

    async def group_offsets(self, group: str) -> dict[Partition, CommittedOffset]:
        found = {}
        for topic, partition, shard in self._registry().partitions():
            committed = await self.engine.committed_offset(group, shard)
            if committed is not None and committed.offset >= 0:
                found[(topic, partition)] = committed
        return found

    async def delete_group(self, group: str) -> int:
        held = await self.group_offsets(group)
        topics = self._registry()
        for topic, partition in held:
            await self.engine.commit_offset(group, topics.shard(topic, partition), -1, "")
        return len(held)

    async def delete_topic(self, topic: str) -> None:
        """Nothing to do: the engine's ``delete_shard`` drops a partition's offsets."""


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
    errors: dict[Partition, int] = {}
    accepted: dict[Partition, CommittedOffset] = {}
    for topic in req["topics"]:
        for p in topic["partitions"]:
            key = (topic["name"], p["partition_index"])
            errors[key] = group_error
            if group_error:
                continue
            try:
                broker.topics.shard(*key)  # the partition exists
                metadata = p["committed_metadata"] or ""
                if len(metadata.encode()) > MAX_METADATA_BYTES:
                    raise KafkaOffsetMetadataTooLarge(f"over {MAX_METADATA_BYTES} bytes")
                accepted[key] = CommittedOffset(p["committed_offset"], metadata)
            except (KafkaError, StorageError) as exc:
                errors[key] = kafka_error_code(exc)
    if accepted:
        try:
            await broker.offsets.commit(group, accepted)  # one proposal for the request
        except (KafkaError, StorageError, MetaError) as exc:
            code = kafka_error_code(exc)
            errors.update(dict.fromkeys(accepted, code))
    return {
        "topics": [
            {
                "name": topic["name"],
                "partitions": [
                    {
                        "partition_index": p["partition_index"],
                        "error_code": errors[(topic["name"], p["partition_index"])],
                    }
                    for p in topic["partitions"]
                ],
            }
            for topic in req["topics"]
        ]
    }


async def handle_offset_fetch(
    broker: KafkaBroker, conn: KafkaConnection, header: RequestHeader, req: dict[str, Any]
) -> dict[str, Any]:
    group = req["group_id"]
    wanted: list[tuple[str, list[int]]]
    try:
        if req["topics"] is None:  # v2+: every partition the group committed
            by_topic: dict[str, list[int]] = {}
            for name, partition in sorted(await broker.offsets.group_offsets(group)):
                by_topic.setdefault(name, []).append(partition)
            wanted = sorted(by_topic.items())
        else:
            wanted = [(t["name"], t["partition_indexes"]) for t in req["topics"]]
        known = [
            (name, index)
            for name, indexes in wanted
            for index in indexes
            if (topic := broker.topics.get(name)) is not None and 0 <= index < topic.partitions
        ]
        found = dict(zip(known, await broker.offsets.fetch(group, known), strict=True))
    except (KafkaError, StorageError, MetaError) as exc:
        # OffsetFetch v2+ has a top-level error code; before it, each partition carries it.
        code = kafka_error_code(exc)
        return {
            "topics": [
                {
                    "name": t["name"],
                    "partitions": [
                        {
                            "partition_index": i,
                            "committed_offset": -1,
                            "metadata": "",
                            "error_code": code,
                        }
                        for i in t["partition_indexes"]
                    ],
                }
                for t in req["topics"] or ()
            ],
            "error_code": code,
        }
    topics = []
    for name, indexes in wanted:
        partitions = []
        for index in indexes:
            committed = found.get((name, index))
            partitions.append(
                {
                    "partition_index": index,
                    "committed_offset": -1 if committed is None else committed.offset,
                    "metadata": "" if committed is None else committed.metadata,
                    "error_code": 0,
                }
            )
        topics.append({"name": name, "partitions": partitions})
    return {"topics": topics, "error_code": 0}
