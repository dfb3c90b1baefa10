"""The ``mqtt`` group: what an MQTT broker must not lose across restarts and nodes.

Tables, all plain JSON records keyed by name: ``sessions`` (persistent sessions by client
id, each holding its ``subscriptions`` by topic filter), ``retained`` (retained messages by
topic; ``payload`` is base64 text so the record stays JSON), ``users`` (by username: the
password only as the hash record and the SCRAM credentials the broker computed, never the
password), and the ordered rule lists ``acl`` (ACL-file lines), ``rewrite`` (topic
rewrite rules) and ``auto_subscribe`` (topic filter and QoS). A rule list is one record,
``"rules"``, holding the list in the order the rules are tried and a ``revision`` that
each replacement raises by one: ``<kind>.replace`` writes a whole list, refused with
``MetaConflict`` when it names a revision that is no longer current (the list changed
since it was read), or, with ``seed``, applied only while the group holds no list at all
(what the config file's rules do on a first start). Clean sessions never come here
(DESIGN.md, "Metadata"). What a rule means is checked by the broker, which alone writes
them; here only their shape. The broker's cache of these tables
(``robustmq/broker/mqtt/meta_rules.py``) and its use of them live in the broker.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from robustmq.errors import InvalidMetaCommand, MetaConflict
from robustmq.meta.groups.base import (
    Handler,
    Record,
    StateMachine,
    delete_record,
    field,
    put_record,
)


def _session_set(sm: StateMachine, cmd: Record) -> Any:
    client_id = field(cmd, "client_id", str)
    old = sm.tables["sessions"].get(client_id)
    record = {
        "client_id": client_id,
        "expiry_interval": field(cmd, "expiry_interval", int),
        "node_id": field(cmd, "node_id", int),
        # MQTT 5.0 §3.1.2.4: a resumed session keeps its subscriptions.
        "subscriptions": old["subscriptions"] if old else {},
    }
    if cmd.get("owner") is not None:
        # The username that created it: only that user resumes it, on any node.
        record["owner"] = field(cmd, "owner", str)
    sm.tables["sessions"][client_id] = record
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


def _user_set(sm: StateMachine, cmd: Record) -> Any:
    """A user's record put whole: ``password_hash`` (a ``passwords.py`` record) and
    ``scram`` (``ScramCredentials.format()``; optional, "" for none). ``create``
    (optional): true refuses an existing user, false a missing one (``MetaConflict``);
    absent, the record is put either way. Other fields are not kept."""
    username = field(cmd, "username", str)
    if not username or ":" in username or any(ord(ch) < 0x20 for ch in username):
        raise InvalidMetaCommand(f"user.set: {username!r} is not a username")
    record = {
        "username": username,
        "password_hash": field(cmd, "password_hash", str),
        "scram": field(cmd, "scram", str) if "scram" in cmd else "",
    }
    if not record["password_hash"]:
        raise InvalidMetaCommand("user.set: empty password_hash")
    exists = username in sm.tables["users"]
    create = cmd.get("create")
    if create is not None and field(cmd, "create", bool) == exists:
        raise MetaConflict(
            f"user.set: user {username!r} " + ("exists" if exists else "does not exist")
        )
    sm.tables["users"][username] = record
    return {"replaced": exists}


RULE_ACTIONS = ("publish", "subscribe", "all")
"""The actions of an ACL rule and of a rewrite rule alike."""


def _acl_item(item: Any) -> None:
    fields = item.split() if isinstance(item, str) else []
    if (
        len(fields) < 4
        or "\n" in item
        or fields[0] not in ("allow", "deny")
        or fields[2] not in RULE_ACTIONS
    ):
        raise InvalidMetaCommand(
            f"acl.replace: {item!r} is not an ACL line (allow|deny WHO ACTION TOPIC ...)"
        )


def _rewrite_item(item: Any) -> None:
    keys = ("action", "source_topic", "re", "dest_topic")
    if (
        not isinstance(item, dict)
        or set(item) != set(keys)
        or not all(isinstance(item[k], str) for k in keys)
        or item["action"] not in RULE_ACTIONS
        or not item["source_topic"]
        or not item["dest_topic"]
    ):
        raise InvalidMetaCommand(
            f"rewrite.replace: {item!r} is not a rule with a known action, source_topic, "
            "re and dest_topic"
        )
    try:
        re.compile(item["re"])
    except re.error as exc:
        raise InvalidMetaCommand(f"rewrite.replace: bad re {item['re']!r} ({exc})") from None


def _autosub_item(item: Any) -> None:
    if (
        not isinstance(item, dict)
        or set(item) != {"topic", "qos"}
        or not isinstance(item["topic"], str)
        or not item["topic"]
        or type(item["qos"]) is not int
        or item["qos"] not in (0, 1, 2)
    ):
        raise InvalidMetaCommand(f"autosub.replace: {item!r} is not a topic with qos 0, 1 or 2")


def replace_rules(table: str, check: Callable[[Any], None]) -> Handler:
    """The handler of ``<kind>.replace``: ``rules`` (the whole list, each item checked by
    ``check``), optional ``revision`` (the revision the list was read at; 0 for none) and
    ``seed`` (apply only while the table holds no list). Returns ``{"applied",
    "revision"}``."""

    def handler(sm: StateMachine, cmd: Record) -> Any:
        rules = field(cmd, "rules", list)
        for item in rules:
            check(item)
        current = sm.tables[table].get("rules")
        revision = current["revision"] if current else 0
        if cmd.get("seed") is not None and field(cmd, "seed", bool) and current is not None:
            return {"applied": False, "revision": revision}
        if cmd.get("revision") is not None and field(cmd, "revision", int) != revision:
            raise MetaConflict(
                f"{cmd['op']}: the rules changed (revision {revision}, the change was "
                f"made against {cmd['revision']}): list them again"
            )
        sm.tables[table]["rules"] = {"name": "rules", "rules": rules, "revision": revision + 1}
        return {"applied": True, "revision": revision + 1}

    return handler


RULE_TABLES = ("users", "acl", "rewrite", "auto_subscribe")
"""The tables of users and rules: what the broker's rule cache follows."""
RULE_OPS: dict[str, Handler] = {
    "user.set": _user_set,
    "user.delete": delete_record("users", "username"),
    "acl.replace": replace_rules("acl", _acl_item),
    "rewrite.replace": replace_rules("rewrite", _rewrite_item),
    "autosub.replace": replace_rules("auto_subscribe", _autosub_item),
}


class MqttStateMachine(StateMachine):
    NAME = "mqtt"
    TABLES = ("sessions", "retained", *RULE_TABLES)
    LATER_TABLES = RULE_TABLES
    OPS = {
        "session.set": _session_set,
        "session.delete": delete_record("sessions", "client_id"),
        "subscription.set": _subscription_set,
        "subscription.delete": _subscription_delete,
        "retained.set": put_record(
            "retained", "topic", (("payload", str), ("qos", int), ("properties", dict))
        ),
        "retained.delete": delete_record("retained", "topic"),
        **RULE_OPS,
    }
