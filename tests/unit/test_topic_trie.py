"""Tests of the topic trie, run against both twins (robustmq._core.topic_trie and the compiled
robustmq._core._topic_trie): the MQTT 5.0 §4.7 examples in both match directions, the
validation tables with their reason codes, and hypothesis properties against a regex oracle
written here, against dict models, and between the two twins.
"""

from __future__ import annotations

import re
import threading
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import robustmq._core.topic_trie as py_trie
from robustmq.errors import MqttError

try:
    import robustmq._core._topic_trie as c_trie
except ImportError:
    c_trie = None

NOT_BUILT = (
    "compiled robustmq._core._topic_trie is not built "
    "(cythonize -3 -i robustmq/_core/_topic_trie.pyx, or pip install -e .)"
)
NAME = 0x90
FILTER = 0x8F

# The fixture is a module, not per-test state, so hypothesis may reuse it across examples.
PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(params=["py", "c"], ids=["py", "c"])
def tt(request: pytest.FixtureRequest) -> ModuleType:
    if request.param == "c":
        if c_trie is None:
            pytest.skip(NOT_BUILT)
        return c_trie
    return py_trie


need_c = pytest.mark.skipif(c_trie is None, reason=NOT_BUILT)


def test_compiled_twin_is_compiled() -> None:
    if c_trie is None:
        pytest.skip(NOT_BUILT)
    assert not c_trie.__file__.endswith(".py")
    public = {"validate_topic_name", "validate_topic_filter", "parse_shared"}
    public |= {"SubscriptionTrie", "TopicTree", "SHARE_PREFIX"}
    assert set(py_trie.__all__) == set(c_trie.__all__) == public


# --- the oracle --------------------------------------------------------------------------


def oracle_regex(topic_filter: str) -> re.Pattern[str]:
    """The filter as a regular expression over whole topic names (MQTT 5.0 §4.7.1)."""
    levels = topic_filter.split("/")
    parts = ["[^/]*" if level == "+" else re.escape(level) for level in levels]
    if levels[-1] == "#":
        if len(levels) == 1:
            return re.compile(".*", re.DOTALL)
        return re.compile("/".join(parts[:-1]) + "(/.*)?", re.DOTALL)
    return re.compile("/".join(parts), re.DOTALL)


def oracle_matches(topic_filter: str, topic: str) -> bool:
    # §4.7.2: a filter starting with a wildcard does not match topics starting with '$'.
    if topic.startswith("$") and topic_filter.split("/")[0] in ("+", "#"):
        return False
    return oracle_regex(topic_filter).fullmatch(topic) is not None


def match_sets(trie: object, topic: str) -> tuple[list, dict]:
    normal, shared = trie.match(topic)  # type: ignore[attr-defined]
    groups = {}
    for group, inner, members in shared:
        assert (group, inner) not in groups
        groups[(group, inner)] = dict(members)
    return sorted(normal, key=repr), groups


# --- the spec examples -------------------------------------------------------------------

