"""ACL rules: parsing, first match wins, placeholders, limits, subscribe coverage/overlap,
the per-connection cache, and an oracle check of the filter relations."""

from __future__ import annotations

import itertools
import re
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from robustmq.broker.auth.acl import Acl, _covers, _overlap, load_acl_file, parse_rule
from robustmq.errors import SecurityFileError


def _acl(text, default_allow=True):
    rules = [parse_rule(line, i) for i, line in enumerate(text.strip().splitlines(), 1)]
    return Acl(rules, default_allow, Counter())


def _authz(acl, client_id="c1", username="alice", ip="10.1.2.3", claims=None):
    return acl.authorizer_for(client_id, username, ip, claims)


def test_no_rules_and_default_allow_means_no_authorizer():
    assert _authz(Acl([], True, Counter())) is None
    # Rules that only allow, with no limits, can deny nothing either.
    assert _authz(_acl("allow all all #")) is None
    # Rules for someone else do not count.
    assert _authz(_acl("deny user:bob all #")) is None


def test_first_match_wins_and_default():
    acl = _acl(
        """
        deny user:alice publish secret/#
        allow all publish secret/public
        allow all publish open/#
        """,
        default_allow=False,
    )
    a = _authz(acl)
    assert not a.publish_allowed("secret/public", 0, False)  # the deny came first
    assert a.publish_allowed("open/x", 1, False)
    assert not a.publish_allowed("other", 0, False)  # default deny
    b = _authz(acl, username="bob")
    assert b.publish_allowed("secret/public", 0, False)
    assert acl.stats["acl_denied_publish"] == 2


def test_who_kinds():
    acl = _acl(
        """
        allow clientid:dev-1 publish d/1
        allow ip:192.168.0.0/16 publish lan/#
        allow ip:::1 publish v6
        """,
        default_allow=False,
    )
    assert _authz(acl, client_id="dev-1").publish_allowed("d/1", 0, False)
    assert not _authz(acl, client_id="dev-2").publish_allowed("d/1", 0, False)
    assert _authz(acl, ip="192.168.4.4").publish_allowed("lan/a", 0, False)
    assert not _authz(acl, ip="10.0.0.1").publish_allowed("lan/a", 0, False)
    assert not _authz(acl, ip="not-an-ip").publish_allowed("lan/a", 0, False)
    assert _authz(acl, ip="::1").publish_allowed("v6", 0, False)


def test_placeholders():
    acl = _acl(
        """
        allow all all users/%u/#
        allow all publish devices/${clientid}/up
        allow all subscribe tenants/${jwt.tenant}/#
        """,
        default_allow=False,
    )
    a = _authz(acl, claims={"tenant": "t7"})
    assert a.publish_allowed("users/alice/x", 0, False)
    assert not a.publish_allowed("users/bob/x", 0, False)
    assert a.publish_allowed("devices/c1/up", 0, False)
    assert a.subscribe_qos("tenants/t7/#", 1) == 1
    assert a.subscribe_qos("tenants/t8/#", 1) is None


@pytest.mark.parametrize("username", ["#", "+", "a/b", "", None])
def test_a_username_cannot_widen_a_rule(username):
    acl = _acl("allow all all users/%u/#", default_allow=False)
    a = _authz(acl, username=username)
    assert not a.publish_allowed("users/bob/x", 0, False)
    assert a.subscribe_qos("users/#", 0) is None


def test_missing_claim_makes_the_rule_not_apply():
    acl = _acl("allow all all t/${jwt.tenant}/#", default_allow=False)
    for claims in (None, {}, {"tenant": {"nested": 1}}, {"tenant": True}, {"tenant": "x/y"}):
        assert not _authz(acl, claims=claims).publish_allowed("t/x/y/1", 0, False)
    assert _authz(acl, claims={"tenant": 5}).publish_allowed("t/5/a", 0, False)


def test_qos_and_retain_limits_on_publish():
    a = _authz(_acl("allow all publish t/# qos<=1 retain=false"))
    assert a.publish_allowed("t/a", 0, False) and a.publish_allowed("t/a", 1, False)
    assert not a.publish_allowed("t/a", 2, False)
    assert not a.publish_allowed("t/a", 1, True)
    assert a.publish_allowed("other", 2, True)  # no rule: default allow
    only_retained = _authz(_acl("allow all publish state/#  retain=true", default_allow=False))
    assert only_retained.publish_allowed("state/a", 2, True)
    assert not only_retained.publish_allowed("state/a", 0, False)


def test_subscribe_qos_limit_downgrades():
    a = _authz(_acl("allow all subscribe t/# qos<=0", default_allow=False))
    assert a.subscribe_qos("t/x", 2) == 0


