"""The storage engine contract: one ``typing.Protocol``, its value types and its configs.

Every engine (``memory``, ``leveldb``, ``segment``) implements :class:`StorageEngine`; the
broker, the Kafka layer and the meta service use storage only through it. Two shapes of
data live behind it:

* **shards**: append-only logs addressed by offset (Kafka partitions, MQTT offline queues).
  An append takes plain :class:`Record` values or one opaque pre-encoded batch (a Kafka
  record batch stored exactly as received, see :meth:`StorageEngine.append_batch`).
  Offsets are contiguous from 0; the *log end offset* (``latest_offset``) is the offset
  the next append will get; the *earliest offset* moves up with retention.
* **key-value**: small records (retained messages, session snapshots), ``bytes -> bytes``.

Errors are the named ones in :mod:`robustmq.errors` (``ShardNotFound``, ``ShardExists``,
``OffsetOutOfRange``, ``StorageFull``, ``Corrupted``, ``WrongEntryKind``,
``StorageClosed``). Engine implementations and on-disk formats live in the sibling
modules, not here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol, runtime_checkable

from robustmq.errors import ConfigError

FsyncPolicy = Literal["always", "interval", "never"]
FSYNC_POLICIES: tuple[str, ...] = ("always", "interval", "never")

Headers = tuple[tuple[str, bytes], ...]


class Record(NamedTuple):
    """A record to append. ``timestamp_ms=None`` means "now" as the engine sees it."""

    value: bytes
    key: bytes | None = None
    headers: Headers = ()
    timestamp_ms: int | None = None


class StoredRecord(NamedTuple):
    """A record as read back, with the offset the engine gave it."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: Headers


class StoredBatch(NamedTuple):
    """An opaque batch as read back: ``record_count`` offsets from ``base_offset``, bytes as stored."""

    base_offset: int
    record_count: int
    max_timestamp_ms: int
    data: bytes


class CommittedOffset(NamedTuple):
    """A consumer group's committed position in a shard (Kafka OffsetCommit semantics)."""

    offset: int
    metadata: str


@dataclass(frozen=True, kw_only=True)
class ShardConfig:
    """Per-shard settings, chosen at ``create_shard`` time (Kafka topic-config names).

    retention_ms: records older than this may be deleted by ``apply_retention``; ``None``
        keeps them forever.
    retention_bytes: the shard is trimmed (oldest first) to about this size; ``None`` is
        unbounded.
    segment_bytes: the segment engine starts a new ``.log`` file past this size.
    segment_ms: ... or when the active segment is older than this (``None``: never by time).
    """

    retention_ms: int | None = None
    retention_bytes: int | None = None
    segment_bytes: int = 128 * 1024 * 1024
    segment_ms: int | None = 7 * 24 * 3600 * 1000

    def __post_init__(self) -> None:
        if self.retention_ms is not None and self.retention_ms < 0:
            raise ConfigError("retention_ms", self.retention_ms, ">= 0 or None")
        if self.retention_bytes is not None and self.retention_bytes < 0:
            raise ConfigError("retention_bytes", self.retention_bytes, ">= 0 or None")
        if not 4096 <= self.segment_bytes <= 2**31 - 1:
            raise ConfigError("segment_bytes", self.segment_bytes, "4096 .. 2147483647")
        if self.segment_ms is not None and self.segment_ms < 1:
            raise ConfigError("segment_ms", self.segment_ms, ">= 1 or None")

    def to_dict(self) -> dict[str, int | None]:
        return {
            "retention_ms": self.retention_ms,
            "retention_bytes": self.retention_bytes,
            "segment_bytes": self.segment_bytes,
            "segment_ms": self.segment_ms,
        }

    @classmethod
    def from_dict(cls, data: dict[str, int | None]) -> ShardConfig:
        return cls(**data)  # type: ignore[arg-type]


@dataclass(frozen=True)
class ShardInfo:
    """A snapshot of a shard's bounds and size."""

    name: str
    config: ShardConfig
    earliest_offset: int
    latest_offset: int
    size_bytes: int


