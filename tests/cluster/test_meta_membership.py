"""Meta Service membership with real ``robustmq-server`` processes on 127.0.0.1.

A fourth node, started with the three members' config but not named in it (so it joins
instead of bootstrapping), is added with ``robustmq-ctl cluster node add`` (through node 1's
HTTP API), catches up and becomes a voter; one original member is removed with
``robustmq-ctl cluster node remove`` and another killed, so that the writes that go on
need the new node's vote. Then the issue's proof for lost data: a follower is SIGKILLed,
its data directory deleted, the node removed and re-added under its id; it catches up by
InstallSnapshot (the logs were compacted on purpose) and every acknowledged write is
readable on it. And a watch stream whose node is SIGKILLed resumes on another member with
no gap and no duplicate; bad membership requests get a clear error."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import orjson
import pytest

from robustmq.errors import MetaError, MetaUnavailable
from robustmq.meta.client import GroupStatus, MetaClient, WatchEvent
from robustmq.meta.groups import GROUPS, encode_command
from tests.conftest import free_port
from tests.integration.test_cli import _stop
from tests.integration.test_http_api import start_server

# Sessions written straight into the mqtt group name a node that runs no broker: the
# nodes' brokers load (and expire) only the sessions of their own node id.
NO_BROKER = 99

SERVER = [sys.executable, "-m", "robustmq.cli.server"]
CTL = [sys.executable, "-m", "robustmq.cli.ctl"]


class Processes:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ports = {i: free_port() for i in (1, 2, 3, 4)}
        self.http_port = free_port()
        self.config = self._config("cluster.toml", (1, 2, 3))
        self.procs: dict[int, subprocess.Popen[str]] = {}

    def _config(self, name: str, members: tuple[int, ...]) -> Path:
        path = self.root / name
        peers = ", ".join(f'"{i}@127.0.0.1:{self.ports[i]}"' for i in members)
        path.write_text(f'[cluster]\npeers = [{peers}]\nbind = "127.0.0.1"\n')
        return path

    def address(self, node_id: int) -> str:
        return f"127.0.0.1:{self.ports[node_id]}"

    def data_dir(self, node_id: int) -> Path:
        return self.root / f"n{node_id}"

    def start(self, node_id: int, config: Path | None = None) -> None:
        """Start ``node_id`` with ``config`` (the members' file by default); node 1 also
        serves the HTTP API. A node the config does not name joins on its own port."""
        env = dict(os.environ)
        env.update(
            ROBUSTMQ_MQTT_PORT="0",
            ROBUSTMQ_MQTT_WS_PORT="0",
            ROBUSTMQ_KAFKA_PORT="0",
            ROBUSTMQ_HTTP_PORT=str(self.http_port) if node_id == 1 else "0",
            ROBUSTMQ_MQTT_SYS_INTERVAL="0",
        )
        args = [
            *SERVER,
            "start",
            "--config",
            str(config or self.config),
            "--node-id",
            str(node_id),
            "--data-dir",
            str(self.data_dir(node_id)),
            "--grpc-port",
            str(self.ports[node_id]),
        ]
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
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

    def ctl(self, *args: str) -> str:
        done = subprocess.run(
            [*CTL, "--server", f"http://127.0.0.1:{self.http_port}", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

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


async def _groups(client: MetaClient, c: Processes, node_id: int) -> dict[str, GroupStatus]:
    try:
        _, groups = await client.status(c.address(node_id))
    except MetaUnavailable:
        return {}  # starting, or its channel still backing off
    return {g.group: g for g in groups}


async def _wait_for(what: str, check: object, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what} not reached within {timeout} s"
        await asyncio.sleep(0.1)


async def _leader(client: MetaClient, c: Processes, group: str) -> int:
    found: list[int] = []

    async def check() -> bool:
        for i in list(c.procs):
            g = (await _groups(client, c, i)).get(group)
            if g is not None and g.role == "leader":
                found.append(i)
                return True
        return False

    await _wait_for(f"a {group} leader", check)
    return found[-1]


async def _write(client: MetaClient, keys: range, acked: list[str]) -> None:
    for k in keys:
        cmd = encode_command("session.set", client_id=f"c{k}", expiry_interval=k, node_id=NO_BROKER)
        try:
            await client.propose("mqtt", cmd)
        except MetaError:
            continue  # outcome unknown: neither required nor forbidden afterwards
        acked.append(f"c{k}")


async def _caught_up(client: MetaClient, c: Processes, node_id: int, leader: int) -> bool:
    mine, theirs = await _groups(client, c, node_id), await _groups(client, c, leader)
    return bool(mine and theirs) and all(
        mine[g].applied >= theirs[g].commit and node_id in mine[g].voters for g in GROUPS
    )


@pytest.mark.timeout(240)
async def test_a_node_added_with_ctl_catches_up_and_votes_and_one_is_removed(
    cluster: Processes,
) -> None:
    c = cluster
    client = MetaClient([c.address(i) for i in (1, 2, 3, 4)], timeout=3.0, retries=60)
    acked: list[str] = []
    try:
        await _leader(client, c, "mqtt")
        await _write(client, range(0, 50), acked)
        c.start(4)  # not named in cluster.toml: it waits to be added
        assert (await _groups(client, c, 4))["mqtt"].voters == ()
        out = c.ctl("cluster", "node", "add", "4", c.address(4))
        assert "4" in out
        leader = await _leader(client, c, "mqtt")
        await _wait_for("node 4 caught up", lambda: _caught_up(client, c, 4, leader))
        # Remove node 3 (stopped first), then kill node 2: of the voters 1, 2 and 4 only
        # 1 and 4 are left, so every write from now on needs node 4's vote and log.
        c.kill(3)
        out = c.ctl("--output", "json", "cluster", "node", "remove", "3")
        assert '"voters": [\n        1,\n        2,\n        4\n      ]' in out
        c.kill(2)
        await _write(client, range(50, 100), acked)
        assert len(acked) >= 90, f"only {len(acked)} writes acknowledged"
        sessions = await MetaClient([c.address(4)], timeout=3.0).read("mqtt", "sessions")
        missing = sorted(set(acked) - set(sessions))
        assert not missing, f"acknowledged writes not readable on node 4: {missing}"
        status = await _groups(client, c, 4)
        assert all(status[g].voters == (1, 2, 4) for g in GROUPS)
    finally:
        await client.close()


@pytest.mark.timeout(240)
async def test_a_follower_that_lost_its_data_is_re_added_and_caught_up_by_snapshot(
    cluster: Processes,
) -> None:
    c = cluster
    client = MetaClient([c.address(i) for i in (1, 2, 3)], timeout=3.0, retries=60)
    acked: list[str] = []
    try:
        leader = await _leader(client, c, "mqtt")
        await _write(client, range(0, 200), acked)
        # Compact every member's log, so that nothing but a snapshot can catch a node up:
        # first each must have applied the writes (a quorum acknowledged them, and the
        # third member may still be catching up).
        for i in (1, 2, 3):
            await _wait_for(f"node {i} applied", lambda i=i: _caught_up(client, c, i, leader))
            assert await client.snapshot(c.address(i), "mqtt") > 200
        await _write(client, range(200, 250), acked)
        lost = next(i for i in (1, 2, 3) if i not in (leader, 1))  # node 1 serves HTTP
        c.kill(lost)
        shutil.rmtree(c.data_dir(lost))
        # Same id, new disk: it must not vote with a forgotten vote, so it is removed and
        # joins again (a config that does not name it), like a new node.
        for group in GROUPS:
            await client.remove_node(group, lost)
        await _write(client, range(250, 300), acked)
        others = tuple(i for i in (1, 2, 3) if i != lost)
        c.start(lost, c._config("rejoin.toml", others))
        c.ctl("cluster", "node", "add", str(lost), c.address(lost))
        await _write(client, range(300, 350), acked)
        leader = await _leader(client, c, "mqtt")
        await _wait_for("the re-added node caught up", lambda: _caught_up(client, c, lost, leader))
        status = await _groups(client, c, lost)
        assert status["mqtt"].snapshot_index > 200  # installed from the leader
        assert len(acked) >= 300, f"only {len(acked)} writes acknowledged"
        on_lost = MetaClient([c.address(lost)], timeout=3.0)
        try:
            sessions = await on_lost.read("mqtt", "sessions")
        finally:
            await on_lost.close()
        missing = sorted(set(acked) - set(sessions))
        assert not missing, f"acknowledged writes not readable on node {lost}: {missing}"
    finally:
        await client.close()


def _http(c: Processes, method: str, path: str, body: object = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{c.http_port}{path}", data=data, method=method
    )
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.timeout(120)
def test_bad_membership_requests_get_a_clear_error(cluster: Processes) -> None:
    c = cluster
    for body, field in (
        ({"node_id": 4}, "address"),
        ({"node_id": 0, "address": "127.0.0.1:1"}, "node_id"),
        ({"node_id": "4", "address": "127.0.0.1:1"}, "node_id"),
        ({"node_id": 4, "address": "nowhere"}, "address"),
        ({"node_id": 4, "address": "127.0.0.1:1", "role": "x"}, "role"),
    ):
        status, answer = _http(c, "POST", "/api/v1/cluster/nodes", body)
        assert status == 400, (body, answer)
        assert answer["error"]["message"].startswith(field), (body, answer)
    status, answer = _http(c, "DELETE", "/api/v1/cluster/nodes/x")
    assert status == 400 and answer["error"]["message"].startswith("node_id")
    # A node that never answers cannot catch up: 409 after the API's wait, and it stays
    # a learner that a removal takes out again. Every group has a leader first, or the add
    # fails for that reason instead.
    deadline = time.monotonic() + 60
    while True:
        status, answer = _http(c, "GET", "/api/v1/cluster/status")
        groups = answer.get("meta_groups", []) if status == 200 else []
        if groups and all(g["leader_id"] for g in groups):
            break
        assert time.monotonic() < deadline, f"no leader in every group: {answer}"
        time.sleep(0.2)
    done = subprocess.run(
        [
            *CTL,
            "--server",
            f"http://127.0.0.1:{c.http_port}",
            "cluster",
            "node",
            "add",
            "9",
            f"127.0.0.1:{free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    # Within the 1 ms allowed either the learner's addition or its catching up is what
    # times out (the cluster group is busy with the nodes' own proposals).
    assert "MetaTimeout" in done.stderr
    assert "learner 9 has not caught up" in done.stderr or "ADD_NODE 9" in done.stderr
    status, answer = _http(c, "DELETE", "/api/v1/cluster/nodes/9")
    assert status == 200
    assert all(g == {"voters": [1, 2, 3], "learners": []} for g in answer["groups"].values())


@pytest.mark.timeout(180)
async def test_a_watch_survives_the_sigkill_of_the_node_it_streams_from(
    cluster: Processes,
) -> None:
    c = cluster
    writer = MetaClient([c.address(i) for i in (1, 2, 3)], timeout=3.0, retries=60)
    try:
        leader = await _leader(writer, c, "mqtt")
        watched = next(i for i in (1, 2, 3) if i != leader)
        order = [watched, *(i for i in (1, 2, 3) if i != watched)]
        watcher = MetaClient([c.address(i) for i in order], timeout=3.0, backoff=0.05)
        events: list[WatchEvent] = []
        last = encode_command(
            "session.set", client_id="c299", expiry_interval=299, node_id=NO_BROKER
        )
        streaming = asyncio.Event()

        async def consume() -> None:
            async for ev in watcher.watch("mqtt"):
                events.append(ev)
                if len(events) == 40:
                    streaming.set()
                if ev.command == last:
                    return

        async def write() -> None:
            acked: list[str] = []
            await _write(writer, range(0, 100), acked)
            await asyncio.wait_for(streaming.wait(), 60)
            c.kill(watched)
            await _write(writer, range(100, 300), acked)
            assert len(acked) == 300

        try:
            async with asyncio.timeout(120):
                await asyncio.gather(consume(), write())
        finally:
            await watcher.close()
        assert watched not in c.procs
        indexes = [e.index for e in events]
        assert indexes == list(range(1, len(events) + 1)), "a gap or a duplicate"
        sessions = {
            orjson.loads(e.command)["client_id"] for e in events if e.kind == "entry" and e.command
        }
        assert sessions == {f"c{k}" for k in range(300)}
    finally:
        await writer.close()


def test_a_node_without_a_meta_grpc_listener_refuses_membership_changes(tmp_path: Path) -> None:
    server = start_server(tmp_path, token=None)  # a single node, gRPC port 0
    try:
        c = SimpleNamespace(http_port=server.http)
        for method, path, body in (
            ("POST", "/api/v1/cluster/nodes", {"node_id": 2, "address": "127.0.0.1:1"}),
            ("DELETE", "/api/v1/cluster/nodes/2", None),
        ):
            status, answer = _http(cast(Processes, c), method, path, body)
            assert status == 404 and "gRPC listener" in answer["error"]["message"]
    finally:
        assert _stop(server.proc) == 0
