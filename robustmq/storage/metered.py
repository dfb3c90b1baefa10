"""Counting what goes through an engine: the path every engine's appends and reads share.

``open_engine`` hands out a ``MeteredEngine`` around the engine it opened. It counts calls
and payload bytes of ``append``/``append_batch`` (op ``append``) and ``read``/
``read_batches`` (op ``read``) in plain integers, and times one call in ``SAMPLE_EVERY``
of each op into a ``LatencyHistogram``; ``/metrics`` exports them on scrape by engine name
(``observability/metrics.py``). Every other method is the engine's own, bound once here,
so nothing else pays for the wrapper. The engines themselves know nothing of this.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from robustmq.observability.latency import LatencyHistogram
from robustmq.storage.engine import Record, StorageEngine, StoredBatch, StoredRecord

_T = TypeVar("_T")
APPEND, READ = 0, 1
OPS = ("append", "read")
SAMPLE_EVERY = 16

_METERED = ("append", "append_batch", "read", "read_batches")
_PASSED = tuple(
    name
    for name in dir(StorageEngine)
    if not name.startswith("_") and callable(getattr(StorageEngine, name)) and name not in _METERED
)


class MeteredEngine:
    """``engine`` with its appends and reads counted under the engine's ``name``."""

    def __init__(self, engine: StorageEngine, name: str) -> None:
        self.engine = engine
        self.name = name
        self.calls = [0, 0]  # by op
        self.bytes = [0, 0]  # payload bytes (keys and values, or whole batches) by op
        self.latency = LatencyHistogram(len(OPS), SAMPLE_EVERY)
        for method in _PASSED:
            setattr(self, method, getattr(engine, method))

    def __getattr__(self, name: str) -> Any:
        # Only reached for what __init__ did not bind: an engine's own extras.
        return getattr(self.engine, name)

    def _count(self, op: int, size: int) -> bool:
        """Counts one call; True when this one is to be timed."""
        self.calls[op] += 1
        self.bytes[op] += size
        countdown = self.latency.countdown
        left = countdown[op] - 1
        if left:
            countdown[op] = left
            return False
        countdown[op] = SAMPLE_EVERY
        return True

    async def _timed(self, op: int, call: Awaitable[_T]) -> _T:
        start = time.perf_counter_ns()
        result = await call
        self.latency.record(op, time.perf_counter_ns() - start)
        return result

    # append and append_batch hand back the engine's own coroutine: no extra coroutine
    # frame per call, except for the one call in SAMPLE_EVERY that is timed.
    def append(self, shard: str, records: Sequence[Record]) -> Awaitable[range]:
        size = 0
        for r in records:
            size += len(r.value) + len(r.key) if r.key else len(r.value)
        call = self.engine.append(shard, records)
        return self._timed(APPEND, call) if self._count(APPEND, size) else call

    def append_batch(self, shard: str, batch: bytes, *args: Any, **kwargs: Any) -> Awaitable[int]:
        call = self.engine.append_batch(shard, batch, *args, **kwargs)
        return self._timed(APPEND, call) if self._count(APPEND, len(batch)) else call

    async def read(self, shard: str, *args: Any, **kwargs: Any) -> list[StoredRecord]:
        timed = self._count(READ, 0)
        start = time.perf_counter_ns() if timed else 0
        records = await self.engine.read(shard, *args, **kwargs)
        if timed:
            self.latency.record(READ, time.perf_counter_ns() - start)
        self.bytes[READ] += sum(len(r.value) + (len(r.key) if r.key else 0) for r in records)
        return records

    async def read_batches(self, shard: str, *args: Any, **kwargs: Any) -> list[StoredBatch]:
        timed = self._count(READ, 0)
        start = time.perf_counter_ns() if timed else 0
        batches = await self.engine.read_batches(shard, *args, **kwargs)
        if timed:
            self.latency.record(READ, time.perf_counter_ns() - start)
        self.bytes[READ] += sum(len(b.data) for b in batches)
        return batches
