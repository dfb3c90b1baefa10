"""SASL on the Kafka listener against the broker's users: confluent-kafka (PLAIN and
SCRAM-SHA-256), kafka-python (PLAIN) and aiokafka (PLAIN) authenticate with a good password
and produce and consume; a bad password fails with SASL_AUTHENTICATION_FAILED. Over a
raw socket: a request before authentication closes the connection (and is counted), an
unsupported mechanism is answered with the enabled ones, SaslHandshake v0's bare tokens
work. Last, ``robustmq-server start`` with ``[auth] password_file`` and
``[kafka] sasl_mechanisms``, as an operator runs it.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from robustmq._core import kafka_codec as kc
from robustmq.broker.auth.passwords import hash_password
from robustmq.broker.auth.users import MemoryUserStore, User, new_user
from robustmq.broker.kafka import server
from tests.conftest import free_port
from tests.integration.test_kafka_clients import KafkaThread
from tests.integration.test_kafka_protocol import Raw
from tests.integration.test_kafka_server import _start, _stop

ck = pytest.importorskip("confluent_kafka")
kafka = pytest.importorskip("kafka")
aiokafka = pytest.importorskip("aiokafka")

TIMEOUT = 30.0
BOTH = ["PLAIN", "SCRAM-SHA-256"]


def users() -> MemoryUserStore:
    # "mosq" has a password record only, as users imported from mosquitto_passwd do.
    return MemoryUserStore([new_user("alice", "s3cret"), User("mosq", hash_password("pw"))])


@pytest.fixture
def sasl_kafka(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    started: list[KafkaThread] = []

    def start(mechanisms: list[str], store: MemoryUserStore | None = None) -> KafkaThread:
        monkeypatch.setattr(
            server,
            "KafkaBroker",
            functools.partial(server.KafkaBroker, users=store if store is not None else users()),
        )
        k = KafkaThread(sasl_mechanisms=mechanisms)
        started.append(k)
        return k

    yield start
    errors = []
    for k in started:
        errors += k.problems()
        k.stop()
    assert not errors, f"the broker failed: {errors}"


def ck_config(kb: KafkaThread, mechanism: str, user: str, password: str, **extra: Any) -> dict:
    return {
        "bootstrap.servers": kb.bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": mechanism,
        "sasl.username": user,
        "sasl.password": password,
        **extra,
    }


def ck_roundtrip(kb: KafkaThread, mechanism: str, topic: str) -> list[bytes]:
    p = ck.Producer(ck_config(kb, mechanism, "alice", "s3cret"))
    for i in range(3):
        p.produce(topic, b"m%d" % i)
    assert p.flush(TIMEOUT) == 0
    c = ck.Consumer(
        ck_config(
            kb, mechanism, "alice", "s3cret", **{"group.id": "g", "auto.offset.reset": "earliest"}
        )
    )
    c.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT
    while len(got) < 3 and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.close()
    return got


def ck_auth_error(kb: KafkaThread, mechanism: str, user: str, password: str) -> Any:
    """The error librdkafka reports when its SASL authentication fails."""
    errors: list[Any] = []
    config = ck_config(kb, mechanism, user, password, error_cb=errors.append)
    a = ck.admin.AdminClient(config)  # connects to the bootstrap broker at once
    deadline = time.monotonic() + TIMEOUT
    while not errors and time.monotonic() < deadline:
        a.poll(0.1)
    assert errors, "librdkafka reported no error"
    return errors[0]


# --- confluent-kafka ------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", BOTH)
def test_confluent_kafka_authenticates_with_a_good_password(sasl_kafka, mechanism):
    kb = sasl_kafka(BOTH)
    assert ck_roundtrip(kb, mechanism, "t-" + mechanism) == [b"m0", b"m1", b"m2"]
    assert kb.broker.stats["sasl_authentications"] >= 2
    assert kb.broker.stats["sasl_failures"] == 0


@pytest.mark.parametrize("mechanism", BOTH)
def test_confluent_kafka_bad_password_fails_clearly(sasl_kafka, mechanism):
    kb = sasl_kafka(BOTH)
    err = ck_auth_error(kb, mechanism, "alice", "wrong")
    assert err.code() == ck.KafkaError._AUTHENTICATION
    assert "invalid username or password" in err.str(), err.str()
    err = ck_auth_error(kb, mechanism, "nobody", "s3cret")
    assert "invalid username or password" in err.str(), err.str()
    assert kb.broker.stats["sasl_failures"] >= 2


def test_scram_needs_scram_credentials(sasl_kafka):
    kb = sasl_kafka(BOTH)
    err = ck_auth_error(kb, "SCRAM-SHA-256", "mosq", "pw")
    assert "invalid username or password" in err.str(), err.str()
    # The same user, with a password record only, is fine with PLAIN.
    p = ck.Producer(ck_config(kb, "PLAIN", "mosq", "pw"))
    p.produce("mosq", b"x")
    assert p.flush(TIMEOUT) == 0


def test_a_mechanism_that_is_not_enabled_names_the_enabled_ones(sasl_kafka):
    kb = sasl_kafka(["PLAIN"])
    err = ck_auth_error(kb, "SCRAM-SHA-256", "alice", "s3cret")
    assert "PLAIN" in err.str(), err.str()
    raw = Raw(kb)
    answer = raw.call(17, 1, {"mechanism": "GSSAPI"})
    assert (answer["error_code"], answer["mechanisms"]) == (33, ["PLAIN"])
    raw.sock.settimeout(TIMEOUT)
    assert raw.sock.recv(1) == b""  # then the connection closes, as in Kafka
    raw.close()


def test_no_sasl_configured_keeps_clients_anonymous(sasl_kafka):
    kb = sasl_kafka([])
    p = ck.Producer({"bootstrap.servers": kb.bootstrap})
    p.produce("anon", b"x")
    assert p.flush(TIMEOUT) == 0
    err = ck_auth_error(kb, "PLAIN", "alice", "s3cret")
    assert "PLAIN" in err.str(), err.str()


# --- kafka-python, aiokafka -----------------------------------------------------------


def test_kafka_python_plain(sasl_kafka, caplog):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.errors import KafkaError as KpError

    kb = sasl_kafka(BOTH)
    auth = {
        "bootstrap_servers": kb.bootstrap,
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "alice",
    }
    p = KafkaProducer(sasl_plain_password="s3cret", **auth)
    p.send("kp", b"hello").get(TIMEOUT)
    p.close()
    c = KafkaConsumer(
        "kp",
        sasl_plain_password="s3cret",
        auto_offset_reset="earliest",
        consumer_timeout_ms=int(TIMEOUT * 1000),
        **auth,
    )
    assert next(iter(c)).value == b"hello"
    c.close()
    # kafka-python retries the bootstrap until its timeout, logging the broker's error.
    with pytest.raises(KpError):
        KafkaProducer(sasl_plain_password="wrong", bootstrap_timeout_ms=2000, **auth)
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("kafka.")]
    assert any(
        "SaslAuthenticationFailedError" in m and "invalid username or password" in m for m in logged
    ), logged
    assert kb.broker.stats["sasl_failures"] >= 1


def test_aiokafka_plain(sasl_kafka, caplog):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.errors import KafkaError as AioError

    kb = sasl_kafka(BOTH)

    def auth(password: str) -> dict[str, Any]:
        return {
            "bootstrap_servers": kb.bootstrap,
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_plain_username": "alice",
            "sasl_plain_password": password,
        }

    async def run() -> tuple[bytes, BaseException]:
        p = AIOKafkaProducer(**auth("s3cret"))
        await p.start()
        try:
            await p.send_and_wait("aio", b"hi")
        finally:
            await p.stop()
        c = AIOKafkaConsumer("aio", auto_offset_reset="earliest", **auth("s3cret"))
        await c.start()
        try:
            msg = await asyncio.wait_for(c.getone(), TIMEOUT)
        finally:
            await c.stop()
        bad = AIOKafkaProducer(**auth("wrong"))
        try:
            await bad.start()
        except AioError as exc:
            return msg.value, exc
        finally:
            await bad.stop()
        raise AssertionError("a wrong password was accepted")

    value, error = asyncio.run(run())
    assert value == b"hi"
    # aiokafka raises "Unable to bootstrap" and logs the broker's error.
    assert isinstance(error, aiokafka.errors.KafkaConnectionError), repr(error)
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("aiokafka")]
    assert any(
        "SaslAuthenticationFailed" in m and "invalid username or password" in m for m in logged
    ), logged


# --- raw protocol ---------------------------------------------------------------------


def test_a_request_before_authentication_closes_the_connection(sasl_kafka):
    kb = sasl_kafka(BOTH)
    raw = Raw(kb)
    versions = raw.call(18, 0, {})  # ApiVersions is allowed before authenticating
    assert versions["error_code"] == 0
    raw.send(3, 1, {"topics": None})
    raw.sock.settimeout(TIMEOUT)
    assert raw.sock.recv(1) == b""  # closed, no answer
    raw.close()
    assert kb.broker.stats["sasl_unauthenticated_requests"] == 1
    assert kb.broker.stats["protocol_errors"] == 1


def test_sasl_authenticate_without_a_handshake_is_refused_and_closed(sasl_kafka):
    kb = sasl_kafka(BOTH)
    raw = Raw(kb)
    answer = raw.call(36, 1, {"auth_bytes": b"\0alice\0s3cret"})
    assert answer["error_code"] == 34  # ILLEGAL_SASL_STATE
    raw.sock.settimeout(TIMEOUT)
    assert raw.sock.recv(1) == b""
    raw.close()


def test_handshake_v1_then_authenticate_then_requests(sasl_kafka):
    kb = sasl_kafka(["PLAIN"])
    raw = Raw(kb)
    assert raw.call(17, 1, {"mechanism": "PLAIN"}) == {"error_code": 0, "mechanisms": ["PLAIN"]}
    answer = raw.call(36, 2, {"auth_bytes": b"\0alice\0s3cret"})
    assert answer["error_code"] == 0 and answer["error_message"] is None
    assert raw.call(3, 1, {"topics": None})["brokers"][0]["node_id"] == 1
    raw.close()
    # A wrong password: the error, with a message, then the connection closes.
    raw = Raw(kb)
    raw.call(17, 1, {"mechanism": "PLAIN"})
    answer = raw.call(36, 2, {"auth_bytes": b"\0alice\0nope"})
    assert answer["error_code"] == 58  # SASL_AUTHENTICATION_FAILED
    assert "invalid username or password" in answer["error_message"]
    raw.sock.settimeout(TIMEOUT)
    assert raw.sock.recv(1) == b""
    raw.close()


def test_handshake_v0_takes_bare_tokens(sasl_kafka):
    kb = sasl_kafka(["PLAIN"])
    sock = socket.create_connection(("127.0.0.1", kb.port), timeout=TIMEOUT)
    sock.sendall(kc.encode_request(17, 0, 1, "raw", {"mechanism": "PLAIN"}))
    (size,) = struct.unpack(">i", _exactly(sock, 4))
    _, body = kc.decode_response(17, 0, _exactly(sock, size))
    assert body["error_code"] == 0
    token = b"\0alice\0s3cret"
    sock.sendall(struct.pack(">i", len(token)) + token)
    assert _exactly(sock, 4) == b"\0\0\0\0"  # PLAIN's empty server token
    sock.sendall(kc.encode_request(3, 1, 2, "raw", {"topics": None}))
    (size,) = struct.unpack(">i", _exactly(sock, 4))
    _, body = kc.decode_response(3, 1, _exactly(sock, size))
    assert body["controller_id"] == 1
    sock.close()
    sock = socket.create_connection(("127.0.0.1", kb.port), timeout=TIMEOUT)
    sock.sendall(kc.encode_request(17, 0, 1, "raw", {"mechanism": "PLAIN"}))
    (size,) = struct.unpack(">i", _exactly(sock, 4))
    _exactly(sock, size)
    token = b"\0alice\0bad"
    sock.sendall(struct.pack(">i", len(token)) + token)
    assert sock.recv(1) == b""  # v0 has no error response: the connection closes
    sock.close()


def _exactly(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        assert chunk, "connection closed"
        buf += chunk
    return buf


# --- robustmq-server ------------------------------------------------------------------


def test_robustmq_server_with_a_password_file_and_sasl(tmp_path):
    passwords = tmp_path / "passwd"
    subprocess.run(
        [sys.executable, "-m", "robustmq.cli.server", "passwd", str(passwords), "bob"],
        input="pa55\npa55\n",
        text=True,
        check=True,
        capture_output=True,
    )
    config = tmp_path / "robustmq.toml"
    config.write_text(
        f'[kafka]\nsasl_mechanisms = ["PLAIN", "SCRAM-SHA-256"]\n'
        f'[auth]\npassword_file = "{passwords}"\n'
    )
    port = free_port()
    proc, _ = _start(str(tmp_path / "data"), port, "--storage", "memory", "--config", str(config))
    try:
        for mechanism in BOTH:
            p = ck.Producer(
                {
                    "bootstrap.servers": f"127.0.0.1:{port}",
                    "security.protocol": "SASL_PLAINTEXT",
                    "sasl.mechanism": mechanism,
                    "sasl.username": "bob",
                    "sasl.password": "pa55",
                }
            )
            p.produce("srv", b"x")
            assert p.flush(TIMEOUT) == 0, mechanism
        reports: list[Any] = []
        unauthenticated = ck.Producer(
            {"bootstrap.servers": f"127.0.0.1:{port}", "message.timeout.ms": 2000}
        )
        unauthenticated.produce("srv", b"y", on_delivery=lambda err, msg: reports.append(err))
        unauthenticated.flush(TIMEOUT)
        assert len(reports) == 1 and reports[0] is not None  # never delivered
    finally:
        assert _stop(proc) == 0


def test_sasl_mechanisms_are_checked_in_the_config(tmp_path):
    from robustmq.config import load_config
    from robustmq.errors import ConfigError

    path = tmp_path / "robustmq.toml"
    path.write_text('[kafka]\nsasl_mechanisms = ["GSSAPI"]\n')
    with pytest.raises(ConfigError, match="kafka.sasl_mechanisms"):
        load_config(str(path), environ={})
    env = {"ROBUSTMQ_KAFKA_SASL_MECHANISMS": "PLAIN,SCRAM-SHA-256"}
    assert load_config(environ=env).kafka.sasl_mechanisms == BOTH


def test_plain_password_checks_run_off_the_event_loop(sasl_kafka, monkeypatch):
    import threading

    from robustmq.broker.auth import authn

    kb = sasl_kafka(["PLAIN"])
    checked_on: list[threading.Thread] = []
    real = authn.verify_password

    def spy(record: str, password: bytes) -> bool:
        checked_on.append(threading.current_thread())
        return real(record, password)

    monkeypatch.setattr(authn, "verify_password", spy)
    raw = Raw(kb)
    raw.call(17, 1, {"mechanism": "PLAIN"})
    assert raw.call(36, 2, {"auth_bytes": b"\0alice\0s3cret"})["error_code"] == 0
    raw.close()
    loop_thread = kb._thread
    assert checked_on and all(t is not loop_thread for t in checked_on)


def test_kafka_python_scram(sasl_kafka):
    from kafka import KafkaProducer

    kb = sasl_kafka(["SCRAM-SHA-256"])
    p = KafkaProducer(
        bootstrap_servers=kb.bootstrap,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_plain_username="alice",
        sasl_plain_password="s3cret",
    )
    p.send("kps", b"scram").get(TIMEOUT)
    p.close()
    assert kb.broker.stats["sasl_authentications"] >= 1
