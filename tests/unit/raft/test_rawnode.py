"""The RawNode contract: Ready contents and must_sync, config validation, bad input, and
the in-memory storage's named errors. Behaviour of whole groups is in test_scenarios.py."""

from __future__ import annotations

import random

import pytest

from robustmq.errors import ConfigError, ProposalDropped, RaftCompacted, RaftError, RaftUnavailable
from robustmq.meta.raft import (
    ConfChange,
    ConfChangeType,
    Config,
    Entry,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    RawNode,
    StateType,
)
from robustmq.meta.raft.progress import ProgressState
from tests.unit.raft.harness import Cluster, run


def single() -> tuple[RawNode, MemoryStorage]:
    st = MemoryStorage()
    node = RawNode(Config(id=1, peers=(1,)), st, random.Random(0))
    return node, st


def persist(node: RawNode, st: MemoryStorage) -> list:
    ready = []
    while node.has_ready():
        rd = node.ready()
        st.append(rd.entries)
        if rd.hard_state:
            st.set_hard_state(rd.hard_state)
        ready.append(rd)
        node.advance(rd)
    return ready


def test_bootstrap_ready_then_single_node_commit() -> None:
    node, st = single()
    (rd,) = persist(node, st)
    assert rd.hard_state == HardState(1, 0, 1) and rd.must_sync
    assert [e.index for e in rd.entries] == [1] and rd.committed_entries == rd.entries
    node.campaign()
    rds = persist(node, st)
    assert node.state == StateType.LEADER and node.term == 2
    assert rds[0].soft_state is not None and rds[0].soft_state.lead == 1
    node.propose(b"a")
    (rd,) = persist(node, st)
    assert [e.data for e in rd.entries] == [b"a"] == [e.data for e in rd.committed_entries]
    assert rd.must_sync and rd.hard_state == HardState(2, 1, 3)
    assert not node.has_ready()


def test_commit_only_ready_needs_no_sync() -> None:
    st = MemoryStorage()
    node = RawNode(Config(id=2, peers=(1, 2)), st, random.Random(0))
    persist(node, st)
    # The bootstrap put the two members at indexes 1 and 2.
    app = Message(MessageType.APP, to=2, from_=1, term=2, index=2, log_term=1)
    app.entries = [Entry(2, 3, data=b"x")]
    node.step(app)
    (rd,) = persist(node, st)
    assert rd.must_sync and rd.committed_entries == []
    node.step(Message(MessageType.HEARTBEAT, to=2, from_=1, term=2, commit=3))
    (rd,) = persist(node, st)
    assert not rd.must_sync and rd.hard_state == HardState(2, 0, 3)
    assert [e.data for e in rd.committed_entries] == [b"x"]
    assert rd.messages[0].type == MessageType.HEARTBEAT_RESP


def test_group_id_is_stamped_on_messages() -> None:
    st = MemoryStorage()
    node = RawNode(Config(id=1, peers=(1, 2, 3), group=7), st, random.Random(0))
    persist(node, st)
    node.campaign()
    rd = node.ready()
    assert rd.messages and all(m.group == 7 and m.from_ == 1 for m in rd.messages)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"id": 0}, "raft.id"),
        ({"id": 1, "heartbeat_tick": 0}, "raft.heartbeat_tick"),
        ({"id": 1, "election_tick": 1}, "raft.election_tick"),
        ({"id": 1, "max_inflight_msgs": 0}, "raft.max_inflight_msgs"),
        ({"id": 1, "max_size_per_msg": 0}, "raft.max_size_per_msg"),
        ({"id": 1, "peers": (1, 1)}, "raft.peers"),
        ({"id": 1, "applied": -1}, "raft.applied"),
    ],
)
def test_config_is_validated(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        Config(**kwargs)


def test_bad_input_gets_clear_errors() -> None:
    st = MemoryStorage()
    node = RawNode(Config(id=2, peers=(1, 2, 3)), st, random.Random(0))
    persist(node, st)
    with pytest.raises(RaftError, match="local message"):
        node.step(Message(MessageType.HUP, to=2, from_=1))
    with pytest.raises(RaftError, match="for node 3"):
        node.step(Message(MessageType.APP, to=3, from_=1, term=1))
    with pytest.raises(ProposalDropped, match="not the leader"):
        node.propose(b"x")
    with pytest.raises(ProposalDropped, match="no leader"):
        node.read_index(b"r")
    with pytest.raises(ProposalDropped, match="context"):
        node.read_index(b"")
    with pytest.raises(ProposalDropped, match="no leader"):
        node.transfer_leader(3)
    with pytest.raises(ValueError, match="conf change"):
        ConfChange.decode(b"\x00")
    with pytest.raises(RaftError, match="beyond the last index"):
        node.step(Message(MessageType.HEARTBEAT, to=2, from_=1, term=1, commit=99))


def test_proposals_dropped_while_a_conf_change_is_pending() -> None:
    st = MemoryStorage()
    node = RawNode(Config(id=1, peers=(1, 2, 3), pre_vote=False), st, random.Random(0))
    persist(node, st)
    node.campaign()
    for m in node.ready().messages:
        node.step(Message(MessageType.VOTE_RESP, to=1, from_=m.to, term=m.term))
    assert node.state == StateType.LEADER
    # The leader's first entry is not applied yet: no membership change until it is.
    with pytest.raises(ProposalDropped, match="membership change is pending"):
        node.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))


def test_memory_storage_named_errors() -> None:
    st = MemoryStorage()
    st.append([Entry(1, i, data=b"%d" % i) for i in range(1, 11)])
    st.create_snapshot(5, st.initial_state()[1], b"s")
    st.compact(5)
    assert (st.first_index(), st.last_index(), st.term(5)) == (6, 10, 1)
    with pytest.raises(RaftCompacted):
        st.term(4)
    with pytest.raises(RaftCompacted):
        st.entries(5, 7, 100)
    with pytest.raises(RaftUnavailable):
        st.term(11)
    with pytest.raises(RaftUnavailable):
        st.entries(6, 12, 100)
    assert [e.index for e in st.entries(6, 11, 1)] == [6]  # max bytes still gives one
    st.append([Entry(2, 8, data=b"new")])  # conflicting suffix replaced
    assert st.last_index() == 8 and st.term(8) == 2


def test_restart_with_applied_keeps_membership_changes() -> None:
    st = MemoryStorage()
    node = RawNode(Config(id=1, peers=(1,)), st, random.Random(0))
    persist(node, st)
    node.campaign()
    persist(node, st)
    node.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 2))
    persist(node, st)
    assert node.conf_state().learners == (2,)
    restarted = RawNode(Config(id=1, applied=node.applied), st, random.Random(0))
    assert restarted.conf_state() == node.conf_state()
    assert not restarted.has_ready() or not restarted.ready().committed_entries
    with pytest.raises(RaftError, match="applied"):
        RawNode(Config(id=1, applied=99), st, random.Random(0))


def test_transport_reports_move_progress_back_to_probing() -> None:
    cluster = Cluster([1, 2, 3])
    run(cluster, [("campaign", 1), ("propose", 1, "a")])
    leader = cluster.nodes[1]
    pr = leader.raft.prs[2]
    assert pr.state == ProgressState.REPLICATE
    leader.report_unreachable(2)
    assert pr.state == ProgressState.PROBE
    pr.become_snapshot(4)
    leader.report_snapshot(2, failed=True)
    assert pr.state == ProgressState.PROBE and pr.probe_sent  # wait for a heartbeat
    run(cluster, [("tick", 1), ("propose", 1, "b"), ("expect_applied", {2: ["a", "b"]})])