def test_subscribe_cover_and_overlap():
    acl = _acl(
        """
        deny all subscribe secret/#
        allow all subscribe public/+/data
        allow all subscribe #
        """,
        default_allow=False,
    )
    a = _authz(acl)
    assert a.subscribe_qos("public/a/data", 1) == 1
    assert a.subscribe_qos("secret/x", 1) is None
    assert a.subscribe_qos("+/x", 1) is None  # overlaps secret/x
    assert a.subscribe_qos("#", 1) is None  # would receive secret/...
    assert a.subscribe_qos("$share/g/secret/#", 1) is None
    assert a.subscribe_qos("$SYS/#", 1) is None  # "#" does not cover $SYS (§4.7.2)
    b = _authz(_acl("allow all subscribe public/+/data", default_allow=False))
    assert b.subscribe_qos("public/#", 0) is None  # wider than the rule
    assert b.subscribe_qos("public/+/data", 0) == 0


def test_sys_topics_and_wildcards():
    a = _authz(_acl("allow all publish #", default_allow=False))
    assert a.publish_allowed("x/y", 0, False)
    assert not a.publish_allowed("$SYS/x", 0, False)
    b = _authz(_acl("deny all subscribe $SYS/#\nallow all subscribe #", default_allow=False))
    assert b.subscribe_qos("#", 0) == 0  # "#" and "$SYS/#" do not overlap


def test_cache_gives_the_same_answers_and_is_bounded():
    a = _authz(_acl("deny all publish t/1\nallow all publish t/+", default_allow=False))
    for _ in range(3):
        assert not a.publish_allowed("t/1", 0, False)
        assert a.publish_allowed("t/2", 0, False)
    for i in range(5000):
        a.publish_allowed(f"n/{i}", 0, False)
    assert len(a._cache) <= 4096


@pytest.mark.parametrize(
    "line, message",
    [
        ("allow all publish", "expected"),
        ("permit all publish t", "permission"),
        ("allow everyone publish t", "who"),
        ("allow user: publish t", "needs a name"),
        ("allow ip:300.1.1.1 publish t", "IP address"),
        ("allow all read t", "action"),
        ("allow all publish t/#/x", "bad topic filter"),
        ("allow all publish t qos<=3", "unknown option"),
        ("allow all publish t retain=maybe", "unknown option"),
    ],
)
def test_bad_rules(line, message):
    with pytest.raises(ValueError, match=message):
        parse_rule(line)


def test_file_line_numbers(tmp_path):
    path = tmp_path / "acl"
    path.write_text("# rules\n\nallow all publish a/#\n  # indented comment\nallow all nope x\n")
    with pytest.raises(SecurityFileError) as info:
        load_acl_file(str(path))
    assert info.value.line == 5 and f"{path}:5:" in str(info.value)
    path.write_bytes(b"allow all publish \xff\n")
    with pytest.raises(SecurityFileError, match="UTF-8"):
        load_acl_file(str(path))
    with pytest.raises(SecurityFileError, match="cannot read"):
        load_acl_file(str(tmp_path / "missing"))


# --- the filter relations against a brute-force oracle over a small topic universe

_LEVELS = ["a", "b", "$s"]
_UNIVERSE = [
    "/".join(t)
    for n in (1, 2, 3)
    for t in itertools.product(_LEVELS, repeat=n)
    if all(not x.startswith("$") for x in t[1:])
]


def _regex(topic_filter):
    parts = []
    for i, level in enumerate(topic_filter.split("/")):
        sep = "/" if i else ""
        if level == "#":
            return re.compile("^" + "".join(parts) + ("(/.*)?$" if i else ".*$"))
        parts.append(sep + ("[^/]*" if level == "+" else re.escape(level)))
    return re.compile("^" + "".join(parts) + "$")


def _matches(topic_filter, topic):
    if topic.startswith("$") and topic_filter[0] in "+#":
        return False
    return bool(_regex(topic_filter).match(topic))


_filters = st.lists(st.sampled_from(["a", "b", "$s", "+"]), min_size=1, max_size=3).flatmap(
    lambda levels: st.sampled_from(["/".join(levels), "/".join([*levels[:-1], "#"])])
)


@given(_filters, _filters)
def test_covers_and_overlap_against_oracle(rule, sub):
    rule_set = {t for t in _UNIVERSE if _matches(rule, t)}
    sub_set = {t for t in _UNIVERSE if _matches(sub, t)}
    r, s = rule.split("/"), sub.split("/")
    if _covers(r, s):
        assert sub_set <= rule_set, (rule, sub)
    if not _overlap(r, s):
        assert not (sub_set & rule_set), (rule, sub)
