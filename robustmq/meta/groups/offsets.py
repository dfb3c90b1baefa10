"""The ``offsets`` group: committed offsets of consumer groups.

One table, ``offsets``, keyed ``"<group>/<topic>/<partition>"`` (Kafka topic names cannot
contain "/"), each record holding the committed offset and its metadata string.
``offset.commit_batch`` stores the partitions of one Kafka OffsetCommit in one entry (a
group id may hold "/": keys are split from the right); ``topic.delete`` drops a deleted
topic's offsets in every group. Group membership and rebalancing are the Kafka
coordinator's and live in the broker.
"""

from __future__ import annotations

from typing import Any

from robustmq.errors import InvalidMetaCommand
from robustmq.meta.groups.base import Record, StateMachine, field


def _offset_row(group: str, entry: Record, op: str) -> tuple[str, Record]:
    """One validated committed position of ``group``: its key and record."""
    topic = field(entry, "topic", str)
    partition = field(entry, "partition", int)
    offset = field(entry, "offset", int)
    metadata = entry.get("metadata", "")
    # The empty group id is one: Kafka still accepts it from clients that commit offsets
    # without a group coordinator (OffsetCommit v0, the old simple consumer). Keys split
    # from the right, so a group id may hold "/"; a topic name never does.
    if not topic or "/" in topic or partition < 0 or offset < -1:
        raise InvalidMetaCommand(f"{op} needs topics without '/', partition >= 0, offset >= -1")
    if not isinstance(metadata, str):
        raise InvalidMetaCommand(f"{op}: metadata must be a string")
    return f"{group}/{topic}/{partition}", {"offset": offset, "metadata": metadata}


def _offset_commit(sm: StateMachine, cmd: Record) -> Any:
    key, row = _offset_row(field(cmd, "group", str), cmd, "offset.commit")
    sm.tables["offsets"][key] = row
    return {"key": key}


def _offset_commit_batch(sm: StateMachine, cmd: Record) -> Any:
    group = field(cmd, "group", str)
    rows = []
    for entry in field(cmd, "offsets", list):  # all checked first: a refusal changes nothing
        if not isinstance(entry, dict):
            raise InvalidMetaCommand("offset.commit_batch: offsets must be objects")
        rows.append(_offset_row(group, entry, "offset.commit_batch"))
    sm.tables["offsets"].update(rows)
    return {"committed": len(rows)}


def _topic_delete(sm: StateMachine, cmd: Record) -> Any:
    topic = field(cmd, "topic", str)
    table = sm.tables["offsets"]
    doomed = [k for k in table if k.rsplit("/", 2)[1] == topic]
    for k in doomed:
        del table[k]
    return {"deleted": len(doomed)}


def _group_delete(sm: StateMachine, cmd: Record) -> Any:
    group = field(cmd, "group", str)
    table = sm.tables["offsets"]
    doomed = [k for k in table if k.rsplit("/", 2)[0] == group]
    for k in doomed:
        del table[k]
    return {"deleted": len(doomed)}


class OffsetsStateMachine(StateMachine):
    NAME = "offsets"
    TABLES = ("offsets",)
    OPS = {
        "offset.commit": _offset_commit,
        "offset.commit_batch": _offset_commit_batch,
        "group.delete": _group_delete,
        "topic.delete": _topic_delete,
    }
