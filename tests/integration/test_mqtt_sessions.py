"""Session state across connections: persistence, expiry, offline queues, takeover, resends.

MQTT 3.1.1 Clean Session and MQTT 5 Clean Start with Session Expiry Interval; QoS 1/2
messages queued while a client is away and the in-flight ones resent with DUP on its
return (§4.4); exactly-once receipt of QoS 2 (§4.3.3). Clients the broker will disconnect
are ``Raw`` clients: a paho client would reconnect by itself and take the session back.
"""

from __future__ import annotations

import time

import pytest

from robustmq._core import mqtt_codec as codec
from tests.integration.clients import Paho, Raw, props, raw_connect, receive_all

V311_V5 = pytest.mark.parametrize("version", [4, 5], ids=["3.1.1", "5.0"])


def persistent(port: int, client_id: str, version: int, expiry: int | None = 60) -> Paho:
    """A client that keeps its session: Clean Session 0 (3.1.1) or Clean Start 0 + expiry."""
    connect_props = None
    if version == 5 and expiry is not None:
        connect_props = props("CONNECT", SessionExpiryInterval=expiry)
    return Paho(port, client_id, version, clean=False, connect_props=connect_props)


def raw_persistent(port: int, client_id: str, version: int) -> Raw:
    kwargs = {"properties": {"session_expiry_interval": 60}} if version == 5 else {}
    return raw_connect(port, client_id, version, clean_start=False, **kwargs)


# ---------------------------------------------------------------------------- persistence


@V311_V5
def test_persistent_session_queues_qos1_and_qos2_in_order_while_offline(broker, version):
    sub = persistent(broker.port, "sub", version)
    sub.subscribe("s/#", 2)
    sub.disconnect()
    pub = Paho(broker.port, "pub", version)
    sent = [(b"1", 1), (b"2", 2), (b"3", 1), (b"4", 2), (b"5", 1)]
    for payload, qos in sent:
        pub.publish("s/t", payload, qos)
    # Raw: paho hands a QoS 2 message to the application only at PUBREL, which reorders.
    back = raw_persistent(broker.port, "sub", version)
    assert back.connack.session_present
    got = []
    while len(got) < len(sent):
        p = back.recv()
        if isinstance(p, codec.Pubrel):
            back.send_packet(codec.Pubcomp(p.packet_id))
            continue
        assert isinstance(p, codec.Publish), p
        got.append((p.payload, p.qos))
        back.send_packet((codec.Puback if p.qos == 1 else codec.Pubrec)(p.packet_id))
    assert got == sent


@V311_V5
def test_persistent_session_keeps_its_subscriptions(broker, version):
    sub = persistent(broker.port, "sub", version)
    sub.subscribe("s/t", 1)
    sub.disconnect()
    back = persistent(broker.port, "sub", version)
    assert back.session_present
    pub = Paho(broker.port, "pub", version)
    pub.publish("s/t", b"to the old subscription", 1)
    assert back.get().payload == b"to the old subscription"


def test_clean_session_discards_the_stored_session(broker):
    # MQTT 3.1.1 §3.1.2.4: Clean Session 1 discards the previous session and starts anew.
    sub = persistent(broker.port, "sub", 4)
    sub.subscribe("s/t", 1)
    sub.disconnect()
    pub = Paho(broker.port, "pub", 4)
    pub.publish("s/t", b"queued", 1)
    clean = Paho(broker.port, "sub", 4, clean=True)
    assert not clean.session_present
    clean.expect_nothing()
    clean.disconnect()
    again = persistent(broker.port, "sub", 4)
    assert not again.session_present  # the clean session ended with its connection
    pub.publish("s/t", b"no subscription now", 1)
    again.expect_nothing()


@V311_V5
def test_clean_connection_never_reports_a_session_present(broker, version):
    first = Paho(broker.port, "c", version, clean=True)
    assert not first.session_present
    first.disconnect()
    second = Paho(broker.port, "c", version, clean=True)
    assert not second.session_present


