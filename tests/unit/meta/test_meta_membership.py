"""Membership changes through the Meta Service, over real grpc.aio servers on 127.0.0.1
free ports: a fourth node that joins is added to every group as a learner, catches up,
becomes a voter and counts for the quorum; a node is removed and writes go on; a node
whose address no original member was configured with is reached through the address the
membership change carries; and the refusals (bad id or address, the last voter, a node
that never catches up); a watch served by a node that is removed goes on at a member."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from robustmq.errors import MembershipChangeRefused, MetaTimeout, MetaUnavailable, NotLeader
from robustmq.meta.client import MetaClient, WatchEvent
from robustmq.meta.groups import GROUPS, encode_command
from robustmq.meta.host import HostConfig, MultiRaftHost
from robustmq.meta.raft import ConfChange, ConfChangeType
from robustmq.meta.service import GrpcTransport, MetaServer, start_meta_node
from tests.conftest import free_port
from tests.unit.meta.cluster_util import leader_of, until
from tests.unit.meta.test_grpc import GrpcCluster


def _session(k: int) -> bytes:
    return encode_command("session.set", client_id=f"c{k}", expiry_interval=k, node_id=1)


async def _join(c: GrpcCluster, node_id: int, known: tuple[int, ...]) -> MetaServer:
    """Start ``node_id`` in join mode, knowing the addresses of ``known`` only."""
    address = f"127.0.0.1:{free_port()}"
    addresses = {i: f"127.0.0.1:{s.port}" for i, s in c.servers.items()}
    peers = (*((i, addresses[i]) for i in known), (node_id, address))
    config = HostConfig(
        node_id=node_id,
        peers=peers,
        data_dir=str(c.root / f"n{node_id}"),
        tick_interval=0.05,
        join=True,
    )
    transport = GrpcTransport(node_id, config.addresses)
    server = MetaServer(MultiRaftHost(config, transport), transport, address)
    await server.start()
    c.servers[node_id] = server
    return server


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[GrpcCluster]:
    c = GrpcCluster(tmp_path)
    for i in (1, 2, 3):
        await c.start(i)
    yield c
    for i in list(c.servers):
        await c.stop(i)


async def test_a_joining_node_catches_up_votes_and_a_removal_keeps_writes_going(
    cluster: GrpcCluster,
) -> None:
    c = cluster
    client = MetaClient(c.addresses, timeout=3.0, retries=60, backoff=0.05)
    try:
        await until(lambda: leader_of(c.hosts(), "mqtt"), what="an mqtt leader")
        for k in range(30):
            await client.propose("mqtt", _session(k))
        joined = await _join(c, 4, known=(1, 2, 3))
        address = f"127.0.0.1:{joined.port}"
        for group in GROUPS:
            assert await client.add_node(group, 4, address) == {
                "voters": [1, 2, 3, 4],
                "learners": [],
            }
        # Idempotent: adding a voter again changes nothing.
        assert (await client.add_node("mqtt", 4, address))["voters"] == [1, 2, 3, 4]
        mqtt4 = joined.host.groups["mqtt"]
        await until(lambda: len(mqtt4.sm.read("sessions")) == 30, what="node 4 caught up")
        await until(
            lambda: all(g["voters"] == [1, 2, 3, 4] for g in joined.host.status()),
            what="node 4 applied its promotion in every group",
        )
        # Four voters need three: with two of the original members down, node 4 is the
        # third, so every write acknowledged below was acknowledged by it too.
        leader = await until(lambda: leader_of(c.hosts(), "mqtt"), what="an mqtt leader")
        down = [i for i in (1, 2, 3) if i != leader.config.node_id][:1]
        await c.stop(down[0])
        for k in range(30, 40):
            await client.propose("mqtt", _session(k))
        assert mqtt4.node.raft.log.committed >= leader.groups["mqtt"].node.committed - 1
        # Remove the stopped node: three voters again, of which two are needed.
        for group in GROUPS:
            membership = await client.remove_node(group, down[0])
            assert down[0] not in membership["voters"] + membership["learners"]
        assert await client.remove_node("mqtt", down[0]) == membership  # idempotent
        for k in range(40, 50):
            await client.propose("mqtt", _session(k))
        sessions = await MetaClient([address], timeout=3.0).read("mqtt", "sessions")
        assert sorted(sessions) == sorted(f"c{k}" for k in range(50))
    finally:
        await client.close()


async def test_a_node_added_later_is_reached_through_the_address_it_was_added_with(
    cluster: GrpcCluster,
) -> None:
    c = cluster
    client = MetaClient(c.addresses, timeout=3.0, retries=60, backoff=0.05)
    try:
        await until(lambda: leader_of(c.hosts(), "cluster"), what="a cluster leader")
        four = await _join(c, 4, known=(1, 2, 3))
        await client.add_node("cluster", 4, f"127.0.0.1:{four.port}")
        # Node 5 knows only node 4; members 1-3 learn node 5's address from the change.
        five = await _join(c, 5, known=(4,))
        await client.add_node("cluster", 5, f"127.0.0.1:{five.port}")
        for host in c.hosts():
            assert host.addresses[5] == f"127.0.0.1:{five.port}"
        await client.propose("cluster", encode_command("config.set", key="k", value="v"))
        await until(
            lambda: five.host.groups["cluster"].sm.read("config") == {"k": "v"},
            what="node 5 applied the write",
        )
    finally:
        await client.close()


async def test_membership_refusals(cluster: GrpcCluster, tmp_path: Path) -> None:
    c = cluster
    client = MetaClient(c.addresses, timeout=3.0)
    try:
        leader = await until(lambda: leader_of(c.hosts(), "offsets"), what="an offsets leader")
        follower = next(h for h in c.hosts() if h is not leader)
        with pytest.raises(NotLeader):
            await follower.add_node("offsets", 7, "127.0.0.1:1")
        with pytest.raises(MembershipChangeRefused, match="host:port"):
            await client.add_node("offsets", 7, "nowhere")
        with pytest.raises(MembershipChangeRefused, match="> 0"):
            await leader.add_node("offsets", 0, "127.0.0.1:1")
        # A node that never answers stays a learner; the change times out.
        with pytest.raises(MetaTimeout, match="ADD_NODE of node 7"):
            await client.add_node("offsets", 7, f"127.0.0.1:{free_port()}", timeout=3.0)
        now = await until(lambda: leader_of(c.hosts(), "offsets"), what="an offsets leader")
        assert now.membership("offsets") == {"voters": [1, 2, 3], "learners": [7]}
        assert (await client.remove_node("offsets", 7))["learners"] == []
    finally:
        await client.close()
    port = free_port()
    single = await start_meta_node(1, (), "127.0.0.1", port, str(tmp_path / "single"))
    try:
        with pytest.raises(MembershipChangeRefused, match="last voter"):
            await single.host.remove_node("mqtt", 1)
    finally:
        await single.stop()


async def test_a_watch_served_by_a_node_that_is_removed_goes_on_at_a_member(
    cluster: GrpcCluster,
) -> None:
    c = cluster
    client = MetaClient(c.addresses, timeout=3.0, retries=60, backoff=0.05)
    try:
        leader = await until(lambda: leader_of(c.hosts(), "mqtt"), what="an mqtt leader")
        removed = next(i for i in (1, 2, 3) if i != leader.config.node_id)
        order = [c.peers[removed - 1][1], *(a for i, a in c.peers if i != removed)]
        watcher = MetaClient(order, timeout=3.0, backoff=0.05)
        events: list[WatchEvent] = []
        seen = asyncio.Event()

        async def consume() -> None:
            async for ev in watcher.watch("mqtt"):
                events.append(ev)
                if ev.command == _session(2):
                    seen.set()
                if ev.command == _session(9):
                    return

        async def write() -> None:
            for k in range(5):
                await client.propose("mqtt", _session(k))
            await asyncio.wait_for(seen.wait(), 30)  # it is streaming from the node
            await client.remove_node("mqtt", removed)
            for k in range(5, 10):
                await client.propose("mqtt", _session(k))

        try:
            async with asyncio.timeout(60):
                await asyncio.gather(consume(), write())
        finally:
            await watcher.close()
        assert [e.index for e in events] == list(range(1, len(events) + 1))
        changes = [ConfChange.decode(e.command) for e in events if e.kind == "conf_change"]
        assert changes[-1] == ConfChange(ConfChangeType.REMOVE_NODE, removed)
        assert c.servers[removed].host.groups["mqtt"].watchers == []
        with pytest.raises(MetaUnavailable, match="removed"):
            c.servers[removed].host.watch("mqtt", 1)
    finally:
        await client.close()
