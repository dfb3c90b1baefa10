"""The ``offsets`` group: committed offsets of consumer groups.

One table, ``offsets``, keyed ``"<group>/<topic>/<partition>"`` (Kafka topic names cannot
contain "/"), each record holding the committed offset and its metadata string. Group
membership and rebalancing are the Kafka coordinator's and live in the broker.
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


def _group_delete(sm: StateMachine, cmd: Record) -> Any:
    prefix = field(cmd, "group", str) + "/"
    table = sm.tables["offsets"]
    doomed = [k for k in table if k.startswith(prefix)]
    for k in doomed:
        del table[k]
    return {"deleted": len(doomed)}


class OffsetsStateMachine(StateMachine):
    NAME = "offsets"
    TABLES = ("offsets",)
    OPS = {"offset.commit": _offset_commit, "group.delete": _group_delete}
