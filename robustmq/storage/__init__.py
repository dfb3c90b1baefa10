"""Storage engines behind one interface (``engine.StorageEngine``).

``open_engine(config)`` opens the engine a config names; callers then use only the
interface. The engines are ``memory`` (memory.py), ``leveldb`` (leveldb.py, plyvel) and
``segment`` (segment/, append-only files). Nothing else in the broker touches storage files.
"""

from __future__ import annotations

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


async def open_engine(config: EngineConfig) -> StorageEngine:
    """Open the engine ``config`` is for (recovering it from disk where it has files)."""
    if isinstance(config, MemoryConfig):
        from robustmq.storage.memory import MemoryEngine

        return await MemoryEngine.open(config)
    if isinstance(config, LevelDBConfig):
        from robustmq.storage.leveldb import LevelDBEngine

        return await LevelDBEngine.open(config)
    if isinstance(config, SegmentConfig):
        from robustmq.storage.segment import SegmentEngine

        return await SegmentEngine.open(config)
    raise TypeError(f"not an engine config: {config!r}")


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
