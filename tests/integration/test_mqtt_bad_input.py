"""Malformed packets, protocol errors and misbehaving sockets, scripted byte by byte.

Each test sends one kind of bad input from a ``Raw`` client and checks what the broker
answers: the MQTT 5 reason code in a DISCONNECT (or CONNACK before the session exists), a
plain close for MQTT 3.1.1 (§4.8 of 3.1.1 has no way to say why). Every test also has a
``Bystander`` connected the whole time, which must still be served afterwards: one bad
client may cost only its own connection.
"""

from __future__ import annotations

import struct
import time

import pytest

from robustmq._core import mqtt_codec as codec
from tests.integration.clients import (
    Bystander,
    Paho,
    Raw,
    raw_connect,
    wait_until,
)

V311_V5 = pytest.mark.parametrize("version", [4, 5], ids=["3.1.1", "5.0"])


@pytest.fixture
def bystander(broker):
    return Bystander(broker.port)


def utf8(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack(">H", len(raw)) + raw


def packet(first: int, body: bytes) -> bytes:
    """A packet with a correct Remaining Length around an arbitrary body."""
    length = len(body)
    encoded = bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            break
    return bytes((first,)) + bytes(encoded) + body


def rejected(raw: Raw, version: int, reason: int) -> None:
    """MQTT 5: a DISCONNECT with ``reason``, then close. MQTT 3.1.1: a close, nothing sent."""
    packets = raw.packets_until_closed()
    if version == 5:
        assert [(type(p), p.reason_code) for p in packets] == [(codec.Disconnect, reason)]
    else:
        assert packets == []


# ---------------------------------------------------------------------------- before CONNECT


@pytest.mark.parametrize(
    "garbage",
    [b"\xde\xad\xbe\xef" * 8, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00\x00"],
    ids=["bytes", "http", "type0"],
)
def test_garbage_instead_of_connect_closes_the_connection(broker, bystander, garbage):
    raw = Raw(broker.port)
    raw.send(garbage)
    assert raw.packets_until_closed() == []
    bystander.check()


@pytest.mark.parametrize(
    "first_packet",
    [
        codec.Publish("t", b"x", 1, packet_id=1),
        codec.Subscribe(1, [codec.Subscription("t")]),
        codec.Pingreq(),
    ],
    ids=["publish", "subscribe", "pingreq"],
)
def test_packet_before_connect_closes_the_connection(broker, bystander, first_packet):
    # §3.1 [MQTT-3.1.0-1]: the first packet from the client must be CONNECT.
    raw = Raw(broker.port)
    raw.send_packet(first_packet)
    assert raw.packets_until_closed() == []
    bystander.check()


def connect_bytes(name: str, level: int, flags: int = 0x02, client_id: str = "c") -> bytes:
    body = utf8(name) + bytes((level, flags)) + struct.pack(">H", 60)
    if level == 5:
        body += b"\x00"  # no properties
    return packet(0x10, body + utf8(client_id))


@pytest.mark.parametrize(("name", "level"), [("MQTT", 7), ("MQTT", 2), ("MQIsdp", 4)])
def test_unsupported_protocol_level_gets_connack_0x01_then_close(broker, bystander, name, level):
    # 3.1.1 §3.1.2.2 [MQTT-3.1.2-2]: return code 0x01, then disconnect.
    raw = Raw(broker.port, 4)
    raw.send(connect_bytes(name, level))
    packets = raw.packets_until_closed()
    assert [(type(p), p.reason_code) for p in packets] == [(codec.Connack, 0x01)]
    bystander.check()


@pytest.mark.parametrize("version", [4, 5], ids=["3.1.1", "5.0"])
def test_reserved_connect_flag_closes_the_connection(broker, bystander, version):
    # §3.1.2.3 [MQTT-3.1.2-3]: the reserved flag must be 0.
    raw = Raw(broker.port, version)
    raw.send(connect_bytes("MQTT", version, flags=0x03))
    packets = raw.packets_until_closed()
    assert all(isinstance(p, codec.Connack) and p.reason_code >= 0x80 for p in packets)
    bystander.check()


@pytest.mark.parametrize(
    "flags",
    [0x42, 0x0A, 0x22, 0x1E],
    ids=[
        "password-without-user",
        "will-qos-without-will",
        "will-retain-without-will",
        "will-qos-3",
    ],
)
def test_inconsistent_connect_flags_close_the_connection(broker, bystander, flags):
    # 3.1.1 §3.1.2.6, §3.1.2.7, §3.1.2.9 [MQTT-3.1.2-13, -15, -22]: malformed CONNECT.
    raw = Raw(broker.port, 4)
    raw.send(connect_bytes("MQTT", 4, flags=flags))
    packets = raw.packets_until_closed()
    assert all(isinstance(p, codec.Connack) and p.reason_code != 0 for p in packets)
    bystander.check()


@pytest.mark.parametrize(
    "connect_props",
    [{"receive_maximum": 0}, {"maximum_packet_size": 0}],
    ids=lambda p: next(iter(p)),
)
def test_connect_property_of_zero_is_refused(broker, bystander, connect_props):
    # MQTT 5 §3.1.2.11.3, §3.1.2.11.4: a value of 0 is a Protocol Error.
    raw = Raw(broker.port, 5)
    raw.send_packet(codec.Connect("c", protocol_version=5, properties=connect_props))
    packets = raw.packets_until_closed()
    assert all(isinstance(p, codec.Connack) and p.reason_code >= 0x80 for p in packets)
    bystander.check()


def test_empty_client_id_without_clean_session_gets_connack_0x02(broker, bystander):
    # 3.1.1 §3.1.3.1 [MQTT-3.1.3-8]: return code 0x02 (identifier rejected), then close.
    raw = Raw(broker.port, 4)
    raw.send_packet(codec.Connect("", protocol_version=4, clean_start=False))
    packets = raw.packets_until_closed()
    assert [(type(p), p.reason_code) for p in packets] == [(codec.Connack, 0x02)]
    bystander.check()


def test_empty_client_id_with_clean_session_is_accepted(broker, bystander):
    # 3.1.1 §3.1.3.1 [MQTT-3.1.3-6]: the server assigns an identifier.
    raw = raw_connect(broker.port, "", 4)
    raw.send_packet(codec.Pingreq())
    raw.expect(codec.Pingresp)
    bystander.check()


def test_will_topic_with_a_wildcard_is_refused(broker, bystander):
    raw = Raw(broker.port, 5)
    raw.send_packet(codec.Connect("c", protocol_version=5, will=codec.Will("w/#", b"x")))
    packets = raw.packets_until_closed()
    assert all(isinstance(p, codec.Connack) and p.reason_code >= 0x80 for p in packets)
    bystander.check()


@pytest.mark.parametrize("partial", [b"", b"\x10\x10\x00\x04MQ"], ids=["silent", "half-connect"])
def test_connection_without_connect_is_closed_after_connect_timeout(broker_factory, partial):
    broker = broker_factory(connect_timeout=0.5)
    bystander = Bystander(broker.port)
    raw = Raw(broker.port)
    raw.send(partial)
    assert raw.packets_until_closed(timeout=2.5) == []
    bystander.check()


@pytest.mark.parametrize("version", [4, 5], ids=["3.1.1", "5.0"])
def test_max_connections_refuses_the_connection_over_the_limit(broker_factory, version):
    broker = broker_factory(max_connections=2)
    bystander = Bystander(broker.port)
    first = raw_connect(broker.port, "first", version)
    over = Raw(broker.port, version)
    over.send_packet(codec.Connect("over", protocol_version=version))
    packets = over.packets_until_closed()
    assert len(packets) == 1 and isinstance(packets[0], codec.Connack)
    # MQTT 5: 0x97 Quota exceeded; 3.1.1 has no such code, any refusal will do.
    if version == 5:
        assert packets[0].reason_code == 0x97
    else:
        assert packets[0].reason_code != 0
    bystander.check()
    first.send_packet(codec.Disconnect())
    first.packets_until_closed()

    def accepted() -> bool:
        raw = Raw(broker.port, version)
        ok = raw.connect("later", protocol_version=version).reason_code == 0
        raw.close()
        return ok

    assert wait_until(accepted, timeout=3)  # the freed slot is usable again


# ---------------------------------------------------------------------------- framing


@V311_V5
def test_garbage_after_connect(broker, bystander, version):
    raw = raw_connect(broker.port, "bad", version)
    raw.send(b"\x00\x00")  # packet type 0 is reserved
    rejected(raw, version, 0x81)
    bystander.check()


@V311_V5
def test_remaining_length_of_five_bytes(broker, bystander, version):
    # §1.5.5 / §2.2.3: a Variable Byte Integer has at most four bytes.
    raw = raw_connect(broker.port, "bad", version)
    raw.send(b"\x30\xff\xff\xff\xff\x7f")
    rejected(raw, version, 0x81)
    bystander.check()


@V311_V5
@pytest.mark.parametrize(
    "data",
    [
        packet(0x80, b"\x00\x01" + utf8("t") + b"\x00"),  # SUBSCRIBE with flags 0, not 2
        packet(0xA0, b"\x00\x01" + utf8("t")),  # UNSUBSCRIBE with flags 0
        packet(0x60, b"\x00\x01"),  # PUBREL with flags 0
        b"\xc1\x00",  # PINGREQ with flags 1
    ],
    ids=["subscribe", "unsubscribe", "pubrel", "pingreq"],
)
def test_reserved_fixed_header_flags(broker, bystander, version, data):
    # §2.1.3: invalid flags make the packet malformed.
    raw = raw_connect(broker.port, "bad", version)
    if version == 5 and data[0] == 0x80:
        data = packet(0x80, b"\x00\x01\x00" + utf8("t") + b"\x00")
    elif version == 5 and data[0] == 0xA0:
        data = packet(0xA0, b"\x00\x01\x00" + utf8("t"))
    raw.send(data)
    rejected(raw, version, 0x81)
    bystander.check()


@V311_V5
def test_second_connect_is_a_protocol_error(broker, bystander, version):
    # §3.1 [MQTT-3.1.0-2].
    raw = raw_connect(broker.port, "bad", version)
    raw.send_packet(codec.Connect("bad", protocol_version=version))
    rejected(raw, version, 0x82)
    bystander.check()


@V311_V5
def test_publish_with_qos_3(broker, bystander, version):
    # §3.3.1.2 [MQTT-3.3.1-4].
    raw = raw_connect(broker.port, "bad", version)
    body = utf8("t") + b"\x00\x01" + (b"\x00" if version == 5 else b"") + b"x"
    raw.send(packet(0x36, body))
    rejected(raw, version, 0x81)
    bystander.check()


@V311_V5
@pytest.mark.parametrize(
    "bad",
    [
        codec.Publish("t", b"x", 1, packet_id=0),
        codec.Subscribe(0, [codec.Subscription("t")]),
        codec.Unsubscribe(0, ["t"]),
    ],
    ids=["publish", "subscribe", "unsubscribe"],
)
def test_packet_identifier_zero(broker, bystander, version, bad):
    # §2.2.1: a non-zero Packet Identifier is required.
    raw = raw_connect(broker.port, "bad", version)
    raw.send_packet(bad)
    rejected(raw, version, 0x82)
    bystander.check()


@V311_V5
@pytest.mark.parametrize("topic", ["a/+/b", "a/#", "+"])
def test_wildcard_in_publish_topic(broker, bystander, version, topic):
    # §3.3.2.1 [MQTT-3.3.2-2]; MQTT 5: 0x90 Topic Name invalid.
    raw = raw_connect(broker.port, "bad", version)
    raw.publish(topic, b"x", qos=1)
    rejected(raw, version, 0x90)
    bystander.check()


@V311_V5
@pytest.mark.parametrize(
    "topic",
    [b"\xff\xfe", b"a/\xc3", b"\xed\xa0\x80", b"a\x00b"],
    ids=["ff", "cut", "surrogate", "nul"],
)
def test_invalid_utf8_topic(broker, bystander, version, topic):
    # §1.5.4 [MQTT-1.5.4-1, -2]: ill-formed UTF-8 or U+0000 makes the packet malformed.
    raw = raw_connect(broker.port, "bad", version)
    raw.send(packet(0x30, utf8(topic) + (b"\x00" if version == 5 else b"") + b"x"))
    rejected(raw, version, 0x81)
    bystander.check()


@V311_V5
def test_packet_over_max_packet_size(broker_factory, version):
    broker = broker_factory(max_packet_size=1024)
    bystander = Bystander(broker.port)
    raw = raw_connect(broker.port, "bad", version)
    raw.publish("big", b"x" * 2000, qos=0)
    rejected(raw, version, 0x95)
    bystander.check()


@V311_V5
def test_packet_of_exactly_max_packet_size_is_accepted(broker_factory, version):
    broker = broker_factory(max_packet_size=1024)
    sub = Paho(broker.port, "sub", version)
    sub.subscribe("big", 0)
    raw = raw_connect(broker.port, "pub", version)
    overhead = len(codec.encode(codec.Publish("big", b""), version))
    payload = b"x" * (1024 - overhead - 1)  # the Remaining Length grows to two bytes
    data = codec.encode(codec.Publish("big", payload), version)
    assert len(data) == 1024
    raw.send(data)
    assert sub.get().payload == payload


@V311_V5
def test_empty_topic_name_without_alias(broker, bystander, version):
    # MQTT 3.1.1 §4.7.3 / 5.0 §3.3.2.1: a Topic Name needs at least one character (or an alias).
    raw = raw_connect(broker.port, "bad", version)
    raw.send(packet(0x30, utf8("") + (b"\x00" if version == 5 else b"") + b"x"))
    rejected(raw, version, 0x82)
    bystander.check()


@V311_V5
def test_topic_deeper_than_max_topic_levels(broker_factory, version):
    broker = broker_factory(max_topic_levels=3)
    bystander = Bystander(broker.port)
    raw = raw_connect(broker.port, "deep", version)
    failure = 0x8F if version == 5 else 0x80
    assert raw.subscribe("a/b/c", "a/b/c/d", qos=1).reason_codes == [1, failure]
    raw.publish("a/b/c/d", b"x", qos=1)
    rejected(raw, version, 0x90)
    bystander.check()


@V311_V5
def test_max_subscriptions_per_client(broker_factory, version):
    broker = broker_factory(max_subscriptions_per_client=2)
    raw = raw_connect(broker.port, "many", version)
    quota = 0x97 if version == 5 else 0x80
    assert raw.subscribe("a", "b", "c", qos=0).reason_codes == [0, 0, quota]
    assert raw.subscribe("a", qos=1, packet_id=2).reason_codes == [1]  # replacing is fine


def test_too_many_qos2_in_flight_from_the_client_gets_0x93(broker_factory):
    # §3.3.4: more QoS 2 PUBLISHes awaiting PUBREL than Receive Maximum: 0x93.
    broker = broker_factory(receive_maximum=2)
    bystander = Bystander(broker.port)
    raw = raw_connect(broker.port, "bad", 5)
    for packet_id in (1, 2):
        raw.publish("t", b"x", qos=2, packet_id=packet_id)
        raw.expect(codec.Pubrec)
    raw.publish("t", b"x", qos=2, packet_id=3)
    rejected(raw, 5, 0x93)
    bystander.check()


# ---------------------------------------------------------------------------- SUBSCRIBE


@V311_V5
def test_invalid_topic_filter_is_refused_while_valid_ones_are_granted(broker, bystander, version):
    # MQTT 5 §3.9.3: 0x8F per bad filter; 3.1.1 §3.9.3: 0x80. The packet as a whole stands.
    raw = raw_connect(broker.port, "sub", version)
    suback = raw.subscribe("ok/+", "bad/#/x", "a+/b", "ok2/#", qos=1)
    failure = 0x8F if version == 5 else 0x80
    assert suback.reason_codes == [1, failure, failure, 1]
    pub = Paho(broker.port, "pub", version)
    pub.publish("ok/x", b"granted", 1)
    p = raw.expect(codec.Publish)
    assert (p.topic, p.payload) == ("ok/x", b"granted")
    bystander.check()


@V311_V5
def test_subscribe_without_topic_filters(broker, bystander, version):
    # §3.8.3 [MQTT-3.8.3-3]: at least one filter.
    raw = raw_connect(broker.port, "bad", version)
    raw.send(packet(0x82, b"\x00\x01" + (b"\x00" if version == 5 else b"")))
    rejected(raw, version, 0x82)
    bystander.check()


@V311_V5
def test_subscribe_with_qos_3(broker, bystander, version):
    # 3.1.1 §3.8.3.1 [MQTT-3.8.3-4]; MQTT 5 §3.8.3.1: QoS 3 is malformed.
    raw = raw_connect(broker.port, "bad", version)
    props = b"\x00" if version == 5 else b""
    raw.send(packet(0x82, b"\x00\x01" + props + utf8("t") + b"\x03"))
    rejected(raw, version, 0x81)
    bystander.check()


def test_subscribe_with_retain_handling_3(broker, bystander):
    # MQTT 5 §3.8.3.1: Retain Handling 3 is a Protocol Error.
    raw = raw_connect(broker.port, "bad", 5)
    raw.send(packet(0x82, b"\x00\x01\x00" + utf8("t") + b"\x31"))
    rejected(raw, 5, 0x82)
    bystander.check()


def test_subscription_identifier_zero(broker, bystander):
    # MQTT 5 §3.8.2.1.2: a Subscription Identifier of 0 is a Protocol Error.
    raw = raw_connect(broker.port, "bad", 5)
    raw.send(packet(0x82, b"\x00\x01\x02\x0b\x00" + utf8("t") + b"\x01"))
    rejected(raw, 5, 0x82)
    bystander.check()


@V311_V5
def test_unsubscribe_without_topic_filters(broker, bystander, version):
    # §3.10.3 [MQTT-3.10.3-2]: at least one filter.
    raw = raw_connect(broker.port, "bad", version)
    raw.send(packet(0xA2, b"\x00\x01" + (b"\x00" if version == 5 else b"")))
    rejected(raw, version, 0x82)
    bystander.check()


def test_subscribe_with_reserved_option_bits(broker, bystander):
    # MQTT 5 §3.8.3.1: bits 6 and 7 of the subscription options are reserved.
    raw = raw_connect(broker.port, "bad", 5)
    raw.send(packet(0x82, b"\x00\x01\x00" + utf8("t") + b"\xc1"))
    rejected(raw, 5, 0x81)
    bystander.check()


def test_no_local_on_a_shared_subscription_is_a_protocol_error(broker, bystander):
    # MQTT 5 §3.8.3.1 [MQTT-3.8.3-4].
    raw = raw_connect(broker.port, "bad", 5)
    raw.send_packet(codec.Subscribe(1, [codec.Subscription("$share/g/t", 1, no_local=True)]))
    rejected(raw, 5, 0x82)
    bystander.check()


# ---------------------------------------------------------------------------- MQTT 5 specifics


def test_property_not_allowed_in_the_packet(broker, bystander):
    # §2.2.2.2: Session Expiry Interval is not a PUBLISH property.
    raw = raw_connect(broker.port, "bad", 5)
    body = utf8("t") + b"\x05\x11\x00\x00\x00\x3c" + b"x"
    raw.send(packet(0x30, body))
    rejected(raw, 5, 0x82)
    bystander.check()


def test_property_given_twice(broker, bystander):
    # §2.2.2.2: a property other than User Property / Subscription Identifier appears once.
    raw = raw_connect(broker.port, "bad", 5)
    body = utf8("t") + b"\x04\x01\x00\x01\x00" + b"x"  # Payload Format Indicator twice
    raw.send(packet(0x30, body))
    rejected(raw, 5, 0x82)
    bystander.check()


def test_auth_without_an_authentication_method(broker, bystander):
    # §4.12: AUTH when CONNECT had no Authentication Method is a Protocol Error.
    raw = raw_connect(broker.port, "bad", 5)
    raw.send_packet(codec.Auth(0x18, {"authentication_method": "x"}))
    rejected(raw, 5, 0x82)
    bystander.check()


@pytest.mark.parametrize(
    "server_packet",
    [codec.Connack(False, 0), codec.Suback(1, [0]), codec.Pingresp()],
    ids=["connack", "suback", "pingresp"],
)
def test_server_only_packet_from_a_client(broker, bystander, server_packet):
    raw = raw_connect(broker.port, "bad", 5)
    raw.send_packet(server_packet)
    rejected(raw, 5, 0x82)
    bystander.check()


def test_disconnect_with_an_invalid_reason_code(broker, bystander):
    raw = raw_connect(broker.port, "bad", 5)
    raw.send(b"\xe0\x01\x03")  # 0x03 is not a DISCONNECT reason code
    rejected(raw, 5, 0x81)
    bystander.check()


def test_will_is_published_when_the_broker_closes_for_a_protocol_error(broker, bystander):
    # §3.1.2.5: the will is published when the server closes the connection for an error.
    watcher = Paho(broker.port, "watcher", 5)
    watcher.subscribe("will/t", 1)
    raw = raw_connect(broker.port, "bad", 5, will=codec.Will("will/t", b"bad client", 1))
    raw.send(b"\x00\x00")
    rejected(raw, 5, 0x81)
    assert watcher.get().payload == b"bad client"
    bystander.check()


# ---------------------------------------------------------------------------- keep alive


@V311_V5
def test_keep_alive_timeout_closes_a_silent_client(broker, bystander, version):
    # §3.1.2.10: no packet within 1.5 x Keep Alive: close (MQTT 5: DISCONNECT 0x8D).
    raw = raw_connect(broker.port, "silent", version, keep_alive=1)
    packets = raw.packets_until_closed(timeout=5)
    if version == 5:
        assert [(type(p), p.reason_code) for p in packets] == [(codec.Disconnect, 0x8D)]
    else:
        assert packets == []
    bystander.check()


def test_pingreq_keeps_the_connection_alive(broker):
    raw = raw_connect(broker.port, "pinging", 4, keep_alive=1)
    deadline = time.monotonic() + 2.2  # past the 1.5 s a silent client would get
    while time.monotonic() < deadline:
        raw.send_packet(codec.Pingreq())
        raw.expect(codec.Pingresp)
        time.sleep(0.4)
    raw.send_packet(codec.Pingreq())
    raw.expect(codec.Pingresp)


def test_keep_alive_zero_means_no_timeout(broker):
    raw = raw_connect(broker.port, "forever", 5, keep_alive=0)
    raw.quiet(1.6)  # past a sweep of the keep-alive checker: neither DISCONNECT nor close
    raw.send_packet(codec.Pingreq())
    raw.expect(codec.Pingresp)
