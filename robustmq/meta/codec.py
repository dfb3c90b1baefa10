"""A compact binary encoding of Raft ``Message`` values for the node-to-node transport.

Fixed little-endian ``struct`` layouts, one per part: a message header, then its context,
its entries (each a header and its data) and, for InstallSnapshot, the snapshot (metadata,
membership, data). The gRPC ``RaftBatch`` carries one such encoding per message. A
truncated or inconsistent buffer raises ``RaftError`` naming the byte offset. What a message
means is the Raft core's business (``robustmq/meta/raft``).
"""

from __future__ import annotations

import struct

from robustmq.errors import RaftError
from robustmq.meta.raft.types import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMeta,
)

# type, reject, has_snapshot, group, to, from, term, log_term, index, commit, reject_hint,
# context length, entry count
_HEADER = struct.Struct("<BBBIQQQQQQQII")
_ENTRY = struct.Struct("<QQBI")  # term, index, type, data length
_SNAP = struct.Struct("<QQIII")  # index, term, voters, learners, data length
_U64 = struct.Struct("<Q")


def encode_message(m: Message) -> bytes:
    parts = [
        _HEADER.pack(
            m.type,
            m.reject,
            m.snapshot is not None,
            m.group,
            m.to,
            m.from_,
            m.term,
            m.log_term,
            m.index,
            m.commit,
            m.reject_hint,
            len(m.context),
            len(m.entries),
        ),
        m.context,
    ]
    for e in m.entries:
        parts.append(_ENTRY.pack(e.term, e.index, e.type, len(e.data)))
        parts.append(e.data)
    if m.snapshot is not None:
        meta = m.snapshot.meta
        cs = meta.conf_state
        parts.append(
            _SNAP.pack(
                meta.index, meta.term, len(cs.voters), len(cs.learners), len(m.snapshot.data)
            )
        )
        parts.extend(_U64.pack(v) for v in cs.voters + cs.learners)
        parts.append(m.snapshot.data)
    return b"".join(parts)


_ENTRY_TYPES = (EntryType.NORMAL, EntryType.CONF_CHANGE)


def _take(buf: bytes, pos: int, n: int) -> bytes:
    if pos + n > len(buf):
        raise RaftError(f"raft message cut short: {n} bytes needed at byte {pos} of {len(buf)}")
    return buf[pos : pos + n]


def decode_message(buf: bytes) -> Message:
    if len(buf) < _HEADER.size:
        raise RaftError(f"raft message of {len(buf)} bytes is shorter than its header")
    (
        kind,
        reject,
        has_snap,
        group,
        to,
        from_,
        term,
        log_term,
        index,
        commit,
        hint,
        ctx_len,
        n_entries,
    ) = _HEADER.unpack_from(buf, 0)
    try:
        mtype = MessageType(kind)
    except ValueError:
        raise RaftError(f"unknown raft message type {kind} at byte 0") from None
    pos = _HEADER.size
    context = _take(buf, pos, ctx_len)
    pos += ctx_len
    entries = []
    end = len(buf)
    # Bounds checked inline and entry types looked up in a tuple: this loop runs once per
    # replicated entry on every follower.
    for _ in range(n_entries):
        if pos + _ENTRY.size > end:
            _take(buf, pos, _ENTRY.size)  # raises, naming the byte
        e_term, e_index, e_type, size = _ENTRY.unpack_from(buf, pos)
        pos += _ENTRY.size
        if e_type >= len(_ENTRY_TYPES):
            raise RaftError(f"unknown raft entry type {e_type} at byte {pos - 5}")
        if pos + size > end:
            _take(buf, pos, size)
        entries.append(Entry(e_term, e_index, _ENTRY_TYPES[e_type], buf[pos : pos + size]))
        pos += size
    snapshot = None
    if has_snap:
        s_index, s_term, n_voters, n_learners, size = _SNAP.unpack(_take(buf, pos, _SNAP.size))
        pos += _SNAP.size
        ids = struct.unpack_from(
            f"<{n_voters + n_learners}Q", _take(buf, pos, 8 * (n_voters + n_learners))
        )
        pos += 8 * (n_voters + n_learners)
        cs = ConfState(ids[:n_voters], ids[n_voters:])
        snapshot = Snapshot(SnapshotMeta(s_index, s_term, cs), _take(buf, pos, size))
        pos += size
    if pos != len(buf):
        raise RaftError(f"raft message has {len(buf) - pos} extra bytes at byte {pos}")
    return Message(
        mtype,
        to=to,
        from_=from_,
        term=term,
        log_term=log_term,
        index=index,
        entries=entries,
        commit=commit,
        reject=bool(reject),
        reject_hint=hint,
        snapshot=snapshot,
        context=context,
        group=group,
    )
