"""The Raft message codec of the transport: round trips of every part, and bad buffers
refused with ``RaftError`` naming where."""

from __future__ import annotations

import pytest

from robustmq.errors import RaftError
from robustmq.meta.codec import _HEADER, decode_message, encode_message
from robustmq.meta.raft import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)

MESSAGES = [
    Message(MessageType.HEARTBEAT, to=2, from_=1, term=3, commit=9, context=b"ctx", group=2),
    Message(
        MessageType.APP,
        to=3,
        from_=1,
        term=4,
        log_term=4,
        index=10,
        commit=10,
        entries=[
            Entry(4, 11, EntryType.NORMAL, b'{"v":1}'),
            Entry(4, 12, EntryType.CONF_CHANGE, b"\x00" * 9),
            Entry(4, 13),
        ],
        group=1,
    ),
    Message(MessageType.APP_RESP, to=1, from_=3, term=4, index=7, reject=True, reject_hint=5),
    Message(
        MessageType.SNAP,
        to=2,
        from_=1,
        term=5,
        snapshot=Snapshot(SnapshotMeta(100, 5, ConfState((1, 2, 3), (4,))), b"state" * 100),
        group=3,
    ),
    Message(MessageType.SNAP, to=2, from_=1, snapshot=Snapshot()),
]


@pytest.mark.parametrize("m", MESSAGES, ids=lambda m: m.type.name)
def test_round_trip(m: Message) -> None:
    assert decode_message(encode_message(m)) == m


def test_every_cut_of_a_message_is_refused() -> None:
    wire = encode_message(MESSAGES[3])
    for cut in range(len(wire)):
        with pytest.raises(RaftError, match="shorter than its header|cut short"):
            decode_message(wire[:cut])


def test_extra_bytes_and_unknown_types_are_refused() -> None:
    wire = encode_message(MESSAGES[0])
    with pytest.raises(RaftError, match="3 extra bytes"):
        decode_message(wire + b"xyz")
    with pytest.raises(RaftError, match="unknown raft message type 99"):
        decode_message(bytes([99]) + wire[1:])
    app = bytearray(encode_message(MESSAGES[1]))
    app[_HEADER.size + 16] = 7  # the first entry's type byte: after term and index
    with pytest.raises(RaftError, match="unknown raft entry type 7"):
        decode_message(bytes(app))
