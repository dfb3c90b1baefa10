"""Core MQTT behaviour over real sockets: QoS flows, topic matching, retained messages, wills.

paho-mqtt drives the ordinary flows and ``Raw`` scripts the exact packets where the test
must see packet identifiers, flags or reason codes. Session state across reconnects lives
in test_mqtt_sessions.py, MQTT 5 features in test_mqtt_v5.py, malformed input in
test_mqtt_bad_input.py.
"""

from __future__ import annotations

import socket
import time

import pytest

from robustmq._core import mqtt_codec as codec
from tests.integration.clients import Paho, Raw, code, props, raw_connect, receive_all

V311_V5 = pytest.mark.parametrize("version", [4, 5], ids=["3.1.1", "5.0"])


# ---------------------------------------------------------------------------- QoS


@V311_V5
@pytest.mark.parametrize("pub_qos", [0, 1, 2])
@pytest.mark.parametrize("sub_qos", [0, 1, 2])
def test_delivery_qos_is_the_lower_of_publish_and_subscription(broker, version, pub_qos, sub_qos):
    # MQTT 3.1.1 §3.8.4 / 5.0 §3.8.4: delivered at min(publish QoS, granted QoS).
    sub = Paho(broker.port, "sub", version)
    assert [code(c) for c in sub.subscribe("q/t", sub_qos)] == [sub_qos]
    pub = Paho(broker.port, "pub", version)
    pub.publish("q/t", b"payload", pub_qos)
    msg = sub.get()
    assert (msg.topic, msg.payload, msg.qos) == ("q/t", b"payload", min(pub_qos, sub_qos))


@V311_V5
def test_qos1_publish_from_client_is_acknowledged_with_its_packet_id(broker, version):
    raw = raw_connect(broker.port, "pub", version)
    raw.publish("q/t", b"x", qos=1, packet_id=4242)
    ack = raw.expect(codec.Puback)
    assert ack.packet_id == 4242


@V311_V5
def test_qos2_publish_from_client_completes_pubrec_pubrel_pubcomp(broker, version):
    sub = Paho(broker.port, "sub", version)
    sub.subscribe("q/t", 2)
    raw = raw_connect(broker.port, "pub", version)
    raw.publish("q/t", b"two", qos=2, packet_id=77)
    assert raw.expect(codec.Pubrec).packet_id == 77
    raw.send_packet(codec.Pubrel(77))
    assert raw.expect(codec.Pubcomp).packet_id == 77
    msg = sub.get()
    assert (msg.payload, msg.qos) == (b"two", 2)


@V311_V5
def test_qos1_delivery_to_client_waits_for_puback(broker, version):
    raw = raw_connect(broker.port, "sub", version)
    raw.subscribe("q/t", qos=1)
    pub = Paho(broker.port, "pub", version)
    pub.publish("q/t", b"one", 1)
    p = raw.expect(codec.Publish)
    assert (p.topic, p.payload, p.qos, p.dup, p.retain) == ("q/t", b"one", 1, False, False)
    assert p.packet_id != 0
    raw.send_packet(codec.Puback(p.packet_id))
    pub.publish("q/t", b"next", 1)
    assert raw.expect(codec.Publish).payload == b"next"


@V311_V5
def test_qos2_delivery_to_client_completes_the_four_packet_flow(broker, version):
    raw = raw_connect(broker.port, "sub", version)
    raw.subscribe("q/t", qos=2)
    pub = Paho(broker.port, "pub", version)
    pub.publish("q/t", b"two", 2)
    p = raw.expect(codec.Publish)
    assert (p.payload, p.qos) == (b"two", 2)
    raw.send_packet(codec.Pubrec(p.packet_id))
    assert raw.expect(codec.Pubrel).packet_id == p.packet_id
    raw.send_packet(codec.Pubcomp(p.packet_id))
    raw.quiet()


def test_qos2_delivery_ends_on_an_error_pubrec_without_pubrel(broker):
    # MQTT 5.0 §4.3.3: a PUBREC with a reason code >= 0x80 ends the flow; no PUBREL follows.
    raw = raw_connect(broker.port, "sub", 5)
    raw.subscribe("q/t", qos=2)
    pub = Paho(broker.port, "pub", 5)
    pub.publish("q/t", b"rejected", 2)
    p = raw.expect(codec.Publish)
    raw.send_packet(codec.Pubrec(p.packet_id, 0x80))
    raw.quiet()


