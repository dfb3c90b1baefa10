"""The batched lanes: plain QoS 0 PUBLISHes that arrive in one read are routed once per
topic and forwarded in their wire form; plain QoS 1 ones are routed once and re-stamped
with each subscriber's packet identifiers; plain acknowledgements are handled as a run.
Each test sends a burst in one write (so the broker decodes it as runs) and checks that
subscribers see exactly what the per-message path would give them: every message once,
in order, shaped for their protocol version, with subscription identifiers, No Local,
shared groups, Maximum Packet Size, Receive Maximum, topic rewrite and retained messages
in the middle of a burst honoured, and every PUBACK in order.
"""

from __future__ import annotations

from typing import Any

import pytest

from robustmq._core import mqtt_codec
from robustmq._core.mqtt_spec import PUBREC
from tests.integration.clients import Paho, raw_connect, receive_all


def _burst(version: int, messages: list[tuple[str, bytes]], **kw: Any) -> bytes:
    return b"".join(
        mqtt_codec.encode_publish(t, p, protocol_version=version, **kw) for t, p in messages
    )


def _received(client: Paho) -> list[tuple[str, bytes]]:
    return [(m.topic, m.payload) for m in receive_all(client)]


def _raw_received(raw: Any, count: int) -> list[Any]:
    return [raw.expect(mqtt_codec.Publish) for _ in range(count)]


def test_burst_between_protocol_versions_arrives_whole_and_in_order(broker):
    subscribers = {v: Paho(broker.port, f"sub{v}", v) for v in (3, 4, 5)}
    for sub in subscribers.values():
        sub.subscribe("burst/#", 0)
    messages = [(f"burst/{i % 3}", f"m{i}".encode() * (i % 70)) for i in range(600)]
    for version in (4, 5):
        publisher = raw_connect(broker.port, f"pub{version}", version)
        publisher.send(_burst(version, messages))
        for v, sub in subscribers.items():
            assert _received(sub) == messages, f"{version} -> {v}"
        publisher.close()


def test_overlapping_subscriptions_deliver_each_message_once(broker):
    sub = Paho(broker.port, "overlap", 5)
    sub.subscribe("o/#", 0)
    sub.subscribe("o/+", 0)
    sub.subscribe("o/x", 1)
    messages = [("o/x", str(i).encode()) for i in range(200)]
    publisher = raw_connect(broker.port, "pub", 4)
    publisher.send(_burst(4, messages))
    assert _received(sub) == messages


def test_no_local_skips_the_sender_unless_another_subscription_covers_it(broker):
    both = raw_connect(broker.port, "both", 5)
    both.subscribe("nl/a", no_local=True)
    only = raw_connect(broker.port, "only", 5)
    only.subscribe("nl/#", no_local=True)
    both.subscribe("nl/#", packet_id=2)  # overlapping, without No Local
    messages = [("nl/a", bytes([i])) for i in range(50)]
    both.send(_burst(5, messages))
    only.send(_burst(5, messages))
    got_both = _raw_received(both, 100)
    assert [p.payload for p in got_both] == [m for _, m in messages] * 2
    got_only = _raw_received(only, 50)  # from "both" only: its own come back never
    assert [p.payload for p in got_only] == [m for _, m in messages]
    only.quiet()


def test_subscription_identifiers_are_added_to_each_forwarded_message(broker):
    sub = raw_connect(broker.port, "ids", 5)
    sub.subscribe("sid/#", properties={"subscription_identifier": [7]})
    publisher = raw_connect(broker.port, "pub", 4)
    messages = [("sid/1", b"%d" % i) for i in range(100)]
    publisher.send(_burst(4, messages))
    got = _raw_received(sub, 100)
    assert [(p.topic, p.payload) for p in got] == messages
    assert {tuple(p.properties["subscription_identifier"]) for p in got} == {(7,)}


