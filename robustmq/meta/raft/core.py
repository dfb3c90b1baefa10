"""The Raft algorithm of one group member, as a pure state machine.

``Raft`` takes time as ``tick()`` and input as ``step(message)`` and only appends to
``self.msgs`` and to its in-memory log: no sockets, clocks, files or global randomness
(the election-timeout jitter comes from a ``random.Random`` the caller seeds). It follows
the Raft paper and the shape of etcd-io/raft ``raft.go``: PreVote and CheckQuorum
(Ongaro's thesis §9.6 and §6.2), pipelined replication with per-follower progress, fast
log backtracking, snapshots, single-server membership changes with learners (thesis §4.1),
leadership transfer (§3.10) and ReadIndex (§6.4). Collecting the output into a ``Ready``
and the caller's loop live in ``rawnode.py``; configuration is ``Config`` below.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass

from robustmq.errors import (
    ConfigError,
    ProposalDropped,
    RaftCompacted,
    RaftError,
    RaftUnavailable,
)
from robustmq.meta.raft.log import RaftLog
from robustmq.meta.raft.progress import Progress, ProgressState
from robustmq.meta.raft.storage import Storage
from robustmq.meta.raft.types import (
    NONE,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Snapshot,
    SoftState,
    StateType,
)

MT = MessageType
# Context of a vote request that comes from a leadership transfer: it must win even
# against followers that still hear from the current leader.
CAMPAIGN_TRANSFER = b"transfer"


@dataclass(frozen=True, kw_only=True)
class Config:
    """Settings of one Raft group member (names as in etcd-io/raft ``Config``)."""

    id: int
    """This member's node id (> 0)."""
    peers: tuple[int, ...] = ()
    """Initial voters, used only when the storage is empty (a new group): they become
    committed membership entries at indexes 1..n, so every log, including that of a
    node that joins later, holds the whole membership history. Ignored when the log is
    not empty. Empty for a node that joins later; an initial member must always be given
    them, or after losing its log it could apply "add me" alone and elect itself."""
    group: int = 0
    """Group id copied onto every outgoing message, for multi-group transports."""
    election_tick: int = 10
    """Ticks without hearing from a leader before campaigning (randomized up to 2x)."""
    heartbeat_tick: int = 1
    """Ticks between leader heartbeats; must be less than ``election_tick``."""
    applied: int = 0
    """Last index already applied to the state machine on restart (0: snapshot index)."""
    max_size_per_msg: int = 1 << 20
    """Byte budget of entries per AppendEntries message (at least one entry is sent)."""
    max_committed_size_per_ready: int = 1 << 24
    """Byte budget of committed entries handed out per Ready."""
    max_inflight_msgs: int = 256
    """AppendEntries messages in flight per follower while replicating (pipelining)."""
    pre_vote: bool = True
    """Run a PreVote round before raising the term (thesis §9.6)."""
    check_quorum: bool = True
    """Leader steps down without recent contact from a quorum; followers in contact with
    a leader ignore (pre)votes (thesis §6.2, §4.2.3)."""

    def __post_init__(self) -> None:
        if self.id <= 0:
            raise ConfigError("raft.id", self.id, "an integer > 0")
        if self.heartbeat_tick < 1:
            raise ConfigError("raft.heartbeat_tick", self.heartbeat_tick, "an integer >= 1")
        if self.election_tick <= self.heartbeat_tick:
            raise ConfigError(
                "raft.election_tick", self.election_tick, f"an integer > {self.heartbeat_tick}"
            )
        if any(p <= 0 for p in self.peers) or len(set(self.peers)) != len(self.peers):
            raise ConfigError("raft.peers", self.peers, "distinct node ids > 0")
        if self.applied < 0:
            raise ConfigError("raft.applied", self.applied, "an integer >= 0")
        if self.max_size_per_msg < 1:
            raise ConfigError("raft.max_size_per_msg", self.max_size_per_msg, ">= 1")
        if self.max_committed_size_per_ready < 1:
            raise ConfigError(
                "raft.max_committed_size_per_ready", self.max_committed_size_per_ready, ">= 1"
            )
        if self.max_inflight_msgs < 1:
            raise ConfigError("raft.max_inflight_msgs", self.max_inflight_msgs, ">= 1")


