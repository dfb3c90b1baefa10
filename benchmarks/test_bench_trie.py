"""Micro benchmarks of the topic trie at a million entries, pure Python beside compiled.

Each group holds one operation measured on both twins ([py] and [c]), so pytest-benchmark
prints them side by side. The million-entry structures are built once per backend (module
scope); the build time is recorded in each benchmark's extra_info. Run:
``python -m pytest benchmarks/test_bench_trie.py -p no:cacheprovider``.
"""

from __future__ import annotations

import time
from types import ModuleType

import pytest

import robustmq._core.topic_trie as py_trie

try:
    import robustmq._core._topic_trie as c_trie
except ImportError:
    c_trie = None

SIZE = 1_000_000
OPTIONS = {"qos": 1}


@pytest.fixture(scope="module", params=["py", "c"], ids=["py", "c"])
def backend(request: pytest.FixtureRequest) -> ModuleType:
    if request.param == "c":
        if c_trie is None:
            pytest.skip("compiled robustmq._core._topic_trie is not built")
        return c_trie
    return py_trie


@pytest.fixture(scope="module")
def subscriptions(backend: ModuleType) -> tuple[object, float]:
    """A million subscriptions, a third each of three shapes a fleet broker sees:
    per-device wildcard filters, per-site '#' filters shared by ~333 subscribers each,
    and literal four-level filters; plus two fleet-wide filters.
    """
    started = time.perf_counter()
    trie = backend.SubscriptionTrie()
    for i in range(SIZE):
        kind = i % 3
        if kind == 0:
            trie.add(f"device/{i}/+/temp", i, OPTIONS)
        elif kind == 1:
            trie.add(f"site/{i % 1000}/#", i, OPTIONS)
        else:
            trie.add(f"a/b/{i}/c", i, OPTIONS)
    trie.add("device/+/+/temp", "all-temperatures", OPTIONS)
    trie.add("device/42/#", "device-42", OPTIONS)
    assert len(trie) == SIZE + 2
    return trie, time.perf_counter() - started


@pytest.fixture(scope="module")
def retained(backend: ModuleType) -> tuple[object, float]:
    """A million retained topics: 10,000 devices with 100 sensors each."""
    started = time.perf_counter()
    tree = backend.TopicTree()
    for i in range(SIZE):
        tree.set(f"dev/{i // 100}/{i % 100}/temp", i)
    assert len(tree) == SIZE
    return tree, time.perf_counter() - started


@pytest.mark.parametrize(
    ("topic", "normal", "shared"),
    [
        pytest.param("device/42/x/temp", 3, 0, id="3-hits"),
        pytest.param("a/b/500/c", 1, 0, id="literal-1-hit"),
        pytest.param("site/7/floor/2/temp", 334, 0, id="fanout-334"),
        pytest.param("nothing/matches/this/topic", 0, 0, id="miss"),
    ],
)
def test_subscription_match(benchmark, subscriptions, topic, normal, shared) -> None:
    trie, build_s = subscriptions
    benchmark.group = f"SubscriptionTrie.match, 1M subscriptions: {topic}"
    benchmark.extra_info["build_s"] = round(build_s, 2)
    found = benchmark(trie.match, topic)
    assert (len(found[0]), len(found[1])) == (normal, shared)


@pytest.mark.parametrize(
    ("topic_filter", "count"),
    [
        pytest.param("dev/4242/42/temp", 1, id="literal"),
        pytest.param("dev/4242/+/temp", 100, id="plus-100"),
        pytest.param("dev/4242/#", 100, id="hash-100"),
    ],
)
def test_retained_match(benchmark, retained, topic_filter, count) -> None:
    tree, build_s = retained
    benchmark.group = f"TopicTree.match, 1M retained: {topic_filter}"
    benchmark.extra_info["build_s"] = round(build_s, 2)
    assert len(benchmark(tree.match, topic_filter)) == count


def test_validate_topic_name(benchmark, backend) -> None:
    benchmark.group = "validate_topic_name: device/42/sensors/temp"
    benchmark(backend.validate_topic_name, "device/42/sensors/temp")


def test_validate_topic_filter(benchmark, backend) -> None:
    benchmark.group = "validate_topic_filter: $share/g/device/+/sensors/#"
    benchmark(backend.validate_topic_filter, "$share/g/device/+/sensors/#")
