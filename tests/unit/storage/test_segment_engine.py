"""The segment engine's own behaviour: files, rolling, recovery, indexes, group commit."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest

from robustmq.errors import StorageError
from robustmq.storage.engine import Record, SegmentConfig, ShardConfig
from robustmq.storage.segment import SegmentEngine
from robustmq.storage.segment.format import HEADER_SIZE


def cfg(tmp_path, **kw) -> SegmentConfig:
    kw.setdefault("index_interval_bytes", 256)
    return SegmentConfig(path=str(tmp_path / "data"), **kw)


def shard_dir(tmp_path, name: str = "s") -> str:
    return str(tmp_path / "data" / "shards" / f"s-{name}")


def logs(tmp_path, name: str = "s") -> list[str]:
    return sorted(f for f in os.listdir(shard_dir(tmp_path, name)) if f.endswith(".log"))


async def fill(engine: SegmentEngine, n_appends: int, per: int = 10, size: int = 200) -> None:
    for i in range(n_appends):
        await engine.append(
            "s",
            [
                Record(b"%06d" % (i * per + j) * (size // 6), timestamp_ms=1000 + i)
                for j in range(per)
            ],
        )


async def test_roll_by_size_names_and_indexes(tmp_path) -> None:
    engine = await SegmentEngine.open(cfg(tmp_path))
    await engine.create_shard("s", ShardConfig(segment_bytes=4096))
    await fill(engine, 10)
    await engine.flush()
    names = logs(tmp_path)
    assert len(names) >= 5 and names[0] == "00000000000000000000.log"
    assert all(len(n) == 24 for n in names)
    # Sealed segments got their .index/.timeindex written whole.
    files = os.listdir(shard_dir(tmp_path))
    for name in names[:-1]:
        stem = name[:-4]
        assert stem + ".index" in files and stem + ".timeindex" in files
    assert not [f for f in files if f.endswith(".tmp")]
    await engine.close()
    again = await SegmentEngine.open(cfg(tmp_path))
    got = await again.read("s", 0, max_records=1000)
    assert [r.offset for r in got] == list(range(100))
    await again.close()


async def test_roll_by_time(tmp_path) -> None:
    engine = await SegmentEngine.open(cfg(tmp_path))
    await engine.create_shard("s", ShardConfig(segment_ms=1))
    await engine.append("s", [Record(b"a")])
    await asyncio.sleep(0.01)
    await engine.append("s", [Record(b"b")])
    assert logs(tmp_path) == ["00000000000000000000.log", "00000000000000000001.log"]
    await engine.close()


async def test_recovery_rebuilds_missing_and_bad_indexes(tmp_path, caplog) -> None:
    engine = await SegmentEngine.open(cfg(tmp_path))
    await engine.create_shard("s", ShardConfig(segment_bytes=4096))
    await fill(engine, 10)
    await engine.close()
    d = shard_dir(tmp_path)
    os.unlink(os.path.join(d, "00000000000000000000.index"))
    second = logs(tmp_path)[1][:-4]
    with open(os.path.join(d, second + ".timeindex"), "r+b") as f:
        f.seek(HEADER_SIZE + 3)
        f.write(b"\x99")
    caplog.set_level(logging.WARNING)
    again = await SegmentEngine.open(cfg(tmp_path))
    assert "index unusable" in caplog.text
    assert [r.offset for r in await again.read("s", 0, max_records=1000)] == list(range(100))
    assert await again.offset_for_timestamp("s", 1005) == 50
    await again.close()
    assert os.path.exists(os.path.join(d, "00000000000000000000.index"))


async def test_torn_segment_creation_is_removed(tmp_path, caplog) -> None:
    engine = await SegmentEngine.open(cfg(tmp_path))
    await engine.create_shard("s", ShardConfig(segment_bytes=4096))
    await fill(engine, 3)
    await engine.close()
    last = logs(tmp_path)[-1]
    nxt = int(last[:-4]) + 1000
    with open(os.path.join(shard_dir(tmp_path), f"{nxt:020d}.log"), "wb") as f:
        f.write(b"RMQL\x01")  # a crash while writing the header of a new segment
    caplog.set_level(logging.WARNING)
    again = await SegmentEngine.open(cfg(tmp_path))
    assert "torn while being created" in caplog.text
    assert await again.latest_offset("s") == 30
    await again.close()


async def test_corrupt_frame_in_the_middle_cuts_there(tmp_path, caplog) -> None:
    engine = await SegmentEngine.open(cfg(tmp_path))
    await engine.create_shard("s", ShardConfig(segment_bytes=1 << 20))
    await fill(engine, 5)
    await engine.close()
    path = os.path.join(shard_dir(tmp_path), "00000000000000000000.log")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(b"\xee")
    caplog.set_level(logging.WARNING)
    again = await SegmentEngine.open(cfg(tmp_path))
    kept = await again.latest_offset("s")
    assert 0 < kept < 50
    assert "recovery cut" in caplog.text and f"last offset kept is {kept - 1}" in caplog.text
    assert [r.offset for r in await again.read("s", 0, max_records=100)] == list(range(kept))
    await again.close()


async def test_group_commit_shares_fsyncs(tmp_path) -> None:
    engine = await SegmentEngine.open(cfg(tmp_path, fsync="always"))
    await engine.create_shard("s")
    rounds0 = engine.syncer.rounds
    await asyncio.gather(*(engine.append("s", [Record(b"x" * 100)]) for _ in range(200)))
    rounds = engine.syncer.rounds - rounds0
    assert 1 <= rounds < 50, rounds  # 200 appends, far fewer fsyncs
    await engine.close()


async def test_interval_policy_syncs_in_background(tmp_path) -> None:
    engine = await SegmentEngine.open(cfg(tmp_path, fsync="interval", fsync_interval_ms=10))
    await engine.create_shard("s")
    await engine.append("s", [Record(b"x")])
    for _ in range(100):
        if engine.syncer.rounds:
            break
        await asyncio.sleep(0.01)
    assert engine.syncer.rounds >= 1
    await engine.close()


async def test_records_larger_than_a_read_chunk(tmp_path) -> None:
    engine = await SegmentEngine.open(cfg(tmp_path))
    await engine.create_shard("s")
    big = [Record(bytes([i]) * (300_000 + i)) for i in range(4)]
    await engine.append("s", big)
    got = await engine.read("s", 1, max_records=2, max_bytes=10)
    assert [len(r.value) for r in got] == [300_001]
    got = await engine.read("s", 0, max_records=10, max_bytes=1 << 30)
    assert [len(r.value) for r in got] == [300_000, 300_001, 300_002, 300_003]
    assert await engine.offset_for_timestamp("s", 0) == 0
    await engine.close()


async def test_one_process_per_directory(tmp_path) -> None:
    engine = await SegmentEngine.open(cfg(tmp_path))
    with pytest.raises(StorageError, match="in use"):
        await SegmentEngine.open(cfg(tmp_path))
    await engine.close()
    again = await SegmentEngine.open(cfg(tmp_path))
    await again.close()


async def test_kv_log_compacts_and_survives_torn_tail(tmp_path, caplog) -> None:
    engine = await SegmentEngine.open(cfg(tmp_path))
    for i in range(3000):  # ~1.5 MB of overwrites of a few keys: triggers compaction
        await engine.put(b"key-%d" % (i % 5), b"v" * 500 + b"%d" % i)
    kv_path = str(tmp_path / "data" / "kv.log")
    assert os.path.getsize(kv_path) < 1 << 20
    await engine.close()
    with open(kv_path, "ab") as f:
        f.write(b"\x40\x00\x00\x00garbage")
    caplog.set_level(logging.WARNING)
    again = await SegmentEngine.open(cfg(tmp_path))
    assert "recovery cut" in caplog.text
    assert await again.get(b"key-4") == b"v" * 500 + b"2999"
    assert len(await again.scan(b"key-")) == 5
    await again.close()


async def test_retention_deletes_whole_segments_only(tmp_path) -> None:
    engine = await SegmentEngine.open(cfg(tmp_path))
    await engine.create_shard("s", ShardConfig(segment_bytes=4096, retention_bytes=1))
    await fill(engine, 10)
    before = logs(tmp_path)
    earliest = await engine.apply_retention("s")
    after = logs(tmp_path)
    assert after == before[-1:]  # the active segment is never deleted
    assert earliest == int(after[0][:-4])
    await engine.close()


async def test_a_batch_is_stored_patched_from_a_view_and_left_alone(tmp_path) -> None:
    """The produce path hands a slice of the request (a memoryview); the engine writes
    the frame head and the untouched rest with one pwritev, never changing the buffer."""
    engine = await SegmentEngine.open(cfg(tmp_path))
    await engine.create_shard("s")
    await engine.append_batch("s", b"\xff" * 30, count=2, max_timestamp_ms=5, base_offset_at=0)
    request = bytearray(b"head" + b"\xee" * 8 + b"batch-body" + b"tail")
    view = memoryview(request)[4:-4]
    base = await engine.append_batch("s", view, count=3, max_timestamp_ms=9, base_offset_at=0)
    assert base == 2
    assert request == bytearray(b"head" + b"\xee" * 8 + b"batch-body" + b"tail")
    got = await engine.read_batches("s", 2)
    assert got[0].data == (2).to_bytes(8, "big") + b"batch-body"
    await engine.close()
    engine = await SegmentEngine.open(cfg(tmp_path))  # what reached the file scans clean
    assert [b.data[8:] for b in await engine.read_batches("s", 0)] == [b"\xff" * 22, b"batch-body"]
    await engine.close()


async def test_short_writes_are_continued(tmp_path, monkeypatch) -> None:
    engine = await SegmentEngine.open(cfg(tmp_path))
    await engine.create_shard("s")
    real = os.pwritev
    calls = []

    def short(fd: int, buffers: list, offset: int) -> int:
        calls.append(sum(len(b) for b in buffers))
        return real(fd, [bytes(buffers[0])[:3]], offset)  # three bytes at a time

    monkeypatch.setattr(os, "pwritev", short)
    batch = bytes(range(40))
    await engine.append_batch("s", batch, count=1, max_timestamp_ms=1, base_offset_at=0)
    monkeypatch.undo()
    assert len(calls) > 10 and calls[0] == 8 + 21 + 40
    assert (await engine.read_batches("s", 0))[0].data == (0).to_bytes(8, "big") + batch[8:]
    await engine.close()


async def test_a_failed_write_leaves_the_log_as_it_was(tmp_path, monkeypatch) -> None:
    engine = await SegmentEngine.open(cfg(tmp_path))
    await engine.create_shard("s")
    await engine.append_batch("s", b"a" * 20, count=1, max_timestamp_ms=1, base_offset_at=0)

    def full(fd: int, buffers: list, offset: int) -> int:
        os.pwrite(fd, bytes(buffers[0])[:5], offset)  # part of it landed
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwritev", full)
    with pytest.raises(StorageError, match="No space"):
        await engine.append_batch("s", b"b" * 20, count=1, max_timestamp_ms=1, base_offset_at=0)
    monkeypatch.undo()
    assert await engine.latest_offset("s") == 1
    await engine.append_batch("s", b"c" * 20, count=1, max_timestamp_ms=1, base_offset_at=0)
    await engine.close()
    engine = await SegmentEngine.open(cfg(tmp_path))
    assert [b.data[8:] for b in await engine.read_batches("s", 0)] == [b"a" * 12, b"c" * 12]
    await engine.close()
