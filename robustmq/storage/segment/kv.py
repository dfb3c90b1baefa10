"""The segment engine's key-value store and committed offsets: one log-structured file.

``kv.log`` starts with the common header (magic ``RMQK``) followed by ordinary record
frames: a put is a record with the key and value, a delete the same with a ``del``
header, and committed offsets carry an ``ns`` header so that they never show up in
``scan``. Everything is held in dictionaries; the file is only replayed on open (a torn
tail is cut and logged) and rewritten whole (write, fsync, rename) when more than half of
it is dead. Shard logs are in log.py.
"""

from __future__ import annotations

import logging
import mmap
import os

from robustmq.storage.engine import Record, StoredRecord
from robustmq.storage.segment.format import (
    HEADER_SIZE,
    KV_MAGIC,
    fsync_dir,
    pack_header,
    segment_io,
    unpack_header,
    write_file_atomic,
)

_log = logging.getLogger(__name__)

NS_USER = ""
NS_OFFSETS = "o"
_DELETE = ("del", b"")
_COMPACT_MIN_BYTES = 1 << 20


class KvLog:
    def __init__(self, path: str, sync: bool) -> None:
        self.path = path
        self.sync = sync
        self.fd = -1
        self.size = HEADER_SIZE
        self.live_bytes = 0
        self.tables: dict[str, dict[bytes, bytes]] = {NS_USER: {}, NS_OFFSETS: {}}

    @classmethod
    def open(cls, path: str, sync: bool) -> KvLog:
        kv = cls(path, sync)
        if not os.path.exists(path):
            write_file_atomic(path, pack_header(KV_MAGIC, 0, 0), sync)
        kv.fd = os.open(path, os.O_RDWR)
        kv._replay()
        return kv

    def _replay(self) -> None:
        file_size = os.fstat(self.fd).st_size
        unpack_header(os.pread(self.fd, HEADER_SIZE, 0), KV_MAGIC, self.path)
        valid = 0
        status = segment_io.OK
        if file_size > HEADER_SIZE:
            with mmap.mmap(self.fd, file_size, access=mmap.ACCESS_READ) as mm:
                view = memoryview(mm)
                try:
                    records, valid, status = segment_io.decode(
                        view[HEADER_SIZE:], 0, 1 << 40, 1 << 62, StoredRecord
                    )
                finally:
                    view.release()
            for rec in records:
                self._apply(rec.key or b"", rec.value, rec.headers)
        self.size = HEADER_SIZE + valid
        if self.size < file_size:
            _log.warning(
                "%s: recovery cut %d bytes at byte %d (status %d)",
                self.path,
                file_size - self.size,
                self.size,
                status,
            )
            os.ftruncate(self.fd, self.size)
            os.fsync(self.fd)

    def _apply(self, key: bytes, value: bytes, headers: tuple[tuple[str, bytes], ...]) -> None:
        ns = NS_USER
        delete = False
        for name, hval in headers:
            if name == "ns":
                ns = hval.decode()
            elif name == "del":
                delete = True
        table = self.tables.setdefault(ns, {})
        old = table.pop(key, None)
        if old is not None:
            self.live_bytes -= len(key) + len(old)
        if not delete:
            table[key] = value
            self.live_bytes += len(key) + len(value)

    def _record(self, ns: str, key: bytes, value: bytes, delete: bool) -> Record:
        headers: tuple[tuple[str, bytes], ...] = ()
        if ns:
            headers += (("ns", ns.encode()),)
        if delete:
            headers += (_DELETE,)
        return Record(value, key, headers, 0)

    def write(self, ns: str, key: bytes, value: bytes, delete: bool = False) -> None:
        """Apply and log one put (or delete)."""
        rec = self._record(ns, key, value, delete)
        data = segment_io.encode_records([rec], 0, 0)[0]
        view = memoryview(data)
        pos = self.size
        while view:
            n = os.pwrite(self.fd, view, pos)
            view = view[n:]
            pos += n
        self.size = pos
        self._apply(key, value, rec.headers)

    def get(self, ns: str, key: bytes) -> bytes | None:
        return self.tables.get(ns, {}).get(key)

    def needs_compaction(self) -> bool:
        return self.size > _COMPACT_MIN_BYTES and self.size > 2 * (self.live_bytes + HEADER_SIZE)

    def compact(self) -> None:
        """Rewrite the file with live entries only (call with the syncer lock held)."""
        records = [
            self._record(ns, key, value, False)
            for ns, table in self.tables.items()
            for key, value in table.items()
        ]
        data = segment_io.encode_records(records, 0, 0)[0] if records else b""
        write_file_atomic(self.path, pack_header(KV_MAGIC, 0, 0) + data, self.sync)
        os.close(self.fd)
        self.fd = os.open(self.path, os.O_RDWR)
        self.size = HEADER_SIZE + len(data)
        if self.sync:
            fsync_dir(os.path.dirname(self.path))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
