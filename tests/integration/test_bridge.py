"""The MQTT ↔ Kafka bridges (``[[bridge.mqtt_to_kafka]]``, ``[[bridge.kafka_to_mqtt]]``)
driven by real clients: paho-mqtt on one side, confluent-kafka (librdkafka) on the other,
against a whole ``Node`` (MQTT and Kafka brokers on one storage engine) running in a
thread, or the real ``robustmq-server`` process for restarts and configuration errors.

Covered: MQTT 3.1.1 and 5.0 publishes read by a Kafka consumer group with key = MQTT
topic, value byte-exact, headers = user properties, per-topic order in the partition the
Java partitioner picks; wildcard filters; 1,000 messages without loss; a QoS 0 run of
1,000 messages handed to the bridge as lists (the router's internal-subscriber hook) and
complete and in order in Kafka; the hook's matching rules; Kafka records
(uncompressed, gzip, snappy, lz4, zstd) delivered byte-exact on templated MQTT topics;
a batch whose codec package is missing skipped and counted; messages beyond the bound of
what may wait for an append dropped and counted; committed offsets surviving
a restart with the segment engine; bad entries named by ``config-check``; a loop refused.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from robustmq._core import kafka_codec as kc
from robustmq.bridge import check_loops
from robustmq.bridge.records import murmur2, partition_for
from robustmq.config import BridgeConfig, load_config
from robustmq.errors import ConfigError
from robustmq.observability.metrics import exposition, registry_for
from tests.conftest import free_port
from tests.integration.clients import Paho, props

ck = pytest.importorskip("confluent_kafka")

TIMEOUT = 30.0
SERVER = [sys.executable, "-m", "robustmq.cli.server"]


class NodeThread:
    """A Node (broker and engine roles) on free ports of 127.0.0.1, in its own thread."""

    def __init__(self, data_dir: str, storage: str = "memory", **bridge: Any) -> None:
        from robustmq.node import Node

        self.mqtt_port, self.kafka_port = free_port(), free_port()
        self.bootstrap = f"127.0.0.1:{self.kafka_port}"
        overrides: dict[str, Any] = {
            "node.roles": ["broker", "engine"],
            "node.data_dir": data_dir,
            "mqtt.bind": "127.0.0.1",
            "mqtt.port": self.mqtt_port,
            "mqtt.tls_port": 0,
            "mqtt.ws_port": 0,
            "mqtt.wss_port": 0,
            "mqtt.sys_interval": 0,
            "kafka.bind": "127.0.0.1",
            "kafka.port": self.kafka_port,
            "kafka.default_partitions": 3,
            "http.port": 0,
            "cluster.grpc_port": 0,
            "storage.engine": storage,
        }
        overrides.update({f"bridge.{k}": v for k, v in bridge.items()})
        self.node = Node(load_config(environ={}, overrides=overrides))
        self.loop = asyncio.new_event_loop()
        self.loop_errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda loop, ctx: self.loop_errors.append(ctx))
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.call(self.node.start())

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def stats(self) -> Any:
        assert self.node.bridges is not None
        return self.node.bridges.stats

    def stop(self) -> None:
        self.call(self.node.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@pytest.fixture
def node_factory(tmp_path: Any) -> Iterator[Any]:
    started: list[NodeThread] = []

    def start(**kwargs: Any) -> NodeThread:
        node = NodeThread(str(tmp_path / f"data{len(started)}"), **kwargs)
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()
        assert not node.loop_errors, node.loop_errors


def _consume(bootstrap: str, topic: str, count: int) -> list[Any]:
    """``count`` records of ``topic`` read by a fresh librdkafka consumer group."""
    consumer = ck.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    records: list[Any] = []
    deadline = time.monotonic() + TIMEOUT
    try:
        while len(records) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            records.append(msg)
    finally:
        consumer.close()
    assert len(records) == count, f"{len(records)} of {count} records"
    return records


# ---------------------------------------------------------------------- MQTT -> Kafka


@pytest.mark.parametrize("version", [4, 5], ids=["mqtt311", "mqtt5"])
def test_mqtt_publishes_reach_a_kafka_consumer_group(node_factory: Any, version: int) -> None:
    node = node_factory(mqtt_to_kafka=[{"filter": "sensors/+/temp", "topic": "telemetry"}])
    pub = Paho(node.mqtt_port, "pub", version)
    sent: dict[str, list[bytes]] = {"sensors/a/temp": [], "sensors/b/temp": []}
    for i in range(40):
        topic = "sensors/a/temp" if i % 3 else "sensors/b/temp"
        payload = bytes([i, 0, 255]) + f"-{i}".encode()
        sent[topic].append(payload)
        properties = None
        if version == 5:
            properties = props("PUBLISH", UserProperty=[("seq", str(i)), ("site", "b7")])
            properties.ContentType = "application/octet-stream"
        pub.publish(topic, payload, qos=i % 2, properties=properties)
    pub.publish("sensors/a/humidity", b"not bridged", qos=1)
    pub.publish("sensors/a/temp/x", b"not bridged", qos=1)
    records = _consume(node.bootstrap, "telemetry", 40)
    got: dict[str, list[bytes]] = {"sensors/a/temp": [], "sensors/b/temp": []}
    for msg in records:
        key = msg.key().decode()
        got[key].append(msg.value())
        assert msg.partition() == partition_for(msg.key(), 3)
        assert msg.timestamp()[1] > 0
        seq = got[key][-1].split(b"-")[1].decode()
        if version == 5:
            assert msg.headers() == [
                ("seq", seq.encode()),
                ("site", b"b7"),
                ("content-type", b"application/octet-stream"),
            ]
        else:
            assert not msg.headers()
    assert got == sent  # byte-exact, in publish order per MQTT topic
    assert node.stats["mqtt_to_kafka_messages"] == 40
    assert node.stats["mqtt_to_kafka_errors"] == 0
    scraped = exposition(registry_for(node.node)).decode()
    assert 'robustmq_bridge_messages_total{direction="mqtt_to_kafka"} 40.0' in scraped


def test_a_thousand_messages_on_a_multi_level_wildcard_arrive_without_loss(
    node_factory: Any,
) -> None:
    node = node_factory(mqtt_to_kafka=[{"filter": "fleet/#", "topic": "fleet", "qos": 1}])
    pub = Paho(node.mqtt_port, "fleet-pub", 4)
    infos = [
        pub.publish(f"fleet/{i % 10}/gps", f"{i}".encode(), qos=1, wait=False) for i in range(1000)
    ]
    for info in infos:
        info.wait_for_publish(TIMEOUT)
    records = _consume(node.bootstrap, "fleet", 1000)
    by_key: dict[bytes, list[int]] = {}
    for msg in records:
        by_key.setdefault(msg.key(), []).append(int(msg.value()))
    assert sorted(by_key) == [f"fleet/{i}/gps".encode() for i in range(10)]
    for key, values in by_key.items():
        first = int(key.split(b"/")[1])
        assert values == list(range(first, 1000, 10))  # none lost, none reordered


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _remaining_length(len(body)) + body


def test_a_qos0_run_of_a_thousand_messages_reaches_kafka_complete_and_in_order(
    node_factory: Any,
) -> None:
    node = node_factory(mqtt_to_kafka=[{"filter": "run/+", "topic": "runs"}])
    bridge = node.node.bridges.mqtt_to_kafka[0]
    handed: list[int] = []  # the size of each list the router hands the bridge
    deliver = bridge.deliver_messages

    def spy(messages: list[Any]) -> None:
        handed.append(len(messages))
        deliver(messages)

    bridge.deliver_messages = spy
    topic = b"run/a"
    payloads = [b"%04d" % i + b"." * (i % 7) for i in range(1000)]
    # One write of 1,000 plain QoS 0 PUBLISHes: the broker decodes them as forwarding-lane
    # runs, which reach the bridge as lists, not one call per message.
    connect = _packet(0x10, b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x03run")
    publishes = b"".join(
        _packet(0x30, len(topic).to_bytes(2, "big") + topic + payload) for payload in payloads
    )
    with socket.create_connection(("127.0.0.1", node.mqtt_port), timeout=TIMEOUT) as sock:
        sock.sendall(connect)
        assert sock.recv(4) == b"\x20\x02\x00\x00"  # CONNACK, accepted
        sock.sendall(publishes)
        records = _consume(node.bootstrap, "runs", 1000)
    assert [msg.value() for msg in records] == payloads  # complete, in order
    assert {msg.key() for msg in records} == {topic}
    assert sum(handed) == 1000 and max(handed) > 1
    assert node.stats["mqtt_to_kafka_messages"] == 1000


def test_messages_beyond_the_pending_bound_are_dropped_and_counted(
    node_factory: Any, monkeypatch: Any
) -> None:
    from robustmq.bridge import mqtt_to_kafka
    from robustmq.broker.mqtt.message import Message

    monkeypatch.setattr(mqtt_to_kafka, "MAX_PENDING_BYTES", 4096)
    node = node_factory(mqtt_to_kafka=[{"filter": "cap/#", "topic": "capped"}])
    bridge = node.node.bridges.mqtt_to_kafka[0]
    # 100 bytes a message (5-byte key + 95-byte payload), handed over in one call, before
    # the bridge's task can append any: after the 41st, 4,100 bytes wait.
    messages = [Message("cap/x", b"%03d" % i + b"." * 92, 0, False, None, "c") for i in range(100)]

    async def hand_over() -> None:
        bridge.deliver_messages(messages)

    node.call(hand_over())
    records = _consume(node.bootstrap, "capped", 41)
    assert [msg.value() for msg in records] == [m.payload for m in messages[:41]]
    assert node.stats["mqtt_to_kafka_errors"] == 59
    assert node.stats["mqtt_to_kafka_messages"] == 41


def test_router_internal_subscribers() -> None:
    from robustmq.broker.mqtt.message import Message
    from robustmq.broker.router import Router

    class Collector:
        def __init__(self) -> None:
            self.got: list[list[str]] = []

        def deliver_messages(self, messages: list[Any]) -> None:
            self.got.append([m.topic for m in messages])

    router = Router()
    a, b = Collector(), Collector()
    router.subscribe_internal(a, "x/+")
    router.subscribe_internal(a, "x/#")  # overlapping: still one delivery
    router.subscribe_internal(b, "#")
    assert router.internal_subscriptions == 3
    assert router.route(Message("x/1", b"p", 1, False, None, "c")) == 0  # no session got it
    assert router.route(Message("$SYS/x", b"p", 0, False, None, "c")) == 0
    assert a.got == [["x/1"]] and b.got == [["x/1"]]  # '#' does not match '$SYS' (§4.7.2)

    class Pub:
        def __init__(self, topic: str) -> None:
            self.topic, self.payload, self.qos = topic, b"", 0

    router.route_run("x/2", [Pub("x/2"), Pub("x/2")], "c")
    assert a.got[-1] == ["x/2", "x/2"] and b.got[-1] == ["x/2", "x/2"]
    router.unsubscribe_internal(a, "x/+")
    router.unsubscribe_internal(a, "x/#")
    router.unsubscribe_internal(a, "x/#")  # not subscribed any more: nothing changes
    assert router.internal_subscriptions == 1
    router.route(Message("x/3", b"p", 0, False, None, "c"))
    assert a.got[-1] == ["x/2", "x/2"] and b.got[-1] == ["x/3"]


# ---------------------------------------------------------------------- Kafka -> MQTT


@pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_kafka_records_reach_mqtt_subscribers(node_factory: Any, compression: str) -> None:
    node = node_factory(
        kafka_to_mqtt=[{"topic": "commands", "mqtt_topic": "devices/${key}/cmd/${partition}"}]
    )
    sub = Paho(node.mqtt_port, "sub", 5)
    sub.subscribe("devices/+/cmd/#", qos=1)
    producer = ck.Producer(
        {
            "bootstrap.servers": node.bootstrap,
            "compression.type": compression,
            "linger.ms": 50,
        }
    )
    sent = []
    for i in range(30):
        value = os.urandom(100) + bytes(range(256)) * (i % 3)
        key = f"d{i % 2}".encode()
        sent.append((f"devices/d{i % 2}/cmd/{partition_for(key, 3)}", value, str(i)))
        producer.produce(
            "commands",
            value=value,
            key=key,
            partition=partition_for(key, 3),
            headers=[("n", str(i).encode())],
        )
    assert producer.flush(TIMEOUT) == 0
    received = []
    for _ in sent:
        msg = sub.get(TIMEOUT)
        user_properties = dict(getattr(msg.properties, "UserProperty", []))
        received.append((msg.topic, msg.payload, user_properties.get("n")))
    assert sorted(received) == sorted(sent)
    sub.expect_nothing(0.5)
    codec = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}[compression]
    stored = set()
    for p in range(3):
        batches = node.call(node.node.storage.read_batches(f"kafka/commands/{p}", 0, 1 << 30))
        stored |= {h.compression for b in batches for h in kc.parse_batches(b.data)}
    assert stored == {codec}
    assert node.stats["kafka_to_mqtt_messages"] == 30


def test_a_batch_whose_codec_package_is_missing_is_skipped_and_counted(
    node_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from robustmq.bridge import kafka_to_mqtt

    monkeypatch.setattr(kafka_to_mqtt, "missing_codec_package", lambda c: "lz4" if c == 3 else None)
    node = node_factory(kafka_to_mqtt=[{"topic": "mixed", "mqtt_topic": "mixed/${key}"}])
    sub = Paho(node.mqtt_port, "sub", 4)
    sub.subscribe("mixed/#", qos=1)
    for compression, key in (("lz4", b"lost"), ("none", b"kept")):
        producer = ck.Producer(
            {"bootstrap.servers": node.bootstrap, "compression.type": compression}
        )
        # Compressible: librdkafka sends a batch uncompressed when that is smaller.
        producer.produce("mixed", value=b"v" * 1000, key=key, partition=0)
        assert producer.flush(TIMEOUT) == 0
    assert sub.get(TIMEOUT).topic == "mixed/kept"
    sub.expect_nothing(0.5)
    assert node.stats["kafka_to_mqtt_skipped_batches"] == 1
    assert node.stats["kafka_to_mqtt_messages"] == 1
    assert node.stats["kafka_to_mqtt_messages"] == 1


def _start_server(config: str, data_dir: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [*SERVER, "start", "--config", config, "--data-dir", data_dir],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if "data directory" in line:
            return proc
    proc.kill()
    raise AssertionError(f"server did not start: {proc.stderr.read() if proc.stderr else ''}")


def _stop_server(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0


def test_committed_offsets_survive_a_restart_with_segment_storage(tmp_path: Any) -> None:
    mqtt_port, kafka_port = free_port(), free_port()
    config = tmp_path / "bridge.toml"
    config.write_text(
        f"""
