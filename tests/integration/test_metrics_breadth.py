"""The labelled MQTT and Kafka series of ``/metrics`` move with what real clients do.

One robustmq-server (MQTT on TCP and WebSocket, Kafka, HTTP, a password file) serves the
module; each test reads ``/metrics`` before and after driving paho-mqtt, raw MQTT packets or
kafka-python, and checks the change of the series it is about: packets by type, messages by
QoS, drops by reason, connections by listener, persistent sessions, shared-subscription
members, authentication successes and consumer-group rebalances. The TLS and WebSocket/TLS
listeners are checked on an in-process broker with test certificates, through the same
collector. The slow_client drop reason is not driven here: it takes a flood of ~20 MB
(test_mqtt_backpressure.py checks the total it adds to).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import paho.mqtt.client as paho
import pytest
from prometheus_client.parser import text_string_to_metric_families

from robustmq._core import mqtt_codec
from robustmq._core.mqtt_spec import PUBLISH_RUN
from robustmq.config import AuthConfig
from robustmq.observability.metrics import exposition, registry_for
from tests.conftest import free_port
from tests.integration.clients import TIMEOUT, Paho, Raw, code, props
from tests.integration.test_cli import _stop
from tests.integration.test_http_api import Server, start_server
from tests.integration.test_mqtt_listeners import _client, certs  # noqa: F401 (a fixture)

Sample = tuple[str, tuple[tuple[str, str], ...]]
QUEUE_LIMIT = 5  # max_queued_messages of the server


@pytest.fixture(scope="module")
def ws_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ws_port: int) -> Iterator[Server]:
    s = start_server(
        tmp_path_factory.mktemp("breadth"),
        token=None,
        ROBUSTMQ_MQTT_WS_PORT=str(ws_port),
        ROBUSTMQ_MQTT_MAX_QUEUED_MESSAGES=str(QUEUE_LIMIT),
    )
    yield s
    assert _stop(s.proc) == 0


def scrape(server: Server) -> dict[Sample, float]:
    """Every sample of /metrics by (name, sorted labels)."""
    url = f"http://127.0.0.1:{server.http}/metrics"
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def local_scrape(b: Any) -> dict[Sample, float]:
    """What /metrics would say of an in-process broker (a BrokerThread)."""
    node = SimpleNamespace(mqtt=b.broker, kafka=None, bridges=None, storage=None, meta=None)
    text = b.run(lambda: exposition(registry_for(node))).decode()  # type: ignore[arg-type]
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def series(name: str, **labels: str) -> Sample:
    return name, tuple(sorted(labels.items()))


def changes(
    server: Server, action: Callable[[], object], expected: dict[Sample, float]
) -> dict[Sample, float]:
    """Runs ``action`` and waits (bounded) until every series of ``expected`` has moved by
    its value; returns the changes seen, for the assertion message."""
    before = scrape(server)
    action()
    deadline = time.monotonic() + TIMEOUT
    while True:
        after = scrape(server)
        seen = {key: after.get(key, 0.0) - before.get(key, 0.0) for key in expected}
        if seen == expected or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)


def packets(direction: str, packet_type: str) -> Sample:
    return series(f"robustmq_mqtt_packets_{direction}_total", packet_type=packet_type)


def by_qos(what: str, qos: int) -> Sample:
    return series(f"robustmq_mqtt_messages_{what}_by_qos_total", qos=str(qos))


def dropped(reason: str) -> Sample:
    return series("robustmq_mqtt_messages_dropped_by_reason_total", reason=reason)


def test_control_packets_are_counted_by_type_both_ways(server):
    def session() -> None:
        raw = Raw(server.mqtt, 5)
        raw.connect("breadth-raw")
        raw.subscribe("breadth/raw")
        raw.send_packet(mqtt_codec.Unsubscribe(2, ["breadth/raw"]))
        raw.expect(mqtt_codec.Unsuback)
        raw.send_packet(mqtt_codec.Pingreq())
        raw.expect(mqtt_codec.Pingresp)
        raw.send_packet(mqtt_codec.Disconnect())
        assert raw.closed()

    expected = {
        packets("received", "CONNECT"): 1,
        packets("sent", "CONNACK"): 1,
        packets("received", "SUBSCRIBE"): 1,
        packets("sent", "SUBACK"): 1,
        packets("received", "UNSUBSCRIBE"): 1,
        packets("sent", "UNSUBACK"): 1,
        packets("received", "PINGREQ"): 1,
        packets("sent", "PINGRESP"): 1,
        packets("received", "DISCONNECT"): 1,
        packets("received", "PUBLISH"): 0,
    }
    assert changes(server, session, expected) == expected


def test_packet_counts_stay_exact_across_the_sampling_rounds(server):
    # The packet loop counts what it handles by its sampling countdown (one call in 64
    # timed): 150 PINGREQs in one write cross two rounds and leave a third open.
    raw = Raw(server.mqtt, 4)
    raw.connect("breadth-ping")

    def ping() -> None:
        raw.send(mqtt_codec.encode(mqtt_codec.Pingreq(), 4) * 150)
        for _ in range(150):
            raw.expect(mqtt_codec.Pingresp)

    expected = {packets("received", "PINGREQ"): 150, packets("sent", "PINGRESP"): 150}
    assert changes(server, ping, expected) == expected
    raw.close()


def test_messages_are_counted_by_qos_with_their_packets(server):
    sub = Paho(server.mqtt, "breadth-qos-sub", 5)
    sub.subscribe("breadth/qos/#", qos=2)
    pub = Paho(server.mqtt, "breadth-qos-pub", 5)

    def publish() -> None:
        for qos in (0, 1, 2):
            pub.publish(f"breadth/qos/{qos}", b"m", qos=qos)
            assert sub.get().qos == qos

    expected = {
        by_qos("received", 0): 1,
        by_qos("received", 1): 1,
        by_qos("received", 2): 1,
        by_qos("sent", 0): 1,
        by_qos("sent", 1): 1,
        by_qos("sent", 2): 1,
        packets("received", "PUBLISH"): 3,
        packets("sent", "PUBLISH"): 3,
        # the publisher's QoS 1 and the subscriber's QoS 1 acknowledgement
        packets("sent", "PUBACK"): 1,
        packets("received", "PUBACK"): 1,
        # QoS 2 both ways: PUBREC and PUBCOMP to the publisher, PUBREL to the subscriber
        packets("sent", "PUBREC"): 1,
        packets("received", "PUBREC"): 1,
        packets("sent", "PUBREL"): 1,
        packets("received", "PUBREL"): 1,
        packets("sent", "PUBCOMP"): 1,
        packets("received", "PUBCOMP"): 1,
        ("robustmq_mqtt_messages_dropped_total", ()): 0,
    }
    assert changes(server, publish, expected) == expected
    sub.disconnect()
    pub.disconnect()


def test_a_message_over_the_clients_maximum_packet_size_is_dropped_as_too_large(server):
    small = Paho(
        server.mqtt,
        "breadth-small",
        5,
        connect_props=props("CONNECT", MaximumPacketSize=64),
    )
    small.subscribe("breadth/big", qos=1)
    pub = Paho(server.mqtt, "breadth-big-pub", 5)

    def publish() -> None:
        pub.publish("breadth/big", b"x" * 200, qos=0)
        pub.publish("breadth/big", b"x" * 200, qos=1)

    expected = {
        dropped("packet_too_large"): 2,
        by_qos("dropped", 0): 1,
        by_qos("dropped", 1): 1,
        ("robustmq_mqtt_messages_dropped_total", ()): 2,
        by_qos("sent", 0): 0,
        by_qos("sent", 1): 0,
    }
    assert changes(server, publish, expected) == expected
    small.expect_nothing()
    small.disconnect()
    pub.disconnect()


def _offline_session(server: Server, client_id: str, qos: int) -> None:
    """A persistent session subscribed to breadth/off/<client id>, its client gone."""
    client = Paho(
        server.mqtt,
        client_id,
        5,
        clean=False,
        connect_props=props("CONNECT", SessionExpiryInterval=600),
    )
    client.subscribe(f"breadth/off/{client_id}", qos=qos)
    client.disconnect()


def test_offline_sessions_drop_qos0_and_what_overflows_their_queue(server):
    _offline_session(server, "breadth-off0", 0)
    _offline_session(server, "breadth-off1", 1)
    pub = Paho(server.mqtt, "breadth-off-pub", 5)

    def publish() -> None:
        pub.publish("breadth/off/breadth-off0", b"q0", qos=0)
        for i in range(QUEUE_LIMIT + 3):
            pub.publish("breadth/off/breadth-off1", b"%d" % i, qos=1)

    expected = {
        dropped("offline"): 1,
        dropped("queue_full"): 3,
        by_qos("dropped", 0): 1,
        by_qos("dropped", 1): 3,
    }
    assert changes(server, publish, expected) == expected
    pub.disconnect()


def test_a_message_that_expires_in_the_queue_is_dropped_as_expired(server):
    _offline_session(server, "breadth-exp", 1)
    pub = Paho(server.mqtt, "breadth-exp-pub", 5)
    pub.publish(
        "breadth/off/breadth-exp",
        b"soon stale",
        qos=1,
        properties=props("PUBLISH", MessageExpiryInterval=1),
    )
    pub.disconnect()
    time.sleep(1.1)  # let its Message Expiry Interval run out (not a synchronisation)
    holder: list[Paho] = []

    def resume() -> None:
        holder.append(Paho(server.mqtt, "breadth-exp", 5, clean=False))

    expected = {dropped("expired"): 1, by_qos("sent", 1): 0}
    assert changes(server, resume, expected) == expected
    holder[0].expect_nothing()
    holder[0].disconnect()


def _listener(name: str) -> Sample:
    return series("robustmq_mqtt_connections_by_listener", listener=name)


def test_websocket_clients_count_under_their_listener(server, ws_port):
    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2, client_id="breadth-ws", transport="websockets"
    )
    client.ws_set_options(path="/mqtt")
    connected = threading.Event()
    client.on_connect = lambda *args: connected.set()

    def connect() -> None:
        client.connect("127.0.0.1", ws_port)
        client.loop_start()
        assert connected.wait(TIMEOUT)

    try:
        expected = {_listener("ws"): 1, _listener("tcp"): 0, _listener("wss"): 0}
        assert changes(server, connect, expected) == expected
        expected = {_listener("ws"): -1, _listener("tcp"): 0}
        assert changes(server, client.disconnect, expected) == expected
    finally:
        client.loop_stop()


def test_persistent_sessions_and_shared_subscription_members_are_gauged(server):
    clients: list[Paho] = []

    def join() -> None:
        for i in range(2):
            member = Paho(server.mqtt, f"breadth-share-{i}", 5)
            member.subscribe("$share/breadth-g/breadth/shared", qos=1)
            clients.append(member)
        kept = Paho(
            server.mqtt,
            "breadth-kept",
            5,
            clean=False,
            connect_props=props("CONNECT", SessionExpiryInterval=600),
        )
        kept.subscribe("$share/breadth-h/breadth/shared", qos=0)
        clients.append(kept)

    expected = {
        ("robustmq_mqtt_shared_subscription_members", ()): 3,
        ("robustmq_mqtt_shared_subscriptions", ()): 2,
        ("robustmq_mqtt_sessions_persistent", ()): 1,
    }
    assert changes(server, join, expected) == expected

    def leave() -> None:
        for client in clients:
            client.disconnect()

    # A clean session's subscriptions end with it; the persistent one keeps its own.
    expected = {
        ("robustmq_mqtt_shared_subscription_members", ()): -2,
        ("robustmq_mqtt_shared_subscriptions", ()): -1,
        ("robustmq_mqtt_sessions_persistent", ()): 0,
    }
    assert changes(server, leave, expected) == expected


def test_authentication_successes_and_failures_are_counted(server):
    def connect() -> None:
        Paho(server.mqtt, "breadth-alice", 4, username="alice", password="alice-pw").disconnect()
        refused = Paho(
            server.mqtt, "breadth-mallory", 4, username="alice", password="wrong", connect=False
        )
        refused.connect()
        refused.client.loop_stop()  # no retry with the same bad password
        assert code(refused.reason_code) != 0

    expected = {
        ("robustmq_mqtt_auth_successes_total", ()): 1,
        ("robustmq_mqtt_auth_failures_total", ()): 1,
    }
    assert changes(server, connect, expected) == expected


def _generation(server: Server, group: str) -> int:
    url = f"http://127.0.0.1:{server.http}/api/v1/kafka/groups/{group}"
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        return int(json.loads(response.read())["generation"])


def test_consumer_group_join_and_leave_count_rebalances(server):
    kafka = pytest.importorskip("kafka")
    rebalances = ("robustmq_kafka_group_rebalances_total", ())
    bootstrap = f"127.0.0.1:{server.kafka}"
    producer = kafka.KafkaProducer(bootstrap_servers=bootstrap)
    producer.send("breadth-t", b"v").get(timeout=TIMEOUT)
    producer.close()
    before = scrape(server)[rebalances]
    consumer = kafka.KafkaConsumer(
        "breadth-t", bootstrap_servers=bootstrap, group_id="breadth-g", auto_offset_reset="earliest"
    )
    deadline = time.monotonic() + TIMEOUT * 4
    while not consumer.assignment() and time.monotonic() < deadline:
        consumer.poll(timeout_ms=200)
    assert consumer.assignment()
    assert scrape(server)[rebalances] >= before + 1
    joined = _generation(server, "breadth-g")
    consumer.close()  # the last member leaves: the group empties, one generation more
    deadline = time.monotonic() + TIMEOUT
    while _generation(server, "breadth-g") == joined and time.monotonic() < deadline:
        time.sleep(0.05)
    # kafka-python may rejoin once after its first assignment (a metadata refresh), so the
    # join takes one or two generations; every generation is one rebalance counted.
    generation = _generation(server, "breadth-g")
    assert generation >= 2
    assert scrape(server)[rebalances] - before == generation


def test_tls_and_websocket_tls_clients_count_under_their_listeners(broker_factory, certs):  # noqa: F811
    b = broker_factory(
        ws_port=free_port(),
        tls_port=free_port(),
        wss_port=free_port(),
        certfile=str(certs / "server.pem"),
        keyfile=str(certs / "server.key"),
    )

    def by_listener() -> dict[str, float]:
        return {
            name: value
            for name in ("tcp", "tls", "ws", "wss")
            for key, value in local_scrape(b).items()
            if key == _listener(name)
        }

    assert by_listener() == {"tcp": 0, "tls": 0, "ws": 0, "wss": 0}
    tcp = Paho(b.port, "l-tcp", 4)
    clients = [
        _client(b.config.tls_port, ca=certs / "ca.pem", client_id="l-tls")[0],
        _client(b.config.ws_port, transport="websockets", client_id="l-ws")[0],
        _client(b.config.wss_port, transport="websockets", ca=certs / "ca.pem", client_id="l-wss")[
            0
        ],
    ]
    want = {"tcp": 1, "tls": 1, "ws": 1, "wss": 1}
    deadline = time.monotonic() + TIMEOUT
    while by_listener() != want and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert by_listener() == want
    finally:
        for client in clients:
            client.disconnect()
            client.loop_stop()
        tcp.disconnect()


RUN = 5  # PUBLISHes sent in one write: the decoder hands them over as one run


def _publish_runs(port: int, topic: str) -> None:
    """A run of RUN QoS 1 PUBLISHes and one of RUN QoS 0, each in one write, from an MQTT 5
    client that waits for its PUBACKs."""
    raw = Raw(port, 5)
    raw.connect("runner")
    raw.send(
        b"".join(
            mqtt_codec.encode(mqtt_codec.Publish(topic, b"r", 1, packet_id=i + 1), 5)
            for i in range(RUN)
        )
    )
    for _ in range(RUN):
        raw.expect(mqtt_codec.Puback)
    raw.send(b"".join(mqtt_codec.encode(mqtt_codec.Publish(topic, b"r"), 5) for _ in range(RUN)))
    raw.send_packet(mqtt_codec.Pingreq())  # answered once the run before it is handled
    raw.expect(mqtt_codec.Pingresp)
    raw.close()


@pytest.mark.parametrize(
    ("lane", "routed"),
    [
        ("no subscriber: PUBACKs one by one", RUN),
        ("a rewrite rule: each PUBLISH on its own", RUN),
        ("refused by the ACL", 0),
    ],
)
def test_runs_off_the_fast_lanes_keep_the_counts_exact(broker_factory, lane, routed):
    if lane.startswith("a rewrite"):
        rule = {
            "action": "publish",
            "source_topic": "run/#",
            "re": "^run/(.+)$",
            "dest_topic": "r/$1",
        }
        b = broker_factory(rewrite=[rule])
    elif lane.startswith("refused"):
        b = broker_factory(auth=AuthConfig(acl_default="deny"))
    else:
        b = broker_factory()
    counters = b.broker.counters
    before = local_scrape(b)
    runs = b.run(lambda: b.broker.handler_latency.calls(PUBLISH_RUN))
    single, unrouted = counters.run_pubacks_single, list(counters.run_publishes_unrouted)
    _publish_runs(b.port, "run/x")
    after = local_scrape(b)
    # the PUBLISHes came as two runs, which took the lane this case is about
    assert b.run(lambda: b.broker.handler_latency.calls(PUBLISH_RUN)) == runs + 2
    if routed:
        single_moved = RUN if lane.startswith("no subscriber") else 0
        assert counters.run_pubacks_single == single + single_moved
    passed_on = RUN if not lane.startswith("no subscriber") else 0
    # QoS 0 and 1 runs were sent; nothing moved at QoS 2
    assert counters.run_publishes_unrouted == [
        unrouted[0] + passed_on,
        unrouted[1] + passed_on,
        unrouted[2],
    ]
    moved = {key: after[key] - before.get(key, 0.0) for key in after if key[0].endswith("_total")}
    assert moved[packets("received", "PUBLISH")] == 2 * RUN
    assert moved[packets("sent", "PUBACK")] == RUN  # refused or not, each is answered
    assert moved[by_qos("received", 1)] == routed
    assert moved[by_qos("received", 0)] == routed
    assert moved[("robustmq_mqtt_messages_received_total", ())] == 2 * routed