@V311_V5
def test_resubscribing_replaces_the_granted_qos(broker, version):
    # §3.8.4: a SUBSCRIBE for an existing filter replaces it; one delivery at the new QoS.
    sub = Paho(broker.port, "sub", version)
    sub.subscribe("q/t", 0)
    sub.subscribe("q/t", 2)
    pub = Paho(broker.port, "pub", version)
    pub.publish("q/t", b"x", 2)
    assert sub.get().qos == 2
    sub.expect_nothing()


@V311_V5
def test_overlapping_subscriptions_deliver_once_at_the_highest_qos(broker, version):
    # MQTT 5.0 §3.3.4 (and 3.1.1 non-normative §3.3.5): one copy, the maximum granted QoS.
    sub = Paho(broker.port, "sub", version)
    sub.subscribe("o/+", 0)
    sub.subscribe("o/#", 2)
    sub.subscribe("o/a", 1)
    pub = Paho(broker.port, "pub", version)
    pub.publish("o/a", b"once", 2)
    got = receive_all(sub)
    assert [(m.topic, m.payload, m.qos) for m in got] == [("o/a", b"once", 2)]


@V311_V5
def test_unsubscribe_stops_delivery(broker, version):
    sub = Paho(broker.port, "sub", version)
    sub.subscribe("u/t", 1)
    pub = Paho(broker.port, "pub", version)
    pub.publish("u/t", b"before", 1)
    assert sub.get().payload == b"before"
    sub.unsubscribe("u/t")
    pub.publish("u/t", b"after", 1)
    sub.expect_nothing()


@V311_V5
def test_large_message_crosses_the_broker_intact(broker, version):
    # Several TCP reads per packet on the way in, several writes on the way out.
    sub = Paho(broker.port, "sub", version)
    sub.subscribe("big/t", 1)
    pub = Paho(broker.port, "pub", version)
    payload = bytes(range(256)) * 2048  # 512 KiB
    pub.publish("big/t", payload, 1)
    msg = sub.get(timeout=10)
    assert msg.payload == payload


def test_packet_split_into_single_bytes_is_reassembled(broker):
    raw = raw_connect(broker.port, "slow", 4)
    raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = codec.encode(codec.Publish("s/t", b"dribbled", 1, packet_id=3), 4)
    for i in range(len(data)):
        raw.send(data[i : i + 1])
        time.sleep(0.01)
    assert raw.expect(codec.Puback).packet_id == 3


def test_many_packets_in_one_write_are_all_handled_in_order(broker):
    raw = raw_connect(broker.port, "burst", 4)
    burst = b"".join(
        codec.encode(codec.Publish("b/t", b"x", 1, packet_id=n), 4) for n in range(1, 101)
    )
    raw.send(burst + codec.encode(codec.Pingreq(), 4))
    acks = [raw.expect(codec.Puback).packet_id for _ in range(100)]
    assert acks == list(range(1, 101))
    raw.expect(codec.Pingresp)


# ---------------------------------------------------------------------------- topic matching


def publish_each(port: int, topics: list[str], version: int = 4) -> None:
    pub = Paho(port, "pub", version)
    for topic in topics:
        pub.publish(topic, topic.encode(), 1)
    pub.disconnect()


def test_plus_matches_exactly_one_level(broker):
    sub = Paho(broker.port, "sub")
    sub.subscribe("w/+/x", 1)
    publish_each(broker.port, ["w/a/x", "w/a/b/x", "w/x", "w//x", "w/a/x/y"])
    assert sorted(m.topic for m in receive_all(sub)) == ["w//x", "w/a/x"]


def test_hash_matches_the_parent_level_and_every_level_below(broker):
    sub = Paho(broker.port, "sub")
    sub.subscribe("h/#", 1)
    publish_each(broker.port, ["h", "h/a", "h/a/b/c", "hx", "x/h", "h/"])
    assert sorted(m.topic for m in receive_all(sub)) == ["h", "h/", "h/a", "h/a/b/c"]


def test_plus_and_hash_combine(broker):
    sub = Paho(broker.port, "sub")
    sub.subscribe("+/mid/#", 1)
    publish_each(broker.port, ["a/mid", "a/mid/x/y", "mid/x", "a/b/mid/x"])
    assert sorted(m.topic for m in receive_all(sub)) == ["a/mid", "a/mid/x/y"]


