"""Users and rules in a three-node cluster of real ``robustmq-server`` processes: a user
made through node 1's REST API authenticates a paho-mqtt client on node 2, an ACL rule
added at node 3 is listed by node 1, and a user deleted at node 2 is refused at node 1,
each change reaching the other nodes through the Meta Service's watch stream with no
restart, also at a broker-only node. Waits poll until a condition holds, with generous deadlines (the machine is
shared)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.harness import Cluster, wait_for
from tests.integration.clients import Paho, code


def _call(http: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{http}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _listed(http: int, what: str) -> list[dict[str, Any]]:
    """The items of ``/api/v1/mqtt/<what>``; none while the node answers 409 (not loaded)."""
    status, answer = _call(http, "GET", f"/api/v1/mqtt/{what}")
    return answer["data"] if status == 200 else []


def _connack(port: int, username: str, password: str) -> int:
    client = Paho(port, "", 5, username=username, password=password, connect=False)
    try:
        return code(client.connect()[1])
    finally:
        client.client.disconnect()
        client.client.loop_stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        for i in (1, 2, 3):
            c.start(i)
        yield c
    finally:
        c.stop_all()


@pytest.mark.timeout(240)
def test_a_change_at_one_node_applies_at_the_others_without_a_restart(cluster: Cluster) -> None:
    c = cluster
    for name, password in (("dora", "d1"), ("keeper", "k1")):
        body = {"username": name, "password": password}
        # 409 while the cluster elects its leader and the node loads its cache.
        wait_for(
            f"user {name} made at node 1",
            lambda body=body: _call(c.http[1], "POST", "/api/v1/mqtt/users", body)[0] == 201,
        )
    wait_for("dora connects at node 2", lambda: _connack(c.mqtt[2], "dora", "d1") == 0)
    assert _connack(c.mqtt[2], "dora", "wrong") == 0x86
    wait_for(
        "node 3 lists both users",
        lambda: [u["username"] for u in _listed(c.http[3], "users")] == ["dora", "keeper"],
    )

    rule = {"permission": "deny", "who": "user:dora", "action": "all", "topic": "x/#"}
    assert _call(c.http[3], "POST", "/api/v1/mqtt/acl", rule)[0] == 201
    wait_for(
        "node 1 lists the rule",
        lambda: [r["line"] for r in _listed(c.http[1], "acl")] == ["deny user:dora all x/#"],
    )

    assert _call(c.http[2], "DELETE", "/api/v1/mqtt/users/dora") == (204, None)
    wait_for("dora refused at node 1", lambda: _connack(c.mqtt[1], "dora", "d1") == 0x86)
    assert _connack(c.mqtt[1], "keeper", "k1") == 0

    # A broker without the meta role follows the group through the meta nodes over gRPC.
    c.start(4, ROBUSTMQ_NODE_ROLES="broker")
    wait_for("keeper connects at node 4", lambda: _connack(c.mqtt[4], "keeper", "k1") == 0)
    assert _connack(c.mqtt[4], "dora", "d1") == 0x86
    assert _call(c.http[4], "PUT", "/api/v1/mqtt/users/keeper", {"password": "k2"})[0] == 200
    wait_for("the new password at node 1", lambda: _connack(c.mqtt[1], "keeper", "k2") == 0)