def test_shared_group_members_split_a_burst_and_plain_subscribers_get_all(broker):
    members = [Paho(broker.port, f"member{i}", 5) for i in range(2)]
    for member in members:
        member.subscribe("$share/g/sh/#", 0)
    plain = Paho(broker.port, "plain", 4)
    plain.subscribe("sh/#", 0)
    messages = [("sh/t", b"%d" % i) for i in range(300)]
    raw_connect(broker.port, "pub", 4).send(_burst(4, messages))
    assert _received(plain) == messages
    shares = [_received(m) for m in members]
    assert all(shares), "round robin gives both members a share"
    assert sorted(shares[0] + shares[1], key=lambda m: int(m[1])) == messages


def test_messages_over_a_subscribers_maximum_packet_size_are_dropped_alone(broker):
    sub = raw_connect(broker.port, "small", 5, properties={"maximum_packet_size": 64})
    sub.subscribe("mps/#")
    messages = [("mps/t", b"s" * (5 if i % 2 else 100)) for i in range(40)]
    raw_connect(broker.port, "pub", 4).send(_burst(4, messages))
    got = _raw_received(sub, 20)
    assert [p.payload for p in got] == [b"s" * 5] * 20
    sub.quiet()


def test_a_retained_message_inside_a_burst_keeps_its_place(broker):
    sub = Paho(broker.port, "order", 4)
    sub.subscribe("ret/#", 0)
    before = [("ret/a", b"%d" % i) for i in range(20)]
    after = [("ret/a", b"%d" % i) for i in range(20, 40)]
    wire = (
        _burst(4, before)
        + mqtt_codec.encode_publish("ret/a", b"kept", retain=True, protocol_version=4)
        + _burst(4, after)
    )
    raw_connect(broker.port, "pub", 4).send(wire)
    assert _received(sub) == [*before, ("ret/a", b"kept"), *after]
    late = Paho(broker.port, "late", 4)
    late.subscribe("ret/#", 0)
    assert _received(late) == [("ret/a", b"kept")]


def test_topic_rewrite_applies_to_bursts(broker_factory):
    broker = broker_factory(
        rewrite=[
            {
                "action": "publish",
                "source_topic": "old/#",
                "re": "^old/(.+)$",
                "dest_topic": "new/$1",
            }
        ]
    )
    sub = Paho(broker.port, "rewritten", 4)
    sub.subscribe("new/#", 0)
    raw_connect(broker.port, "pub", 4).send(_burst(4, [("old/x", b"%d" % i) for i in range(50)]))
    assert _received(sub) == [("new/x", b"%d" % i) for i in range(50)]


def test_a_burst_to_an_invalid_topic_closes_the_publisher(broker):
    sub = Paho(broker.port, "watch", 4)
    sub.subscribe("#", 0)
    publisher = raw_connect(broker.port, "bad", 4)
    topic = "/".join(["l"] * 200)  # more levels than mqtt.max_topic_levels
    publisher.send(_burst(4, [(topic, b"x")] * 5))
    assert publisher.packets_until_closed() == []
    assert _received(sub) == []


def test_large_bursts_from_several_publishers_arrive_whole(broker):
    # Each read yields more than 64 KB for the subscriber: it goes out as a gather write.
    sub = raw_connect(broker.port, "big", 5)
    sub.subscribe("big/#")
    publishers = [raw_connect(broker.port, f"p{i}", 4) for i in range(2)]
    sent = {i: [(f"big/{i}", bytes([i]) * 1024 + b"%d" % n) for n in range(300)] for i in (0, 1)}
    for i, publisher in enumerate(publishers):
        publisher.send(_burst(4, sent[i]))
    got = [(p.topic, p.payload) for p in _raw_received(sub, 600)]
    for i in (0, 1):  # in order per publisher, nothing lost or doubled
        assert [m for m in got if m[0] == f"big/{i}"] == sent[i]


def _qos1_burst(version: int, topic: str, count: int, first_id: int = 1) -> bytes:
    return b"".join(
        mqtt_codec.encode_publish(
            topic, b"%d" % i, 1, packet_id=(first_id + i - 1) % 65535 + 1, protocol_version=version
        )
        for i in range(count)
    )


