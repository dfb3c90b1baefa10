"""Publishes forwarded between the brokers of a cluster, with real ``robustmq-server``
processes on 127.0.0.1 and paho-mqtt clients.

Three nodes of one ``[cluster] peers`` config (memory engine): a publish on one node
reaches subscribers on the others, each once, in order, with its properties; with
subscribers on every node nothing is delivered twice (nothing is forwarded back); a
shared subscription group with members on two other nodes gets each message once, and
a member on the publisher's node takes them all; a retained message set on one node is
served by the others, and cleared there too; an unsubscribed filter stops the
forwarding (the sender's counter on ``/metrics`` stops); a SIGKILLed node, restarted,
gets forwarded messages again; a subscriber that stops reading holds back, through both
nodes, a publisher flooding it with more than the link queues, and loses nothing; two nodes with ``mqtt.reuse_port`` share one MQTT port,
the kernel spreads clients over both, and publish/subscribe works whichever node a client
lands on. Routes travel through the Meta Service, so each test
first waits, with probe messages, until the publisher's node knows the subscriber's
route.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from robustmq._core import mqtt_codec
from tests.cluster.harness import WAIT, Cluster, routed
from tests.integration.clients import Paho, Raw, props


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: Any) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("routing"), ROBUSTMQ_STORAGE_ENGINE="memory")
    try:
        for i in (1, 2, 3):
            c.start(i)
        yield c
    finally:
        c.stop_all()


def _take(sub: Paho, count: int) -> list[bytes]:
    return [sub.get().payload for _ in range(count)]


@pytest.mark.timeout(180)
def test_publishes_reach_subscribers_on_every_node_once_in_order(cluster: Cluster) -> None:
    subs = {i: cluster.client(i) for i in (1, 2, 3)}
    subs[1].subscribe("order/#", qos=1)
    subs[2].subscribe("order/+", qos=1)
    subs[3].subscribe("order/a", qos=0)
    subs[3].subscribe("order/#", qos=1)  # overlapping: still once, at QoS 1
    pub = cluster.client(1, "order-pub")
    routed(pub, "order/a", subs[1], subs[2], subs[3])
    sent = [b"%04d" % i for i in range(200)]
    for payload in sent:
        pub.publish("order/a", payload, qos=1, wait=False)
    for node, sub in subs.items():
        assert _take(sub, 200) == sent, f"node {node}"
        sub.expect_nothing()
    pub.publish(
        "order/a",
        b"with properties",
        qos=1,
        properties=props("PUBLISH", UserProperty=[("k", "v")], MessageExpiryInterval=60),
    )
    got = subs[2].get()
    assert got.payload == b"with properties" and got.qos == 1
    assert got.properties.UserProperty == [("k", "v")]
    assert 0 < got.properties.MessageExpiryInterval <= 60
    for sub in (*subs.values(), pub):
        sub.disconnect()


@pytest.mark.timeout(180)
def test_a_shared_group_gets_each_message_once_across_nodes(cluster: Cluster) -> None:
    members = {i: cluster.client(i) for i in (2, 3)}
    for member in members.values():
        member.subscribe("$share/workers/jobs/#", qos=1)
    # Node 2 gets every message for this one: its member must still take only those
    # node 1 chose it for.
    plain = cluster.client(2)
    plain.subscribe("jobs/x", qos=1)
    pub = cluster.client(1, "jobs-pub")
    deadline = time.monotonic() + WAIT
    while cluster.counter(1, "robustmq_mqtt_cluster_forwarded_out_total") == 0:
        # Each probe goes to one member: wait until both routes are known at node 1.
        assert time.monotonic() < deadline, "no shared routes known at node 1"
        pub.publish("jobs/probe", b"probe")
        time.sleep(0.3)
    routed(pub, "jobs/x", plain)
    for _ in range(10):
        pub.publish("jobs/probe", b"probe")
    time.sleep(1.0)
    for member in members.values():
        while not member.messages.empty():
            assert member.get().payload == b"probe"
    sent = {b"job-%03d" % i for i in range(100)}
    for payload in sorted(sent):
        pub.publish("jobs/x", payload, qos=1, wait=False)
    got: dict[int, list[bytes]] = {2: [], 3: []}
    deadline = time.monotonic() + WAIT
    while sum(map(len, got.values())) < len(sent) and time.monotonic() < deadline:
        for node, member in members.items():
            while not member.messages.empty():
                got[node].append(member.get().payload)
        time.sleep(0.05)
    received = got[2] + got[3]
    assert sorted(received) == sorted(sent)  # each once
    assert got[2] and got[3]  # shared between the nodes' members
    assert _take(plain, 100) == sorted(sent)
    local = cluster.client(1)
    local.subscribe("$share/workers/jobs/#", qos=1)
    pub.publish("jobs/x", b"to the local member", qos=1)
    assert local.get().payload == b"to the local member"
    for member in members.values():
        member.expect_nothing()
    assert plain.get().payload == b"to the local member"
    for c in (*members.values(), local, plain, pub):
        c.disconnect()


@pytest.mark.timeout(180)
def test_a_retained_message_is_served_and_cleared_on_every_node(cluster: Cluster) -> None:
    pub = cluster.client(1, "retain-pub")
    pub.publish("kept/1", b"state", qos=1, retain=True)

    def retained_at(node: int) -> bytes | None:
        sub = cluster.client(node)
        sub.subscribe("kept/#", qos=1)
        try:
            return sub.get(timeout=1.0).payload
        except Exception:
            return None
        finally:
            sub.disconnect()

    for node in (2, 3):
        deadline = time.monotonic() + WAIT
        while retained_at(node) != b"state":
            assert time.monotonic() < deadline, f"node {node} never served it"
    pub.publish("kept/1", b"", qos=1, retain=True)  # cleared on every node
    for node in (2, 3):
        deadline = time.monotonic() + WAIT
        while retained_at(node) is not None:
            assert time.monotonic() < deadline, f"node {node} still serves it"
    pub.disconnect()


@pytest.mark.timeout(180)
def test_an_unsubscribed_filter_is_no_longer_forwarded(cluster: Cluster) -> None:
    sub = cluster.client(2)
    sub.subscribe("gone/x", qos=0)
    pub = cluster.client(1, "gone-pub")
    routed(pub, "gone/x", sub)
    sub.unsubscribe("gone/x")
    name = "robustmq_mqtt_cluster_forwarded_out_total"
    deadline = time.monotonic() + WAIT
    while True:  # until node 1 has learnt the route is gone: nothing more goes out
        before = cluster.counter(1, name)
        for _ in range(20):
            pub.publish("gone/x", b"dropped here")
        time.sleep(0.3)
        if cluster.counter(1, name) == before:
            break
        assert time.monotonic() < deadline, "node 1 still forwards gone/x"
    sub.expect_nothing()
    for c in (sub, pub):
        c.disconnect()


@pytest.mark.timeout(240)
def test_a_killed_node_gets_forwarded_messages_again_once_restarted(cluster: Cluster) -> None:
    cluster.kill(3)
    cluster.start(3)
    sub = cluster.client(3)
    sub.subscribe("back/+", qos=1)
    pub = cluster.client(2, "back-pub")
    routed(pub, "back/1", sub)
    for i in range(20):
        pub.publish("back/1", b"%d" % i, qos=1, wait=False)
    assert _take(sub, 20) == [b"%d" % i for i in range(20)]
    for c in (sub, pub):
        c.disconnect()


@pytest.mark.timeout(180)
def test_two_nodes_share_one_port_with_reuse_port(tmp_path: Path) -> None:
    c = Cluster(tmp_path, (1, 2), ROBUSTMQ_STORAGE_ENGINE="memory")
    c.mqtt[2] = c.mqtt[1]
    try:
        for i in (1, 2):
            c.start(i, ROBUSTMQ_MQTT_REUSE_PORT="true")
        clients = [c.client(1) for _ in range(24)]
        deadline = time.monotonic() + WAIT
        while True:
            counts = [c.counter(i, "robustmq_mqtt_connections") for i in (1, 2)]
            if sum(counts) == len(clients) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert sum(counts) == len(clients) and min(counts) > 0, counts  # both took some
        subscribers, publisher = clients[:-1], clients[-1]
        for sub in subscribers:
            sub.subscribe("spread/t", qos=1)
        routed(publisher, "spread/t", *subscribers)
        publisher.publish("spread/t", b"everyone", qos=1)
        for sub in subscribers:
            assert sub.get().payload == b"everyone"
        for client in clients:
            client.disconnect()
    finally:
        c.stop_all()


@pytest.mark.timeout(180)
def test_a_slow_subscriber_on_another_node_holds_the_publisher_back(cluster: Cluster) -> None:
    count = 150_000  # more than a node's forwarding queue holds (MAX_QUEUED)
    sub = Raw(cluster.mqtt[2])
    sub.connect("slow-sub")
    sub.send_packet(mqtt_codec.Subscribe(1, [mqtt_codec.Subscription("flood/x", 0)]))
    assert isinstance(sub.recv(), mqtt_codec.Suback)
    pub = Raw(cluster.mqtt[1])
    pub.connect("flood-pub")
    deadline = time.monotonic() + WAIT
    while True:  # until node 1 knows the route: probes reach the subscriber
        pub.send_packet(mqtt_codec.Publish("flood/x", b"probe", 0))
        try:
            if sub.recv(timeout=0.2).payload == b"probe":
                break
        except TimeoutError:
            assert time.monotonic() < deadline, "no route to flood/x"
    time.sleep(0.5)
    while True:
        try:
            assert sub.recv(timeout=0.3).payload == b"probe"
        except TimeoutError:
            break
    flood = b"".join(
        mqtt_codec.encode(mqtt_codec.Publish("flood/x", b"%08d" % i + b"." * 92, 0), 4)
        for i in range(count)
    )
    sender = threading.Thread(target=pub.send, args=(flood,), daemon=True)
    sender.start()  # blocks once node 1 stops reading it
    time.sleep(2.0)  # the subscriber reads nothing meanwhile (under backpressure_timeout)
    got = [sub.recv().payload[:8] for _ in range(count)]
    assert got == [b"%08d" % i for i in range(count)]  # all of them, in order
    sender.join(WAIT)
    assert cluster.counter(1, "robustmq_mqtt_cluster_forward_dropped_total") == 0
    for c in (sub, pub):
        c.close()
