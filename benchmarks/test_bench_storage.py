"""Micro benchmarks (pytest-benchmark) of the storage hot paths, both twins side by side.

    python -m pytest benchmarks/test_bench_storage.py --benchmark-only -p no:cacheprovider

The end-to-end numbers (engines, fsync policies, raw-disk reference) come from
benchmarks/bench_storage.py instead.
"""

from __future__ import annotations

import asyncio
import importlib
import os

import pytest

from robustmq.storage.engine import Record, SegmentConfig, StoredRecord

PY = importlib.import_module("robustmq._core.segment_io")
try:
    C = importlib.import_module("robustmq._core._segment_io")
except ImportError:  # pragma: no cover
    C = None

TWINS = [
    pytest.param(PY, id="py"),
    pytest.param(C, id="c", marks=pytest.mark.skipif(C is None, reason="not built")),
]
RECORDS_1K = [Record(os.urandom(1024), key=b"k", timestamp_ms=1) for _ in range(100)]


@pytest.mark.parametrize("mod", TWINS)
def test_crc32c_4k(benchmark, mod) -> None:
    data = os.urandom(4 * 1024)
    benchmark(mod.crc32c, data)


@pytest.mark.parametrize("mod", TWINS)
def test_encode_100_records_of_1k(benchmark, mod) -> None:
    benchmark(mod.encode_records, RECORDS_1K, 0, 1, 32, 32, 4096, -1)


@pytest.mark.parametrize("mod", TWINS)
def test_decode_100_records_of_1k(benchmark, mod) -> None:
    data = C.encode_records(RECORDS_1K, 0, 1)[0] if C else PY.encode_records(RECORDS_1K, 0, 1)[0]
    benchmark(mod.decode, data, 0, 1000, 1 << 30, StoredRecord)


@pytest.mark.parametrize("mod", TWINS)
def test_scan_100_records_of_1k(benchmark, mod) -> None:
    data = PY.encode_records(RECORDS_1K, 0, 1)[0]
    benchmark(mod.scan, data, 32, 0, 32, 4096, -1)


def test_segment_append_100x1k_fsync_never(benchmark, tmp_path) -> None:
    from robustmq.storage.segment import SegmentEngine

    loop = asyncio.new_event_loop()
    engine = loop.run_until_complete(
        SegmentEngine.open(SegmentConfig(path=str(tmp_path), fsync="never"))
    )
    loop.run_until_complete(engine.create_shard("b"))
    benchmark(lambda: loop.run_until_complete(engine.append("b", RECORDS_1K)))
    loop.run_until_complete(engine.close())
    loop.close()
