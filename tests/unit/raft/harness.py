"""A hand-driven Raft cluster for scenario tests: scripts of steps and expected states.

``Cluster`` holds RawNodes over MemoryStorage and one message queue that moves only when
a script says so, so a test can stage exactly the interleaving it wants (drop this
message, isolate that node, crash and restart another). ``run(cluster, script)`` executes
a table of steps: ``(verb, *args)`` tuples; ``expect`` steps compare (state, term, commit)
of nodes, ``None`` matching anything.
Randomized runs are in ``sim.py``; the tables themselves in ``test_scenarios.py``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from robustmq.meta.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    EntryType,
    MemoryStorage,
    Message,
    RawNode,
    ReadState,
)

Step = tuple[Any, ...]


class Cluster:
    def __init__(
        self,
        voters: Sequence[int],
        *,
        pre_vote: bool = True,
        check_quorum: bool = True,
        max_size_per_msg: int = 1 << 20,
        election_tick: int = 10,
    ) -> None:
        self.options: dict[str, Any] = {
            "pre_vote": pre_vote,
            "check_quorum": check_quorum,
            "max_size_per_msg": max_size_per_msg,
            "election_tick": election_tick,
            "heartbeat_tick": 1,
        }
        self.storage: dict[int, MemoryStorage] = {}
        self.nodes: dict[int, RawNode] = {}
        self.queue: list[Message] = []
        self.isolated: set[int] = set()
        self.dropped: list[Callable[[Message], bool]] = []
        self.applied: dict[int, list[tuple[int, int, bytes]]] = {}
        self.read_states: dict[int, list[ReadState]] = {}
        self.peers = tuple(voters)
        for i in voters:
            self.add(i, self.peers)
        self.process()

    def add(self, i: int, peers: tuple[int, ...] = ()) -> None:
        """A new member: one of the initial ``peers``, or (no peers) a node to be added."""
        self.storage[i] = MemoryStorage()
        self.applied[i] = []
        self.read_states[i] = []
        self.start(i, peers)

    def start(self, i: int, peers: tuple[int, ...] = ()) -> None:
        # Seeds per node make the election timeouts differ but stay reproducible.
        cfg = Config(id=i, peers=peers, **self.options)
        self.nodes[i] = RawNode(cfg, self.storage[i], random.Random(i))

    def crash(self, i: int) -> None:
        """Lose everything not persisted; the node stays down until ``start``."""
        del self.nodes[i]
        self.queue = [m for m in self.queue if m.to != i and m.from_ != i]

    def process(self) -> None:
        for i, node in list(self.nodes.items()):
            while node.has_ready():
                rd = node.ready()
                st = self.storage[i]
                if rd.snapshot is not None:
                    st.apply_snapshot(rd.snapshot)
                st.append(rd.entries)
                if rd.hard_state is not None:
                    st.set_hard_state(rd.hard_state)
                self.queue.extend(rd.messages)
                for e in rd.committed_entries:
                    if e.type == EntryType.NORMAL and e.data:
                        self.applied[i].append((e.index, e.term, e.data))
                self.read_states[i].extend(rd.read_states)
                node.advance(rd)

    def deliver(self, limit: int = 10_000) -> int:
        """Deliver queued messages (and what they cause) until none is left."""
        n = 0
        self.process()
        while self.queue and n < limit:
            m = self.queue.pop(0)
            n += 1
            if m.to not in self.nodes or m.to in self.isolated or m.from_ in self.isolated:
                continue
            if any(f(m) for f in self.dropped):
                continue
            self.nodes[m.to].step(m)
            self.process()
        return n

    def tick(self, n: int, ids: Sequence[int] | None = None) -> None:
        for _ in range(n):
            for i in ids if ids is not None else list(self.nodes):
                if i in self.nodes:
                    self.nodes[i].tick()
            self.deliver()

    def state(self, i: int) -> tuple[str, int, int]:
        node = self.nodes[i]
        return node.state.name, node.term, node.committed

    def log_terms(self, i: int) -> list[int]:
        st = self.storage[i]
        return [st.term(k) for k in range(st.first_index(), st.last_index() + 1)]


def run(cluster: Cluster, script: Sequence[Step]) -> None:
    """Execute ``script``; an ``expect*`` step that does not hold fails with its row."""
    for row, step in enumerate(script):
        verb, *args = step
        where = f"step {row} {step!r}"
        if verb == "campaign":
            cluster.nodes[args[0]].campaign()
            cluster.deliver()
        elif verb == "campaign_only":
            cluster.nodes[args[0]].campaign()
            cluster.process()
        elif verb == "deliver":
            cluster.deliver()
        elif verb == "tick":
            cluster.tick(args[0], args[1] if len(args) > 1 else None)
        elif verb == "propose":
            cluster.nodes[args[0]].propose(args[1].encode())
            cluster.deliver()
        elif verb == "propose_raises":
            try:
                cluster.nodes[args[0]].propose(b"x")
            except args[1]:
                continue
            raise AssertionError(f"{where}: no {args[1].__name__}")
        elif verb == "conf":
            kind = {
                "add": ConfChangeType.ADD_NODE,
                "learner": ConfChangeType.ADD_LEARNER,
                "remove": ConfChangeType.REMOVE_NODE,
            }[args[1]]
            cluster.nodes[args[0]].propose_conf_change(ConfChange(kind, args[2]))
            cluster.deliver()
        elif verb == "conf_raises":
            kind = ConfChangeType.ADD_NODE if args[1] == "add" else ConfChangeType.REMOVE_NODE
            try:
                cluster.nodes[args[0]].propose_conf_change(ConfChange(kind, args[2]))
            except args[3]:
                continue
            raise AssertionError(f"{where}: no {args[3].__name__}")
        elif verb == "new_node":
            cluster.add(args[0])
        elif verb == "isolate":
            cluster.isolated.add(args[0])
        elif verb == "heal":
            cluster.isolated.clear()
            cluster.dropped.clear()
        elif verb == "drop":
            cluster.dropped.append(args[0])
        elif verb == "crash":
            cluster.crash(args[0])
        elif verb == "restart":
            cluster.start(args[0])
            cluster.deliver()
        elif verb == "transfer":
            cluster.nodes[args[0]].transfer_leader(args[1])
            cluster.deliver()
        elif verb == "read_index":
            cluster.nodes[args[0]].read_index(args[1].encode())
            cluster.deliver()
        elif verb == "compact":
            i, index = args
            st = cluster.storage[i]
            st.create_snapshot(index, cluster.nodes[i].conf_state(), b"snap@%d" % index)
            st.compact(index)
        elif verb == "expect":
            for i, want in args[0].items():
                got = cluster.state(i)
                same = all(w is None or w == g for w, g in zip(want, got, strict=False))
                assert same, f"{where}: node {i} is {got}"
        elif verb == "expect_one_leader":
            leaders = [i for i, n in cluster.nodes.items() if n.state.name == "LEADER"]
            terms = {cluster.nodes[i].term for i in leaders}
            assert len(leaders) == 1 and min(terms) >= args[0], f"{where}: leaders {leaders}"
        elif verb == "expect_log":
            for i, want in args[0].items():
                got = cluster.log_terms(i)
                assert got == list(want), f"{where}: node {i} log terms {got}"
        elif verb == "expect_applied":
            for i, want in args[0].items():
                got = [d.decode() for _, _, d in cluster.applied[i]]
                assert got == list(want), f"{where}: node {i} applied {got}"
        elif verb == "expect_reads":
            for i, want in args[0].items():
                got = [(r.index, r.context.decode()) for r in cluster.read_states[i]]
                assert got == list(want), f"{where}: node {i} read states {got}"
        elif verb == "expect_conf":
            for i, (voters, learners) in args[0].items():
                cs = cluster.nodes[i].conf_state()
                got = (cs.voters, cs.learners)
                assert got == (tuple(voters), tuple(learners)), f"{where}: node {i} conf {got}"
        elif verb == "expect_snapshot":
            for i, index in args[0].items():
                got = cluster.storage[i].snapshot().meta.index
                assert got == index, f"{where}: node {i} snapshot index {got}"
        else:
            raise ValueError(f"{where}: unknown verb {verb!r}")
