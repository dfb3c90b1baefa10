"""The meta role's configuration: ``[cluster]`` peers parsed and checked, and
``start_meta_node`` refusing settings a cluster cannot run with."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustmq.config import load_config
from robustmq.errors import ConfigError
from robustmq.meta.client import MetaClient
from robustmq.meta.groups import encode_command
from robustmq.meta.service import start_meta_node
from tests.conftest import free_port


def test_peers_parse_from_toml_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[cluster]\npeers = ["1@127.0.0.1:1228", "2@10.0.0.2:1229"]\n')
    assert load_config(path, environ={}).cluster.peer_addresses() == (
        (1, "127.0.0.1:1228"),
        (2, "10.0.0.2:1229"),
    )
    env = {"ROBUSTMQ_CLUSTER_PEERS": "3@h:1, 4@h:2", "ROBUSTMQ_CLUSTER_GRPC_PORT": "0"}
    config = load_config(environ=env)
    assert config.cluster.peer_addresses() == ((3, "h:1"), (4, "h:2"))
    assert config.cluster.grpc_port == 0


@pytest.mark.parametrize(
    ("peers", "match"),
    [
        ("x@h:1", "entries like 1@127.0.0.1:1228"),
        ("0@h:1", "entries like"),
        ("1@h", "entries like"),
        ("1@:5", "entries like"),
        ("1@h:1,1@h:2", "distinct node ids"),
    ],
)
def test_bad_peers_name_the_key(peers: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        load_config(environ={"ROBUSTMQ_CLUSTER_PEERS": peers})
    assert "cluster.peers" in str(info.value)


async def test_start_meta_node_refuses_what_cannot_run(tmp_path: Path) -> None:
    peers = ((1, "127.0.0.1:1"), (2, "127.0.0.1:2"))
    with pytest.raises(ConfigError, match="cluster.grpc_port"):
        await start_meta_node(1, peers, "127.0.0.1", 0, str(tmp_path))
    # A node the peers do not name joins them, on its own grpc_port: it needs one.
    with pytest.raises(ConfigError, match="cluster.grpc_port"):
        await start_meta_node(3, peers, "127.0.0.1", 0, str(tmp_path))


async def test_a_node_the_peers_do_not_name_waits_to_be_added(tmp_path: Path) -> None:
    port = free_port()
    peers = ((1, f"127.0.0.1:{free_port()}"), (2, f"127.0.0.1:{free_port()}"))
    server = await start_meta_node(3, peers, "127.0.0.1", port, str(tmp_path))
    try:
        assert server.port == port and server.host.config.join
        for g in server.host.status():
            # No bootstrap: no membership, no leader, nothing in the log.
            assert (g["voters"], g["learners"], g["leader_id"], g["commit"]) == ([], [], 0, 0)
    finally:
        await server.stop()


async def test_single_node_serves_grpc_on_grpc_port(tmp_path: Path) -> None:
    port = free_port()
    server = await start_meta_node(5, (), "127.0.0.1", port, str(tmp_path))
    client = MetaClient([f"127.0.0.1:{port}"])
    try:
        assert server.port == port
        await client.propose("cluster", encode_command("config.set", key="a", value="b"))
        assert await client.read("cluster", "config/a") == "b"
        node_id, groups = await client.status(f"127.0.0.1:{port}")
        assert node_id == 5 and {g.role for g in groups} == {"leader"}
    finally:
        await client.close()
        await server.stop()
