"""The authenticator chain: order, ignore passing on, anonymous, async members, close();
and ``Security.from_config`` choosing the mode."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import pytest

from robustmq.broker.auth.authn import (
    ALLOW,
    ALLOWED,
    DENIED,
    DENY,
    IGNORED,
    UNAVAILABLE,
    AuthChain,
    ConnectInfo,
    PasswordAuthenticator,
)
from robustmq.broker.auth.security import Security
from robustmq.broker.auth.users import MemoryUserStore, new_user, set_password
from robustmq.config import AuthConfig, load_config
from robustmq.errors import ConfigError


class Fixed:
    def __init__(self, result, delay=None):
        self.result = result
        self.delay = delay
        self.calls = 0
        self.closed = False

    def authenticate(self, info):
        self.calls += 1
        if self.delay is None:
            return self.result
        return self._later()

    async def _later(self):
        await asyncio.sleep(self.delay)
        return self.result

    async def close(self):
        self.closed = True


def _info(username="u", password=b"p"):
    return ConnectInfo("c", username, password, "127.0.0.1")


def test_first_non_ignore_decides():
    first, second, third = Fixed(IGNORED), Fixed(DENIED), Fixed(ALLOWED)
    chain = AuthChain([first, second, third], allow_anonymous=False)
    assert chain.authenticate(_info()).outcome == DENY
    assert (first.calls, second.calls, third.calls) == (1, 1, 0)


@pytest.mark.parametrize(
    "allow_anonymous, username, password, outcome",
    [
        (True, None, None, ALLOW),
        (False, None, None, DENY),
        (True, "u", None, DENY),  # credentials nobody accepted are not anonymous
        (True, None, b"p", DENY),
    ],
)
def test_all_ignore(allow_anonymous, username, password, outcome):
    chain = AuthChain([Fixed(IGNORED)], allow_anonymous)
    assert chain.authenticate(_info(username, password)).outcome == outcome


def test_unavailable_is_reported():
    result = AuthChain([Fixed(UNAVAILABLE), Fixed(IGNORED)], False).authenticate(_info())
    assert result.outcome == DENY and result.unavailable


async def test_password_authenticator_hashes_off_the_event_loop():
    store = MemoryUserStore([new_user("alice", "pw")])
    auth = PasswordAuthenticator(store)
    assert (await auth.authenticate(_info("alice", b"pw"))).outcome == ALLOW
    assert (await auth.authenticate(_info("alice", b"no"))).outcome == DENY
    assert (await auth.authenticate(_info("alice", None))).outcome == DENY
    assert (await auth.authenticate(_info("bob", b"pw"))) is IGNORED
    assert auth.authenticate(_info(None, None)) is IGNORED  # nothing to hash: at once


async def test_the_loop_keeps_running_while_a_password_is_hashed():
    auth = PasswordAuthenticator(MemoryUserStore([new_user("alice", "pw")]))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    running = asyncio.ensure_future(ticker())
    results = await asyncio.gather(*(auth.authenticate(_info("alice", b"no")) for _ in range(4)))
    running.cancel()
    assert {r.outcome for r in results} == {DENY}
    assert ticks > 4  # the loop ran between the hashes instead of waiting them out


async def test_async_member_then_sync_member():
    slow, last = Fixed(IGNORED, delay=0.01), Fixed(ALLOWED)
    chain = AuthChain([Fixed(IGNORED), slow, Fixed(IGNORED, delay=0), last], False)
    task = chain.authenticate(_info())
    assert isinstance(task, asyncio.Task)
    assert (await task).outcome == ALLOW and last.calls == 1


async def test_close_cancels_pending_and_closes_members():
    slow = Fixed(ALLOWED, delay=60)
    chain = AuthChain([slow], False)
    task = chain.authenticate(_info())
    await asyncio.sleep(0)
    await chain.close()
    assert task.cancelled() and slow.closed


def test_modes(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="robustmq")
    off = Security.from_config(AuthConfig(), Counter())
    assert off.authn is None and off.acl is None and off.enhanced_auth_methods() == {}
    assert "authentication off" in caplog.text
    pw = tmp_path / "pw"
    set_password(str(pw), "alice", "x")
    on = Security.from_config(AuthConfig(password_file=str(pw)), Counter())
    assert on.authn is not None and not on.authn.allow_anonymous
    assert list(on.enhanced_auth_methods()) == ["SCRAM-SHA-256"]
    assert "authenticators password; anonymous clients refused" in caplog.text
    both = Security.from_config(
        AuthConfig(password_file=str(pw), allow_anonymous="true"), Counter()
    )
    assert both.authn.allow_anonymous
    assert Security.from_config(
        AuthConfig(password_file=str(pw), allow_anonymous=True), Counter()
    ).authn.allow_anonymous
    closed = Security.from_config(AuthConfig(allow_anonymous=False), Counter())
    assert closed.authn is not None and closed.authn.authenticators == []
    deny_all = Security.from_config(AuthConfig(acl_default="deny"), Counter())
    assert deny_all.acl is not None and deny_all.acl.rules == []


def test_allow_anonymous_from_toml_and_environment(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[auth]\nallow_anonymous = false\n")
    assert load_config(path, environ={}).auth.allow_anonymous is False
    env = {"ROBUSTMQ_AUTH_ALLOW_ANONYMOUS": "true"}
    assert load_config(environ=env).auth.allow_anonymous == "true"
    with pytest.raises(ConfigError, match="auth.allow_anonymous"):
        load_config(environ={"ROBUSTMQ_AUTH_ALLOW_ANONYMOUS": "maybe"})
    with pytest.raises(ConfigError, match="auth.acl_default"):
        load_config(environ={"ROBUSTMQ_AUTH_ACL_DEFAULT": "sometimes"})
