"""The Meta Service over real grpc.aio servers: three meta nodes in one process on
127.0.0.1 free ports, reached only through ``MetaClient``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from robustmq.errors import MetaUnavailable, UnknownMetaCommand, UnknownMetaGroup
from robustmq.meta.client import MetaClient
from robustmq.meta.groups import encode_command
from robustmq.meta.host import HostConfig, MultiRaftHost
from robustmq.meta.service import GrpcTransport, MetaServer
from tests.conftest import free_port
from tests.unit.meta.cluster_util import leader_of, until


class GrpcCluster:
    def __init__(self, root: Path, snapshot_entries: int = 10_000) -> None:
        self.root = root
        self.snapshot_entries = snapshot_entries
        self.peers = tuple((i, f"127.0.0.1:{free_port()}") for i in (1, 2, 3))
        self.servers: dict[int, MetaServer] = {}

    async def start(self, node_id: int) -> None:
        config = HostConfig(
            node_id=node_id,
            peers=self.peers,
            data_dir=str(self.root / f"n{node_id}"),
            tick_interval=0.05,
            snapshot_entries=self.snapshot_entries,
        )
        transport = GrpcTransport(node_id, config.addresses)
        server = MetaServer(MultiRaftHost(config, transport), transport, config.addresses[node_id])
        await server.start()
        self.servers[node_id] = server

    async def stop(self, node_id: int) -> None:
        await self.servers.pop(node_id).stop()

    def hosts(self) -> list[MultiRaftHost]:
        return [s.host for s in self.servers.values()]

    @property
    def addresses(self) -> list[str]:
        return [a for _, a in self.peers]


@pytest.fixture
async def grpc_cluster(tmp_path: Path) -> AsyncIterator[GrpcCluster]:
    c = GrpcCluster(tmp_path)
    for i in (1, 2, 3):
        await c.start(i)
    yield c
    for i in list(c.servers):
        await c.stop(i)


async def test_writes_through_any_node_survive_the_leader_stopping(
    grpc_cluster: GrpcCluster,
) -> None:
    c = grpc_cluster
    leader = await until(lambda: leader_of(c.hosts(), "mqtt"), what="an mqtt leader")
    follower_address = next(a for i, a in c.peers if i != leader.config.node_id)
    # The client starts at a follower and must follow the redirect to the leader.
    client = MetaClient([follower_address] + c.addresses, timeout=2.0)
    acked = []
    try:
        for k in range(20):
            cmd = encode_command("session.set", client_id=f"c{k}", expiry_interval=k, node_id=1)
            assert await client.propose("mqtt", cmd) == {"replaced": False}
            acked.append(f"c{k}")
        await c.stop(leader.config.node_id)
        new = await until(lambda: leader_of(c.hosts(), "mqtt"), what="a new mqtt leader")
        assert new.config.node_id != leader.config.node_id
        for k in range(20, 30):
            cmd = encode_command("session.set", client_id=f"c{k}", expiry_interval=k, node_id=1)
            assert await client.propose("mqtt", cmd) == {"replaced": False}
            acked.append(f"c{k}")
        sessions = await client.read("mqtt", "sessions")
        assert sorted(sessions) == sorted(acked)
        assert await client.read("mqtt", "sessions/c25") == {
            "client_id": "c25",
            "expiry_interval": 25,
            "node_id": 1,
            "subscriptions": {},
        }
        node_id, groups = await client.status(c.peers[new.config.node_id - 1][1])
        assert node_id == new.config.node_id
        mqtt = next(g for g in groups if g.group == "mqtt")
        assert mqtt.role == "leader" and mqtt.leader_id == node_id and mqtt.applied >= 30
    finally:
        await client.close()


async def test_errors_cross_the_wire_by_name(grpc_cluster: GrpcCluster) -> None:
    client = MetaClient(grpc_cluster.addresses, timeout=2.0)
    try:
        await until(lambda: leader_of(grpc_cluster.hosts(), "cluster"), what="a cluster leader")
        with pytest.raises(UnknownMetaCommand, match="node.fly"):
            await client.propose("cluster", encode_command("node.fly"))
        with pytest.raises(UnknownMetaGroup, match="kafka"):
            await client.read("kafka", "topics")
    finally:
        await client.close()


async def test_client_gives_up_with_a_named_error_when_nothing_answers() -> None:
    client = MetaClient([f"127.0.0.1:{free_port()}"], timeout=0.2, retries=2, backoff=0.01)
    try:
        with pytest.raises(MetaUnavailable, match="after 2 attempts"):
            await client.read("cluster", "nodes")
    finally:
        await client.close()


async def test_restarted_node_gets_a_snapshot_larger_than_grpcs_default_limit(
    tmp_path: Path,
) -> None:
    c = GrpcCluster(tmp_path, snapshot_entries=4)
    for i in (1, 2, 3):
        await c.start(i)
    client = MetaClient(c.addresses, timeout=5.0)
    try:
        leader = await until(lambda: leader_of(c.hosts(), "mqtt"), what="an mqtt leader")
        down = next(i for i in (1, 2, 3) if i != leader.config.node_id)
        await c.stop(down)
        big = "x" * (5 << 20)  # over gRPC's default 4 MiB message limit
        for k in range(8):
            cmd = encode_command(
                "retained.set", topic=f"t/{k}", payload=big if k == 0 else "", qos=0, properties={}
            )
            await client.propose("mqtt", cmd)
        assert leader.groups["mqtt"].store.first_index() > 2
        await c.start(down)
        behind = c.servers[down].host.groups["mqtt"]
        await until(
            lambda: len(behind.sm.read("retained")) == 8, what="the restarted node caught up"
        )
        assert behind.sm.read("retained/t/0")["payload"] == big
        assert behind.store.snapshot().meta.index > 0
    finally:
        await client.close()
        for i in list(c.servers):
            await c.stop(i)
