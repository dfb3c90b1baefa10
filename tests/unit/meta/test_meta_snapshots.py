"""When the Multi-Raft host snapshots a group (entries, bytes, or asked to) and what its
snapshots carry besides the state machine: the members' addresses, so that a node caught
up by snapshot can reach members added before it. One host on a real LogStore, fsync on;
the address book's encoding on its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustmq.errors import ConfigError, RaftError
from robustmq.meta.groups import MqttStateMachine, encode_command
from robustmq.meta.host import (
    HostConfig,
    InMemoryNetwork,
    MultiRaftHost,
    unwrap_snapshot,
    wrap_snapshot,
)
from tests.unit.meta.cluster_util import until


async def _single(tmp_path: Path, **settings: int) -> MultiRaftHost:
    network = InMemoryNetwork()
    config = HostConfig(node_id=1, peers=((1, "127.0.0.1:1"),), data_dir=str(tmp_path), **settings)
    host = MultiRaftHost(config, network.transport(1))
    network.connect(host)
    await host.start()
    return host


def _user(k: int, size: int = 1) -> bytes:
    return encode_command("user.set", username=f"u{k}", password_hash="h" * size, superuser=False)


async def test_a_snapshot_every_snapshot_entries(tmp_path: Path) -> None:
    host = await _single(tmp_path, snapshot_entries=10)
    try:
        for k in range(25):
            await host.propose("mqtt", _user(k))
        g = host.groups["mqtt"]
        # Bootstrap entry + no-op + 25 commands = 27: snapshots at 10 and 20 (or later,
        # taken between rounds), never more than snapshot_entries behind.
        await until(lambda: g.snapshot_index >= 20, what="a second snapshot")
        assert g.snapshot_index <= 27
        assert g.store.first_index() == g.snapshot_index + 1
        assert host.groups["offsets"].snapshot_index == 0
    finally:
        await host.stop()


async def test_a_snapshot_after_snapshot_bytes_of_commands(tmp_path: Path) -> None:
    host = await _single(tmp_path, snapshot_bytes=10_000)
    try:
        g = host.groups["mqtt"]
        for k in range(3):  # about 9,200 bytes of commands
            await host.propose("mqtt", _user(k, 3_000))
        assert g.snapshot_index == 0 and g.applied_bytes > 9_000
        await host.propose("mqtt", _user(3, 3_000))
        await until(lambda: g.snapshot_index > 0, what="a snapshot")
        assert g.applied_bytes == 0
    finally:
        await host.stop()


async def test_a_snapshot_on_request_and_a_restart_from_it(tmp_path: Path) -> None:
    host = await _single(tmp_path)
    try:
        for k in range(5):
            await host.propose("mqtt", _user(k))
        index = await host.snapshot("mqtt")
        assert index == host.groups["mqtt"].node.applied == 7
        assert await host.snapshot("mqtt") == index  # nothing new: the same snapshot
        await host.propose("mqtt", _user(5))
    finally:
        await host.stop()
    again = await _single(tmp_path)
    try:
        assert again.groups["mqtt"].snapshot_index == index
        assert sorted(await again.read("mqtt", "users")) == [f"u{k}" for k in range(6)]
    finally:
        await again.stop()


def test_snapshots_carry_the_address_book() -> None:
    sm = MqttStateMachine()
    sm.apply(_user(1))
    data = wrap_snapshot({2: "10.0.0.2:1228", 1: "10.0.0.1:1228"}, sm.snapshot())
    book, sm_data = unwrap_snapshot(data)
    assert book == {1: "10.0.0.1:1228", 2: "10.0.0.2:1228"}
    assert sm_data == sm.snapshot()
    # A snapshot from before the address book: the state machine's bytes alone.
    assert unwrap_snapshot(sm.snapshot()) == ({}, sm.snapshot())
    with pytest.raises(RaftError, match="cut short"):
        unwrap_snapshot(data[:6])
    with pytest.raises(RaftError, match="bad address book"):
        unwrap_snapshot(data[:9] + b"!" + data[10:])


def test_bad_host_settings_name_the_key(tmp_path: Path) -> None:
    peers = ((1, "127.0.0.1:1"),)
    for key, value in (
        ("snapshot_bytes", 0),
        ("snapshot_entries", 0),
        ("membership_timeout", 0),
    ):
        with pytest.raises(ConfigError, match=f"meta.{key}"):
            HostConfig(node_id=1, peers=peers, data_dir=str(tmp_path), **{key: value})
    with pytest.raises(ConfigError, match="a member to join"):
        HostConfig(node_id=1, peers=peers, data_dir=str(tmp_path), join=True)
