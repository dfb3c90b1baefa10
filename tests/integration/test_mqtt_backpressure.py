"""A subscriber that cannot keep up holds QoS 0 publishers back instead of losing their
messages, for at most backpressure_timeout seconds; other clients stay served."""

from __future__ import annotations

import threading
import time

from robustmq._core import mqtt_codec
from robustmq.broker.mqtt.sys_topics import sys_values
from tests.integration.clients import Paho, Raw

COUNT = 200_000  # ~22 MB: more than the kernel's socket buffers hold
PAYLOAD = b"p" * 100


def _slow_subscriber(port: int) -> Raw:
    sub = Raw(port, 4)
    sub.connect("slow")
    sub.send_packet(mqtt_codec.Subscribe(1, [mqtt_codec.Subscription("flood/#", 0)]))
    assert sub.recv().reason_codes == [0]
    return sub


def _flood(port: int) -> threading.Thread:
    pub = Raw(port, 4)
    pub.connect("flooder")
    data = b"".join(mqtt_codec.encode_publish(f"flood/{i % 10}", PAYLOAD) for i in range(COUNT))
    thread = threading.Thread(target=pub.send, args=(data,), daemon=True)
    thread.start()
    return thread


def _count_received(sub: Raw, expect: int, quiet: float = 2.0) -> int:
    got = 0
    while got < expect:
        try:
            packet = sub.recv(timeout=quiet)
        except TimeoutError:
            break
        assert packet.payload == PAYLOAD
        got += 1
    return got


def test_slow_subscriber_holds_the_publisher_back_without_loss(broker_factory):
    b = broker_factory(backpressure_timeout=60)
    sub = _slow_subscriber(b.port)
    sender = _flood(b.port)
    time.sleep(1.0)  # the subscriber reads nothing meanwhile
    assert b.run(lambda: int(sys_values(b.broker)["messages/received"])) < COUNT  # held back
    other = Paho(b.port, "bystander", 4)  # still served while the flood waits
    other.disconnect()
    assert _count_received(sub, COUNT) == COUNT
    sender.join(10)
    assert b.run(lambda: b.broker.stats["messages_dropped"]) == 0


def test_past_the_timeout_qos0_messages_are_dropped_and_counted(broker_factory):
    b = broker_factory(backpressure_timeout=0)
    sub = _slow_subscriber(b.port)
    sender = _flood(b.port)
    sender.join(30)
    deadline = time.monotonic() + 30
    while b.run(lambda: int(sys_values(b.broker)["messages/received"])) < COUNT:
        assert time.monotonic() < deadline, "the broker stopped reading the publisher"
        time.sleep(0.05)
    dropped = b.run(lambda: b.broker.stats["messages_dropped"])
    assert dropped > 0
    assert _count_received(sub, COUNT, quiet=1.0) == COUNT - dropped
