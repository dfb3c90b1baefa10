"""Authorization: ACL rules, and the per-connection ``Authorizer`` that applies them.

An ACL file has one rule per line (``#`` starts a comment)::

    allow|deny  WHO  publish|subscribe|all  TOPIC-FILTER  [qos<=N] [retain=true|false]

WHO is ``all``, ``user:NAME``, ``clientid:ID`` or ``ip:CIDR``. The filter may use the MQTT
wildcards and the placeholders ``%u``/``${username}``, ``%c``/``${clientid}`` and
``${jwt.CLAIM}``; a placeholder with no value, or whose value contains ``/``, ``+`` or
``#``, makes the rule not apply (a username must not widen a rule). Rules are tried in
order and the first that applies decides; none applying means the default policy. On an
allow rule, ``qos<=N`` and ``retain=`` are limits: a PUBLISH above the QoS or with another
RETAIN flag is denied, a SUBSCRIBE above the QoS limit is granted that QoS. A SUBSCRIBE is matched by an allow rule
only if the rule's filter covers everything the requested filter can match, and by a
deny rule as soon as the two overlap, so a broad filter cannot reach denied topics.

``Acl.authorizer_for`` runs once at CONNECT: it keeps the rules that concern this client,
with placeholders filled, in an ``Authorizer`` that caches publish decisions per topic;
it returns None when nothing can be denied, so the publish path then makes no call.
``format_rule`` and ``edit_acl_file`` let the REST API add and remove rules in the file.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import stat
import tempfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from robustmq._core import trie
from robustmq.broker.auth.ratelog import RateLimitedLog
from robustmq.errors import AclFileChanged, MqttError, SecurityFileError

PUBLISH = 1
SUBSCRIBE = 2
_ACTIONS = {"publish": PUBLISH, "subscribe": SUBSCRIBE, "all": PUBLISH | SUBSCRIBE}
_CACHE_SIZE = 4096  # topics per connection whose publish decision is kept
_DENIALS = RateLimitedLog(logging.getLogger(__name__))
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_JWT_PLACEHOLDER = re.compile(r"\$\{jwt\.[^}]*\}")
_SAMPLE = {"u": "u", "c": "c"}  # placeholder values for checking a rule's filter


@dataclass(frozen=True, slots=True)
class Rule:
    allow: bool
    who: str  # "all", "user", "clientid" or "ip"
    name: str  # the user name or client id ("" for all and ip)
    network: _Network | None
    actions: int
    topic: str  # a filter template (placeholders unfilled)
    max_qos: int = 2
    retain: bool | None = None  # on allow rules: the RETAIN flag a PUBLISH must have
    line: int = 0


def parse_rule(text: str, line: int = 0) -> Rule:
    """One rule line; ``ValueError`` says what is wrong."""
    fields = text.split()
    if len(fields) < 4:
        raise ValueError("expected: allow|deny WHO ACTION TOPIC [qos<=N] [retain=BOOL]")
    permission, who_text, action, topic, *options = fields
    if permission not in ("allow", "deny"):
        raise ValueError(f"permission {permission!r} is not allow or deny")
    who, _, name = who_text.partition(":")
    network = None
    if who == "ip":
        try:
            network = ipaddress.ip_network(name, strict=False)
        except ValueError:
            raise ValueError(f"{name!r} is not an IP address or CIDR") from None
        name = ""
    elif who in ("user", "clientid"):
        if not name:
            raise ValueError(f"{who}: needs a name")
    elif who_text != "all":
        raise ValueError(f"who {who_text!r} is not all, user:NAME, clientid:ID or ip:CIDR")
    if action not in _ACTIONS:
        raise ValueError(f"action {action!r} is not publish, subscribe or all")
    try:
        trie.validate_topic_filter(_fill(_JWT_PLACEHOLDER.sub("j", topic), _SAMPLE, {}) or "")
    except MqttError as exc:
        raise ValueError(f"bad topic filter {topic!r} ({exc.message})") from None
    max_qos, retain = 2, None
    for option in options:
        if option in ("qos<=0", "qos<=1", "qos<=2"):
            max_qos = int(option[-1])
        elif option in ("retain=true", "retain=false"):
            retain = option == "retain=true"
        else:
            raise ValueError(f"unknown option {option!r} (qos<=0|1|2, retain=true|false)")
    return Rule(permission == "allow", who, name, network, _ACTIONS[action], topic, max_qos,
                retain, line)  # fmt: skip


def load_acl_file(path: str) -> list[Rule]:
    """The rules of an ACL file; ``SecurityFileError`` with the line number if bad."""
    return _parse_acl(path, _read_acl(path))


def _read_acl(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise SecurityFileError(path, 0, f"cannot read the ACL file ({exc.strerror})") from None


def _parse_acl(path: str, data: bytes) -> list[Rule]:
    rules = []
    # Lines end at "\n" only: a comment holding a form feed, NEL or U+2028 is one line.
    for number, raw in enumerate(data.split(b"\n"), 1):
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise SecurityFileError(path, number, "not valid UTF-8") from None
        if not text or text.startswith("#"):  # only whole-line comments: "#" is a wildcard
            continue
        try:
            rules.append(parse_rule(text, number))
        except ValueError as exc:
            raise SecurityFileError(path, number, str(exc)) from None
    return rules


def format_rule(rule: Rule) -> str:
    """The ACL-file line of ``rule``, which ``parse_rule`` reads back as the same rule."""
    if rule.who == "all":
        who = "all"
    elif rule.who == "ip":
        who = f"ip:{rule.network}"
    else:
        who = f"{rule.who}:{rule.name}"
    action = next(name for name, bits in _ACTIONS.items() if bits == rule.actions)
    parts = ["allow" if rule.allow else "deny", who, action, rule.topic]
    if rule.max_qos != 2:
        parts.append(f"qos<={rule.max_qos}")
    if rule.retain is not None:
        parts.append("retain=true" if rule.retain else "retain=false")
    return " ".join(parts)


def edit_acl_file(
    path: str,
    *,
    insert: str | None = None,
    before: int | None = None,
    remove: int | None = None,
    expected: list[Rule] | None = None,
) -> list[Rule]:
    """Rewrites the ACL file with rule number ``remove`` (0-based, in file order) taken out
    or the rule line ``insert`` put before rule number ``before`` (at the end when None or
    past the last); comments and blank lines stay where they are, byte for byte. The new
    file is written beside the file a symlink ``path`` leads to, synced and renamed over
    it, so a crash leaves one or the other and the link stays a link; returns the rules
    read back. ``expected`` is the rules the numbers refer to (the ones in memory): when
    the file holds others, ``AclFileChanged``. ``IndexError`` for a rule number that
    does not exist, ``ValueError`` for a bad rule, ``SecurityFileError`` when the file on
    disk does not load (it is then left alone)."""
    real = os.path.realpath(path)
    data = _read_acl(real)
    rules = _parse_acl(real, data)
    if expected is not None and list(map(format_rule, rules)) != list(map(format_rule, expected)):
        raise AclFileChanged(path)
    # Split where the loader splits, so rule numbers here are the loader's.
    lines = data.decode("utf-8").split("\n")
    if lines[-1] == "":
        lines.pop()
    numbers = [
        i for i, line in enumerate(lines) if line.strip() and not line.strip().startswith("#")
    ]
    if remove is not None:
        if not 0 <= remove < len(numbers):
            raise IndexError(f"there is no rule {remove} (the ACL has {len(numbers)})")
        del lines[numbers[remove]]
    if insert is not None:
        parse_rule(insert)
        at = numbers[before] if before is not None and before < len(numbers) else len(lines)
        lines.insert(at, insert)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(real), prefix=".acl-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write("".join(line + "\n" for line in lines))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, stat.S_IMODE(os.stat(real).st_mode))
        os.replace(tmp, real)
    except BaseException:
        os.unlink(tmp)
        raise
    return load_acl_file(real)


class Acl:
    def __init__(self, rules: list[Rule], default_allow: bool, stats: Counter[str]) -> None:
        self.rules = rules
        self.default_allow = default_allow
        self.stats = stats

    def authorizer_for(
        self,
        client_id: str,
        username: str | None,
        ip: str,
        claims: Mapping[str, Any] | None = None,
    ) -> Authorizer | None:
        """The rules of one client, or None when this client can be denied nothing."""
        values = {"c": client_id, "u": username}
        address = _address(ip)
        kept: list[tuple[bool, int, list[str], int, bool | None]] = []
        for rule in self.rules:
            if rule.who == "user" and rule.name != username:
                continue
            if rule.who == "clientid" and rule.name != client_id:
                continue
            if rule.who == "ip" and (address is None or address not in rule.network):  # type: ignore[operator]
                continue
            topic = _fill(rule.topic, values, claims or {})
            if topic is not None:
                kept.append((rule.allow, rule.actions, topic.split("/"), rule.max_qos, rule.retain))
        if self.default_allow and all(
            allow and max_qos == 2 and retain is None for allow, _, _, max_qos, retain in kept
        ):
            return None
        return Authorizer(kept, self.default_allow, self.stats, client_id)


class Authorizer:
    """One client's ACL. ``publish_allowed`` is what the PUBLISH handler calls."""

    __slots__ = ("_publish", "_subscribe", "_default", "_cache", "_stats", "_client_id")

    def __init__(
        self,
        rules: list[tuple[bool, int, list[str], int, bool | None]],
        default_allow: bool,
        stats: Counter[str],
        client_id: str,
    ) -> None:
        self._publish = [r for r in rules if r[1] & PUBLISH]
        self._subscribe = [r for r in rules if r[1] & SUBSCRIBE]
        self._default = default_allow
        self._cache: dict[str, tuple[bool, ...]] = {}
        self._stats = stats
        self._client_id = client_id

    def publish_allowed(self, topic: str, qos: int, retain: bool) -> bool:
        """Whether this client may publish to ``topic``; denials are counted and logged."""
        if self.permits_publish(topic, qos, retain):
            return True
        self._stats["acl_denied_publish"] += 1
        _DENIALS.warning("client %r: PUBLISH to %r denied by ACL", self._client_id, topic)
        return False

    def permits_publish(self, topic: str, qos: int, retain: bool) -> bool:
        """``publish_allowed`` without counting or logging a denial (a question asked
        before the handler that will act on the answer, by the QoS 0 lane)."""
        decisions = self._cache.get(topic)
        if decisions is None:
            decisions = self._publish_decisions(topic)
        return decisions[qos << 1 | retain]

    def _publish_decisions(self, topic: str) -> tuple[bool, ...]:
        levels = topic.split("/")
        decisions: tuple[bool, ...] = (self._default,) * 6
        for allow, _, rule_levels, max_qos, retain in self._publish:
            if _matches(rule_levels, levels):
                # Indexed by qos << 1 | retain.
                decisions = tuple(
                    allow and q <= max_qos and (retain is None or retain == r)
                    for q in (0, 1, 2)
                    for r in (False, True)
                )
                break
        if len(self._cache) >= _CACHE_SIZE:
            self._cache.clear()
        self._cache[topic] = decisions
        return decisions

    def subscribe_qos(self, topic_filter: str, qos: int) -> int | None:
        """The QoS to grant a subscription (``qos`` or an allow rule's limit), or None
        when denied (counted and logged). Shared subscriptions are judged by their filter."""
        shared = trie.parse_shared(topic_filter)
        levels = (shared[1] if shared is not None else topic_filter).split("/")
        for allow, _, rule_levels, max_qos, _ in self._subscribe:
            if allow and _covers(rule_levels, levels):
                return min(qos, max_qos)
            if not allow and _overlap(rule_levels, levels):
                break
        else:
            if self._default:
                return qos
        self._stats["acl_denied_subscribe"] += 1
        _DENIALS.warning("client %r: SUBSCRIBE to %r denied by ACL", self._client_id, topic_filter)
        return None


