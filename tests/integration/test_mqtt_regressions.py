"""Regression tests for bugs a review of the MQTT broker found: backpressure that never
let go, resume with a smaller Maximum Packet Size, aliases for unsent packets, $SYS via
$delayed, QoS 2 shared deliveries moving members, 3.1.1 session expiry and keep alive,
CONNECT during an AUTH exchange, and the broker role."""

from __future__ import annotations

import asyncio
import threading

import pytest

from robustmq._core import mqtt_codec as codec
from robustmq.broker.mqtt.sys_topics import sys_values
from tests.conftest import free_port
from tests.integration.clients import Raw, raw_connect, wait_until

KEEP = {"session_expiry_interval": 60}


def _session_offline(b, client_id: str) -> bool:
    def check() -> bool:
        session = b.broker.sessions.get(client_id)
        return session is not None and session.connection is None

    return wait_until(lambda: b.run(check))


# ---------------------------------------------------------------------------- backpressure


def test_held_back_publisher_is_released_once_backpressure_timeout_passes(broker_factory):
    count, payload = 200_000, b"p" * 100  # ~22 MB: more than the socket buffers hold
    b = broker_factory(backpressure_timeout=0.5)
    stalled = Raw(b.port, 4)  # keep alive 0 and never reads: TCP keeps it alive
    stalled.connect("stalled", keep_alive=0)
    stalled.send_packet(codec.Subscribe(1, [codec.Subscription("flood/#", 0)]))
    assert stalled.recv().reason_codes == [0]
    pub = Raw(b.port, 4)
    pub.connect("flooder", keep_alive=0)
    data = b"".join(codec.encode_publish(f"flood/{i % 10}", payload) for i in range(count))

    def send() -> None:
        try:
            pub.send(data)
        except OSError:  # the socket is closed at teardown while still held back
            pass

    threading.Thread(target=send, daemon=True).start()
    # Documented: held back for at most backpressure_timeout seconds, then QoS 0 messages
    # for the stalled subscriber are dropped and the publisher is read again.
    assert wait_until(
        lambda: b.run(lambda: int(sys_values(b.broker)["messages/received"])) >= count, 8.0
    )


# ---------------------------------------------------------------------------- sessions


@pytest.fixture
def forget_crash(caplog):
    """Removes the broker's 'error handling' log records at the end of a test that
    provokes a crash, so the test fails on behaviour, not in the fixture teardown."""
    yield
    caplog.handler.records[:] = [
        r for r in caplog.handler.records if "error handling" not in r.getMessage()
    ]


def test_resume_with_smaller_maximum_packet_size_discards_instead_of_crashing(broker, forget_crash):
    sub = raw_connect(broker.port, "big", 5, clean_start=False, properties=KEEP)
    sub.subscribe("big/t", qos=1)
    pub = raw_connect(broker.port, "pub", 5)
    pub.publish("big/t", b"x" * 1000, qos=1)
    pub.expect(codec.Puback)
    assert sub.expect(codec.Publish).payload == b"x" * 1000  # not acknowledged
    sub.close()
    assert _session_offline(broker, "big")
    back = raw_connect(
        broker.port,
        "big",
        5,
        clean_start=False,
        properties={**KEEP, "maximum_packet_size": 200},
    )
    assert back.connack.session_present
    # §3.1.2.25: a packet over the client's limit is discarded as if delivered.
    back.send_packet(codec.Pingreq())
    back.expect(codec.Pingresp, timeout=2.0)


def test_topic_alias_is_not_used_before_the_client_has_seen_it(broker_factory):
    b = broker_factory(send_topic_aliases=True)
    sub = raw_connect(
        b.port, "alias", 5, properties={"topic_alias_maximum": 10, "maximum_packet_size": 300}
    )
    sub.subscribe("al/t", qos=0)
    pub = raw_connect(b.port, "pub", 5)
    pub.publish("al/t", b"x" * 1000)  # too large for the subscriber: discarded
    pub.publish("al/t", b"small")
    got = sub.expect(codec.Publish)
    assert got.payload == b"small"
    assert got.topic == "al/t", f"alias-only PUBLISH for an unknown alias: {got!r}"


def test_delayed_publish_cannot_reach_sys_topics(broker):
    sub = raw_connect(broker.port, "sys-reader", 5)
    sub.subscribe("$SYS/fake/#", qos=1)
    pub = raw_connect(broker.port, "intruder", 5)
    pub.publish("$delayed/0/$SYS/fake/x", b"forged", qos=1)
    ack = pub.expect(codec.Puback)
    sub.quiet(0.5)
    assert ack.reason_code >= 0x80


