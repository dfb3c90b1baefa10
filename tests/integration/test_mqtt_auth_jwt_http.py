"""JWT and HTTP authentication over real sockets, through the authenticator chain: HS256
and RS256 tokens in the password, expiry, claims in ACL placeholders; an aiohttp auth
service that allows, denies, ignores, times out, and one a client leaves while it thinks."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from aiohttp import web

from robustmq._core import mqtt_codec
from robustmq.broker.auth.users import set_password
from robustmq.config import AuthConfig
from tests.conftest import free_port
from tests.integration.clients import Paho, Raw, code, wait_until
from tests.unit.test_auth_jwt import hs256, public_pem, rs256, rsa_key

SECRET = "s3cret-key"


def _code(port, version=5, client_id="c", **kwargs):
    raw = Raw(port, version)
    ack = raw.connect(client_id, **kwargs)
    raw.close()
    assert isinstance(ack, mqtt_codec.Connack), ack
    return ack.reason_code


# ------------------------------------------------------------------------------- JWT


def test_hs256_token_in_the_password(broker_factory):
    b = broker_factory(auth=AuthConfig(jwt_secret=SECRET))
    token = hs256({"sub": "d1", "exp": time.time() + 60}, SECRET)
    c = Paho(b.port, "d1", 5, username="d1", password=token)
    assert code(c.reason_code) == 0
    assert _code(b.port, 5, username="d1", password=hs256({"sub": "d1"}, "wrong").encode()) == 0x86
    assert _code(b.port, 4, username="d1", password=b"not-a-jwt") == 0x04


@pytest.mark.parametrize("version, refused", [(5, 0x86), (4, 0x04)])
def test_expired_and_not_yet_valid_tokens(broker_factory, version, refused):
    b = broker_factory(auth=AuthConfig(jwt_secret=SECRET))
    expired = hs256({"exp": time.time() - 5}, SECRET).encode()
    early = hs256({"nbf": time.time() + 600}, SECRET).encode()
    assert _code(b.port, version, username="u", password=expired) == refused
    assert _code(b.port, version, username="u", password=early) == refused


def test_rs256_with_a_public_key_file(broker_factory, tmp_path):
    key = rsa_key()
    (tmp_path / "pub.pem").write_bytes(public_pem(key))
    b = broker_factory(auth=AuthConfig(jwt_public_key_file=str(tmp_path / "pub.pem")))
    assert _code(b.port, username="u", password=rs256({"sub": "u"}, key).encode()) == 0
    assert _code(b.port, username="u", password=rs256({"sub": "u"}, rsa_key()).encode()) == 0x86


def test_claims_in_acl_placeholders(broker_factory, tmp_path):
    (tmp_path / "acl").write_text("allow all all tenants/${jwt.tenant}/#\ndeny all all #\n")
    b = broker_factory(auth=AuthConfig(jwt_secret=SECRET, acl_file=str(tmp_path / "acl")))
    c = Paho(b.port, "t", 5, username="u", password=hs256({"tenant": "acme"}, SECRET))
    assert [code(x) for x in c.subscribe("tenants/acme/#", 1)] == [1]
    assert [code(x) for x in c.subscribe("tenants/other/#", 1)] == [0x87]


def test_chain_password_then_jwt(broker_factory, tmp_path):
    set_password(str(tmp_path / "pw"), "alice", "pw")
    b = broker_factory(
        auth=AuthConfig(password_file=str(tmp_path / "pw"), jwt_secret=SECRET,
                        authenticators=["password", "jwt"])
    )  # fmt: skip
    assert _code(b.port, username="alice", password=b"pw") == 0
    # Not a user: the password authenticator ignores, JWT decides.
    assert _code(b.port, username="device", password=hs256({}, SECRET).encode()) == 0
    # A user with a wrong password is denied at once: JWT is not asked.
    assert _code(b.port, username="alice", password=hs256({}, SECRET).encode()) == 0x86


# ------------------------------------------------------------------------------ HTTP


class AuthService:
    """A local aiohttp server answering POST /auth in a thread with its own loop."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[dict] = []
        self.loop = asyncio.new_event_loop()
        self.release = asyncio.Event()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_post("/auth", self.handle)
        runner = web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        self.loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self.runner = runner
        ready.set()
        self.loop.run_forever()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(body)
        password = body.get("password")
        if password == "slow":
            await asyncio.sleep(3)
        if password in ("wait", "wait-good"):
            await self.release.wait()
        if password == "garbage":
            return web.Response(text="<html>")
        if password == "500":
            return web.Response(status=500)
        if password == "empty":
            return web.Response(status=204)
        result = {"good": "allow", "wait-good": "allow", "pass-on": "ignore"}.get(password, "deny")
        return web.json_response({"result": result, "is_superuser": body["username"] == "root"})

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/auth"

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.release.set)
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def service():
    s = AuthService()
    yield s
    s.stop()


