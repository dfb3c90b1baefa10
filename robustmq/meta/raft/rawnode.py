"""The caller's handle on one Raft group member: ``RawNode`` (etcd-io/raft ``rawnode.go``).

The caller drives it in a loop: feed ``tick()`` on a timer and ``step()`` with messages
from peers; whenever ``has_ready()``, take ``ready()``, persist its hard state, entries and
snapshot (one fsync when ``must_sync``), send its messages, apply its snapshot and
committed entries, then ``advance(ready)``. Several RawNodes (one per group) can share one
thread, one transport and one disk; none of that lives here. Membership changes take
effect inside the core when their entry is applied (on ``advance``).
"""

from __future__ import annotations

import random

from robustmq.errors import ProposalDropped, RaftError
from robustmq.meta.raft.core import Config, Raft
from robustmq.meta.raft.storage import Storage
from robustmq.meta.raft.types import (
    LOCAL_MESSAGES,
    NONE,
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Ready,
    StateType,
)


class RawNode:
    def __init__(self, config: Config, storage: Storage, rng: random.Random) -> None:
        self.raft = Raft(config, storage, rng)
        self._prev_soft = self.raft.soft_state()
        # From what is on disk, so that a bootstrap's hard state goes out in a Ready.
        self._prev_hard = storage.initial_state()[0]

    # -- input ------------------------------------------------------------------------
    def tick(self) -> None:
        self.raft.tick()

    def campaign(self) -> None:
        """Start an election now instead of waiting for the election timeout."""
        self.raft.step(Message(MessageType.HUP, from_=self.raft.id))

    def step(self, m: Message) -> None:
        """Feed a message received from a peer; local message types are refused."""
        if m.type in LOCAL_MESSAGES:
            raise RaftError(f"{m.type.name} is a local message and cannot be stepped")
        if m.to != self.raft.id:
            raise RaftError(f"message for node {m.to} stepped into node {self.raft.id}")
        if m.from_ not in self.raft.prs and m.type in (
            MessageType.APP_RESP,
            MessageType.HEARTBEAT_RESP,
        ):
            return  # a response from a node no longer in the group
        self.raft.step(m)

    def propose(self, data: bytes) -> None:
        """Append a command; raises ``ProposalDropped`` unless this node is the leader."""
        self.raft.step(
            Message(MessageType.PROP, from_=self.raft.id, entries=[Entry(0, 0, data=data)])
        )

    def propose_many(self, commands: list[bytes]) -> None:
        """Append several commands in one step (fewer Python calls than ``propose``)."""
        ents = [Entry(0, 0, data=d) for d in commands]
        self.raft.step(Message(MessageType.PROP, from_=self.raft.id, entries=ents))

    def propose_conf_change(self, cc: ConfChange) -> None:
        """Propose one membership change; one may be pending at a time."""
        entry = Entry(0, 0, EntryType.CONF_CHANGE, cc.encode())
        self.raft.step(Message(MessageType.PROP, from_=self.raft.id, entries=[entry]))

    def read_index(self, ctx: bytes) -> None:
        """Ask for a linearizable read; a ``ReadState`` with ``ctx`` comes in a Ready.

        ``ctx`` must be unique among reads in flight. The read is dropped silently if
        leadership changes before it is confirmed (the caller retries on a timeout).
        """
        if not ctx:
            raise ProposalDropped("a read index request needs a non-empty context")
        self.raft.step(Message(MessageType.READ_INDEX, from_=self.raft.id, context=ctx))

    def transfer_leader(self, to: int) -> None:
        """Ask the leader to hand leadership to ``to`` (thesis §3.10); best effort: it is
        abandoned after an election timeout."""
        if self.raft.lead == NONE:
            raise ProposalDropped("no leader to transfer leadership from")
        self.raft.step(Message(MessageType.TRANSFER_LEADER, from_=to))

    def report_unreachable(self, node: int) -> None:
        self.raft.step(Message(MessageType.UNREACHABLE, from_=node))

    def report_snapshot(self, node: int, failed: bool) -> None:
        self.raft.step(Message(MessageType.SNAP_STATUS, from_=node, reject=failed))

    # -- state ------------------------------------------------------------------------
    @property
    def id(self) -> int:
        return self.raft.id

    @property
    def state(self) -> StateType:
        return self.raft.state

    @property
    def lead(self) -> int:
        return self.raft.lead

    @property
    def term(self) -> int:
        return self.raft.term

    @property
    def committed(self) -> int:
        return self.raft.log.committed

    @property
    def applied(self) -> int:
        return self.raft.log.applied

    def conf_state(self) -> ConfState:
        """Membership as of the applied index (what a snapshot taken now must record)."""
        return self.raft.conf_state()

    # -- output -----------------------------------------------------------------------
    def has_ready(self) -> bool:
        r = self.raft
        if r.msgs or r.read_states or r.log.unstable.entries or r.log.unstable.snapshot:
            return True
        if r.soft_state() != self._prev_soft:
            return True
        hs = r.hard_state()
        if hs != self._prev_hard and hs != HardState():
            return True
        return r.log.has_next_committed_ents()

    def ready(self) -> Ready:
        r = self.raft
        rd = Ready(
            entries=r.log.unstable_entries(),
            committed_entries=r.log.next_committed_ents(),
            messages=r.msgs,
            read_states=r.read_states,
            snapshot=r.log.unstable.snapshot,
        )
        r.msgs = []
        r.read_states = []
        soft = r.soft_state()
        if soft != self._prev_soft:
            rd.soft_state = soft
            self._prev_soft = soft
        hs = r.hard_state()
        if hs != self._prev_hard:
            rd.hard_state = hs
        rd.must_sync = bool(rd.entries) or (
            hs.term != self._prev_hard.term or hs.vote != self._prev_hard.vote
        )
        return rd

    def advance(self, rd: Ready) -> None:
        """Tell the core that ``rd`` was persisted, sent and applied."""
        r = self.raft
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        if rd.snapshot is not None:
            r.log.stable_snap_to(rd.snapshot.meta.index)
            r.log.applied_to(max(r.log.applied, rd.snapshot.meta.index))
        if rd.entries:
            last = rd.entries[-1]
            r.log.stable_to(last.index, last.term)
        if rd.committed_entries:
            for e in rd.committed_entries:
                if e.type == EntryType.CONF_CHANGE:
                    r.apply_conf_change(ConfChange.decode(e.data))
            r.log.applied_to(rd.committed_entries[-1].index)