def _check_fsync(fsync: str, interval_ms: int) -> None:
    if fsync not in FSYNC_POLICIES:
        raise ConfigError("fsync", fsync, " | ".join(FSYNC_POLICIES))
    if not 1 <= interval_ms <= 60_000:
        raise ConfigError("fsync_interval_ms", interval_ms, "1 .. 60000")


@dataclass(frozen=True, kw_only=True)
class MemoryConfig:
    """``memory`` engine. max_bytes bounds record + key-value bytes held (``StorageFull``
    beyond it); max_shards bounds the number of shards."""

    max_bytes: int = 256 * 1024 * 1024
    max_shards: int = 100_000
    default_shard: ShardConfig = field(default_factory=ShardConfig)

    def __post_init__(self) -> None:
        if self.max_bytes < 1:
            raise ConfigError("max_bytes", self.max_bytes, ">= 1")
        if self.max_shards < 1:
            raise ConfigError("max_shards", self.max_shards, ">= 1")


@dataclass(frozen=True, kw_only=True)
class LevelDBConfig:
    """``leveldb`` engine: one database at ``path``.

    fsync: ``always`` acknowledges an append after a synced write (group-committed),
        ``interval`` syncs every ``fsync_interval_ms``, ``never`` leaves it to the OS.
    cache_bytes: LevelDB's block cache.
    """

    path: str
    fsync: FsyncPolicy = "interval"
    fsync_interval_ms: int = 1000
    cache_bytes: int = 64 * 1024 * 1024
    default_shard: ShardConfig = field(default_factory=ShardConfig)

    def __post_init__(self) -> None:
        _check_fsync(self.fsync, self.fsync_interval_ms)
        if self.cache_bytes < 0:
            raise ConfigError("cache_bytes", self.cache_bytes, ">= 0")


@dataclass(frozen=True, kw_only=True)
class SegmentConfig:
    """``segment`` engine: a directory per shard under ``path``.

    fsync: ``always`` acknowledges an append after fsync (many appends share one fsync),
        ``interval`` fsyncs every ``fsync_interval_ms``, ``never`` leaves it to the OS.
    index_interval_bytes: one sparse ``.index``/``.timeindex`` entry per this many log bytes.
    """

    path: str
    fsync: FsyncPolicy = "interval"
    fsync_interval_ms: int = 1000
    index_interval_bytes: int = 4096
    default_shard: ShardConfig = field(default_factory=ShardConfig)

    def __post_init__(self) -> None:
        _check_fsync(self.fsync, self.fsync_interval_ms)
        if not 64 <= self.index_interval_bytes <= 1 << 24:
            raise ConfigError("index_interval_bytes", self.index_interval_bytes, "64 .. 16777216")


EngineConfig = MemoryConfig | LevelDBConfig | SegmentConfig


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def patch_base_offset(batch: bytes | memoryview, base: int, at: int | None) -> bytes:
    """``batch`` with ``base`` written at byte ``at`` as a big-endian int64 (Kafka's
    RecordBatch.baseOffset); unchanged when ``at`` is None. One copy of the batch at most
    (none when it is already ``bytes`` and ``at`` is None): engines that keep the bytes
    need them immutable. The segment engine does not copy at all
    (``segment_io.encode_batch_head``)."""
    if at is None:
        return batch if type(batch) is bytes else bytes(batch)
    view = memoryview(batch)
    if not 0 <= at <= view.nbytes - 8:
        raise ValueError(f"base_offset_at={at} is outside the {view.nbytes}-byte batch")
    return b"".join((view[:at], base.to_bytes(8, "big", signed=True), view[at + 8 :]))


