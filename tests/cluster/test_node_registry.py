"""The cluster's node registry with real ``robustmq-server`` processes on 127.0.0.1.

One node lists itself alive with the ports it really bound, in the HTTP API and in
``robustmq-ctl cluster nodes``; in a three-node cluster every node lists all three; a
SIGKILLed node turns ``alive: false`` within a few heartbeats while the others stay alive,
and is alive again once restarted; a node without the meta role registers and answers
through the meta nodes; a node removed with ``robustmq-ctl cluster node remove`` leaves the
registry. Waits poll the API until a condition holds, with generous deadlines
(the machine is shared)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from robustmq.meta.registry import ALIVE_INTERVALS, HEARTBEAT_INTERVAL
from tests.cluster.harness import Cluster, Node, server_env, wait_for
from tests.conftest import free_port

CTL = [sys.executable, "-m", "robustmq.cli.ctl"]


def _nodes(http_port: int) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{http_port}/api/v1/cluster/nodes"
    with urllib.request.urlopen(url, timeout=10) as response:
        answer: list[dict[str, Any]] = json.loads(response.read())
    return answer


def _alive(http_port: int) -> dict[int, bool]:
    return {n["node_id"]: n["alive"] for n in _nodes(http_port)}


def _ctl(http_port: int, *args: str) -> str:
    run = subprocess.run(
        [*CTL, "--server", f"http://127.0.0.1:{http_port}", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


@pytest.mark.timeout(120)
def test_one_node_lists_itself_alive_with_its_real_ports(tmp_path: Path) -> None:
    mqtt, http, grpc = free_port(), free_port(), free_port()
    node = Node(
        tmp_path,
        "n1",
        [
            "--data-dir",
            str(tmp_path / "data"),
            "--mqtt-port",
            str(mqtt),
            "--http-port",
            str(http),
            "--grpc-port",
            str(grpc),
            "--kafka-port",
            "0",
        ],
        server_env(),
    )
    try:
        (me,) = wait_for("node 1 registered", lambda: _nodes(http))
        assert me["node_id"] == 1 and me["alive"] is True
        assert me["address"] == f"127.0.0.1:{grpc}"
        assert {x["name"]: x["port"] for x in me["listeners"]} == {
            "mqtt": mqtt,
            "http": http,
            "grpc": grpc,
        }
        assert set(me["roles"]) == {"meta", "broker", "engine"}
        assert me["leader_of"] == ["cluster", "mqtt", "offsets"]
        assert me["version"] == "0.1.0"
        assert me["started_at"] <= me["last_heartbeat_at"] <= time.time() + 1
        # Heartbeats move the stored time on.
        wait_for(
            "a heartbeat after the registration",
            lambda: _nodes(http)[0]["last_heartbeat_at"] > me["last_heartbeat_at"],
        )

        table = _ctl(http, "cluster", "nodes")
        header, row = table.splitlines()
        assert header.split()[:3] == ["NODE_ID", "ALIVE", "ROLES"]
        assert row.split()[:2] == ["1", "yes"]
        assert f"mqtt 0.0.0.0:{mqtt}" in row and "cluster,mqtt,offsets" in row
        (as_json,) = json.loads(_ctl(http, "--output", "json", "cluster", "nodes"))
        assert as_json["node_id"] == 1 and as_json["alive"] is True
    finally:
        node.stop()
    assert node.proc.returncode == 0, node.output.read_text()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, mqtt=False)
    try:
        for i in (1, 2, 3):
            c.start(i)
        yield c
    finally:
        c.stop_all()


@pytest.mark.timeout(300)
def test_three_nodes_list_each_other_and_a_killed_node_turns_not_alive(cluster: Cluster) -> None:
    c = cluster
    everyone = {1: True, 2: True, 3: True}
    for i in (1, 2, 3):
        wait_for(f"node {i} lists all three alive", lambda i=i: _alive(c.http[i]) == everyone)

    # Each group has one leader, and every node's answer says which (once all elected one).
    def led_by_one_each() -> list[dict[str, Any]] | None:
        listed = _nodes(c.http[2])
        led = sorted(g for n in listed for g in n["leader_of"])
        return listed if led == ["cluster", "mqtt", "offsets"] else None

    listed = wait_for("node 2 lists one leader of each group", led_by_one_each)
    for n in listed:
        ports = {x["name"]: x["port"] for x in n["listeners"]}
        assert ports == {"grpc": c.grpc[n["node_id"]], "http": c.http[n["node_id"]]}
        assert n["address"] == f"127.0.0.1:{c.grpc[n['node_id']]}"

    started = {n["node_id"]: n["started_at"] for n in listed}
    killed_at = time.time()
    c.nodes[3].kill()
    for i in (1, 2):
        wait_for(
            f"node {i} lists node 3 not alive and the others alive",
            lambda i=i: _alive(c.http[i]) == {1: True, 2: True, 3: False},
        )
    # Not before its last heartbeat was ALIVE_INTERVALS intervals old.
    assert time.time() - killed_at >= (ALIVE_INTERVALS - 1) * HEARTBEAT_INTERVAL

    c.start(3)
    for i in (1, 2, 3):
        wait_for(f"node {i} lists node 3 alive again", lambda i=i: _alive(c.http[i]) == everyone)
    again = {n["node_id"]: n for n in _nodes(c.http[1])}
    assert again[3]["started_at"] > started[3]
    assert again[1]["started_at"] == started[1]

    # A node without the meta role registers through the meta nodes and reads the registry
    # from them.
    c.start(4, ROBUSTMQ_NODE_ROLES="broker")
    four = {**everyone, 4: True}
    for i in (1, 4):
        wait_for(f"node {i} lists node 4 alive", lambda i=i: _alive(c.http[i]) == four)
    from_four = {n["node_id"]: n for n in _nodes(c.http[4])}
    assert from_four[4]["roles"] == ["broker"] and from_four[4]["address"] == ""
    assert from_four[4]["listeners"] == [{"name": "http", "host": "0.0.0.0", "port": c.http[4]}]
    assert sorted(g for n in from_four.values() for g in n["leader_of"]) == [
        "cluster",
        "mqtt",
        "offsets",
    ]
    c.nodes.pop(4).stop()
    wait_for("node 4 not alive once stopped", lambda: _alive(c.http[1]) == {**everyone, 4: False})

    out = json.loads(_ctl(c.http[1], "--output", "json", "cluster", "node", "remove", "3"))
    assert out["node_id"] == 3
    # Gone from the registry, and node 3's heartbeats (it still runs) do not bring it back.
    gone = {1: True, 2: True, 4: False}
    wait_for("node 3 gone from node 2's list", lambda: _alive(c.http[2]) == gone)
    time.sleep(2 * HEARTBEAT_INTERVAL)  # the window an absence is observed over
    assert _alive(c.http[1]) == gone
