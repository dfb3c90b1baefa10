"""MQTT 5.0 features over real sockets: subscription options, identifiers, shared
subscriptions, properties, message expiry, topic aliases, flow control and CONNACK.

paho-mqtt (MQTTv5) for the ordinary flows; ``Raw`` where the test needs a property or
reason code on the wire, or a client that withholds its acknowledgements. Section numbers
are those of the MQTT 5.0 OASIS Standard.
"""

from __future__ import annotations

import queue
import time

import pytest

from robustmq._core import mqtt_codec as codec
from tests.integration.clients import Paho, Raw, code, props, raw_connect, receive_all

V311_V5 = pytest.mark.parametrize("version", [4, 5], ids=["3.1.1", "5.0"])


def sub_props(identifier: int):
    return props("SUBSCRIBE", SubscriptionIdentifier=identifier)


# ---------------------------------------------------------------------------- subscription options


def test_no_local_suppresses_only_the_clients_own_messages(broker):
    # §3.8.3.1 No Local.
    me = Paho(broker.port, "me", 5)
    me.subscribe("nl/t", 1, no_local=True)
    me.publish("nl/t", b"own", 1)
    other = Paho(broker.port, "other", 5)
    other.publish("nl/t", b"from other", 1)
    assert [m.payload for m in receive_all(me)] == [b"from other"]


def test_without_no_local_a_client_receives_its_own_messages(broker):
    me = Paho(broker.port, "me", 5)
    me.subscribe("nl/t", 1)
    me.publish("nl/t", b"own", 1)
    assert me.get().payload == b"own"


def test_no_local_applies_per_subscription(broker):
    # An overlapping subscription without No Local still delivers the client's own message.
    me = Paho(broker.port, "me", 5)
    me.subscribe("nl/t", 1, no_local=True)
    me.subscribe("nl/#", 1)
    me.publish("nl/t", b"own", 1)
    assert [m.payload for m in receive_all(me)] == [b"own"]


@pytest.mark.parametrize("rap", [False, True], ids=["rap0", "rap1"])
def test_retain_as_published_controls_the_retain_flag_of_live_messages(broker, rap):
    # §3.8.3.1 Retain As Published; §3.3.1.3.
    sub = Paho(broker.port, "sub", 5)
    sub.subscribe("r/t", 1, retain_as_published=rap)
    pub = Paho(broker.port, "pub", 5)
    pub.publish("r/t", b"live", 1, retain=True)
    pub.publish("r/t", b"not retained", 1, retain=False)
    got = receive_all(sub)
    assert [(m.payload, m.retain) for m in got] == [(b"live", rap), (b"not retained", False)]


def test_retain_handling_0_sends_retained_on_every_subscribe(broker):
    pub = Paho(broker.port, "pub", 5)
    pub.publish("r/t", b"kept", 1, retain=True)
    sub = Paho(broker.port, "sub", 5)
    sub.subscribe("r/t", 1, retain_handling=0)
    assert sub.get().retain
    sub.subscribe("r/t", 1, retain_handling=0)  # the same subscription again
    msg = sub.get()
    assert (msg.payload, msg.retain) == (b"kept", True)


def test_retain_handling_1_sends_retained_only_for_a_new_subscription(broker):
    pub = Paho(broker.port, "pub", 5)
    pub.publish("r/t", b"kept", 1, retain=True)
    sub = Paho(broker.port, "sub", 5)
    sub.subscribe("r/t", 1, retain_handling=1)
    assert sub.get().payload == b"kept"
    sub.subscribe("r/t", 1, retain_handling=1)  # exists already: nothing
    sub.expect_nothing()


def test_retain_handling_2_never_sends_retained(broker):
    pub = Paho(broker.port, "pub", 5)
    pub.publish("r/t", b"kept", 1, retain=True)
    sub = Paho(broker.port, "sub", 5)
    sub.subscribe("r/t", 1, retain_handling=2)
    sub.expect_nothing()
    pub.publish("r/t", b"live", 1)
    assert sub.get().payload == b"live"  # the subscription itself works


