"""The ``segment`` engine: shard logs in append-only segment files, plus a kv.log.

Layout under ``SegmentConfig.path``::

    LOCK                      flock'ed while open: one process per data directory
    kv.log                    key-value pairs and committed offsets (kv.py)
    shards/s-<quoted name>/   one directory per shard (log.py)

Shard creation builds the directory under a temporary name and renames it into place;
deletion renames it away before removing it, so a crash never leaves half a shard.
Appends run on the event loop (measured: a 1 MB ``pwrite`` to the page cache is cheaper
than an executor hop); fsyncs run in the executor via sync.py.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import struct
from collections.abc import Sequence

from robustmq.errors import ShardExists, ShardNotFound, StorageClosed, StorageError
from robustmq.storage.engine import (
    CommittedOffset,
    Record,
    SegmentConfig,
    ShardConfig,
    ShardInfo,
    StoredBatch,
    StoredRecord,
    wall_clock_ms,
)
from robustmq.storage.segment.format import fsync_dir, shard_dirname
from robustmq.storage.segment.kv import NS_OFFSETS, NS_USER, KvLog
from robustmq.storage.segment.log import ShardLog
from robustmq.storage.segment.sync import Syncer

_OFFSET = struct.Struct("<q")
_U16 = struct.Struct("<H")


def _offset_key(group: str, shard: str) -> bytes:
    """Group then shard, the group length-prefixed: any bytes may be in either name."""
    g = group.encode()
    return _U16.pack(len(g)) + g + shard.encode()


def _offset_key_shard(key: bytes) -> bytes:
    return key[2 + _U16.unpack_from(key)[0] :]


def _offset_key_group(key: bytes) -> str:
    return key[2 : 2 + _U16.unpack_from(key)[0]].decode()


class SegmentEngine:
    """Append-only segment files; see the module docstring."""

    name = "segment"

    def __init__(self, config: SegmentConfig) -> None:
        self.config = config
        self.syncer = Syncer(config.fsync, config.fsync_interval_ms)
        self._shards: dict[str, ShardLog] = {}
        self._shards_dir = os.path.join(config.path, "shards")
        self._kv: KvLog | None = None
        self._lock_fd = -1
        self._always = config.fsync == "always"
        self._closed = False

    @classmethod
    async def open(cls, config: SegmentConfig) -> SegmentEngine:
        engine = cls(config)
        engine._open_files()
        engine.syncer.start()
        return engine

    def _open_files(self) -> None:
        os.makedirs(self._shards_dir, exist_ok=True)
        self._lock_fd = os.open(os.path.join(self.config.path, "LOCK"), os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise StorageError(f"{self.config.path} is in use by another process") from None
        try:
            for entry in sorted(os.listdir(self._shards_dir)):
                path = os.path.join(self._shards_dir, entry)
                if entry.endswith((".creating", ".deleting")):
                    shutil.rmtree(path, ignore_errors=True)
                    continue
                log = ShardLog.open(path, self.config, self.syncer)
                self._shards[log.name] = log
            kv_path = os.path.join(self.config.path, "kv.log")
            self._kv = KvLog.open(kv_path, self.config.fsync != "never")
        except BaseException:
            for log in self._shards.values():
                log.remove_all()
            os.close(self._lock_fd)
            raise

    def _check_open(self) -> KvLog:
        if self._closed or self._kv is None:
            raise StorageClosed("segment engine is closed")
        if self.syncer.failure is not None:
            raise self.syncer.failure
        return self._kv

    def _shard(self, shard: str) -> ShardLog:
        self._check_open()
        try:
            return self._shards[shard]
        except KeyError:
            raise ShardNotFound(shard) from None

    async def _durable(self) -> None:
        if self._always:
            await self.syncer.durable()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.syncer.close()
        for log in self._shards.values():
            log.close()
        self._shards.clear()
        if self._kv is not None:
            self._kv.close()
        os.close(self._lock_fd)

    async def flush(self) -> None:
        self._check_open()
        await self.syncer.flush()

    # --- shards ---------------------------------------------------------------------
    async def create_shard(self, shard: str, config: ShardConfig | None = None) -> ShardInfo:
        self._check_open()
        if shard in self._shards:
            raise ShardExists(shard)
        directory = os.path.join(self._shards_dir, shard_dirname(shard))
        if os.path.exists(directory):
            raise ShardExists(shard)  # a hashed-name collision, or a stray directory
        log = ShardLog.create(
            shard,
            directory,
            config or self.config.default_shard,
            self.config,
            self.syncer,
            wall_clock_ms(),
        )
        self._shards[shard] = log
        await self._durable()
        return self._info(log)

    async def set_shard_config(self, shard: str, config: ShardConfig) -> None:
        self._shard(shard).set_config(config)

    async def delete_shard(self, shard: str) -> None:
        log = self._shard(shard)
        async with self.syncer.lock:
            log.remove_all()
            del self._shards[shard]
            doomed = log.directory + ".deleting"
            os.rename(log.directory, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
            if self.config.fsync != "never":
                fsync_dir(self._shards_dir)
        kv = self._check_open()
        for key in [k for k in kv.tables[NS_OFFSETS] if _offset_key_shard(k) == shard.encode()]:
            kv.write(NS_OFFSETS, key, b"", delete=True)
        self.syncer.mark(kv)
        await self._durable()

    async def list_shards(self, prefix: str = "") -> list[str]:
        self._check_open()
        return sorted(n for n in self._shards if n.startswith(prefix))

    def _info(self, log: ShardLog) -> ShardInfo:
        return ShardInfo(log.name, log.config, log.earliest, log.latest, log.size)

    async def shard_info(self, shard: str) -> ShardInfo:
        return self._info(self._shard(shard))

    async def append(self, shard: str, records: Sequence[Record]) -> range:
        offsets = self._shard(shard).append_records(records, wall_clock_ms())
        await self._durable()
        return offsets

    async def append_batch(
        self,
        shard: str,
        batch: bytes | memoryview,
        *,
        count: int,
        max_timestamp_ms: int,
        base_offset_at: int | None = None,
    ) -> int:
        log = self._shard(shard)
        base = log.append_batch(batch, count, max_timestamp_ms, base_offset_at, wall_clock_ms())
        await self._durable()
        return base

    async def read(
        self, shard: str, offset: int, max_records: int = 500, max_bytes: int = 1 << 20
    ) -> list[StoredRecord]:
        return self._shard(shard).read(offset, max_records, max_bytes)

    async def read_batches(
        self, shard: str, offset: int, max_bytes: int = 1 << 20
    ) -> list[StoredBatch]:
        return self._shard(shard).read(offset, 1 << 30, max_bytes, batches=True)

    async def earliest_offset(self, shard: str) -> int:
        return self._shard(shard).earliest

    async def latest_offset(self, shard: str) -> int:
        return self._shard(shard).latest

    async def offset_for_timestamp(self, shard: str, timestamp_ms: int) -> int | None:
        return self._shard(shard).offset_for_timestamp(timestamp_ms)

    async def read_by_key(self, shard: str, key: bytes) -> StoredRecord | None:
        return self._shard(shard).read_by_key(key)

    async def delete_before(self, shard: str, offset: int) -> int:
        log = self._shard(shard)
        async with self.syncer.lock:
            return log.delete_before(offset)

    async def apply_retention(self, shard: str, now_ms: int | None = None) -> int:
        log = self._shard(shard)
        async with self.syncer.lock:
            return log.apply_retention(wall_clock_ms() if now_ms is None else now_ms)

    async def commit_offset(self, group: str, shard: str, offset: int, metadata: str = "") -> None:
        self._shard(shard)
        await self._kv_write(
            NS_OFFSETS, _offset_key(group, shard), _OFFSET.pack(offset) + metadata.encode()
        )

    async def committed_offset(self, group: str, shard: str) -> CommittedOffset | None:
        self._shard(shard)
        raw = self._check_open().get(NS_OFFSETS, _offset_key(group, shard))
        if raw is None:
            return None
        return CommittedOffset(_OFFSET.unpack_from(raw)[0], raw[8:].decode())

    async def committed_offsets(self, shard: str) -> dict[str, CommittedOffset]:
        self._shard(shard)
        name = shard.encode()
        return {
            _offset_key_group(key): CommittedOffset(_OFFSET.unpack_from(raw)[0], raw[8:].decode())
            for key, raw in self._check_open().tables[NS_OFFSETS].items()
            if _offset_key_shard(key) == name
        }

    # --- key-value ------------------------------------------------------------------
    async def _kv_write(self, ns: str, key: bytes, value: bytes, delete: bool = False) -> None:
        kv = self._check_open()
        kv.write(ns, key, value, delete)
        self.syncer.mark(kv)
        if kv.needs_compaction():
            async with self.syncer.lock:
                self.syncer.forget(kv)
                kv.compact()
        await self._durable()

    async def get(self, key: bytes) -> bytes | None:
        return self._check_open().get(NS_USER, key)

    async def put(self, key: bytes, value: bytes) -> None:
        await self._kv_write(NS_USER, bytes(key), bytes(value))

    async def delete(self, key: bytes) -> bool:
        kv = self._check_open()
        if kv.get(NS_USER, key) is None:
            return False
        await self._kv_write(NS_USER, bytes(key), b"", delete=True)
        return True

    async def scan(
        self, prefix: bytes = b"", limit: int | None = None
    ) -> list[tuple[bytes, bytes]]:
        table = self._check_open().tables[NS_USER]
        keys = sorted(k for k in table if k.startswith(prefix))
        if limit is not None:
            keys = keys[:limit]
        return [(k, table[k]) for k in keys]