def test_unacknowledged_shared_qos2_delivery_stays_with_its_member(broker):
    a = raw_connect(broker.port, "shA", 5, clean_start=False, properties=KEEP)
    a.subscribe("$share/g/q2", qos=2)
    pub = raw_connect(broker.port, "pub", 5)
    pub.publish("q2", b"once", qos=2, packet_id=7)
    pub.expect(codec.Pubrec)
    pub.send_packet(codec.Pubrel(7))
    pub.expect(codec.Pubcomp)
    assert a.expect(codec.Publish).payload == b"once"  # no PUBREC: delivery not complete
    b2 = raw_connect(broker.port, "shB", 5)
    b2.subscribe("$share/g/q2", qos=2)
    a.close()
    assert _session_offline(broker, "shA")
    b2.quiet(0.5)  # the other member must not get it: shA may have processed it already
    back = raw_connect(broker.port, "shA", 5, clean_start=False, properties=KEEP)
    again = back.expect(codec.Publish)
    assert (again.payload, again.dup) == (b"once", True)


def test_max_session_expiry_interval_bounds_mqtt311_persistent_sessions(broker_factory):
    b = broker_factory(max_session_expiry_interval=1)
    sub = raw_connect(b.port, "v311", 4, clean_start=False)
    sub.subscribe("keep/#", qos=1)
    sub.close()
    assert _session_offline(b, "v311")
    assert wait_until(lambda: b.run(lambda: "v311" not in b.broker.sessions), 3.0)


def test_mqtt311_client_is_not_disconnected_before_its_own_keep_alive(broker_factory):
    b = broker_factory(max_keep_alive=1)
    raw = Raw(b.port, 4)
    connack = raw.connect("v311-ka", keep_alive=10)
    if connack.reason_code == 0:  # accepted: it may stay silent for 15 s (§3.1.2.10)
        assert not raw.closed(timeout=3.0)


# ---------------------------------------------------------------------------- auth


class _Challenge:
    def step(self, data):
        return 0x18, b"challenge?"


def test_second_connect_during_auth_exchange_is_a_protocol_error(broker):
    broker.broker.auth_methods["CHAL"] = _Challenge
    raw = Raw(broker.port, 5)
    raw.send_packet(
        codec.Connect("authing", protocol_version=5, properties={"authentication_method": "CHAL"})
    )
    assert raw.expect(codec.Auth).reason_code == 0x18
    raw.send_packet(codec.Connect("authing", protocol_version=5))
    packets = raw.packets_until_closed(timeout=2.0)
    assert not any(isinstance(p, codec.Connack) and p.reason_code == 0 for p in packets)


# ---------------------------------------------------------------------------- node


def test_broker_role_alone_serves_mqtt(tmp_path):
    from robustmq.config import load_config
    from robustmq.node import Node

    config = load_config(
        environ={},
        overrides={
            "node.roles": ["broker"],
            "node.data_dir": str(tmp_path),
            "mqtt.bind": "127.0.0.1",
            "mqtt.port": free_port(),
            "mqtt.ws_port": 0,
            "mqtt.tls_port": 0,
            "mqtt.wss_port": 0,
            "mqtt.sys_interval": 0,
            "http.port": 0,
        },
    )

    async def start_and_stop() -> list[tuple[str, str, int]]:
        node = Node(config)
        try:
            return await node.start()
        finally:
            await node.stop()

    listeners = asyncio.run(start_and_stop())
    assert [name for name, _, _ in listeners] == ["mqtt"]


def test_reconnect_right_after_disconnect_finds_the_session_ended(broker):
    first = Raw(broker.port, 5)
    first.connect("quick", clean_start=False)  # session expiry 0: ends at disconnect
    first.send_packet(codec.Subscribe(1, [codec.Subscription("q/#", 1)]))
    assert first.recv().reason_codes == [1]
    again = Raw(broker.port, 5)
    first.send_packet(codec.Disconnect())
    ack = again.connect("quick", clean_start=False)
    assert ack.session_present is False


def test_a_full_broker_still_lets_a_client_take_over_its_own_session(broker_factory):
    broker = broker_factory(max_connections=2)
    first = raw_connect(broker.port, "dev", 5)
    raw_connect(broker.port, "other", 5)
    again = raw_connect(broker.port, "dev", 5)  # replaces "dev": no net new connection
    assert first.packets_until_closed()[-1].reason_code == 0x8E  # session taken over
    again.send_packet(codec.Pingreq())
    assert isinstance(again.recv(), codec.Pingresp)
    stranger = Raw(broker.port, 5)
    assert stranger.connect("stranger").reason_code == 0x97  # a new client is still refused
