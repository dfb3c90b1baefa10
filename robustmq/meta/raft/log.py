"""The Raft log as the core sees it: what is stable in ``Storage`` plus what is not yet.

``RaftLog`` joins the caller's ``Storage`` (persisted entries) with ``Unstable`` (entries
and a snapshot the core has accepted but the caller has not persisted yet), and tracks
``committed`` and ``applied``. Modelled on etcd-io/raft ``log.go`` and ``log_unstable.go``.
The rules about *when* to append or commit live in ``core.py``.
"""

from __future__ import annotations

from robustmq.errors import RaftCompacted, RaftError, RaftUnavailable
from robustmq.meta.raft.storage import Storage, limit_size
from robustmq.meta.raft.types import Entry, Snapshot


class Unstable:
    """Entries from ``offset`` on (and maybe a snapshot) not yet handed to storage."""

    __slots__ = ("entries", "offset", "snapshot")

    def __init__(self, offset: int) -> None:
        self.offset = offset
        self.entries: list[Entry] = []
        self.snapshot: Snapshot | None = None

    def maybe_first_index(self) -> int | None:
        return self.snapshot.meta.index + 1 if self.snapshot else None

    def maybe_last_index(self) -> int | None:
        if self.entries:
            return self.offset + len(self.entries) - 1
        return self.snapshot.meta.index if self.snapshot else None

    def maybe_term(self, i: int) -> int | None:
        if i < self.offset:
            if self.snapshot and self.snapshot.meta.index == i:
                return self.snapshot.meta.term
            return None
        last = self.maybe_last_index()
        if last is None or i > last:
            return None
        return self.entries[i - self.offset].term

    def stable_to(self, i: int, t: int) -> None:
        # Only if the entry is still ours: a later append may have replaced it.
        if i >= self.offset and self.maybe_term(i) == t:
            del self.entries[: i + 1 - self.offset]
            self.offset = i + 1

    def stable_snap_to(self, i: int) -> None:
        if self.snapshot and self.snapshot.meta.index == i:
            self.snapshot = None

    def restore(self, snap: Snapshot) -> None:
        self.offset = snap.meta.index + 1
        self.entries = []
        self.snapshot = snap

    def truncate_and_append(self, ents: list[Entry]) -> None:
        after = ents[0].index
        if after == self.offset + len(self.entries):
            self.entries.extend(ents)
        elif after <= self.offset:
            self.offset = after
            self.entries = list(ents)
        else:
            self.entries = self.entries[: after - self.offset] + ents

    def slice(self, lo: int, hi: int) -> list[Entry]:
        return self.entries[lo - self.offset : hi - self.offset]


