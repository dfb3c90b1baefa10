"""MQTT topic names, topic filters and the two tries that match one against the other.

This is the readable reference; ``_topic_trie.pyx`` is its compiled twin with the same
names and behaviour. ``validate_topic_name``/``validate_topic_filter`` apply MQTT 5.0 §4.7
and §4.8.2 and raise ``MqttError`` with reason code 0x90 (topic name invalid) or 0x8F (topic
filter invalid). ``SubscriptionTrie`` is the subscription index: topic filters stored, a
published topic name looked up. ``TopicTree`` is the retained-message index: topic names
stored, a subscribed filter looked up. Both split on ``/`` once and walk one level at a time,
so a look-up costs what it matches, not what is stored. Neither validates its input (callers
validate once, at SUBSCRIBE or PUBLISH), neither is thread-safe, and neither knows about
sessions, ACLs or delivery: they map strings to opaque values.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterator

from robustmq.errors import MqttError

__all__ = [
    "SHARE_PREFIX",
    "SubscriptionTrie",
    "TopicTree",
    "parse_shared",
    "validate_topic_filter",
    "validate_topic_name",
]

TOPIC_NAME_INVALID = 0x90
TOPIC_FILTER_INVALID = 0x8F
# MQTT 5.0 §1.5.4: a UTF-8 Encoded String is at most 65535 bytes.
MAX_TOPIC_BYTES = 65535
# MQTT 5.0 §4.8.2 shared subscription: $share/{ShareName}/{filter}.
SHARE_PREFIX = "$share/"

# U+0000 is forbidden in every UTF-8 string (§1.5.4); surrogates cannot be encoded as UTF-8.
_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")
_BAD_NAME_CHAR = re.compile("[\x00+#\ud800-\udfff]")


def _bad_char_message(what: str, topic: str, index: int) -> str:
    ch = topic[index]
    if ch == "\x00":
        return f"{what} contains U+0000 at character {index}"
    if ch in "+#":
        return f"{what} contains wildcard {ch!r} at character {index}"
    return f"{what} contains surrogate U+{ord(ch):04X} at character {index}, which is not UTF-8"


def _check_utf8_length(what: str, topic: str, reason: int) -> None:
    # A character takes at most 4 bytes, so only long strings need encoding to be measured.
    if len(topic) * 4 > MAX_TOPIC_BYTES:
        size = len(topic.encode("utf-8"))
        if size > MAX_TOPIC_BYTES:
            raise MqttError(reason, f"{what} is {size} UTF-8 bytes, more than {MAX_TOPIC_BYTES}")


def validate_topic_name(topic: str, max_levels: int = 0) -> None:
    """Raise MqttError(0x90) unless ``topic`` is a valid MQTT 5 topic name (§4.7.3).

    ``max_levels`` > 0 limits the number of ``/``-separated levels.
    """
    if not topic:
        raise MqttError(TOPIC_NAME_INVALID, "topic name is empty")
    bad = _BAD_NAME_CHAR.search(topic)
    if bad is not None:
        raise MqttError(TOPIC_NAME_INVALID, _bad_char_message("topic name", topic, bad.start()))
    _check_utf8_length("topic name", topic, TOPIC_NAME_INVALID)
    if max_levels > 0:
        levels = topic.count("/") + 1
        if levels > max_levels:
            raise MqttError(
                TOPIC_NAME_INVALID,
                f"topic name has {levels} levels, more than the limit of {max_levels}",
            )


def validate_topic_filter(topic_filter: str, max_levels: int = 0) -> None:
    """Raise MqttError(0x8F) unless ``topic_filter`` is a valid MQTT 5 topic filter.

    Wildcards follow §4.7.1; ``$share/{group}/{filter}`` follows §4.8.2, and then
    ``max_levels`` > 0 limits the levels of the inner ``filter``.
    """
    if not topic_filter:
        raise MqttError(TOPIC_FILTER_INVALID, "topic filter is empty")
    bad = _BAD_CHAR.search(topic_filter)
    if bad is not None:
        message = _bad_char_message("topic filter", topic_filter, bad.start())
        raise MqttError(TOPIC_FILTER_INVALID, message)
    _check_utf8_length("topic filter", topic_filter, TOPIC_FILTER_INVALID)

    inner = topic_filter
    shared = parse_shared(topic_filter)
    if shared is not None:
        group, inner = shared
        if not group:
            raise MqttError(TOPIC_FILTER_INVALID, "shared subscription has an empty group name")
        for ch in group:
            if ch in "+#":
                raise MqttError(
                    TOPIC_FILTER_INVALID,
                    f"shared subscription group {group!r} contains wildcard {ch!r}",
                )
        if not inner:
            raise MqttError(
                TOPIC_FILTER_INVALID, f"shared subscription group {group!r} has no topic filter"
            )

    levels = inner.split("/")
    for number, level in enumerate(levels, 1):
        if "+" in level or "#" in level:
            # §4.7.1.2/§4.7.1.3: a wildcard occupies a whole level, '#' only the last one.
            if level != "+" and level != "#":
                raise MqttError(
                    TOPIC_FILTER_INVALID,
                    f"topic filter level {number} ({level!r}) mixes a wildcard with other "
                    "characters",
                )
            if level == "#" and number != len(levels):
                raise MqttError(
                    TOPIC_FILTER_INVALID,
                    f"topic filter has '#' at level {number}, but '#' must be the last level",
                )
    if 0 < max_levels < len(levels):
        raise MqttError(
            TOPIC_FILTER_INVALID,
            f"topic filter has {len(levels)} levels, more than the limit of {max_levels}",
        )


def parse_shared(topic_filter: str) -> tuple[str, str] | None:
    """``"$share/g/a/+"`` -> ``("g", "a/+")``; None when the filter is not shared.

    Does not validate: ``"$share/g"`` gives ``("g", "")``.
    """
    if not topic_filter.startswith(SHARE_PREFIX):
        return None
    group, _, inner = topic_filter[len(SHARE_PREFIX) :].partition("/")
    return group, inner


class _SubNode:
    """One level of a SubscriptionTrie. Containers are created on first use: most nodes
    of a large trie hold only one of them, and an empty dict per node would dominate memory.
    ``subs`` maps a subscriber to the very ``(subscriber, options)`` pair ``match`` returns,
    so a match allocates nothing per subscriber.
    """

    __slots__ = ("children", "plus", "hash", "subs", "shared", "filter")

    def __init__(self) -> None:
        self.children: dict[str, _SubNode] | None = None  # literal levels
        self.plus: _SubNode | None = None  # the '+' level
        self.hash: _SubNode | None = None  # the '#' level
        self.subs: dict[Hashable, tuple[Hashable, object]] | None = None
        self.shared: dict[str, dict[Hashable, object]] | None = None
        self.filter = ""  # the filter ending here, while it has subscribers

    def child(self, level: str) -> _SubNode | None:
        if level == "+":
            return self.plus
        if level == "#":
            return self.hash
        return self.children.get(level) if self.children is not None else None

    def drop_child(self, level: str) -> None:
        if level == "+":
            self.plus = None
        elif level == "#":
            self.hash = None
        elif self.children is not None:
            del self.children[level]
            if not self.children:
                self.children = None

    def is_empty(self) -> bool:
        return (
            self.children is None
            and self.plus is None
            and self.hash is None
            and self.subs is None
            and self.shared is None
        )


class SubscriptionTrie:
    """Topic filters -> subscribers, looked up by a published topic name.

    ``match`` returns shared groups' member dicts as the trie's own dicts, not copies: the
    caller must not mutate them, and must not keep them across a change to the trie.
    ``generation`` grows by one on every change that alters what ``match`` returns, so
    callers can cache match results per topic and drop them when it moves.
    """

    def __init__(self) -> None:
        self._root = _SubNode()
        self._count = 0
        self._generation = 0

    @property
    def generation(self) -> int:
        return self._generation

    def __len__(self) -> int:
        return self._count

    def add(self, topic_filter: str, subscriber: Hashable, options: object) -> bool:
        """Store ``subscriber -> options`` at the filter (assumed valid).

        Returns True for a new entry, False when it replaced the options of an existing one.
        """
        shared = parse_shared(topic_filter)
        group, inner = shared if shared is not None else (None, topic_filter)
        node = self._root
        for level in inner.split("/"):
            if level == "+":
                if node.plus is None:
                    node.plus = _SubNode()
                node = node.plus
            elif level == "#":
                if node.hash is None:
                    node.hash = _SubNode()
                node = node.hash
            else:
                if node.children is None:
                    node.children = {}
                child = node.children.get(level)
                if child is None:
                    child = node.children[level] = _SubNode()
                node = child
        node.filter = inner
        if group is None:
            if node.subs is None:
                node.subs = {}
            new = subscriber not in node.subs
            node.subs[subscriber] = (subscriber, options)
        else:
            if node.shared is None:
                node.shared = {}
            members = node.shared.get(group)
            if members is None:
                members = node.shared[group] = {}
            new = subscriber not in members
            members[subscriber] = options
        self._count += new
        self._generation += 1
        return new

    def remove(self, topic_filter: str, subscriber: Hashable) -> bool:
        """Remove one entry and prune the nodes left empty; False if it was not there."""
        shared = parse_shared(topic_filter)
        group, inner = shared if shared is not None else (None, topic_filter)
        node = self._root
        path: list[tuple[_SubNode, str]] = []
        for level in inner.split("/"):
            child = node.child(level)
            if child is None:
                return False
            path.append((node, level))
            node = child
        if group is None:
            subs = node.subs or {}
            if subscriber not in subs:
                return False
            del subs[subscriber]
            if not subs:
                node.subs = None
        else:
            groups = node.shared or {}
            members = groups.get(group, {})
            if subscriber not in members:
                return False
            del members[subscriber]
            if not members:
                del groups[group]
                if not groups:
                    node.shared = None
        self._count -= 1
        self._generation += 1
        if node.subs is None and node.shared is None:
            node.filter = ""
        for parent, level in reversed(path):
            if not node.is_empty():
                break
            parent.drop_child(level)
            node = parent
        return True

    def match(
        self, topic: str
    ) -> tuple[list[tuple[Hashable, object]], list[tuple[str, str, dict[Hashable, object]]]]:
        """The subscriptions whose filter matches ``topic`` (a valid topic name).

        Returns ``(normal, shared)``: ``(subscriber, options)`` per matching non-shared
        entry (a subscriber matching through two filters appears twice), and ``(group,
        filter, members)`` per matching shared group, ``members`` being the trie's own dict.
        """
        normal: list[tuple[Hashable, object]] = []
        shared: list[tuple[str, str, dict[Hashable, object]]] = []
        # MQTT 5.0 §4.7.2: a filter starting with a wildcard does not match a '$' topic.
        dollar = topic.startswith("$")
        frontier = [self._root]
        for depth, level in enumerate(topic.split("/")):
            wild = depth > 0 or not dollar
            following = []
            for node in frontier:
                # §4.7.1.2: '#' also matches the parent level, so it matches here already.
                if wild and node.hash is not None:
                    _collect(node.hash, normal, shared)
                if node.children is not None:
                    child = node.children.get(level)
                    if child is not None:
                        following.append(child)
                # §4.7.1.3: '+' matches exactly one level, an empty one included.
                if wild and node.plus is not None:
                    following.append(node.plus)
            if not following:
                return normal, shared
            frontier = following
        for node in frontier:
            _collect(node, normal, shared)
            if node.hash is not None:
                _collect(node.hash, normal, shared)
        return normal, shared

    def subscriptions(self) -> Iterator[tuple[str, Hashable, object]]:
        """``(filter, subscriber, options)`` per entry, shared ones with their ``$share/g/``.

        Safe against changes made while iterating; entries changed meanwhile may or may not
        be seen.
        """
        stack = [self._root]
        while stack:
            node = stack.pop()
            topic_filter = node.filter  # read once: removals while listing may clear it
            if node.subs:
                for subscriber, options in list(node.subs.values()):
                    yield topic_filter, subscriber, options
            if node.shared:
                for group, members in list(node.shared.items()):
                    full = f"{SHARE_PREFIX}{group}/{topic_filter}"
                    for subscriber, options in list(members.items()):
                        yield full, subscriber, options
            if node.children:
                stack.extend(node.children.values())
            if node.plus is not None:
                stack.append(node.plus)
            if node.hash is not None:
                stack.append(node.hash)

    def _node_count(self) -> int:
        """Nodes in the trie, the root included: for pruning tests and memory metrics."""
        count = 0
        stack = [self._root]
        while stack:
            node = stack.pop()
            count += 1
            if node.children:
                stack.extend(node.children.values())
            if node.plus is not None:
                stack.append(node.plus)
            if node.hash is not None:
                stack.append(node.hash)
        return count


def _collect(
    node: _SubNode,
    normal: list[tuple[Hashable, object]],
    shared: list[tuple[str, str, dict[Hashable, object]]],
) -> None:
    if node.subs:
        normal.extend(node.subs.values())
    if node.shared:
        for group, members in node.shared.items():
            shared.append((group, node.filter, members))


class _TopicNode:
    """One level of a TopicTree. ``item`` is the stored ``(topic, value)`` pair that
    ``match`` returns as it is (no joining, no allocation), None when nothing is stored here.
    """

    __slots__ = ("children", "item")

    def __init__(self) -> None:
        self.children: dict[str, _TopicNode] | None = None
        self.item: tuple[str, object] | None = None

    def child(self, level: str) -> _TopicNode | None:
        return self.children.get(level) if self.children is not None else None


class TopicTree:
    """Topic names -> values (the retained messages), looked up by a topic filter.

    ``match`` walks literal levels directly, enumerates children only for '+', and whole
    subtrees only for '#', so it costs what it returns plus the path to it.
    """

    def __init__(self) -> None:
        self._root = _TopicNode()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def set(self, topic: str, value: object) -> bool:
        """Store ``value`` under ``topic``; True if the topic was not stored before."""
        node = self._root
        for level in topic.split("/"):
            if node.children is None:
                node.children = {}
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _TopicNode()
            node = child
        new = node.item is None
        node.item = (topic, value)
        self._count += new
        return new

    def get(self, topic: str, default: object = None) -> object:
        node = self._root
        for level in topic.split("/"):
            child = node.child(level)
            if child is None:
                return default
            node = child
        return default if node.item is None else node.item[1]

    def delete(self, topic: str) -> bool:
        """Remove ``topic`` and prune the nodes left empty; False if it was not stored."""
        node = self._root
        path: list[tuple[_TopicNode, str]] = []
        for level in topic.split("/"):
            child = node.child(level)
            if child is None:
                return False
            path.append((node, level))
            node = child
        if node.item is None:
            return False
        node.item = None
        self._count -= 1
        for parent, level in reversed(path):
            if node.children or node.item is not None:
                break
            children = parent.children or {}
            del children[level]
            if not children:
                parent.children = None
            node = parent
        return True

    def match(self, topic_filter: str) -> list[tuple[str, object]]:
        """``(topic, value)`` for every stored topic that ``topic_filter`` matches (§4.7)."""
        found: list[tuple[str, object]] = []
        frontier = [self._root]
        for depth, level in enumerate(topic_filter.split("/")):
            # MQTT 5.0 §4.7.2: wildcards in the first level skip the '$' topics.
            skip_dollar = depth == 0
            if level == "#":
                for node in frontier:
                    _collect_subtree(node, found, skip_dollar)
                return found
            following = []
            for node in frontier:
                if not node.children:
                    continue
                if level == "+":
                    for key, child in node.children.items():
                        if not (skip_dollar and key.startswith("$")):
                            following.append(child)
                else:
                    literal = node.children.get(level)
                    if literal is not None:
                        following.append(literal)
            if not following:
                return found
            frontier = following
        for node in frontier:
            if node.item is not None:
                found.append(node.item)
        return found

    def __iter__(self) -> Iterator[tuple[str, object]]:
        """Every ``(topic, value)``, from a snapshot taken when iteration starts."""
        found: list[tuple[str, object]] = []
        _collect_subtree(self._root, found, False)
        return iter(found)

    def _node_count(self) -> int:
        """Nodes in the tree, the root included: for pruning tests and memory metrics."""
        count = 0
        stack = [self._root]
        while stack:
            node = stack.pop()
            count += 1
            if node.children:
                stack.extend(node.children.values())
        return count


def _collect_subtree(top: _TopicNode, found: list[tuple[str, object]], skip_dollar: bool) -> None:
    # §4.7.1.2: '#' matches its parent level too, so ``top`` itself counts.
    if top.item is not None:
        found.append(top.item)
    stack = []
    if top.children:
        for key, child in top.children.items():
            if not (skip_dollar and key.startswith("$")):
                stack.append(child)
    while stack:
        node = stack.pop()
        if node.item is not None:
            found.append(node.item)
        if node.children:
            stack.extend(node.children.values())
