"""Persistent MQTT sessions in a three-node cluster of real ``robustmq-server`` processes.

Each node runs every role with the ``leveldb`` engine; clients are paho-mqtt (and raw
sockets where the exact CONNACK matters). What is checked (docs/durability.md, "In a
cluster"): QoS 1 messages acknowledged for an offline persistent subscriber survive a
SIGKILL of its node; a whole cluster SIGKILLed and restarted starts (no node waits for
the others before opening its listeners) and has its sessions back; a session moves to
the node its client connects to, with its subscriptions, and the old node's connection
gets DISCONNECT 0x8E, and the QoS 1/2 messages the old node had queued for it reach it
on the new one (with their QoS and subscription identifier, each once), also when the
session moved while the old node was down (it hands them over once it is back); while
the ``mqtt`` group has no leader a persistent CONNECT is answered 0x88 (return code 3 on 3.1.1) after ``connect_timeout``, a clean one at once,
and once a leader is back the session is. Waits are on events, with generous deadlines
(the machine is shared).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from robustmq._core import mqtt_codec
from robustmq.meta.client import MetaClient
from tests.cluster.harness import WAIT, Cluster, wait_for
from tests.integration.clients import Paho, Raw, props, stop_clients

CONNECT_TIMEOUT = 2.0  # [mqtt] connect_timeout of the nodes: the wait for sessions


def _caught_up(c: Cluster, node_id: int) -> None:
    """Waits until ``node_id`` has applied what the ``mqtt`` group's leader has
    committed: its broker's cache is fed by its own meta node's watch stream."""

    async def check() -> bool:
        client = MetaClient([f"127.0.0.1:{p}" for p in c.grpc.values()], timeout=5)
        try:
            commit = None
            for port in c.grpc.values():
                try:
                    _, groups = await client.status(f"127.0.0.1:{port}")
                except Exception:  # noqa: BLE001 - a node down leads nothing
                    continue
                for g in groups:
                    if g.group == "mqtt" and g.role == "leader":
                        commit = g.commit
            if commit is None:
                return False
            _, groups = await client.status(f"127.0.0.1:{c.grpc[node_id]}")
            return any(g.group == "mqtt" and g.applied >= commit for g in groups)
        finally:
            await client.close()

    wait_for(f"node {node_id} applied the mqtt group's commits", lambda: asyncio.run(check()))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(
        tmp_path,
        ROBUSTMQ_MQTT_CONNECT_TIMEOUT=str(CONNECT_TIMEOUT),
        ROBUSTMQ_STORAGE_ENGINE="leveldb",
    )
    try:
        for i in (1, 2, 3):
            c.start(i)
        yield c
    finally:
        stop_clients()
        c.stop_all()


def _connect(port: int, client_id: str, version: int, clean: bool = False) -> Paho:
    """A client that connects once the node answers (its CONNECT may wait, while the node
    loads its sessions, up to ``connect_timeout``)."""
    kwargs: dict[str, Any] = {}
    if version == 5 and not clean:
        kwargs["connect_props"] = props("CONNECT", SessionExpiryInterval=3600)
    deadline = time.monotonic() + WAIT
    while True:
        client = Paho(port, client_id, version, clean=clean, connect=False, **kwargs)
        # A client the broker disconnects must not come back by itself: a session
        # taken over would move back.
        client.client.reconnect_on_failure = False
        client.connect()
        if client.reason_code == 0:
            return client
        client.client.loop_stop()
        assert time.monotonic() < deadline, f"{client_id}: refused ({client.reason_code})"


def _queued_offline(c: Cluster, client_id: str, qos: int, count: int, **sub: Any) -> list[bytes]:
    """``client_id`` subscribes to ``q-{client_id}/#`` at ``qos`` on node 1 and goes
    offline; ``count`` QoS 1 messages are published there for it. Their payloads."""
    client = _connect(c.mqtt[1], client_id, 5)
    client.subscribe(f"q-{client_id}/#", qos, **sub)
    client.disconnect()
    pub = _connect(c.mqtt[1], f"pub-{client_id}", 5, clean=True)
    sent = _published(pub, f"q-{client_id}/1", count)
    pub.disconnect()
    return sent


def _published(pub: Paho, topic: str, count: int) -> list[bytes]:
    payloads = [b"%d" % k for k in range(count)]
    for payload in payloads:
        pub.publish(topic, payload, 1)  # waits for the PUBACK
    return payloads


def _received(sub: Paho, count: int) -> list[bytes]:
    return [sub.get(timeout=WAIT).payload for _ in range(count)]


@pytest.mark.timeout(180)
def test_acknowledged_messages_survive_a_sigkill_of_their_node(cluster: Cluster) -> None:
    c = cluster
    port = c.mqtt[1]
    sub = _connect(port, "durable-sub", 4)
    sub.subscribe("q/#", 1)
    sub.disconnect()
    pub = _connect(port, "pub", 5, clean=True)
    sent = _published(pub, "q/1", 20)
    pub.disconnect()

    c.kill(1)  # nodes 2 and 3 keep the mqtt group's quorum
    c.start(1)

    sub = _connect(c.mqtt[1], "durable-sub", 4)
    assert sub.session_present
    assert _received(sub, len(sent)) == sent
    sub.expect_nothing()


@pytest.mark.timeout(240)
def test_a_whole_cluster_killed_and_restarted_has_its_session_back(cluster: Cluster) -> None:
    c = cluster
    sub = _connect(c.mqtt[2], "cluster-sub", 5)
    sub.subscribe("w/#", 1)
    sub.disconnect()
    pub = _connect(c.mqtt[2], "pub", 5, clean=True)
    sent = _published(pub, "w/1", 10)
    pub.disconnect()

    for i in (1, 2, 3):
        c.kill(i)
    # One at a time: each opens its listeners before the group has a leader.
    for i in (2, 1, 3):
        c.start(i)

    sub = _connect(c.mqtt[2], "cluster-sub", 5)
    assert sub.session_present
    assert _received(sub, len(sent)) == sent
    pub = _connect(c.mqtt[2], "pub", 5, clean=True)
    pub.publish("w/2", b"after", 1)
    assert sub.get(timeout=WAIT).payload == b"after"


@pytest.mark.timeout(180)
def test_a_session_moves_to_the_node_its_client_connects_to(cluster: Cluster) -> None:
    c = cluster
    first = _connect(c.mqtt[1], "mover", 5)
    first.subscribe("m/#", 1)
    _caught_up(c, 2)  # node 2's cache has the session: nothing in MQTT says so

    second = _connect(c.mqtt[2], "mover", 5)
    assert second.session_present
    # Node 1 learns of the move from the group and lets its connection go.
    reason = first.disconnects.get(timeout=WAIT)
    assert reason == 0x8E, f"node 1 disconnected the old connection with {reason}"
    pub = _connect(c.mqtt[2], "pub", 5, clean=True)
    pub.publish("m/1", b"on node 2", 1)
    assert second.get(timeout=WAIT).payload == b"on node 2"

    # Back to node 1: it takes the session again, with the subscription.
    _caught_up(c, 1)
    pub = _connect(c.mqtt[1], "pub1", 5, clean=True)
    third = _connect(c.mqtt[1], "mover", 5)
    assert third.session_present
    # At once, before node 2 learns of the move from the group: node 1 delivers these
    # itself and still forwards them to node 2, whose copy of the session (taken over,
    # not moved yet) must not keep them.
    sent = _published(pub, "m/2", 30)
    assert second.disconnects.get(timeout=WAIT) == 0x8E
    assert _received(third, len(sent)) == sent
    assert "not forwarded" not in c.logs()  # nothing was queued on node 2 when it moved


@pytest.mark.timeout(180)
def test_what_a_moved_session_was_owed_follows_it_to_its_new_node(cluster: Cluster) -> None:
    c = cluster
    identifier = props("SUBSCRIBE", SubscriptionIdentifier=7)
    sent = _queued_offline(c, "owed", 2, 10, properties=identifier)
    pub = _connect(c.mqtt[1], "pub", 5, clean=True)
    for k in range(3):
        info = pub.publish("q-owed/2", b"two-%d" % k, 2, wait=False)
        info.wait_for_publish(WAIT)  # PUBCOMP: stored for the offline session
        sent.append(b"two-%d" % k)
    _caught_up(c, 2)  # node 2's cache has the session

    moved = _connect(c.mqtt[2], "owed", 5)
    assert moved.session_present
    got = [moved.get(timeout=WAIT) for _ in sent]
    assert [m.payload for m in got] == sent, "node 1 did not hand over what it owed"
    assert [m.qos for m in got] == [1] * 10 + [2] * 3
    assert {tuple(m.properties.SubscriptionIdentifier) for m in got} == {(7,)}
    moved.expect_nothing(1.0)  # each once
    # The session lives on node 2 now: what node 1 gets next reaches it through the link.
    pub.publish("q-owed/3", b"after", 1)
    assert moved.get(timeout=WAIT).payload == b"after"


@pytest.mark.timeout(240)
def test_what_a_node_owed_a_session_that_moved_while_it_was_down_follows_it(
    cluster: Cluster,
) -> None:
    c = cluster
    sent = _queued_offline(c, "stranded", 1, 10)
    _caught_up(c, 2)

    c.kill(1)  # nodes 2 and 3 keep the mqtt group's quorum
    moved = _connect(c.mqtt[2], "stranded", 5)
    assert moved.session_present
    moved.expect_nothing(1.0)  # its queue is on node 1, which is down
    c.start(1)  # node 1 finds the session on node 2 and hands the queue over
    assert _received(moved, len(sent)) == sent
    moved.expect_nothing(1.0)


def _raw_connack(port: int, client_id: str, version: int) -> tuple[Any, float]:
    """The CONNACK of a persistent CONNECT over a raw socket, and how long it took."""
    raw = Raw(port, version)
    properties = {"session_expiry_interval": 3600} if version == 5 else None
    start = time.monotonic()
    raw.send_packet(
        mqtt_codec.Connect(
            client_id, protocol_version=version, clean_start=False, properties=properties
        )
    )
    connack = raw.expect(mqtt_codec.Connack, timeout=WAIT)
    took = time.monotonic() - start
    assert raw.closed(), "a refused CONNECT leaves the connection open"
    raw.close()
    return connack, took


@pytest.mark.timeout(240)
def test_a_persistent_connect_without_a_leader_is_refused_and_a_clean_one_is_not(
    cluster: Cluster,
) -> None:
    c = cluster
    sub = _connect(c.mqtt[1], "waits", 5)
    sub.subscribe("n/#", 1)
    sub.disconnect()
    for i in (1, 2, 3):
        c.kill(i)
    # Alone: the group cannot elect a leader, so the sessions cannot load. Users from a
    # file: what is checked is that sessions, not authentication, wait for the group.
    passwords = c.root / "passwords"
    passwords.write_text("")
    c.start(1, ROBUSTMQ_AUTH_PASSWORD_FILE=str(passwords), ROBUSTMQ_AUTH_ALLOW_ANONYMOUS="true")

    clean = Paho(c.mqtt[1], "clean", 4, clean=True)  # connects within paho's 5 s
    assert clean.reason_code == 0
    for version, refused in ((5, 0x88), (4, 3)):
        connack, took = _raw_connack(c.mqtt[1], f"waits-{version}", version)
        assert connack.reason_code == refused
        assert not connack.session_present
        assert took >= CONNECT_TIMEOUT * 0.9, f"refused after {took:.2f} s, before the wait"
    assert "persistent session refused (server unavailable)" in c.logs()
    assert "sessions not loaded yet: the mqtt group has no leader" in c.logs()

    c.start(2)  # a quorum again: node 1 loads its sessions
    sub = _connect(c.mqtt[1], "waits", 5)
    assert sub.session_present
    clean.publish("n/1", b"back", 1)
    assert sub.get(timeout=WAIT).payload == b"back"
