"""The bench payload header and the per-publisher delivery accounting built on it.

Every message the bench publishes starts with a 24-byte header: a magic, a run id, the
publisher index, the send time (``time.time_ns()``, wall clock, so publisher and subscriber
may be different processes on one host) and a sequence number; padding fills the rest of
``--size``. A subscriber reads the headers of a batch of deliveries as one numpy array and
``DeliveryTracker`` keeps, per publisher, a bitmap of the sequence numbers seen: duplicates,
reordering and (at the end, against what was sent, or as gaps between the lowest and the
highest sequence seen) losses. The MQTT framing around the payload is ``mqtt_client.py``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MAGIC = 0x524D5142  # "RMQB"
# The two fields that change per message are last and adjacent, so a publisher patches
# them (and the packet identifier just before the payload) with one struct.pack_into.
HEADER = np.dtype(
    [("magic", ">u4"), ("run", ">u4"), ("publisher", ">u4"), ("sent_ns", ">i8"), ("seq", ">u4")]
)
CONSTANT_SIZE = sum(HEADER[name].itemsize for name in ("magic", "run", "publisher"))
HEADER_SIZE = HEADER.itemsize


def publisher_key(run: int, publisher: int) -> int:
    """One integer naming a publisher of a run."""
    return (run << 32) | publisher


def parse_headers(joined: bytes) -> np.ndarray:
    """The headers of ``len(joined) // HEADER_SIZE`` payloads concatenated in ``joined``."""
    return np.frombuffer(joined, dtype=HEADER)


@dataclass
class PublisherSeen:
    """Which sequence numbers of one publisher a receiver got, as a growable bitmap."""

    seen: np.ndarray = field(default_factory=lambda: np.zeros(1024, dtype=bool))
    lowest: int = 2**32  # above any sequence number until the first one is seen
    highest: int = -1

    def distinct(self, below: int | None = None) -> int:
        return int(np.count_nonzero(self.seen if below is None else self.seen[:below]))

    def gaps(self) -> int:
        """Sequences missing between the lowest and the highest seen: a subscriber that
        joined after the publisher started does not count what came before it."""
        if self.highest < 0:
            return 0
        span = self.seen[self.lowest : self.highest + 1]
        return len(span) - int(np.count_nonzero(span))


class DeliveryTracker:
    """Duplicates, reordering and per-publisher bitmaps of one receiving unit.

    A unit is one subscriber, or all members of a shared subscription group in a worker:
    the messages one MQTT delivery "counts once" for.
    """

    __slots__ = ("publishers", "received", "duplicates", "reordered")

    def __init__(self) -> None:
        self.publishers: dict[int, PublisherSeen] = {}
        self.received = 0
        self.duplicates = 0
        self.reordered = 0

    def add(self, keys: np.ndarray, seqs: np.ndarray) -> None:
        """Deliveries in arrival order: ``keys[i]`` is the publisher key of ``seqs[i]``."""
        if len(keys) == 0:
            return
        self.received += len(keys)
        order = np.argsort(keys, kind="stable")  # arrival order kept within a publisher
        keys, seqs = keys[order], seqs[order].astype(np.int64)
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        ends = np.r_[starts[1:], len(keys)]
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            self._add_one(int(keys[start]), seqs[start:end])

    def _add_one(self, key: int, seqs: np.ndarray) -> None:
        state = self.publishers.get(key)
        if state is None:
            state = self.publishers[key] = PublisherSeen()
        top = int(seqs.max())
        if top >= len(state.seen):
            grown = np.zeros(max(top + 1, 2 * len(state.seen)), dtype=bool)
            grown[: len(state.seen)] = state.seen
            state.seen = grown
        # A delivery is a duplicate if its sequence was seen before this batch or earlier
        # in it; it is reordered if a higher sequence of the same publisher came first.
        by_seq = np.argsort(seqs, kind="stable")
        sorted_seqs = seqs[by_seq]
        repeat = np.zeros(len(seqs), dtype=bool)
        repeat[by_seq[1:]] = sorted_seqs[1:] == sorted_seqs[:-1]
        duplicate = repeat | state.seen[seqs]
        running_max = np.maximum.accumulate(np.r_[state.highest, seqs[:-1]])
        self.duplicates += int(np.count_nonzero(duplicate))
        self.reordered += int(np.count_nonzero((seqs < running_max) & ~duplicate))
        state.seen[seqs] = True
        state.lowest = min(state.lowest, int(seqs.min()))
        state.highest = max(state.highest, top)

    def merge(self, other: DeliveryTracker) -> None:
        """Folds in another worker's share of the same unit; a message both saw is a
        duplicate of the unit."""
        self.received += other.received
        self.duplicates += other.duplicates
        self.reordered += other.reordered
        for key, theirs in other.publishers.items():
            mine = self.publishers.get(key)
            if mine is None:
                self.publishers[key] = theirs
                continue
            n = min(len(mine.seen), len(theirs.seen))
            self.duplicates += int(np.count_nonzero(mine.seen[:n] & theirs.seen[:n]))
            if len(theirs.seen) > len(mine.seen):
                mine.seen, theirs_seen = theirs.seen.copy(), mine.seen
            else:
                theirs_seen = theirs.seen
            mine.seen[: len(theirs_seen)] |= theirs_seen
            mine.lowest = min(mine.lowest, theirs.lowest)
            mine.highest = max(mine.highest, theirs.highest)

    def gaps(self) -> int:
        """Sequence gaps over all publishers: the losses a receiver can see without knowing
        what was sent."""
        return sum(s.gaps() for s in self.publishers.values())
