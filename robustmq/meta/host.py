"""The Multi-Raft host: several Raft groups of one node driven by one asyncio loop.

``MultiRaftHost`` owns, per group, a ``RawNode``, its ``LogStore`` (under
``<data_dir>/meta/<group>/``) and its state machine. One task does everything the Raft core
asks (``robustmq/meta/raft/rawnode.py``): one shared tick timer for all groups, incoming
messages stepped into the group they name, queued proposals and reads handed to the core,
then per round the Readys of all groups: persisted (one fsync per group with its group
commit, in a worker thread so the loop keeps serving), sent (all groups' messages to one
peer in one ``Transport.send`` call), applied, advanced, and handed to the group's
watchers. ``propose`` returns when its entry is applied, with the state machine's result
or error; ``read`` is linearizable through ReadIndex; ``watch`` streams every applied
entry from an index on; ``add_node`` / ``remove_node`` change a group's membership
(learner first, voter once caught up). The host keeps every member's address (from the
config, from the membership changes' context, and in its snapshots) and its counters in
``GroupStats``. Every ``snapshot_entries`` applied entries (or ``snapshot_bytes``) a
group snapshots its state machine and compacts its log, the files written in the worker
thread between rounds. The network is behind ``Transport`` (``InMemoryNetwork``
here for tests, gRPC in ``robustmq/meta/service.py``); state machines are in
``meta/groups``.
"""

from __future__ import annotations

import asyncio
import gc
import heapq
import itertools
import logging
import os
import random
import struct
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from robustmq.errors import (
    ConfigError,
    MembershipChangeRefused,
    MetaCommandError,
    MetaTimeout,
    MetaUnavailable,
    NotLeader,
    ProposalDropped,
    RaftError,
    UnknownMetaGroup,
)
from robustmq.meta.codec import decode_message, encode_message
from robustmq.meta.groups import GROUPS, StateMachine
from robustmq.meta.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    EntryType,
    Message,
    RawNode,
    Ready,
    StateType,
)
from robustmq.meta.raft.log_store import LogStore
from robustmq.observability.latency import LatencyHistogram

log = logging.getLogger("robustmq.meta")

# Events a watcher may hold before the host stops reading ahead for it: a slow stream
# costs this much memory, and catches up from the log (or a snapshot) when it drains.
WATCH_BUFFER = 1024
# A snapshot the host writes carries the members' addresses ahead of the state machine's
# bytes, so that a node that catches up by snapshot can reach members added before it.
_SNAPSHOT_MAGIC = b"RMSA\x01"
_U32 = struct.Struct("<I")


def wrap_snapshot(addresses: dict[int, str], data: bytes) -> bytes:
    book = orjson.dumps({str(i): a for i, a in sorted(addresses.items())})
    return _SNAPSHOT_MAGIC + _U32.pack(len(book)) + book + data


def unwrap_snapshot(data: bytes) -> tuple[dict[int, str], bytes]:
    """The addresses and the state machine's bytes of a snapshot (a snapshot written
    before addresses were kept is the state machine's bytes alone)."""
    if not data.startswith(_SNAPSHOT_MAGIC):
        return {}, data
    start = len(_SNAPSHOT_MAGIC) + _U32.size
    if len(data) < start:
        raise RaftError(f"snapshot address header cut short at byte {len(data)}")
    (size,) = _U32.unpack_from(data, len(_SNAPSHOT_MAGIC))
    try:
        book = orjson.loads(data[start : start + size])
        addresses = {int(i): str(a) for i, a in book.items()}
    except (orjson.JSONDecodeError, ValueError, AttributeError) as exc:
        raise RaftError(f"bad address book in snapshot: {exc}") from None
    return addresses, data[start + size :]


class Transport(Protocol):
    """Fire-and-forget delivery of Raft messages; Raft itself recovers from loss."""

    def send(self, to: int, messages: list[Message]) -> None: ...

    def set_address(self, node_id: int, address: str) -> None:
        """Where ``node_id`` is reached from now on (a member added or moved)."""
        ...


