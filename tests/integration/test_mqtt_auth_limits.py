"""Abuse limits over real sockets: blacklist (client id, username, IP, expiry) -> CONNACK
0x8A / 0x05, flapping, connections per IP, connect rate, publish quota API, counters."""

from __future__ import annotations

import logging
import time

import pytest

from robustmq._core import mqtt_codec
from robustmq.broker.auth.ratelog import RateLimitedLog
from robustmq.broker.mqtt import connection
from robustmq.config import AuthConfig
from tests.integration.clients import Paho, Raw, code, raw_connect, wait_until


def _connack(port, version, client_id, **kwargs):
    raw = Raw(port, version)
    ack = raw.connect(client_id, **kwargs)
    assert isinstance(ack, mqtt_codec.Connack), ack
    return raw, ack.reason_code


def _code(port, version, client_id="c", **kwargs):
    raw, rc = _connack(port, version, client_id, **kwargs)
    raw.close()
    return rc


BLACKLIST = [
    {"clientid": "bad-client"},
    {"username": "bad-user"},
    {"clientid": "was-bad", "until": 1.0},  # expired in 1970
]


@pytest.mark.parametrize("version, banned", [(5, 0x8A), (4, 0x05)])
def test_blacklist(broker_factory, version, banned):
    b = broker_factory(auth=AuthConfig(blacklist=BLACKLIST))
    assert _code(b.port, version, "bad-client") == banned
    assert _code(b.port, version, "ok", username="bad-user", password=b"x") == banned
    assert _code(b.port, version, "was-bad") == 0
    assert _code(b.port, version, "fine") == 0
    assert b.broker.stats["connect_banned"] == 2


def test_blacklist_ip_and_runtime_ban_with_expiry(broker_factory):
    b = broker_factory(auth=AuthConfig(blacklist=[{"ip": "127.0.0.0/8"}]))
    assert _code(b.port, 5, "any") == 0x8A
    blacklist = b.broker.security.limits.blacklist
    b.run(blacklist.unban, "ip", "127.0.0.0/8")
    assert _code(b.port, 5, "any") == 0
    b.run(blacklist.ban, "clientid", "shortly", time.time() + 0.5)
    assert _code(b.port, 5, "shortly") == 0x8A
    time.sleep(0.6)
    assert _code(b.port, 5, "shortly") == 0


def test_paho_sees_banned(broker_factory):
    b = broker_factory(auth=AuthConfig(blacklist=BLACKLIST))
    client = Paho(b.port, "bad-client", 5, connect=False)
    _, rc, _ = client.connect()
    client.client.loop_stop()
    assert code(rc) == 0x8A


def test_flapping_client_is_banned_for_a_while(broker_factory):
    b = broker_factory(
        auth=AuthConfig(flapping_max_connects=3, flapping_window=60, flapping_ban_time=0.5)
    )
    for _ in range(3):
        assert _code(b.port, 4, "flappy") == 0
    assert _code(b.port, 4, "flappy") == 0x05
    assert _code(b.port, 5, "flappy") == 0x8A
    assert _code(b.port, 5, "steady") == 0
    assert b.broker.stats["flapping_bans"] == 1
    time.sleep(0.6)
    assert _code(b.port, 5, "flappy") == 0


@pytest.mark.parametrize("version, refused", [(5, 0x97), (4, 0x03)])
def test_max_connections_per_ip(broker_factory, version, refused):
    b = broker_factory(auth=AuthConfig(max_connections_per_ip=2))
    first, rc1 = _connack(b.port, version, "one")
    second, rc2 = _connack(b.port, version, "two")
    assert (rc1, rc2) == (0, 0)
    assert _code(b.port, version, "three") == refused
    first.close()
    assert wait_until(lambda: b.run(lambda: b.broker.security.limits.per_ip["127.0.0.1"]) == 1)
    third, rc3 = _connack(b.port, version, "three")
    assert rc3 == 0
    # A clean DISCONNECT releases the slot too, and only once.
    second.send_packet(mqtt_codec.Disconnect())
    third.send_packet(mqtt_codec.Disconnect())
    assert second.closed() and third.closed()
    assert wait_until(lambda: b.run(lambda: dict(b.broker.security.limits.per_ip)) == {})
    assert b.broker.stats["connect_ip_limit"] == 1


@pytest.mark.parametrize("version, refused", [(5, 0x9F), (4, 0x03)])
def test_connect_rate_per_listener(broker_factory, version, refused):
    b = broker_factory(auth=AuthConfig(connect_rate=0.01, connect_burst=2))
    assert _code(b.port, version, "a") == 0
    assert _code(b.port, version, "b") == 0
    assert _code(b.port, version, "c") == refused
    assert b.broker.stats["connect_rate_exceeded"] == 1


def test_publish_quota_object_on_the_connection(broker_factory):
    b = broker_factory(auth=AuthConfig(publish_rate=2, publish_byte_rate=1000))
    Paho(b.port, "q", 5)

    def quota_checks():
        conn = next(c for c in b.broker.connections if c.client_id == "q")
        return [conn.publish_quota.allow(10) for _ in range(3)]

    assert b.run(quota_checks) == [True, True, False]
    assert b.broker.stats["publish_quota_exceeded"] == 1
    b2 = broker_factory()
    Paho(b2.port, "q", 5)
    assert b2.run(lambda: next(iter(b2.broker.connections)).publish_quota) is None


def test_refusals_are_logged_at_a_bounded_rate(broker_factory, caplog, monkeypatch):
    # A fresh budget: earlier tests in this process may have spent the module's.
    fresh = RateLimitedLog(logging.getLogger("robustmq.broker.mqtt.connection"))
    monkeypatch.setattr(connection, "_refusals", fresh)
    b = broker_factory(auth=AuthConfig(blacklist=[{"clientid": "spam"}]))
    for _ in range(30):
        _code(b.port, 4, "spam")
    refused = [r for r in caplog.records if "refused: banned" in r.getMessage()]
    assert b.broker.stats["connect_banned"] == 30
    assert len(refused) == 20 and fresh.suppressed == 10


@pytest.mark.parametrize("version, code_sent", [(5, 0x97), (4, 0)])
def test_publishes_over_the_quota_are_refused_and_not_routed(broker_factory, version, code_sent):
    b = broker_factory(auth=AuthConfig(publish_rate=3))  # a burst of 3, then 3 per second
    sub = raw_connect(b.port, "sub", 5)
    sub.subscribe("q/#", qos=1)
    pub = raw_connect(b.port, "pub", version)
    for i in range(1, 6):
        pub.publish("q/t", b"%d" % i, qos=1, packet_id=i)
    codes = [pub.expect(mqtt_codec.Puback).reason_code for _ in range(5)]
    assert codes == [0, 0, 0, code_sent, code_sent]
    assert [sub.expect(mqtt_codec.Publish).payload for _ in range(3)] == [b"1", b"2", b"3"]
    sub.quiet()
    assert b.broker.stats["publish_quota_exceeded"] == 2
