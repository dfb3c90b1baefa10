"""Abuse limits: blacklist with expiry, flapping, per-IP counts, connect rate, publish
quotas, and the rate-limited log."""

from __future__ import annotations

import logging
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from robustmq.broker.auth.limits import (
    Blacklist,
    Limits,
    LimitSettings,
    PublishQuota,
    TokenBucket,
    blacklist_from_config,
)
from robustmq.broker.auth.ratelog import RateLimitedLog
from robustmq.errors import ConfigError


def test_blacklist_kinds_and_expiry():
    bl = Blacklist()
    bl.ban("clientid", "bad")
    bl.ban("username", "eve", time.time() + 60)
    bl.ban("ip", "10.0.0.0/8")
    bl.ban("username", "old", time.time() - 1)
    assert bl.banned("bad", None, "1.1.1.1")
    assert bl.banned("x", "eve", "1.1.1.1")
    assert bl.banned("x", None, "10.9.9.9")
    assert not bl.banned("x", "old", "1.1.1.1")  # expired
    assert not bl.banned("x", "ok", "11.0.0.1")
    assert not bl.banned("x", None, "garbage")
    assert bl.unban("ip", "10.0.0.0/8") and not bl.banned("x", None, "10.9.9.9")
    with pytest.raises(ValueError):
        bl.ban("host", "x")


def test_blacklist_from_config():
    past = datetime.now(timezone.utc) - timedelta(hours=1)
    bl = blacklist_from_config(
        [{"clientid": "a"}, {"ip": "::1"}, {"username": "u", "until": past}, {"clientid": "b",
         "until": time.time() + 100}]
    )  # fmt: skip
    assert bl.banned("a", None, "x") and bl.banned("b", None, "x") and bl.banned("z", None, "::1")
    assert not bl.banned("z", "u", "1.2.3.4")
    for bad in ({}, {"clientid": "a", "ip": "1.1.1.1"}, {"ip": "nope"}, {"clientid": ""},
                {"clientid": "a", "until": "soon"}, {"clientid": "a", "extra": 1}):  # fmt: skip
        with pytest.raises(ConfigError, match=r"auth\.blacklist\[0\]"):
            blacklist_from_config([bad])


def test_flapping_bans_after_n_connects():
    stats = Counter()
    limits = Limits(
        LimitSettings(flapping_max_connects=3, flapping_ban_time=60), Blacklist(), stats
    )
    for _ in range(3):
        assert limits.admit("flappy", None, "1.1.1.1", None) is None
    code, why = limits.admit("flappy", None, "1.1.1.1", None)
    assert code == 0x8A and "flapping" in why
    assert limits.admit("flappy", None, "1.1.1.1", None)[0] == 0x8A  # now blacklisted
    assert limits.admit("other", None, "1.1.1.1", None) is None
    assert stats["flapping_bans"] == 1 and stats["connect_banned"] == 2


def test_per_ip_limit():
    stats = Counter()
    limits = Limits(LimitSettings(max_connections_per_ip=2), Blacklist(), stats)
    limits.connected("1.1.1.1")
    limits.connected("1.1.1.1")
    assert limits.admit("c", None, "1.1.1.1", None)[0] == 0x97
    assert limits.admit("c", None, "2.2.2.2", None) is None
    limits.released("1.1.1.1")
    assert limits.admit("c", None, "1.1.1.1", None) is None
    limits.released("1.1.1.1")
    assert limits.per_ip == Counter()


def test_connect_rate_is_per_listener():
    stats = Counter()
    limits = Limits(LimitSettings(connect_rate=0.001, connect_burst=2), Blacklist(), stats)
    assert limits.admit("a", None, "ip", 1883) is None
    assert limits.admit("b", None, "ip", 1883) is None
    assert limits.admit("c", None, "ip", 1883)[0] == 0x9F
    assert limits.admit("c", None, "ip", 8883) is None
    assert stats["connect_rate_exceeded"] == 1


def test_token_bucket_refills():
    bucket = TokenBucket(1000.0, 1.0)
    assert bucket.take() and not bucket.take()
    bucket.stamp -= 0.01  # as if 10 ms passed
    assert bucket.take()


def test_publish_quota_messages_and_bytes():
    stats = Counter()
    q = PublishQuota(2.0, 0.0, stats)
    assert q.allow(10) and q.allow(10) and not q.allow(10)
    b = PublishQuota(0.0, 100.0, stats)
    assert b.allow(1000)  # a large message may go when the bucket is not empty...
    assert not b.allow(1)  # ...and then the debt must be paid first
    assert stats["publish_quota_exceeded"] == 2
    assert Limits(LimitSettings(), Blacklist(), stats).publish_quota() is None


def test_rate_limited_log(caplog):
    caplog.set_level(logging.INFO, logger="t")
    rl = RateLimitedLog(logging.getLogger("t"), burst=3, interval=3600)
    for i in range(10):
        rl.info("line %d", i)
    assert len(caplog.records) == 3 and rl.suppressed == 7
    rl._window_start -= 3600
    rl.info("again")
    assert "7 similar lines suppressed" in caplog.records[3].getMessage()
    assert caplog.records[4].getMessage() == "again"