def test_unsuback_reports_no_subscription_existed(broker):
    raw = raw_connect(broker.port, "c", 5)
    raw.subscribe("u/a", qos=1)
    raw.send_packet(codec.Unsubscribe(2, ["u/a", "u/never"]))
    unsuback = raw.expect(codec.Unsuback)
    assert (unsuback.packet_id, unsuback.reason_codes) == (2, [0x00, 0x11])


# ---------------------------------------------------------------------------- subscription ids


def test_subscription_identifier_is_sent_with_matching_messages(broker):
    # §3.3.2.3.8, §3.8.2.1.2.
    sub = Paho(broker.port, "sub", 5)
    sub.subscribe("si/+", 1, properties=sub_props(7))
    pub = Paho(broker.port, "pub", 5)
    pub.publish("si/a", b"x", 1)
    assert sub.get().properties.SubscriptionIdentifier == [7]


def test_overlapping_subscriptions_send_every_subscription_identifier(broker):
    # §3.3.4: one message carrying the identifiers of all matching subscriptions.
    sub = Paho(broker.port, "sub", 5)
    sub.subscribe("si/+", 1, properties=sub_props(7))
    sub.subscribe("si/#", 2, properties=sub_props(3))
    pub = Paho(broker.port, "pub", 5)
    pub.publish("si/a", b"x", 2)
    got = receive_all(sub)
    assert len(got) == 1
    assert (got[0].qos, sorted(got[0].properties.SubscriptionIdentifier)) == (2, [3, 7])


def test_subscription_without_identifier_sends_none(broker):
    sub = Paho(broker.port, "sub", 5)
    sub.subscribe("si/a", 1)
    pub = Paho(broker.port, "pub", 5)
    pub.publish("si/a", b"x", 1)
    assert not hasattr(sub.get().properties, "SubscriptionIdentifier")


def test_resubscribing_replaces_the_subscription_identifier(broker):
    sub = Paho(broker.port, "sub", 5)
    sub.subscribe("si/a", 1, properties=sub_props(1))
    sub.subscribe("si/a", 1, properties=sub_props(2))
    pub = Paho(broker.port, "pub", 5)
    pub.publish("si/a", b"x", 1)
    assert sub.get().properties.SubscriptionIdentifier == [2]


def test_retained_message_carries_the_subscription_identifier(broker):
    pub = Paho(broker.port, "pub", 5)
    pub.publish("si/a", b"kept", 1, retain=True)
    sub = Paho(broker.port, "sub", 5)
    sub.subscribe("si/#", 1, properties=sub_props(42))
    msg = sub.get()
    assert (msg.retain, msg.properties.SubscriptionIdentifier) == (True, [42])


def test_largest_subscription_identifier_round_trips(broker):
    raw = raw_connect(broker.port, "sub", 5)
    raw.subscribe("si/a", qos=0, properties={"subscription_identifier": [268_435_455]})
    pub = Paho(broker.port, "pub", 5)
    pub.publish("si/a", b"x", 0)
    assert raw.expect(codec.Publish).properties["subscription_identifier"] == [268_435_455]


# ---------------------------------------------------------------------------- shared subscriptions


def shared_members(port: int, version: int, n: int = 3, group_filter: str = "$share/g/sh/#"):
    members = [Paho(port, f"member{i}", version) for i in range(n)]
    for m in members:
        assert [code(c) for c in m.subscribe(group_filter, 1)] == [1]
    return members


def spread(members: list[Paho], total: int) -> list[list[bytes]]:
    """Payloads each member received: waits for ``total`` in all, then briefly for extras."""
    got: list[list[bytes]] = [[] for _ in members]
    deadline = time.monotonic() + 5
    while sum(map(len, got)) < total and time.monotonic() < deadline:
        for mine, member in zip(got, members, strict=True):
            try:
                mine.append(member.messages.get(timeout=0.01).payload)
            except queue.Empty:
                pass
    time.sleep(0.2)
    for mine, member in zip(got, members, strict=True):
        while not member.messages.empty():
            mine.append(member.messages.get().payload)  # a duplicate would show here
    return got