class RaftLog:
    __slots__ = ("applied", "committed", "max_next_ents_size", "storage", "unstable")

    def __init__(self, storage: Storage, max_next_ents_size: int) -> None:
        self.storage = storage
        self.max_next_ents_size = max_next_ents_size
        first = storage.first_index()
        self.unstable = Unstable(storage.last_index() + 1)
        self.committed = first - 1
        self.applied = first - 1

    def first_index(self) -> int:
        i = self.unstable.maybe_first_index()
        return i if i is not None else self.storage.first_index()

    def last_index(self) -> int:
        i = self.unstable.maybe_last_index()
        return i if i is not None else self.storage.last_index()

    def last_term(self) -> int:
        return self.term(self.last_index())

    def term(self, i: int) -> int:
        """Term of entry ``i``; 0 above the last index; RaftCompacted below the dummy."""
        dummy = self.first_index() - 1
        if i < dummy:
            raise RaftCompacted(i, dummy + 1)
        if i > self.last_index():
            return 0
        t = self.unstable.maybe_term(i)
        if t is not None:
            return t
        return self.storage.term(i)

    def match_term(self, i: int, t: int) -> bool:
        try:
            return self.term(i) == t
        except (RaftCompacted, RaftUnavailable):
            return False

    def is_up_to_date(self, lasti: int, term: int) -> bool:
        """Raft §5.4.1: the candidate's log is at least as up to date as ours."""
        last_term = self.last_term()
        return term > last_term or (term == last_term and lasti >= self.last_index())

    def find_conflict(self, ents: list[Entry]) -> int:
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= ``index`` whose term is <= ``term``, with that term
        (the fast backtracking hint of etcd-io/raft)."""
        while index > 0:
            try:
                our = self.term(index)
            except RaftCompacted:
                return index, 0
            if our <= term:
                return index, our
            index -= 1
        return 0, 0

    def maybe_append(self, index: int, log_term: int, committed: int, ents: list[Entry]) -> int:
        """Append after (index, log_term) if it matches; the new last index, or -1."""
        if not self.match_term(index, log_term):
            return -1
        last_new = index + len(ents)
        ci = self.find_conflict(ents)
        if ci:
            if ci <= self.committed:
                raise RaftError(f"entry {ci} conflicts with committed entry {self.committed}")
            self.append(ents[ci - index - 1 :])
        self.commit_to(min(committed, last_new))
        return last_new

    def append(self, ents: list[Entry]) -> int:
        if not ents:
            return self.last_index()
        if ents[0].index - 1 < self.committed:
            raise RaftError(f"append after {ents[0].index - 1} is below commit {self.committed}")
        self.unstable.truncate_and_append(ents)
        return self.last_index()

    def commit_to(self, tocommit: int) -> None:
        if self.committed < tocommit:
            if self.last_index() < tocommit:
                raise RaftError(
                    f"commit {tocommit} is beyond the last index {self.last_index()}; "
                    "the log was lost or corrupted"
                )
            self.committed = tocommit

    def maybe_commit(self, max_index: int, term: int) -> bool:
        # Raft §5.4.2 (Figure 8): only an entry of the current term commits by counting.
        if max_index > self.committed and self._term_or_zero(max_index) == term:
            self.commit_to(max_index)
            return True
        return False

    def _term_or_zero(self, i: int) -> int:
        try:
            return self.term(i)
        except (RaftCompacted, RaftUnavailable):
            return 0

    def applied_to(self, i: int) -> None:
        if i and (self.committed < i or i < self.applied):
            raise RaftError(f"applied {i} is out of range [{self.applied}, {self.committed}]")
        self.applied = i

    def stable_to(self, i: int, t: int) -> None:
        self.unstable.stable_to(i, t)

    def stable_snap_to(self, i: int) -> None:
        self.unstable.stable_snap_to(i)

    def unstable_entries(self) -> list[Entry]:
        return list(self.unstable.entries)

    def has_next_committed_ents(self) -> bool:
        return self.committed > max(self.applied, self.first_index() - 1)

    def next_committed_ents(self) -> list[Entry]:
        off = max(self.applied + 1, self.first_index())
        if self.committed + 1 > off:
            return self.slice(off, self.committed + 1, self.max_next_ents_size)
        return []

    def entries(self, i: int, max_bytes: int) -> list[Entry]:
        if i > self.last_index():
            return []
        return self.slice(i, self.last_index() + 1, max_bytes)

    def slice(self, lo: int, hi: int, max_bytes: int) -> list[Entry]:
        first = self.first_index()
        if lo < first:
            raise RaftCompacted(lo, first)
        if hi > self.last_index() + 1:
            raise RaftUnavailable(hi - 1, self.last_index())
        if lo == hi:
            return []
        ents: list[Entry] = []
        off = self.unstable.offset
        if lo < off:
            ents = self.storage.entries(lo, min(hi, off), max_bytes)
            if len(ents) < min(hi, off) - lo:
                return ents  # storage stopped at max_bytes
        if hi > off:
            ents = ents + self.unstable.slice(max(lo, off), hi)
        return limit_size(ents, max_bytes)

    def snapshot(self) -> Snapshot:
        if self.unstable.snapshot:
            return self.unstable.snapshot
        return self.storage.snapshot()

    def restore(self, snap: Snapshot) -> None:
        self.committed = snap.meta.index
        self.unstable.restore(snap)