def _fill(template: str, values: Mapping[str, str | None], claims: Mapping[str, Any]) -> str | None:
    """``template`` with its placeholders filled; None if one has no usable value."""
    out = template
    for short, long in (("u", "username"), ("c", "clientid")):
        if f"%{short}" in out or f"${{{long}}}" in out:
            value = values.get(short)
            if not _usable(value):
                return None
            assert value is not None
            out = out.replace(f"%{short}", value).replace(f"${{{long}}}", value)
    while "${jwt." in out:
        start = out.index("${jwt.")
        end = out.find("}", start)
        if end < 0:
            return None
        claim = claims.get(out[start + 6 : end])
        if isinstance(claim, bool) or not isinstance(claim, (str, int)) or not _usable(str(claim)):
            return None
        out = out[:start] + str(claim) + out[end + 1 :]
    return out


def _usable(value: str | None) -> bool:
    return bool(value) and not any(ch in value for ch in "/+#")  # type: ignore[operator]


def _address(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(ip)
    except ValueError:
        return None


def _matches(rule: list[str], topic: list[str]) -> bool:
    """Whether the filter ``rule`` matches the topic name ``topic`` (§4.7)."""
    if topic[0].startswith("$") and rule[0] in ("+", "#"):
        return False  # §4.7.2: wildcards at the first level do not match $ topics
    for i, level in enumerate(rule):
        if level == "#":
            return True
        if i >= len(topic) or (level != "+" and level != topic[i]):
            return False
    return len(rule) == len(topic)


def _covers(rule: list[str], sub: list[str]) -> bool:
    """Whether every topic the filter ``sub`` matches is matched by the filter ``rule``."""
    if sub[0].startswith("$") != rule[0].startswith("$") and rule[0] in ("+", "#"):
        return False
    for i, level in enumerate(rule):
        if level == "#":
            return True
        if i >= len(sub) or sub[i] == "#":
            return False
        if level != "+" and (level != sub[i] or sub[i] == "+"):
            return False
    return len(rule) == len(sub)


def _overlap(a: list[str], b: list[str]) -> bool:
    """Whether some topic name is matched by both filters."""
    if a[0].startswith("$") != b[0].startswith("$"):
        # §4.7.2: a filter starting with a wildcard matches no $ topic, and a filter
        # starting with "$" matches only $ topics.
        return False
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else None
        y = b[i] if i < len(b) else None
        if x == "#" or y == "#":
            return True
        if x is None or y is None:
            return False
        if x != y and x != "+" and y != "+":
            return False
    return True