def publish_numbered(port: int, count: int, version: int = 5, topic: str = "sh/t") -> set:
    pub = Paho(port, "pub", version)
    for n in range(count):
        pub.publish(topic, str(n).encode(), 1)
    pub.disconnect()
    return {str(n).encode() for n in range(count)}


@V311_V5
def test_shared_subscription_delivers_each_message_to_exactly_one_member(broker, version):
    # §4.8.2; round_robin (the default) spreads the messages evenly.
    members = shared_members(broker.port, version)
    sent = publish_numbered(broker.port, 9, version)
    per_member = spread(members, 9)
    everything = [p for got in per_member for p in got]
    assert sorted(everything) == sorted(sent)  # each exactly once
    assert [len(got) for got in per_member] == [3, 3, 3]


@V311_V5
def test_shared_subscription_skips_a_member_that_left(broker, version):
    members = shared_members(broker.port, version)
    members[2].disconnect()
    sent = publish_numbered(broker.port, 6, version)
    per_member = spread(members[:2], 6)
    assert sorted(per_member[0] + per_member[1]) == sorted(sent)
    assert all(per_member)


def test_unsubscribing_from_a_shared_group_leaves_it(broker):
    members = shared_members(broker.port, 5, n=2)
    members[1].unsubscribe("$share/g/sh/#")
    sent = publish_numbered(broker.port, 4)
    got = spread(members, 4)
    assert sorted(got[0]) == sorted(sent) and got[1] == []


def test_shared_subscription_prefers_online_members_over_an_offline_session(broker):
    online = shared_members(broker.port, 5, n=2)
    away = Paho(
        broker.port,
        "away",
        5,
        clean=False,
        connect_props=props("CONNECT", SessionExpiryInterval=60),
    )
    away.subscribe("$share/g/sh/#", 1)
    away.disconnect()
    sent = publish_numbered(broker.port, 6)
    got = [payload for mine in spread(online, 6) for payload in mine]
    assert sorted(got) == sorted(sent)


def test_each_shared_group_and_each_plain_subscriber_gets_every_message(broker):
    group_a = shared_members(broker.port, 5, n=2, group_filter="$share/a/sh/#")
    group_b = [Paho(broker.port, "b0", 5)]
    group_b[0].subscribe("$share/b/sh/t", 1)
    plain = Paho(broker.port, "plain", 5)
    plain.subscribe("sh/#", 1)
    sent = publish_numbered(broker.port, 4)
    everyone = spread([*group_a, *group_b, plain], 3 * len(sent))
    assert sorted(everyone[0] + everyone[1]) == sorted(sent)
    assert sorted(everyone[2]) == sorted(sent)
    assert sorted(everyone[3]) == sorted(sent)


def test_shared_subscription_gets_no_retained_messages(broker):
    # §3.8.4: retained messages are not sent for a Shared Subscription.
    pub = Paho(broker.port, "pub", 5)
    pub.publish("sh/t", b"kept", 1, retain=True)
    member = Paho(broker.port, "member", 5)
    member.subscribe("$share/g/sh/t", 1)
    member.expect_nothing()


# ---------------------------------------------------------------------------- properties


def test_publish_properties_are_forwarded_unchanged(broker):
    # §3.3.2.3: the server forwards these properties unaltered.
    sub = Paho(broker.port, "sub", 5)
    sub.subscribe("p/t", 1)
    pub = Paho(broker.port, "pub", 5)
    sent = props(
        "PUBLISH",
        PayloadFormatIndicator=1,
        ContentType="application/json",
        ResponseTopic="p/reply",
        CorrelationData=b"\x00corr\xff",
        UserProperty=[("a", "1"), ("b", "2"), ("a", "3")],
    )
    pub.publish("p/t", b'{"k": 1}', 1, properties=sent)
    got = sub.get().properties
    assert got.PayloadFormatIndicator == 1
    assert got.ContentType == "application/json"
    assert got.ResponseTopic == "p/reply"
    assert got.CorrelationData == b"\x00corr\xff"
    assert got.UserProperty == [("a", "1"), ("b", "2"), ("a", "3")]


