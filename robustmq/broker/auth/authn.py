"""Authentication of a CONNECT: the authenticator chain and the password authenticator.

Each ``Authenticator`` answers allow, deny or ignore for a client's credentials; the chain
asks them in the configured order and the first allow or deny decides (``ignore`` passes
to the next). When every one ignores, the client is accepted only if it is anonymous (no
username, no password) and anonymous access is allowed; an authenticator that could not
answer (HTTP server down) turns that refusal into "server unavailable". An authenticator
may answer later (an awaitable, e.g. HTTP); the chain then runs as an asyncio task that
``close()`` cancels. The JWT and HTTP authenticators are in ``jwt.py`` and
``http_auth.py``, SCRAM (MQTT 5 enhanced auth) in ``scram.py``, the users in ``users.py``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from robustmq.broker.auth.passwords import hash_password, verify_password
from robustmq.broker.auth.users import UserStore

ALLOW = "allow"
DENY = "deny"
IGNORE = "ignore"


@dataclass(frozen=True, slots=True)
class ConnectInfo:
    """What a CONNECT presents: the credentials and where they come from."""

    client_id: str
    username: str | None
    password: bytes | None
    ip: str


@dataclass(frozen=True, slots=True)
class AuthResult:
    outcome: str  # ALLOW, DENY or IGNORE
    claims: Mapping[str, Any] | None = None  # e.g. JWT claims, for ACL placeholders
    superuser: bool = False  # ACL rules do not apply
    unavailable: bool = False  # IGNORE because the authenticator could not answer


IGNORED = AuthResult(IGNORE)
DENIED = AuthResult(DENY)
ALLOWED = AuthResult(ALLOW)
UNAVAILABLE = AuthResult(IGNORE, unavailable=True)

Outcome = AuthResult | Awaitable[AuthResult]

# Hashed against for unknown usernames (see PasswordAuthenticator).
_DUMMY_RECORD = hash_password("no such user")


class Authenticator(Protocol):
    def authenticate(self, info: ConnectInfo) -> Outcome: ...

    async def close(self) -> None: ...


class PasswordAuthenticator:
    """The built-in users: unknown usernames are ignored, a wrong password denies.

    The slow hash runs in a worker thread (hashlib releases the GIL): on the event loop,
    a flood of wrong passwords would stall every client for milliseconds per CONNECT. An
    unknown username costs the same hash, against a dummy record, so the time taken does
    not tell which usernames exist."""

    def __init__(self, users: UserStore) -> None:
        self.users = users

    def authenticate(self, info: ConnectInfo) -> Outcome:
        if info.username is None:
            return IGNORED
        return asyncio.get_running_loop().run_in_executor(None, self._verify, info)

    def _verify(self, info: ConnectInfo) -> AuthResult:
        user = self.users.get(info.username or "")
        if user is None:
            verify_password(_DUMMY_RECORD, info.password or b"")
            return IGNORED
        if info.password is None or not verify_password(user.password_record, info.password):
            return DENIED
        return ALLOWED

    async def close(self) -> None:
        return None


def certificate_identity(transport: Any) -> tuple[bool, str | None]:
    """(whether the connection is TLS, the verified client certificate's CN or None)."""
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return False, None
    cert = ssl_object.getpeercert()  # {} or None unless a certificate was verified
    for rdn in (cert or {}).get("subject", ()):
        for name, value in rdn:
            if name == "commonName" and value:
                return True, str(value)
    return True, None


class AuthChain:
    def __init__(self, authenticators: Sequence[Authenticator], allow_anonymous: bool) -> None:
        self.authenticators = list(authenticators)
        self.allow_anonymous = allow_anonymous
        self._tasks: set[asyncio.Task[AuthResult]] = set()

    def authenticate(self, info: ConnectInfo) -> AuthResult | asyncio.Task[AuthResult]:
        """The decision, or a task that will have it when an authenticator is async."""
        return self._run(info, 0, False)

    def _run(
        self, info: ConnectInfo, start: int, unavailable: bool
    ) -> AuthResult | asyncio.Task[AuthResult]:
        for i in range(start, len(self.authenticators)):
            outcome = self.authenticators[i].authenticate(info)
            if inspect.isawaitable(outcome):
                task = asyncio.get_running_loop().create_task(
                    self._resume(info, i, outcome, unavailable)
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                return task
            assert isinstance(outcome, AuthResult)
            if outcome.outcome != IGNORE:
                return outcome
            unavailable = unavailable or outcome.unavailable
        return self._end(info, unavailable)

    async def _resume(
        self, info: ConnectInfo, index: int, pending: Awaitable[AuthResult], unavailable: bool
    ) -> AuthResult:
        outcome = await pending
        while True:
            if outcome.outcome != IGNORE:
                return outcome
            unavailable = unavailable or outcome.unavailable
            index += 1
            if index == len(self.authenticators):
                return self._end(info, unavailable)
            step = self.authenticators[index].authenticate(info)
            outcome = await step if inspect.isawaitable(step) else step

    def _end(self, info: ConnectInfo, unavailable: bool) -> AuthResult:
        if info.username is None and info.password is None and self.allow_anonymous:
            return ALLOWED
        return AuthResult(DENY, unavailable=unavailable)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for authenticator in self.authenticators:
            await authenticator.close()
