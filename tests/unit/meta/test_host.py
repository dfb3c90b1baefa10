"""The Multi-Raft host: three hosts in one process over ``InMemoryNetwork`` (messages go
through the real byte codec), on real LogStores in tmp directories, fsync on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from robustmq.errors import (
    ConfigError,
    MetaTimeout,
    MetaUnavailable,
    NotLeader,
    UnknownMetaCommand,
    UnknownMetaGroup,
)
from robustmq.meta.groups import encode_command
from robustmq.meta.host import HostConfig, InMemoryNetwork, MultiRaftHost
from robustmq.meta.raft import StateType
from tests.unit.meta.cluster_util import leader_of, until

PEERS = ((1, "127.0.0.1:1"), (2, "127.0.0.1:2"), (3, "127.0.0.1:3"))
GROUPS = ("cluster", "mqtt", "offsets")


class Cluster:
    def __init__(self, root: Path, snapshot_entries: int = 10_000) -> None:
        self.root = root
        self.snapshot_entries = snapshot_entries
        self.network = InMemoryNetwork()
        self.hosts: dict[int, MultiRaftHost] = {}

    async def start(self, node_id: int) -> MultiRaftHost:
        config = HostConfig(
            node_id=node_id,
            peers=PEERS,
            data_dir=str(self.root / f"n{node_id}"),
            tick_interval=0.02,
            snapshot_entries=self.snapshot_entries,
            proposal_timeout=5.0,
        )
        host = MultiRaftHost(config, self.network.transport(node_id))
        self.network.connect(host)
        self.hosts[node_id] = host
        await host.start()
        return host

    async def stop(self, node_id: int) -> None:
        host = self.hosts.pop(node_id)
        self.network.hosts.pop(node_id)
        await host.stop()

    async def leader(self, group: str) -> MultiRaftHost:
        found = await until(lambda: leader_of(self.hosts.values(), group), what=f"a {group} leader")
        assert isinstance(found, MultiRaftHost)
        return found


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path)
    for i in (1, 2, 3):
        await c.start(i)
    yield c
    for i in list(c.hosts):
        await c.stop(i)


async def test_every_group_elects_one_leader_and_entries_apply_everywhere(cluster: Cluster) -> None:
    for group in GROUPS:
        leader = await cluster.leader(group)
        assert (
            sum(h.groups[group].node.state == StateType.LEADER for h in cluster.hosts.values()) == 1
        )
        cmd = {
            "cluster": encode_command("config.set", key="k", value=group),
            "mqtt": encode_command("user.set", username="k", password_hash="x", superuser=True),
            "offsets": encode_command("offset.commit", group="k", topic="t", partition=0, offset=3),
        }[group]
        result = await leader.propose(group, cmd)
        assert result in ({"replaced": False}, {"key": "k/t/0"})
    await until(
        lambda: all(
            h.groups["cluster"].sm.read("config/k") == "cluster"
            and h.groups["mqtt"].sm.read("users/k") is not None
            and h.groups["offsets"].sm.read("offsets/k/t/0") == {"offset": 3, "metadata": ""}
            for h in cluster.hosts.values()
        ),
        what="entries applied on all hosts",
    )
    status = {s["group"]: s for s in leader.status()}
    assert set(status) == set(GROUPS)
    assert status["offsets"]["commit"] == status["offsets"]["applied"] > 0


async def test_follower_proposal_redirects_and_follower_reads_via_read_index(
    cluster: Cluster,
) -> None:
    leader = await cluster.leader("mqtt")
    follower = next(h for h in cluster.hosts.values() if h is not leader)
    with pytest.raises(NotLeader) as info:
        await follower.propose("mqtt", encode_command("user.delete", username="x"))
    assert info.value.leader_id == leader.config.node_id
    assert info.value.leader_address == f"127.0.0.1:{leader.config.node_id}"
    await leader.propose("mqtt", encode_command("acl.replace", rules=["allow all all #"]))
    # The follower asks the leader for its commit index, then waits to have applied it.
    assert (await follower.read("mqtt", "acl/rules"))["rules"] == ["allow all all #"]
    with pytest.raises(UnknownMetaGroup):
        await follower.read("nope", "x")


async def test_bad_command_fails_its_proposal_only(cluster: Cluster) -> None:
    leader = await cluster.leader("cluster")
    with pytest.raises(UnknownMetaCommand, match="node.fly"):
        await leader.propose("cluster", encode_command("node.fly"))
    assert await leader.propose("cluster", encode_command("config.set", key="a", value=1)) == {
        "replaced": False
    }


async def test_proposal_without_quorum_times_out(cluster: Cluster) -> None:
    leader = await cluster.leader("offsets")
    for i in cluster.hosts:
        if i != leader.config.node_id:
            cluster.network.disconnect(i)
    with pytest.raises(MetaTimeout, match="within 0.3 s"):
        await leader.propose(
            "offsets",
            encode_command("offset.commit", group="g", topic="t", partition=0, offset=1),
            timeout=0.3,
        )


async def test_restart_from_log_store_keeps_state(tmp_path: Path) -> None:
    c = Cluster(tmp_path)
    for i in (1, 2, 3):
        await c.start(i)
    leader = await c.leader("mqtt")
    for k in range(10):
        await leader.propose(
            "mqtt", encode_command("session.set", client_id=f"c{k}", expiry_interval=k, node_id=1)
        )
    for i in (1, 2, 3):
        await c.stop(i)
    for i in (1, 2, 3):
        await c.start(i)
    leader = await c.leader("mqtt")
    sessions = await leader.read("mqtt", "sessions")
    assert sorted(sessions) == [f"c{k}" for k in range(10)]
    await until(
        lambda: all(len(h.groups["mqtt"].sm.read("sessions")) == 10 for h in c.hosts.values())
    )
    for i in (1, 2, 3):
        await c.stop(i)


async def test_host_behind_a_compaction_catches_up_by_snapshot(tmp_path: Path) -> None:
    c = Cluster(tmp_path, snapshot_entries=5)
    for i in (1, 2, 3):
        await c.start(i)
    leader = await c.leader("mqtt")
    lagging = next(i for i in c.hosts if i != leader.config.node_id)
    c.network.disconnect(lagging)
    for k in range(30):
        await leader.propose(
            "mqtt", encode_command("user.set", username=f"u{k}", password_hash="h", superuser=False)
        )
    store = leader.groups["mqtt"].store
    assert store.first_index() > 2, "the leader compacted its log"
    assert leader.groups["mqtt"].snapshot_index >= 25
    c.network.connect(c.hosts[lagging])
    behind = c.hosts[lagging].groups["mqtt"]
    await until(lambda: len(behind.sm.read("users")) == 30, what="lagging host caught up")
    assert behind.store.snapshot().meta.index > 0, "caught up through InstallSnapshot"
    for i in (1, 2, 3):
        await c.stop(i)


async def test_single_node_is_a_one_member_group(tmp_path: Path) -> None:
    config = HostConfig(
        node_id=7, peers=((7, "127.0.0.1:7"),), data_dir=str(tmp_path), tick_interval=0.02
    )
    host = MultiRaftHost(config, InMemoryNetwork().transport(7))
    await host.start()
    try:
        assert await host.propose("cluster", encode_command("config.set", key="x", value=[1])) == {
            "replaced": False
        }
        assert await host.read("cluster", "config/x") == [1]
    finally:
        await host.stop()


async def test_a_single_node_sleeps_while_idle_and_still_answers(tmp_path: Path) -> None:
    """A group whose only member leads it has no one to heartbeat: once every group is
    one, the host does not wake every tick_interval for ticks that change nothing."""
    config = HostConfig(
        node_id=7, peers=((7, "127.0.0.1:7"),), data_dir=str(tmp_path), tick_interval=0.01
    )
    host = MultiRaftHost(config, InMemoryNetwork().transport(7))
    await host.start()
    try:
        lone = lambda: all(g.node.state == StateType.LEADER for g in host.groups.values())  # noqa: E731
        await until(lone, what="every group led by its one member")
        ticks = []
        for g in host.groups.values():
            tick = g.node.tick
            g.node.tick = lambda tick=tick: (ticks.append(1), tick())  # type: ignore[method-assign]
        await asyncio.sleep(0.3)  # thirty tick intervals
        assert len(ticks) <= len(host.groups)  # at most one round, as the loop went to sleep
        assert await host.propose("cluster", encode_command("config.set", key="x", value=2)) == {
            "replaced": False
        }
        assert await host.read("cluster", "config/x") == 2
    finally:
        await host.stop()


def test_host_config_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cluster.peers"):
        HostConfig(node_id=4, peers=PEERS, data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="meta.groups"):
        HostConfig(node_id=1, peers=PEERS, data_dir=str(tmp_path), groups=("kafka",))


async def test_a_failed_disk_write_stops_the_node_with_a_named_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = HostConfig(
        node_id=1, peers=((1, "127.0.0.1:1"),), data_dir=str(tmp_path), tick_interval=0.02
    )
    host = MultiRaftHost(config, InMemoryNetwork().transport(1))
    await host.start()
    store = host.groups["offsets"].store

    def broken_save(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    store.save = broken_save  # type: ignore[method-assign]
    cmd = encode_command("offset.commit", group="g", topic="t", partition=0, offset=1)
    with pytest.raises(MetaUnavailable, match="No space left"):
        await host.propose("offsets", cmd)
    with pytest.raises(MetaUnavailable, match="failed"):
        await host.read("cluster", "nodes")
    assert "its groups stop" in caplog.text
    del store.save
    await host.stop()
