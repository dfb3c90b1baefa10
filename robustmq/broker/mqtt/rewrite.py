"""Topic rewrite rules (EMQX style) and the placeholders shared with auto-subscribe.

A rule has an ``action`` (publish, subscribe or all), a ``source_topic`` filter, a regular
expression ``re`` and a ``dest_topic`` template using ``$1``... for the expression's groups
and ``${clientid}`` / ``${username}``. Rules are tried in order; the first whose filter and
expression both match rewrites the topic. With no rules configured, nothing here runs.
"""

from __future__ import annotations

import re
from typing import Any

from robustmq._core import trie
from robustmq.errors import ConfigError, MqttError

ACTIONS = ("publish", "subscribe", "all")
_GROUP = re.compile(r"\$(\d+)")


def fill_placeholders(template: str, client_id: str, username: str | None) -> str | None:
    """Substitutes ``${clientid}`` and ``${username}`` (and Mosquitto's %c / %u); None
    when a value it would put in contains ``/``, ``+`` or ``#``: a client must not
    widen a filter or move a topic into another level by choosing its name."""
    user = username or ""
    for names, value in ((("${clientid}", "%c"), client_id), (("${username}", "%u"), user)):
        if any(name in template for name in names) and _UNSAFE.search(value):
            return None
    return (
        template.replace("${clientid}", client_id)
        .replace("${username}", user)
        .replace("%c", client_id)
        .replace("%u", user)
    )


_UNSAFE = re.compile(r"[/+#]")


def _expand(template: str, groups: tuple[str | None, ...]) -> str:
    """``$1``... replaced by the expression's groups (missing ones by nothing)."""

    def group(ref: re.Match[str]) -> str:
        n = int(ref.group(1))
        return (groups[n - 1] or "") if 0 < n <= len(groups) else ""

    return _GROUP.sub(group, template)


class TopicRewriter:
    def __init__(self, rules: list[dict[str, Any]]) -> None:
        self._rules: list[tuple[str, str, re.Pattern[str], str]] = []
        self._filters = trie.SubscriptionTrie()
        for i, rule in enumerate(rules):
            key = f"mqtt.rewrite[{i}]"
            unknown = set(rule) - {"action", "source_topic", "re", "dest_topic"}
            if unknown:
                raise ConfigError(key, rule, "keys action, source_topic, re, dest_topic")
            action = rule.get("action", "all")
            if action not in ACTIONS:
                raise ConfigError(f"{key}.action", action, "one of " + ", ".join(ACTIONS))
            source = rule.get("source_topic", "")
            try:
                trie.validate_topic_filter(source)
                pattern = re.compile(rule.get("re", ""))
            except (MqttError, re.error) as exc:
                raise ConfigError(f"{key}", rule, f"a valid source_topic and re ({exc})") from None
            dest = rule.get("dest_topic", "")
            if not dest:
                raise ConfigError(f"{key}.dest_topic", dest, "a topic template")
            self._rules.append((action, source, pattern, dest))
            self._filters.add(source, i, None)
        # Whether any rule exists (a change of rules makes a new rewriter): the QoS 0
        # lane reads this to leave every PUBLISH to the full path while rules exist.
        self.active = bool(self._rules)

    def __bool__(self) -> bool:
        return self.active

    @property
    def rules(self) -> list[dict[str, str]]:
        """The rules as the config gives them (what the constructor takes back)."""
        return [
            {"action": action, "source_topic": source, "re": pattern.pattern, "dest_topic": dest}
            for action, source, pattern, dest in self._rules
        ]

    def rewrite(self, action: str, topic: str, client_id: str, username: str | None) -> str:
        """The topic after the first rule that applies (unchanged when none does)."""
        matched, _ = self._filters.match(topic)
        for index in sorted(i for i, _ in matched):
            rule_action, _, pattern, dest = self._rules[index]
            if rule_action not in (action, "all"):
                continue
            m = pattern.match(topic)
            if m is None:
                continue
            rewritten = fill_placeholders(_expand(dest, m.groups()), client_id, username)
            return topic if rewritten is None else rewritten
        return topic
