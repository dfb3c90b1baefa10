"""Fixtures for the storage tests: every engine behind one factory, and both segment_io twins.

``engine`` runs a test against memory, leveldb and segment (the conformance suite);
``segment_io`` runs it against the pure-Python and the compiled framing loops.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Awaitable, Callable
from types import ModuleType

import pytest

from robustmq.storage import open_engine
from robustmq.storage.engine import (
    LevelDBConfig,
    MemoryConfig,
    SegmentConfig,
    ShardConfig,
    StorageEngine,
)

ENGINES = ["memory", "leveldb", "segment"]
# Small segments and index intervals so that a few records already cross both.
SMALL_SHARD = ShardConfig(segment_bytes=4096)


def engine_config(kind: str, path: str, fsync: str = "never", **kw: object) -> object:
    if kind == "memory":
        return MemoryConfig(default_shard=SMALL_SHARD, **kw)  # type: ignore[arg-type]
    if kind == "leveldb":
        return LevelDBConfig(path=path, fsync=fsync, default_shard=SMALL_SHARD, **kw)  # type: ignore[arg-type]
    kw.setdefault("index_interval_bytes", 256)
    return SegmentConfig(path=path, fsync=fsync, default_shard=SMALL_SHARD, **kw)  # type: ignore[arg-type]


Opener = Callable[..., Awaitable[StorageEngine]]


@pytest.fixture(params=ENGINES)
async def opener(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[Opener]:
    """Opens (and at the end closes) engines of one kind on one data directory."""
    opened: list[StorageEngine] = []
    kind = request.param

    async def open_(fsync: str = "never", **kw: object) -> StorageEngine:
        eng = await open_engine(engine_config(kind, str(tmp_path / kind), fsync, **kw))  # type: ignore[arg-type]
        opened.append(eng)
        return eng

    open_.kind = kind  # type: ignore[attr-defined]
    yield open_
    for eng in opened:
        try:
            await eng.close()
        except Exception:
            pass


@pytest.fixture
async def engine(opener: Opener) -> StorageEngine:
    return await opener()


@pytest.fixture(params=["py", "c"])
def segment_io(request: pytest.FixtureRequest) -> ModuleType:
    if request.param == "py":
        return importlib.import_module("robustmq._core.segment_io")
    try:
        return importlib.import_module("robustmq._core._segment_io")
    except ImportError:
        pytest.skip("compiled _segment_io is not built")
