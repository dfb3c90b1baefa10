"""The ``cluster`` group: the nodes of the cluster and the cluster-wide config.

Tables: ``nodes`` (keyed by node id as text: id, address, roles, last heartbeat in
milliseconds since the epoch, as given by the proposer so that every replica stores the same
value, and, when registered with them, listeners, version and start time), ``config``
(key -> JSON value), ``topics`` (Kafka topics by name: partition count and topic
configs, written whole by ``topic.set``; the broker's ``TopicRegistry`` decides what a
valid change is) and ``routes`` (by node id as text: the MQTT topic filters that node's
sessions subscribe to, ``$share/{group}/`` included, so that other nodes know where to
forward a publish: ``robustmq/broker/mqtt/cluster_link.py``). Commands and their encoding are in ``base.py``; who
proposes heartbeats and when is the node's business, not this module's.
"""

from __future__ import annotations

from typing import Any

from robustmq.errors import InvalidMetaCommand
from robustmq.meta.groups.base import Record, StateMachine, delete_record, field

JSON_VALUE = (str, int, float, bool, list, dict)


def _node_register(sm: StateMachine, cmd: Record) -> Any:
    node_id = field(cmd, "id", int)
    roles = field(cmd, "roles", list)
    if node_id <= 0 or not all(isinstance(r, str) for r in roles):
        raise InvalidMetaCommand("node.register needs id > 0 and roles as a list of strings")
    key = str(node_id)
    replaced = key in sm.tables["nodes"]
    record = {
        "id": node_id,
        "address": field(cmd, "address", str),
        "roles": roles,
        "heartbeat": field(cmd, "heartbeat", int),
    }
    # What robustmq/meta/registry.py adds: the node's listeners, version and start time.
    for name, kind in (("listeners", list), ("version", str), ("started", int)):
        if name in cmd:
            record[name] = field(cmd, name, kind)
    sm.tables["nodes"][key] = record
    return {"replaced": replaced}


def _node_heartbeat(sm: StateMachine, cmd: Record) -> Any:
    node = sm.tables["nodes"].get(str(field(cmd, "id", int)))
    at = field(cmd, "heartbeat", int)
    if node is None:
        return {"known": False}
    node["heartbeat"] = max(node["heartbeat"], at)
    return {"known": True}


def _node_remove(sm: StateMachine, cmd: Record) -> Any:
    key = str(field(cmd, "id", int))
    sm.tables["routes"].pop(key, None)  # nothing is forwarded to a node that left
    return {"deleted": sm.tables["nodes"].pop(key, None) is not None}


def _filters(cmd: Record, name: str) -> list[str]:
    filters = field(cmd, name, list)
    if not all(isinstance(f, str) and f for f in filters):
        raise InvalidMetaCommand(f"{cmd['op']}: {name} must be non-empty strings")
    return filters


def _route_update(sm: StateMachine, cmd: Record) -> Any:
    """A node's routes changed: ``add`` and ``delete`` filters, or, with ``replace``,
    the whole set is ``add`` (what a node proposes first after it starts)."""
    node_id = field(cmd, "node_id", int)
    if node_id <= 0:
        raise InvalidMetaCommand("route.update needs node_id > 0")
    add, delete = _filters(cmd, "add"), _filters(cmd, "delete")
    key = str(node_id)
    held = {} if cmd.get("replace") is True else sm.tables["routes"].get(key, {})
    for f in delete:
        held.pop(f, None)
    for f in add:
        held[f] = 1
    if held:
        sm.tables["routes"][key] = held
    else:
        sm.tables["routes"].pop(key, None)
    return {"filters": len(held)}


def _config_set(sm: StateMachine, cmd: Record) -> Any:
    key = field(cmd, "key", str)
    replaced = key in sm.tables["config"]
    sm.tables["config"][key] = field(cmd, "value", JSON_VALUE)
    return {"replaced": replaced}


def _topic_set(sm: StateMachine, cmd: Record) -> Any:
    name = field(cmd, "name", str)
    partitions = field(cmd, "partitions", int)
    configs = field(cmd, "configs", dict)
    # Kafka topic names never hold "/" (offsets and shards are keyed by it).
    if not name or "/" in name or partitions < 1:
        raise InvalidMetaCommand("topic.set needs a name without '/' and partitions >= 1")
    if not all(isinstance(v, str) for v in configs.values()):
        raise InvalidMetaCommand("topic.set: config values must be strings")
    replaced = name in sm.tables["topics"]
    sm.tables["topics"][name] = {"name": name, "partitions": partitions, "configs": configs}
    return {"replaced": replaced}


class ClusterStateMachine(StateMachine):
    NAME = "cluster"
    TABLES = ("nodes", "config", "topics", "routes")
    LATER_TABLES = ("topics", "routes")
    OPS = {
        "node.register": _node_register,
        "node.heartbeat": _node_heartbeat,
        "node.remove": _node_remove,
        "config.set": _config_set,
        "config.delete": delete_record("config", "key"),
        "topic.set": _topic_set,
        "topic.delete": delete_record("topics", "name"),
        "route.update": _route_update,
    }
