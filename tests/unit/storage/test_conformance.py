"""The shared conformance suite: every engine must pass every test here.

Engine-specific behaviour (files, recovery, group commit) is tested in the per-engine
modules; this one only speaks the ``StorageEngine`` interface.
"""

from __future__ import annotations

import asyncio

import pytest

from robustmq.errors import (
    OffsetOutOfRange,
    ShardExists,
    ShardNotFound,
    StorageClosed,
    WrongEntryKind,
)
from robustmq.storage.engine import (
    CommittedOffset,
    Record,
    ShardConfig,
    StorageEngine,
    StoredBatch,
    wall_clock_ms,
)


def recs(n: int, start: int = 0, size: int = 50, ts: int | None = None) -> list[Record]:
    return [
        Record(
            value=(b"%08d" % (start + i)) * (size // 8),
            key=b"key-%d" % ((start + i) % 7),
            headers=(("h", b"%d" % (start + i)),),
            timestamp_ms=ts if ts is None else ts + i,
        )
        for i in range(n)
    ]


async def test_is_a_storage_engine(engine: StorageEngine) -> None:
    assert isinstance(engine, StorageEngine)
    assert engine.name in ("memory", "leveldb", "segment")


async def test_shard_lifecycle(engine: StorageEngine) -> None:
    info = await engine.create_shard("t/a", ShardConfig(retention_ms=1000))
    assert (info.name, info.earliest_offset, info.latest_offset) == ("t/a", 0, 0)
    assert info.config.retention_ms == 1000
    await engine.create_shard("t/b")
    await engine.create_shard("u")
    with pytest.raises(ShardExists):
        await engine.create_shard("t/a")
    assert await engine.list_shards() == ["t/a", "t/b", "u"]
    assert await engine.list_shards("t/") == ["t/a", "t/b"]
    await engine.delete_shard("t/a")
    assert await engine.list_shards() == ["t/b", "u"]
    with pytest.raises(ShardNotFound):
        await engine.delete_shard("t/a")
    # A deleted name can be reused and starts empty.
    await engine.create_shard("t/a")
    assert await engine.latest_offset("t/a") == 0


@pytest.mark.parametrize(
    "call",
    [
        lambda e: e.append("nope", [Record(b"x")]),
        lambda e: e.append_batch("nope", b"x", count=1, max_timestamp_ms=0),
        lambda e: e.read("nope", 0),
        lambda e: e.read_batches("nope", 0),
        lambda e: e.shard_info("nope"),
        lambda e: e.earliest_offset("nope"),
        lambda e: e.latest_offset("nope"),
        lambda e: e.offset_for_timestamp("nope", 0),
        lambda e: e.read_by_key("nope", b"k"),
        lambda e: e.delete_before("nope", 0),
        lambda e: e.apply_retention("nope"),
        lambda e: e.commit_offset("g", "nope", 1),
        lambda e: e.committed_offset("g", "nope"),
    ],
)
async def test_unknown_shard(engine: StorageEngine, call) -> None:
    with pytest.raises(ShardNotFound):
        await call(engine)


async def test_append_and_read_round_trip(engine: StorageEngine) -> None:
    await engine.create_shard("s")
    before = wall_clock_ms()
    r1 = await engine.append("s", [Record(b"a"), Record(b"", key=b"", headers=(("é", b"\0"),))])
    r2 = await engine.append("s", [Record(b"c", timestamp_ms=42)])
    assert (r1, r2) == (range(0, 2), range(2, 3))
    assert await engine.append("s", []) == range(3, 3)
    got = await engine.read("s", 0)
    assert [(r.offset, r.key, r.value, r.headers) for r in got] == [
        (0, None, b"a", ()),
        (1, b"", b"", (("é", b"\0"),)),
        (2, None, b"c", ()),
    ]
    assert before <= got[0].timestamp_ms <= wall_clock_ms()
    assert got[2].timestamp_ms == 42
    assert await engine.latest_offset("s") == 3
    assert await engine.earliest_offset("s") == 0
    info = await engine.shard_info("s")
    assert info.latest_offset == 3 and info.size_bytes > 0


async def test_read_limits_and_bounds(engine: StorageEngine) -> None:
    await engine.create_shard("s")
    for i in range(10):  # many appends: crosses segments (4 KiB) and index points
        await engine.append("s", recs(20, start=i * 20, size=100))
    assert await engine.latest_offset("s") == 200
    for offset in (0, 1, 57, 100, 199):
        got = await engine.read("s", offset, max_records=3)
        assert [r.offset for r in got] == list(range(offset, min(offset + 3, 200)))
        assert got[0].value == (b"%08d" % offset) * 12
    everything = await engine.read("s", 0, max_records=10_000, max_bytes=1 << 30)
    assert [r.offset for r in everything] == list(range(200))
    small = await engine.read("s", 10, max_records=1000, max_bytes=1000)
    assert 1 <= len(small) < 20  # about max_bytes, and never less than one record
    assert [r.offset for r in await engine.read("s", 5, max_bytes=1)] == [5]
    assert await engine.read("s", 200) == []
    with pytest.raises(OffsetOutOfRange) as err:
        await engine.read("s", 201)
    assert (err.value.earliest, err.value.latest) == (0, 200)
    with pytest.raises(OffsetOutOfRange):
        await engine.read("s", -1)


async def test_opaque_batches(engine: StorageEngine) -> None:
    await engine.create_shard("k")
    # A Kafka-like batch: baseOffset (i64, big-endian) at byte 0, then opaque bytes.
    batch = b"\xff" * 8 + b"payload-1"
    b0 = await engine.append_batch("k", batch, count=3, max_timestamp_ms=100, base_offset_at=0)
    b1 = await engine.append_batch("k", b"raw", count=2, max_timestamp_ms=200)
    assert (b0, b1) == (0, 3)
    assert await engine.latest_offset("k") == 5
    got = await engine.read_batches("k", 0)
    assert got == [
        StoredBatch(0, 3, 100, (0).to_bytes(8, "big") + b"payload-1"),
        StoredBatch(3, 2, 200, b"raw"),
    ]
    # Reading from inside a batch returns the whole batch (Kafka fetch semantics).
    assert [b.base_offset for b in await engine.read_batches("k", 4)] == [3]
    assert [b.base_offset for b in await engine.read_batches("k", 1, max_bytes=1)] == [0]
    assert await engine.read_batches("k", 5) == []
    b2 = await engine.append_batch("k", b"\0" * 16, count=1, max_timestamp_ms=300, base_offset_at=8)
    assert (await engine.read_batches("k", 5))[0].data == b"\0" * 8 + (5).to_bytes(8, "big")
    assert b2 == 5
    with pytest.raises(WrongEntryKind):
        await engine.read("k", 0)
    with pytest.raises(ValueError):
        await engine.append_batch("k", b"short", count=1, max_timestamp_ms=0, base_offset_at=0)
    await engine.append("k", [Record(b"plain")])
    with pytest.raises(WrongEntryKind):
        await engine.read_batches("k", 6)
    assert (await engine.read("k", 6))[0].value == b"plain"


async def test_offset_for_timestamp(engine: StorageEngine) -> None:
    await engine.create_shard("t")
    # Out-of-order timestamps, as Kafka producers may send them.
    stamps = [10, 30, 20, 40, 40, 35, 50, 60, 5, 70] * 10
    for i in range(0, len(stamps), 10):
        await engine.append(
            "t",
            [Record(b"v" * 100, timestamp_ms=ts + 100 * (i // 10)) for ts in stamps[i : i + 10]],
        )
    all_ts = [ts + 100 * (i // 10) for i, ts in enumerate(stamps)]
    for target in [0, 5, 10, 11, 25, 31, 45, 70, 71, 150, 555, 970, 971, 10_000]:
        expect = next((i for i, ts in enumerate(all_ts) if ts >= target), None)
        assert await engine.offset_for_timestamp("t", target) == expect, target
    await engine.delete_before("t", 33)
    for target in [0, 5, 333, 335, 970]:
        expect = next((i for i, ts in enumerate(all_ts) if ts >= target and i >= 33), None)
        assert await engine.offset_for_timestamp("t", target) == expect, target


async def test_read_by_key(engine: StorageEngine) -> None:
    await engine.create_shard("r")
    await engine.append("r", [Record(b"1", key=b"a"), Record(b"2", key=b"b"), Record(b"3")])
    await engine.append("r", [Record(b"4", key=b"a")])
    got = await engine.read_by_key("r", b"a")
    assert got is not None and (got.offset, got.value) == (3, b"4")
    assert (await engine.read_by_key("r", b"b")).value == b"2"  # type: ignore[union-attr]
    assert await engine.read_by_key("r", b"zz") is None
    await engine.delete_before("r", 2)
    assert await engine.read_by_key("r", b"b") is None
    await engine.append("r", [Record(b"5", key=b"b")])
    assert (await engine.read_by_key("r", b"b")).offset == 4  # type: ignore[union-attr]


async def test_delete_before(engine: StorageEngine) -> None:
    await engine.create_shard("d")
    for i in range(10):
        await engine.append("d", recs(10, start=i * 10, size=200))
    assert await engine.delete_before("d", 55) == 55
    assert await engine.earliest_offset("d") == 55
    assert [r.offset for r in await engine.read("d", 55, max_records=2)] == [55, 56]
    with pytest.raises(OffsetOutOfRange):
        await engine.read("d", 54)
    assert await engine.delete_before("d", 40) == 55  # never moves back
    with pytest.raises(OffsetOutOfRange):
        await engine.delete_before("d", 101)
    assert await engine.delete_before("d", 100) == 100
    assert await engine.read("d", 100) == []
    assert (await engine.append("d", [Record(b"x")])) == range(100, 101)
    assert (await engine.shard_info("d")).size_bytes < 200 * 100


async def test_retention_by_time(engine: StorageEngine) -> None:
    await engine.create_shard("rt", ShardConfig(segment_bytes=4096, retention_ms=1000))
    for i in range(5):
        await engine.append("rt", recs(10, start=i * 10, size=200, ts=1_000 + i))
    await engine.append("rt", recs(10, start=50, size=200, ts=10_000))
    assert await engine.apply_retention("rt", now_ms=1_500) == 0  # nothing old enough
    earliest = await engine.apply_retention("rt", now_ms=10_500)
    assert 0 < earliest <= 50
    assert [r.offset for r in await engine.read("rt", 50, max_records=100)] == list(range(50, 60))


async def test_retention_by_bytes(engine: StorageEngine) -> None:
    await engine.create_shard("rb", ShardConfig(segment_bytes=4096, retention_bytes=8192))
    for i in range(20):
        await engine.append("rb", recs(10, start=i * 10, size=200))
    earliest = await engine.apply_retention("rb")
    info = await engine.shard_info("rb")
    assert earliest > 0 and info.earliest_offset == earliest
    assert info.size_bytes <= 8192 + 4096 + 1024
    assert (await engine.read("rb", 199))[0].offset == 199


async def test_committed_offsets(engine: StorageEngine) -> None:
    await engine.create_shard("c")
    assert await engine.committed_offset("g", "c") is None
    await engine.commit_offset("g", "c", 7, "meta")
    await engine.commit_offset("h", "c", 9)
    await engine.commit_offset("g", "c", 8, "meta2")
    assert await engine.committed_offset("g", "c") == CommittedOffset(8, "meta2")
    assert await engine.committed_offset("h", "c") == CommittedOffset(9, "")
    await engine.create_shard("other")
    await engine.commit_offset("g/x", "other", 1)  # a group name holding the shard's
    assert await engine.committed_offsets("c") == {
        "g": CommittedOffset(8, "meta2"),
        "h": CommittedOffset(9, ""),
    }
    assert await engine.committed_offsets("other") == {"g/x": CommittedOffset(1, "")}
    with pytest.raises(ShardNotFound):
        await engine.committed_offsets("nope")
    await engine.delete_shard("c")
    await engine.create_shard("c")
    assert await engine.committed_offset("g", "c") is None


async def test_key_value(engine: StorageEngine) -> None:
    assert await engine.get(b"a") is None
    await engine.put(b"ret/b", b"2")
    await engine.put(b"ret/a", b"1")
    await engine.put(b"other", b"3")
    await engine.put(b"ret/a", b"1bis")
    assert await engine.get(b"ret/a") == b"1bis"
    assert await engine.scan(b"ret/") == [(b"ret/a", b"1bis"), (b"ret/b", b"2")]
    assert await engine.scan(b"ret/", limit=1) == [(b"ret/a", b"1bis")]
    assert len(await engine.scan()) == 3
    assert await engine.delete(b"ret/a") is True
    assert await engine.delete(b"ret/a") is False
    assert await engine.get(b"ret/a") is None
    await engine.put(b"empty", b"")
    assert await engine.get(b"empty") == b""


async def test_concurrent_appends_are_ordered(opener) -> None:
    engine = await opener(fsync="always")
    await engine.create_shard("c")

    async def one(i: int) -> range:
        return await engine.append("c", [Record(b"%d" % i), Record(b"%d" % i)])

    ranges = await asyncio.gather(*(one(i) for i in range(50)))
    assert sorted(r.start for r in ranges) == list(range(0, 100, 2))
    got = await engine.read("c", 0, max_records=1000)
    assert len(got) == 100
    by_offset = {r.offset: r.value for r in got}
    for i, r in enumerate(ranges):
        assert by_offset[r.start] == by_offset[r.start + 1] == b"%d" % i


async def test_reopen_keeps_everything(opener) -> None:
    if opener.kind == "memory":
        pytest.skip("memory keeps nothing across a restart by design")
    engine = await opener(fsync="interval")
    await engine.create_shard("p", ShardConfig(segment_bytes=4096, retention_ms=5))
    for i in range(10):
        await engine.append("p", recs(10, start=i * 10, size=200, ts=1000 + i * 10))
    await engine.delete_before("p", 15)
    await engine.put(b"k", b"v")
    await engine.commit_offset("g", "p", 33, "m")
    await engine.close()
    again = await opener(fsync="interval")
    assert await again.list_shards() == ["p"]
    info = await again.shard_info("p")
    assert (info.earliest_offset, info.latest_offset) == (15, 100)
    assert info.config.retention_ms == 5
    got = await again.read("p", 15, max_records=1000)
    assert [r.offset for r in got] == list(range(15, 100))
    assert got[-1].headers == (("h", b"99"),)
    assert await again.get(b"k") == b"v"
    assert await again.committed_offset("g", "p") == CommittedOffset(33, "m")
    assert await again.offset_for_timestamp("p", 1051) == 51
    assert (await again.read_by_key("p", b"key-1")).offset == 99  # type: ignore[union-attr]
    assert await again.append("p", [Record(b"more")]) == range(100, 101)


async def test_closed_engine_refuses(engine: StorageEngine) -> None:
    await engine.create_shard("x")
    await engine.close()
    with pytest.raises(StorageClosed):
        await engine.append("x", [Record(b"v")])
    with pytest.raises(StorageClosed):
        await engine.get(b"k")
    with pytest.raises(StorageClosed):
        await engine.list_shards()
