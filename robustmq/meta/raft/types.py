"""The values the Raft core exchanges with its caller: entries, messages, states, Ready.

Everything here is plain data (slotted dataclasses and enums), the same shapes as
etcd-io/raft's ``raftpb``. No logic about what to do with them lives here: the algorithm is
in ``core.py``, the caller-facing loop in ``rawnode.py``, persistence in ``storage.py`` and
``log_store.py``. Node ids are positive integers; ``NONE`` (0) means "no node".
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

NONE = 0
ENTRY_OVERHEAD = 16  # bytes an entry counts for besides its data (term and index)


class EntryType(enum.IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


class ConfChangeType(enum.IntEnum):
    ADD_NODE = 0  # add a voter, or promote a learner to voter
    REMOVE_NODE = 1
    ADD_LEARNER = 2


class MessageType(enum.IntEnum):
    # Local messages: never sent over the network, only stepped by the node itself.
    HUP = 0
    BEAT = 1
    PROP = 2
    CHECK_QUORUM = 3
    UNREACHABLE = 4
    SNAP_STATUS = 5
    # Network messages.
    APP = 10
    APP_RESP = 11
    VOTE = 12
    VOTE_RESP = 13
    PRE_VOTE = 14
    PRE_VOTE_RESP = 15
    SNAP = 16
    HEARTBEAT = 17
    HEARTBEAT_RESP = 18
    TRANSFER_LEADER = 19
    TIMEOUT_NOW = 20
    READ_INDEX = 21
    READ_INDEX_RESP = 22


LOCAL_MESSAGES = frozenset(
    {
        MessageType.HUP,
        MessageType.BEAT,
        MessageType.PROP,
        MessageType.CHECK_QUORUM,
        MessageType.UNREACHABLE,
        MessageType.SNAP_STATUS,
    }
)


class StateType(enum.IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


@dataclass(slots=True, frozen=True)
class Entry:
    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""

    def size(self) -> int:
        """Bytes this entry counts for against ``max_size_per_msg``."""
        return len(self.data) + ENTRY_OVERHEAD


@dataclass(slots=True, frozen=True)
class ConfState:
    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()


_CONF_CHANGE = struct.Struct("<BQ")


@dataclass(slots=True, frozen=True)
class ConfChange:
    """One membership change. ``context`` is opaque to the core (etcd-io/raft
    ``ConfChange.Context``): the Multi-Raft host puts the node's address there."""

    type: ConfChangeType
    node_id: int
    context: bytes = b""

    def encode(self) -> bytes:
        return _CONF_CHANGE.pack(self.type, self.node_id) + self.context

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        if len(data) < _CONF_CHANGE.size:
            raise ValueError(
                f"conf change of {len(data)} bytes; expected at least {_CONF_CHANGE.size}"
            )
        kind, node_id = _CONF_CHANGE.unpack_from(data)
        return cls(ConfChangeType(kind), node_id, bytes(data[_CONF_CHANGE.size :]))


@dataclass(slots=True, frozen=True)
class SnapshotMeta:
    index: int = 0
    term: int = 0
    conf_state: ConfState = ConfState()


@dataclass(slots=True, frozen=True)
class Snapshot:
    meta: SnapshotMeta = SnapshotMeta()
    data: bytes = b""

    def is_empty(self) -> bool:
        return self.meta.index == 0


@dataclass(slots=True, frozen=True)
class HardState:
    """What must be on disk before any message of the same Ready is sent."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


@dataclass(slots=True, frozen=True)
class SoftState:
    """Volatile state worth telling the caller about; never persisted."""

    lead: int = NONE
    state: StateType = StateType.FOLLOWER


@dataclass(slots=True)
class Message:
    """One Raft message. ``group`` is copied onto every outgoing message so that a
    multi-group transport can route it; the core never reads it."""

    type: MessageType
    to: int = NONE
    from_: int = NONE
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: list[Entry] = field(default_factory=list)
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: Snapshot | None = None
    context: bytes = b""
    group: int = 0


@dataclass(slots=True, frozen=True)
class ReadState:
    """A ReadIndex result: reads of ``context`` are linearizable once ``index`` is applied."""

    index: int
    context: bytes


@dataclass(slots=True)
class Ready:
    """What the caller must do, in order: persist ``hard_state``, ``entries`` and
    ``snapshot`` (fsync when ``must_sync``), then send ``messages``, then apply
    ``snapshot`` and ``committed_entries`` to the state machine, then ``advance``."""

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    must_sync: bool = False
