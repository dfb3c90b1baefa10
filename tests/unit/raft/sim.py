"""Deterministic simulation of a Raft group: the pure core, a faulty network, crashes.

One seed fixes everything: N members (``RawNode`` + ``MemoryStorage`` standing for the
disk), a network that delays, reorders, drops, duplicates and partitions messages, crashes
that keep only what was persisted (a crash may also hit between taking a Ready and
persisting it), restarts, log compaction, leadership transfers, and clients writing to and
reading (ReadIndex) from a small key-value register; leaders are sometimes cut off just
after they are elected or advance their commit index. After every step the Raft safety
properties are checked (election safety, log matching, leader completeness, state machine
safety); at the end, on a healed network, one leader must commit a last write and bring
every member up to date (liveness), and the client history must be linearizable per key
(Gibbons & Korach zones, cross-checked against a Wing & Gong search in test_sim.py).
A failure raises ``SimulationFailure`` with the command that replays the seed. Run many seeds with
``python -m tests.unit.raft.sim --seeds 5000``. The pytest entry points are in
``test_sim.py``; scenario tests of single behaviours are in ``test_scenarios.py``.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import sys
import time
from dataclasses import dataclass, field

from robustmq.errors import ProposalDropped
from robustmq.meta.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    EntryType,
    HardState,
    MemoryStorage,
    Message,
    RawNode,
    Ready,
    StateType,
)

INF = float("inf")
KEYS = ("a", "b", "c")


class SimulationFailure(AssertionError):
    pass


@dataclass(frozen=True, kw_only=True)
class SimConfig:
    seed: int
    nodes: int = 3
    steps: int = 300
    drop: float = 0.05
    duplicate: float = 0.03
    max_delay: int = 3
    crash: float = 0.01
    membership: bool = False
    """Also remove voters and add fresh learners that get promoted (5+ nodes)."""

    def replay(self) -> str:
        extra = " --membership" if self.membership else ""
        return (
            f"python -m tests.unit.raft.sim --seed {self.seed} --nodes {self.nodes} "
            f"--steps {self.steps}{extra}"
        )


@dataclass
class Op:
    kind: str  # "w" or "r"
    key: str
    value: str | None
    invoke: int
    resp: float = INF


@dataclass
class SimNode:
    id: int
    storage: MemoryStorage
    raw: RawNode | None = None
    kv: dict[str, str] = field(default_factory=dict)
    latest_hs: HardState = HardState()
    app_applied: int = 0
    peers: tuple[int, ...] = ()  # the initial members, for a node that was one
    writes: dict[str, Op] = field(default_factory=dict)
    reads: dict[bytes, Op] = field(default_factory=dict)
    waiting_reads: list[tuple[int, Op]] = field(default_factory=list)


def encode_kv(kv: dict[str, str]) -> bytes:
    return json.dumps(kv, sort_keys=True).encode()


class Simulation:
    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        # Half the seeds run without PreVote or CheckQuorum: safety must not depend on them.
        self.pre_vote = self.rng.random() < 0.75
        self.check_quorum = self.rng.random() < 0.75
        # One entry per AppendEntries makes partial replication (Figure 8) likelier.
        self.max_size_per_msg = self.rng.choice((1, 1, 256, 4096))
        self.drop = self.rng.choice((0.0, cfg.drop, 4 * cfg.drop))
        self.crash_rate = self.rng.choice((cfg.crash, 3 * cfg.crash, 6 * cfg.crash))
        # Cutting a leader off right after its election leaves its first entries on it
        # alone: diverging logs, where the commit rules (Figure 8) matter.
        self.isolate_new_leader = self.rng.choice((0.0, 0.2, 0.5))
        self.isolate_at: tuple[int, int] | None = None  # (tick, node)
        voters = tuple(range(1, cfg.nodes + 1))
        self.nodes: dict[int, SimNode] = {}
        for i in voters:
            self.nodes[i] = SimNode(i, MemoryStorage(), peers=voters)
            self._start(self.nodes[i])
        self.tick_no = 0
        self.clock = 0
        self.seq = 0
        self.net: list[tuple[int, int, Message]] = []
        self.component: dict[int, int] = {}
        self.history: list[Op] = []
        self.next_op = 0
        self.next_node_id = cfg.nodes + 1
        self.leaders: dict[int, int] = {}
        self.entries_seen: dict[tuple[int, int], tuple[bytes, int, int]] = {}
        self.applied_global: dict[int, tuple[int, bytes]] = {}
        self.stats = {"writes_ok": 0, "reads_ok": 0, "crashes": 0, "snapshots": 0}

    # -- plumbing ---------------------------------------------------------------------
    def fail(self, what: str) -> SimulationFailure:
        return SimulationFailure(f"{what} (tick {self.tick_no}); replay: {self.cfg.replay()}")

    def now(self) -> int:
        self.clock += 1
        return self.clock

    def _start(self, node: SimNode) -> None:
        # Started with its peers every time, as a node started from the same config file:
        # if the disk lost even the bootstrap, the node bootstraps again identically.
        cfg = Config(
            id=node.id,
            peers=node.peers,
            election_tick=10,
            heartbeat_tick=2,
            max_size_per_msg=self.max_size_per_msg,
            max_inflight_msgs=4,
            pre_vote=self.pre_vote,
            check_quorum=self.check_quorum,
        )
        node.raw = RawNode(cfg, node.storage, random.Random(self.rng.random()))
        node.latest_hs = node.storage.hard_state
        snap = node.storage.snapshot()
        node.kv = json.loads(snap.data) if snap.data else {}
        # The log may reach below the snapshot (compaction lags it): skip what it covers.
        node.app_applied = snap.meta.index

    def up(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.raw is not None]

    def crash(self, node: SimNode) -> None:
        node.raw = None
        node.writes.clear()
        node.reads.clear()
        node.waiting_reads.clear()
        self.stats["crashes"] += 1

    def send(self, m: Message) -> None:
        if self.rng.random() < self.drop:
            return
        copies = 2 if self.rng.random() < self.cfg.duplicate else 1
        for _ in range(copies):
            self.seq += 1
            at = self.tick_no + self.rng.randint(0, self.cfg.max_delay)
            heapq.heappush(self.net, (at, self.seq, m))

    def deliver(self) -> None:
        while self.net and self.net[0][0] <= self.tick_no:
            _, _, m = heapq.heappop(self.net)
            if self.component.get(m.from_, 0) != self.component.get(m.to, 0):
                continue
            node = self.nodes.get(m.to)
            if node is None or node.raw is None:
                continue
            node.raw.step(m)
            self.process(node)

    # -- one node's Ready loop --------------------------------------------------------
    def process(self, node: SimNode) -> None:
        while node.raw is not None and node.raw.has_ready():
            rd = node.raw.ready()
            if self.rng.random() < self.crash_rate / 20:
                self.crash(node)  # power loss before the fsync: the Ready is lost
                return
            self.persist(node, rd)
            if (
                rd.committed_entries
                and node.raw.state == StateType.LEADER
                and self.isolate_at is None
                and self.rng.random() < self.isolate_new_leader / 4
            ):
                # A leader cut off just after it advanced its commit index.
                self.isolate_at = (self.tick_no + self.rng.randint(0, 2), node.id)
            for m in rd.messages:
                self.send(m)
            self.apply(node, rd)
            node.raw.advance(rd)
            self.serve_reads(node)

    def persist(self, node: SimNode, rd: Ready) -> None:
        assert node.raw is not None
        st = node.storage
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
        if rd.entries:
            self.check_log_matching(node, rd)
            st.append(rd.entries)
        if rd.hard_state is not None:
            node.latest_hs = rd.hard_state
        # A Ready that changes only the commit index need not be synced: sometimes the
        # simulated disk keeps the older hard state, as a crash before a lazy write would.
        if rd.must_sync or self.rng.random() < 0.5:
            st.set_hard_state(node.latest_hs)

    def apply(self, node: SimNode, rd: Ready) -> None:
        if rd.snapshot is not None:
            node.kv = json.loads(rd.snapshot.data) if rd.snapshot.data else {}
            node.app_applied = rd.snapshot.meta.index
        for e in rd.committed_entries:
            seen = self.applied_global.setdefault(e.index, (e.term, e.data))
            if seen != (e.term, e.data):
                raise self.fail(
                    f"state machine safety: node {node.id} applies {(e.term, e.data)!r} at "
                    f"index {e.index}, another node applied {seen!r}"
                )
            if e.type != EntryType.NORMAL or not e.data or e.index <= node.app_applied:
                continue
            node.app_applied = e.index
            op_id, key, value = e.data.decode().split(" ")
            node.kv[key] = value
            op = node.writes.pop(op_id, None)
            if op is not None:
                op.resp = self.now()
                self.stats["writes_ok"] += 1
        for rs in rd.read_states:
            op = node.reads.pop(rs.context, None)
            if op is not None:
                node.waiting_reads.append((rs.index, op))

    def serve_reads(self, node: SimNode) -> None:
        assert node.raw is not None
        applied = node.raw.applied
        keep = []
        for index, op in node.waiting_reads:
            if index <= applied:
                op.value = node.kv.get(op.key)
                op.resp = self.now()
                self.stats["reads_ok"] += 1
            else:
                keep.append((index, op))
        node.waiting_reads = keep

    # -- invariants -------------------------------------------------------------------
    def check_log_matching(self, node: SimNode, rd: Ready) -> None:
        """Same (index, term) means the same entry with the same predecessor term."""
        assert node.raw is not None
        log = node.raw.raft.log
        prev = None
        for e in rd.entries:
            if prev is None:
                try:
                    prev = log.term(e.index - 1)
                except Exception:
                    prev = -1
            key = (e.index, e.term)
            seen = self.entries_seen.get(key)
            mine = (e.data, e.type, prev)
            if seen is None:
                self.entries_seen[key] = mine
            elif (seen[0], seen[1]) != (e.data, e.type) or (
                -1 not in (prev, seen[2]) and seen[2] != prev
            ):
                raise self.fail(
                    f"log matching: node {node.id} has {mine!r} at {key}, another has {seen!r}"
                )
            prev = e.term

    def check_step(self) -> None:
        for node in self.up():
            raw = node.raw
            assert raw is not None
            if raw.state != StateType.LEADER:
                continue
            first = self.leaders.setdefault(raw.term, node.id)
            if first != node.id:
                raise self.fail(
                    f"election safety: nodes {first} and {node.id} lead term {raw.term}"
                )
            if (raw.term, node.id) not in self._checked_leaders:
                self._checked_leaders.add((raw.term, node.id))
                self.check_leader_completeness(node)
                if self.rng.random() < self.isolate_new_leader:
                    # Within a few ticks: some of its first messages get through.
                    self.isolate_at = (self.tick_no + self.rng.randint(0, 3), node.id)

    _checked_leaders: set[tuple[int, int]]

    def check_leader_completeness(self, node: SimNode) -> None:
        assert node.raw is not None
        log = node.raw.raft.log
        first = log.first_index()
        for index, (term, _) in self.applied_global.items():
            if index < first:
                continue
            if log.term(index) != term:
                raise self.fail(
                    f"leader completeness: leader {node.id} of term {node.raw.term} has term "
                    f"{log.term(index)} at committed index {index} (term {term})"
                )

    # -- workload and faults ----------------------------------------------------------
    def client_write(self) -> None:
        if not self.up():
            return
        node = self.client_target()
        assert node.raw is not None
        self.next_op += 1
        op_id = f"w{self.next_op}"
        key = self.rng.choice(KEYS)
        value = str(self.next_op)
        invoke = self.now()
        try:
            node.raw.propose(f"{op_id} {key} {value}".encode())
        except ProposalDropped:
            return
        op = Op("w", key, value, invoke)
        self.history.append(op)
        node.writes[op_id] = op
        self.process(node)

    def client_read(self) -> None:
        if not self.up():
            return
        node = self.client_target()
        assert node.raw is not None
        self.next_op += 1
        ctx = f"r{self.next_op}".encode()
        op = Op("r", self.rng.choice(KEYS), None, self.now())
        try:
            node.raw.read_index(ctx)
        except ProposalDropped:
            return
        self.history.append(op)
        node.reads[ctx] = op
        self.process(node)

    def client_target(self) -> SimNode:
        """Half the time the node that believes it leads (clients learn who leads)."""
        up = self.up()
        leaders = [n for n in up if n.raw and n.raw.state == StateType.LEADER]
        if leaders and self.rng.random() < 0.5:
            return self.rng.choice(leaders)
        return self.rng.choice(up)

    def compact(self) -> None:
        if not self.up():
            return
        node = self.rng.choice(self.up())
        raw = node.raw
        assert raw is not None
        if raw.applied <= node.storage.first_index():
            return
        # Snapshot only what the disk has: the applied index may be past the durable log.
        index = min(raw.applied, node.storage.last_index())
        node.storage.create_snapshot(index, raw.conf_state(), self._kv_at(node, index))
        node.storage.compact(max(node.storage.first_index(), index - self.rng.randint(0, 5)))
        self.stats["snapshots"] += 1

    def _kv_at(self, node: SimNode, index: int) -> bytes:
        assert node.raw is not None
        if index == node.raw.applied:
            return encode_kv(node.kv)
        snap = node.storage.snapshot()
        kv = json.loads(snap.data) if snap.data else {}
        for e in node.storage.entries(snap.meta.index + 1, index + 1, 1 << 62):
            if e.type == EntryType.NORMAL and e.data:
                _, key, value = e.data.decode().split(" ")
                kv[key] = value
        return encode_kv(kv)

    def membership_change(self) -> None:
        leader = next((n for n in self.up() if n.raw and n.raw.state == StateType.LEADER), None)
        if leader is None or leader.raw is None:
            return
        cs = leader.raw.conf_state()
        try:
            if cs.learners:
                cc = ConfChange(ConfChangeType.ADD_NODE, cs.learners[0])
            elif len(cs.voters) > 3 and self.rng.random() < 0.5:
                victim = self.rng.choice([v for v in cs.voters if v != leader.id])
                cc = ConfChange(ConfChangeType.REMOVE_NODE, victim)
            else:
                new_id = self.next_node_id
                cc = ConfChange(ConfChangeType.ADD_LEARNER, new_id)
                leader.raw.propose_conf_change(cc)
                self.next_node_id += 1
                self.nodes[new_id] = SimNode(new_id, MemoryStorage())
                self._start(self.nodes[new_id])
                self.process(leader)
                return
            leader.raw.propose_conf_change(cc)
        except ProposalDropped:
            return
        self.process(leader)

    def fault(self) -> None:
        if self.isolate_at is not None and self.isolate_at[0] <= self.tick_no:
            victim = self.isolate_at[1]
            self.component = {i: int(i == victim) for i in self.nodes}
            self.isolate_at = None
        r = self.rng.random()
        ids = list(self.nodes)
        if r < 0.02:
            # Partition: every node lands in one of two sides.
            self.component = {i: self.rng.randint(0, 1) for i in ids}
        elif r < 0.05:
            self.component = {}
        elif r < 0.05 + self.crash_rate:
            up = self.up()
            leaders = [n for n in up if n.raw and n.raw.state == StateType.LEADER]
            if leaders and self.rng.random() < 0.5:
                self.crash(leaders[0])  # leaders are where the interesting bugs hide
            elif len(up) > 1:
                self.crash(self.rng.choice(up))
        elif r < 0.12 + self.crash_rate:
            down = [n for n in self.nodes.values() if n.raw is None]
            if down:
                node = self.rng.choice(down)
                self._start(node)
                self.process(node)
        elif r < 0.13 + self.crash_rate:
            leader = next((n for n in self.up() if n.raw and n.raw.state == StateType.LEADER), None)
            if leader is not None and leader.raw is not None:
                leader.raw.transfer_leader(self.rng.choice(ids))
                self.process(leader)
        elif r < 0.15 + self.crash_rate:
            self.compact()
        elif r < 0.17 + self.crash_rate and self.cfg.membership:
            self.membership_change()

    def run(self) -> Simulation:
        self._checked_leaders = set()
        for tick in range(1, self.cfg.steps + 1):
            self.tick_no = tick
            self.fault()
            if self.rng.random() < 0.4:
                self.client_write()
            if self.rng.random() < 0.3:
                self.client_read()
            for node in self.up():
                if self.rng.random() < 0.95:  # clocks drift
                    assert node.raw is not None
                    node.raw.tick()
                self.process(node)
            self.deliver()
            self.check_step()
        # Quiesce: a healed network without losses or crashes, everyone up. The group
        # must then elect one leader, commit a last write and bring every member up to
        # date (liveness), and the whole history must be linearizable (safety).
        self.component = {}
        self.drop = 0.0
        self.crash_rate = 0.0
        self.isolate_new_leader = 0.0
        self.isolate_at = None
        for node in self.nodes.values():
            if node.raw is None:
                self._start(node)
        self.settle(100)
        # Removed nodes are shut down, as an operator would: without PreVote and
        # CheckQuorum they could otherwise disrupt the group forever (thesis §4.2.3).
        newest = max(self.up(), key=lambda n: n.raw.applied if n.raw else -1)
        assert newest.raw is not None
        cs = newest.raw.conf_state()
        for node in self.up():
            if node.id not in cs.voters and node.id not in cs.learners:
                self.crash(node)
                del self.nodes[node.id]
        self.settle(100)
        final: Op | None = None
        for _ in range(5):
            leaders = [n for n in self.up() if n.raw and n.raw.state == StateType.LEADER]
            if len(leaders) == 1 and leaders[0].raw is not None:
                final = Op("w", KEYS[0], "final", self.now())
                try:
                    leaders[0].raw.propose(f"final {final.key} final".encode())
                except ProposalDropped:
                    final = None
                else:
                    self.history.append(final)
                    leaders[0].writes["final"] = final
                    break
            self.settle(30)
        self.settle(60)
        if final is None or final.resp == INF:
            raise self.fail("liveness: no write commits on a healed network")
        leader = next(n for n in self.up() if n.raw and n.raw.state == StateType.LEADER)
        assert leader.raw is not None
        self.check_leader_completeness(leader)
        cs = leader.raw.conf_state()
        for i in (*cs.voters, *cs.learners):
            raw = self.nodes[i].raw
            if raw is None or raw.applied != leader.raw.committed:
                got = raw.applied if raw else None
                raise self.fail(
                    f"liveness: member {i} applied {got}, leader committed {leader.raw.committed}"
                )
        self.check_linearizable()
        return self

    def settle(self, ticks: int) -> None:
        for _ in range(ticks):
            self.tick_no += 1
            for node in self.up():
                assert node.raw is not None
                node.raw.tick()
                self.process(node)
            self.deliver()
            self.check_step()

    def check_linearizable(self) -> None:
        for key in KEYS:
            ops = [op for op in self.history if op.key == key and (op.kind == "w" or op.resp < INF)]
            bad = linearizable(ops)
            if bad:
                raise self.fail(f"history of key {key!r} is not linearizable: {bad}")


def linearizable(ops: list[Op]) -> str:
    """Whether a single-register history (initial value None, every write a unique value)
    is linearizable; '' if it is, else why not.

    Gibbons & Korach's zone test (1997), linear in the number of distinct values: the
    *cluster* of a value is its write and the reads that returned it. If the earliest
    response in a cluster comes before its latest invocation, the register must hold the
    value throughout that *forward zone*; otherwise the cluster can take effect at one
    instant inside its *backward zone*. Linearizable iff every read follows its write's
    invocation, no two forward zones overlap, and no backward zone lies inside another
    value's forward zone. A write with no response counts as finishing at infinity (the
    most permissive completion). ``wing_gong`` is the exhaustive search it is tested
    against (test_sim.py).
    """
    writes: dict[str | None, Op] = {None: Op("w", "", None, 0, 0)}
    reads: dict[str | None, list[Op]] = {}
    for op in ops:
        if op.kind == "w":
            writes[op.value] = op
        else:
            reads.setdefault(op.value, []).append(op)
    forward: list[tuple[float, float, str | None]] = []
    backward: list[tuple[float, float, str | None]] = []
    for value, w in writes.items():
        cluster = [w, *reads.get(value, [])]
        for r in cluster[1:]:
            if r.resp < w.invoke:
                return f"read of {value!r} at [{r.invoke}, {r.resp}] precedes its write"
        first_resp = min(op.resp for op in cluster)
        last_invoke = max(op.invoke for op in cluster)
        if first_resp < last_invoke:
            forward.append((first_resp, last_invoke, value))
        else:
            backward.append((last_invoke, first_resp, value))
    for value in reads:
        if value not in writes:
            return f"read of {value!r}, which no write wrote"
    forward.sort(key=lambda z: z[0])
    for a, b in zip(forward, forward[1:], strict=False):
        if b[0] < a[1]:
            return f"values {a[2]!r} and {b[2]!r} must both hold during [{b[0]}, {a[1]}]"
    for lo, hi, value in backward:
        for f_lo, f_hi, f_value in forward:
            if f_lo < lo and hi < f_hi:
                return f"{value!r} cannot take effect while {f_value!r} must hold"
    return ""


def wing_gong(ops: list[Op], budget: int = 300_000) -> str:
    """Wing & Gong search for a single register starting at None; '' if linearizable.

    Writes without a response may take effect at any point after their invocation or
    never; reads without a response are left out by the caller. A pending write whose
    value nobody read can always be taken as never having happened, so it is dropped
    before the search. More than ``budget`` search states counts as a failure (only a
    non-linearizable history makes the search explore that far).
    """
    read_values = {op.value for op in ops if op.kind == "r"}
    ops = sorted(
        (op for op in ops if op.resp < INF or op.value in read_values), key=lambda o: o.invoke
    )
    n = len(ops)
    must = 0
    for i, op in enumerate(ops):
        if op.resp < INF:
            must |= 1 << i
    seen: set[tuple[int, str | None]] = set()
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 4 * n + 100))

    def search(done: int, value: str | None) -> bool:
        if done & must == must:
            return True
        if (done, value) in seen or len(seen) > budget:
            return False
        seen.add((done, value))
        min_resp = min(ops[i].resp for i in range(n) if not done >> i & 1)
        for i in range(n):
            if done >> i & 1:
                continue
            op = ops[i]
            if op.invoke > min_resp:
                break
            if op.kind == "r":
                if op.value == value and search(done | 1 << i, value):
                    return True
            elif search(done | 1 << i, op.value):
                return True
        return False

    if search(0, None):
        return ""
    why = "search budget exhausted; " if len(seen) > budget else ""
    lines = [f"{o.kind} {o.value!r} [{o.invoke}, {o.resp}]" for o in ops[:40]]
    return why + "; ".join(lines)


def run_seed(seed: int, nodes: int = 3, steps: int = 300, membership: bool = False) -> Simulation:
    return Simulation(SimConfig(seed=seed, nodes=nodes, steps=steps, membership=membership)).run()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, help="run this one seed")
    p.add_argument("--seeds", type=int, default=100, help="run seeds [start, start+seeds)")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--nodes", type=int, default=0, help="3 or 5; default: both")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--membership", action="store_true", help="also change membership")
    args = p.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else range(args.start, args.start + args.seeds)
    sizes = [args.nodes] if args.nodes else [3, 5]
    failures = 0
    t0 = time.perf_counter()
    totals: dict[str, int] = {}
    runs = 0
    for seed in seeds:
        for size in sizes:
            try:
                sim = run_seed(seed, size, args.steps, args.membership)
            except SimulationFailure as exc:
                failures += 1
                print(f"FAIL seed {seed} nodes {size}: {exc}")
                continue
            runs += 1
            for k, v in sim.stats.items():
                totals[k] = totals.get(k, 0) + v
    dt = time.perf_counter() - t0
    print(f"{runs} runs passed, {failures} failed in {dt:.1f}s; totals {totals}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
