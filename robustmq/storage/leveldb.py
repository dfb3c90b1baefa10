"""The ``leveldb`` engine: every shard in one LevelDB database (plyvel), by key prefix.

Key layout (shard ids and offsets are big-endian u64 so that keys sort numerically)::

    N                               -> next shard id
    S <shard name>                  -> id, earliest, log end offset, bytes, max ts (u64,
                                       4 x i64) + ShardConfig as JSON
    R <id> <base offset>            -> the frames of one append (segment_io framing)
    T <id> <max ts before> <offset> -> b"" : time index, one entry per append
    K <id> <key>                    -> offset of the latest record with that key
    O <id> <group>                  -> committed offset (i64) + metadata
    V <key>                         -> key-value pairs

A shard costs a handful of keys and no file, so a million small shards are cheap; opening
reads nothing per shard (a shard's S key is read on first use, one get). A shard's
mutations go in one WriteBatch with its new S value, so a crash never splits them. With ``fsync=always`` the
writes of concurrent appends are group-committed: one synced WriteBatch per round, written
in the executor. Frame encoding and decoding is robustmq/_core/segment_io.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import plyvel

from robustmq._core import segments as segment_io
from robustmq.errors import (
    Corrupted,
    OffsetOutOfRange,
    ShardExists,
    ShardNotFound,
    StorageClosed,
    StorageError,
    WrongEntryKind,
)
from robustmq.storage.engine import (
    CommittedOffset,
    LevelDBConfig,
    Record,
    ShardConfig,
    ShardInfo,
    StoredBatch,
    StoredRecord,
    patch_base_offset,
    wall_clock_ms,
)

_log = logging.getLogger(__name__)

_U64 = struct.Struct(">Q")
# S value: shard id, earliest, log end offset, bytes, max timestamp, then config JSON
_META = struct.Struct(">Qqqqq")
_I64 = struct.Struct(">q")
_TS_BIAS = 1 << 63  # timestamps are signed; keys sort unsigned
_CONFIGS: dict[bytes, ShardConfig] = {}
_CACHED_SHARDS = 100_000  # shard states kept in memory; more are reloaded from H keys

Op = tuple[bytes, bytes | None]  # (key, value) or (key, None) for a delete


def _walk(it: Any, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    while it.valid():
        key = it.key()
        if not key.startswith(prefix):
            return
        yield key, it.value()
        it.next()


def _prev_key(it: Any, prefix: bytes) -> bytes | None:
    """The key before the iterator's position, if it has ``prefix``. (plyvel's prev() can
    step out of a prefixed range after a seek, so the prefix is checked here.)"""
    try:
        item = it.prev()
    except StopIteration:
        return None
    key = item if isinstance(item, bytes) else item[0]
    return key if key.startswith(prefix) else None


def _ts_key(ts: int) -> bytes:
    return _U64.pack(ts + _TS_BIAS)


class _Shard:
    __slots__ = (
        "name",
        "id",
        "prefix",
        "config",
        "earliest",
        "next_offset",
        "end",
        "size",
        "max_ts",
        "config_raw",
    )

    def __init__(
        self, name: str, shard_id: int, config: ShardConfig, state: tuple[int, int, int, int]
    ) -> None:
        self.name = name
        self.id = shard_id
        self.prefix = _U64.pack(shard_id)
        self.config = config
        self.config_raw = json.dumps(config.to_dict(), sort_keys=True).encode()
        self.earliest, self.next_offset, self.size, self.max_ts = state
        self.end = self.next_offset  # the log end offset readers see (written, not queued)

    @classmethod
    def from_meta(cls, name: str, raw: bytes) -> _Shard:
        shard_id, *state = _META.unpack_from(raw)
        config_raw = raw[_META.size :]
        config = _CONFIGS.get(config_raw)
        if config is None:  # most shards share a config: parse each distinct one once
            config = _CONFIGS[config_raw] = ShardConfig.from_dict(json.loads(config_raw))
        return cls(name, shard_id, config, tuple(state))

    def meta_op(self) -> Op:
        """The S key with this shard's current state, to write with its data."""
        meta = _META.pack(self.id, self.earliest, self.next_offset, self.size, self.max_ts)
        return (b"S" + self.name.encode(), meta + self.config_raw)

    def check_offset(self, offset: int) -> None:
        if not self.earliest <= offset <= self.end:
            raise OffsetOutOfRange(self.name, offset, self.earliest, self.end)

    def info(self) -> ShardInfo:
        return ShardInfo(self.name, self.config, self.earliest, self.end, self.size)


