"""``/api/v1/cluster``: the node's status, the list of nodes and the running config.

``nodes`` lists this node (membership over the API comes with the Meta Service's
membership changes); ``meta_groups`` shows each Raft group's leader, term and indexes
as this node sees them. The
config is the one the node started with, with secrets (``*_secret``, ``*_token``) masked.
MQTT and Kafka resources are in ``mqtt.py`` and ``kafka.py``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from aiohttp import web

from robustmq import __version__
from robustmq.http.api.common import INT, NUM, STR, Context, Route, obj

MASK = "******"

_LISTENER = obj({"name": STR, "host": STR, "port": INT}, ["name", "host", "port"])
_NODE = obj(
    {
        "node_id": INT,
        "roles": {"type": "array", "items": STR},
        "listeners": {"type": "array", "items": _LISTENER},
        "version": STR,
        "started_at": NUM,
        "uptime_seconds": NUM,
        "ready": {"type": "boolean"},
    },
    ["node_id", "roles", "listeners", "version", "uptime_seconds"],
)


def _node_status(ctx: Context) -> dict[str, Any]:
    node = ctx.node
    return {
        "node_id": node.config.node.id,
        "roles": list(node.config.node.roles),
        "listeners": [{"name": n, "host": h, "port": p} for n, h, p in node.listeners],
        "version": __version__,
        "started_at": ctx.started_at,
        "uptime_seconds": round(time.time() - ctx.started_at, 3),
        "ready": node.ready,
    }


_GROUP = obj(
    {
        "group": STR,
        "role": STR,
        "leader_id": INT,
        "leader_address": STR,
        "term": INT,
        "commit": INT,
        "applied": INT,
        "snapshot_index": INT,
    },
    ["group", "role", "leader_id", "term", "commit", "applied"],
)
_GROUP_KEYS = tuple(_GROUP["properties"])


async def status(ctx: Context, request: web.Request) -> Any:
    """The nodes and, on a node running the meta role, each Raft group as this node sees it."""
    meta = ctx.node.meta
    groups = [] if meta is None else meta.host.status()
    return {
        "nodes": [_node_status(ctx)],
        "meta_groups": [{k: g[k] for k in _GROUP_KEYS} for g in groups],
    }


async def nodes(ctx: Context, request: web.Request) -> Any:
    return [_node_status(ctx)]


def masked(value: Any) -> Any:
    """A config tree as JSON, with the values of secret keys replaced by ``MASK``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            secret = f.name.endswith(("_secret", "_token")) and item
            out[f.name] = MASK if secret else masked(item)
        return out
    if isinstance(value, (list, tuple)):
        return [masked(v) for v in value]
    if isinstance(value, dict):
        return {str(k): masked(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)  # e.g. a TOML date-time in a blacklist entry


async def config(ctx: Context, request: web.Request) -> Any:
    return masked(ctx.node.config)


ROUTES = (
    Route(
        "GET",
        "/api/v1/cluster/status",
        status,
        "The status of the cluster's nodes",
        "cluster",
        obj(
            {
                "nodes": {"type": "array", "items": _NODE},
                "meta_groups": {"type": "array", "items": _GROUP},
            },
            ["nodes", "meta_groups"],
        ),
    ),
    Route(
        "GET",
        "/api/v1/cluster/nodes",
        nodes,
        "The nodes of the cluster",
        "cluster",
        {"type": "array", "items": _NODE},
    ),
    Route(
        "GET",
        "/api/v1/cluster/config",
        config,
        "The running configuration, secrets masked",
        "cluster",
        {"type": "object"},
    ),
)