# (filter, topic, matches), from MQTT 5.0 §4.7.1.2, §4.7.1.3, §4.7.2 and §4.7.3, plus the
# edges the spec implies (empty levels, '#' matching its parent level).
SPEC = [
    ("sport/tennis/player1/#", "sport/tennis/player1", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True),
    ("sport/tennis/player1/#", "sport/tennis/player2", False),
    ("sport/#", "sport", True),
    ("sport/#", "sport/", True),
    ("sport/#", "sports", False),
    ("#", "sport/tennis", True),
    ("#", "/", True),
    ("sport/tennis/+", "sport/tennis/player1", True),
    ("sport/tennis/+", "sport/tennis/player2", True),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False),
    ("sport/+", "sport", False),
    ("sport/+", "sport/", True),
    ("+/+", "/finance", True),
    ("/+", "/finance", True),
    ("+", "/finance", False),
    ("+", "finance", True),
    ("+/tennis/#", "sport/tennis/player1", True),
    ("+/tennis/#", "sport/tennis", True),
    ("a/+/b", "a//b", True),
    ("a//b", "a//b", True),
    ("a//b", "a/b", False),
    ("+/+/+", "//", True),
    ("/", "/", True),
    ("#", "$SYS", False),
    ("#", "$SYS/monitor/Clients", False),
    ("+/monitor/Clients", "$SYS/monitor/Clients", False),
    ("+", "$SYS", False),
    ("$SYS/#", "$SYS/monitor/Clients", True),
    ("$SYS/#", "$SYS", True),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", True),
    ("$SYS/+/Clients", "$SYS/monitor/Clients", True),
    ("a/$x/+", "a/$x/b", True),
    ("+/$x", "a/$x", True),
    ("ACCOUNTS", "Accounts", False),
    ("Accounts payable", "Accounts payable", True),
    ("/finance", "finance", False),
    ("finance", "/finance", False),
]


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), SPEC)
def test_spec_examples_subscription_trie(tt, topic_filter, topic, expected) -> None:
    assert oracle_matches(topic_filter, topic) is expected
    trie = tt.SubscriptionTrie()
    trie.add(topic_filter, "client", 1)
    normal, shared = trie.match(topic)
    assert normal == ([("client", 1)] if expected else [])
    assert shared == []


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), SPEC)
def test_spec_examples_topic_tree(tt, topic_filter, topic, expected) -> None:
    tree = tt.TopicTree()
    tree.set(topic, "retained")
    assert tree.match(topic_filter) == ([(topic, "retained")] if expected else [])


def test_all_spec_filters_at_once(tt) -> None:
    trie = tt.SubscriptionTrie()
    for number, (topic_filter, _, _) in enumerate(SPEC):
        trie.add(topic_filter, number, topic_filter)
    for _, topic, _ in SPEC:
        expected = sorted((n, f) for n, (f, _, _) in enumerate(SPEC) if oracle_matches(f, topic))
        assert sorted(trie.match(topic)[0]) == expected, topic


# --- SubscriptionTrie --------------------------------------------------------------------


def test_add_replace_remove_len_generation(tt) -> None:
    trie = tt.SubscriptionTrie()
    assert len(trie) == 0 and trie.generation == 0
    assert trie.add("a/+", "c1", {"qos": 1}) is True
    assert trie.add("a/+", "c2", {"qos": 0}) is True
    assert trie.add("a/#", "c1", {"qos": 2}) is True
    assert len(trie) == 3 and trie.generation == 3
    assert trie.add("a/+", "c1", {"qos": 0}) is False  # replaces the options
    assert len(trie) == 3 and trie.generation == 4
    assert sorted(trie.match("a/b")[0], key=repr) == sorted(
        [("c1", {"qos": 0}), ("c2", {"qos": 0}), ("c1", {"qos": 2})], key=repr
    )
    assert trie.remove("a/+", "c3") is False
    assert trie.remove("a/b", "c1") is False
    assert trie.remove("b/+", "c1") is False
    assert trie.remove("$share/g/a/+", "c1") is False
    assert trie.generation == 4  # failed removes change nothing
    assert trie.remove("a/+", "c1") is True
    assert len(trie) == 2 and trie.generation == 5
    assert sorted(trie.match("a/b")[0], key=repr) == [("c1", {"qos": 2}), ("c2", {"qos": 0})]
    with pytest.raises(AttributeError):
        trie.generation = 0


def test_a_subscriber_matching_twice_appears_twice(tt) -> None:
    trie = tt.SubscriptionTrie()
    trie.add("a/b", "c", 1)
    trie.add("a/+", "c", 2)
    trie.add("#", "c", 3)
    assert sorted(trie.match("a/b")[0]) == [("c", 1), ("c", 2), ("c", 3)]


def test_remove_prunes_empty_nodes(tt) -> None:
    trie = tt.SubscriptionTrie()
    assert trie._node_count() == 1
    trie.add("a/b/c/d", "x", 1)
    trie.add("a/+/#", "x", 1)
    trie.add("$share/g/a/b/c", "y", 1)
    assert trie._node_count() == 7  # root, a, b, c, d, +, #
    trie.remove("a/b/c/d", "x")
    assert trie._node_count() == 6  # d pruned; c still holds the shared group
    trie.remove("$share/g/a/b/c", "y")
    assert trie._node_count() == 4  # root, a, +, #
    trie.remove("a/+/#", "x")
    assert trie._node_count() == 1 and len(trie) == 0
    assert list(trie.subscriptions()) == []
    trie.add("a/b", "x", 1)
    trie.add("a", "x", 1)
    trie.remove("a/b", "x")
    assert trie._node_count() == 2  # 'a' keeps its subscriber
    assert trie.match("a")[0] == [("x", 1)]


