"""The ``memory`` engine: dictionaries and lists, bounded by ``MemoryConfig``.

Nothing survives a restart. It is the reference the conformance suite runs first (as
etcd-io/raft's MemoryStorage is) and the engine for clean sessions and tests. Sizes are
counted like the segment engine's frames (value + key + headers + a fixed overhead) so
that ``max_bytes`` limits behave alike across engines. Files and durability live in the
other engines, not here.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence

from robustmq.errors import (
    OffsetOutOfRange,
    ShardExists,
    ShardNotFound,
    StorageClosed,
    StorageFull,
    WrongEntryKind,
)
from robustmq.storage.engine import (
    CommittedOffset,
    MemoryConfig,
    Record,
    ShardConfig,
    ShardInfo,
    StoredBatch,
    StoredRecord,
    patch_base_offset,
    wall_clock_ms,
)

# Frame header (8) + body header (21) + key length (4) + header count (2): what a record
# costs on disk in the segment engine beyond its bytes.
RECORD_OVERHEAD = 35
BATCH_OVERHEAD = 29
KV_OVERHEAD = 16

Entry = StoredRecord | StoredBatch


def record_size(key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]]) -> int:
    size = RECORD_OVERHEAD + len(value) + (len(key) if key is not None else 0)
    for name, hval in headers:
        size += 6 + len(name.encode()) + len(hval)
    return size


def _entry_size(entry: Entry) -> int:
    if isinstance(entry, StoredBatch):
        return BATCH_OVERHEAD + len(entry.data)
    return record_size(entry.key, entry.value, entry.headers)


def _entry_end(entry: Entry) -> int:
    if isinstance(entry, StoredBatch):
        return entry.base_offset + entry.record_count
    return entry.offset + 1


def _entry_ts(entry: Entry) -> int:
    return entry.max_timestamp_ms if isinstance(entry, StoredBatch) else entry.timestamp_ms


class _Shard:
    __slots__ = (
        "name",
        "config",
        "entries",
        "bases",
        "sizes",
        "running_max_ts",
        "earliest",
        "next_offset",
        "size",
        "keys",
    )

    def __init__(self, name: str, config: ShardConfig) -> None:
        self.name = name
        self.config = config
        self.entries: list[Entry] = []
        self.bases: list[int] = []
        self.sizes: list[int] = []
        # running_max_ts[i]: the largest timestamp of entries[0..i] ever appended; a
        # non-decreasing list to bisect for offset_for_timestamp.
        self.running_max_ts: list[int] = []
        self.earliest = 0
        self.next_offset = 0
        self.size = 0
        self.keys: dict[bytes, int] = {}

    def add(self, entry: Entry, base: int, size: int, ts: int) -> None:
        self.entries.append(entry)
        self.bases.append(base)
        self.sizes.append(size)
        prev = self.running_max_ts[-1] if self.running_max_ts else -1
        self.running_max_ts.append(ts if ts > prev else prev)
        self.size += size

    def drop_front(self, n: int) -> int:
        """Forget the first ``n`` entries; returns the bytes freed."""
        freed = sum(self.sizes[:n])
        del self.entries[:n], self.bases[:n], self.sizes[:n], self.running_max_ts[:n]
        self.size -= freed
        return freed

    def index_of(self, offset: int) -> int:
        """Index of the entry holding ``offset`` (or of the first after it)."""
        i = bisect_right(self.bases, offset) - 1
        if i < 0:
            return 0
        if _entry_end(self.entries[i]) <= offset:
            return i + 1
        return i

    def check_offset(self, offset: int) -> None:
        if not self.earliest <= offset <= self.next_offset:
            raise OffsetOutOfRange(self.name, offset, self.earliest, self.next_offset)

    def info(self) -> ShardInfo:
        return ShardInfo(self.name, self.config, self.earliest, self.next_offset, self.size)


class MemoryEngine:
    """In-process storage; see the module docstring."""

    name = "memory"

    def __init__(self, config: MemoryConfig | None = None) -> None:
        self.config = config or MemoryConfig()
        self._shards: dict[str, _Shard] = {}
        self._kv: dict[bytes, bytes] = {}
        self._offsets: dict[tuple[str, str], CommittedOffset] = {}
        self._bytes = 0
        self._closed = False

    @classmethod
    async def open(cls, config: MemoryConfig | None = None) -> MemoryEngine:
        return cls(config)

    def _shard(self, shard: str) -> _Shard:
        if self._closed:
            raise StorageClosed("memory engine is closed")
        try:
            return self._shards[shard]
        except KeyError:
            raise ShardNotFound(shard) from None

    def _reserve(self, size: int) -> None:
        if self._bytes + size > self.config.max_bytes:
            raise StorageFull(
                f"memory engine holds {self._bytes} bytes; {size} more exceeds "
                f"max_bytes={self.config.max_bytes}"
            )
        self._bytes += size

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosed("memory engine is closed")

    async def close(self) -> None:
        self._closed = True

    async def flush(self) -> None:
        self._check_open()

    # --- shards ---------------------------------------------------------------------
    async def create_shard(self, shard: str, config: ShardConfig | None = None) -> ShardInfo:
        self._check_open()
        if shard in self._shards:
            raise ShardExists(shard)
        if len(self._shards) >= self.config.max_shards:
            raise StorageFull(f"max_shards={self.config.max_shards} reached")
        s = self._shards[shard] = _Shard(shard, config or self.config.default_shard)
        return s.info()

    async def delete_shard(self, shard: str) -> None:
        s = self._shard(shard)
        self._bytes -= s.size
        del self._shards[shard]
        for key in [k for k in self._offsets if k[1] == shard]:
            del self._offsets[key]

    async def set_shard_config(self, shard: str, config: ShardConfig) -> None:
        self._shard(shard).config = config

    async def list_shards(self, prefix: str = "") -> list[str]:
        self._check_open()
        return sorted(n for n in self._shards if n.startswith(prefix))

    async def shard_info(self, shard: str) -> ShardInfo:
        return self._shard(shard).info()

    async def append(self, shard: str, records: Sequence[Record]) -> range:
        s = self._shard(shard)
        sizes = [
            RECORD_OVERHEAD + len(value) + (0 if key is None else len(key))
            if not headers
            else record_size(key, value, headers)
            for value, key, headers, _ in records
        ]
        self._reserve(sum(sizes))
        now = wall_clock_ms()
        first = s.next_offset
        stored = [
            StoredRecord(first + i, now if ts is None else ts, key, bytes(value), tuple(headers))
            for i, (value, key, headers, ts) in enumerate(records)
        ]
        running = s.running_max_ts[-1] if s.running_max_ts else -1
        maxes = []
        for rec in stored:
            if rec.timestamp_ms > running:
                running = rec.timestamp_ms
            maxes.append(running)
            if rec.key is not None:
                s.keys[rec.key] = rec.offset
        s.entries += stored
        s.bases += range(first, first + len(stored))
        s.sizes += sizes
        s.running_max_ts += maxes
        s.size += sum(sizes)
        s.next_offset = first + len(stored)
        return range(first, s.next_offset)

    async def append_batch(
        self,
        shard: str,
        batch: bytes | memoryview,
        *,
        count: int,
        max_timestamp_ms: int,
        base_offset_at: int | None = None,
    ) -> int:
        s = self._shard(shard)
        if count < 1:
            raise ValueError("count must be >= 1")
        size = BATCH_OVERHEAD + len(batch)
        self._reserve(size)
        base = s.next_offset
        data = patch_base_offset(batch, base, base_offset_at)
        s.add(StoredBatch(base, count, max_timestamp_ms, data), base, size, max_timestamp_ms)
        s.next_offset = base + count
        return base

    async def read(
        self, shard: str, offset: int, max_records: int = 500, max_bytes: int = 1 << 20
    ) -> list[StoredRecord]:
        s = self._shard(shard)
        s.check_offset(offset)
        out: list[StoredRecord] = []
        used = 0
        i = s.index_of(offset)
        entries, sizes = s.entries, s.sizes
        while i < len(entries) and len(out) < max_records:
            entry = entries[i]
            if isinstance(entry, StoredBatch):
                raise WrongEntryKind(
                    f"offset {entry.base_offset} of shard {shard!r} is an opaque batch; "
                    "use read_batches"
                )
            if out and used + sizes[i] > max_bytes:
                break
            out.append(entry)
            used += sizes[i]
            i += 1
        return out

    async def read_batches(
        self, shard: str, offset: int, max_bytes: int = 1 << 20
    ) -> list[StoredBatch]:
        s = self._shard(shard)
        s.check_offset(offset)
        out: list[StoredBatch] = []
        used = 0
        i = s.index_of(offset)
        entries, sizes = s.entries, s.sizes
        while i < len(entries):
            entry = entries[i]
            if not isinstance(entry, StoredBatch):
                raise WrongEntryKind(
                    f"offset {entry.offset} of shard {shard!r} is a record; use read"
                )
            if out and used + sizes[i] > max_bytes:
                break
            out.append(entry)
            used += sizes[i]
            i += 1
        return out

    async def earliest_offset(self, shard: str) -> int:
        return self._shard(shard).earliest

    async def latest_offset(self, shard: str) -> int:
        return self._shard(shard).next_offset

    async def offset_for_timestamp(self, shard: str, timestamp_ms: int) -> int | None:
        s = self._shard(shard)
        i = bisect_left(s.running_max_ts, timestamp_ms)
        # Entries before i are all older; from i on, find the first one that is not.
        while i < len(s.entries):
            entry = s.entries[i]
            if _entry_ts(entry) >= timestamp_ms:
                base = s.bases[i]
                return base if base >= s.earliest else s.earliest
            i += 1
        return None

    async def read_by_key(self, shard: str, key: bytes) -> StoredRecord | None:
        s = self._shard(shard)
        offset = s.keys.get(key)
        if offset is None:
            return None
        if offset < s.earliest:
            del s.keys[key]
            return None
        entry = s.entries[s.index_of(offset)]
        return entry if isinstance(entry, StoredRecord) else None

    def _trim_to(self, s: _Shard, n_entries: int, new_earliest: int) -> None:
        self._bytes -= s.drop_front(n_entries)
        if new_earliest > s.earliest:
            s.earliest = new_earliest

    async def delete_before(self, shard: str, offset: int) -> int:
        s = self._shard(shard)
        if offset > s.next_offset or offset < 0:
            raise OffsetOutOfRange(s.name, offset, s.earliest, s.next_offset)
        n = 0
        while n < len(s.entries) and _entry_end(s.entries[n]) <= offset:
            n += 1
        self._trim_to(s, n, offset)
        return s.earliest

    async def apply_retention(self, shard: str, now_ms: int | None = None) -> int:
        s = self._shard(shard)
        cfg = s.config
        now = now_ms if now_ms is not None else wall_clock_ms()
        n = 0
        if cfg.retention_ms is not None:
            cutoff = now - cfg.retention_ms
            while n < len(s.entries) and _entry_ts(s.entries[n]) < cutoff:
                n += 1
        if cfg.retention_bytes is not None:
            size = s.size - sum(s.sizes[:n])
            while n < len(s.entries) and size > cfg.retention_bytes:
                size -= s.sizes[n]
                n += 1
        if n:
            self._trim_to(s, n, _entry_end(s.entries[n - 1]))
        return s.earliest

    async def commit_offset(self, group: str, shard: str, offset: int, metadata: str = "") -> None:
        self._shard(shard)
        self._offsets[(group, shard)] = CommittedOffset(offset, metadata)

    async def committed_offset(self, group: str, shard: str) -> CommittedOffset | None:
        self._shard(shard)
        return self._offsets.get((group, shard))

    async def committed_offsets(self, shard: str) -> dict[str, CommittedOffset]:
        self._shard(shard)
        return {g: c for (g, s), c in self._offsets.items() if s == shard}

    # --- key-value ------------------------------------------------------------------
    async def get(self, key: bytes) -> bytes | None:
        self._check_open()
        return self._kv.get(key)

    async def put(self, key: bytes, value: bytes) -> None:
        self._check_open()
        old = self._kv.get(key)
        freed = KV_OVERHEAD + len(key) + len(old) if old is not None else 0
        self._bytes -= freed
        try:
            self._reserve(KV_OVERHEAD + len(key) + len(value))
        except StorageFull:
            self._bytes += freed
            raise
        self._kv[key] = bytes(value)

    async def delete(self, key: bytes) -> bool:
        self._check_open()
        old = self._kv.pop(key, None)
        if old is None:
            return False
        self._bytes -= KV_OVERHEAD + len(key) + len(old)
        return True

    async def scan(
        self, prefix: bytes = b"", limit: int | None = None
    ) -> list[tuple[bytes, bytes]]:
        self._check_open()
        keys = sorted(k for k in self._kv if k.startswith(prefix))
        if limit is not None:
            keys = keys[:limit]
        return [(k, self._kv[k]) for k in keys]