def test_v5_properties_do_not_reach_a_3_1_1_subscriber_but_the_message_does(broker):
    sub = Paho(broker.port, "sub", 4)
    sub.subscribe("p/t", 1)
    pub = Paho(broker.port, "pub", 5)
    pub.publish("p/t", b"body", 1, properties=props("PUBLISH", UserProperty=[("a", "1")]))
    msg = sub.get()
    assert (msg.topic, msg.payload, msg.qos) == ("p/t", b"body", 1)


# ---------------------------------------------------------------------------- message expiry


def test_message_expiry_interval_is_forwarded(broker):
    # §3.3.2.3.3: forwarded with the interval that remains.
    sub = Paho(broker.port, "sub", 5)
    sub.subscribe("e/t", 1)
    pub = Paho(broker.port, "pub", 5)
    pub.publish("e/t", b"x", 1, properties=props("PUBLISH", MessageExpiryInterval=60))
    assert 0 < sub.get().properties.MessageExpiryInterval <= 60


def persistent_v5(port: int, client_id: str = "sub") -> Paho:
    return Paho(
        port, client_id, 5, clean=False, connect_props=props("CONNECT", SessionExpiryInterval=60)
    )


def test_queued_message_is_forwarded_with_a_decreased_expiry_interval(broker):
    sub = persistent_v5(broker.port)
    sub.subscribe("e/t", 1)
    sub.disconnect()
    pub = Paho(broker.port, "pub", 5)
    pub.publish("e/t", b"x", 1, properties=props("PUBLISH", MessageExpiryInterval=30))
    time.sleep(1.2)
    back = persistent_v5(broker.port)
    assert back.get().properties.MessageExpiryInterval <= 29


def test_expired_queued_message_is_not_delivered(broker):
    sub = persistent_v5(broker.port)
    sub.subscribe("e/t", 1)
    sub.disconnect()
    pub = Paho(broker.port, "pub", 5)
    pub.publish("e/t", b"short-lived", 1, properties=props("PUBLISH", MessageExpiryInterval=1))
    pub.publish("e/t", b"lasting", 1)
    time.sleep(1.6)
    back = persistent_v5(broker.port)
    assert [m.payload for m in receive_all(back)] == [b"lasting"]


def test_retained_message_expires(broker):
    pub = Paho(broker.port, "pub", 5)
    expiring = props("PUBLISH", MessageExpiryInterval=1)
    pub.publish("e/t", b"short-lived", 1, retain=True, properties=expiring)
    early = Paho(broker.port, "early", 5)
    early.subscribe("e/t", 1)
    assert early.get().payload == b"short-lived"
    time.sleep(1.6)
    late = Paho(broker.port, "late", 5)
    late.subscribe("e/t", 1)
    late.expect_nothing()


def test_message_without_expiry_carries_no_expiry_interval(broker):
    sub = Paho(broker.port, "sub", 5)
    sub.subscribe("e/t", 1)
    pub = Paho(broker.port, "pub", 5)
    pub.publish("e/t", b"x", 1)
    assert not hasattr(sub.get().properties, "MessageExpiryInterval")


# ---------------------------------------------------------------------------- topic aliases


def test_inbound_topic_alias_is_resolved_to_the_full_topic(broker):
    # §3.3.2.3.4: a PUBLISH with an empty topic and a known alias means that topic.
    sub = Paho(broker.port, "sub", 5)
    sub.subscribe("ta/#", 1)
    raw = raw_connect(broker.port, "pub", 5)
    raw.publish("ta/long/topic", b"1", qos=1, packet_id=1, properties={"topic_alias": 3})
    raw.expect(codec.Puback)
    raw.publish("", b"2", qos=1, packet_id=2, properties={"topic_alias": 3})
    raw.expect(codec.Puback)
    got = receive_all(sub)
    assert [(m.topic, m.payload) for m in got] == [("ta/long/topic", b"1"), ("ta/long/topic", b"2")]
    assert not any(hasattr(m.properties, "TopicAlias") for m in got)


