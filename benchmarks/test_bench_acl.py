"""Micro benchmarks of PUBLISH authorization: what the PUBLISH handler pays per message.

Three cases: no rule can apply (the authorizer is None and the handler makes no call: the
cost is one attribute test), 100 rules with a cached decision (the per-connection cache
hit, the steady state of a publisher), and 100 rules with the cache cleared before every
call (the first PUBLISH to a topic). Run:
``python -m pytest benchmarks/test_bench_acl.py -p no:cacheprovider``.
"""

from __future__ import annotations

from collections import Counter

from robustmq.broker.auth.acl import Acl, parse_rule


def _rules(n: int) -> Acl:
    lines = [f"allow user:other-{i} publish fleet/{i}/+/telemetry" for i in range(n - 2)]
    lines += ["deny all publish secret/#", "allow user:alice publish devices/%u/#"]
    return Acl([parse_rule(line) for line in lines], False, Counter())


def test_publish_no_rules(benchmark):
    authorizer = Acl([], True, Counter()).authorizer_for("c1", "alice", "10.0.0.1")
    assert authorizer is None

    def check() -> bool:
        return authorizer is None or authorizer.publish_allowed("devices/alice/t", 1, False)

    assert benchmark(check)


def test_publish_100_rules_cache_hit(benchmark):
    authorizer = _rules(100).authorizer_for("c1", "alice", "10.0.0.1")
    assert authorizer is not None
    authorizer.publish_allowed("devices/alice/t", 1, False)
    assert benchmark(authorizer.publish_allowed, "devices/alice/t", 1, False)


def test_publish_100_rules_cache_miss(benchmark):
    # 100 rules in the file; the 98 for other users are dropped at CONNECT, so the miss
    # costs the match over this client's own rules.
    authorizer = _rules(100).authorizer_for("c1", "alice", "10.0.0.1")
    assert authorizer is not None

    def miss() -> bool:
        authorizer._cache.clear()
        return authorizer.publish_allowed("devices/alice/t", 1, False)

    assert benchmark(miss)


def test_publish_100_rules_all_apply_cache_miss(benchmark):
    # The worst case: 100 rules that all concern this client, the match at the last one.
    lines = [f"deny all publish fleet/{i}/+/x" for i in range(99)] + ["allow all publish #"]
    acl = Acl([parse_rule(line) for line in lines], False, Counter())
    authorizer = acl.authorizer_for("c1", "alice", "10.0.0.1")
    assert authorizer is not None

    def miss() -> bool:
        authorizer._cache.clear()
        return authorizer.publish_allowed("devices/alice/t", 1, False)

    assert benchmark(miss)
