"""One shard of the segment engine: a directory of segments, and one segment.

A shard directory holds ``shard.json`` (name and config), ``log-start-offset`` (after
``delete_before``) and, per segment, ``<base-offset>.log`` with its ``.index`` and
``.timeindex``. Only the newest segment is written; older ones are sealed, and their index
files are written whole when they are sealed. Opening a shard recovers its newest segment:
the frames are scanned (compiled loop), a torn or corrupt tail is cut and logged, and its
index is rebuilt from the scan. Group commit and fsync policy live in sync.py; the
engine-level bookkeeping (shard names, key-value, offsets) in engine.py.
"""

from __future__ import annotations

import errno
import json
import logging
import mmap
import os
import struct
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from typing import Any

from robustmq.errors import (
    Corrupted,
    OffsetOutOfRange,
    StorageError,
    StorageFull,
    WrongEntryKind,
)
from robustmq.storage.engine import (
    Record,
    SegmentConfig,
    ShardConfig,
    StoredBatch,
    StoredRecord,
)
from robustmq.storage.segment.format import (
    HEADER_SIZE,
    INDEX_SUFFIX,
    LOG_MAGIC,
    LOG_SUFFIX,
    TIMEINDEX_SUFFIX,
    encode_index,
    encode_timeindex,
    pack_header,
    parse_segment_name,
    read_index,
    read_timeindex,
    segment_io,
    segment_name,
    unpack_header,
    write_file_atomic,
)
from robustmq.storage.segment.sync import Syncer

_log = logging.getLogger(__name__)
_U32 = struct.Struct("<I")
_STATUS = {
    segment_io.INCOMPLETE: "torn frame",
    segment_io.CORRUPT: "bad length, CRC32C, kind or offset sequence",
}
SHARD_META = "shard.json"
LOG_START = "log-start-offset"
MAX_RELATIVE_OFFSET = 0xFFFFFFFF