@dataclass(frozen=True, kw_only=True)
class HostConfig:
    """Settings of one node's Multi-Raft host."""

    node_id: int
    """This node's id (> 0), the same in every group."""
    peers: tuple[tuple[int, str], ...]
    """(node id, gRPC address) of this node and the members it knows: the voters a new
    data directory bootstraps the groups with, unless ``join``."""
    data_dir: str
    """The node's data directory; group logs go to ``<data_dir>/meta/<group>/``."""
    groups: tuple[str, ...] = tuple(GROUPS)
    """The groups this node runs (names from ``robustmq.meta.groups.GROUPS``)."""
    tick_interval: float = 0.1
    """Seconds per Raft tick, shared by all groups."""
    election_tick: int = 10
    """Ticks without a leader before campaigning (randomized up to twice this)."""
    heartbeat_tick: int = 1
    """Ticks between leader heartbeats."""
    snapshot_entries: int = 100_000
    """Applied entries between two snapshots (and log compactions) of a group. Each one
    serializes the whole state machine on the loop (about 25 ms per 150,000 records),
    a stall every proposal of that moment waits out; etcd's default is the same."""
    snapshot_bytes: int = 64 << 20
    """Bytes of applied commands that also trigger a snapshot, whatever their count: the
    live log is held in memory, and large commands (retained payloads) must not make
    ``snapshot_entries`` of them a memory problem."""
    proposal_timeout: float = 5.0
    """Seconds a ``propose`` or ``read`` waits before raising ``MetaTimeout``."""
    membership_timeout: float = 60.0
    """Seconds ``add_node`` waits for the new node to catch up (by snapshot if need be)."""
    join: bool = False
    """This node joins groups that already exist: it starts with no membership and takes
    part once a member adds it (``add_node``); ``peers`` names it and the members it
    knows. Without ``join``, a new data directory bootstraps the groups with ``peers`` as
    voters."""

    def __post_init__(self) -> None:
        ids = [p[0] for p in self.peers]
        if self.node_id <= 0:
            raise ConfigError("cluster.node_id", self.node_id, "an integer > 0")
        if self.node_id not in ids or len(set(ids)) != len(ids) or min(ids) <= 0:
            raise ConfigError(
                "cluster.peers", self.peers, f"distinct node ids > 0 including {self.node_id}"
            )
        unknown = [g for g in self.groups if g not in GROUPS]
        if unknown or not self.groups:
            raise ConfigError("meta.groups", self.groups, f"a subset of {sorted(GROUPS)}")
        if self.tick_interval <= 0:
            raise ConfigError("meta.tick_interval", self.tick_interval, "seconds > 0")
        if self.snapshot_entries < 1:
            raise ConfigError("meta.snapshot_entries", self.snapshot_entries, ">= 1")
        if self.snapshot_bytes < 1:
            raise ConfigError("meta.snapshot_bytes", self.snapshot_bytes, ">= 1")
        if self.proposal_timeout <= 0:
            raise ConfigError("meta.proposal_timeout", self.proposal_timeout, "seconds > 0")
        if self.membership_timeout <= 0:
            raise ConfigError("meta.membership_timeout", self.membership_timeout, "seconds > 0")
        if self.join and len(self.peers) < 2:
            raise ConfigError("cluster.peers", self.peers, "a member to join besides this node")

    @property
    def addresses(self) -> dict[int, str]:
        return dict(self.peers)


