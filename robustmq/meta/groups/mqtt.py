"""The ``mqtt`` group: what an MQTT broker must not lose across restarts and nodes.

Tables, all plain JSON records keyed by name: ``sessions`` (persistent sessions by client
id, each holding its ``subscriptions`` by topic filter), ``retained`` (retained messages by
topic; ``payload`` is base64 text so the record stays JSON), ``users`` (by username; the
password is stored only as the hash the broker computed) and ``acl`` (rules by name).
Clean sessions never come here (DESIGN.md, "Metadata"). The broker's cache of these tables
and its use of them live in the broker.
"""

from __future__ import annotations

from typing import Any

from robustmq.errors import InvalidMetaCommand
from robustmq.meta.groups.base import (
    Record,
    StateMachine,
    delete_record,
    field,
    put_record,
)


def _session_set(sm: StateMachine, cmd: Record) -> Any:
    client_id = field(cmd, "client_id", str)
    old = sm.tables["sessions"].get(client_id)
    sm.tables["sessions"][client_id] = {
        "client_id": client_id,
        "expiry_interval": field(cmd, "expiry_interval", int),
        "node_id": field(cmd, "node_id", int),
        # MQTT 5.0 §3.1.2.4: a resumed session keeps its subscriptions.
        "subscriptions": old["subscriptions"] if old else {},
    }
    return {"replaced": old is not None}


def _session(sm: StateMachine, cmd: Record) -> dict[str, Any]:
    client_id = field(cmd, "client_id", str)
    session = sm.tables["sessions"].get(client_id)
    if session is None:
        raise InvalidMetaCommand(f"{cmd['op']}: no persistent session {client_id!r}")
    return session


def _subscription_set(sm: StateMachine, cmd: Record) -> Any:
    session = _session(sm, cmd)
    topic_filter = field(cmd, "filter", str)
    qos = field(cmd, "qos", int)
    if qos not in (0, 1, 2):
        raise InvalidMetaCommand(f"subscription.set: qos {qos} is not 0, 1 or 2")
    options = cmd.get("options", {})
    if not isinstance(options, dict):
        raise InvalidMetaCommand("subscription.set: options must be an object")
    replaced = topic_filter in session["subscriptions"]
    session["subscriptions"][topic_filter] = {
        "filter": topic_filter,
        "qos": qos,
        "options": options,
    }
    return {"replaced": replaced}


def _subscription_delete(sm: StateMachine, cmd: Record) -> Any:
    session = _session(sm, cmd)
    return {"deleted": session["subscriptions"].pop(field(cmd, "filter", str), None) is not None}


class MqttStateMachine(StateMachine):
    NAME = "mqtt"
    TABLES = ("sessions", "retained", "users", "acl")
    OPS = {
        "session.set": _session_set,
        "session.delete": delete_record("sessions", "client_id"),
        "subscription.set": _subscription_set,
        "subscription.delete": _subscription_delete,
        "retained.set": put_record(
            "retained", "topic", (("payload", str), ("qos", int), ("properties", dict))
        ),
        "retained.delete": delete_record("retained", "topic"),
        "user.set": put_record("users", "username", (("password_hash", str), ("superuser", bool))),
        "user.delete": delete_record("users", "username"),
        "acl.set": put_record("acl", "name", (("rule", dict),)),
        "acl.delete": delete_record("acl", "name"),
    }