class _ReadRequest:
    __slots__ = ("acks", "context", "from_", "index")

    def __init__(self, index: int, context: bytes, from_: int) -> None:
        self.index = index
        self.context = context
        self.from_ = from_
        self.acks: set[int] = set()


class Raft:
    def __init__(self, config: Config, storage: Storage, rng: random.Random) -> None:
        self.id = config.id
        self.config = config
        self.rng = rng
        self.log = RaftLog(storage, config.max_committed_size_per_ready)
        hs, cs = storage.initial_state()
        self.term = 0
        self.vote = NONE
        self.lead = NONE
        self.state = StateType.FOLLOWER
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.prs: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = config.election_tick
        self.lead_transferee = NONE
        self.pending_conf_index = 0
        self.pending_reads: OrderedDict[bytes, _ReadRequest] = OrderedDict()
        self.reads_waiting_commit: list[Message] = []
        self._apply_conf_state(cs)
        if hs != HardState():
            if hs.commit > self.log.last_index():
                raise RaftError(
                    f"hard state commit {hs.commit} is beyond the last index "
                    f"{self.log.last_index()}: entries were lost"
                )
            # A commit index below the snapshot is stale, not wrong: the snapshot wins.
            self.log.committed = max(hs.commit, self.log.committed)
            self.term = hs.term
            self.vote = hs.vote
        if config.applied:
            self.log.applied_to(config.applied)
            # Membership changes the caller applied before the restart are not handed
            # out again, but the configuration must include them.
            first = self.log.first_index()
            for e in self.log.slice(first, max(first, config.applied + 1), 1 << 62):
                if e.type == EntryType.CONF_CHANGE:
                    self.apply_conf_change(ConfChange.decode(e.data))
        if config.peers and storage.last_index() == 0 and hs == HardState() and not self.prs:
            self._bootstrap(config.peers)
        self.become_follower(self.term, NONE)

    def _bootstrap(self, peers: tuple[int, ...]) -> None:
        # As etcd-io/raft Bootstrap: committed conf changes in term 1, persisted and
        # applied by the caller through the first Ready like any other entry.
        ents = [
            Entry(1, k + 1, EntryType.CONF_CHANGE, ConfChange(ConfChangeType.ADD_NODE, p).encode())
            for k, p in enumerate(peers)
        ]
        self.log.append(ents)
        self.log.committed = len(ents)
        self.term = 1
        for p in peers:
            self.prs[p] = Progress(self.log.last_index() + 1, self.config.max_inflight_msgs)

    # -- state ------------------------------------------------------------------------
    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    def soft_state(self) -> SoftState:
        return SoftState(self.lead, self.state)

    def conf_state(self) -> ConfState:
        voters = tuple(sorted(i for i, p in self.prs.items() if not p.is_learner))
        learners = tuple(sorted(i for i, p in self.prs.items() if p.is_learner))
        return ConfState(voters, learners)

    def voters(self) -> list[int]:
        return [i for i, p in self.prs.items() if not p.is_learner]

    def quorum(self) -> int:
        return len(self.voters()) // 2 + 1

    def promotable(self) -> bool:
        pr = self.prs.get(self.id)
        return pr is not None and not pr.is_learner and self.log.unstable.snapshot is None

    def _apply_conf_state(self, cs: ConfState) -> None:
        nxt = self.log.last_index() + 1
        mi = self.config.max_inflight_msgs
        self.prs = {i: Progress(nxt, mi) for i in cs.voters}
        for i in cs.learners:
            self.prs[i] = Progress(nxt, mi, is_learner=True)

    # -- sending ----------------------------------------------------------------------
    def send(self, m: Message) -> None:
        m.from_ = self.id
        m.group = self.config.group
        # Vote requests carry the term they campaign for; vote responses carry the term
        # of the request (etcd-io/raft send()); everything else carries ours.
        if m.type not in (MT.VOTE, MT.PRE_VOTE, MT.VOTE_RESP, MT.PRE_VOTE_RESP):
            m.term = self.term
        self.msgs.append(m)

    def send_append(self, to: int, send_if_empty: bool = True) -> bool:
        pr = self.prs[to]
        if pr.is_paused():
            return False
        try:
            prev_term = self.log.term(pr.next - 1)
            ents = self.log.entries(pr.next, self.config.max_size_per_msg)
        except RaftCompacted:
            return self._send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        self.send(
            Message(
                MT.APP,
                to=to,
                index=pr.next - 1,
                log_term=prev_term,
                entries=ents,
                commit=self.log.committed,
            )
        )
        if ents:
            last = ents[-1].index
            if pr.state == ProgressState.REPLICATE:
                pr.next = last + 1
                pr.inflights.add(last)
            elif pr.state == ProgressState.PROBE:
                pr.probe_sent = True
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False
        try:
            snap = self.log.snapshot()
        except RaftUnavailable:
            return False
        if snap.is_empty():
            raise RaftError("a compacted log needs a snapshot, but the snapshot is empty")
        pr.become_snapshot(snap.meta.index)
        self.send(Message(MT.SNAP, to=to, snapshot=snap))
        return True

    def send_heartbeat(self, to: int, ctx: bytes) -> None:
        # Never tell a follower to commit past what it is known to have (etcd-io/raft).
        commit = min(self.prs[to].match, self.log.committed)
        self.send(Message(MT.HEARTBEAT, to=to, commit=commit, context=ctx))

    def bcast_append(self) -> None:
        for i in self.prs:
            if i != self.id:
                self.send_append(i)

    def bcast_heartbeat(self, ctx: bytes = b"") -> None:
        for i in self.prs:
            if i != self.id:
                self.send_heartbeat(i, ctx)

    # -- commit -----------------------------------------------------------------------
    def maybe_commit(self) -> bool:
        matches = sorted((self.prs[i].match for i in self.voters()), reverse=True)
        if not matches:
            return False
        mci = matches[self.quorum() - 1]
        if self.log.maybe_commit(mci, self.term):
            self._release_reads_waiting_commit()
            return True
        return False

    def committed_entry_in_current_term(self) -> bool:
        try:
            return self.log.term(self.log.committed) == self.term
        except RaftCompacted:
            return False

    # -- transitions ------------------------------------------------------------------
    def reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.config.election_tick + self.rng.randrange(
            self.config.election_tick
        )
        self.lead_transferee = NONE
        self.votes = {}
        nxt = self.log.last_index() + 1
        for i, pr in self.prs.items():
            fresh = Progress(nxt, self.config.max_inflight_msgs, pr.is_learner)
            if i == self.id:
                fresh.match = self.log.last_index()
            self.prs[i] = fresh
        self.pending_conf_index = 0
        self.pending_reads.clear()
        self.reads_waiting_commit.clear()

    def become_follower(self, term: int, lead: int) -> None:
        self.reset(term)
        self.lead = lead
        self.state = StateType.FOLLOWER

    def become_candidate(self) -> None:
        if self.state == StateType.LEADER:
            raise RaftError("invalid transition leader -> candidate")
        self.reset(self.term + 1)
        self.vote = self.id
        self.state = StateType.CANDIDATE

    def become_pre_candidate(self) -> None:
        if self.state == StateType.LEADER:
            raise RaftError("invalid transition leader -> pre-candidate")
        # PreVote does not change the term or the vote (thesis §9.6).
        self.votes = {}
        self.lead = NONE
        self.state = StateType.PRE_CANDIDATE

    def become_leader(self) -> None:
        if self.state == StateType.FOLLOWER:
            raise RaftError("invalid transition follower -> leader")
        self.reset(self.term)
        self.lead = self.id
        self.state = StateType.LEADER
        for pr in self.prs.values():
            pr.recent_active = True
        self.prs[self.id].become_replicate()
        self.append_entries([Entry(self.term, 0)])
        # No conf change until this term's first entry is applied (so committed): the fix
        # for the single-server change bug (Ongaro, raft-dev 2015).
        self.pending_conf_index = self.log.last_index()

    def append_entries(self, ents: list[Entry]) -> None:
        li = self.log.last_index()
        ents = [Entry(self.term, li + 1 + k, e.type, e.data) for k, e in enumerate(ents)]
        li = self.log.append(ents)
        self.prs[self.id].maybe_update(li)
        self.maybe_commit()

    def campaign(self, transfer: bool, pre: bool) -> None:
        if not self.promotable():
            return
        if pre:
            self.become_pre_candidate()
            vote_type, term = MT.PRE_VOTE, self.term + 1
        else:
            self.become_candidate()
            vote_type, term = MT.VOTE, self.term
        self.votes[self.id] = True
        if self._tally() == 1:
            if pre:
                self.campaign(transfer, pre=False)
            else:
                self.become_leader()
            return
        ctx = CAMPAIGN_TRANSFER if transfer else b""
        li, lt = self.log.last_index(), self.log.last_term()
        for i in self.voters():
            if i != self.id:
                self.send(Message(vote_type, to=i, term=term, index=li, log_term=lt, context=ctx))

    def _tally(self) -> int:
        """1: won, -1: lost, 0: undecided."""
        voters = self.voters()
        granted = sum(1 for i in voters if self.votes.get(i) is True)
        rejected = sum(1 for i in voters if self.votes.get(i) is False)
        q = self.quorum()
        if granted >= q:
            return 1
        if rejected > len(voters) - q:
            return -1
        return 0

    def _has_unapplied_conf_change(self) -> bool:
        if self.log.committed <= self.log.applied:
            return False
        ents = self.log.slice(self.log.applied + 1, self.log.committed + 1, 1 << 62)
        return any(e.type == EntryType.CONF_CHANGE for e in ents)

    # -- time -------------------------------------------------------------------------
    def tick(self) -> None:
        if self.state == StateType.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.randomized_election_timeout:
            self.election_elapsed = 0
            self.step(Message(MT.HUP, from_=self.id))

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        for i, pr in self.prs.items():
            if i != self.id and pr.state == ProgressState.SNAPSHOT:
                # No acknowledgement within an election timeout: the snapshot was lost.
                pr.snapshot_elapsed += 1
                if pr.snapshot_elapsed >= self.config.election_tick:
                    pr.become_probe()
        if self.election_elapsed >= self.config.election_tick:
            self.election_elapsed = 0
            if self.config.check_quorum:
                self.step(Message(MT.CHECK_QUORUM, from_=self.id))
            if self.state == StateType.LEADER and self.lead_transferee != NONE:
                self.lead_transferee = NONE  # the transfer did not finish in time
        if self.state != StateType.LEADER:
            return
        if self.heartbeat_elapsed >= self.config.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self.step(Message(MT.BEAT, from_=self.id))

    # -- input ------------------------------------------------------------------------
    def step(self, m: Message) -> None:
        if m.term == 0:
            pass  # local message
        elif m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (
                    self.config.check_quorum
                    and self.lead != NONE
                    and self.election_elapsed < self.config.election_tick
                )
                if not force and in_lease:
                    # Thesis §4.2.3: we heard from a leader recently; a node that was cut
                    # off and comes back must not disrupt the group.
                    return
            if m.type == MT.PRE_VOTE:
                pass  # never change our term in response to a PreVote
            elif m.type == MT.PRE_VOTE_RESP and not m.reject:
                pass  # the term we pre-campaigned for; we raise it only when we win
            elif m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP):
                self.become_follower(m.term, m.from_)
            else:
                self.become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.config.check_quorum or self.config.pre_vote) and m.type in (
                MT.HEARTBEAT,
                MT.APP,
            ):
                # A stale leader cut off by a partition: our response makes it step down
                # (otherwise, with PreVote, nobody would ever raise its term).
                self.send(Message(MT.APP_RESP, to=m.from_))
            elif m.type == MT.PRE_VOTE:
                self.send(Message(MT.PRE_VOTE_RESP, to=m.from_, term=self.term, reject=True))
            return

        t = m.type
        if t == MT.HUP:
            self._hup(transfer=False)
        elif t in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.state == StateType.LEADER:
            self._step_leader(m)
        elif self.state == StateType.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _hup(self, transfer: bool) -> None:
        if self.state == StateType.LEADER:
            return
        if self._has_unapplied_conf_change():
            return  # campaign only with the configuration the log will end up with
        self.campaign(transfer, pre=self.config.pre_vote and not transfer)

    def _handle_vote_request(self, m: Message) -> None:
        can_vote = (
            self.vote == m.from_
            or (self.vote == NONE and self.lead == NONE)
            or (m.type == MT.PRE_VOTE and m.term > self.term)
        )
        resp = MT.VOTE_RESP if m.type == MT.VOTE else MT.PRE_VOTE_RESP
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            self.send(Message(resp, to=m.from_, term=m.term))
            if m.type == MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.from_
        else:
            self.send(Message(resp, to=m.from_, term=self.term, reject=True))

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == MT.BEAT:
            self.bcast_heartbeat()
            return
        if t == MT.CHECK_QUORUM:
            active = sum(
                1
                for i, other in self.prs.items()
                if not other.is_learner and (i == self.id or other.recent_active)
            )
            if active < self.quorum():
                self.become_follower(self.term, NONE)
                return
            for i, other in self.prs.items():
                if i != self.id:
                    other.recent_active = False
            return
        if t == MT.PROP:
            self._propose(m)
            return
        if t == MT.READ_INDEX:
            self._leader_read_index(m)
            return
        pr = self.prs.get(m.from_)
        if pr is None:
            return
        if t == MT.APP_RESP:
            self._handle_append_response(m, pr)
        elif t == MT.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state == ProgressState.REPLICATE and pr.inflights.full():
                pr.inflights.free_first_one()
            if pr.match < self.log.last_index():
                self.send_append(m.from_)
            if m.context:
                self._ack_read(m.context, m.from_)
        elif t == MT.SNAP_STATUS:
            if pr.state == ProgressState.SNAPSHOT:
                # Success or failure, wait for the next heartbeat round before probing.
                if m.reject:
                    pr.pending_snapshot = 0
                pr.become_probe()
                pr.probe_sent = True
        elif t == MT.UNREACHABLE:
            if pr.state == ProgressState.REPLICATE:
                pr.become_probe()
        elif t == MT.TRANSFER_LEADER:
            self._leader_transfer(m.from_, pr)

    def _propose(self, m: Message) -> None:
        if not m.entries:
            raise RaftError("a proposal needs at least one entry")
        if self.id not in self.prs:
            raise ProposalDropped("this node was removed from the group")
        if self.lead_transferee != NONE:
            raise ProposalDropped(f"leadership is moving to node {self.lead_transferee}")
        for k, e in enumerate(m.entries):
            if e.type == EntryType.CONF_CHANGE:
                if self.pending_conf_index > self.log.applied:
                    raise ProposalDropped(
                        "a membership change is pending until index "
                        f"{self.pending_conf_index} is applied"
                    )
                self._check_conf_change(ConfChange.decode(e.data))
                self.pending_conf_index = self.log.last_index() + 1 + k
        self.append_entries(m.entries)
        self.bcast_append()

    def _check_conf_change(self, cc: ConfChange) -> None:
        pr = self.prs.get(cc.node_id)
        if cc.type == ConfChangeType.ADD_NODE and pr is not None and pr.is_learner:
            # A learner becomes a voter only once it has caught up (thesis §4.2.1).
            if pr.match < self.log.committed:
                raise ProposalDropped(
                    f"learner {cc.node_id} has not caught up ({pr.match} < {self.log.committed})"
                )
        if cc.type == ConfChangeType.REMOVE_NODE and pr is not None and not pr.is_learner:
            if len(self.voters()) == 1:
                raise ProposalDropped("cannot remove the last voter")
        if cc.type == ConfChangeType.ADD_LEARNER and pr is not None and not pr.is_learner:
            raise ProposalDropped(f"node {cc.node_id} is a voter; remove it first")

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        if m.reject:
            next_probe = m.reject_hint
            if m.log_term > 0:
                # Skip every entry of ours whose term is above the follower's at the hint.
                next_probe, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self.send_append(m.from_)
            return
        old_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        elif pr.state == ProgressState.REPLICATE:
            pr.inflights.free_le(m.index)
        if self.maybe_commit():
            self.bcast_append()
        elif old_paused:
            self.send_append(m.from_)
        while self.send_append(m.from_, send_if_empty=False):
            pass
        if m.from_ == self.lead_transferee and pr.match == self.log.last_index():
            self.send(Message(MT.TIMEOUT_NOW, to=m.from_))

    def _leader_transfer(self, transferee: int, pr: Progress) -> None:
        if pr.is_learner or transferee == self.id:
            return
        if self.lead_transferee == transferee:
            return
        self.lead_transferee = transferee
        self.election_elapsed = 0
        if pr.match == self.log.last_index():
            self.send(Message(MT.TIMEOUT_NOW, to=transferee))
        else:
            self.send_append(transferee)

    def _leader_read_index(self, m: Message) -> None:
        origin = m.from_ or self.id
        if len(self.voters()) == 1:
            self._read_done(origin, self.log.committed, m.context)
            return
        if not self.committed_entry_in_current_term():
            # Thesis §6.4 step 1: the commit index is only known to be current once an
            # entry of this term is committed; answer after that.
            self.reads_waiting_commit.append(m)
            return
        if m.context in self.pending_reads:
            return
        req = _ReadRequest(self.log.committed, m.context, origin)
        req.acks.add(self.id)
        self.pending_reads[m.context] = req
        self.bcast_heartbeat(m.context)

    def _release_reads_waiting_commit(self) -> None:
        if self.reads_waiting_commit and self.committed_entry_in_current_term():
            waiting, self.reads_waiting_commit = self.reads_waiting_commit, []
            for m in waiting:
                self._leader_read_index(m)

    def _ack_read(self, ctx: bytes, from_: int) -> None:
        req = self.pending_reads.get(ctx)
        if req is None:
            return
        if from_ in self.prs and not self.prs[from_].is_learner:
            req.acks.add(from_)
        if len(req.acks) < self.quorum():
            return
        # A quorum confirmed leadership after this request: it and every earlier one are
        # safe to serve at their recorded commit index.
        while self.pending_reads:
            c, r = self.pending_reads.popitem(last=False)
            self._read_done(r.from_, r.index, r.context)
            if c == ctx:
                break

    def _read_done(self, origin: int, index: int, ctx: bytes) -> None:
        if origin == self.id:
            self.read_states.append(ReadState(index, ctx))
        else:
            self.send(Message(MT.READ_INDEX_RESP, to=origin, index=index, context=ctx))

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        my_resp = MT.PRE_VOTE_RESP if self.state == StateType.PRE_CANDIDATE else MT.VOTE_RESP
        if t == MT.PROP:
            raise ProposalDropped("no leader: an election is running")
        if t in (MT.APP, MT.HEARTBEAT, MT.SNAP):
            self.become_follower(m.term, m.from_)
            self._step_follower(m)
        elif t == my_resp:
            self.votes.setdefault(m.from_, not m.reject)
            result = self._tally()
            if result == 1:
                if self.state == StateType.PRE_CANDIDATE:
                    self.campaign(m.context == CAMPAIGN_TRANSFER, pre=False)
                else:
                    self.become_leader()
                    self.bcast_append()
            elif result == -1:
                self.become_follower(self.term, NONE)
        elif t == MT.READ_INDEX and m.from_ == self.id:
            raise ProposalDropped("no leader: an election is running")

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == MT.PROP:
            raise ProposalDropped(f"not the leader; the leader is {self.lead or 'unknown'}")
        if t == MT.APP:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_append(m)
        elif t == MT.HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.from_
            self.log.commit_to(m.commit)
            self.send(Message(MT.HEARTBEAT_RESP, to=m.from_, context=m.context))
        elif t == MT.SNAP:
            self.election_elapsed = 0
            self.lead = m.from_
            self._handle_snapshot(m)
        elif t == MT.TRANSFER_LEADER:
            if self.lead == NONE:
                return
            # Forwarded as is: ``from_`` names the transferee, not us.
            self.msgs.append(
                Message(
                    MT.TRANSFER_LEADER,
                    to=self.lead,
                    from_=m.from_,
                    term=self.term,
                    group=self.config.group,
                )
            )
        elif t == MT.TIMEOUT_NOW:
            self._hup(transfer=True)
        elif t == MT.READ_INDEX:
            if self.lead == NONE:
                if m.from_ == self.id:
                    raise ProposalDropped("no leader to serve a linearizable read")
                return
            self.send(Message(MT.READ_INDEX, to=self.lead, context=m.context))
        elif t == MT.READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))

    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            self.send(Message(MT.APP_RESP, to=m.from_, index=self.log.committed))
            return
        last_new = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new >= 0:
            self.send(Message(MT.APP_RESP, to=m.from_, index=last_new))
            return
        hint = min(m.index, self.log.last_index())
        hint, hint_term = self.log.find_conflict_by_term(hint, m.log_term)
        self.send(
            Message(
                MT.APP_RESP,
                to=m.from_,
                index=m.index,
                reject=True,
                reject_hint=hint,
                log_term=hint_term,
            )
        )

    def _handle_snapshot(self, m: Message) -> None:
        assert m.snapshot is not None
        if self.restore(m.snapshot):
            self.send(Message(MT.APP_RESP, to=m.from_, index=self.log.last_index()))
        else:
            self.send(Message(MT.APP_RESP, to=m.from_, index=self.log.committed))

    def restore(self, snap: Snapshot) -> bool:
        meta = snap.meta
        if meta.index <= self.log.committed:
            return False
        if self.log.match_term(meta.index, meta.term):
            # We already have the snapshot's last entry: just move the commit index.
            self.log.commit_to(meta.index)
            return False
        self.log.restore(snap)
        self._apply_conf_state(meta.conf_state)
        pr = self.prs.get(self.id)
        if pr is not None:
            pr.match = meta.index
        return True

    # -- membership -------------------------------------------------------------------
    def apply_conf_change(self, cc: ConfChange) -> None:
        """Make a committed membership change take effect (called on apply)."""
        nxt = self.log.last_index() + 1
        pr = self.prs.get(cc.node_id)
        if cc.type == ConfChangeType.ADD_NODE:
            if pr is None:
                pr = Progress(nxt, self.config.max_inflight_msgs)
                pr.recent_active = True
                self.prs[cc.node_id] = pr
            pr.is_learner = False
        elif cc.type == ConfChangeType.ADD_LEARNER:
            if pr is None:
                pr = Progress(nxt, self.config.max_inflight_msgs, is_learner=True)
                pr.recent_active = True
                self.prs[cc.node_id] = pr
        elif pr is not None:
            del self.prs[cc.node_id]
            if self.lead_transferee == cc.node_id:
                self.lead_transferee = NONE
            for req in self.pending_reads.values():
                req.acks.discard(cc.node_id)
        if self.state != StateType.LEADER:
            return
        if self.id not in self.prs or self.prs[self.id].is_learner:
            # Thesis §4.2.2: a leader removed from the configuration steps down once the
            # change is committed.
            self.become_follower(self.term, NONE)
            return
        if self.maybe_commit():
            self.bcast_append()