def test_shared_groups_are_not_expanded(tt) -> None:
    trie = tt.SubscriptionTrie()
    for member in ("m1", "m2", "m3"):
        trie.add("$share/g/sensors/+", member, member.upper())
    trie.add("$share/h/sensors/+", "m1", "h")
    trie.add("$share/g/sensors/#", "m4", "M4")
    trie.add("sensors/+", "plain", "P")
    normal, shared = trie.match("sensors/t1")
    assert normal == [("plain", "P")]
    assert sorted((g, f, dict(m)) for g, f, m in shared) == [
        ("g", "sensors/#", {"m4": "M4"}),
        ("g", "sensors/+", {"m1": "M1", "m2": "M2", "m3": "M3"}),
        ("h", "sensors/+", {"m1": "h"}),
    ]
    assert len(trie) == 6
    # The members dict is the trie's own (documented): no copy per match.
    first = {(g, f): m for g, f, m in trie.match("sensors/t1")[1]}
    again = {(g, f): m for g, f, m in trie.match("sensors/t2")[1]}
    assert first[("g", "sensors/+")] is again[("g", "sensors/+")]
    assert trie.remove("$share/g/sensors/+", "m2") is True
    assert trie.remove("$share/g/sensors/+", "m2") is False
    assert trie.remove("$share/x/sensors/+", "m1") is False
    _, groups = match_sets(trie, "sensors/t1")
    assert groups[("g", "sensors/+")] == {"m1": "M1", "m3": "M3"}


def test_shared_dollar_rule(tt) -> None:
    trie = tt.SubscriptionTrie()
    trie.add("$share/g/#", "m", 1)
    trie.add("$share/g/$SYS/#", "m", 2)
    assert trie.match("$SYS/x")[1] == [("g", "$SYS/#", {"m": 2})]
    assert trie.match("x")[1] == [("g", "#", {"m": 1})]


def test_subscriptions_listing(tt) -> None:
    trie = tt.SubscriptionTrie()
    entries = [
        ("a/b", "c1", 1),
        ("a/+", "c1", 2),
        ("#", "c2", 3),
        ("$share/g/a/#", "c3", 4),
        ("$share/g/a/#", "c4", 5),
        ("$share/h/+", "c3", 6),
        ("", "c5", 7),
        ("$SYS/+", "c6", 8),
    ]
    for entry in entries:
        trie.add(*entry)
    assert sorted(trie.subscriptions(), key=repr) == sorted(entries, key=repr)
    # Changing the trie while listing it does not break the iteration.
    seen = 0
    for topic_filter, subscriber, _ in trie.subscriptions():
        trie.remove(topic_filter, subscriber)
        seen += 1
    assert seen == len(entries) and len(trie) == 0 and trie._node_count() == 1
    # Emptying a node while it is being listed still lists its snapshot with its filter.
    for subscriber in ("s1", "s2", "s3"):
        trie.add("a/b", subscriber, 0)
    listed = []
    for topic_filter, subscriber, _ in trie.subscriptions():
        listed.append((topic_filter, subscriber))
        for other in ("s1", "s2", "s3"):
            trie.remove("a/b", other)
    assert sorted(listed) == [("a/b", "s1"), ("a/b", "s2"), ("a/b", "s3")]


def test_unhashable_subscriber_is_rejected(tt) -> None:
    trie = tt.SubscriptionTrie()
    with pytest.raises(TypeError):
        trie.add("a", ["not", "hashable"], 1)