def test_inbound_topic_alias_can_be_remapped(broker):
    sub = Paho(broker.port, "sub", 5)
    sub.subscribe("ta/#", 0)
    raw = raw_connect(broker.port, "pub", 5)
    raw.publish("ta/first", b"1", properties={"topic_alias": 1})
    raw.publish("ta/second", b"2", properties={"topic_alias": 1})
    raw.publish("", b"3", properties={"topic_alias": 1})
    got = [(m.topic, m.payload) for m in receive_all(sub)]
    assert got == [("ta/first", b"1"), ("ta/second", b"2"), ("ta/second", b"3")]


def test_unknown_topic_alias_is_a_protocol_error(broker):
    raw = raw_connect(broker.port, "pub", 5)
    raw.publish("", b"x", properties={"topic_alias": 2})
    packets = raw.packets_until_closed()
    assert [(type(p), p.reason_code) for p in packets] == [(codec.Disconnect, 0x82)]


def test_topic_aliases_do_not_outlive_the_connection(broker):
    # §3.3.2.3.4: alias mappings exist only within one network connection.
    raw = raw_connect(broker.port, "pub", 5)
    raw.publish("ta/t", b"1", properties={"topic_alias": 1})
    raw.send_packet(codec.Disconnect(0))
    raw.packets_until_closed()
    again = raw_connect(broker.port, "pub", 5)
    again.publish("", b"2", properties={"topic_alias": 1})
    packets = again.packets_until_closed()
    assert [(type(p), p.reason_code) for p in packets] == [(codec.Disconnect, 0x82)]


@pytest.mark.parametrize(("maximum", "alias"), [(5, 6), (0, 1)])
def test_topic_alias_above_the_maximum_is_rejected_with_0x94(broker_factory, maximum, alias):
    broker = broker_factory(topic_alias_maximum=maximum)
    raw = raw_connect(broker.port, "pub", 5)
    raw.publish("ta/t", b"x", properties={"topic_alias": alias})
    packets = raw.packets_until_closed()
    assert [(type(p), p.reason_code) for p in packets] == [(codec.Disconnect, 0x94)]


def test_topic_alias_zero_is_rejected_with_0x94(broker):
    raw = raw_connect(broker.port, "pub", 5)
    raw.publish("ta/t", b"x", properties={"topic_alias": 0})
    packets = raw.packets_until_closed()
    assert [(type(p), p.reason_code) for p in packets] == [(codec.Disconnect, 0x94)]


# ---------------------------------------------------------------------------- flow control


def test_receive_maximum_limits_qos1_messages_in_flight_to_the_client(broker):
    # §3.1.2.11.3, §4.9: no more than Receive Maximum unacknowledged PUBLISH packets.
    raw = raw_connect(broker.port, "sub", 5, properties={"receive_maximum": 2})
    raw.subscribe("f/t", qos=1)
    pub = Paho(broker.port, "pub", 5)
    for n in range(4):
        pub.publish("f/t", str(n).encode(), 1)
    first, second = raw.expect(codec.Publish), raw.expect(codec.Publish)
    assert (first.payload, second.payload) == (b"0", b"1")
    raw.quiet()
    raw.send_packet(codec.Puback(first.packet_id))
    third = raw.expect(codec.Publish)
    assert third.payload == b"2"
    raw.quiet(0.3)
    raw.send_packet(codec.Puback(second.packet_id))
    assert raw.expect(codec.Publish).payload == b"3"


def test_receive_maximum_counts_qos2_until_pubcomp(broker):
    # §4.9: the quota comes back at PUBCOMP, not at PUBREC.
    raw = raw_connect(broker.port, "sub", 5, properties={"receive_maximum": 1})
    raw.subscribe("f/t", qos=2)
    pub = Paho(broker.port, "pub", 5)
    pub.publish("f/t", b"a", 2)
    pub.publish("f/t", b"b", 2)
    first = raw.expect(codec.Publish)
    raw.send_packet(codec.Pubrec(first.packet_id))
    assert raw.expect(codec.Pubrel).packet_id == first.packet_id
    raw.quiet()
    raw.send_packet(codec.Pubcomp(first.packet_id))
    assert raw.expect(codec.Publish).payload == b"b"


