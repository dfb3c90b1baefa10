"""Raft for the Meta Service: a pure state machine, its storage protocol and durable log.

``RawNode`` is the entry point (tick/step/propose in, ``Ready`` out); ``MemoryStorage`` and
``LogStore`` are the two logs. Everything the core exchanges is in ``types``. Transport,
timers, groups and state machines live outside this package.
"""

from robustmq.meta.raft.core import Config
from robustmq.meta.raft.rawnode import RawNode
from robustmq.meta.raft.storage import MemoryStorage, Storage
from robustmq.meta.raft.types import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Ready,
    Snapshot,
    SnapshotMeta,
    SoftState,
    StateType,
)

__all__ = [
    "NONE",
    "Config",
    "ConfChange",
    "ConfChangeType",
    "ConfState",
    "Entry",
    "EntryType",
    "HardState",
    "MemoryStorage",
    "Message",
    "MessageType",
    "RawNode",
    "ReadState",
    "Ready",
    "Snapshot",
    "SnapshotMeta",
    "SoftState",
    "StateType",
    "Storage",
]
