"""A latency histogram with HDR-style log-linear buckets, mergeable across workers.

Values are non-negative integers (nanoseconds in the bench). Values below 256 have a bucket
each; above, every power-of-two range [2**(s+7), 2**(s+8)) is split into 128 equal buckets,
so a bucket is at most 1/128 of its values wide (better than two significant digits) and
its midpoint is within 1/256 of any value in it. Counts live in one numpy int64 array, so
recording is vectorised and merging is an array sum. Rendering the numbers is ``report.py``'s.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SUB_BUCKET_BITS = 7
_HALF = 1 << SUB_BUCKET_BITS  # 128 buckets per power of two
_LINEAR = _HALF * 2  # values below 256 are exact
MAX_SHIFT = 56  # up to 2**63 - 1
BUCKETS = (MAX_SHIFT + 1) * _HALF + _HALF
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}


def bucket_index(values: np.ndarray) -> np.ndarray:
    """The bucket of each value (int64, >= 0)."""
    v = np.asarray(values, dtype=np.int64)
    # frexp gives the bit length exactly for every value below 2**53 ns (104 days).
    bit_length = np.frexp(v.astype(np.float64))[1].astype(np.int64)
    shift = np.maximum(bit_length - (SUB_BUCKET_BITS + 1), 0)
    return shift * _HALF + (v >> shift)


def bucket_bounds(index: int) -> tuple[int, int]:
    """The lowest and highest value that land in bucket ``index``."""
    if index < _LINEAR:
        return index, index
    shift = index // _HALF - 1
    low = (index - shift * _HALF) << shift
    return low, low + (1 << shift) - 1


class Histogram:
    """Counts of values per log-linear bucket plus exact count, min, max and sum."""

    __slots__ = ("counts", "count", "min", "max", "total")

    def __init__(self) -> None:
        self.counts = np.zeros(BUCKETS, dtype=np.int64)
        self.count = 0
        self.min = 0
        self.max = 0
        self.total = 0

    def record(self, values: np.ndarray) -> None:
        """Adds every value of ``values``; negative ones (clock skew) count as 0."""
        if len(values) == 0:
            return
        v = np.maximum(np.asarray(values, dtype=np.int64), 0)
        self.counts += np.bincount(bucket_index(v), minlength=BUCKETS)
        low, high = int(v.min()), int(v.max())
        self.min = low if self.count == 0 else min(self.min, low)
        self.max = max(self.max, high)
        self.count += len(v)
        self.total += int(v.sum())

    def merge(self, other: Histogram) -> None:
        if other.count == 0:
            return
        self.counts += other.counts
        self.min = other.min if self.count == 0 else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.count += other.count
        self.total += other.total

    def percentile(self, q: float) -> float:
        """The value at or below which ``q`` percent of the values lie (bucket midpoint).

        Same rank as ``numpy.percentile(..., method="inverted_cdf")``: the smallest value
        whose cumulative share reaches ``q``.
        """
        if self.count == 0:
            return 0.0
        rank = max(1, int(np.ceil(q / 100.0 * self.count)))
        index = int(np.searchsorted(np.cumsum(self.counts), rank))
        low, high = bucket_bounds(index)
        return float(min(max((low + high) / 2.0, self.min), self.max))

    def summary(self, scale: float = 1.0) -> dict[str, float]:
        """p50, p90, p99, p99.9, max and mean, each divided by ``scale``."""
        out = {name: round(self.percentile(q) / scale, 1) for name, q in PERCENTILES.items()}
        out["max"] = round(self.max / scale, 1)
        out["mean"] = round(self.total / self.count / scale, 1) if self.count else 0.0
        return out

    def __getstate__(self) -> dict[str, Any]:
        # Only the used buckets travel between processes.
        used = np.flatnonzero(self.counts)
        return {
            "used": used,
            "values": self.counts[used],
            "count": self.count,
            "min": self.min,
            "max": self.max,
            "total": self.total,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.counts = np.zeros(BUCKETS, dtype=np.int64)
        self.counts[state["used"]] = state["values"]
        self.count = state["count"]
        self.min = state["min"]
        self.max = state["max"]
        self.total = state["total"]
