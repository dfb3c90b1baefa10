"""ACL over real sockets: SUBSCRIBE denied with SUBACK 0x87 (5.0) / 0x80 (3.1.1), QoS
limits, placeholders, the will topic, and the per-connection publish authorizer the
PUBLISH handler calls."""

from __future__ import annotations

import pytest

from robustmq._core import mqtt_codec
from robustmq.broker.auth.users import set_password
from robustmq.config import AuthConfig
from tests.integration.clients import Paho, Raw, code, raw_connect

RULES = """\
# who may do what
deny  all               subscribe secret/#
allow user:alice        all       users/%u/#
allow clientid:sensor-1 publish   sensors/${clientid}/up qos<=1 retain=false
allow all               subscribe public/# qos<=1
deny  all               all       #
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("acl")
    (d / "acl").write_text(RULES)
    set_password(str(d / "passwd"), "alice", "pw")
    set_password(str(d / "passwd"), "bob", "pw")
    return d


def _broker(broker_factory, files, **auth):
    return broker_factory(
        auth=AuthConfig(password_file=str(files / "passwd"), acl_file=str(files / "acl"), **auth)
    )


def _connection(b, client_id):
    def find():
        return next(c for c in b.broker.connections if c.client_id == client_id)

    return b.run(find)


@pytest.mark.parametrize("version, denied", [(5, 0x87), (4, 0x80)])
def test_subscribe_denied_and_allowed(broker_factory, files, version, denied):
    b = _broker(broker_factory, files)
    alice = Paho(b.port, "a1", version, username="alice", password="pw")
    assert [code(c) for c in alice.subscribe("users/alice/#", 2)] == [2]
    assert [code(c) for c in alice.subscribe("users/bob/#", 1)] == [denied]
    assert [code(c) for c in alice.subscribe("secret/x", 0)] == [denied]
    assert [code(c) for c in alice.subscribe("#", 0)] == [denied]
    assert [code(c) for c in alice.subscribe("public/news", 2)] == [1]  # qos<=1 limit
    assert b.broker.stats["acl_denied_subscribe"] == 3


def test_denied_subscription_receives_nothing(broker_factory, files):
    b = _broker(broker_factory, files)
    bob = Paho(b.port, "b1", 5, username="bob", password="pw")
    assert [code(c) for c in bob.subscribe("users/alice/#", 0)] == [0x87]
    alice = Paho(b.port, "a1", 5, username="alice", password="pw")
    alice.subscribe("users/alice/#", 0)
    alice.publish("users/alice/x", b"private", 1)
    assert alice.get().payload == b"private"
    bob.expect_nothing()


def test_several_filters_in_one_subscribe(broker_factory, files):
    b = _broker(broker_factory, files)
    raw = raw_connect(b.port, "a2", 5, username="alice", password=b"pw")
    suback = raw.subscribe("users/alice/1", "secret/2", "public/3", qos=2)
    assert suback.reason_codes == [2, 0x87, 1]


def test_publish_authorizer_on_the_connection(broker_factory, files):
    b = _broker(broker_factory, files)
    Paho(b.port, "sensor-1", 5, username="bob", password="pw")
    authz = _connection(b, "sensor-1").authorizer
    assert authz is not None
    allowed = b.run(authz.publish_allowed, "sensors/sensor-1/up", 1, False)
    assert allowed is True
    for topic, qos, retain in [
        ("sensors/sensor-1/up", 2, False),  # over qos<=1
        ("sensors/sensor-1/up", 0, True),  # retain=false
        ("sensors/sensor-2/up", 0, False),  # another client's topic
        ("users/bob/x", 0, False),  # the alice rule is not bob's
    ]:
        assert b.run(authz.publish_allowed, topic, qos, retain) is False
    assert b.broker.stats["acl_denied_publish"] == 4


def test_no_rules_means_no_authorizer(broker_factory, files):
    b = broker_factory(auth=AuthConfig(password_file=str(files / "passwd")))
    Paho(b.port, "x", 5, username="alice", password="pw")
    assert _connection(b, "x").authorizer is None


def test_will_topic_denied_refuses_the_connect(broker_factory, files):
    b = _broker(broker_factory, files)
    raw = Raw(b.port, 5)
    will = mqtt_codec.Will("secret/will", b"bye", 0, False)
    ack = raw.connect("w1", username="alice", password=b"pw", will=will)
    assert ack.reason_code == 0x87
    ok = Paho(b.port, "w2", 4, username="alice", password="pw",
              will=("users/alice/status", b"gone", 1, False))  # fmt: skip
    assert code(ok.reason_code) == 0


def test_default_deny_without_a_file(broker_factory):
    b = broker_factory(auth=AuthConfig(acl_default="deny"))
    c = Paho(b.port, "d", 4)
    assert [code(x) for x in c.subscribe("any/thing", 0)] == [0x80]


def test_auto_subscribe_goes_through_the_acl(broker_factory, files):
    b = broker_factory(
        auth=AuthConfig(password_file=str(files / "passwd"), acl_file=str(files / "acl")),
        auto_subscribe=[{"topic": "users/${username}/inbox", "qos": 1},
                        {"topic": "secret/${clientid}", "qos": 1}],
    )  # fmt: skip
    Paho(b.port, "a3", 5, username="alice", password="pw")
    session = b.run(lambda: b.broker.sessions["a3"])
    assert list(session.subscriptions) == ["users/alice/inbox"]


@pytest.mark.parametrize("qos, ack", [(1, mqtt_codec.Puback), (2, mqtt_codec.Pubrec)])
@pytest.mark.parametrize("version, code_sent", [(5, 0x87), (4, 0)])
def test_denied_publish_is_not_routed_and_acknowledged(
    broker_factory, files, qos, ack, version, code_sent
):
    b = _broker(broker_factory, files)
    alice = Paho(b.port, "watcher", 5, username="alice", password="pw")
    alice.subscribe("users/alice/#", 2)
    bob = raw_connect(b.port, "b2", version, username="bob", password=b"pw")
    bob.publish("users/alice/inbox", b"forged", qos=qos, packet_id=9)
    reply = bob.expect(ack)
    assert (reply.packet_id, reply.reason_code) == (9, code_sent)
    alice.expect_nothing()
    sensor = raw_connect(b.port, "sensor-1", version, username="bob", password=b"pw")
    sensor.publish("sensors/sensor-1/up", b"fine", qos=1, packet_id=3)
    assert sensor.expect(mqtt_codec.Puback).reason_code < 0x80  # 0x10: nobody subscribed
    assert b.broker.stats["acl_denied_publish"] == 1


def test_denied_qos0_burst_is_dropped_whole_and_counted(broker_factory, files):
    b = _broker(broker_factory, files)
    alice = Paho(b.port, "watcher", 4, username="alice", password="pw")
    alice.subscribe("users/alice/#", 0)
    bob = raw_connect(b.port, "b3", 4, username="bob", password=b"pw")
    burst = b"".join(
        mqtt_codec.encode_publish("users/alice/x", b"%d" % i, protocol_version=4)
        for i in range(100)
    )
    bob.send(burst)
    alice.expect_nothing()
    bob.quiet()  # QoS 0 denials are silent, and the connection stays
    assert b.broker.stats["acl_denied_publish"] == 100
    own = raw_connect(b.port, "a9", 4, username="alice", password=b"pw")
    own.send(burst)
    assert [alice.get().payload for _ in range(100)] == [b"%d" % i for i in range(100)]


@pytest.mark.parametrize("version, code_sent", [(5, 0x87), (4, 0)])
def test_denied_qos1_burst_is_acknowledged_per_message_and_counted(
    broker_factory, files, version, code_sent
):
    b = _broker(broker_factory, files)
    alice = Paho(b.port, "watcher", 4, username="alice", password="pw")
    alice.subscribe("users/alice/#", 1)
    bob = raw_connect(b.port, "b4", version, username="bob", password=b"pw")
    bob.send(
        b"".join(
            mqtt_codec.encode_publish(
                "users/alice/x", b"%d" % i, 1, packet_id=i + 1, protocol_version=version
            )
            for i in range(50)
        )
    )
    acks = [bob.expect(mqtt_codec.Puback) for _ in range(50)]
    assert [(a.packet_id, a.reason_code) for a in acks] == [(i + 1, code_sent) for i in range(50)]
    alice.expect_nothing()
    assert b.broker.stats["acl_denied_publish"] == 50
