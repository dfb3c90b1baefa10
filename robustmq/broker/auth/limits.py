"""Abuse limits: the blacklist, flapping detection, connections per IP, the connect rate
of each listener and per-client publish quotas.

``Limits.admit`` runs at CONNECT before authentication and answers with the reason code
to refuse with (or None): banned (0x8A), connection rate exceeded (0x9F) or quota
exceeded (0x97). ``Limits.connected`` / ``released`` keep the per-IP count of accepted
clients. ``PublishQuota`` is a per-connection token bucket for messages and bytes per
second that the PUBLISH handler asks (``allow(nbytes)``); it is None when no quota is
configured. Every refusal is counted in the broker's stats.
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from robustmq._core.mqtt_spec import ReasonCode
from robustmq.errors import ConfigError

BLACKLIST_KINDS = ("clientid", "username", "ip")
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Blacklist:
    """Banned client ids, usernames and IP networks, each with an expiry (wall clock,
    seconds since the epoch; ``inf`` for never)."""

    def __init__(self) -> None:
        self._names: dict[tuple[str, str], float] = {}  # (kind, value) -> until
        self._networks: dict[_Network, float] = {}

    def __len__(self) -> int:
        return len(self._names) + len(self._networks)

    def ban(self, kind: str, value: str, until: float = float("inf")) -> None:
        if kind == "ip":
            self._networks[ipaddress.ip_network(value, strict=False)] = until
        elif kind in BLACKLIST_KINDS:
            self._names[(kind, value)] = until
        else:
            raise ValueError(f"blacklist kind {kind!r} is not one of {BLACKLIST_KINDS}")

    def unban(self, kind: str, value: str) -> bool:
        if kind == "ip":
            return self._networks.pop(ipaddress.ip_network(value, strict=False), None) is not None
        return self._names.pop((kind, value), None) is not None

    def banned(self, client_id: str, username: str | None, ip: str) -> bool:
        now = time.time()
        if self._name_banned("clientid", client_id, now):
            return True
        if username is not None and self._name_banned("username", username, now):
            return True
        if self._networks:
            try:
                address = ipaddress.ip_address(ip)
            except ValueError:
                return False
            for network, until in list(self._networks.items()):
                if until <= now:
                    del self._networks[network]
                elif address in network:
                    return True
        return False

    def username_banned(self, username: str) -> bool:
        """Whether ``username`` is banned: for a user named after the CONNECT's checks, inside
        an enhanced-authentication exchange (SCRAM)."""
        return self._name_banned("username", username, time.time())

    def _name_banned(self, kind: str, value: str, now: float) -> bool:
        until = self._names.get((kind, value))
        if until is None:
            return False
        if until > now:
            return True
        del self._names[(kind, value)]
        return False


def blacklist_from_config(entries: list[dict[str, Any]]) -> Blacklist:
    """``auth.blacklist``: tables with one of clientid / username / ip and an optional
    ``until`` (a TOML date-time, or seconds since the epoch)."""
    blacklist = Blacklist()
    for i, entry in enumerate(entries):
        key = f"auth.blacklist[{i}]"
        kinds = [k for k in BLACKLIST_KINDS if k in entry]
        if len(kinds) != 1 or set(entry) - {*BLACKLIST_KINDS, "until"}:
            raise ConfigError(key, entry, "a table with one of clientid, username, ip and an until")
        value = entry[kinds[0]]
        until = entry.get("until", float("inf"))
        if isinstance(until, datetime):
            until = until.timestamp()
        if not isinstance(value, str) or not value or not isinstance(until, (int, float)):
            raise ConfigError(key, entry, "a non-empty string and until as a date-time or number")
        try:
            blacklist.ban(kinds[0], value, float(until))
        except ValueError:
            raise ConfigError(f"{key}.ip", value, "an IP address or CIDR") from None
    return blacklist


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self, amount: float = 1.0, debt: bool = False) -> bool:
        """Takes ``amount`` tokens if there are enough; with ``debt``, whenever the bucket
        is not empty (the balance may go below zero: a large item waits its turn)."""
        now = time.monotonic()
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens < amount and not (debt and tokens > 0):
            self.tokens = tokens
            return False
        self.tokens = tokens - amount
        return True


class PublishQuota:
    """A client's PUBLISH budget: messages and payload bytes per second (one second's
    worth may be used at once)."""

    __slots__ = ("_messages", "_bytes", "_stats")

    def __init__(self, message_rate: float, byte_rate: float, stats: Counter[str]) -> None:
        self._messages = TokenBucket(message_rate, max(message_rate, 1.0)) if message_rate else None
        self._bytes = TokenBucket(byte_rate, byte_rate) if byte_rate else None
        self._stats = stats

    def allow(self, nbytes: int) -> bool:
        """Whether one more PUBLISH of ``nbytes`` payload bytes is within the quota."""
        if (self._messages is None or self._messages.take()) and (
            self._bytes is None or self._bytes.take(nbytes, debt=True)
        ):
            return True
        self._stats["publish_quota_exceeded"] += 1
        return False


@dataclass(frozen=True, kw_only=True)
class LimitSettings:
    flapping_max_connects: int = 0
    flapping_window: float = 60.0
    flapping_ban_time: float = 300.0
    max_connections_per_ip: int = 0
    connect_rate: float = 0.0
    connect_burst: int = 1
    publish_rate: float = 0.0
    publish_byte_rate: float = 0.0


class Limits:
    def __init__(self, settings: LimitSettings, blacklist: Blacklist, stats: Counter[str]) -> None:
        self.settings = settings
        self.blacklist = blacklist
        self.stats = stats
        self.per_ip: Counter[str] = Counter()  # accepted clients per IP
        self._connects: dict[str, deque[float]] = {}  # client id -> recent CONNECT times
        self._listener_buckets: dict[Any, TokenBucket] = {}

    @property
    def checks_connect(self) -> bool:
        """Whether ``admit`` can refuse anything (if not, the CONNECT path skips it)."""
        s = self.settings
        return bool(
            self.blacklist or s.flapping_max_connects or s.connect_rate or s.max_connections_per_ip
        )

    def admit(
        self, client_id: str, username: str | None, ip: str, listener: Any
    ) -> tuple[int, str] | None:
        """Why a CONNECT must be refused before authentication: (reason code, log text)."""
        s = self.settings
        if self.blacklist and self.blacklist.banned(client_id, username, ip):
            self.stats["connect_banned"] += 1
            return ReasonCode.BANNED, "banned (blacklist)"
        if s.flapping_max_connects and self._flapping(client_id):
            self.stats["connect_banned"] += 1
            self.stats["flapping_bans"] += 1
            return ReasonCode.BANNED, f"flapping: banned for {s.flapping_ban_time:g} s"
        if s.connect_rate:
            bucket = self._listener_buckets.get(listener)
            if bucket is None:
                bucket = TokenBucket(s.connect_rate, s.connect_burst)
                self._listener_buckets[listener] = bucket
            if not bucket.take():
                self.stats["connect_rate_exceeded"] += 1
                return ReasonCode.CONNECTION_RATE_EXCEEDED, "listener connect rate exceeded"
        if s.max_connections_per_ip and self.per_ip[ip] >= s.max_connections_per_ip:
            self.stats["connect_ip_limit"] += 1
            return ReasonCode.QUOTA_EXCEEDED, f"more than {s.max_connections_per_ip} from {ip}"
        return None

    def _flapping(self, client_id: str) -> bool:
        s = self.settings
        now = time.monotonic()
        times = self._connects.get(client_id)
        if times is None:
            if len(self._connects) >= 100_000:
                self._prune(now)
            times = self._connects[client_id] = deque()
        while times and now - times[0] > s.flapping_window:
            times.popleft()
        times.append(now)
        if len(times) > s.flapping_max_connects:
            times.clear()
            self.blacklist.ban("clientid", client_id, time.time() + s.flapping_ban_time)
            return True
        return False

    def _prune(self, now: float) -> None:
        window = self.settings.flapping_window
        for client_id, times in list(self._connects.items()):
            if not times or now - times[-1] > window:
                del self._connects[client_id]

    def connected(self, ip: str) -> None:
        self.per_ip[ip] += 1

    def released(self, ip: str) -> None:
        self.per_ip[ip] -= 1
        if self.per_ip[ip] <= 0:
            del self.per_ip[ip]

    def publish_quota(self) -> PublishQuota | None:
        s = self.settings
        if not s.publish_rate and not s.publish_byte_rate:
            return None
        return PublishQuota(s.publish_rate, s.publish_byte_rate, self.stats)