def test_clean_start_discards_a_stored_v5_session(broker):
    sub = persistent(broker.port, "sub", 5)
    sub.subscribe("s/t", 1)
    sub.disconnect()
    fresh = Paho(broker.port, "sub", 5, clean=True)
    assert not fresh.session_present
    pub = Paho(broker.port, "pub", 5)
    pub.publish("s/t", b"nobody", 1)
    fresh.expect_nothing()


# ---------------------------------------------------------------------------- expiry (MQTT 5)


def test_session_expiry_zero_ends_the_session_at_disconnect(broker):
    sub = persistent(broker.port, "sub", 5, expiry=None)  # absent means 0 (§3.1.2.11.2)
    sub.subscribe("s/t", 1)
    sub.disconnect()
    back = persistent(broker.port, "sub", 5, expiry=None)
    assert not back.session_present
    pub = Paho(broker.port, "pub", 5)
    pub.publish("s/t", b"nobody", 1)
    back.expect_nothing()


def test_session_ends_after_its_expiry_interval(broker):
    sub = persistent(broker.port, "sub", 5, expiry=1)
    sub.subscribe("s/t", 1)
    sub.disconnect()
    time.sleep(1.6)
    back = persistent(broker.port, "sub", 5, expiry=1)
    assert not back.session_present


def test_session_is_present_before_its_expiry_interval(broker):
    sub = persistent(broker.port, "sub", 5, expiry=2)
    sub.subscribe("s/t", 1)
    sub.disconnect()
    time.sleep(0.5)
    back = persistent(broker.port, "sub", 5, expiry=2)
    assert back.session_present


def test_disconnect_can_shorten_the_session_expiry_to_zero(broker):
    sub = persistent(broker.port, "sub", 5, expiry=60)
    sub.subscribe("s/t", 1)
    sub.disconnect(properties=props("DISCONNECT", SessionExpiryInterval=0))
    back = persistent(broker.port, "sub", 5, expiry=60)
    assert not back.session_present


def test_disconnect_can_lengthen_a_nonzero_session_expiry(broker):
    sub = persistent(broker.port, "sub", 5, expiry=1)
    sub.subscribe("s/t", 1)
    sub.disconnect(properties=props("DISCONNECT", SessionExpiryInterval=60))
    time.sleep(1.6)
    back = persistent(broker.port, "sub", 5, expiry=60)
    assert back.session_present


def test_session_expiry_set_at_disconnect_after_zero_is_a_protocol_error(broker):
    # MQTT 5.0 §3.14.2.2.2: expiry 0 at CONNECT, non-zero at DISCONNECT: Protocol Error.
    raw = raw_connect(broker.port, "c", 5)
    raw.send_packet(codec.Disconnect(0, {"session_expiry_interval": 60}))
    packets = raw.packets_until_closed()
    assert [(type(p), p.reason_code) for p in packets] == [(codec.Disconnect, 0x82)]


def test_session_expiry_is_capped_by_max_session_expiry_interval(broker_factory):
    broker = broker_factory(max_session_expiry_interval=1)
    raw = raw_connect(broker.port, "c", 5, properties={"session_expiry_interval": 3600})
    assert raw.connack.properties["session_expiry_interval"] == 1
    raw.send_packet(codec.Disconnect(0))
    raw.packets_until_closed()
    time.sleep(1.6)
    back = persistent(broker.port, "c", 5, expiry=3600)
    assert not back.session_present


# ---------------------------------------------------------------------------- offline queue


@pytest.mark.parametrize(
    ("policy", "kept"),
    [("drop_oldest", [b"3", b"4", b"5"]), ("drop_newest", [b"1", b"2", b"3"])],
)
def test_offline_queue_is_bounded_by_max_queued_messages(broker_factory, policy, kept):
    broker = broker_factory(max_queued_messages=3, queue_drop_policy=policy)
    sub = persistent(broker.port, "sub", 4)
    sub.subscribe("s/t", 1)
    sub.disconnect()
    pub = Paho(broker.port, "pub", 4)
    for n in range(1, 6):
        pub.publish("s/t", str(n).encode(), 1)
    back = persistent(broker.port, "sub", 4)
    assert [m.payload for m in receive_all(back)] == kept


