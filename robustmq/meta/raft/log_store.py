"""The durable Raft log of one group: segment files, a hard state file, a snapshot file.

``LogStore`` implements the ``Storage`` protocol the core reads and the writes the caller
makes when it persists a ``Ready`` (``save``: snapshot, entries and hard state with one
fsync for the whole batch: group commit). Files in the group's directory::

    <first index, 20 digits>.raftlog  16-byte header (magic "RMRL", u16 version, u16 0,
                                      u64 first index), then one frame per entry
    hardstate                         magic "RMRH", u16 version, u16 0, u64 term,
                                      u64 vote, u64 commit, u32 crc32c of the above
    snapshot                          magic "RMRS", u16 version, u16 0, then one frame

Frames are the length + CRC32C framing of ``robustmq._core.segment_io`` (``encode_batch``
with offset = entry index, timestamp = entry term, payload = entry type byte + data; the
snapshot frame's payload is its ConfState and data). ``hardstate`` and ``snapshot`` are
replaced whole by write-then-fsync-then-rename. Recovery truncates a torn tail of the last
segment (reported in ``recovery``) and raises ``RaftLogCorrupted`` for damage anywhere
else. Live entries are also held in memory (compaction bounds them); the hard state is
rewritten only when term or vote change, so the stored commit may lag (Raft allows it).
Sockets, the core's rules and the state machine are elsewhere.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from robustmq._core import segments as segment_io
from robustmq.errors import RaftCompacted, RaftLogCorrupted, RaftUnavailable
from robustmq.meta.raft.storage import limit_size
from robustmq.meta.raft.types import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Snapshot,
    SnapshotMeta,
)

VERSION = 1
SEGMENT_MAGIC = b"RMRL"
HARDSTATE_MAGIC = b"RMRH"
SNAPSHOT_MAGIC = b"RMRS"
SUFFIX = ".raftlog"
_SEG_HEADER = struct.Struct("<4sHHQ")
_HS = struct.Struct("<4sHHQQQ")
_U32 = struct.Struct("<I")
_SNAP_HEADER = struct.Struct("<4sHH")


@dataclass(frozen=True)
class Recovery:
    """What opening the log found: entries recovered and any torn tail cut off."""

    entries: int
    truncated_bytes: int = 0
    truncated_path: str = ""


class _Segment:
    __slots__ = ("fd", "first", "path", "positions", "size")

    def __init__(self, path: str, first: int, fd: int, size: int) -> None:
        self.path = path
        self.first = first
        self.fd = fd
        self.size = size
        self.positions: list[int] = []  # file position of each entry's frame


def _segment_name(first: int) -> str:
    return f"{first:020d}{SUFFIX}"


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(directory: str, name: str, data: bytes) -> None:
    tmp = os.path.join(directory, name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, os.path.join(directory, name))
    _fsync_dir(directory)


def _encode_conf_state(cs: ConfState) -> bytes:
    ids = [len(cs.voters), *cs.voters, len(cs.learners), *cs.learners]
    return struct.pack(f"<{len(ids)}Q", *ids)


def _decode_conf_state(buf: bytes, path: str) -> tuple[ConfState, int]:
    try:
        (nv,) = struct.unpack_from("<Q", buf, 0)
        voters = struct.unpack_from(f"<{nv}Q", buf, 8)
        pos = 8 + 8 * nv
        (nl,) = struct.unpack_from("<Q", buf, pos)
        learners = struct.unpack_from(f"<{nl}Q", buf, pos + 8)
    except (struct.error, MemoryError, OverflowError) as exc:
        raise RaftLogCorrupted(f"bad membership in snapshot ({exc})", path) from None
    return ConfState(tuple(voters), tuple(learners)), pos + 8 + 8 * nl


class LogStore:
    """Durable ``Storage`` in ``directory`` (created if missing).

    ``segment_bytes`` is the size past which a new segment file is started.
    """

    def __init__(
        self,
        directory: str,
        *,
        segment_bytes: int = 64 << 20,
    ) -> None:
        if segment_bytes < 4096:
            raise ValueError(f"segment_bytes {segment_bytes} is below the minimum 4096")
        self.directory = directory
        self.segment_bytes = segment_bytes
        os.makedirs(directory, exist_ok=True)
        self._segments: list[_Segment] = []
        self._entries: list[Entry] = []
        self._dirty: set[int] = set()
        self._dir_dirty = False
        self._hs = HardState()
        self._stored_hs = HardState()
        self._snapshot = Snapshot(SnapshotMeta(0, 0, ConfState()))
        self.recovery = Recovery(0)
        self._closed = False
        self._recover()

    # -- recovery ---------------------------------------------------------------------
    def _recover(self) -> None:
        d = self.directory
        for name in os.listdir(d):
            if name.endswith(".tmp"):
                os.unlink(os.path.join(d, name))  # an interrupted atomic replace
        snap_path = os.path.join(d, "snapshot")
        if os.path.exists(snap_path):
            self._snapshot = self._read_snapshot(snap_path)
        hs_path = os.path.join(d, "hardstate")
        if os.path.exists(hs_path):
            self._hs = self._stored_hs = self._read_hard_state(hs_path)
        names = sorted(n for n in os.listdir(d) if n.endswith(SUFFIX))
        snap_index = self._snapshot.meta.index
        for k, name in enumerate(names):
            self._load_segment(os.path.join(d, name), last=k == len(names) - 1)
        # Entries at or below the snapshot are compacted. The rest are kept only if the
        # log holds the snapshot's own entry (Log Matching: then the prefix is the same);
        # otherwise the snapshot came from a leader and replaced the whole log.
        if self._entries and self._entries[0].index <= snap_index:
            k = snap_index - self._entries[0].index
            keep = k < len(self._entries) and self._entries[k].term == self._snapshot.meta.term
            if keep:
                self._entries = self._entries[k + 1 :]
            else:
                self._entries = []
                self._drop_segments_from(0)
        elif self._entries and self._entries[0].index != snap_index + 1:
            raise RaftLogCorrupted(
                f"log starts at {self._entries[0].index} but the snapshot ends at {snap_index}",
                d,
            )
        self._drop_compacted_segments()
        if self._hs.commit > self.last_index():
            raise RaftLogCorrupted(
                f"hard state commit {self._hs.commit} is beyond the last entry {self.last_index()}",
                hs_path,
            )
        self.recovery = Recovery(len(self._entries), *self._torn)

    _torn: tuple[int, str] = (0, "")

    def _load_segment(self, path: str, last: bool) -> None:
        with open(path, "rb") as f:
            buf = f.read()
        hdr = _SEG_HEADER.size
        if len(buf) < hdr:
            if last:
                # Crashed while creating the segment: nothing in it was acknowledged.
                os.unlink(path)
                self._torn = (len(buf), path)
                return
            raise RaftLogCorrupted("segment header is cut short", path, 0)
        magic, version, _, first = _SEG_HEADER.unpack_from(buf)
        if magic != SEGMENT_MAGIC:
            raise RaftLogCorrupted(f"bad segment magic {magic!r}", path, 0)
        if version != VERSION:
            raise RaftLogCorrupted(f"unknown segment version {version}", path, 4)
        if os.path.basename(path) != _segment_name(first):
            raise RaftLogCorrupted(f"segment header says first index {first}", path, 8)
        if self._entries and first != self._entries[-1].index + 1:
            raise RaftLogCorrupted(
                f"segment starts at {first}, expected {self._entries[-1].index + 1}", path
            )
        body = memoryview(buf)[hdr:]
        valid, _, _, _, status, _ = segment_io.scan(body, hdr, first)
        if status != segment_io.OK:
            pos = hdr + valid
            if not last or not self._is_torn_tail(buf, pos):
                raise RaftLogCorrupted("bad frame (length, CRC32C or index)", path, pos)
            with open(path, "r+b") as f:
                f.truncate(pos)
                os.fsync(f.fileno())
            self._torn = (len(buf) - pos, path)
        fd = os.open(path, os.O_RDWR | os.O_APPEND)
        seg = _Segment(path, first, fd, hdr + valid)
        rows, _, _ = segment_io.frames(body[:valid], hdr)
        try:
            batches, _, _ = segment_io.decode_batches(body[:valid], 0, 1 << 62, _make_entry)
        except (IndexError, ValueError):
            raise RaftLogCorrupted("a frame holds no valid entry type", path) from None
        seg.positions = [r[3] for r in rows]
        self._entries.extend(batches)
        self._segments.append(seg)

    @staticmethod
    def _is_torn_tail(buf: bytes, pos: int) -> bool:
        """A bad frame at ``pos`` is a torn write if nothing valid could follow it: the
        frame claims to reach the end of the file or beyond, or the rest is zeros."""
        rest = len(buf) - pos
        if rest < segment_io.FRAME_HEADER or not any(buf[pos:]):
            return True
        (body_len,) = _U32.unpack_from(buf, pos)
        return pos + segment_io.FRAME_HEADER + body_len >= len(buf)

    def _read_hard_state(self, path: str) -> HardState:
        with open(path, "rb") as f:
            buf = f.read()
        if len(buf) != _HS.size + 4:
            raise RaftLogCorrupted(f"hard state file of {len(buf)} bytes", path)
        magic, version, _, term, vote, commit = _HS.unpack_from(buf)
        if magic != HARDSTATE_MAGIC or version != VERSION:
            raise RaftLogCorrupted(f"bad hard state magic/version {magic!r}/{version}", path, 0)
        if _U32.unpack_from(buf, _HS.size)[0] != segment_io.crc32c(buf[: _HS.size]):
            raise RaftLogCorrupted("hard state CRC32C mismatch", path, _HS.size)
        return HardState(term, vote, commit)

    def _read_snapshot(self, path: str) -> Snapshot:
        with open(path, "rb") as f:
            buf = f.read()
        hdr = _SNAP_HEADER.size
        if len(buf) < hdr:
            raise RaftLogCorrupted("snapshot header is cut short", path, 0)
        magic, version, _ = _SNAP_HEADER.unpack_from(buf)
        if magic != SNAPSHOT_MAGIC or version != VERSION:
            raise RaftLogCorrupted(f"bad snapshot magic/version {magic!r}/{version}", path, 0)
        batches, stop, status = segment_io.decode_batches(
            memoryview(buf)[hdr:], 0, 1 << 62, lambda i, c, t, d: (i, t, d)
        )
        if status != segment_io.OK or len(batches) != 1 or hdr + stop != len(buf):
            raise RaftLogCorrupted("bad snapshot frame", path, hdr + stop)
        index, term, payload = batches[0]
        cs, used = _decode_conf_state(payload, path)
        return Snapshot(SnapshotMeta(index, term, cs), payload[used:])

    @staticmethod
    def _encode_snapshot(snap: Snapshot) -> bytes:
        payload = _encode_conf_state(snap.meta.conf_state) + snap.data
        frame = segment_io.encode_batch(snap.meta.index, 1, snap.meta.term, payload)
        return _SNAP_HEADER.pack(SNAPSHOT_MAGIC, VERSION, 0) + frame

    # -- Storage ----------------------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hs, self._snapshot.meta.conf_state

    def first_index(self) -> int:
        return self._snapshot.meta.index + 1

    def last_index(self) -> int:
        return self._snapshot.meta.index + len(self._entries)

    def term(self, index: int) -> int:
        snap = self._snapshot.meta
        if index < snap.index:
            raise RaftCompacted(index, snap.index + 1)
        if index == snap.index:
            return snap.term
        if index > self.last_index():
            raise RaftUnavailable(index, self.last_index())
        return self._entries[index - snap.index - 1].term

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        snap = self._snapshot.meta.index
        if lo <= snap:
            raise RaftCompacted(lo, snap + 1)
        if hi > self.last_index() + 1:
            raise RaftUnavailable(hi - 1, self.last_index())
        return limit_size(self._entries[lo - snap - 1 : hi - snap - 1], max_bytes)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- writes -----------------------------------------------------------------------
    def save(
        self,
        hard_state: HardState | None = None,
        entries: list[Entry] | tuple[Entry, ...] = (),
        snapshot: Snapshot | None = None,
        sync: bool = True,
    ) -> None:
        """Persist one Ready: snapshot, entries, hard state; with ``sync``, one fsync of
        the log for the whole batch (group commit) before the hard state is replaced."""
        self._check_open()
        if snapshot is not None:
            self.apply_snapshot(snapshot)
        if entries:
            self.append(list(entries))
        if hard_state is not None:
            self._hs = hard_state
        if sync:
            self.sync()

    def append(self, entries: list[Entry]) -> None:
        """Append entries (not synced), first cutting off any conflicting suffix."""
        self._check_open()
        if not entries:
            return
        first = self.first_index()
        if entries[-1].index < first:
            return
        if entries[0].index < first:
            entries = entries[first - entries[0].index :]
        start = entries[0].index
        if start > self.last_index() + 1:
            raise RaftUnavailable(start, self.last_index())
        if start <= self.last_index():
            self._truncate_from(start)
        seg = self._active()
        parts: list[bytes] = []
        pos = seg.size
        encode = segment_io.encode_batch
        for e in entries:
            if pos >= self.segment_bytes and seg.positions:
                self._write(seg, parts, pos)
                self._entries.extend(entries[: e.index - entries[0].index])
                entries = entries[e.index - entries[0].index :]
                seg, parts = self._active(), []
                pos = seg.size
            frame = encode(e.index, 1, e.term, bytes((e.type,)) + e.data)
            seg.positions.append(pos)
            pos += len(frame)
            parts.append(frame)
        self._write(seg, parts, pos)
        self._entries.extend(entries)

    def _write(self, seg: _Segment, parts: list[bytes], end: int) -> None:
        os.write(seg.fd, b"".join(parts))
        seg.size = end
        self._dirty.add(seg.fd)

    def sync(self) -> None:
        """Make everything written so far durable; the hard state last."""
        self._check_open()
        for fd in self._dirty:
            os.fdatasync(fd)
        self._dirty.clear()
        if self._dir_dirty:
            _fsync_dir(self.directory)
            self._dir_dirty = False
        hs = self._hs
        if hs.term != self._stored_hs.term or hs.vote != self._stored_hs.vote:
            self._write_hard_state(hs)

    def _write_hard_state(self, hs: HardState) -> None:
        raw = _HS.pack(HARDSTATE_MAGIC, VERSION, 0, hs.term, hs.vote, hs.commit)
        _write_atomic(self.directory, "hardstate", raw + _U32.pack(segment_io.crc32c(raw)))
        self._stored_hs = hs

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log by a snapshot received from the leader."""
        self._check_open()
        if snap.meta.index <= self._snapshot.meta.index:
            return
        _write_atomic(self.directory, "snapshot", self._encode_snapshot(snap))
        self._snapshot = snap
        self._entries = []
        self._drop_segments_from(0)
        if self._hs.commit < snap.meta.index:
            self._hs = HardState(self._hs.term, self._hs.vote, snap.meta.index)

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Store a snapshot of the state machine at applied ``index`` and compact the log
        up to it: whole segments below it are deleted."""
        self._check_open()
        if index <= self._snapshot.meta.index:
            return self._snapshot
        if index > self.last_index():
            raise RaftUnavailable(index, self.last_index())
        snap = Snapshot(SnapshotMeta(index, self.term(index), conf_state), data)
        self.sync()  # the entries the snapshot covers must not be lost under it
        _write_atomic(self.directory, "snapshot", self._encode_snapshot(snap))
        del self._entries[: index - self._snapshot.meta.index]
        self._snapshot = snap
        self._drop_compacted_segments()
        return snap

    def close(self) -> None:
        if self._closed:
            return
        self.sync()
        if self._hs != self._stored_hs:
            self._write_hard_state(self._hs)
        for seg in self._segments:
            os.close(seg.fd)
        self._segments = []
        self._closed = True

    # -- segments ---------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RaftLogCorrupted("the log store is closed", self.directory)

    def _active(self) -> _Segment:
        if self._segments and self._segments[-1].size < self.segment_bytes:
            return self._segments[-1]
        first = self.last_index() + 1
        path = os.path.join(self.directory, _segment_name(first))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        os.write(fd, _SEG_HEADER.pack(SEGMENT_MAGIC, VERSION, 0, first))
        seg = _Segment(path, first, fd, _SEG_HEADER.size)
        self._segments.append(seg)
        self._dirty.add(fd)
        self._dir_dirty = True
        return seg

    def _truncate_from(self, index: int) -> None:
        """Cut the log so that ``index`` is the next entry (follower log repair)."""
        k = len(self._segments) - 1
        while k > 0 and self._segments[k].first > index:
            k -= 1
        self._drop_segments_from(k + 1)
        seg = self._segments[k]
        cut = index - seg.first
        if cut < len(seg.positions):
            pos = seg.positions[cut]
            os.ftruncate(seg.fd, pos)
            seg.size = pos
            del seg.positions[cut:]
            self._dirty.add(seg.fd)
        del self._entries[index - self.first_index() :]

    def _drop_segments_from(self, k: int) -> None:
        dropped = self._segments[k:]
        for seg in dropped:
            os.close(seg.fd)
            self._dirty.discard(seg.fd)
            os.unlink(seg.path)
        del self._segments[k:]
        if dropped:
            # Durable before anything is written after them: a deleted tail segment that
            # came back after a crash would follow the rewritten log.
            _fsync_dir(self.directory)

    def _drop_compacted_segments(self) -> None:
        """Delete the segments whose every entry is at or below the snapshot."""
        snap = self._snapshot.meta.index
        n = 0
        while n + 1 < len(self._segments) and self._segments[n + 1].first <= snap + 1:
            n += 1
        if n == len(self._segments) - 1 and self._segments:
            seg = self._segments[-1]
            if seg.first + len(seg.positions) - 1 <= snap:
                n += 1  # even the last one: a new segment starts after the snapshot
        for seg in self._segments[:n]:
            os.close(seg.fd)
            self._dirty.discard(seg.fd)
            os.unlink(seg.path)
            self._dir_dirty = True
        del self._segments[:n]
        if n:
            _fsync_dir(self.directory)
            self._dir_dirty = False


def _make_entry(index: int, count: int, term: int, payload: bytes) -> Entry:
    return Entry(term, index, EntryType(payload[0]), payload[1:])
