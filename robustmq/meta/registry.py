"""The cluster's node registry: each node's own entry in the ``cluster`` group's ``nodes``
table, kept fresh by heartbeats, and the view of that table the HTTP API serves.

``NodeRegistry`` runs on every node that reaches a Meta Service (its own meta role, or its
``[cluster] peers``): once started it proposes ``node.register`` (id, gRPC address, roles,
the listeners it really serves with their bound ports, version, start time) until that is
taken, then one ``node.heartbeat`` every ``HEARTBEAT_INTERVAL`` seconds, from a task of its
own, so that neither the node's start nor its event loop ever waits on the Meta Service.
A heartbeat carries the proposer's wall clock in milliseconds, which every replica stores
as given (``robustmq/meta/groups/cluster.py``). ``describe`` turns the table into what
``GET /api/v1/cluster/nodes`` answers: a node is ``alive`` when its last heartbeat is at
most ``ALIVE_INTERVALS`` intervals old by the answering node's clock, which assumes the
nodes' clocks agree to well within an interval (NTP does). The state machine is in
``groups/cluster.py``; the wiring in ``robustmq/node.py``; the routes in
``robustmq/http/api/cluster.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from robustmq.errors import ConfigError, MetaError, MetaUnavailable
from robustmq.meta.groups import encode_command

log = logging.getLogger("robustmq.meta.registry")

GROUP = "cluster"
TABLE = "nodes"
HEARTBEAT_INTERVAL = 2.0
"""Seconds between two heartbeats of a node (and between registration attempts)."""
ALIVE_INTERVALS = 3
"""A node whose last heartbeat is older than this many intervals is not alive."""
FAILURE_LOG_INTERVAL = 60.0
"""At most one warning per this many seconds about heartbeats the Meta Service refused."""
READ_TIMEOUT = 3.0
"""Seconds a linearizable read of the table may take before the local replica answers."""


class MetaAccess(Protocol):
    """What both ``MultiRaftHost`` (a one-member group in process) and ``MetaClient``
    (leader redirect over gRPC) offer."""

    async def propose(self, group: str, command: bytes) -> Any: ...

    async def read(self, group: str, key: str) -> Any: ...


@dataclass(frozen=True, kw_only=True)
class NodeInfo:
    """What a node registers about itself."""

    node_id: int
    """The node's id (> 0), as in ``[node] id``."""
    address: str
    """The node's gRPC "host:port" ("" when it serves no gRPC)."""
    roles: tuple[str, ...]
    """The roles it runs (``[node] roles``)."""
    listeners: tuple[tuple[str, str, int], ...]
    """(name, host, bound port) of every listener it serves."""
    version: str
    """The RobustMQ version it runs."""
    started_ms: int
    """When it started, milliseconds since the epoch by its own clock."""

    def __post_init__(self) -> None:
        if self.node_id <= 0:
            raise ConfigError("node.id", self.node_id, "an integer > 0")
        if self.started_ms < 0:
            raise ConfigError("registry.started_ms", self.started_ms, "milliseconds >= 0")

    def record(self, heartbeat_ms: int) -> dict[str, Any]:
        """The fields of ``node.register``: the record the ``nodes`` table keeps."""
        return {
            "id": self.node_id,
            "address": self.address,
            "roles": list(self.roles),
            "listeners": [{"name": n, "host": h, "port": p} for n, h, p in self.listeners],
            "version": self.version,
            "started": self.started_ms,
            "heartbeat": heartbeat_ms,
        }


def _now_ms() -> int:
    return int(time.time() * 1000)


class NodeRegistry:
    """Registers ``info`` through ``meta`` and heartbeats it until ``stop()``.

    ``interval`` and ``clock`` (milliseconds since the epoch) are for tests; the node uses
    the defaults."""

    def __init__(
        self,
        info: NodeInfo,
        meta: MetaAccess,
        *,
        interval: float = HEARTBEAT_INTERVAL,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        if interval <= 0:
            raise ConfigError("registry.interval", interval, "seconds > 0")
        self.info = info
        self.meta = meta
        self.interval = interval
        self.clock = clock
        self.registered = asyncio.Event()
        self.heartbeats = 0  # heartbeats the Meta Service took
        self.failures = 0  # proposals that failed, all told
        self._last_warning = float("-inf")
        self._suppressed = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="node-registry")

    async def stop(self) -> None:
        """Stops heartbeating (the entry stays, and turns not alive)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            # One proposal at a time: a slow Meta Service delays the next heartbeat
            # instead of piling proposals up behind it.
            await self._beat()
            due = max(due + self.interval, loop.time())
            await asyncio.sleep(due - loop.time())

    async def _beat(self) -> None:
        now = self.clock()
        registering = not self.registered.is_set()
        if registering:
            command = encode_command("node.register", **self.info.record(now))
        else:
            command = encode_command("node.heartbeat", id=self.info.node_id, heartbeat=now)
        try:
            result = await self.meta.propose(GROUP, command)
        except MetaError as exc:
            self.failures += 1
            what = "registration" if registering else "heartbeat"
            self._warn("node %d: %s failed: %s", self.info.node_id, what, exc)
            return
        if registering:
            self.registered.set()
            log.info("node %d registered in the cluster", self.info.node_id)
        elif isinstance(result, dict) and result.get("known") is False:
            # Removed (``robustmq-ctl cluster node remove``): registering again would undo
            # the operator's removal; a restart registers anew.
            self._warn(
                "node %d is not in the cluster's node registry (removed?)", self.info.node_id
            )
        else:
            self.heartbeats += 1

    def _warn(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last_warning < FAILURE_LOG_INTERVAL:
            self._suppressed += 1
            return
        if self._suppressed:
            message += " (%d more since the last warning)"
            args = (*args, self._suppressed)
        log.warning(message, *args)
        self._last_warning = now
        self._suppressed = 0


def describe(
    table: dict[str, Any], now_ms: int, leaders: dict[int, list[str]]
) -> list[dict[str, Any]]:
    """The ``nodes`` table as the HTTP API shows it, by node id: the registered fields,
    ``last_heartbeat_at`` and ``started_at`` in seconds since the epoch, ``alive`` by
    ``now_ms``, and ``leader_of`` (the groups each node leads, from ``leaders``)."""
    limit_ms = int(ALIVE_INTERVALS * HEARTBEAT_INTERVAL * 1000)
    out = []
    for record in sorted(table.values(), key=lambda r: r["id"]):
        heartbeat = record["heartbeat"]
        out.append(
            {
                "node_id": record["id"],
                "address": record["address"],
                "roles": record["roles"],
                "listeners": record.get("listeners", []),
                "version": record.get("version", ""),
                "started_at": record.get("started", 0) / 1000,
                "last_heartbeat_at": heartbeat / 1000,
                "alive": now_ms - heartbeat <= limit_ms,
                "leader_of": sorted(leaders.get(record["id"], [])),
            }
        )
    return out


async def read_nodes(meta: MetaAccess, local: Callable[[], Any] | None) -> Any:
    """The ``nodes`` table: a linearizable read, or, when that fails or takes over
    ``READ_TIMEOUT`` (no quorum), this node's own replica (``local``, possibly stale) when
    it has one. ``MetaUnavailable`` when neither answers."""
    try:
        return await asyncio.wait_for(meta.read(GROUP, TABLE), READ_TIMEOUT)
    except (MetaError, TimeoutError) as exc:
        if local is None:
            raise MetaUnavailable(f"the cluster's node registry cannot be read: {exc}") from None
        return local()