# ---------------------------------------------------------------------------- takeover


def test_session_takeover_disconnects_the_first_connection_with_0x8e(broker):
    # MQTT 5.0 §3.1.4: DISCONNECT 0x8E (Session taken over), then close.
    first = raw_connect(broker.port, "same", 5)
    second = raw_connect(broker.port, "same", 5)
    packets = first.packets_until_closed()
    assert [(type(p), p.reason_code) for p in packets] == [(codec.Disconnect, 0x8E)]
    second.send_packet(codec.Pingreq())
    second.expect(codec.Pingresp)


def test_session_takeover_closes_the_first_3_1_1_connection(broker):
    # MQTT 3.1.1 §3.1.4: the server disconnects the existing client.
    first = raw_connect(broker.port, "same", 4)
    second = raw_connect(broker.port, "same", 4)
    assert first.packets_until_closed() == []
    second.send_packet(codec.Pingreq())
    second.expect(codec.Pingresp)


@V311_V5
def test_session_takeover_hands_the_session_to_the_new_connection(broker, version):
    first = raw_persistent(broker.port, "same", version)
    first.subscribe("s/t", qos=1)
    second = persistent(broker.port, "same", version)
    assert second.session_present
    pub = Paho(broker.port, "pub", version)
    pub.publish("s/t", b"to the new connection", 1)
    assert second.get().payload == b"to the new connection"


# ---------------------------------------------------------------------------- resends


@V311_V5
def test_unacknowledged_qos1_is_resent_with_dup_on_reconnect(broker, version):
    # §4.4: resend unacknowledged PUBLISH with the original packet id and DUP set.
    sub = raw_persistent(broker.port, "sub", version)
    sub.subscribe("s/t", qos=1)
    pub = Paho(broker.port, "pub", version)
    pub.publish("s/t", b"again", 1)
    first = sub.expect(codec.Publish)
    assert not first.dup
    sub.close()  # no PUBACK
    back = raw_persistent(broker.port, "sub", version)
    assert back.connack.session_present
    again = back.expect(codec.Publish)
    assert (again.payload, again.qos, again.dup) == (b"again", 1, True)
    assert again.packet_id == first.packet_id
    back.send_packet(codec.Puback(again.packet_id))
    back.quiet()


@V311_V5
def test_pubrel_is_resent_on_reconnect_after_pubrec(broker, version):
    # §4.4: after PUBREC the server resends PUBREL, never the PUBLISH.
    sub = raw_persistent(broker.port, "sub", version)
    sub.subscribe("s/t", qos=2)
    pub = Paho(broker.port, "pub", version)
    pub.publish("s/t", b"two", 2)
    p = sub.expect(codec.Publish)
    sub.send_packet(codec.Pubrec(p.packet_id))
    assert sub.expect(codec.Pubrel).packet_id == p.packet_id
    sub.close()  # no PUBCOMP
    back = raw_persistent(broker.port, "sub", version)
    assert back.expect(codec.Pubrel).packet_id == p.packet_id
    back.send_packet(codec.Pubcomp(p.packet_id))
    back.quiet()


@V311_V5
def test_qos2_duplicate_publish_before_pubrel_is_delivered_once(broker, version):
    # MQTT 5.0 §4.3.3 / 3.1.1 §4.3.3: the receiver must not forward the message twice.
    sub = Paho(broker.port, "sub", version)
    sub.subscribe("s/t", 2)
    raw = raw_connect(broker.port, "pub", version)
    raw.publish("s/t", b"exactly once", qos=2, packet_id=5)
    assert raw.expect(codec.Pubrec).packet_id == 5
    raw.publish("s/t", b"exactly once", qos=2, packet_id=5, dup=True)
    assert raw.expect(codec.Pubrec).packet_id == 5
    raw.send_packet(codec.Pubrel(5))
    assert raw.expect(codec.Pubcomp).packet_id == 5
    assert [m.payload for m in receive_all(sub)] == [b"exactly once"]


