"""What the Raft core reads from its log (the ``Storage`` protocol) and an in-memory log.

The core only reads through ``Storage``; the caller writes (persisting each ``Ready``),
exactly as in etcd-io/raft ``storage.go``. ``MemoryStorage`` keeps everything in lists and
is what the tests and the simulation use; ``log_store.LogStore`` is the durable one. Both
keep a "dummy" position at the snapshot index whose term is the snapshot's term, so the
term of the entry just before the first one is always known.
"""

from __future__ import annotations

from typing import Protocol

from robustmq.errors import RaftCompacted, RaftUnavailable
from robustmq.meta.raft.types import (
    ENTRY_OVERHEAD,
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMeta,
)


class Storage(Protocol):
    """Read side of a Raft log. Raises ``RaftCompacted`` below the first index and
    ``RaftUnavailable`` above the last (a snapshot not ready yet is also Unavailable)."""

    def initial_state(self) -> tuple[HardState, ConfState]: ...

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        """Entries ``[lo, hi)``, at least one if any, at most ``max_bytes`` beyond it."""
        ...

    def term(self, index: int) -> int: ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def snapshot(self) -> Snapshot: ...


def limit_size(entries: list[Entry], max_bytes: int) -> list[Entry]:
    """The longest prefix within ``max_bytes``, but never fewer than one entry."""
    total = 0
    # Entry.size() inlined: this runs over every entry of every AppendEntries built.
    for n, e in enumerate(entries):
        total += len(e.data) + ENTRY_OVERHEAD
        if total > max_bytes and n:
            return entries[:n]
    return entries


class MemoryStorage:
    """A ``Storage`` held in memory, with the write methods the caller uses."""

    def __init__(self) -> None:
        self.hard_state = HardState()
        self._snapshot = Snapshot(SnapshotMeta(0, 0, ConfState()))
        # _ents[0] is the dummy entry at the snapshot (compaction) index.
        self._ents: list[Entry] = [Entry(0, 0)]

    # -- Storage ----------------------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.hard_state, self._snapshot.meta.conf_state

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def term(self, index: int) -> int:
        offset = self._ents[0].index
        if index < offset:
            raise RaftCompacted(index, offset + 1)
        if index - offset >= len(self._ents):
            raise RaftUnavailable(index, self.last_index())
        return self._ents[index - offset].term

    def entries(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        offset = self._ents[0].index
        if lo <= offset:
            raise RaftCompacted(lo, offset + 1)
        if hi > self.last_index() + 1:
            raise RaftUnavailable(hi - 1, self.last_index())
        return limit_size(self._ents[lo - offset : hi - offset], max_bytes)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- writes -----------------------------------------------------------------------
    def set_hard_state(self, hs: HardState) -> None:
        self.hard_state = hs

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log by a snapshot received from the leader."""
        if snap.meta.index <= self._snapshot.meta.index:
            return
        self._snapshot = snap
        self._ents = [Entry(snap.meta.term, snap.meta.index)]

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a snapshot of the state machine at applied ``index``."""
        if index <= self._snapshot.meta.index:
            return self._snapshot
        if index > self.last_index():
            raise RaftUnavailable(index, self.last_index())
        self._snapshot = Snapshot(SnapshotMeta(index, self.term(index), conf_state), data)
        return self._snapshot

    def compact(self, index: int) -> None:
        """Drop entries up to ``index``; the caller snapshotted at or above it first."""
        offset = self._ents[0].index
        if index <= offset:
            return
        if index > self.last_index():
            raise RaftUnavailable(index, self.last_index())
        keep = self._ents[index - offset :]
        self._ents = [Entry(keep[0].term, index), *keep[1:]]

    def append(self, entries: list[Entry]) -> None:
        """Append, replacing any conflicting suffix (follower log repair)."""
        if not entries:
            return
        first = self.first_index()
        if entries[-1].index < first:
            return
        if entries[0].index < first:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self._ents[0].index
        if offset > len(self._ents):
            raise RaftUnavailable(entries[0].index, self.last_index())
        del self._ents[offset:]
        self._ents.extend(entries)