class Segment:
    """One ``.log`` file with its in-memory sparse index (and the files it is saved to)."""

    def __init__(self, directory: str, base_offset: int, created_ms: int) -> None:
        self.directory = directory
        self.base_offset = base_offset
        self.created_ms = created_ms
        stem = os.path.join(directory, segment_name(base_offset))
        self.path = stem + LOG_SUFFIX
        self.index_path = stem + INDEX_SUFFIX
        self.timeindex_path = stem + TIMEINDEX_SUFFIX
        self.fd = -1
        self.size = HEADER_SIZE
        self.next_offset = base_offset
        self.max_ts = -1
        # Sparse index, one point per index_interval bytes: offset, log position, and the
        # largest timestamp before that offset in this segment (what .timeindex stores).
        self.idx_offsets: list[int] = []
        self.idx_positions: list[int] = []
        self.idx_max_before: list[int] = []
        self.next_index_position = HEADER_SIZE

    # --- life cycle -----------------------------------------------------------------
    @classmethod
    def create(cls, directory: str, base_offset: int, created_ms: int) -> Segment:
        seg = cls(directory, base_offset, created_ms)
        seg.fd = os.open(seg.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        header = pack_header(LOG_MAGIC, base_offset, created_ms)
        if os.pwrite(seg.fd, header, 0) != HEADER_SIZE:
            raise StorageError(f"short write of the header of {seg.path}")
        return seg

    @classmethod
    def open(cls, directory: str, base_offset: int) -> Segment:
        path = os.path.join(directory, segment_name(base_offset) + LOG_SUFFIX)
        fd = os.open(path, os.O_RDWR)
        try:
            header = unpack_header(os.pread(fd, HEADER_SIZE, 0), LOG_MAGIC, path)
            if header.base_offset != base_offset:
                raise Corrupted(f"base offset {header.base_offset} != file name", path, 8)
        except BaseException:
            os.close(fd)
            raise
        seg = cls(directory, base_offset, header.created_ms)
        seg.fd = fd
        seg.size = os.fstat(fd).st_size
        return seg

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def remove(self) -> None:
        self.close()
        for path in (self.path, self.index_path, self.timeindex_path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    @property
    def empty(self) -> bool:
        return self.next_offset == self.base_offset

    def add_index(self, entries: list[tuple[int, int, int]]) -> None:
        if entries:
            offsets, positions, max_before = zip(*entries, strict=True)
            self.idx_offsets.extend(offsets)
            self.idx_positions.extend(positions)
            self.idx_max_before.extend(max_before)

    def index_files(self) -> tuple[bytes, bytes]:
        """The .index and .timeindex contents of this (sealed) segment."""
        index = encode_index(
            self.base_offset,
            self.created_ms,
            list(zip(self.idx_offsets, self.idx_positions, strict=True)),
        )
        times = list(zip(self.idx_max_before, self.idx_offsets, strict=True))
        times.append((self.max_ts, self.next_offset))
        return index, encode_timeindex(self.base_offset, self.created_ms, times)

    def load_index(self) -> bool:
        """Load the sealed segment's index files; False when they are missing or bad."""
        try:
            index = read_index(self.index_path, self.base_offset)
            times = read_timeindex(self.timeindex_path, self.base_offset)
        except (OSError, Corrupted) as exc:
            if not isinstance(exc, FileNotFoundError):
                _log.warning("%s: index unusable (%s); rebuilding it", self.path, exc)
            return False
        if len(times) != len(index) + 1 or any(
            t[1] != i[0] for t, i in zip(times, index, strict=False)
        ):
            _log.warning("%s: .index and .timeindex disagree; rebuilding them", self.path)
            return False
        self.idx_offsets = [o for o, _ in index]
        self.idx_positions = [p for _, p in index]
        self.idx_max_before = [t for t, _ in times[:-1]]
        self.max_ts, self.next_offset = times[-1]
        return True

    def recover(self, index_interval: int, shard: str) -> bool:
        """Scan every frame, cut a torn/corrupt tail, rebuild the index. True if cut."""
        file_size = self.size
        valid = 0
        if file_size > HEADER_SIZE:
            with mmap.mmap(self.fd, file_size, access=mmap.ACCESS_READ) as mm:
                view = memoryview(mm)
                try:
                    valid, next_offset, max_ts, entries, status, _ = segment_io.scan(
                        view[HEADER_SIZE:],
                        HEADER_SIZE,
                        self.base_offset,
                        HEADER_SIZE,
                        index_interval,
                        -1,
                    )
                finally:
                    view.release()
            self.next_offset, self.max_ts = next_offset, max_ts
            self.idx_offsets, self.idx_positions, self.idx_max_before = [], [], []
            self.add_index(entries)
            if entries:
                self.next_index_position = entries[-1][1] + index_interval
        end = HEADER_SIZE + valid
        self.size = end
        if end < file_size:
            _log.warning(
                "shard %r: recovery cut %d bytes from %s at byte %d (%s); "
                "the last offset kept is %d",
                shard,
                file_size - end,
                self.path,
                end,
                _STATUS.get(status, "unknown"),
                self.next_offset - 1,
            )
            os.ftruncate(self.fd, end)
            os.fsync(self.fd)
            return True
        return False

    # --- reads ----------------------------------------------------------------------
    def position_for(self, offset: int) -> int:
        i = bisect_right(self.idx_offsets, offset) - 1
        return self.idx_positions[i] if i >= 0 else HEADER_SIZE

    def read_frames(
        self, offset: int, max_records: int, max_bytes: int, batches: bool
    ) -> tuple[list[Any], int]:
        """Decoded records (or batches) from ``offset``; also the bytes they used."""
        pos = self.position_for(offset)
        out: list[Any] = []
        used = 0
        want = min(max(max_bytes, 4096), 1 << 20)
        if not batches:
            want = min(want, max(4096, max_records * 2048))
        # ``used`` counts only from the first returned frame on (frames before ``offset``
        # are skipped, not read), and the first record is returned whatever its size.
        while pos < self.size and len(out) < max_records and (not out or used < max_bytes):
            budget = max_bytes - used if out else max_bytes
            buf = os.pread(self.fd, min(want, self.size - pos), pos)
            if batches:
                items, consumed, status = segment_io.decode_batches(
                    buf, offset, budget, StoredBatch
                )
            else:
                items, consumed, status = segment_io.decode(
                    buf, offset, max_records - len(out), budget, StoredRecord
                )
            out += items
            pos += consumed
            if out:
                used += consumed
            if status == segment_io.OK:
                if consumed < len(buf):
                    break  # a limit was reached
            elif status == segment_io.INCOMPLETE:
                if consumed == 0:  # one frame larger than the buffer: read all of it
                    (body_len,) = _U32.unpack(os.pread(self.fd, 4, pos))
                    if pos + 8 + body_len > self.size:
                        raise Corrupted("frame runs past the end of the log", self.path, pos)
                    want = 8 + body_len
            elif status == segment_io.WRONG_KIND:
                kind = "a record; use read" if batches else "an opaque batch; use read_batches"
                raise WrongEntryKind(f"the entry at byte {pos} of {self.path} is {kind}")
            else:
                raise Corrupted("frame fails its checks", self.path, pos)
        return out, used

    def first_frame_at_or_after(self, pos: int, min_offset: int, timestamp: int) -> int | None:
        """Walk frames from ``pos``: the first offset >= ``min_offset`` in a frame whose
        timestamp is >= ``timestamp``."""
        want = 64 * 1024
        while pos < self.size:
            buf = os.pread(self.fd, min(want, self.size - pos), pos)
            rows, valid, status = segment_io.frames(buf, pos)
            for offset, count, ts, _ in rows:
                if ts >= timestamp and offset + count > min_offset:
                    return max(offset, min_offset)
            if status == segment_io.CORRUPT:
                raise Corrupted("frame fails its checks", self.path, pos + valid)
            if status == segment_io.INCOMPLETE and not valid:  # a frame larger than want
                (body_len,) = _U32.unpack(os.pread(self.fd, 4, pos))
                if pos + 8 + body_len > self.size:
                    raise Corrupted("frame runs past the end of the log", self.path, pos)
                want = 8 + body_len
            pos += valid
        return None


class ShardLog:
    """The segments of one shard; every method is synchronous and runs on the loop."""

    def __init__(
        self, name: str, directory: str, config: ShardConfig, engine: SegmentConfig, syncer: Syncer
    ) -> None:
        self.name = name
        self.directory = directory
        self.config = config
        self.engine = engine
        self.syncer = syncer
        self.segments: list[Segment] = []
        self.bases: list[int] = []
        self.log_start_offset = 0
        self._keys: dict[bytes, int] | None = None

    # --- life cycle -----------------------------------------------------------------
    @classmethod
    def create(
        cls,
        name: str,
        directory: str,
        config: ShardConfig,
        engine: SegmentConfig,
        syncer: Syncer,
        now: int,
    ) -> ShardLog:
        tmp = directory + ".creating"
        os.makedirs(tmp)
        meta = json.dumps({"name": name, "config": config.to_dict()}).encode()
        write_file_atomic(os.path.join(tmp, SHARD_META), meta, sync=engine.fsync != "never")
        seg = Segment.create(tmp, 0, now)
        if engine.fsync != "never":
            os.fsync(seg.fd)
        seg.close()
        os.rename(tmp, directory)
        syncer.mark_dir(os.path.dirname(directory))
        return cls.open(directory, engine, syncer)

    @classmethod
    def open(cls, directory: str, engine: SegmentConfig, syncer: Syncer) -> ShardLog:
        with open(os.path.join(directory, SHARD_META), "rb") as f:
            meta = json.loads(f.read())
        log = cls(meta["name"], directory, ShardConfig.from_dict(meta["config"]), engine, syncer)
        log._load()
        return log

    def _load(self) -> None:
        bases = sorted(
            b for b in map(parse_segment_name, os.listdir(self.directory)) if b is not None
        )
        try:
            with open(os.path.join(self.directory, LOG_START), "rb") as f:
                self.log_start_offset = int(f.read())
        except FileNotFoundError:
            pass
        # A crash while rolling can leave a newest segment shorter than its header.
        while bases:
            path = os.path.join(self.directory, segment_name(bases[-1]) + LOG_SUFFIX)
            if len(bases) > 1 and os.path.getsize(path) < HEADER_SIZE:
                _log.warning("shard %r: removing %s, torn while being created", self.name, path)
                os.unlink(path)
                bases.pop()
                continue
            break
        for i, base in enumerate(bases):
            seg = Segment.open(self.directory, base)
            last = i == len(bases) - 1
            sealed_ok = not last and seg.load_index() and seg.next_offset == bases[i + 1]
            if not (last or sealed_ok):
                cut = seg.recover(self.engine.index_interval_bytes, self.name)
                self._save_index(seg)
                if cut or seg.next_offset != bases[i + 1]:
                    # A torn sealed segment (a crash with fsync=never/interval): the
                    # segments after it cannot continue its offsets; drop them.
                    for later in bases[i + 1 :]:
                        _log.warning(
                            "shard %r: dropping segment %d, which follows a torn one",
                            self.name,
                            later,
                        )
                        Segment(self.directory, later, 0).remove()
                    self._append_segment(seg)
                    break
            elif last:
                seg.recover(self.engine.index_interval_bytes, self.name)
            self._append_segment(seg)
        if not self.segments:
            raise Corrupted("shard has no segment", self.directory)
        active = self.segments[-1]
        if active.size < HEADER_SIZE:
            raise Corrupted("newest segment has no header", active.path, 0)
        if self.log_start_offset > active.next_offset:
            self.log_start_offset = active.next_offset

    def _append_segment(self, seg: Segment) -> None:
        self.segments.append(seg)
        self.bases.append(seg.base_offset)

    def _save_index(self, seg: Segment) -> None:
        index, times = seg.index_files()
        self.syncer.write_later(seg.index_path, index)
        self.syncer.write_later(seg.timeindex_path, times)

    def close(self) -> None:
        # The newest segment's index is not saved: opening always rebuilds it by scanning.
        for seg in self.segments:
            self.syncer.forget(seg)
            seg.close()

    # --- bounds ---------------------------------------------------------------------
    @property
    def earliest(self) -> int:
        return max(self.log_start_offset, self.segments[0].base_offset)

    @property
    def latest(self) -> int:
        return self.segments[-1].next_offset

    @property
    def size(self) -> int:
        return sum(seg.size for seg in self.segments)

    def check_offset(self, offset: int) -> None:
        if not self.earliest <= offset <= self.latest:
            raise OffsetOutOfRange(self.name, offset, self.earliest, self.latest)

    # --- appends --------------------------------------------------------------------
    def _active_for(self, nbytes: int, count: int, now: int) -> Segment:
        seg = self.segments[-1]
        cfg = self.config
        if not seg.empty and (
            seg.size + nbytes > cfg.segment_bytes
            or (cfg.segment_ms is not None and now - seg.created_ms >= cfg.segment_ms)
            or seg.next_offset + count - seg.base_offset > MAX_RELATIVE_OFFSET
        ):
            seg = self._roll(now)
        return seg

    def _roll(self, now: int) -> Segment:
        old = self.segments[-1]
        self._save_index(old)
        self.syncer.mark(old)
        new = Segment.create(self.directory, old.next_offset, now)
        new.max_ts = -1
        self._append_segment(new)
        self.syncer.mark(new)
        self.syncer.mark_dir(self.directory)
        return new

    def _write(self, seg: Segment, parts: list[bytes | memoryview]) -> None:
        """Append ``parts`` to the segment with one ``pwritev`` (more only after a short
        write): a produced batch goes from the request buffer to the file uncopied."""
        size = 0
        try:
            pos = seg.size
            views = [memoryview(p).cast("B") for p in parts]
            while views:
                n = os.pwritev(seg.fd, views, pos)
                size += n
                pos += n
                while views and n >= views[0].nbytes:
                    n -= views[0].nbytes
                    views.pop(0)
                if n:
                    views[0] = views[0][n:]
        except OSError as exc:
            try:
                os.ftruncate(seg.fd, seg.size)
            except OSError:
                pass
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(f"{seg.path}: {exc.strerror}") from exc
            raise StorageError(f"{seg.path}: write failed: {exc}") from exc
        seg.size += size
        self.syncer.mark(seg)

    def append_records(self, records: Sequence[Record], now: int) -> range:
        if not records:
            return range(self.latest, self.latest)
        interval = self.engine.index_interval_bytes
        seg = self.segments[-1]
        for attempt in range(2):
            data, entries, next_index, max_ts = segment_io.encode_records(
                records,
                seg.next_offset,
                now,
                seg.size,
                seg.next_index_position,
                interval,
                seg.max_ts,
            )
            if attempt == 0:
                rolled = self._active_for(len(data), len(records), now)
                if rolled is not seg:
                    seg = rolled
                    continue
            break
        self._write(seg, [data])
        seg.add_index(entries)
        seg.next_index_position = next_index
        seg.max_ts = max_ts
        first = seg.next_offset
        seg.next_offset = first + len(records)
        if self._keys is not None:
            for i, rec in enumerate(records):
                if rec.key is not None:
                    self._keys[rec.key] = first + i
        return range(first, seg.next_offset)

    def append_batch(
        self,
        batch: bytes | memoryview,
        count: int,
        max_timestamp_ms: int,
        base_offset_at: int | None,
        now: int,
    ) -> int:
        if count < 1:
            raise ValueError("count must be >= 1")
        seg = self._active_for(
            len(batch) + segment_io.FRAME_HEADER + segment_io.BODY_HEADER, count, now
        )
        base = seg.next_offset
        head, rest = segment_io.encode_batch_head(
            base, count, max_timestamp_ms, batch, -1 if base_offset_at is None else base_offset_at
        )
        position = seg.size
        self._write(seg, [head, memoryview(batch)[rest:]] if rest < len(batch) else [head])
        if position >= seg.next_index_position:
            seg.add_index([(base, position, seg.max_ts)])
            seg.next_index_position = position + self.engine.index_interval_bytes
        seg.max_ts = max(seg.max_ts, max_timestamp_ms)
        seg.next_offset = base + count
        return base

    # --- reads ----------------------------------------------------------------------
    def _segment_index(self, offset: int) -> int:
        return max(bisect_right(self.bases, offset) - 1, 0)

    def read(
        self, offset: int, max_records: int, max_bytes: int, batches: bool = False
    ) -> list[Any]:
        self.check_offset(offset)
        out: list[Any] = []
        used = 0
        i = self._segment_index(offset)
        while i < len(self.segments) and len(out) < max_records and (not out or used < max_bytes):
            items, n = self.segments[i].read_frames(
                offset, max_records - len(out), max_bytes - used if out else max_bytes, batches
            )
            out += items
            used += n
            i += 1
        return out

    def offset_for_timestamp(self, timestamp: int) -> int | None:
        earliest = self.earliest
        for seg in self.segments[self._segment_index(earliest) :]:
            if seg.max_ts < timestamp or seg.next_offset <= earliest:
                continue
            # Frames before index point j-1 are all older than the target (the largest
            # timestamp before point j-1 is); start there, or at the log start offset.
            j = bisect_left(seg.idx_max_before, timestamp)
            start = seg.idx_positions[j - 1] if j > 0 else HEADER_SIZE
            found = seg.first_frame_at_or_after(
                max(start, seg.position_for(earliest)), earliest, timestamp
            )
            if found is not None:
                return found
        return None

    def _iter_records(self) -> Iterator[StoredRecord]:
        """Every retained plain record, skipping opaque batches."""
        offset = self.earliest
        for seg in self.segments[self._segment_index(offset) :]:
            pos = seg.position_for(offset)
            while pos < seg.size:
                buf = os.pread(seg.fd, min(1 << 20, seg.size - pos), pos)
                items, consumed, status = segment_io.decode(
                    buf, offset, 1 << 30, 1 << 62, StoredRecord
                )
                yield from items
                pos += consumed
                if status == segment_io.WRONG_KIND:
                    (body_len,) = _U32.unpack(os.pread(seg.fd, 4, pos))
                    pos += 8 + body_len
                elif status == segment_io.INCOMPLETE and consumed == 0:
                    (body_len,) = _U32.unpack(os.pread(seg.fd, 4, pos))
                    items, _, status = segment_io.decode(
                        os.pread(seg.fd, 8 + body_len, pos), offset, 1, 1 << 62, StoredRecord
                    )
                    if status not in (segment_io.OK, segment_io.WRONG_KIND):
                        raise Corrupted("frame fails its checks", seg.path, pos)
                    yield from items
                    pos += 8 + body_len
                elif status == segment_io.CORRUPT:
                    raise Corrupted("frame fails its checks", seg.path, pos)

    def read_by_key(self, key: bytes) -> StoredRecord | None:
        if self._keys is None:
            # Built on first use by one scan, then kept current by appends.
            self._keys = {r.key: r.offset for r in self._iter_records() if r.key is not None}
        offset = self._keys.get(key)
        if offset is None:
            return None
        if offset < self.earliest:
            del self._keys[key]
            return None
        found = self.read(offset, 1, 1)
        return found[0] if found and found[0].offset == offset else None

    # --- retention (callers hold the syncer lock: segments get closed) --------------
    def _drop_segments(self, n: int) -> None:
        """Delete the ``n`` oldest segments (never the active one)."""
        n = min(n, len(self.segments) - 1)
        for seg in self.segments[:n]:
            self.syncer.forget(seg)
            seg.remove()
        del self.segments[:n], self.bases[:n]
        if n:
            self.syncer.mark_dir(self.directory)

    def _save_log_start(self) -> None:
        path = os.path.join(self.directory, LOG_START)
        write_file_atomic(path, str(self.log_start_offset).encode(), self.engine.fsync != "never")

    def set_config(self, config: ShardConfig) -> None:
        meta = json.dumps({"name": self.name, "config": config.to_dict()}).encode()
        path = os.path.join(self.directory, SHARD_META)
        write_file_atomic(path, meta, self.engine.fsync != "never")
        self.config = config

    def delete_before(self, offset: int) -> int:
        if offset > self.latest or offset < 0:
            raise OffsetOutOfRange(self.name, offset, self.earliest, self.latest)
        if offset > self.log_start_offset:
            self.log_start_offset = offset
            self._save_log_start()
        n = 0
        while n < len(self.segments) - 1 and self.segments[n].next_offset <= offset:
            n += 1
        self._drop_segments(n)
        return self.earliest

    def apply_retention(self, now: int) -> int:
        cfg = self.config
        n = 0
        if cfg.retention_ms is not None:
            cutoff = now - cfg.retention_ms
            while n < len(self.segments) - 1 and self.segments[n].max_ts < cutoff:
                n += 1
        if cfg.retention_bytes is not None:
            size = sum(s.size for s in self.segments[n:])
            while (
                n < len(self.segments) - 1 and size - self.segments[n].size >= cfg.retention_bytes
            ):
                size -= self.segments[n].size
                n += 1
        self._drop_segments(n)
        return self.earliest

    def remove_all(self) -> None:
        for seg in self.segments:
            self.syncer.forget(seg)
            seg.close()
        self.segments.clear()
        self.bases.clear()