@pytest.mark.parametrize("version", [4, 5])
def test_qos1_burst_reaches_every_kind_of_subscriber_and_is_acknowledged_in_order(broker, version):
    count = 300
    fast = {v: raw_connect(broker.port, f"fast{v}", v) for v in (4, 5)}
    for sub in fast.values():
        sub.subscribe("q1/#", qos=1)
    downgraded = raw_connect(broker.port, "qos0", 5)
    downgraded.subscribe("q1/#", qos=0)
    # A Receive Maximum smaller than the burst: the run goes message by message, queued.
    narrow = raw_connect(broker.port, "narrow", 5, properties={"receive_maximum": 7})
    narrow.subscribe("q1/#", qos=1)
    publisher = raw_connect(broker.port, f"pub{version}", version)
    publisher.send(_qos1_burst(version, "q1/t", count, first_id=65535 - 100))
    acks = [publisher.expect(mqtt_codec.Puback) for _ in range(count)]
    assert [a.packet_id for a in acks] == [(65535 - 100 + i - 1) % 65535 + 1 for i in range(count)]
    assert {a.reason_code for a in acks} == {0}
    for v, sub in fast.items():
        got = _raw_received(sub, count)
        assert [(p.topic, p.payload, p.qos) for p in got] == [
            ("q1/t", b"%d" % i, 1) for i in range(count)
        ], v
        assert len({p.packet_id for p in got}) == count
        sub.send(b"".join(mqtt_codec.encode(mqtt_codec.Puback(p.packet_id), v) for p in got))
    got = _raw_received(downgraded, count)
    assert [(p.payload, p.qos) for p in got] == [(b"%d" % i, 0) for i in range(count)]
    received = []
    while len(received) < count:
        batch = _raw_received(narrow, 7 if count - len(received) >= 7 else count - len(received))
        received += batch
        narrow.send(b"".join(mqtt_codec.encode(mqtt_codec.Puback(p.packet_id), 5) for p in batch))
    assert [p.payload for p in received] == [b"%d" % i for i in range(count)]
    narrow.quiet()
    sessions = broker.broker.sessions
    assert broker.run(lambda: [len(sessions[f"fast{v}"].inflight) for v in (4, 5)]) == [0, 0]


def test_acknowledged_runs_free_the_window_for_the_next_burst(broker):
    sub = raw_connect(broker.port, "window", 5, properties={"receive_maximum": 50})
    sub.subscribe("w/#", qos=1)
    publisher = raw_connect(broker.port, "pub", 4)
    for round_ in range(4):
        publisher.send(_qos1_burst(4, "w/x", 50))
        assert len([publisher.expect(mqtt_codec.Puback) for _ in range(50)]) == 50
        got = _raw_received(sub, 50)
        assert [p.payload for p in got] == [b"%d" % i for i in range(50)], round_
        sub.quiet(0.1)  # nothing beyond the window
        sub.send(b"".join(mqtt_codec.encode(mqtt_codec.Puback(p.packet_id), 5) for p in got))


def test_qos1_burst_without_subscribers_gets_no_matching_subscribers_on_5(broker):
    for version, code_sent in ((5, 0x10), (4, 0)):
        publisher = raw_connect(broker.port, f"lonely{version}", version)
        publisher.send(_qos1_burst(version, "nobody/here", 20))
        acks = [publisher.expect(mqtt_codec.Puback) for _ in range(20)]
        assert [(a.packet_id, a.reason_code) for a in acks] == [
            (i + 1, code_sent) for i in range(20)
        ]


def test_qos1_burst_to_an_offline_persistent_session_is_queued_in_order(broker):
    sub = raw_connect(broker.port, "away", 4, clean_start=False)
    sub.subscribe("away/#", qos=1)
    sub.close()
    publisher = raw_connect(broker.port, "pub", 4)
    publisher.send(_qos1_burst(4, "away/x", 100))
    assert len([publisher.expect(mqtt_codec.Puback) for _ in range(100)]) == 100
    back = raw_connect(broker.port, "away", 4, clean_start=False)
    assert [p.payload for p in _raw_received(back, 100)] == [b"%d" % i for i in range(100)]


