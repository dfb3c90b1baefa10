"""Regression tests for storage bugs a review found: reads under a small max_bytes, close
during a group commit, zero max_bytes, and committed-offset keys of odd group names."""

from __future__ import annotations

import asyncio
import time

import pytest

from robustmq.errors import StorageError
from robustmq.storage.engine import LevelDBConfig, Record, SegmentConfig, ShardConfig
from robustmq.storage.leveldb import LevelDBEngine
from robustmq.storage.segment import SegmentEngine
from robustmq.storage.segment import sync as sync_mod


def seg_cfg(tmp_path, **kw) -> SegmentConfig:
    return SegmentConfig(path=str(tmp_path / "seg"), **kw)


async def test_segment_small_max_bytes_read_mid_index_interval(tmp_path) -> None:
    # Default index interval (4 KiB); ~1000-byte records: index points every 5 records.
    engine = await SegmentEngine.open(seg_cfg(tmp_path, fsync="never"))
    try:
        await engine.create_shard("s", ShardConfig())
        await engine.append("s", [Record(b"%04d" % i * 240) for i in range(12)])
        # Offset 4 is 4 frames (~3.9 KB) past its index point; reading it with a
        # 1000-byte budget must still return it (and at least one record).
        got = await engine.read("s", 4, max_records=10, max_bytes=1000)
        assert [r.offset for r in got][:1] == [4]
    finally:
        await engine.close()


async def test_segment_read_by_key_mid_index_interval(tmp_path) -> None:
    engine = await SegmentEngine.open(seg_cfg(tmp_path, fsync="never"))
    try:
        await engine.create_shard("s", ShardConfig())
        await engine.append("s", [Record(b"%04d" % i * 240, key=b"k%d" % i) for i in range(12)])
        found = await engine.read_by_key("s", b"k4")
        assert found is not None and found.offset == 4
    finally:
        await engine.close()


async def test_segment_close_during_fsync_round_does_not_hang_append(tmp_path, monkeypatch) -> None:
    real = sync_mod._sync_all

    def slow_sync_all(*args):  # an fsync that takes a while (a busy disk)
        time.sleep(0.3)
        real(*args)

    engine = await SegmentEngine.open(seg_cfg(tmp_path, fsync="always"))
    await engine.create_shard("s", ShardConfig())
    monkeypatch.setattr(sync_mod, "_sync_all", slow_sync_all)
    task = asyncio.create_task(engine.append("s", [Record(b"x")]))
    await asyncio.sleep(0.1)  # the round is now fsyncing in the executor
    await engine.close()
    try:
        await asyncio.wait_for(task, 2)
    except asyncio.TimeoutError:
        pytest.fail("append awaiting its fsync never returned after close()")
    except Exception:
        pass  # an error (StorageClosed) is fine; hanging is not


async def test_leveldb_close_with_pending_always_append_does_not_hang(tmp_path) -> None:
    engine = await LevelDBEngine.open(LevelDBConfig(path=str(tmp_path / "ldb"), fsync="always"))
    await engine.create_shard("s", ShardConfig())
    task = asyncio.create_task(engine.append("s", [Record(b"x")]))
    await asyncio.sleep(0)  # the append is queued for the committer
    # close() from this task (not wrapped in wait_for's own task), with a watchdog.
    watchdog = asyncio.get_running_loop().call_later(2, asyncio.current_task().cancel)
    try:
        await engine.close()
    except asyncio.CancelledError:
        pytest.fail("close() hung with an append pending")
    finally:
        watchdog.cancel()
        task.cancel()


@pytest.mark.parametrize("kind", ["segment", "leveldb"])
async def test_read_returns_at_least_one_record_with_zero_max_bytes(tmp_path, kind) -> None:
    if kind == "segment":
        engine = await SegmentEngine.open(seg_cfg(tmp_path, fsync="never"))
    else:
        engine = await LevelDBEngine.open(LevelDBConfig(path=str(tmp_path / "l"), fsync="never"))
    try:
        await engine.create_shard("s", ShardConfig())
        await engine.append("s", [Record(b"abc")] * 3)
        got = await engine.read("s", 0, max_bytes=0)
        assert [r.offset for r in got] == [0]
    finally:
        await engine.close()


async def test_segment_delete_shard_drops_offsets_of_group_with_nul(tmp_path) -> None:
    engine = await SegmentEngine.open(seg_cfg(tmp_path, fsync="never"))
    try:
        await engine.create_shard("c", ShardConfig())
        await engine.commit_offset("a\x00b", "c", 7)
        await engine.delete_shard("c")
        await engine.create_shard("c", ShardConfig())
        assert await engine.committed_offset("a\x00b", "c") is None
    finally:
        await engine.close()


async def test_segment_refuses_work_after_a_failed_fsync_until_reopened(tmp_path, monkeypatch):
    engine = await SegmentEngine.open(SegmentConfig(path=str(tmp_path), fsync="always"))
    await engine.create_shard("s")
    await engine.append("s", [Record(b"kept")])
    real_fsync = sync_mod.os.fsync

    def failing_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(sync_mod.os, "fsync", failing_fsync)
    with pytest.raises(StorageError, match="fsync failed"):
        await engine.append("s", [Record(b"maybe lost")])
    monkeypatch.setattr(sync_mod.os, "fsync", real_fsync)
    # fsync works again, but what the failed round covered may be gone: no more writes
    with pytest.raises(StorageError, match="reopened"):
        await engine.append("s", [Record(b"after")])
    await engine.close()
    reopened = await SegmentEngine.open(SegmentConfig(path=str(tmp_path), fsync="always"))
    assert (await reopened.read("s", 0))[0].value == b"kept"
    await reopened.append("s", [Record(b"after reopen")])
    await reopened.close()
