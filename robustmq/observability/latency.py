"""Latency histograms kept in plain integers, cheap enough for the hot paths that feed them.

A ``LatencyHistogram`` holds, per kind (an MQTT packet type, a Kafka API key, a storage
operation), a fixed list of bucket counts and a sum of nanoseconds. A hot path times only
a sample: it counts calls down in ``countdown[kind]`` and, when that reaches zero, resets
it to ``every`` and times that one call with ``time.perf_counter_ns``; ``record`` buckets
the result. The countdown doubles as a call counter (``calls``), so a hot path that samples
also counts its calls at no cost. The Prometheus histograms are built from these lists on
scrape (``metrics.py``); nothing here knows Prometheus, the broker or the engines.
"""

from __future__ import annotations

from bisect import bisect_left

# Upper bounds of the buckets in nanoseconds (Prometheus "le"): 10 µs to 2.5 s. The last
# bucket of each kind counts what is above them all (+Inf).
BOUNDS_NS: tuple[int, ...] = tuple(
    int(ms * 1_000_000)
    for ms in (
        0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500,
    )
)  # fmt: skip


class LatencyHistogram:
    """Sampled latencies of ``kinds`` kinds, numbered 0 to kinds - 1."""

    __slots__ = ("every", "countdown", "buckets", "sum_ns")

    def __init__(self, kinds: int, every: int) -> None:
        if every < 1:
            raise ValueError(f"every must be at least 1, not {every}")
        self.every = every
        self.countdown = [every] * kinds  # calls left until the next sample, per kind
        self.buckets = [[0] * (len(BOUNDS_NS) + 1) for _ in range(kinds)]
        self.sum_ns = [0] * kinds

    def record(self, kind: int, ns: int) -> None:
        self.buckets[kind][bisect_left(BOUNDS_NS, ns)] += 1
        self.sum_ns[kind] += ns

    def cumulative(self, kind: int) -> tuple[list[tuple[str, int]], float]:
        """Prometheus' form of one kind: (upper bound in seconds, samples at or below it)
        pairs ending with ``+Inf``, and the sum of the samples in seconds."""
        out, total = [], 0
        for bound, count in zip((*BOUNDS_NS, None), self.buckets[kind], strict=True):
            total += count
            out.append(("+Inf" if bound is None else repr(bound / 1e9), total))
        return out, self.sum_ns[kind] / 1e9

    def sampled(self, kind: int) -> bool:
        """Whether any call of ``kind`` has been timed."""
        return any(self.buckets[kind])

    def calls(self, kind: int) -> int:
        """Calls of ``kind`` counted down so far: each timed call closed a round of
        ``every`` calls, and the open round has used ``every - countdown[kind]`` (a call
        that raised while timed records no sample: its round goes uncounted)."""
        return sum(self.buckets[kind]) * self.every + self.every - self.countdown[kind]