@V311_V5
def test_qos2_exactly_once_holds_across_a_publisher_reconnect(broker, version):
    sub = Paho(broker.port, "sub", version)
    sub.subscribe("s/t", 2)
    raw = raw_persistent(broker.port, "pub", version)
    raw.publish("s/t", b"exactly once", qos=2, packet_id=9)
    raw.expect(codec.Pubrec)
    raw.close()  # before PUBREL
    back = raw_persistent(broker.port, "pub", version)
    assert back.connack.session_present
    back.publish("s/t", b"exactly once", qos=2, packet_id=9, dup=True)
    assert back.expect(codec.Pubrec).packet_id == 9
    back.send_packet(codec.Pubrel(9))
    comp = back.expect(codec.Pubcomp)
    assert (comp.packet_id, comp.reason_code) == (9, 0)  # the id was still known
    assert [m.payload for m in receive_all(sub)] == [b"exactly once"]


def test_pubrel_for_an_unknown_packet_id_gets_pubcomp_0x92(broker):
    raw = raw_connect(broker.port, "pub", 5)
    raw.send_packet(codec.Pubrel(321))
    comp = raw.expect(codec.Pubcomp)
    assert (comp.packet_id, comp.reason_code) == (321, 0x92)


def test_pubrel_for_an_unknown_packet_id_gets_pubcomp_in_3_1_1(broker):
    raw = raw_connect(broker.port, "pub", 4)
    raw.send_packet(codec.Pubrel(321))
    assert raw.expect(codec.Pubcomp).packet_id == 321


@V311_V5
def test_takeover_resends_the_unacknowledged_messages_to_the_new_connection(broker, version):
    first = raw_persistent(broker.port, "same", version)
    first.subscribe("s/t", qos=1)
    pub = Paho(broker.port, "pub", version)
    pub.publish("s/t", b"in flight", 1)
    original = first.expect(codec.Publish)  # not acknowledged
    second = raw_persistent(broker.port, "same", version)
    assert second.connack.session_present
    again = second.expect(codec.Publish)
    assert (again.payload, again.dup, again.packet_id) == (b"in flight", True, original.packet_id)


@V311_V5
def test_clean_start_discards_inbound_qos2_state(broker, version):
    # A packet id awaiting PUBREL in a discarded session means nothing in the new one.
    sub = Paho(broker.port, "sub", version)
    sub.subscribe("s/t", 2)
    raw = raw_persistent(broker.port, "pub", version)
    raw.publish("s/t", b"old", qos=2, packet_id=9)
    raw.expect(codec.Pubrec)
    raw.close()
    fresh = raw_connect(broker.port, "pub", version, clean_start=True)
    fresh.publish("s/t", b"new", qos=2, packet_id=9)
    fresh.expect(codec.Pubrec)
    fresh.send_packet(codec.Pubrel(9))
    assert fresh.expect(codec.Pubcomp).reason_code == 0
    assert [m.payload for m in receive_all(sub)] == [b"old", b"new"]


def test_pubrec_for_an_unknown_packet_id_gets_pubrel_0x92(broker):
    raw = raw_connect(broker.port, "sub", 5)
    raw.send_packet(codec.Pubrec(55))
    rel = raw.expect(codec.Pubrel)
    assert (rel.packet_id, rel.reason_code) == (55, 0x92)


def test_puback_for_an_unknown_packet_id_is_ignored(broker):
    raw = raw_connect(broker.port, "sub", 5)
    raw.send_packet(codec.Puback(77))
    raw.quiet()
    raw.send_packet(codec.Pingreq())
    raw.expect(codec.Pingresp)