@dataclass
class GroupStats:
    """Counters of one group on this node, read by ``/metrics`` (plain integers)."""

    proposals: int = 0
    """Commands proposed here as leader (handed to Raft)."""
    leader_changes: int = 0
    """Times this node saw a new leader of the group (itself included)."""
    commit_latency: LatencyHistogram = field(default_factory=lambda: LatencyHistogram(1, 1))
    """Every proposal's time from ``propose`` to its result (kind 0)."""


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One event of a watch stream: an applied entry or the state machine at an index."""

    kind: str
    """"entry" (``data`` the command; empty for a leader's no-op), "conf_change" (an
    encoded ``ConfChange``) or "snapshot" (``data`` the state machine's snapshot; entries
    resume at ``index + 1``)."""
    index: int
    term: int
    data: bytes
    result: bytes = b""
    """For an entry applied while the watcher kept up: the orjson result (empty when the
    entry was read back from the log, or refused)."""
    error_kind: str = ""
    """The ``MetaCommandError`` class the state machine refused the entry with, if known."""


class Watch:
    """One watcher of a group on this host: ``await next_events()`` until it raises."""

    def __init__(self, group: _Group, next_index: int, wake: Callable[[], None]) -> None:
        self.group = group
        self._wake = wake
        self.next_index = next_index
        self.events: list[WatchEvent] = []
        self.error: MetaUnavailable | None = None
        self._ready = asyncio.Event()

    def push(self, events: list[WatchEvent]) -> None:
        self.events.extend(events)
        self._ready.set()

    def fail(self, error: MetaUnavailable) -> None:
        self.error = error
        self._ready.set()

    async def next_events(self) -> list[WatchEvent]:
        """The events not yet taken (at least one); ``MetaUnavailable`` once the host
        stops."""
        while not self.events:
            if self.error is not None:
                raise self.error
            await self._ready.wait()
            self._ready.clear()
        events, self.events = self.events, []
        if len(events) >= WATCH_BUFFER:
            self._wake()  # the host stopped reading ahead for us: resume
        return events

    def close(self) -> None:
        if self in self.group.watchers:
            self.group.watchers.remove(self)


@dataclass
class _Group:
    name: str
    gid: int
    node: RawNode
    store: LogStore
    sm: StateMachine
    snapshot_index: int
    queued: list[tuple[bytes, asyncio.Future[Any], float]] = field(default_factory=list)
    proposals: dict[int, tuple[int, asyncio.Future[Any], float]] = field(default_factory=dict)
    conf_queued: list[tuple[ConfChange, asyncio.Future[Any]]] = field(default_factory=list)
    reads_queued: list[tuple[bytes, str, asyncio.Future[Any]]] = field(default_factory=list)
    reads_confirming: dict[bytes, tuple[str, asyncio.Future[Any]]] = field(default_factory=dict)
    reads_ready: list[tuple[int, str, asyncio.Future[Any]]] = field(default_factory=list)
    watchers: list[Watch] = field(default_factory=list)
    snapshot_requests: list[asyncio.Future[Any]] = field(default_factory=list)
    # Results of this round's applied entries, kept only while someone watches.
    results: dict[int, tuple[bytes, str]] = field(default_factory=dict)
    stats: GroupStats = field(default_factory=GroupStats)
    lead: int = 0
    applied_bytes: int = 0  # of commands applied since the last snapshot
    removed: bool = False  # this node was a member and a committed change took it out


def _settle(
    fut: asyncio.Future[Any], result: Any = None, error: BaseException | None = None
) -> None:
    if fut.done():
        return  # the caller gave up (timeout) before the outcome was known
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


class MultiRaftHost:
    def __init__(self, config: HostConfig, transport: Transport) -> None:
        self.config = config
        self.transport = transport
        self.groups: dict[str, _Group] = {}
        self._by_gid: dict[int, _Group] = {}
        self._inbox: list[Message] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._failure: BaseException | None = None
        self._read_ids = itertools.count(1)
        self._deadlines: list[tuple[float, int, asyncio.Future[Any], str, float]] = []
        self._deadline_ids = itertools.count()
        self.addresses = dict(config.peers)
        voters = () if config.join else tuple(p[0] for p in config.peers)
        for name in config.groups:
            gid, sm_class = GROUPS[name]
            store = LogStore(os.path.join(config.data_dir, "meta", name))
            sm = sm_class()
            snap = store.snapshot()
            if not snap.is_empty():
                book, data = unwrap_snapshot(snap.data)
                sm.restore(data)
                for i, a in book.items():
                    self.addresses.setdefault(i, a)
            raft_config = Config(
                id=config.node_id,
                peers=voters,
                group=gid,
                election_tick=config.election_tick,
                heartbeat_tick=config.heartbeat_tick,
            )
            node = RawNode(raft_config, store, random.Random(config.node_id * 1000 + gid))
            g = _Group(name, gid, node, store, sm, snap.meta.index)
            g.removed = bool(node.raft.prs) and config.node_id not in node.raft.prs
            self.groups[name] = g
            self._by_gid[gid] = g
        for i, a in self.addresses.items():
            if i not in dict(config.peers):
                transport.set_address(i, a)

    # -- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        # Persist and apply a new group's bootstrap membership entries (and, on restart,
        # what the log already commits) before serving.
        await self._drain()
        if len(self.config.peers) == 1 and not self.config.join:
            # A one-member group need not wait an election timeout to lead itself.
            for g in self.groups.values():
                g.node.campaign()
            await self._drain()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="meta-raft")

    async def _drain(self) -> None:
        while any(g.node.has_ready() for g in self.groups.values()):
            await self._process_readies()

    async def stop(self) -> None:
        """Finish the round in progress, fail what is pending, close the logs."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._fail_pending(MetaUnavailable(f"meta node {self.config.node_id} stopped"))
        for g in self.groups.values():
            try:
                g.store.close()
            except OSError as exc:
                # Nothing acknowledged depends on it: acknowledged entries were synced.
                log.error("closing the %s group's log failed: %s", g.name, exc)

    def _fail_pending(self, error: MetaUnavailable) -> None:
        for g in self.groups.values():
            for _, fut, _ in g.queued:
                _settle(fut, error=error)
            for _, fut, _ in g.proposals.values():
                _settle(fut, error=error)
            for _, fut in g.conf_queued:
                _settle(fut, error=error)
            for w in g.watchers:
                w.fail(error)
            for fut in g.snapshot_requests:
                _settle(fut, error=error)
            for _, _, fut in g.reads_queued + g.reads_ready:
                _settle(fut, error=error)
            for _, fut in g.reads_confirming.values():
                _settle(fut, error=error)
            g.queued, g.proposals, g.reads_queued, g.reads_ready = [], {}, [], []
            g.reads_confirming, g.conf_queued, g.watchers = {}, [], []
            g.snapshot_requests = []

    # -- input ------------------------------------------------------------------------
    def receive(self, messages: list[Message], from_node: int = 0, from_address: str = "") -> None:
        """Messages from peers, for any of this node's groups; ``from_address`` is where
        the sender listens, remembered if this node did not know it."""
        if self._stopping:
            return
        if from_address and from_node and from_node not in self.addresses:
            self._learn_address(from_node, from_address)
        self._inbox.extend(messages)
        self._wake.set()

    def _learn_address(self, node_id: int, address: str) -> None:
        if node_id != self.config.node_id and self.addresses.get(node_id) != address:
            self.addresses[node_id] = address
            self.transport.set_address(node_id, address)

    def _check_running(self) -> None:
        if self._failure is not None:
            raise MetaUnavailable(f"meta node {self.config.node_id} failed: {self._failure!r}")
        if self._stopping:
            raise MetaUnavailable(f"meta node {self.config.node_id} is stopping")

    def _group(self, name: str) -> _Group:
        g = self.groups.get(name)
        if g is None:
            raise UnknownMetaGroup(
                f"no meta group {name!r} on this node (groups: {sorted(self.groups)})"
            )
        return g

    def _not_leader(self, g: _Group) -> NotLeader:
        lead = g.node.lead
        return NotLeader(g.name, lead, self.addresses.get(lead, ""))

    async def propose(self, group: str, command: bytes, timeout: float | None = None) -> Any:
        """Replicate ``command`` and return the state machine's result once applied.

        Raises ``NotLeader`` at a follower, the state machine's ``MetaCommandError`` for a
        bad command, ``MetaTimeout`` when it is not applied in time (it may still be)."""
        g = self._group(group)
        self._check_running()
        if g.node.state != StateType.LEADER:
            raise self._not_leader(g)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        g.queued.append((command, fut, loop.time()))
        self._wake.set()
        return await self._wait(fut, timeout, f"proposal to group {group!r}")

    async def read(self, group: str, key: str, timeout: float | None = None) -> Any:
        """A linearizable read of ``key`` (ReadIndex, thesis §6.4), at the leader or a
        follower that knows one."""
        g = self._group(group)
        self._check_running()
        g.sm.read(key.partition("/")[0])  # a bad table is refused before any Raft work
        if g.node.lead == 0:
            raise self._not_leader(g)
        ctx = struct.pack("<QQ", self.config.node_id, next(self._read_ids))
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        g.reads_queued.append((ctx, key, fut))
        self._wake.set()
        return await self._wait(fut, timeout, f"read of {key!r} in group {group!r}")

    async def _wait(self, fut: asyncio.Future[Any], timeout: float | None, what: str) -> Any:
        # One heap swept by the loop instead of a timer per request: at tens of thousands
        # of proposals per second, asyncio.wait_for's timer handles cost a quarter of
        # the host's time. Expiry is checked at least once per tick.
        limit = self.config.proposal_timeout if timeout is None else timeout
        deadline = asyncio.get_running_loop().time() + limit
        heapq.heappush(self._deadlines, (deadline, next(self._deadline_ids), fut, what, limit))
        return await fut

    def _expire(self, now: float) -> None:
        heap = self._deadlines
        while heap and (heap[0][0] <= now or heap[0][2].done()):
            _, _, fut, what, limit = heapq.heappop(heap)
            _settle(fut, error=MetaTimeout(f"{what} did not complete within {limit} s"))

    def watch(self, group: str, from_index: int) -> Watch:
        """Every entry this node applies in ``group`` from ``from_index`` on, in order and
        once each (a snapshot first when that index is compacted away here); the caller
        takes them with ``next_events()`` and ends with ``close()``."""
        g = self._group(group)
        self._check_running()
        if g.removed:
            raise self._removed(g)
        w = Watch(g, max(from_index, 1), self._wake.set)
        g.watchers.append(w)
        self._wake.set()
        return w

    def membership(self, group: str) -> dict[str, list[int]]:
        cs = self._group(group).node.conf_state()
        return {"voters": list(cs.voters), "learners": list(cs.learners)}

    async def add_node(
        self, group: str, node_id: int, address: str, timeout: float | None = None
    ) -> dict[str, list[int]]:
        """Make ``node_id`` (listening at ``address``) a voter of ``group``: added as a
        learner, promoted once its log has caught up (thesis §4.2.1). At the leader;
        idempotent. ``MetaTimeout`` if it has not caught up in time (it stays a learner:
        adding it again resumes)."""
        if node_id <= 0:
            raise MembershipChangeRefused(f"node id {node_id}: not an integer > 0")
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise MembershipChangeRefused(f"address {address!r}: not host:port")
        g = self._leader_group(group)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.config.membership_timeout if timeout is None else timeout)
        context = address.encode()
        pr = g.node.raft.prs.get(node_id)
        if pr is None:
            await self._change(
                g, ConfChange(ConfChangeType.ADD_LEARNER, node_id, context), deadline
            )
        pr = g.node.raft.prs.get(node_id)
        if pr is None or pr.is_learner:
            await self._change(g, ConfChange(ConfChangeType.ADD_NODE, node_id, context), deadline)
        return self.membership(group)

    async def remove_node(
        self, group: str, node_id: int, timeout: float | None = None
    ) -> dict[str, list[int]]:
        """Take ``node_id`` out of ``group`` (at the leader; idempotent). The last voter
        cannot be removed."""
        g = self._leader_group(group)
        if node_id not in g.node.raft.prs:
            return self.membership(group)
        if g.node.raft.voters() == [node_id]:
            raise MembershipChangeRefused(f"node {node_id} is the last voter of {group!r}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.config.proposal_timeout if timeout is None else timeout)
        await self._change(g, ConfChange(ConfChangeType.REMOVE_NODE, node_id), deadline)
        return self.membership(group)

    def _leader_group(self, name: str) -> _Group:
        g = self._group(name)
        self._check_running()
        if g.node.state != StateType.LEADER:
            raise self._not_leader(g)
        return g

    async def _change(self, g: _Group, cc: ConfChange, deadline: float) -> None:
        """Propose ``cc`` until it is applied; retried while Raft refuses it for a reason
        that passes (a change pending, a learner not caught up yet)."""
        loop = asyncio.get_running_loop()
        while True:
            self._check_running()
            if g.node.state != StateType.LEADER:
                raise self._not_leader(g)
            fut: asyncio.Future[Any] = loop.create_future()
            g.conf_queued.append((cc, fut))
            self._wake.set()
            left = deadline - loop.time()
            try:
                await self._wait(
                    fut, max(left, 0.001), f"{cc.type.name} {cc.node_id} in {g.name!r}"
                )
                return
            except ProposalDropped as exc:
                if loop.time() >= deadline:
                    raise MetaTimeout(f"{cc.type.name} of node {cc.node_id}: {exc}") from None
                await asyncio.sleep(self.config.tick_interval)

    async def snapshot(self, group: str, timeout: float | None = None) -> int:
        """Snapshot ``group``'s state machine now and compact its log; the index."""
        g = self._group(group)
        self._check_running()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        g.snapshot_requests.append(fut)
        self._wake.set()
        index: int = await self._wait(fut, timeout, f"snapshot of group {group!r}")
        return index

    def status(self) -> list[dict[str, Any]]:
        out = []
        for g in self.groups.values():
            n = g.node
            cs = n.conf_state()
            out.append(
                {
                    "group": g.name,
                    "group_id": g.gid,
                    "role": n.state.name.lower(),
                    "leader_id": n.lead,
                    "leader_address": self.addresses.get(n.lead, ""),
                    "term": n.term,
                    "commit": n.committed,
                    "applied": n.applied,
                    "snapshot_index": g.snapshot_index,
                    "voters": list(cs.voters),
                    "learners": list(cs.learners),
                }
            )
        return out

    # -- the loop ---------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.tick_interval
        next_tick = loop.time() + interval
        while not self._stopping:
            # A group whose only member leads it has no one to send heartbeats to or hear
            # from: its ticks change nothing. When every group is one (a single node),
            # the loop sleeps until it is woken or a request's deadline comes, instead of
            # waking ten times a second for nothing.
            until: float | None = next_tick
            if all(g.node.state == StateType.LEADER and len(g.node.raft.prs) == 1
                   for g in self.groups.values()):  # fmt: skip
                until = self._deadlines[0][0] if self._deadlines else None
            if not self._wake.is_set() and (until is None or until > loop.time()):
                await self._sleep(until)
            self._wake.clear()
            if self._stopping:
                break
            now = loop.time()
            self._expire(now)
            if now >= next_tick:
                for g in self.groups.values():
                    g.node.tick()
                next_tick = max(next_tick + interval, now)
            try:
                self._step_inbox()
                self._hand_in_requests()
                await self._process_readies()
                for g in self.groups.values():
                    if g.watchers:
                        self._feed_watchers(g)
                await self._take_snapshots()
            except Exception as exc:
                # A Ready half persisted or half applied cannot be resumed (etcd-io/raft
                # panics here too): this node stops taking part until restarted, when
                # its log is recovered from disk.
                log.exception("meta raft failed on node %d; its groups stop", self.config.node_id)
                self._failure = exc
                self._stopping = True
                self._fail_pending(
                    MetaUnavailable(f"meta node {self.config.node_id} failed: {exc!r}")
                )

    async def _sleep(self, until: float | None) -> None:
        """Until woken, or until ``until`` (the loop's clock) when given."""
        handle = (
            None if until is None else asyncio.get_running_loop().call_at(until, self._wake.set)
        )
        try:
            await self._wake.wait()
        finally:
            if handle is not None:
                handle.cancel()

    def _step_inbox(self) -> None:
        inbox, self._inbox = self._inbox, []
        for m in inbox:
            g = self._by_gid.get(m.group)
            if g is None:
                log.warning("raft message for unknown group %d from node %d", m.group, m.from_)
                continue
            try:
                g.node.step(m)
            except RaftError as exc:
                log.warning("raft message refused by group %s: %s", g.name, exc)

    def _hand_in_requests(self) -> None:
        for g in self.groups.values():
            if g.queued:
                queued, g.queued = g.queued, []
                try:
                    g.node.propose_many([c for c, _, _ in queued])
                except ProposalDropped:
                    for _, fut, _ in queued:
                        _settle(fut, error=self._not_leader(g))
                else:
                    g.stats.proposals += len(queued)
                    # The leader appended them at the end of its log, in order.
                    last, term = g.node.raft.log.last_index(), g.node.term
                    for k, (_, fut, t0) in enumerate(queued):
                        self._track(g, last - len(queued) + 1 + k, term, fut, t0)
            if g.conf_queued:
                changes, g.conf_queued = g.conf_queued, []
                for cc, fut in changes:
                    if g.node.state != StateType.LEADER:
                        _settle(fut, error=self._not_leader(g))
                        continue
                    try:
                        g.node.propose_conf_change(cc)
                    except ProposalDropped as exc:
                        _settle(fut, error=exc)
                    else:
                        self._track(g, g.node.raft.log.last_index(), g.node.term, fut, 0.0)
            if g.reads_queued:
                reads, g.reads_queued = g.reads_queued, []
                for ctx, key, fut in reads:
                    try:
                        g.node.read_index(ctx)
                    except ProposalDropped:
                        _settle(fut, error=self._not_leader(g))
                    else:
                        g.reads_confirming[ctx] = (key, fut)

    def _track(self, g: _Group, index: int, term: int, fut: asyncio.Future[Any], t0: float) -> None:
        older = g.proposals.get(index)
        if older is not None:
            # An earlier term's proposal at this index was cut off the log.
            _settle(older[1], error=self._not_leader(g))
        g.proposals[index] = (term, fut, t0)

    async def _process_readies(self) -> None:
        """One round: the Readys of all groups persisted, sent, applied, advanced."""
        readies = [(g, g.node.ready()) for g in self.groups.values() if g.node.has_ready()]
        if not readies:
            return
        if any(rd.must_sync for _, rd in readies):
            await asyncio.to_thread(self._persist, readies)
        else:
            self._persist(readies)
        outgoing: dict[int, list[Message]] = defaultdict(list)
        for _, rd in readies:
            for m in rd.messages:
                outgoing[m.to].append(m)
        for to, msgs in outgoing.items():
            self.transport.send(to, msgs)
        for g, rd in readies:
            if rd.soft_state is not None and rd.soft_state.lead not in (0, g.lead):
                g.lead = rd.soft_state.lead
                g.stats.leader_changes += 1
            self._apply(g, rd)
            g.node.advance(rd)
            self._serve_reads(g)
            if g.watchers:
                self._feed_watchers(g)
        # Back to the loop's top for the next round, so that ticks and timeouts are not
        # starved under a steady stream of proposals.
        if any(g.node.has_ready() for g in self.groups.values()):
            self._wake.set()

    @staticmethod
    def _persist(readies: list[tuple[_Group, Ready]]) -> None:
        for g, rd in readies:
            if rd.hard_state is not None or rd.entries or rd.snapshot is not None:
                g.store.save(rd.hard_state, rd.entries, rd.snapshot, sync=rd.must_sync)

    def _apply(self, g: _Group, rd: Ready) -> None:
        if rd.snapshot is not None:
            book, data = unwrap_snapshot(rd.snapshot.data)
            g.sm.restore(data)
            for i, a in book.items():
                self._learn_address(i, a)
            g.snapshot_index = rd.snapshot.meta.index
            g.applied_bytes = 0
            for index in [i for i in g.proposals if i <= rd.snapshot.meta.index]:
                _settle(g.proposals.pop(index)[1], error=self._not_leader(g))
        watched = bool(g.watchers)
        now = asyncio.get_running_loop().time()
        stats = g.stats
        for e in rd.committed_entries:
            pending = g.proposals.pop(e.index, None)
            if e.type == EntryType.CONF_CHANGE:
                cc = ConfChange.decode(e.data)
                if cc.context and cc.type != ConfChangeType.REMOVE_NODE:
                    self._learn_address(cc.node_id, cc.context.decode())
                if cc.node_id == self.config.node_id:
                    g.removed = cc.type == ConfChangeType.REMOVE_NODE
                if pending is not None:
                    ok = pending[0] == e.term
                    _settle(pending[1], None, None if ok else self._not_leader(g))
                continue
            if not e.data:
                if pending is not None:
                    _settle(pending[1], error=self._not_leader(g))
                continue
            result: Any = None
            error: MetaCommandError | None = None
            g.applied_bytes += len(e.data)
            try:
                result = g.sm.apply(e.data)
            except MetaCommandError as exc:
                error = exc
            if watched:
                g.results[e.index] = (
                    (b"", type(error).__name__) if error else (orjson.dumps(result), "")
                )
            if pending is None:
                continue
            term, fut, t0 = pending
            if term != e.term:
                # Another leader's entry took this index: ours was never committed.
                _settle(fut, error=self._not_leader(g))
            else:
                _settle(fut, result, error)
                stats.commit_latency.record(0, int((now - t0) * 1e9))
        for rs in rd.read_states:
            confirmed = g.reads_confirming.pop(rs.context, None)
            if confirmed is not None:
                g.reads_ready.append((rs.index, *confirmed))

    def _serve_reads(self, g: _Group) -> None:
        if not g.reads_ready:
            return
        applied = g.node.applied
        waiting = []
        for index, key, fut in g.reads_ready:
            if index <= applied:
                _settle(fut, g.sm.read(key))
            else:
                waiting.append((index, key, fut))
        g.reads_ready = waiting

    def _feed_watchers(self, g: _Group) -> None:
        """Hand each watcher of ``g`` what was applied since its last event, up to
        ``WATCH_BUFFER`` held events; a watcher behind the log's first entry gets the
        snapshot first. Runs on the loop between persists, so the log is not being
        written meanwhile."""
        applied = g.node.applied
        first = g.store.first_index()
        for w in g.watchers:
            room = WATCH_BUFFER - len(w.events)
            if w.next_index > applied or room <= 0:
                continue
            out: list[WatchEvent] = []
            if w.next_index < first:
                snap = g.store.snapshot()
                _, data = unwrap_snapshot(snap.data)
                out.append(WatchEvent("snapshot", snap.meta.index, snap.meta.term, data))
                w.next_index = snap.meta.index + 1
            hi = min(applied, w.next_index + room - 1)
            if hi >= w.next_index:
                for e in g.store.entries(w.next_index, hi + 1, 1 << 62):
                    if e.type == EntryType.CONF_CHANGE:
                        out.append(WatchEvent("conf_change", e.index, e.term, e.data))
                    else:
                        result, error_kind = g.results.get(e.index, (b"", ""))
                        out.append(WatchEvent("entry", e.index, e.term, e.data, result, error_kind))
                w.next_index = hi + 1
            if out:
                w.push(out)
        if g.removed:
            # This node applies nothing more of the group: streams that are through end,
            # so that their clients go on at a member.
            for w in [w for w in g.watchers if w.next_index > applied]:
                w.fail(self._removed(g))
                g.watchers.remove(w)
        g.results.clear()

    def _removed(self, g: _Group) -> MetaUnavailable:
        return MetaUnavailable(f"node {self.config.node_id} was removed from group {g.name!r}")

    async def _take_snapshots(self) -> None:
        """Snapshot the groups that applied ``snapshot_entries`` or ``snapshot_bytes``
        since their last one, or were asked to. The state machine is serialized here, at
        the applied index; the files are written and the log compacted in a worker thread
        (two fsyncs and the deletion of segments would stall the loop for tens of
        milliseconds), while proposals keep queueing for the next round. Watchers were
        fed before: a compaction only catches those that fell behind."""
        due = [
            g
            for g in self.groups.values()
            if g.snapshot_requests
            or g.node.applied - g.snapshot_index >= self.config.snapshot_entries
            or g.applied_bytes >= self.config.snapshot_bytes
        ]
        if not due:
            return
        jobs = [
            (g, g.node.applied, g.node.conf_state(), wrap_snapshot(self.addresses, g.sm.snapshot()))
            for g in due
            if g.node.applied > g.snapshot_index
        ]
        if jobs:
            await asyncio.to_thread(self._write_snapshots, jobs)
            # The state machines' records live until overwritten: keep them out of the
            # cyclic collector's full passes, which otherwise walk every record (tens of
            # milliseconds at a hundred thousand, a stall every proposal would wait
            # out). The young generations are collected first, so that no garbage
            # cycle is frozen with them; records are freed by reference counting.
            gc.collect(1)
            gc.freeze()
        for g in due:
            requests, g.snapshot_requests = g.snapshot_requests, []
            for fut in requests:
                _settle(fut, g.snapshot_index)

    @staticmethod
    def _write_snapshots(jobs: list[tuple[_Group, int, ConfState, bytes]]) -> None:
        for g, index, conf_state, data in jobs:
            g.store.create_snapshot(index, conf_state, data)
            g.snapshot_index = index
            g.applied_bytes = 0


class InMemoryNetwork:
    """Hosts of one process wired together for tests and benchmarks.

    Messages go through the same byte encoding as gRPC (``meta/codec.py``) and are
    delivered on the next loop iteration; a host that is ``disconnect``ed neither sends nor
    receives. ``transport(node_id)`` is the ``Transport`` a host is built with.
    """

    def __init__(self) -> None:
        self.hosts: dict[int, MultiRaftHost] = {}
        self.disconnected: set[int] = set()

    def transport(self, node_id: int) -> Transport:
        return _InMemoryTransport(self, node_id)

    def connect(self, host: MultiRaftHost) -> None:
        self.hosts[host.config.node_id] = host
        self.disconnected.discard(host.config.node_id)

    def disconnect(self, node_id: int) -> None:
        self.disconnected.add(node_id)

    def deliver(self, from_: int, to: int, messages: list[Message]) -> None:
        host = self.hosts.get(to)
        if host is None or from_ in self.disconnected or to in self.disconnected:
            return
        wire = [encode_message(m) for m in messages]
        deliver: Callable[[list[Message]], None] = host.receive
        asyncio.get_running_loop().call_soon(deliver, [decode_message(b) for b in wire])


class _InMemoryTransport:
    def __init__(self, network: InMemoryNetwork, node_id: int) -> None:
        self.network = network
        self.node_id = node_id

    def send(self, to: int, messages: list[Message]) -> None:
        self.network.deliver(self.node_id, to, messages)

    def set_address(self, node_id: int, address: str) -> None:
        """Hosts of one network are reached by node id; addresses do not matter."""
