"""The leveldb engine's own behaviour: key layout economy, group commit, state cache."""

from __future__ import annotations

import asyncio
import os

from robustmq.storage import leveldb as leveldb_mod
from robustmq.storage.engine import LevelDBConfig, Record
from robustmq.storage.leveldb import LevelDBEngine


async def test_many_small_shards_share_one_database(tmp_path) -> None:
    path = str(tmp_path / "db")
    engine = await LevelDBEngine.open(LevelDBConfig(path=path))
    for i in range(2000):
        await engine.create_shard(f"topic-{i:05d}")
        await engine.append(f"topic-{i:05d}", [Record(b"v%d" % j) for j in range(3)])
    await engine.close()
    files = os.listdir(path)
    assert len(files) < 20  # no file per shard
    again = await LevelDBEngine.open(LevelDBConfig(path=path))
    assert len(await again.list_shards("topic-01")) == 1000
    assert [r.value for r in await again.read("topic-01234", 1)] == [b"v1", b"v2"]
    await again.close()


async def test_group_commit_one_synced_batch_per_round(tmp_path) -> None:
    engine = await LevelDBEngine.open(LevelDBConfig(path=str(tmp_path / "db"), fsync="always"))
    await engine.create_shard("s")
    rounds0 = engine.rounds
    ranges = await asyncio.gather(*(engine.append("s", [Record(b"x")]) for _ in range(200)))
    assert sorted(r.start for r in ranges) == list(range(200))
    assert 1 <= engine.rounds - rounds0 < 50
    assert len(await engine.read("s", 0, max_records=500)) == 200
    await engine.close()


async def test_shard_state_cache_evicts_and_reloads(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(leveldb_mod, "_CACHED_SHARDS", 50)
    engine = await LevelDBEngine.open(LevelDBConfig(path=str(tmp_path / "db")))
    for i in range(200):
        await engine.create_shard(f"s{i}")
        await engine.append(f"s{i}", [Record(b"%d" % i)] * (i % 3 + 1))
    assert len(engine._shards) <= 60
    for i in range(200):
        assert await engine.latest_offset(f"s{i}") == i % 3 + 1
        assert (await engine.read(f"s{i}", 0))[0].value == b"%d" % i
    await engine.close()
