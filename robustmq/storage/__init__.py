"""Storage engines behind one interface (``engine.StorageEngine``).

``open_engine(config)`` opens the engine a config names; callers then use only the
interface. The engines are ``memory`` (memory.py), ``leveldb`` (leveldb.py, plyvel) and
``segment`` (segment/, append-only files). Nothing else in the broker touches storage files.
"""

from __future__ import annotations

from typing import cast

from robustmq.storage.engine import (
    EngineConfig,
    LevelDBConfig,
    MemoryConfig,
    Record,
    SegmentConfig,
    ShardConfig,
    StorageEngine,
    StoredBatch,
    StoredRecord,
)
from robustmq.storage.metered import MeteredEngine


async def open_engine(config: EngineConfig) -> StorageEngine:
    """Open the engine ``config`` is for (recovering it from disk where it has files),
    its appends and reads counted for ``/metrics`` (``metered.py``)."""
    engine: StorageEngine
    if isinstance(config, MemoryConfig):
        from robustmq.storage.memory import MemoryEngine

        engine, name = await MemoryEngine.open(config), "memory"
    elif isinstance(config, LevelDBConfig):
        from robustmq.storage.leveldb import LevelDBEngine

        engine, name = await LevelDBEngine.open(config), "leveldb"
    elif isinstance(config, SegmentConfig):
        from robustmq.storage.segment import SegmentEngine

        engine, name = await SegmentEngine.open(config), "segment"
    else:
        raise TypeError(f"not an engine config: {config!r}")
    return cast(StorageEngine, MeteredEngine(engine, name))


__all__ = [
    "EngineConfig",
    "LevelDBConfig",
    "MemoryConfig",
    "Record",
    "SegmentConfig",
    "ShardConfig",
    "StorageEngine",
    "StoredBatch",
    "StoredRecord",
    "open_engine",
]