[node]
roles = ["broker", "engine"]
[mqtt]
bind = "127.0.0.1"
port = {mqtt_port}
ws_port = 0
sys_interval = 0
[kafka]
bind = "127.0.0.1"
port = {kafka_port}
[http]
port = 0
[cluster]
grpc_port = 0
[storage]
engine = "segment"
[[bridge.kafka_to_mqtt]]
topic = "orders"
mqtt_topic = "orders/${{key}}"
retain = true
"""
    )
    data_dir = str(tmp_path / "data")
    bootstrap = f"127.0.0.1:{kafka_port}"

    def produce(keys: range) -> None:
        producer = ck.Producer({"bootstrap.servers": bootstrap})
        for i in keys:
            producer.produce("orders", value=f"order {i}".encode(), key=f"k{i}".encode())
        assert producer.flush(TIMEOUT) == 0

    proc = _start_server(str(config), data_dir)
    try:
        sub = Paho(mqtt_port, "sub", 4)
        sub.subscribe("orders/#", qos=1)
        produce(range(5))
        assert sorted(sub.get(TIMEOUT).topic for _ in range(5)) == [
            f"orders/k{i}" for i in range(5)
        ]
        sub.disconnect()
    finally:
        _stop_server(proc)
    proc = _start_server(str(config), data_dir)
    try:
        # Retained messages live in memory: any the restarted bridge published again would
        # reach this new subscriber as retained ones.
        sub = Paho(mqtt_port, "sub2", 4)
        sub.subscribe("orders/#", qos=1)
        produce(range(5, 8))
        got = sorted((m.topic, m.payload) for m in (sub.get(TIMEOUT) for _ in range(3)))
        assert got == [(f"orders/k{i}", f"order {i}".encode()) for i in range(5, 8)]
        sub.expect_nothing(1.0)
    finally:
        _stop_server(proc)


# ---------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("table", "key"),
    [
        (
            '[[bridge.mqtt_to_kafka]]\nfilter = "a/#/b"\ntopic = "t"',
            "bridge.mqtt_to_kafka[0].filter",
        ),
        (
            '[[bridge.mqtt_to_kafka]]\nfilter = "$share/g/a"\ntopic = "t"',
            "bridge.mqtt_to_kafka[0].filter",
        ),
        (
            '[[bridge.mqtt_to_kafka]]\nfilter = "a"\ntopic = "no spaces"',
            "bridge.mqtt_to_kafka[0].topic",
        ),
        (
            '[[bridge.mqtt_to_kafka]]\nfilter = "a"\ntopic = "t"\nqos = 3',
            "bridge.mqtt_to_kafka[0].qos",
        ),
        ('[[bridge.mqtt_to_kafka]]\nfilter = "a"', "bridge.mqtt_to_kafka[0].topic"),
        (
            '[[bridge.mqtt_to_kafka]]\nfilter = "a"\ntopic = "t"\nfoo = 1',
            "bridge.mqtt_to_kafka[0].foo",
        ),
        (
            '[[bridge.kafka_to_mqtt]]\ntopic = "t"\nmqtt_topic = "a/${nope}"',
            "bridge.kafka_to_mqtt[0].mqtt_topic",
        ),
        (
            '[[bridge.kafka_to_mqtt]]\ntopic = "t"\nmqtt_topic = "a/+"',
            "bridge.kafka_to_mqtt[0].mqtt_topic",
        ),
        (
            '[[bridge.kafka_to_mqtt]]\ntopic = "t"\nmqtt_topic = "a"\nretain = 1',
            "bridge.kafka_to_mqtt[0].retain",
        ),
        (
            '[[bridge.kafka_to_mqtt]]\ntopic = "t"\nmqtt_topic = "a"\ngroup = ""',
            "bridge.kafka_to_mqtt[0].group",
        ),
        (
            '[[bridge.kafka_to_mqtt]]\ntopic = ".."\nmqtt_topic = "a"',
            "bridge.kafka_to_mqtt[0].topic",
        ),
    ],
)
def test_config_check_names_the_bad_bridge_key(tmp_path: Any, table: str, key: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(table + "\n")
    done = subprocess.run(
        [*SERVER, "config-check", "--config", str(config)], capture_output=True, text=True
    )
    assert done.returncode != 0
    assert f"config key '{key}'" in done.stderr


LOOP = """
[[bridge.mqtt_to_kafka]]
filter = "plant/+/events"
topic = "events"
[[bridge.kafka_to_mqtt]]
topic = "events"
mqtt_topic = "plant/${key}"
"""


def test_a_loop_is_refused_at_start(tmp_path: Any) -> None:
    config = tmp_path / "loop.toml"
    config.write_text(
        f'[mqtt]\nbind = "127.0.0.1"\nport = {free_port()}\nws_port = 0\n'
        f'[kafka]\nbind = "127.0.0.1"\nport = {free_port()}\n'
        "[http]\nport = 0\n[cluster]\ngrpc_port = 0\n" + LOOP
    )
    done = subprocess.run(
        [*SERVER, "start", "--config", str(config), "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert "cannot start: config key 'bridge.kafka_to_mqtt[0].mqtt_topic'" in done.stderr
    assert "the records would loop" in done.stderr


@pytest.mark.parametrize(
    ("template", "topic_filter", "kafka_topic", "loops"),
    [
        ("plant/${key}", "plant/+/events", "events", True),
        ("a/${partition}/x", "a/+/x", "events", True),
        ("${topic}/in", "events/#", "events", True),
        ("${key}", "#", "events", True),
        ("plant/${key}", "plant/+/events", "other", False),  # another Kafka topic
        ("plant/${key}", "plant/+/events", "relay", True),  # back through relay
        ("cmd/${key}", "plant/#", "events", False),
        ("a/${partition}/x", "a/+/y", "events", False),
        ("$bridge/${key}", "#", "events", False),  # §4.7.2: # does not match $ topics
        ("${topic}/in", "other/#", "events", False),
        ("plant/${key}", "plant/#", "relay", True),  # events -> relay -> events
    ],
)
def test_loop_detection(template: str, topic_filter: str, kafka_topic: str, loops: bool) -> None:
    mqtt_to_kafka = [{"filter": topic_filter, "topic": kafka_topic}]
    kafka_to_mqtt = [{"topic": "events", "mqtt_topic": template}]
    if kafka_topic == "relay":  # a second pair of bridges closes the circle
        mqtt_to_kafka.append({"filter": "relay/#", "topic": "events"})
        kafka_to_mqtt.append({"topic": "relay", "mqtt_topic": "relay/x"})
    config = BridgeConfig(mqtt_to_kafka=mqtt_to_kafka, kafka_to_mqtt=kafka_to_mqtt)
    if loops:
        with pytest.raises(ConfigError, match="would loop"):
            check_loops(config)
    else:
        check_loops(config)


@pytest.mark.parametrize(
    ("key", "expected"),
    [  # Kafka's UtilsTest.testMurmur2
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_murmur2_is_the_java_clients(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected
    assert partition_for(key, 7) == (expected & 0x7FFFFFFF) % 7