def test_dollar_topics_are_not_matched_by_leading_wildcards(broker):
    # MQTT 3.1.1 §4.7.2 / 5.0 §4.7.2: '#' and '+' as first level do not match '$' topics.
    wild = Paho(broker.port, "wild")
    wild.subscribe("#", 1)
    wild.subscribe("+/status", 1)
    wild.subscribe("+/+", 1)
    explicit = Paho(broker.port, "explicit")
    explicit.subscribe("$svc/#", 1)
    publish_each(broker.port, ["$svc/status", "dev/status"])
    assert [m.topic for m in receive_all(explicit)] == ["$svc/status"]
    assert [m.topic for m in receive_all(wild, 0.3)] == ["dev/status"]


# ---------------------------------------------------------------------------- retained


@V311_V5
def test_retained_message_is_delivered_on_subscribe_with_retain_set(broker, version):
    pub = Paho(broker.port, "pub", version)
    pub.publish("r/t", b"last known", 1, retain=True)
    sub = Paho(broker.port, "sub", version)
    sub.subscribe("r/t", 1)
    msg = sub.get()
    assert (msg.topic, msg.payload, msg.qos, msg.retain) == ("r/t", b"last known", 1, True)


@V311_V5
def test_live_message_to_an_existing_subscription_has_retain_cleared(broker, version):
    # 3.1.1 §3.3.1.3; 5.0 §3.3.1.3 with Retain As Published 0 (the default).
    sub = Paho(broker.port, "sub", version)
    sub.subscribe("r/t", 1)
    pub = Paho(broker.port, "pub", version)
    pub.publish("r/t", b"live", 1, retain=True)
    msg = sub.get()
    assert (msg.payload, msg.retain) == (b"live", False)


@V311_V5
def test_retained_message_is_replaced_by_the_next_one(broker, version):
    pub = Paho(broker.port, "pub", version)
    pub.publish("r/t", b"first", 1, retain=True)
    pub.publish("r/t", b"second", 1, retain=True)
    sub = Paho(broker.port, "sub", version)
    sub.subscribe("r/t", 1)
    assert [m.payload for m in receive_all(sub)] == [b"second"]


@V311_V5
def test_retained_message_is_cleared_by_an_empty_payload(broker, version):
    pub = Paho(broker.port, "pub", version)
    pub.publish("r/t", b"soon gone", 1, retain=True)
    pub.publish("r/t", b"", 1, retain=True)
    sub = Paho(broker.port, "sub", version)
    sub.subscribe("r/#", 1)
    sub.expect_nothing()


def test_retained_messages_match_wildcard_filters(broker):
    pub = Paho(broker.port, "pub")
    for topic in ["r", "r/a", "r/b/c", "other/x", "x/r/a"]:
        pub.publish(topic, topic.encode(), 1, retain=True)
    sub = Paho(broker.port, "sub")
    sub.subscribe("r/#", 1)
    sub.subscribe("+/r/+", 1)
    got = receive_all(sub)
    expected = [("r", True), ("r/a", True), ("r/b/c", True), ("x/r/a", True)]
    assert sorted((m.topic, m.retain) for m in got) == expected


def test_retained_dollar_topics_are_not_matched_by_leading_wildcards(broker):
    # §4.7.2 for retained messages too; the broker keeps its $SYS statistics retained.
    pub = Paho(broker.port, "pub")
    pub.publish("$app/state", b"dollar", 1, retain=True)
    pub.publish("app/state", b"plain", 1, retain=True)
    wild = Paho(broker.port, "wild")
    wild.subscribe("#", 1)
    wild.subscribe("+/state", 1)
    assert sorted(m.topic for m in receive_all(wild)) == ["app/state", "app/state"]
    explicit = Paho(broker.port, "explicit")
    explicit.subscribe("$app/#", 1)
    assert [m.payload for m in receive_all(explicit)] == [b"dollar"]


def test_retained_message_keeps_its_properties(broker):
    pub = Paho(broker.port, "pub", 5)
    sent = props("PUBLISH", ContentType="text/plain", UserProperty=[("k", "v")])
    pub.publish("r/t", b"with properties", 1, retain=True, properties=sent)
    sub = Paho(broker.port, "sub", 5)
    sub.subscribe("r/t", 1)
    p = sub.get().properties
    assert (p.ContentType, p.UserProperty) == ("text/plain", [("k", "v")])


def test_retained_message_qos_is_downgraded_to_the_subscription(broker):
    pub = Paho(broker.port, "pub")
    pub.publish("r/t", b"q2", 2, retain=True)
    sub = Paho(broker.port, "sub")
    sub.subscribe("r/t", 1)
    msg = sub.get()
    assert (msg.payload, msg.qos, msg.retain) == (b"q2", 1, True)


