"""``robustmq/meta/registry.py`` in one process: a node registering and heartbeating on a
real one-member ``MultiRaftHost``, failures retried and logged at most once a minute, a
removed node not registered again, ``describe``'s alive rule and ``read_nodes``' fallback
to the local replica. The same with real processes is tests/cluster/test_node_registry.py."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from robustmq.errors import ConfigError, InvalidMetaCommand, MetaTimeout, MetaUnavailable
from robustmq.meta.groups import ClusterStateMachine, encode_command
from robustmq.meta.host import HostConfig, InMemoryNetwork, MultiRaftHost
from robustmq.meta.registry import (
    ALIVE_INTERVALS,
    HEARTBEAT_INTERVAL,
    NodeInfo,
    NodeRegistry,
    describe,
    read_nodes,
)

INFO = NodeInfo(
    node_id=4,
    address="127.0.0.1:1228",
    roles=("meta", "broker"),
    listeners=(("mqtt", "0.0.0.0", 1883), ("grpc", "127.0.0.1", 1228)),
    version="0.1.0",
    started_ms=1_000,
)
LIMIT_MS = int(ALIVE_INTERVALS * HEARTBEAT_INTERVAL * 1000)


async def _until(check: Any, what: str, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"{what} within {timeout} s"
        await asyncio.sleep(0.01)


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[MultiRaftHost]:
    config = HostConfig(
        node_id=4, peers=((4, "127.0.0.1:1228"),), data_dir=str(tmp_path), tick_interval=0.02
    )
    h = MultiRaftHost(config, InMemoryNetwork().transport(4))
    await h.start()
    yield h
    await h.stop()


class Clock:
    def __init__(self) -> None:
        self.ms = 5_000

    def __call__(self) -> int:
        self.ms += 1
        return self.ms


async def test_a_node_registers_then_heartbeats_until_stopped(host: MultiRaftHost) -> None:
    clock = Clock()
    registry = NodeRegistry(INFO, host, interval=0.02, clock=clock)
    registry.start()
    await asyncio.wait_for(registry.registered.wait(), 20)
    await _until(lambda: registry.heartbeats >= 3, "three heartbeats")
    await registry.stop()
    record = await host.read("cluster", "nodes/4")
    assert record == INFO.record(record["heartbeat"])
    assert record["listeners"][0] == {"name": "mqtt", "host": "0.0.0.0", "port": 1883}
    assert 5_000 < record["heartbeat"] <= clock.ms
    assert registry.failures == 0


class Flaky:
    """A Meta Service that fails the first ``failures`` proposals, then answers as
    ``ClusterStateMachine`` does."""

    def __init__(self, failures: int) -> None:
        self.left = failures
        self.sm = ClusterStateMachine()
        self.proposals: list[str] = []

    async def propose(self, group: str, command: bytes) -> Any:
        assert group == "cluster"
        self.proposals.append(command.decode())
        if self.left:
            self.left -= 1
            raise MetaTimeout("no quorum")
        return self.sm.apply(command)

    async def read(self, group: str, key: str) -> Any:
        return self.sm.read(key)


async def test_failures_are_retried_and_logged_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    meta = Flaky(failures=5)
    registry = NodeRegistry(INFO, meta, interval=0.01)
    with caplog.at_level(logging.WARNING, "robustmq.meta.registry"):
        registry.start()
        await asyncio.wait_for(registry.registered.wait(), 20)
        await _until(lambda: registry.heartbeats >= 1, "a heartbeat")
        await registry.stop()
    assert registry.failures == 5
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["node 4: registration failed: no quorum"]
    # One proposal per attempt: five failed registrations, the one taken, then heartbeats.
    assert all('"node.register"' in p for p in meta.proposals[:6])
    assert all('"node.heartbeat"' in p for p in meta.proposals[6:])
    assert meta.sm.read("nodes/4")["version"] == "0.1.0"


async def test_a_removed_node_is_not_registered_again(caplog: pytest.LogCaptureFixture) -> None:
    meta = Flaky(failures=0)
    registry = NodeRegistry(INFO, meta, interval=0.01)
    registry.start()
    await asyncio.wait_for(registry.registered.wait(), 20)
    meta.sm.apply(encode_command("node.remove", id=4))
    with caplog.at_level(logging.WARNING, "robustmq.meta.registry"):
        await _until(lambda: len(meta.proposals) >= 5, "heartbeats after the removal")
        await registry.stop()
    assert meta.sm.read("nodes") == {}
    assert "node 4 is not in the cluster's node registry" in caplog.text


def test_alive_is_a_heartbeat_within_the_limit_by_the_answering_clock() -> None:
    now = 100_000
    table = {
        "9": {**INFO.record(now - LIMIT_MS - 1), "id": 9},
        "4": INFO.record(now - LIMIT_MS),
        # A record registered without the optional fields (older command).
        "2": {"id": 2, "address": "", "roles": ["broker"], "heartbeat": now + 500},
    }
    out = describe(table, now, {4: ["mqtt", "cluster"], 7: ["offsets"]})
    assert [n["node_id"] for n in out] == [2, 4, 9]
    assert [n["alive"] for n in out] == [True, True, False]
    assert out[1]["leader_of"] == ["cluster", "mqtt"] and out[0]["leader_of"] == []
    assert out[1]["started_at"] == 1.0 and out[1]["last_heartbeat_at"] == (now - LIMIT_MS) / 1000
    assert out[1]["listeners"][1] == {"name": "grpc", "host": "127.0.0.1", "port": 1228}
    assert out[0]["listeners"] == [] and out[0]["version"] == ""


class Unreadable:
    async def propose(self, group: str, command: bytes) -> Any:
        raise MetaUnavailable("down")

    async def read(self, group: str, key: str) -> Any:
        raise MetaUnavailable("no leader")


async def test_read_nodes_falls_back_to_the_local_replica_only_when_there_is_one() -> None:
    meta = Flaky(failures=0)
    meta.sm.apply(encode_command("node.register", **INFO.record(7)))
    assert (await read_nodes(meta, None))["4"]["heartbeat"] == 7
    local = {"4": INFO.record(3)}
    assert await read_nodes(Unreadable(), lambda: local) is local
    with pytest.raises(MetaUnavailable, match="node registry cannot be read: no leader"):
        await read_nodes(Unreadable(), None)


def test_register_refuses_optional_fields_of_the_wrong_type() -> None:
    sm = ClusterStateMachine()
    for bad in ({"listeners": "mqtt"}, {"version": 1}, {"started": "now"}):
        with pytest.raises(InvalidMetaCommand, match=next(iter(bad))):
            sm.apply(encode_command("node.register", **{**INFO.record(1), **bad}))
    assert sm.read("nodes") == {}


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ConfigError, match="node.id"):
        NodeInfo(node_id=0, address="", roles=(), listeners=(), version="", started_ms=0)
    with pytest.raises(ConfigError, match="started_ms"):
        NodeInfo(node_id=1, address="", roles=(), listeners=(), version="", started_ms=-1)
    with pytest.raises(ConfigError, match="registry.interval"):
        NodeRegistry(INFO, Flaky(0), interval=0)
