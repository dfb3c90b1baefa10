"""Broker extensions users of EMQX expect: $SYS topics, delayed publish, topic rewrite,
auto-subscribe and server redirection."""

from __future__ import annotations

import time

import pytest

from robustmq._core import mqtt_codec
from robustmq.errors import ConfigError
from tests.integration.clients import Paho, Raw


def test_sys_topics_publish_broker_statistics(broker_factory):
    b = broker_factory(sys_interval=0.2)
    other = Paho(b.port, "other", 4)
    sub = Paho(b.port, "sys-reader", 5)
    sub.subscribe("$SYS/brokers/+/clients/connected")
    values = {int(sub.get().payload) for _ in range(3)}
    assert 2 in values
    sub.subscribe("$SYS/brokers/1/version")
    assert sub.get().payload.decode().count(".") == 2
    other.disconnect()
    sub.disconnect()


def test_hash_does_not_match_sys_topics(broker_factory):
    b = broker_factory(sys_interval=0.1)
    sub = Paho(b.port, "all", 5)
    sub.subscribe("#")
    sub.expect_nothing(0.5)
    sub.disconnect()


def test_delayed_publish_arrives_after_its_delay(broker):
    sub = Paho(broker.port, "sub", 5)
    sub.subscribe("later/#", 1)
    pub = Paho(broker.port, "pub", 5)
    sent = time.monotonic()
    pub.publish("$delayed/1/later/x", b"tick", 1)
    sub.expect_nothing(0.6)
    msg = sub.get(timeout=3)
    assert (msg.topic, msg.payload) == ("later/x", b"tick")
    assert time.monotonic() - sent >= 0.95
    pub.disconnect()
    sub.disconnect()


@pytest.mark.parametrize("topic", ["$delayed/abc/x", "$delayed/101/x", "$delayed/5", "$delayed/5/"])
def test_bad_delayed_topic_is_refused(broker_factory, topic):
    b = broker_factory(max_delayed_seconds=100)
    raw = Raw(b.port, 5)
    raw.connect("pub")
    raw.send_packet(mqtt_codec.Publish(topic, b"x", 1, packet_id=1))
    ack = raw.recv()
    assert (ack.packet_id, ack.reason_code) == (1, 0x90)


def test_delayed_publish_count_limit(broker_factory):
    b = broker_factory(max_delayed_messages=1)
    raw = Raw(b.port, 5)
    raw.connect("pub")
    raw.send_packet(mqtt_codec.Publish("$delayed/30/a", b"1", 1, packet_id=1))
    raw.send_packet(mqtt_codec.Publish("$delayed/30/a", b"2", 1, packet_id=2))
    assert [raw.recv().reason_code, raw.recv().reason_code] == [0, 0x97]  # quota exceeded
    assert b.run(len, b.broker.delayed) == 1


def test_topic_rewrite_on_publish_and_subscribe(broker_factory):
    b = broker_factory(
        rewrite=[
            {
                "action": "publish",
                "source_topic": "x/#",
                "re": "^x/y/(.+)$",
                "dest_topic": "z/y/$1",
            },
            {
                "action": "subscribe",
                "source_topic": "y/+/z/#",
                "re": "^y/(.+)/z/(.+)$",
                "dest_topic": "y/z/$2",
            },
            {
                "action": "all",
                "source_topic": "me/#",
                "re": "^me/(.+)$",
                "dest_topic": "${clientid}/$1",
            },
        ]
    )
    sub = Paho(b.port, "sub", 4)
    sub.subscribe("z/y/#")
    sub.subscribe("y/any/z/deep")  # rewritten to y/z/deep
    sub.subscribe("me/in")  # rewritten to sub/in
    pub = Paho(b.port, "pub", 4)
    pub.publish("x/y/1", b"a")
    assert (sub.get().topic, b"a") == ("z/y/1", b"a")
    pub.publish("y/z/deep", b"b")
    assert sub.get().topic == "y/z/deep"
    pub.publish("sub/in", b"c")
    assert sub.get().topic == "sub/in"
    pub.publish("x/other", b"d")  # filter matches, expression does not: unchanged
    sub.expect_nothing()
    pub.disconnect()
    sub.disconnect()


def test_auto_subscribe_with_placeholders(broker_factory):
    b = broker_factory(auto_subscribe=[{"topic": "inbox/${clientid}", "qos": 1}])
    sub = Paho(b.port, "dev1", 5)
    pub = Paho(b.port, "pub", 5)
    pub.publish("inbox/dev1", b"hello", 1)
    msg = sub.get()
    assert (msg.topic, msg.payload, msg.qos) == ("inbox/dev1", b"hello", 1)
    pub.disconnect()
    sub.disconnect()


@pytest.mark.parametrize(
    "overrides",
    [
        {"rewrite": [{"action": "nope", "source_topic": "a", "re": "a", "dest_topic": "b"}]},
        {"rewrite": [{"action": "all", "source_topic": "a/#/b", "re": "a", "dest_topic": "b"}]},
        {"rewrite": [{"action": "all", "source_topic": "a", "re": "(", "dest_topic": "b"}]},
        {"auto_subscribe": [{"topic": "a/#/b", "qos": 0}]},
        {"auto_subscribe": [{"topic": "a", "qos": 3}]},
    ],
)
def test_bad_rules_are_config_errors(overrides):
    from robustmq.broker.mqtt.server import MqttBroker
    from robustmq.config import MqttConfig

    with pytest.raises(ConfigError):
        MqttBroker(MqttConfig(**overrides))


def test_server_reference_redirects_clients(broker_factory):
    b = broker_factory(server_reference="other.example:1883")
    raw = Raw(b.port, 5)
    ack = raw.connect("c5")
    assert ack.reason_code == 0x9C  # use another server
    assert ack.properties == {"server_reference": "other.example:1883"}
    assert raw.closed()
    raw3 = Raw(b.port, 4)
    assert raw3.connect("c3").reason_code == 3  # server unavailable
    assert raw3.closed()


def test_response_information_only_when_requested(broker_factory):
    b = broker_factory(response_information="replies/")
    raw = Raw(b.port, 5)
    ack = raw.connect("asks", properties={"request_response_information": 1})
    assert ack.properties["response_information"] == "replies/"
    quiet = Raw(b.port, 5)
    assert "response_information" not in quiet.connect("silent").properties


def test_delayed_retained_publish_is_retained_when_it_fires(broker):
    pub = Paho(broker.port, "pub", 5)
    pub.publish("$delayed/0/kept/x", b"later", 1, retain=True)
    time.sleep(0.3)
    sub = Paho(broker.port, "sub", 5)
    sub.subscribe("kept/#")
    msg = sub.get()
    assert (msg.topic, msg.payload, msg.retain) == ("kept/x", b"later", True)