def test_non_retained_publish_does_not_replace_the_retained_message(broker):
    pub = Paho(broker.port, "pub")
    pub.publish("r/t", b"kept", 1, retain=True)
    pub.publish("r/t", b"transient", 1, retain=False)
    sub = Paho(broker.port, "sub")
    sub.subscribe("r/t", 1)
    assert [m.payload for m in receive_all(sub)] == [b"kept"]


def test_retained_message_count_limit_stores_no_more(broker_factory):
    # sys_interval=0: the broker's own $SYS retained messages stay out of the count here.
    broker = broker_factory(max_retained_messages=2, sys_interval=0)
    pub = Paho(broker.port, "pub")
    for n in (1, 2, 3):
        pub.publish(f"r/{n}", f"m{n}".encode(), 1, retain=True)
    pub.publish("r/1", b"m1 replaced", 1, retain=True)  # replacing does not add one
    sub = Paho(broker.port, "sub")
    sub.subscribe("r/#", 1)
    got = sorted((m.topic, m.payload) for m in receive_all(sub))
    assert got == [("r/1", b"m1 replaced"), ("r/2", b"m2")]


def test_retained_message_count_limit_is_for_client_messages(broker_factory):
    broker = broker_factory(max_retained_messages=2)
    pub = Paho(broker.port, "pub")
    pub.publish("r/1", b"m1", 1, retain=True)
    sub = Paho(broker.port, "sub")
    sub.subscribe("r/#", 1)
    assert [(m.topic, m.payload) for m in receive_all(sub)] == [("r/1", b"m1")]


def test_retained_payload_limit_stores_no_larger_payload(broker_factory):
    broker = broker_factory(max_retained_payload=10)
    pub = Paho(broker.port, "pub")
    pub.publish("r/small", b"0123456789", 1, retain=True)
    pub.publish("r/large", b"0123456789A", 1, retain=True)
    sub = Paho(broker.port, "sub")
    sub.subscribe("r/#", 1)
    assert [(m.topic, m.payload) for m in receive_all(sub)] == [("r/small", b"0123456789")]


def test_message_over_the_retained_limits_is_still_delivered_live(broker_factory):
    broker = broker_factory(max_retained_payload=4)
    sub = Paho(broker.port, "sub")
    sub.subscribe("r/t", 1)
    pub = Paho(broker.port, "pub")
    pub.publish("r/t", b"too big to keep", 1, retain=True)
    assert sub.get().payload == b"too big to keep"


# ---------------------------------------------------------------------------- wills


def will_client(port: int, version: int, **kwargs) -> Paho:
    kwargs.setdefault("will", ("will/t", b"gone", 1, False))
    return Paho(port, "dying", version, **kwargs)


@V311_V5
def test_will_is_published_on_abnormal_disconnect(broker, version):
    watcher = Paho(broker.port, "watcher", version)
    watcher.subscribe("will/#", 1)
    dying = will_client(broker.port, version)
    dying.drop()
    msg = watcher.get()
    assert (msg.topic, msg.payload, msg.qos, msg.retain) == ("will/t", b"gone", 1, False)


@V311_V5
def test_will_is_not_published_on_normal_disconnect(broker, version):
    watcher = Paho(broker.port, "watcher", version)
    watcher.subscribe("will/#", 1)
    dying = will_client(broker.port, version)
    dying.disconnect()
    watcher.expect_nothing(0.5)


def test_will_is_published_on_disconnect_with_will_message_reason(broker):
    # MQTT 5.0 §3.14.2.1: reason code 0x04 asks the server to publish the will.
    watcher = Paho(broker.port, "watcher", 5)
    watcher.subscribe("will/#", 1)
    dying = will_client(broker.port, 5)
    dying.disconnect(reason_code=0x04)
    assert watcher.get().payload == b"gone"


@pytest.mark.parametrize("version", [4], ids=["3.1.1"])  # MQTT 5 keep alive: bad_input
def test_will_is_published_when_keep_alive_expires(broker, version):
    watcher = Paho(broker.port, "watcher", version)
    watcher.subscribe("will/#", 1)
    raw = raw_connect(
        broker.port, "silent", version, keep_alive=1, will=codec.Will("will/t", b"silent", 1)
    )
    msg = watcher.get(timeout=6)
    assert msg.payload == b"silent"
    raw.close()


