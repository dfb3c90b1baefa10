"""The state machine contract of a Meta Service group and the command encoding they share.

A command is an orjson object ``{"v": 1, "op": "<name>", ...fields}``; ``encode_command``
builds one and ``StateMachine.apply`` decodes and dispatches it. An undecodable command, an
unknown ``op`` or version, or a missing field raises a ``MetaCommandError`` subclass, and
the state is left unchanged (every replica applies the same bytes, so every replica refuses
it the same way). State is a set of named tables of plain JSON records keyed by name; the
groups themselves (``cluster``, ``mqtt``, ``offsets``) are in their own modules, and the
Raft plumbing that feeds commands in is in ``robustmq/meta/host.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import orjson

from robustmq.errors import (
    InvalidMetaCommand,
    UnknownMetaCommand,
    UnsupportedMetaCommandVersion,
)

COMMAND_VERSION = 1
SNAPSHOT_VERSION = 1

Record = dict[str, Any]
Handler = Callable[["StateMachine", Record], Any]


def encode_command(op: str, **fields: Any) -> bytes:
    """The bytes of one command for ``MetaClient.propose`` / ``MultiRaftHost.propose``."""
    return orjson.dumps({"v": COMMAND_VERSION, "op": op, **fields})


def field(cmd: Record, name: str, kind: type | tuple[type, ...]) -> Any:
    """``cmd[name]``, checked to be of ``kind`` (a bool is not accepted as an int)."""
    value = cmd.get(name)
    if type(value) is kind:  # the common case, decided in one test (and never a bool)
        return value
    if (
        value is None
        or not isinstance(value, kind)
        or (isinstance(value, bool) and kind in (int, (int,)))
    ):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise InvalidMetaCommand(f"command {cmd.get('op')!r} needs field {name!r} of type {names}")
    return value


class StateMachine:
    """Tables of records plus a dispatch table ``OPS`` of command handlers.

    Subclasses list their tables in ``TABLES`` and register handlers in ``OPS``; a handler
    returns the command's result (JSON-able) or raises ``MetaCommandError``. Tables added
    after snapshots were first written are also in ``LATER_TABLES``: a snapshot without
    them restores with them empty.
    """

    NAME: ClassVar[str] = ""
    TABLES: ClassVar[tuple[str, ...]] = ()
    LATER_TABLES: ClassVar[tuple[str, ...]] = ()
    OPS: ClassVar[dict[str, Handler]] = {}

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, Any]] = {t: {} for t in self.TABLES}

    def apply(self, command: bytes) -> Any:
        try:
            cmd = orjson.loads(command)
        except orjson.JSONDecodeError as exc:
            raise InvalidMetaCommand(f"command is not JSON: {exc}") from None
        if not isinstance(cmd, dict):
            raise InvalidMetaCommand("command is not a JSON object")
        version = cmd.get("v")
        if version != COMMAND_VERSION:
            raise UnsupportedMetaCommandVersion(
                f"command version {version!r} is not supported by group {self.NAME!r} "
                f"(supported: {COMMAND_VERSION})"
            )
        op = cmd.get("op")
        handler = self.OPS.get(op) if isinstance(op, str) else None
        if handler is None:
            raise UnknownMetaCommand(f"group {self.NAME!r} has no command {op!r}")
        return handler(self, cmd)

    def read(self, key: str) -> Any:
        """``"<table>"`` (every record) or ``"<table>/<name>"`` (one record, or None)."""
        table, _, name = key.partition("/")
        if table not in self.tables:
            raise InvalidMetaCommand(
                f"group {self.NAME!r} has no table {table!r} (tables: {', '.join(self.TABLES)})"
            )
        if not name:
            return self.tables[table]
        return self.tables[table].get(name)

    def snapshot(self) -> bytes:
        return orjson.dumps({"v": SNAPSHOT_VERSION, "group": self.NAME, "tables": self.tables})

    def restore(self, data: bytes) -> None:
        try:
            snap = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise InvalidMetaCommand(
                f"snapshot of group {self.NAME!r} is not JSON: {exc}"
            ) from None
        if not isinstance(snap, dict) or snap.get("v") != SNAPSHOT_VERSION:
            raise UnsupportedMetaCommandVersion(
                f"snapshot of group {self.NAME!r} has an unsupported version"
            )
        tables = snap.get("tables")
        if snap.get("group") != self.NAME or not isinstance(tables, dict):
            raise InvalidMetaCommand(f"snapshot is not one of group {self.NAME!r}")
        for name in self.LATER_TABLES:
            tables.setdefault(name, {})
        if set(tables) != set(self.TABLES) or not all(isinstance(t, dict) for t in tables.values()):
            raise InvalidMetaCommand(f"snapshot of group {self.NAME!r} has the wrong tables")
        self.tables = tables


def put_record(
    table: str, key_field: str, fields: tuple[tuple[str, type | tuple[type, ...]], ...]
) -> Handler:
    """A handler storing ``{field: value}`` under ``cmd[key_field]`` in ``table``; returns
    whether a record was replaced."""

    def handler(sm: StateMachine, cmd: Record) -> Any:
        key = field(cmd, key_field, str)
        record = {key_field: key}
        for name, kind in fields:
            record[name] = field(cmd, name, kind)
        replaced = key in sm.tables[table]
        sm.tables[table][key] = record
        return {"replaced": replaced}

    return handler


def delete_record(table: str, key_field: str) -> Handler:
    """A handler removing ``cmd[key_field]`` from ``table``; returns whether it existed."""

    def handler(sm: StateMachine, cmd: Record) -> Any:
        key = field(cmd, key_field, str)
        return {"deleted": sm.tables[table].pop(key, None) is not None}

    return handler