@runtime_checkable
class StorageEngine(Protocol):
    """What every engine offers. All methods are coroutines to be awaited on the loop."""

    name: str

    async def close(self) -> None:
        """Flush what is pending (fsync per policy) and release files; later calls raise
        ``StorageClosed``."""

    async def flush(self) -> None:
        """Make everything appended so far durable, whatever the fsync policy."""

    # --- shards ---------------------------------------------------------------------
    async def create_shard(self, shard: str, config: ShardConfig | None = None) -> ShardInfo:
        """Create an empty shard (``ShardExists`` if taken). ``None`` takes the engine's
        ``default_shard``."""

    async def delete_shard(self, shard: str) -> None:
        """Drop a shard, its records and its committed offsets (``ShardNotFound``)."""

    async def set_shard_config(self, shard: str, config: ShardConfig) -> None:
        """Replace a shard's config (Kafka AlterConfigs), as durably as ``create_shard``;
        the next ``apply_retention`` uses it."""

    async def list_shards(self, prefix: str = "") -> list[str]:
        """Names of the shards starting with ``prefix``, sorted."""

    async def shard_info(self, shard: str) -> ShardInfo:
        """Bounds, size and config of a shard."""

    async def append(self, shard: str, records: Sequence[Record]) -> range:
        """Append records in order; returns the offsets they got (contiguous)."""

    async def append_batch(
        self,
        shard: str,
        batch: bytes | memoryview,
        *,
        count: int,
        max_timestamp_ms: int,
        base_offset_at: int | None = None,
    ) -> int:
        """Append one opaque batch holding ``count`` records; returns its base offset.

        The bytes are stored as given, except that when ``base_offset_at`` is set the
        assigned base offset is written there first as a big-endian int64 (Kafka's
        RecordBatch.baseOffset at byte 0; it is outside the batch CRC).
        """

    async def read(
        self, shard: str, offset: int, max_records: int = 500, max_bytes: int = 1 << 20
    ) -> list[StoredRecord]:
        """Records from ``offset`` on, at most ``max_records`` and about ``max_bytes`` of
        values (at least one record when any is there). ``offset == latest`` gives ``[]``;
        outside ``[earliest, latest]`` raises ``OffsetOutOfRange``."""

    async def read_batches(
        self, shard: str, offset: int, max_bytes: int = 1 << 20
    ) -> list[StoredBatch]:
        """Opaque batches covering ``offset`` onwards (the first may start before it, as
        in Kafka fetch), about ``max_bytes`` of data, at least one batch if any."""

    async def earliest_offset(self, shard: str) -> int:
        """The first offset still retained (== latest when the shard is empty)."""

    async def latest_offset(self, shard: str) -> int:
        """The log end offset: what the next append will get."""

    async def offset_for_timestamp(self, shard: str, timestamp_ms: int) -> int | None:
        """The earliest offset whose timestamp is >= ``timestamp_ms`` (Kafka ListOffsets);
        ``None`` if there is none. For an opaque batch its max timestamp is used."""

    async def read_by_key(self, shard: str, key: bytes) -> StoredRecord | None:
        """The latest retained record appended with ``key``."""

    async def delete_before(self, shard: str, offset: int) -> int:
        """Make ``offset`` the earliest offset (Kafka DeleteRecords) and return the earliest
        offset; an offset already below it changes nothing, one past the log end offset
        raises ``OffsetOutOfRange``."""

    async def apply_retention(self, shard: str, now_ms: int | None = None) -> int:
        """Delete by the shard's ``retention_ms`` and ``retention_bytes``; returns the new
        earliest offset. Engines may delete at a coarser grain (whole segments)."""

    async def commit_offset(self, group: str, shard: str, offset: int, metadata: str = "") -> None:
        """Store a consumer group's position in a shard."""

    async def committed_offset(self, group: str, shard: str) -> CommittedOffset | None:
        """The position last committed by ``group`` for ``shard``."""

    async def committed_offsets(self, shard: str) -> dict[str, CommittedOffset]:
        """Every group's position in ``shard``: what moving committed offsets elsewhere
        (the Kafka broker's migration to the Meta Service) reads."""

    # --- key-value ------------------------------------------------------------------
    async def get(self, key: bytes) -> bytes | None: ...

    async def put(self, key: bytes, value: bytes) -> None: ...

    async def delete(self, key: bytes) -> bool:
        """Remove a key; whether it existed."""

    async def scan(
        self, prefix: bytes = b"", limit: int | None = None
    ) -> list[tuple[bytes, bytes]]:
        """Pairs whose key starts with ``prefix``, in key order."""