def _http_broker(broker_factory, service, **auth):
    auth.setdefault("http_timeout", 0.5)
    return broker_factory(auth=AuthConfig(http_url=service.url(), **auth))


@pytest.mark.parametrize("version", [4, 5])
def test_http_allow_and_deny(broker_factory, service, version):
    b = _http_broker(broker_factory, service)
    c = Paho(b.port, "h1", version, username="u", password="good")
    assert code(c.reason_code) == 0
    c.subscribe("x", 1)
    c.publish("x", b"after async connect", 1)
    assert c.get().payload == b"after async connect"
    assert _code(b.port, version, username="u", password=b"bad") == (0x86 if version == 5 else 4)
    assert service.requests[0] == {"clientid": "h1", "username": "u", "password": "good",
                                   "peerhost": "127.0.0.1"}  # fmt: skip


def test_http_204_is_allow(broker_factory, service):
    b = _http_broker(broker_factory, service)
    assert _code(b.port, username="u", password=b"empty") == 0


@pytest.mark.parametrize("password", [b"slow", b"garbage", b"500"])
@pytest.mark.parametrize("version, refused", [(5, 0x88), (4, 0x03)])
def test_http_timeout_or_bad_answer_is_server_unavailable(
    broker_factory, service, password, version, refused
):
    b = _http_broker(broker_factory, service, http_timeout=0.3)
    started = time.monotonic()
    assert _code(b.port, version, username="u", password=password) == refused
    assert time.monotonic() - started < 2.5  # the timeout, not the service, ended it
    http = b.broker.security.authn.authenticators[0]
    assert http.failures == 1


def test_http_ignore_passes_to_the_next(broker_factory, service, tmp_path):
    set_password(str(tmp_path / "pw"), "alice", "pass-on")
    b = _http_broker(broker_factory, service, password_file=str(tmp_path / "pw"),
                     authenticators=["http", "password"])  # fmt: skip
    assert _code(b.port, username="alice", password=b"pass-on") == 0
    assert _code(b.port, username="bob", password=b"pass-on") == 0x86


def test_http_answers_are_cached(broker_factory, service):
    b = _http_broker(broker_factory, service, http_cache_ttl=60)
    for _ in range(3):
        assert _code(b.port, client_id="same", username="u", password=b"good") == 0
    assert _code(b.port, client_id="same", username="u", password=b"bad") == 0x86
    assert len(service.requests) == 2


def test_superuser_skips_the_acl(broker_factory, service, tmp_path):
    (tmp_path / "acl").write_text("deny all all #\n")
    b = _http_broker(broker_factory, service, acl_file=str(tmp_path / "acl"))
    root = Paho(b.port, "r", 5, username="root", password="good")
    assert [code(x) for x in root.subscribe("any/thing", 0)] == [0]
    user = Paho(b.port, "u", 5, username="user", password="good")
    assert [code(x) for x in user.subscribe("any/thing", 0)] == [0x87]


@pytest.mark.parametrize("password", [b"wait", b"wait-good"])
def test_client_leaving_during_http_auth(broker_factory, service, password):
    b = _http_broker(broker_factory, service, http_timeout=5)
    raw = Raw(b.port, 5)
    raw.send_packet(mqtt_codec.Connect("leaver", protocol_version=5, username="u",
                                       password=password))  # fmt: skip
    assert wait_until(lambda: len(service.requests) == 1)
    raw.close()
    # Reading is paused, so the broker notices the close once the answer is in.
    service.loop.call_soon_threadsafe(service.release.set)
    assert wait_until(lambda: b.run(lambda: len(b.broker.connections)) == 0)
    assert wait_until(lambda: b.run(lambda: len(b.broker.sessions)) == 0)
    assert b.run(lambda: dict(b.broker.security.limits.per_ip)) == {}
    c = Paho(b.port, "next", 5, username="u", password="good")
    assert code(c.reason_code) == 0


def test_reading_pauses_while_http_auth_runs(broker_factory, service):
    b = _http_broker(broker_factory, service, http_timeout=5)
    raw = Raw(b.port, 5)
    raw.send_packet(mqtt_codec.Connect("paused", protocol_version=5, username="u",
                                       password=b"wait"))  # fmt: skip
    assert wait_until(lambda: len(service.requests) == 1)
    raw.quiet(0.2)  # no CONNACK yet
    service.loop.call_soon_threadsafe(service.release.set)
    ack = raw.expect(mqtt_codec.Connack)
    assert ack.reason_code == 0x86  # "wait" is not a good password
    assert raw.closed()


def test_stopping_the_broker_during_http_auth(broker_factory, service):
    b = _http_broker(broker_factory, service, http_timeout=5)
    raw = Raw(b.port, 5)
    raw.send_packet(mqtt_codec.Connect("s", protocol_version=5, username="u", password=b"wait"))
    assert wait_until(lambda: len(service.requests) == 1)
    b.call(b.broker.stop())  # the fixture then checks no exception was logged
    assert raw.closed()