def test_message_expiring_while_held_back_by_receive_maximum_is_not_delivered(broker):
    raw = raw_connect(broker.port, "sub", 5, properties={"receive_maximum": 1})
    raw.subscribe("f/t", qos=1)
    pub = Paho(broker.port, "pub", 5)
    pub.publish("f/t", b"in flight", 1)
    pub.publish("f/t", b"short-lived", 1, properties=props("PUBLISH", MessageExpiryInterval=1))
    pub.publish("f/t", b"lasting", 1)
    first = raw.expect(codec.Publish)
    time.sleep(1.5)
    raw.send_packet(codec.Puback(first.packet_id))
    assert raw.expect(codec.Publish).payload == b"lasting"


def test_resent_messages_respect_the_receive_maximum_of_the_new_connection(broker):
    kwargs = {"clean_start": False, "properties": {"session_expiry_interval": 60}}
    raw = raw_connect(broker.port, "sub", 5, **kwargs)
    raw.subscribe("f/t", qos=1)
    pub = Paho(broker.port, "pub", 5)
    for n in range(3):
        pub.publish("f/t", str(n).encode(), 1)
    for _ in range(3):
        raw.expect(codec.Publish)
    raw.close()  # three unacknowledged
    kwargs["properties"] = {"session_expiry_interval": 60, "receive_maximum": 1}
    back = raw_connect(broker.port, "sub", 5, **kwargs)
    first = back.expect(codec.Publish)
    assert first.dup
    back.quiet()  # only one may be in flight


@pytest.mark.parametrize("qos", [0, 1])
def test_messages_larger_than_the_clients_maximum_packet_size_are_not_sent(broker, qos):
    # §3.1.2.25: the server must not send a packet above the client's Maximum Packet Size.
    raw = raw_connect(broker.port, "sub", 5, properties={"maximum_packet_size": 64})
    raw.subscribe("m/t", qos=qos)
    pub = Paho(broker.port, "pub", 5)
    pub.publish("m/t", b"x" * 100, qos)
    pub.publish("m/t", b"small", qos)
    p = raw.expect(codec.Publish)
    assert p.payload == b"small"
    if qos:
        raw.send_packet(codec.Puback(p.packet_id))
    raw.quiet()


# ---------------------------------------------------------------------------- CONNACK


def test_connack_carries_the_configured_limits(broker_factory):
    broker = broker_factory(receive_maximum=10, topic_alias_maximum=7, max_packet_size=2048)
    raw = raw_connect(broker.port, "c", 5)
    p = raw.connack.properties
    assert (p["receive_maximum"], p["topic_alias_maximum"], p["maximum_packet_size"]) == (
        10,
        7,
        2048,
    )
    assert "assigned_client_identifier" not in p


def test_paho_sees_the_connack_properties(broker):
    client = Paho(broker.port, "c", 5)
    p = client.connack_props
    assert p.ReceiveMaximum > 0 and p.TopicAliasMaximum > 0 and p.MaximumPacketSize > 0


def test_empty_client_id_gets_an_assigned_client_identifier(broker):
    # §3.1.3.1, §3.2.2.3.7.
    first = raw_connect(broker.port, "", 5)
    second = raw_connect(broker.port, "", 5)
    a = first.connack.properties["assigned_client_identifier"]
    b = second.connack.properties["assigned_client_identifier"]
    assert a and b and a != b
    for raw in (first, second):  # both stay connected: no takeover between them
        raw.send_packet(codec.Pingreq())
        raw.expect(codec.Pingresp)


@pytest.mark.parametrize(("asked", "granted"), [(100, 5), (0, 5), (3, None)])
def test_server_keep_alive_caps_the_clients_keep_alive(broker_factory, asked, granted):
    # §3.2.2.3.14: Server Keep Alive in CONNACK overrides the client's value.
    broker = broker_factory(max_keep_alive=5)
    raw = raw_connect(broker.port, "c", 5, keep_alive=asked)
    assert (raw.connack.properties or {}).get("server_keep_alive") == granted


