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


def _offset_commit(sm: StateMachine, cmd: Record) -> Any:
    group = field(cmd, "group", str)
    topic = field(cmd, "topic", str)
    partition = field(cmd, "partition", int)
    offset = field(cmd, "offset", int)
    metadata = cmd.get("metadata", "")
    if "/" in group or "/" in topic or partition < 0 or offset < -1:
        raise InvalidMetaCommand(
            "offset.commit needs group and topic without '/', partition >= 0, offset >= -1"
        )
    if not isinstance(metadata, str):
        raise InvalidMetaCommand("offset.commit: metadata must be a string")
    key = f"{group}/{topic}/{partition}"
    sm.tables["offsets"][key] = {"offset": offset, "metadata": metadata}
    return {"key": key}


def _offset_commit_batch(sm: StateMachine, cmd: Record) -> Any:
    group = field(cmd, "group", str)
    offsets = field(cmd, "offsets", list)
    rows = []
    for entry in offsets:  # all checked before any is stored: a refused command changes nothing
        if not isinstance(entry, dict):
            raise InvalidMetaCommand("offset.commit_batch: offsets must be objects")
        topic = field(entry, "topic", str)
        partition = field(entry, "partition", int)
        offset = field(entry, "offset", int)
        metadata = entry.get("metadata", "")
        # The empty group id is one: Kafka still accepts it from clients that commit
        # offsets without a group coordinator (OffsetCommit v0, the old simple consumer).
        if not topic or "/" in topic or partition < 0 or offset < -1:
            raise InvalidMetaCommand(
                "offset.commit_batch needs topics without '/', partition >= 0, offset >= -1"
            )
        if not isinstance(metadata, str):
            raise InvalidMetaCommand("offset.commit_batch: metadata must be a string")
        rows.append((f"{group}/{topic}/{partition}", {"offset": offset, "metadata": metadata}))
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
