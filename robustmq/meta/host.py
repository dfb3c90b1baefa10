"""The Multi-Raft host: several Raft groups of one node driven by one asyncio loop.

``MultiRaftHost`` owns, per group, a ``RawNode``, its ``LogStore`` (under
``<data_dir>/meta/<group>/``) and its state machine. One task does everything the Raft core
asks (``robustmq/meta/raft/rawnode.py``): one shared tick timer for all groups, incoming
messages stepped into the group they name, queued proposals and reads handed to the core,
then per round the Readys of all groups: persisted (one fsync per group with its group
commit, in a worker thread so the loop keeps serving), sent (all groups' messages to one
peer in one ``Transport.send`` call), applied, advanced. ``propose`` returns when its entry
is applied, with the state machine's result or error; ``read`` is linearizable through
ReadIndex. Every ``snapshot_entries`` applied entries a group snapshots its state machine
and compacts its log. The network is behind ``Transport`` (``InMemoryNetwork`` here for
tests, gRPC in ``robustmq/meta/transport.py``); state machines are in ``meta/groups``.
"""

from __future__ import annotations

import asyncio
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

from robustmq.errors import (
    ConfigError,
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
from robustmq.meta.raft import Config, EntryType, Message, RawNode, Ready, StateType
from robustmq.meta.raft.log_store import LogStore

log = logging.getLogger("robustmq.meta")


class Transport(Protocol):
    """Fire-and-forget delivery of Raft messages; Raft itself recovers from loss."""

    def send(self, to: int, messages: list[Message]) -> None: ...


@dataclass(frozen=True, kw_only=True)
class HostConfig:
    """Settings of one node's Multi-Raft host."""

    node_id: int
    """This node's id (> 0), the same in every group."""
    peers: tuple[tuple[int, str], ...]
    """Every voter of the groups as (node id, gRPC address), this node included."""
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
    snapshot_entries: int = 10_000
    """Applied entries between two snapshots (and log compactions) of a group."""
    proposal_timeout: float = 5.0
    """Seconds a ``propose`` or ``read`` waits before raising ``MetaTimeout``."""

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
        if self.proposal_timeout <= 0:
            raise ConfigError("meta.proposal_timeout", self.proposal_timeout, "seconds > 0")

    @property
    def addresses(self) -> dict[int, str]:
        return dict(self.peers)


@dataclass
class _Group:
    name: str
    gid: int
    node: RawNode
    store: LogStore
    sm: StateMachine
    snapshot_index: int
    queued: list[tuple[bytes, asyncio.Future[Any]]] = field(default_factory=list)
    proposals: dict[int, tuple[int, asyncio.Future[Any]]] = field(default_factory=dict)
    reads_queued: list[tuple[bytes, str, asyncio.Future[Any]]] = field(default_factory=list)
    reads_confirming: dict[bytes, tuple[str, asyncio.Future[Any]]] = field(default_factory=dict)
    reads_ready: list[tuple[int, str, asyncio.Future[Any]]] = field(default_factory=list)


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
        voters = tuple(p[0] for p in config.peers)
        for name in config.groups:
            gid, sm_class = GROUPS[name]
            store = LogStore(os.path.join(config.data_dir, "meta", name))
            sm = sm_class()
            snap = store.snapshot()
            if not snap.is_empty():
                sm.restore(snap.data)
            raft_config = Config(
                id=config.node_id,
                peers=voters,
                group=gid,
                election_tick=config.election_tick,
                heartbeat_tick=config.heartbeat_tick,
            )
            node = RawNode(raft_config, store, random.Random(config.node_id * 1000 + gid))
            g = _Group(name, gid, node, store, sm, snap.meta.index)
            self.groups[name] = g
            self._by_gid[gid] = g

    # -- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        # Persist and apply a new group's bootstrap membership entries (and, on restart,
        # what the log already commits) before serving.
        await self._drain()
        if len(self.config.peers) == 1:
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
            for _, fut in g.queued:
                _settle(fut, error=error)
            for _, fut in g.proposals.values():
                _settle(fut, error=error)
            for _, _, fut in g.reads_queued + g.reads_ready:
                _settle(fut, error=error)
            for _, fut in g.reads_confirming.values():
                _settle(fut, error=error)
            g.queued, g.proposals, g.reads_queued, g.reads_ready = [], {}, [], []
            g.reads_confirming = {}

    # -- input ------------------------------------------------------------------------
    def receive(self, messages: list[Message]) -> None:
        """Messages from peers, for any of this node's groups."""
        if self._stopping:
            return
        self._inbox.extend(messages)
        self._wake.set()

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
        return NotLeader(g.name, lead, self.config.addresses.get(lead, ""))

    async def propose(self, group: str, command: bytes, timeout: float | None = None) -> Any:
        """Replicate ``command`` and return the state machine's result once applied.

        Raises ``NotLeader`` at a follower, the state machine's ``MetaCommandError`` for a
        bad command, ``MetaTimeout`` when it is not applied in time (it may still be)."""
        g = self._group(group)
        self._check_running()
        if g.node.state != StateType.LEADER:
            raise self._not_leader(g)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        g.queued.append((command, fut))
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

    def status(self) -> list[dict[str, Any]]:
        out = []
        for g in self.groups.values():
            n = g.node
            out.append(
                {
                    "group": g.name,
                    "group_id": g.gid,
                    "role": n.state.name.lower(),
                    "leader_id": n.lead,
                    "leader_address": self.config.addresses.get(n.lead, ""),
                    "term": n.term,
                    "commit": n.committed,
                    "applied": n.applied,
                    "snapshot_index": g.snapshot_index,
                }
            )
        return out

    # -- the loop ---------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.tick_interval
        next_tick = loop.time() + interval
        while not self._stopping:
            delay = next_tick - loop.time()
            if delay > 0 and not self._wake.is_set():
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except TimeoutError:
                    pass
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
                    g.node.propose_many([c for c, _ in queued])
                except ProposalDropped:
                    for _, fut in queued:
                        _settle(fut, error=self._not_leader(g))
                else:
                    # The leader appended them at the end of its log, in order.
                    last, term = g.node.raft.log.last_index(), g.node.term
                    for k, (_, fut) in enumerate(queued):
                        index = last - len(queued) + 1 + k
                        older = g.proposals.get(index)
                        if older is not None:
                            # An earlier term's proposal at this index was cut off the log.
                            _settle(older[1], error=self._not_leader(g))
                        g.proposals[index] = (term, fut)
            if g.reads_queued:
                reads, g.reads_queued = g.reads_queued, []
                for ctx, key, fut in reads:
                    try:
                        g.node.read_index(ctx)
                    except ProposalDropped:
                        _settle(fut, error=self._not_leader(g))
                    else:
                        g.reads_confirming[ctx] = (key, fut)

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
            self._apply(g, rd)
            g.node.advance(rd)
            self._serve_reads(g)
            self._maybe_snapshot(g)
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
            g.sm.restore(rd.snapshot.data)
            g.snapshot_index = rd.snapshot.meta.index
            for index in [i for i in g.proposals if i <= rd.snapshot.meta.index]:
                _settle(g.proposals.pop(index)[1], error=self._not_leader(g))
        for e in rd.committed_entries:
            pending = g.proposals.pop(e.index, None)
            if e.type != EntryType.NORMAL or not e.data:
                if pending is not None:
                    _settle(pending[1], error=self._not_leader(g))
                continue
            result: Any = None
            error: MetaCommandError | None = None
            try:
                result = g.sm.apply(e.data)
            except MetaCommandError as exc:
                error = exc
            if pending is None:
                continue
            term, fut = pending
            if term != e.term:
                # Another leader's entry took this index: ours was never committed.
                _settle(fut, error=self._not_leader(g))
            else:
                _settle(fut, result, error)
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

    def _maybe_snapshot(self, g: _Group) -> None:
        applied = g.node.applied
        if applied - g.snapshot_index >= self.config.snapshot_entries:
            g.store.create_snapshot(applied, g.node.conf_state(), g.sm.snapshot())
            g.snapshot_index = applied


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
