"""Three real ``robustmq-server start`` processes forming one meta cluster on 127.0.0.1:
one config file with ``[cluster] peers``, a ``--node-id`` and ``--data-dir`` per process.
The leader is SIGKILLed while a ``MetaClient`` writes; every acknowledged write must be
readable afterwards, and the killed node, restarted, catches up."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from robustmq.errors import MetaError, MetaUnavailable
from robustmq.meta.client import MetaClient
from robustmq.meta.groups import encode_command
from tests.conftest import free_port

# Sessions written straight into the mqtt group name a node that runs no broker: the
# nodes' brokers load (and expire) only the sessions of their own node id.
NO_BROKER = 99

SERVER = [sys.executable, "-m", "robustmq.cli.server"]


class Processes:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ports = {i: free_port() for i in (1, 2, 3)}
        self.config = root / "cluster.toml"
        peers = ", ".join(f'"{i}@127.0.0.1:{p}"' for i, p in self.ports.items())
        self.config.write_text(f'[cluster]\npeers = [{peers}]\nbind = "127.0.0.1"\n')
        self.procs: dict[int, subprocess.Popen[str]] = {}

    def address(self, node_id: int) -> str:
        return f"127.0.0.1:{self.ports[node_id]}"

    def start(self, node_id: int) -> None:
        env = dict(os.environ)
        env.update(
            ROBUSTMQ_MQTT_PORT="0",
            ROBUSTMQ_MQTT_WS_PORT="0",
            ROBUSTMQ_KAFKA_PORT="0",
            ROBUSTMQ_HTTP_PORT="0",
            ROBUSTMQ_MQTT_SYS_INTERVAL="0",
        )
        proc = subprocess.Popen(
            [
                *SERVER,
                "start",
                "--config",
                str(self.config),
                "--node-id",
                str(node_id),
                "--data-dir",
                str(self.root / f"n{node_id}"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.procs[node_id] = proc
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        lines = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if f"grpc listening on {self.address(node_id)}" in line:
                return
        proc.kill()
        raise AssertionError(f"node {node_id} did not start: {''.join(lines)}")

    def kill(self, node_id: int) -> None:
        proc = self.procs.pop(node_id)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs = {}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Processes]:
    c = Processes(tmp_path)
    try:
        for i in (1, 2, 3):
            c.start(i)
        yield c
    finally:
        c.stop_all()


async def _leader(client: MetaClient, c: Processes, group: str, timeout: float = 20) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for i in c.procs:
            try:
                _, groups = await client.status(c.address(i))
            except MetaUnavailable:  # a node still starting or just killed
                continue
            g = next(g for g in groups if g.group == group)
            if g.role == "leader":
                return i
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {group} leader within {timeout} s")


@pytest.mark.timeout(180)
async def test_sigkill_the_leader_while_writing_loses_no_acknowledged_write(
    cluster: Processes,
) -> None:
    c = cluster
    client = MetaClient([c.address(i) for i in (1, 2, 3)], timeout=2.0, retries=60, backoff=0.1)
    acked: list[str] = []
    failed: list[str] = []
    try:
        leader = await _leader(client, c, "mqtt")

        async def write(start: int, count: int) -> None:
            for k in range(start, start + count):
                cmd = encode_command(
                    "session.set", client_id=f"c{k}", expiry_interval=86400, node_id=NO_BROKER
                )
                try:
                    await client.propose("mqtt", cmd)
                except MetaError:
                    failed.append(f"c{k}")  # outcome unknown: may or may not be applied
                else:
                    acked.append(f"c{k}")

        writer = asyncio.create_task(write(0, 200))
        while len(acked) < 30:
            await asyncio.sleep(0.01)
        c.kill(leader)
        await writer
        assert len(acked) >= 150, f"only {len(acked)} writes acknowledged ({len(failed)} failed)"
        new_leader = await _leader(client, c, "mqtt")
        assert new_leader != leader
        sessions = await client.read("mqtt", "sessions")
        missing = sorted(set(acked) - set(sessions))
        assert not missing, f"acknowledged writes lost: {missing}"
        assert set(sessions) <= set(acked) | set(failed)

        c.start(leader)
        _, groups = await client.status(c.address(new_leader))
        commit = next(g for g in groups if g.group == "mqtt").commit
        deadline = time.monotonic() + 30
        while True:
            try:
                _, groups = await client.status(c.address(leader))
            except MetaUnavailable:
                groups = []  # its channel is still backing off from the kill
            if any(g.group == "mqtt" and g.applied >= commit for g in groups):
                break
            assert time.monotonic() < deadline, "the restarted node did not catch up"
            await asyncio.sleep(0.1)
    finally:
        await client.close()