def test_deep_filters_do_not_recurse(tt) -> None:
    # The longest filter a client can send has 32768 '+' levels. Matching, listing and
    # freeing must not recurse per level: run it all on a small thread stack.
    deep = "/".join(["+"] * 32768)
    topic = "/" * 32767
    results: list[object] = []

    def work() -> None:
        trie = tt.SubscriptionTrie()
        trie.add(deep, "c", 1)
        trie.add(deep + "/#", "d", 1)
        results.append(sorted(trie.match(topic)[0]))
        results.append(len(list(trie.subscriptions())))
        tree = tt.TopicTree()
        tree.set(topic, 1)
        tree.set(topic + "/x", 2)
        results.append(tree.match(deep))
        results.append(sorted(tree.match("#")))
        del trie, tree
        results.append("freed")

    old_size = threading.stack_size(512 * 1024)
    try:
        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
    finally:
        threading.stack_size(old_size)
    assert results == [
        [("c", 1), ("d", 1)],
        2,
        [(topic, 1)],
        [(topic, 1), (topic + "/x", 2)],
        "freed",
    ]


# --- TopicTree ---------------------------------------------------------------------------


def test_topic_tree_set_get_delete(tt) -> None:
    tree = tt.TopicTree()
    assert tree.set("a/b", 1) is True
    assert tree.set("a/b", 2) is False
    assert tree.set("a", None) is True
    assert len(tree) == 2
    assert tree.get("a/b") == 2
    assert tree.get("a", "missing") is None  # a stored None is a value
    assert tree.get("a/b/c", "missing") == "missing"
    assert tree.get("b") is None
    assert sorted(tree, key=repr) == [("a", None), ("a/b", 2)]
    assert tree.delete("a/b/c") is False
    assert tree.delete("x") is False
    assert tree.delete("a") is True
    assert tree.delete("a") is False
    assert tree.get("a", "missing") == "missing"
    assert tree.match("a/#") == [("a/b", 2)]
    assert tree._node_count() == 3
    assert tree.delete("a/b") is True
    assert len(tree) == 0 and tree._node_count() == 1 and list(tree) == []


def test_topic_tree_wildcards(tt) -> None:
    tree = tt.TopicTree()
    topics = ["a", "a/", "a/b", "a/b/c", "a//c", "/", "/x", "$SYS/x", "$SYS", "b/$x", "$a/b"]
    for number, topic in enumerate(topics):
        tree.set(topic, number)

    def names(topic_filter: str) -> list[str]:
        return sorted(topic for topic, _ in tree.match(topic_filter))

    assert names("#") == sorted(t for t in topics if not t.startswith("$"))
    assert names("a/#") == ["a", "a/", "a//c", "a/b", "a/b/c"]
    assert names("a/+") == ["a/", "a/b"]
    assert names("a/+/c") == ["a//c", "a/b/c"]
    assert names("+") == ["a"]
    assert names("+/+") == ["/", "/x", "a/", "a/b", "b/$x"]
    assert names("+/#") == sorted(t for t in topics if not t.startswith("$"))
    assert names("$SYS/#") == ["$SYS", "$SYS/x"]
    assert names("$SYS/+") == ["$SYS/x"]
    assert names("+/$x") == ["b/$x"]
    assert names("a/b/c/d") == []
    assert names("a/b/c/#") == ["a/b/c"]
    assert names("zzz/#") == []


# --- validation --------------------------------------------------------------------------

VALID_NAMES = [
    "a",
    "/",
    "//",
    "a/b/c",
    "sport/tennis/player1",
    "$SYS/monitor/Clients",
    "Accounts payable",
    " ",
    "ü/中文/🙂",
    "a\x01b",  # control characters are discouraged (§1.5.4) but not forbidden
    "a" * 65535,
    "é" * 32767 + "a",  # 65535 bytes
    "$share/g/a",  # a topic name may look like a shared filter
]

INVALID_NAMES = [
    ("", "empty"),
    ("+", "wildcard '+' at character 0"),
    ("#", "wildcard '#' at character 0"),
    ("a/+", "wildcard '+' at character 2"),
    ("a/#", "wildcard '#'"),
    ("a+b", "wildcard '+'"),
    ("sport/tennis#", "wildcard '#' at character 12"),
    ("a\x00b", "U+0000 at character 1"),
    ("ab\ud800", "surrogate U+D800 at character 2"),
    ("a" * 65536, "65536 UTF-8 bytes"),
    ("é" * 32768, "65536 UTF-8 bytes"),
    ("🙂" * 16384, "65536 UTF-8 bytes"),
]


@pytest.mark.parametrize("topic", VALID_NAMES, ids=repr)
def test_valid_topic_names(tt, topic) -> None:
    tt.validate_topic_name(topic)