def raw_will_client(port: int, version: int, will: codec.Will, **kwargs) -> Raw:
    """A Raw client with a will; closing its socket is an abnormal disconnect, at once
    (Paho.drop() waits for paho's network loop to stop)."""
    return raw_connect(port, "dying", version, will=will, **kwargs)


@V311_V5
def test_will_with_retain_becomes_the_retained_message(broker, version):
    dying = raw_will_client(broker.port, version, codec.Will("will/t", b"retained", 1, True))
    dying.close()
    time.sleep(0.3)  # the broker notices the closed socket
    late = Paho(broker.port, "late", version)
    late.subscribe("will/t", 1)
    msg = late.get()
    assert (msg.payload, msg.retain) == (b"retained", True)


def test_will_properties_are_forwarded(broker):
    watcher = Paho(broker.port, "watcher", 5)
    watcher.subscribe("will/#", 1)
    will_props = {
        "content_type": "text/plain",
        "user_property": [("why", "crash"), ("node", "7")],
        "response_topic": "will/reply",
        "correlation_data": b"\x01\x02",
        "will_delay_interval": 0,
    }
    dying = raw_will_client(broker.port, 5, codec.Will("will/t", b"gone", 1, properties=will_props))
    dying.close()
    p = watcher.get().properties
    assert p.ContentType == "text/plain"
    assert p.UserProperty == [("why", "crash"), ("node", "7")]
    assert (p.ResponseTopic, p.CorrelationData) == ("will/reply", b"\x01\x02")
    assert not hasattr(p, "WillDelayInterval")


def delayed_will_client(port: int, delay: int, session_expiry: int) -> Raw:
    will = codec.Will("will/t", b"delayed", 1, properties={"will_delay_interval": delay})
    return raw_will_client(
        port,
        5,
        will,
        clean_start=False,
        properties={"session_expiry_interval": session_expiry},
    )


def test_delayed_will_is_not_published_if_the_client_reconnects_in_time(broker):
    # MQTT 5.0 §3.1.3.2.2: a new connection to the session before the delay: no will.
    watcher = Paho(broker.port, "watcher", 5)
    watcher.subscribe("will/#", 1)
    dying = delayed_will_client(broker.port, delay=2, session_expiry=30)
    dying.close()
    time.sleep(0.3)
    back = raw_connect(
        broker.port,
        "dying",
        5,
        clean_start=False,
        properties={"session_expiry_interval": 30},
    )
    assert back.connack.session_present
    watcher.expect_nothing(2.5)  # past the 2 s delay


def test_delayed_will_is_published_after_the_delay(broker):
    watcher = Paho(broker.port, "watcher", 5)
    watcher.subscribe("will/#", 1)
    dying = delayed_will_client(broker.port, delay=2, session_expiry=30)
    dying.close()
    watcher.expect_nothing(1.0)  # half the delay: not yet
    assert watcher.get(timeout=4).payload == b"delayed"


def test_delayed_will_is_published_when_the_session_ends_first(broker):
    # MQTT 5.0 §3.1.3.2.2: the will goes at the delay or at session end, whichever is first.
    watcher = Paho(broker.port, "watcher", 5)
    watcher.subscribe("will/#", 1)
    dying = delayed_will_client(broker.port, delay=30, session_expiry=1)
    dying.close()
    assert watcher.get(timeout=4).payload == b"delayed"


def test_will_is_published_when_the_session_is_taken_over(broker):
    # MQTT 5.0 §3.1.4: the existing client's will is published as in §3.1.2.5.
    watcher = Paho(broker.port, "watcher", 5)
    watcher.subscribe("will/#", 1)
    raw_connect(broker.port, "same", 5, will=codec.Will("will/t", b"taken over", 1))
    raw_connect(broker.port, "same", 5)
    assert watcher.get().payload == b"taken over"


def test_will_cannot_publish_to_sys_topics(broker):
    watcher = Paho(broker.port, "watcher", 5)
    watcher.subscribe("$SYS/forged/#", 1)
    raw = Raw(broker.port, 5)
    will = codec.Will("$SYS/forged/x", b"forged", 1, retain=True)
    connack = raw.connect("forger", protocol_version=5, will=will)
    raw.close()  # abnormal: the will is due, unless it was refused at CONNECT
    if connack.reason_code == 0:
        watcher.expect_nothing(1.0)
    late = Paho(broker.port, "late", 5)
    late.subscribe("$SYS/forged/#", 1)
    late.expect_nothing()
