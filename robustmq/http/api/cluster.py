"""``/api/v1/cluster``: the node's status, the list of nodes and the running config.

``status`` shows this node; ``nodes`` lists every node of the cluster's node registry
(``robustmq/meta/registry.py``) with whether it is alive and which groups it leads;
``meta_groups`` shows each Raft group's leader, term, indexes
and members as this node sees them; ``POST``/``DELETE /api/v1/cluster/nodes`` add a meta
node to every group (learner, then voter once caught up) or remove one (and its registry
entry), through the groups' leaders (``MetaClient``). The
config is the one the node started with, with secrets (``*_secret``, ``*_token`` and the
user information of a URL, such as ``auth.http_url``'s ``user:password@``) masked.
MQTT and Kafka resources are in ``mqtt.py`` and ``kafka.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from typing import Any

from aiohttp import web

from robustmq import __version__
from robustmq.errors import (
    ApiBadRequest,
    ApiConflict,
    ApiNotFound,
    MembershipChangeRefused,
    MetaError,
)
from robustmq.http.api.common import (
    INT,
    NUM,
    STR,
    Context,
    Param,
    Route,
    field_of,
    json_body,
    no_extra_fields,
    obj,
)
from robustmq.meta.groups import encode_command
from robustmq.meta.registry import describe, read_nodes

MASK = "******"
# RFC 3986 §3.2.1: "scheme://userinfo@host"; userinfo holds no "/", "?" or "#", and the
# greedy match runs to the authority's last "@", so an unescaped "@" in a password is
# masked too.
_URL_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]*@")
# Seconds a new node has to catch up before POST /api/v1/cluster/nodes answers 409 (it
# stays a learner; adding it again resumes).
ADD_TIMEOUT = 6.0

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
        "voters": {"type": "array", "items": INT},
        "learners": {"type": "array", "items": INT},
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


_REGISTERED_NODE = obj(
    {
        "node_id": INT,
        "address": STR,
        "roles": {"type": "array", "items": STR},
        "listeners": {"type": "array", "items": _LISTENER},
        "version": STR,
        "started_at": NUM,
        "last_heartbeat_at": NUM,
        "alive": {"type": "boolean"},
        "leader_of": {"type": "array", "items": STR},
    },
    [
        "node_id",
        "address",
        "roles",
        "listeners",
        "version",
        "started_at",
        "last_heartbeat_at",
        "alive",
        "leader_of",
    ],
)


async def _leaders(ctx: Context) -> dict[int, list[str]]:
    """The groups each node leads, as this node's meta role sees them, or as the first
    meta node that answers does."""
    from robustmq.meta.client import MetaClient

    meta, registry = ctx.node.meta, ctx.node.registry
    client = None if registry is None else registry.meta
    led: list[tuple[str, int]] = []
    if meta is not None:
        led = [(g["group"], g["leader_id"]) for g in meta.host.status()]
    elif isinstance(client, MetaClient):
        for address in client.addresses:
            try:
                _, groups = await client.status(address)
            except MetaError:
                continue
            led = [(g.group, g.leader_id) for g in groups]
            break
    leaders: dict[int, list[str]] = {}
    for group, leader in led:
        if leader:
            leaders.setdefault(leader, []).append(group)
    return leaders


async def nodes(ctx: Context, request: web.Request) -> Any:
    """Every registered node; a node that reaches no Meta Service is the whole cluster."""
    node = ctx.node
    now_ms = int(time.time() * 1000)
    if node.registry is None:
        info = node.info
        return describe({} if info is None else {"self": info.record(now_ms)}, now_ms, {})
    meta = node.meta
    local = None if meta is None else lambda: meta.host.groups["cluster"].sm.read("nodes")
    try:
        table = await read_nodes(node.registry.meta, local)
    except MetaError as exc:
        raise ApiConflict(f"{type(exc).__name__}: {exc}") from None
    return describe(table or {}, now_ms, await _leaders(ctx))


_MEMBERSHIP = obj(
    {
        "node_id": INT,
        "groups": {
            "type": "object",
            "additionalProperties": obj(
                {
                    "voters": {"type": "array", "items": INT},
                    "learners": {"type": "array", "items": INT},
                }
            ),
        },
    },
    ["node_id", "groups"],
)


async def _change_membership(ctx: Context, node_id: int, address: str) -> Any:
    """Add (``address`` given) or remove ``node_id`` in every meta group, each at its
    leader (a removed node leaves the node registry too); the membership of each group
    afterwards."""
    meta = ctx.node.meta
    if meta is None or not meta.port:
        raise ApiNotFound("this node runs no meta role with a gRPC listener")
    from robustmq.meta.client import MetaClient

    own = meta.host.addresses[meta.host.config.node_id]
    others = [a for i, a in sorted(meta.host.addresses.items()) if a != own]
    client = MetaClient([own, *others], timeout=5.0)
    names = list(meta.host.groups)
    try:
        # The groups at once, so that the whole stays within robustmq-ctl's 10 s timeout.
        if address:
            changes = [client.add_node(g, node_id, address, timeout=ADD_TIMEOUT) for g in names]
        else:
            changes = [client.remove_node(g, node_id) for g in names]
        groups = dict(zip(names, await asyncio.gather(*changes), strict=True))
        if not address:
            await client.propose("cluster", encode_command("node.remove", id=node_id))
    except MembershipChangeRefused as exc:
        raise ApiBadRequest("node_id", str(exc)) from None  # the last voter
    except MetaError as exc:
        raise ApiConflict(f"{type(exc).__name__}: {exc}") from None
    finally:
        await client.close()
    return {"node_id": node_id, "groups": groups}


async def add_node(ctx: Context, request: web.Request) -> Any:
    body = await json_body(request)
    no_extra_fields(body, ("node_id", "address"))
    node_id = field_of(body, "node_id", int)
    address = field_of(body, "address", str)
    if node_id < 1:
        raise ApiBadRequest("node_id", f"{node_id} is not an integer > 0")
    host, _, port = address.rpartition(":")
    if not host or not (port.isascii() and port.isdecimal()):
        raise ApiBadRequest("address", f"{address!r} is not host:port")
    return await _change_membership(ctx, node_id, address)


async def remove_node(ctx: Context, request: web.Request) -> Any:
    text = request.match_info["node_id"]
    # Not str.isdigit(): it holds for "²", which int() refuses.
    if not (text.isascii() and text.isdecimal()) or int(text) < 1:
        raise ApiBadRequest("node_id", f"{text!r} is not an integer > 0")
    return await _change_membership(ctx, int(text), "")


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
    if isinstance(value, str):
        return _URL_USERINFO.sub(rf"\g<1>{MASK}@", value)
    if isinstance(value, (int, float, bool)) or value is None:
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
        "The nodes of the cluster's node registry: listeners, heartbeat, alive, groups led",
        "cluster",
        {"type": "array", "items": _REGISTERED_NODE},
        errors=(409,),
    ),
    Route(
        "POST",
        "/api/v1/cluster/nodes",
        add_node,
        "Add a meta node to every Raft group (a learner until caught up, then a voter)",
        "cluster",
        _MEMBERSHIP,
        body=obj({"node_id": INT, "address": STR}, ["node_id", "address"]),
        errors=(400, 404, 409),
    ),
    Route(
        "DELETE",
        "/api/v1/cluster/nodes/{node_id}",
        remove_node,
        "Remove a node from every Raft group and from the node registry",
        "cluster",
        _MEMBERSHIP,
        params=(Param("node_id", "path", INT, "the node's id", required=True),),
        errors=(400, 404, 409),
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