@pytest.mark.parametrize(("topic", "why"), INVALID_NAMES, ids=lambda v: repr(v)[:30])
def test_invalid_topic_names(tt, topic, why) -> None:
    with pytest.raises(MqttError) as info:
        tt.validate_topic_name(topic)
    assert info.value.reason_code == NAME
    assert "topic name" in info.value.message and why in info.value.message


def test_topic_name_max_levels(tt) -> None:
    tt.validate_topic_name("a/b/c", max_levels=3)
    tt.validate_topic_name("a/b/c", max_levels=0)
    with pytest.raises(MqttError) as info:
        tt.validate_topic_name("a//", max_levels=2)
    assert info.value.reason_code == NAME
    assert "3 levels, more than the limit of 2" in info.value.message


VALID_FILTERS = [
    "#",
    "+",
    "a",
    "/",
    "a/#",
    "a/+/b",
    "+/+",
    "/+",
    "+/",
    "+/#",
    "sport/tennis/player1/#",
    "$SYS/#",
    "a//#",
    "$share/g/a/+",
    "$share/g/#",
    "$share/g/$SYS/+",
    "$share/group-1/a//b",
    "$share",  # no '/' after it: an ordinary one-level filter
    "$sharex/a",
    "$SHARE/+/x",  # the prefix is case-sensitive, so this is not shared
    "a" * 65535,
]

INVALID_FILTERS = [
    ("", "topic filter is empty"),
    ("a#", "level 1 ('a#') mixes a wildcard"),
    ("a/b#", "level 2 ('b#') mixes a wildcard"),
    ("a+/b", "level 1 ('a+') mixes a wildcard"),
    ("++", "mixes a wildcard"),
    ("+#", "mixes a wildcard"),
    ("#+", "mixes a wildcard"),
    ("a/#/b", "'#' at level 2, but '#' must be the last level"),
    ("#/", "'#' at level 1"),
    ("#/#", "'#' at level 1"),
    ("a\x00", "U+0000 at character 1"),
    ("\udfff/#", "surrogate U+DFFF at character 0"),
    ("a" * 65536, "65536 UTF-8 bytes"),
    ("$share/", "empty group name"),
    ("$share//a", "empty group name"),
    ("$share/g", "group 'g' has no topic filter"),
    ("$share/g/", "group 'g' has no topic filter"),
    ("$share/g+/a", "group 'g+' contains wildcard '+'"),
    ("$share/#/a", "group '#' contains wildcard '#'"),
    ("$share/g/a#", "level 1 ('a#') mixes a wildcard"),
    ("$share/g/#/a", "'#' at level 1"),
]


@pytest.mark.parametrize("topic_filter", VALID_FILTERS, ids=repr)
def test_valid_topic_filters(tt, topic_filter) -> None:
    tt.validate_topic_filter(topic_filter)


@pytest.mark.parametrize(("topic_filter", "why"), INVALID_FILTERS, ids=lambda v: repr(v)[:30])
def test_invalid_topic_filters(tt, topic_filter, why) -> None:
    with pytest.raises(MqttError) as info:
        tt.validate_topic_filter(topic_filter)
    assert info.value.reason_code == FILTER
    assert why in info.value.message


def test_topic_filter_max_levels(tt) -> None:
    tt.validate_topic_filter("a/+/#", max_levels=3)
    tt.validate_topic_filter("$share/g/a/+/#", max_levels=3)  # the group is not a level
    with pytest.raises(MqttError) as info:
        tt.validate_topic_filter("a/+/#", max_levels=2)
    assert info.value.reason_code == FILTER
    assert "3 levels, more than the limit of 2" in info.value.message
    with pytest.raises(MqttError):
        tt.validate_topic_filter("$share/g/a/b/c", max_levels=2)


@pytest.mark.parametrize(
    ("topic_filter", "expected"),
    [
        ("$share/g/a/+", ("g", "a/+")),
        ("$share/g/#", ("g", "#")),
        ("$share/g//", ("g", "/")),
        ("$share/g", ("g", "")),
        ("$share/", ("", "")),
        ("$share", None),
        ("$SHARE/g/a", None),
        ("a/$share/g/b", None),
        ("#", None),
    ],
)
def test_parse_shared(tt, topic_filter, expected) -> None:
    assert tt.parse_shared(topic_filter) == expected


