"""Property tests of offset, index and timestamp arithmetic against a naive list oracle.

Random appends (records and opaque batches, timestamps out of order), random
``delete_before``, then every read, ``read_batches`` and ``offset_for_timestamp`` answer
must match a plain Python list. Segments are tiny and index points dense, so segment
rolls and sparse-index look-ups are crossed all the time.
"""

from __future__ import annotations

import asyncio
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robustmq.storage import open_engine
from robustmq.storage.engine import Record, ShardConfig

from .conftest import ENGINES, engine_config

TINY = ShardConfig(segment_bytes=4096, segment_ms=None)

op_st = st.one_of(
    st.tuples(
        st.just("append"),
        st.lists(st.tuples(st.integers(0, 400), st.integers(0, 1000)), min_size=1, max_size=12),
    ),
    st.tuples(
        st.just("batch"), st.tuples(st.integers(1, 50), st.integers(0, 1000), st.integers(0, 600))
    ),
    st.tuples(st.just("delete"), st.floats(0, 1)),
)


async def run(kind: str, ops: list, probes: list[float], stamps: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = (
            engine_config(kind, tmp, index_interval_bytes=64)
            if kind == "segment"
            else engine_config(kind, tmp)
        )
        engine = await open_engine(cfg)  # type: ignore[arg-type]
        try:
            await engine.create_shard("r", TINY)
            await engine.create_shard("b", TINY)
            records: list[tuple[int, bytes]] = []  # (timestamp, value) by offset
            batches: list[tuple[int, int, int, bytes]] = []  # base, count, ts, data
            start = {"r": 0, "b": 0}
            for i, (op, arg) in enumerate(ops):
                if op == "append":
                    values = [
                        (ts, b"%d-%d|" % (i, j) * (size // 8 + 1))
                        for j, (size, ts) in enumerate(arg)
                    ]
                    got = await engine.append("r", [Record(v, timestamp_ms=ts) for ts, v in values])
                    assert got == range(len(records), len(records) + len(values))
                    records += values
                elif op == "batch":
                    count, ts, size = arg
                    base = batches[-1][0] + batches[-1][1] if batches else 0
                    data = bytes([i % 256]) * size
                    assert (
                        await engine.append_batch("b", data, count=count, max_timestamp_ms=ts)
                        == base
                    )
                    batches.append((base, count, ts, data))
                else:
                    for shard, end in (
                        ("r", len(records)),
                        ("b", batches[-1][0] + batches[-1][1] if batches else 0),
                    ):
                        cut = max(start[shard], int(end * arg))
                        assert await engine.delete_before(shard, cut) == cut
                        start[shard] = cut
            end_b = batches[-1][0] + batches[-1][1] if batches else 0
            assert await engine.latest_offset("r") == len(records)
            assert await engine.earliest_offset("r") == start["r"]
            assert await engine.latest_offset("b") == end_b
            for p in probes:
                off = start["r"] + int(p * (len(records) - start["r"]))
                got = await engine.read("r", off, max_records=7)
                assert [(r.offset, r.timestamp_ms, r.value) for r in got] == [
                    (o, *records[o]) for o in range(off, min(off + 7, len(records)))
                ]
                boff = start["b"] + int(p * (end_b - start["b"]))
                gotb = await engine.read_batches("b", boff, max_bytes=1)
                want = [b for b in batches if b[0] + b[1] > boff][:1]
                assert [
                    (b.base_offset, b.record_count, b.max_timestamp_ms, b.data) for b in gotb
                ] == want
            for ts in stamps:
                want_r = next(
                    (o for o in range(start["r"], len(records)) if records[o][0] >= ts), None
                )
                assert await engine.offset_for_timestamp("r", ts) == want_r, ts
                want_b = next(
                    (
                        max(b[0], start["b"])
                        for b in batches
                        if b[0] + b[1] > start["b"] and b[2] >= ts
                    ),
                    None,
                )
                assert await engine.offset_for_timestamp("b", ts) == want_b, ts
        finally:
            await engine.close()


@pytest.mark.parametrize("kind", ENGINES)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(op_st, min_size=1, max_size=25),
    probes=st.lists(st.floats(0, 1), min_size=1, max_size=6),
    stamps=st.lists(st.integers(-1, 1001), min_size=1, max_size=6),
)
def test_engine_matches_list_oracle(kind: str, ops, probes, stamps) -> None:
    asyncio.run(run(kind, ops, probes, stamps))