def test_server_keep_alive_is_enforced(broker_factory):
    broker = broker_factory(max_keep_alive=1)
    raw = raw_connect(broker.port, "c", 5, keep_alive=100)
    assert raw.connack.properties["server_keep_alive"] == 1
    packets = raw.packets_until_closed(timeout=5)
    assert [(type(p), p.reason_code) for p in packets] == [(codec.Disconnect, 0x8D)]


def test_connect_with_an_authentication_method_is_refused_with_0x8c(broker):
    raw = Raw(broker.port, 5)
    raw.send_packet(
        codec.Connect("c", protocol_version=5, properties={"authentication_method": "SCRAM-SHA-1"})
    )
    packets = raw.packets_until_closed()
    assert [(type(p), p.reason_code) for p in packets] == [(codec.Connack, 0x8C)]


# ---------------------------------------------------------------------------- PUBACK reason codes


@pytest.mark.parametrize(("qos", "ack"), [(1, codec.Puback), (2, codec.Pubrec)])
def test_publish_to_sys_topic_is_refused_with_0x87(broker, qos, ack):
    watcher = Paho(broker.port, "watcher", 5)
    watcher.subscribe("$SYS/test/#", 1)
    raw = raw_connect(broker.port, "pub", 5)
    raw.publish("$SYS/test/forged", b"x", qos=qos, packet_id=3)
    reply = raw.expect(ack)
    assert (reply.packet_id, reply.reason_code) == (3, 0x87)
    watcher.expect_nothing()


@pytest.mark.parametrize(("qos", "ack"), [(1, codec.Puback), (2, codec.Pubrec)])
def test_publish_without_subscribers_is_acknowledged_with_0x10(broker, qos, ack):
    raw = raw_connect(broker.port, "pub", 5)
    raw.publish("nobody/listens", b"x", qos=qos, packet_id=8)
    reply = raw.expect(ack)
    assert (reply.packet_id, reply.reason_code) == (8, 0x10)


def test_publish_with_a_subscriber_is_acknowledged_with_0x00(broker):
    sub = Paho(broker.port, "sub", 5)
    sub.subscribe("someone/listens", 0)
    raw = raw_connect(broker.port, "pub", 5)
    raw.publish("someone/listens", b"x", qos=1, packet_id=8)
    assert raw.expect(codec.Puback).reason_code == 0x00


# ---------------------------------------------------------------------------- retain unavailable


def test_connack_declares_retain_unavailable_and_a_retained_publish_gets_0x9a(broker_factory):
    # §3.2.2.3.5 [MQTT-3.2.2-14]: RETAIN=1 after Retain Available 0: DISCONNECT 0x9A.
    broker = broker_factory(retain_available=False)
    raw = raw_connect(broker.port, "c", 5)
    assert raw.connack.properties["retain_available"] == 0
    raw.publish("r/t", b"x", retain=True)
    packets = raw.packets_until_closed()
    assert [(type(p), p.reason_code) for p in packets] == [(codec.Disconnect, 0x9A)]


def test_will_retain_is_refused_when_retain_is_unavailable(broker_factory):
    broker = broker_factory(retain_available=False)
    raw = Raw(broker.port, 5)
    raw.send_packet(codec.Connect("c", protocol_version=5, will=codec.Will("w/t", b"x", 0, True)))
    packets = raw.packets_until_closed()
    assert [(type(p), p.reason_code) for p in packets] == [(codec.Connack, 0x9A)]


# ---------------------------------------------------------------------------- packet size limits


def bytes_until_closed(raw: Raw, timeout: float = 5.0) -> bytes:
    """Every byte the broker sends until it closes the socket."""
    data = raw.buffer
    raw.sock.settimeout(timeout)
    while True:
        chunk = raw.sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_server_disconnect_fits_the_clients_maximum_packet_size(broker):
    raw = raw_connect(broker.port, "small", 5, properties={"maximum_packet_size": 16})
    raw.publish("a/+", b"x")  # Topic Name invalid: the broker disconnects
    data = bytes_until_closed(raw)
    packets, _ = codec.Decoder(5).decode(data)
    assert [(type(p), p.reason_code) for p in packets] == [(codec.Disconnect, 0x90)]
    assert len(data) <= 16