# --- properties against the oracle -------------------------------------------------------

TOPIC_LEVEL = st.sampled_from(["", "a", "b", "$x", "$SYS"])
FILTER_LEVEL = st.sampled_from(["", "a", "b", "$x", "+"])


@st.composite
def topics(draw: st.DrawFn) -> str:
    levels = draw(st.lists(TOPIC_LEVEL, min_size=1, max_size=4))
    return "/".join(levels) or "/"  # one empty level would be the empty, invalid, name


@st.composite
def plain_filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(FILTER_LEVEL, min_size=0, max_size=4))
    if levels in ([], [""]) or draw(st.booleans()):
        levels.append("#")
    return "/".join(levels)


@st.composite
def filters(draw: st.DrawFn) -> str:
    inner = draw(plain_filters())
    group = draw(st.sampled_from([None, None, "g", "h"]))
    return inner if group is None else f"$share/{group}/{inner}"


@PROPERTY
@given(st.lists(plain_filters(), max_size=12), st.lists(topics(), min_size=1, max_size=8))
def test_property_generated_inputs_are_valid(tt, filter_list, topic_list) -> None:
    for topic_filter in filter_list:
        tt.validate_topic_filter(topic_filter)
        tt.validate_topic_filter(f"$share/g/{topic_filter}")
    for topic in topic_list:
        tt.validate_topic_name(topic)


@PROPERTY
@given(
    st.lists(st.tuples(filters(), st.integers(0, 5)), max_size=25),
    st.lists(topics(), min_size=1, max_size=8),
)
def test_property_subscription_match_vs_oracle(tt, entries, topic_list) -> None:
    trie = tt.SubscriptionTrie()
    model: dict[tuple[str, int], str] = {}
    for topic_filter, subscriber in entries:
        options = f"{topic_filter}|{subscriber}"
        trie.add(topic_filter, subscriber, options)
        model[(topic_filter, subscriber)] = options
    for topic in topic_list:
        expected_normal = []
        expected_groups: dict[tuple[str, str], dict[int, str]] = {}
        for (topic_filter, subscriber), options in model.items():
            shared = py_trie.parse_shared(topic_filter)
            inner = topic_filter if shared is None else shared[1]
            if not oracle_matches(inner, topic):
                continue
            if shared is None:
                expected_normal.append((subscriber, options))
            else:
                expected_groups.setdefault(shared, {})[subscriber] = options
        normal, groups = match_sets(trie, topic)
        assert normal == sorted(expected_normal, key=repr), topic
        assert groups == expected_groups, topic


@PROPERTY
@given(st.lists(topics(), max_size=25), st.lists(plain_filters(), min_size=1, max_size=8))
def test_property_topic_tree_match_vs_oracle(tt, topic_list, filter_list) -> None:
    tree = tt.TopicTree()
    for number, topic in enumerate(topic_list):
        tree.set(topic, number)
    stored = {topic: number for number, topic in enumerate(topic_list)}
    for topic_filter in filter_list:
        found = tree.match(topic_filter)
        assert len(found) == len(set(found))
        expected = {(t, n) for t, n in stored.items() if oracle_matches(topic_filter, t)}
        assert set(found) == expected, topic_filter


OPS = st.lists(
    st.tuples(st.booleans(), filters(), st.integers(0, 3), st.integers(0, 9)), max_size=40
)


@PROPERTY
@given(OPS, st.lists(topics(), max_size=4))
def test_property_add_remove_vs_dict_model(tt, ops, topic_list) -> None:
    trie = tt.SubscriptionTrie()
    model: dict[tuple[str, int], int] = {}
    for is_add, topic_filter, subscriber, options in ops:
        before = trie.generation
        key = (topic_filter, subscriber)
        if is_add:
            assert trie.add(topic_filter, subscriber, options) is (key not in model)
            model[key] = options
            assert trie.generation == before + 1
        else:
            present = key in model
            assert trie.remove(topic_filter, subscriber) is present
            model.pop(key, None)
            assert trie.generation == before + present
        assert len(trie) == len(model)
    assert sorted(trie.subscriptions()) == sorted((f, s, o) for (f, s), o in model.items())
    for topic in topic_list:
        normal, groups = match_sets(trie, topic)
        assert len(normal) + sum(map(len, groups.values())) <= len(model)
    for topic_filter, subscriber in list(model):
        assert trie.remove(topic_filter, subscriber) is True
    assert len(trie) == 0 and trie._node_count() == 1