class LevelDBEngine:
    """All shards and key-value pairs in one LevelDB; see the module docstring."""

    name = "leveldb"

    def __init__(self, config: LevelDBConfig) -> None:
        self.config = config
        self.db = plyvel.DB(
            config.path,
            create_if_missing=True,
            lru_cache_size=config.cache_bytes or None,
            bloom_filter_bits=10,
            write_buffer_size=16 * 1024 * 1024,
        )
        self._shards: dict[str, _Shard] = {}
        raw = self.db.get(b"N")
        self._next_id = _U64.unpack(raw)[0] if raw else 1
        self._always = config.fsync == "always"
        self._pending: list[tuple[list[Op], Callable[[], None], asyncio.Future[None]]] = []
        self._wakeup: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.rounds = 0

    @classmethod
    async def open(cls, config: LevelDBConfig) -> LevelDBEngine:
        engine = cls(config)
        engine._wakeup = asyncio.Event()
        if config.fsync != "never":
            engine._task = asyncio.get_running_loop().create_task(engine._committer())
        return engine

    # --- writes and group commit ----------------------------------------------------
    def _write_now(self, ops: list[Op], sync: bool) -> None:
        with self.db.write_batch(sync=sync) as wb:
            for key, value in ops:
                if value is None:
                    wb.delete(key)
                else:
                    wb.put(key, value)

    async def _write(self, ops: list[Op], done: Callable[[], None]) -> None:
        """Apply ``ops`` atomically; ``done`` runs once they are visible (and, with
        ``fsync=always``, synced). Writes keep their call order."""
        if not self._always:
            self._write_now(ops, False)
            done()
            return
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((ops, done, fut))
        assert self._wakeup is not None
        self._wakeup.set()
        await fut

    async def _committer(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            if self._closed:
                pass  # closing: serve what is pending without waiting, then stop
            elif self._always:
                await self._wakeup.wait()
            else:
                try:
                    await asyncio.wait_for(
                        self._wakeup.wait(), self.config.fsync_interval_ms / 1000
                    )
                except asyncio.TimeoutError:
                    pass
            self._wakeup.clear()
            if self._closed and not self._pending:
                return
            pending, self._pending = self._pending, []
            ops = [op for item in pending for op in item[0]]
            try:
                # interval: an empty synced write makes LevelDB fsync its log.
                await loop.run_in_executor(None, self._write_now, ops, True)
            except Exception as exc:
                err = StorageError(f"leveldb write failed: {exc}")
                for _, _, fut in pending:
                    if not fut.done():
                        fut.set_exception(err)
                continue
            self.rounds += 1
            for _, done, fut in pending:
                done()
                if not fut.done():
                    fut.set_result(None)

    async def flush(self) -> None:
        self._check_open()
        await asyncio.get_running_loop().run_in_executor(None, self._write_now, [], True)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            assert self._wakeup is not None
            self._wakeup.set()
            await self._task
        self._write_now([], self.config.fsync != "never")
        self.db.close()

    # --- shards ---------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosed("leveldb engine is closed")

    def _shard(self, shard: str) -> _Shard:
        self._check_open()
        s = self._shards.get(shard)
        if s is not None:
            return s
        meta = self.db.get(b"S" + shard.encode())
        if meta is None:
            raise ShardNotFound(shard)
        return self._cache(_Shard.from_meta(shard, meta))

    def _cache(self, s: _Shard) -> _Shard:
        if len(self._shards) >= _CACHED_SHARDS:
            self._evict()
        self._shards[s.name] = s
        return s

    def _evict(self) -> None:
        """Forget the oldest tenth of the cached shard states that have no queued write."""
        idle = [n for n, c in self._shards.items() if c.end == c.next_offset]
        for name in idle[: len(self._shards) // 10]:
            del self._shards[name]

    async def create_shard(self, shard: str, config: ShardConfig | None = None) -> ShardInfo:
        self._check_open()
        key = b"S" + shard.encode()
        if shard in self._shards or self.db.get(key) is not None:
            raise ShardExists(shard)
        cfg = config or self.config.default_shard
        shard_id = self._next_id
        self._next_id += 1
        s = self._cache(_Shard(shard, shard_id, cfg, (0, 0, 0, -1)))
        ops: list[Op] = [(b"N", _U64.pack(self._next_id)), s.meta_op()]
        await self._write(ops, lambda: None)
        return s.info()

    async def delete_shard(self, shard: str) -> None:
        s = self._shard(shard)
        del self._shards[shard]
        ops: list[Op] = [(b"S" + shard.encode(), None)]
        for tag in (b"R", b"T", b"K", b"O"):
            ops += [(k, None) for k in self.db.iterator(prefix=tag + s.prefix, include_value=False)]
        await self._write(ops, lambda: None)

    async def set_shard_config(self, shard: str, config: ShardConfig) -> None:
        s = self._shard(shard)
        s.config = config
        s.config_raw = json.dumps(config.to_dict(), sort_keys=True).encode()
        await self._write([s.meta_op()], lambda: None)

    async def list_shards(self, prefix: str = "") -> list[str]:
        self._check_open()
        it = self.db.iterator(prefix=b"S" + prefix.encode(), include_value=False)
        return [k[1:].decode() for k in it]

    async def shard_info(self, shard: str) -> ShardInfo:
        return self._shard(shard).info()

    async def append(self, shard: str, records: Sequence[Record]) -> range:
        s = self._shard(shard)
        first = s.next_offset
        if not records:
            return range(first, first)
        data, _, _, max_ts = segment_io.encode_records(records, first, wall_clock_ms())
        keys: list[Op] = [
            (b"K" + s.prefix + rec.key, _U64.pack(first + i))
            for i, rec in enumerate(records)
            if rec.key is not None
        ]
        return range(first, await self._append_frames(s, data, len(records), max_ts, keys))

    async def _append_frames(
        self, s: _Shard, data: bytes, count: int, max_ts: int, keys: list[Op]
    ) -> int:
        first = s.next_offset
        ops: list[Op] = [
            (b"R" + s.prefix + _U64.pack(first), data),
            (b"T" + s.prefix + _ts_key(s.max_ts) + _U64.pack(first), b""),
            *keys,
        ]
        s.next_offset = end = first + count
        s.size += len(data)
        s.max_ts = max(s.max_ts, max_ts)
        ops.append(s.meta_op())

        def done() -> None:
            s.end = max(s.end, end)

        await self._write(ops, done)
        return end

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
        base = s.next_offset
        data = segment_io.encode_batch(
            base, count, max_timestamp_ms, patch_base_offset(batch, base, base_offset_at)
        )
        await self._append_frames(s, data, count, max_timestamp_ms, [])
        return base

    def _groups_from(self, s: _Shard, offset: int) -> Iterator[tuple[bytes, bytes]]:
        """(key, frames) of the append groups from the one holding ``offset`` on."""
        prefix = b"R" + s.prefix
        it = self.db.raw_iterator()
        it.seek(prefix + _U64.pack(offset + 1))
        if it.valid():
            it.prev()
        else:
            it.seek_to_last()
        if not it.valid() or not it.key().startswith(prefix):
            it.seek(prefix)
        return _walk(it, prefix)

    def _groups_at(self, s: _Shard, offset: int) -> Iterator[tuple[bytes, bytes]]:
        """Like _groups_from, with a point look-up first: a read usually starts where an
        append started (a consumer's next offset), and a get is ~3x cheaper than a seek."""
        key = b"R" + s.prefix + _U64.pack(offset)
        frames = self.db.get(key)
        if frames is None:
            return self._groups_from(s, offset)
        return itertools.chain(((key, frames),), self._groups_after(s, key))

    def _groups_after(self, s: _Shard, key: bytes) -> Iterator[tuple[bytes, bytes]]:
        it = self.db.raw_iterator()
        it.seek(key)
        if it.valid():
            it.next()
        yield from _walk(it, b"R" + s.prefix)

    def _read(
        self, s: _Shard, offset: int, max_records: int, max_bytes: int, batches: bool
    ) -> list[Any]:
        s.check_offset(offset)
        out: list[Any] = []
        if offset == s.end:
            return out
        used = 0
        end_key = b"R" + s.prefix + _U64.pack(s.end)
        for key, frames in self._groups_at(s, offset):
            if key >= end_key or len(out) >= max_records or (out and used >= max_bytes):
                break
            budget = max_bytes - used if out else max_bytes  # the first record always comes
            if batches:
                items, consumed, status = segment_io.decode_batches(
                    frames, offset, budget, StoredBatch
                )
            else:
                items, consumed, status = segment_io.decode(
                    frames, offset, max_records - len(out), budget, StoredRecord
                )
            out += items
            if out:
                used += consumed
            if status == segment_io.WRONG_KIND:
                what = "a record; use read" if batches else "an opaque batch; use read_batches"
                raise WrongEntryKind(f"an entry of shard {s.name!r} near {offset} is {what}")
            if status != segment_io.OK:
                raise Corrupted("frames fail their checks", f"leveldb key {key.hex()}", consumed)
            if consumed < len(frames):
                break
        return out

    async def read(
        self, shard: str, offset: int, max_records: int = 500, max_bytes: int = 1 << 20
    ) -> list[StoredRecord]:
        return self._read(self._shard(shard), offset, max_records, max_bytes, False)

    async def read_batches(
        self, shard: str, offset: int, max_bytes: int = 1 << 20
    ) -> list[StoredBatch]:
        return self._read(self._shard(shard), offset, 1 << 30, max_bytes, True)

    async def earliest_offset(self, shard: str) -> int:
        return self._shard(shard).earliest

    async def latest_offset(self, shard: str) -> int:
        return self._shard(shard).end

    async def offset_for_timestamp(self, shard: str, timestamp_ms: int) -> int | None:
        s = self._shard(shard)
        if s.max_ts < timestamp_ms:
            return None
        # T entries sort by (largest timestamp before the group, offset); the first with
        # that >= target bounds the answer from above, the one before it from below.
        it = self.db.iterator(prefix=b"T" + s.prefix, include_value=False)
        it.seek(b"T" + s.prefix + _ts_key(timestamp_ms))
        key = _prev_key(it, b"T" + s.prefix)
        start = s.earliest if key is None else max(_U64.unpack_from(key, 17)[0], s.earliest)
        for key, frames in self._groups_from(s, start):
            rows, valid, status = segment_io.frames(frames, 0)
            if status != segment_io.OK:
                raise Corrupted("frames fail their checks", f"leveldb key {key.hex()}", valid)
            for offset, count, ts, _ in rows:
                if ts >= timestamp_ms and offset + count > start:
                    return max(offset, start)
        return None

    async def read_by_key(self, shard: str, key: bytes) -> StoredRecord | None:
        s = self._shard(shard)
        raw = self.db.get(b"K" + s.prefix + key)
        if raw is None:
            return None
        offset = _U64.unpack(raw)[0]
        if offset < s.earliest or offset >= s.end:
            return None
        found = self._read(s, offset, 1, 1, False)
        return found[0] if found and found[0].offset == offset else None

    async def _trim(self, s: _Shard, offset: int) -> int:
        """Make ``offset`` the earliest: drop whole groups below it and their T entries."""
        if offset <= s.earliest:
            return s.earliest
        ops: list[Op] = []
        prev: tuple[bytes, bytes] | None = None
        for key, frames in self.db.iterator(prefix=b"R" + s.prefix):
            if _U64.unpack_from(key, 9)[0] > offset:
                break
            if prev is not None:  # prev ends where this group starts, at or before offset
                ops.append((prev[0], None))
                s.size -= len(prev[1])
            prev = (key, frames)
        else:
            if prev is not None and s.next_offset <= offset:
                ops.append((prev[0], None))
                s.size -= len(prev[1])
        for key in self.db.iterator(prefix=b"T" + s.prefix, include_value=False):
            if _U64.unpack_from(key, 17)[0] >= offset:
                break  # T keys sort by offset too: the largest timestamp only grows
            ops.append((key, None))
        s.earliest = offset
        ops.append(s.meta_op())
        await self._write(ops, lambda: None)
        return s.earliest

    async def delete_before(self, shard: str, offset: int) -> int:
        s = self._shard(shard)
        if offset > s.end or offset < 0:
            raise OffsetOutOfRange(s.name, offset, s.earliest, s.end)
        return await self._trim(s, offset)

    async def apply_retention(self, shard: str, now_ms: int | None = None) -> int:
        s = self._shard(shard)
        cfg = s.config
        target = s.earliest
        if cfg.retention_ms is not None:
            cutoff = (wall_clock_ms() if now_ms is None else now_ms) - cfg.retention_ms
            if s.max_ts < cutoff:
                target = s.end
            else:
                # The last T entry whose "largest timestamp before" is older than the
                # cutoff: everything before its offset may go.
                it = self.db.iterator(prefix=b"T" + s.prefix, include_value=False)
                it.seek(b"T" + s.prefix + _ts_key(cutoff))
                key = _prev_key(it, b"T" + s.prefix)
                if key is not None:
                    target = max(target, _U64.unpack_from(key, 17)[0])
        if cfg.retention_bytes is not None and s.size > cfg.retention_bytes:
            size = s.size
            for key, frames in self.db.iterator(prefix=b"R" + s.prefix):
                if size <= cfg.retention_bytes:
                    target = max(target, _U64.unpack_from(key, 9)[0])
                    break
                size -= len(frames)
            else:
                target = s.end
        return await self._trim(s, min(target, s.end))

    async def commit_offset(self, group: str, shard: str, offset: int, metadata: str = "") -> None:
        s = self._shard(shard)
        value = _I64.pack(offset) + metadata.encode()
        await self._write([(b"O" + s.prefix + group.encode(), value)], lambda: None)

    async def committed_offset(self, group: str, shard: str) -> CommittedOffset | None:
        s = self._shard(shard)
        raw = self.db.get(b"O" + s.prefix + group.encode())
        if raw is None:
            return None
        return CommittedOffset(_I64.unpack_from(raw)[0], raw[8:].decode())

    async def committed_offsets(self, shard: str) -> dict[str, CommittedOffset]:
        prefix = b"O" + self._shard(shard).prefix
        return {
            key[len(prefix) :].decode(): CommittedOffset(_I64.unpack_from(raw)[0], raw[8:].decode())
            for key, raw in self.db.iterator(prefix=prefix)
        }

    # --- key-value ------------------------------------------------------------------
    async def get(self, key: bytes) -> bytes | None:
        self._check_open()
        return self.db.get(b"V" + key)

    async def put(self, key: bytes, value: bytes) -> None:
        self._check_open()
        await self._write([(b"V" + key, bytes(value))], lambda: None)

    async def delete(self, key: bytes) -> bool:
        self._check_open()
        if self.db.get(b"V" + key) is None:
            return False
        await self._write([(b"V" + key, None)], lambda: None)
        return True

    async def scan(
        self, prefix: bytes = b"", limit: int | None = None
    ) -> list[tuple[bytes, bytes]]:
        self._check_open()
        out: list[tuple[bytes, bytes]] = []
        for key, value in self.db.iterator(prefix=b"V" + prefix):
            if limit is not None and len(out) >= limit:
                break
            out.append((key[1:], value))
        return out
