"""The ``segment`` engine: per shard a directory of append-only segment files.

format.py fixes the file formats, log.py holds one shard (segments, recovery, reads),
sync.py the group commit, kv.py the key-value log, engine.py the ``StorageEngine``.
"""

from robustmq.storage.segment.engine import SegmentEngine

__all__ = ["SegmentEngine"]