@PROPERTY
@given(st.lists(st.tuples(st.booleans(), topics(), st.integers(0, 9)), max_size=40))
def test_property_topic_tree_vs_dict_model(tt, ops) -> None:
    tree = tt.TopicTree()
    model: dict[str, int] = {}
    for is_set, topic, value in ops:
        if is_set:
            assert tree.set(topic, value) is (topic not in model)
            model[topic] = value
        else:
            assert tree.delete(topic) is (topic in model)
            model.pop(topic, None)
        assert len(tree) == len(model)
        assert tree.get(topic, "missing") == model.get(topic, "missing")
    assert sorted(tree) == sorted(model.items())
    for topic in list(model):
        assert tree.delete(topic) is True
    assert len(tree) == 0 and tree._node_count() == 1


@need_c
@settings(max_examples=150, deadline=None)
@given(OPS, st.lists(topics(), max_size=6), st.lists(plain_filters(), max_size=6))
def test_property_twins_agree(ops, topic_list, filter_list) -> None:
    tries = [py_trie.SubscriptionTrie(), c_trie.SubscriptionTrie()]
    trees = [py_trie.TopicTree(), c_trie.TopicTree()]
    for is_add, topic_filter, subscriber, options in ops:
        shared = py_trie.parse_shared(topic_filter)
        inner = topic_filter if shared is None else shared[1]
        topic = inner.replace("+", "p").replace("#", "h")
        if is_add:
            results = [t.add(topic_filter, subscriber, options) for t in tries]
            results += [t.set(topic, options) for t in trees]
        else:
            results = [t.remove(topic_filter, subscriber) for t in tries]
            results += [t.delete(topic) for t in trees]
        assert results[0] == results[1] and results[2] == results[3]
    assert [t.generation for t in tries] == [tries[0].generation] * 2
    assert list(tries[0].subscriptions()) == list(tries[1].subscriptions())
    assert list(trees[0]) == list(trees[1])
    for topic in topic_list:
        assert tries[0].match(topic) == tries[1].match(topic)
    for topic_filter in filter_list:
        assert trees[0].match(topic_filter) == trees[1].match(topic_filter)


# --- fuzzing the validators --------------------------------------------------------------

ANY_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from("/+#$\x00a "),
        st.characters(),
        st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    ),
    max_size=30,
) | st.builds(lambda s: "$share/" + s, st.text(alphabet="/+#ga\x00", max_size=12))


def outcome(function, *args) -> tuple[int, str] | None:
    try:
        function(*args)
    except MqttError as exc:
        return exc.reason_code, exc.message
    return None


@PROPERTY
@given(ANY_TEXT, st.integers(0, 4))
def test_fuzz_validators_raise_only_mqtt_error(tt, text, max_levels) -> None:
    name = outcome(tt.validate_topic_name, text, max_levels)
    assert name is None or name[0] == NAME
    flt = outcome(tt.validate_topic_filter, text, max_levels)
    assert flt is None or flt[0] == FILTER
    shared = tt.parse_shared(text)
    if shared is not None:
        group, inner = shared
        assert text in (f"$share/{group}/{inner}", f"$share/{group}") and "/" not in group
    if name is None:
        assert not set("+#\x00") & set(text)
        if shared is None:
            assert flt is None  # a valid name is a valid filter
    if flt is None and shared is not None:
        assert outcome(tt.validate_topic_filter, shared[1]) is None


@need_c
@settings(max_examples=300, deadline=None)
@given(ANY_TEXT, st.integers(0, 4))
def test_fuzz_twins_give_the_same_verdict(text, max_levels) -> None:
    for function in ("validate_topic_name", "validate_topic_filter"):
        assert outcome(getattr(py_trie, function), text, max_levels) == outcome(
            getattr(c_trie, function), text, max_levels
        )
    assert py_trie.parse_shared(text) == c_trie.parse_shared(text)
