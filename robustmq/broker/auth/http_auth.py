"""HTTP authentication: ask a web service about each CONNECT's credentials.

The broker POSTs JSON ``{"clientid", "username", "password", "peerhost"}`` to the
configured URL (aiohttp, one shared session, a total timeout). The service answers 200
with ``{"result": "allow" | "deny" | "ignore", "is_superuser": bool}`` or 204 for allow
(EMQX's convention). A timeout, a connection error, another status or a body that is not
such JSON counts as "could not answer" (ignore, and the chain refuses with "server
unavailable" if nothing else accepts). Answers are cached for ``cache_ttl`` seconds per
credentials, so a reconnect storm does not become a request storm; a cache hit answers at
once, without a task.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from typing import Any

import aiohttp

from robustmq.broker.auth.authn import (
    ALLOW,
    DENY,
    IGNORE,
    IGNORED,
    UNAVAILABLE,
    AuthResult,
    ConnectInfo,
    Outcome,
)
from robustmq.broker.auth.ratelog import RateLimitedLog

log = RateLimitedLog(logging.getLogger(__name__))

_CACHE_SIZE = 10_000
_CacheKey = tuple[str, str | None, bytes | None, str]


class HttpAuthenticator:
    def __init__(self, url: str, timeout: float, cache_ttl: float) -> None:
        self.url = url
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.cache_ttl = cache_ttl
        self._cache: OrderedDict[_CacheKey, tuple[float, AuthResult]] = OrderedDict()
        self._session: aiohttp.ClientSession | None = None
        self.requests = 0  # requests sent (cache misses)
        self.failures = 0  # requests that got no usable answer

    def authenticate(self, info: ConnectInfo) -> Outcome:
        # The password is kept in the cache key only as a digest.
        digest = None if info.password is None else hashlib.sha256(info.password).digest()
        key = (info.client_id, info.username, digest, info.ip)
        hit = self._cache.get(key)
        if hit is not None:
            if hit[0] > time.monotonic():
                return hit[1]
            del self._cache[key]
        return self._ask(info, key)

    async def _ask(self, info: ConnectInfo, key: _CacheKey) -> AuthResult:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        body = {
            "clientid": info.client_id,
            "username": info.username,
            "password": None if info.password is None else info.password.decode("utf-8", "replace"),
            "peerhost": info.ip,
        }
        self.requests += 1
        try:
            async with self._session.post(self.url, json=body) as resp:
                if resp.status == 204:
                    result = AuthResult(ALLOW)
                elif resp.status == 200:
                    result = _parse(await resp.json(content_type=None))
                else:
                    raise ValueError(f"HTTP status {resp.status}")
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            self.failures += 1
            log.warning("HTTP auth %s: no usable answer (%s)", self.url, exc or type(exc).__name__)
            return UNAVAILABLE
        if self.cache_ttl > 0:
            self._cache[key] = (time.monotonic() + self.cache_ttl, result)
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return result

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _parse(body: Any) -> AuthResult:
    if not isinstance(body, dict) or body.get("result") not in (ALLOW, DENY, IGNORE):
        raise ValueError(f"unexpected answer {str(body)[:100]!r}")
    if body["result"] == IGNORE:
        return IGNORED
    return AuthResult(body["result"], superuser=body.get("is_superuser") is True)