def test_qos2_acknowledgement_runs_complete_every_flow(broker):
    sub = raw_connect(broker.port, "q2sub", 5)
    sub.subscribe("q2/#", qos=2)
    publisher = raw_connect(broker.port, "q2pub", 5)
    publisher.send(
        b"".join(
            mqtt_codec.encode_publish("q2/x", b"%d" % i, 2, packet_id=i + 1, protocol_version=5)
            for i in range(40)
        )
    )
    recs = [publisher.expect(mqtt_codec.Pubrec) for _ in range(40)]
    publisher.send(b"".join(mqtt_codec.encode(mqtt_codec.Pubrel(r.packet_id), 5) for r in recs))
    comps = [publisher.expect(mqtt_codec.Pubcomp) for _ in range(40)]
    assert [(c.packet_id, c.reason_code) for c in comps] == [(i + 1, 0) for i in range(40)]
    got = _raw_received(sub, 40)
    assert [p.payload for p in got] == [b"%d" % i for i in range(40)]
    sub.send(b"".join(mqtt_codec.encode(mqtt_codec.Pubrec(p.packet_id), 5) for p in got))
    rels = [sub.expect(mqtt_codec.Pubrel) for _ in range(40)]
    assert [r.packet_id for r in rels] == [p.packet_id for p in got]
    sub.send(b"".join(mqtt_codec.encode(mqtt_codec.Pubcomp(r.packet_id), 5) for r in rels))
    sub.quiet()
    assert broker.run(lambda: len(broker.broker.sessions["q2sub"].inflight)) == 0
    counters = broker.broker.counters
    assert broker.run(lambda: counters.messages_received_by_qos()[2]) == 40
    assert broker.run(lambda: counters.packets_sent_of(PUBREC)) == 40
    assert broker.run(lambda: counters.messages_sent_by_qos()[2]) == 40


def _qos2_burst(version: int, topic: str, ids: list[int], tag: bytes = b"") -> bytes:
    return b"".join(
        mqtt_codec.encode_publish(topic, tag + b"%d" % i, 2, packet_id=i, protocol_version=version)
        for i in ids
    )


@pytest.mark.parametrize("version", [4, 5])
def test_qos2_burst_is_delivered_once_at_each_subscribers_qos(broker, version):
    subs = {qos: raw_connect(broker.port, f"q2-{qos}", 5) for qos in (0, 1, 2)}
    for qos, sub in subs.items():
        sub.subscribe("q2b/#", qos=qos)
    publisher = raw_connect(broker.port, f"q2pub{version}", version)
    publisher.send(_qos2_burst(version, "q2b/x", list(range(1, 31))))
    recs = [publisher.expect(mqtt_codec.Pubrec) for _ in range(30)]
    assert [(r.packet_id, r.reason_code) for r in recs] == [(i, 0) for i in range(1, 31)]
    # Resent before the PUBREL (DUP or not): acknowledged again, never delivered twice.
    publisher.send(_qos2_burst(version, "q2b/x", list(range(1, 31)), b"again"))
    assert [publisher.expect(mqtt_codec.Pubrec).packet_id for _ in range(30)] == list(range(1, 31))
    for qos, sub in subs.items():
        got = _raw_received(sub, 30)
        assert [(p.payload, p.qos) for p in got] == [(b"%d" % i, qos) for i in range(1, 31)]
        sub.quiet(0.2)
    publisher.send(b"".join(mqtt_codec.encode(mqtt_codec.Pubrel(i), version) for i in range(1, 31)))
    comps = [publisher.expect(mqtt_codec.Pubcomp) for _ in range(30)]
    assert [(c.packet_id, c.reason_code) for c in comps] == [(i, 0) for i in range(1, 31)]
    assert broker.run(lambda: len(broker.broker.sessions[f"q2pub{version}"].qos2_inbound)) == 0


def test_qos2_burst_over_the_receive_maximum_is_refused_at_the_packet_that_exceeds_it(
    broker_factory,
):
    b = broker_factory(receive_maximum=10)
    publisher = raw_connect(b.port, "greedy", 5)
    assert publisher.connack.properties["receive_maximum"] == 10
    publisher.send(_qos2_burst(5, "rm/x", list(range(1, 12))))
    packets = publisher.packets_until_closed()
    assert [p.packet_id for p in packets if isinstance(p, mqtt_codec.Pubrec)] == list(range(1, 11))
    assert isinstance(packets[-1], mqtt_codec.Disconnect) and packets[-1].reason_code == 0x93
