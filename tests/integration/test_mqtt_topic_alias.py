"""MQTT 5 topic aliases from the broker to a client that allows them (§3.3.2.3.4).

Opt-in (mqtt.send_topic_aliases): paho-mqtt for Python and libmosquitto advertise a Topic
Alias Maximum on request but then fail on PUBLISHes that carry only the alias.
"""

from __future__ import annotations

import pytest

from robustmq._core import mqtt_codec
from tests.integration.clients import Paho, Raw, props


def _subscriber(broker, alias_maximum):
    raw = Raw(broker.port, 5)
    props = {"topic_alias_maximum": alias_maximum} if alias_maximum else None
    raw.connect("aliased", properties=props)
    raw.send_packet(mqtt_codec.Subscribe(1, [mqtt_codec.Subscription("a/#", 1)]))
    assert raw.recv().reason_codes == [1]
    return raw


def test_broker_sends_topic_once_then_only_the_alias(broker_factory):
    broker = broker_factory(send_topic_aliases=True)
    raw = _subscriber(broker, 1)
    pub = Paho(broker.port, "pub", 5)
    for topic in ("a/long/topic/name", "a/long/topic/name", "a/other"):
        pub.publish(topic, topic.encode(), 1)
    first, second, third = (raw.recv() for _ in range(3))
    assert (first.topic, first.properties["topic_alias"]) == ("a/long/topic/name", 1)
    assert (second.topic, second.properties["topic_alias"]) == ("", 1)
    assert second.payload == b"a/long/topic/name"
    # The maximum (1) is used up: the other topic goes out in full without an alias.
    assert third.topic == "a/other" and "topic_alias" not in (third.properties or {})
    pub.disconnect()


@pytest.mark.parametrize(("send", "allowed"), [(True, 0), (False, 10)])
def test_no_aliases_unless_enabled_and_allowed(broker_factory, send, allowed):
    broker = broker_factory(send_topic_aliases=send)
    raw = _subscriber(broker, allowed)
    pub = Paho(broker.port, "pub", 5)
    pub.publish("a/b", b"1", 1)
    pub.publish("a/b", b"2", 1)
    for _ in range(2):
        packet = raw.recv()
        assert packet.topic == "a/b" and packet.properties is None
    pub.disconnect()


def test_default_config_is_safe_for_paho_clients_that_allow_aliases(broker):
    sub = Paho(broker.port, "sub", 5, connect_props=props("CONNECT", TopicAliasMaximum=10))
    sub.subscribe("a/#", 1)
    pub = Paho(broker.port, "pub", 5)
    for i in range(3):
        pub.publish("a/same", str(i).encode(), 1)
    assert [(m.topic, m.payload) for m in (sub.get() for _ in range(3))] == [
        ("a/same", b"0"),
        ("a/same", b"1"),
        ("a/same", b"2"),
    ]
    pub.disconnect()
    sub.disconnect()
