"""Data-driven Raft scenarios: each case is a table of steps and the state expected after.

Every group starts from the bootstrap: its voters are committed membership entries at
indexes 1..n in term 1, so the first leader is elected in term 2 and its empty entry sits
at n + 1. The steps (``tests/unit/raft/harness.py``) drive a hand-held cluster over MemoryStorage
with a message queue that moves only when told, in the style of etcd-io/raft's
``testdata`` scripts. Several behaviours come as a pair: the protection on, and the same
script with it off showing the failure it prevents, so that each test can fail.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from robustmq.errors import ProposalDropped
from robustmq.meta.raft import MessageType
from tests.unit.raft.harness import Cluster, run

APP = MessageType.APP
F, C, L = "FOLLOWER", "CANDIDATE", "LEADER"
BOOT5 = [1, 1, 1, 1, 1]


def _entries_at(m: Any, index: int) -> bool:
    return any(e.index == index for e in m.entries)


def _all_but_first(pred: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """A drop filter passing the first message that matches ``pred``, dropping the rest."""
    seen = []

    def drop(m: Any) -> bool:
        if not pred(m):
            return False
        seen.append(m)
        return len(seen) > 1

    return drop


CASES: dict[str, tuple[dict[str, Any], list[tuple[Any, ...]]]] = {
    "election": (
        {"voters": [1, 2, 3]},
        [
            ("campaign", 1),
            # The new leader's empty entry of its term commits at once.
            ("expect", {1: (L, 2, 4), 2: (F, 2, 4), 3: (F, 2, 4)}),
            ("expect_log", {1: [1, 1, 1, 2], 2: [1, 1, 1, 2], 3: [1, 1, 1, 2]}),
        ],
    ),
    "election_by_timeout": (
        {"voters": [1, 2, 3]},
        [("tick", 40), ("expect_one_leader", 2)],
    ),
    "split_vote_then_resolved": (
        {"voters": [1, 2, 3, 4], "pre_vote": False},
        [
            # 1 and 2 campaign at once; 1 reaches only 3, 2 reaches only 4.
            ("drop", lambda m: (m.from_, m.to) in ((1, 4), (2, 3))),
            ("campaign_only", 1),
            ("campaign_only", 2),
            ("deliver",),
            ("expect", {1: (C, 2), 2: (C, 2), 3: (F, 2), 4: (F, 2)}),
            ("heal",),
            ("tick", 60),
            ("expect_one_leader", 3),
        ],
    ),
    "prevote_blocks_disruptive_rejoin": (
        {"voters": [1, 2, 3]},
        [
            ("campaign", 1),
            ("isolate", 3),
            ("tick", 100, [3]),
            ("expect", {3: (None, 2)}),  # PreVote never won: the term did not move
            ("heal",),
            ("tick", 5),
            ("expect", {1: (L, 2), 2: (F, 2), 3: (F, 2)}),
        ],
    ),
    "without_prevote_rejoin_disrupts": (
        {"voters": [1, 2, 3], "pre_vote": False},
        [
            ("campaign", 1),
            ("isolate", 3),
            ("tick", 100, [3]),
            ("heal",),
            ("tick", 5),
            # The isolated node raised its term and the group had to elect again.
            ("expect", {1: (F,)}),
        ],
    ),
    "check_quorum_leader_steps_down": (
        {"voters": [1, 2, 3]},
        [
            ("campaign", 1),
            ("isolate", 1),
            ("tick", 20, [1]),
            ("expect", {1: (F, 2)}),
            ("propose_raises", 1, ProposalDropped),
        ],
    ),
    "without_check_quorum_leader_stays": (
        {"voters": [1, 2, 3], "check_quorum": False},
        [("campaign", 1), ("isolate", 1), ("tick", 20, [1]), ("expect", {1: (L, 2)})],
    ),
    "follower_in_lease_ignores_votes": (
        {"voters": [1, 2, 3], "pre_vote": False},
        [
            ("campaign", 1),
            ("campaign", 3),  # 3 raises its term, but 2 heard from 1 recently
            ("expect", {2: (F, 2)}),
        ],
    ),
    "replication_and_conflict_resolution": (
        {"voters": [1, 2, 3]},
        [
            ("campaign", 1),
            ("propose", 1, "a"),
            ("expect_applied", {1: ["a"], 2: ["a"], 3: ["a"]}),
            ("isolate", 1),
            ("propose", 1, "lost1"),  # appended by the old leader, never replicated
            ("propose", 1, "lost2"),
            ("tick", 10, [2, 3]),
            ("campaign", 2),
            ("propose", 2, "b"),
            ("expect", {2: (L, 3, 7), 3: (F, 3, 7)}),
            ("expect_log", {1: [1, 1, 1, 2, 2, 2, 2], 2: [1, 1, 1, 2, 2, 3, 3]}),
            ("heal",),
            ("tick", 3),
            ("expect_log", {i: [1, 1, 1, 2, 2, 3, 3] for i in (1, 2, 3)}),
            ("expect_applied", {1: ["a", "b"], 2: ["a", "b"], 3: ["a", "b"]}),
        ],
    ),
    "fast_backtracking_long_divergence": (
        {"voters": [1, 2, 3], "max_size_per_msg": 1},
        [
            ("campaign", 1),
            ("isolate", 1),
            *[("propose", 1, f"stale{i}") for i in range(20)],
            ("tick", 10, [2, 3]),
            ("campaign", 2),
            *[("propose", 2, f"new{i}") for i in range(5)],
            ("heal",),
            ("tick", 3),
            ("expect_log", {1: [1, 1, 1, 2, 3, 3, 3, 3, 3, 3]}),
            ("expect_applied", {1: [f"new{i}" for i in range(5)]}),
        ],
    ),
    "figure8_previous_term_entry_not_committed_by_count": (
        # Raft paper Figure 8 with one entry per message: the term-2 entry "x" (index 7)
        # reaches a majority during term 4 but must not commit until an entry of term 4
        # does, because node 5 (last term 3) can still win and overwrite it.
        {
            "voters": [1, 2, 3, 4, 5],
            "pre_vote": False,
            "check_quorum": False,
            "max_size_per_msg": 1,
        },
        [
            ("campaign", 1),
            ("drop", lambda m: m.from_ == 1 and m.to in (3, 4, 5)),
            ("propose", 1, "x"),  # index 7, term 2, on nodes 1 and 2 only
            ("crash", 1),
            ("heal",),
            ("drop", lambda m: m.from_ == 5 and m.type == APP),
            ("campaign", 5),  # term 3 with 3, 4, 5; its entry at 7 stays on node 5
            ("expect", {5: (L, 3)}),
            ("crash", 5),
            ("heal",),
            ("restart", 1),
            # Node 3 gets "x" but not the term-4 entry after it (the first message with
            # that entry is the probe that 3 rejects); node 4 gets nothing.
            ("drop", lambda m: m.type == APP and m.to == 4),
            ("drop", _all_but_first(lambda m: m.type == APP and m.to == 3 and _entries_at(m, 8))),
            ("campaign", 1),  # term 3: 3 and 4 already voted for 5
            ("campaign", 1),
            ("expect", {1: (L, 4, 6)}),
            ("expect_log", {1: [*BOOT5, 2, 2, 4], 2: [*BOOT5, 2, 2, 4], 3: [*BOOT5, 2, 2]}),
            ("expect_applied", {1: []}),
            ("crash", 1),
            ("heal",),
            ("restart", 5),
            ("campaign", 5),  # term 4: everyone voted for 1
            ("campaign", 5),
            ("expect", {5: (L, 5)}),
            ("expect_log", {i: [*BOOT5, 2, 3, 5] for i in (3, 4, 5)}),
            ("expect_applied", {2: [], 3: [], 4: [], 5: []}),
        ],
    ),
    "snapshot_install": (
        {"voters": [1, 2, 3]},
        [
            ("campaign", 1),
            ("isolate", 3),
            ("propose", 1, "a"),
            ("propose", 1, "b"),
            ("propose", 1, "c"),
            ("compact", 1, 7),
            ("heal",),
            ("tick", 3),
            ("expect_snapshot", {3: 7}),
            ("expect", {3: (F, 2, 7)}),
            ("propose", 1, "d"),
            ("expect_applied", {3: ["d"]}),  # a, b, c came inside the snapshot
        ],
    ),
    "add_learner_promote_remove": (
        {"voters": [1, 2, 3]},
        [
            ("campaign", 1),
            ("propose", 1, "a"),
            ("new_node", 4),
            ("conf", 1, "learner", 4),
            ("tick", 2),
            ("expect_conf", {1: ([1, 2, 3], [4]), 4: ([1, 2, 3], [4])}),
            ("expect_applied", {4: ["a"]}),
            ("conf", 1, "add", 4),
            ("expect_conf", {1: ([1, 2, 3, 4], []), 4: ([1, 2, 3, 4], [])}),
            ("conf", 1, "remove", 2),
            ("expect_conf", {1: ([1, 3, 4], []), 3: ([1, 3, 4], [])}),
            ("isolate", 3),
            ("propose", 1, "b"),  # 1 and 4 are a quorum of {1, 3, 4}
            ("expect_applied", {1: ["a", "b"], 4: ["a", "b"]}),
        ],
    ),
    "learner_not_promoted_before_catching_up": (
        {"voters": [1, 2, 3]},
        [
            ("campaign", 1),
            ("new_node", 4),
            ("isolate", 4),
            ("conf", 1, "learner", 4),
            ("propose", 1, "a"),
            ("conf_raises", 1, "add", 4, ProposalDropped),
            ("heal",),
            ("tick", 3),
            ("conf", 1, "add", 4),
            ("expect_conf", {1: ([1, 2, 3, 4], [])}),
        ],
    ),
    "one_membership_change_at_a_time": (
        {"voters": [1, 2, 3]},
        [
            ("campaign", 1),
            ("new_node", 4),
            ("isolate", 2),
            ("isolate", 3),
            ("conf", 1, "learner", 4),  # appended, not committed
            ("conf_raises", 1, "remove", 3, ProposalDropped),
            ("heal",),
            ("tick", 2),
            ("conf", 1, "remove", 3),
            ("expect_conf", {1: ([1, 2], [4])}),
        ],
    ),
    "remove_leader": (
        {"voters": [1, 2, 3]},
        [
            ("campaign", 1),
            ("conf", 1, "remove", 1),
            ("expect", {1: (F,)}),
            ("tick", 40, [2, 3]),
            ("expect_one_leader", 2),
        ],
    ),
    "leadership_transfer": (
        {"voters": [1, 2, 3]},
        [
            ("campaign", 1),
            ("transfer", 1, 3),
            ("expect", {1: (F, 3), 2: (F, 3), 3: (L, 3)}),
        ],
    ),
    "leadership_transfer_to_lagging_node": (
        {"voters": [1, 2, 3]},
        [
            ("campaign", 1),
            ("isolate", 3),
            ("propose", 1, "a"),
            ("transfer", 1, 3),
            ("propose_raises", 1, ProposalDropped),  # no proposals while moving
            ("heal",),
            ("tick", 1),
            ("expect", {3: (L, 3)}),
            ("expect_applied", {3: ["a"]}),
        ],
    ),
    "leadership_transfer_times_out": (
        {"voters": [1, 2, 3]},
        [
            ("campaign", 1),
            ("isolate", 3),
            ("transfer", 1, 3),
            ("propose_raises", 1, ProposalDropped),
            ("tick", 10, [1, 2]),
            ("propose", 1, "a"),
            ("expect", {1: (L, 2, 5)}),
        ],
    ),
    "read_index": (
        {"voters": [1, 2, 3]},
        [
            ("campaign", 1),
            ("propose", 1, "a"),
            ("read_index", 1, "r1"),
            ("expect_reads", {1: [(5, "r1")]}),
            ("read_index", 2, "r2"),  # a follower asks the leader
            ("expect_reads", {2: [(5, "r2")]}),
            ("isolate", 1),
            ("read_index", 1, "r3"),  # cannot confirm leadership: no answer
            ("tick", 1, [1]),
            ("expect_reads", {1: [(5, "r1")]}),
        ],
    ),
    "read_index_waits_for_new_leader_commit": (
        {"voters": [1, 2, 3]},
        [
            ("campaign", 1),
            ("propose", 1, "a"),
            ("tick", 10, [2, 3]),
            ("drop", lambda m: m.type == APP),
            ("campaign", 2),
            ("expect", {2: (L, 3, 5)}),  # its term-3 entry at 6 is not committed
            ("read_index", 2, "r"),
            ("expect_reads", {2: []}),
            ("heal",),
            ("tick", 1, [2]),
            ("expect_reads", {2: [(6, "r")]}),
        ],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_scenario(name: str) -> None:
    options, script = CASES[name]
    run(Cluster(**options), script)
