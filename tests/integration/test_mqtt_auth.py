"""Password authentication over real sockets: paho-mqtt, mosquitto_pub and raw packets
against users from a password file (ours and mosquitto_passwd's), anonymous modes, the
CONNACK codes and counters, bad input, and robustmq-server passwd/start as users run them."""

from __future__ import annotations

import queue
import shutil
import subprocess

import paho.mqtt.client as paho
import pytest

from robustmq._core import mqtt_codec
from robustmq.broker.auth.users import set_password
from robustmq.config import AuthConfig
from tests.conftest import free_port
from tests.integration.clients import TIMEOUT, Bystander, Paho, Raw, code, mosquitto_pub
from tests.integration.test_cli import SERVER, _env, _start, _stop

# Other servers on this machine may hold the default Kafka port.
NO_KAFKA = {"ROBUSTMQ_KAFKA_PORT": "0"}


@pytest.fixture(scope="module")
def password_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("auth") / "passwd"
    set_password(str(path), "alice", "wonderland")
    set_password(str(path), "bob", "builder")
    return path


def _auth_broker(broker_factory, password_file, **auth):
    return broker_factory(auth=AuthConfig(password_file=str(password_file), **auth))


def _raw_code(port, version, client_id="raw", **kwargs):
    raw = Raw(port, version)
    connack = raw.connect(client_id, **kwargs)
    assert isinstance(connack, mqtt_codec.Connack), connack
    if connack.reason_code:
        assert raw.closed(), "a refused client must be disconnected"
    raw.close()
    return connack.reason_code


class AliceBystander(Bystander):
    """A Bystander that logs in as alice."""

    def __init__(self, port: int) -> None:
        self.topic = "alice/check"
        self.client = Paho(port, "alice-bystander", 4, username="alice", password="wonderland")
        self.client.subscribe(self.topic, 1)
        self.count = 0


def _paho_code(port, version, username=None, password=None):
    client = Paho(port, "p", version, username=username, password=password, connect=False)
    _, rc, _ = client.connect()
    client.client.loop_stop()  # no automatic reconnect after a refusal
    client.client.disconnect()
    return code(rc)


@pytest.mark.parametrize("version", [4, 5])
def test_good_password_connects_and_works(broker_factory, password_file, version):
    b = _auth_broker(broker_factory, password_file)
    c = Paho(b.port, "alice-1", version, username="alice", password="wonderland")
    assert code(c.reason_code) == 0
    c.subscribe("a/b", 1)
    c.publish("a/b", b"hi", 1)
    assert c.get().payload == b"hi"
    assert b.broker.stats["auth_failures"] == 0


@pytest.mark.parametrize(
    "username, password",
    [("alice", b"wrong"), ("alice", None), ("mallory", b"wonderland"), ("alice", b"")],
)
def test_bad_credentials_are_0x86_and_0x04_without_a_hint(
    broker_factory, password_file, username, password
):
    b = _auth_broker(broker_factory, password_file)
    assert _raw_code(b.port, 5, username=username, password=password) == 0x86
    assert _raw_code(b.port, 4, username=username, password=password) == 0x04
    assert b.broker.stats["auth_failures"] == 2


def test_paho_sees_bad_user_name_or_password(broker_factory, password_file):
    b = _auth_broker(broker_factory, password_file)
    assert _paho_code(b.port, 5, "bob", "wrong") == 0x86
    assert _paho_code(b.port, 5, "bob", "builder") == 0


def test_anonymous_refused_when_users_exist(broker_factory, password_file, caplog):
    b = _auth_broker(broker_factory, password_file)
    assert "anonymous clients refused" in caplog.text
    assert _raw_code(b.port, 5) == 0x87
    assert _raw_code(b.port, 4) == 0x05


def test_anonymous_allowed_when_configured(broker_factory, password_file, caplog):
    b = _auth_broker(broker_factory, password_file, allow_anonymous="true")
    assert "anonymous clients allowed" in caplog.text
    assert _raw_code(b.port, 4) == 0
    assert _raw_code(b.port, 4, username="alice", password=b"bad") == 0x04  # still checked


def _ws_connect(port, password):
    """paho over WebSocket; the CONNACK code, or None if the connection closed without one."""
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="ws", transport="websockets")
    c.ws_set_options(path="/mqtt")
    c.username_pw_set("alice", password)
    got: queue.Queue = queue.Queue()
    c.on_connect = lambda cl, ud, flags, rc, pr: got.put(code(rc))
    c.on_disconnect = lambda cl, ud, flags, rc, pr: got.put(None)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        return got.get(timeout=TIMEOUT)
    finally:
        c.loop_stop()
        c.disconnect()


def test_websocket_listener_checks_passwords(broker_factory, password_file):
    b = broker_factory(ws_port=free_port(), auth=AuthConfig(password_file=str(password_file)))
    assert _ws_connect(b.broker.config.ws_port, "wonderland") == 0
    for _ in range(5):  # the refusal's CONNACK frame goes out before the close
        assert _ws_connect(b.broker.config.ws_port, "wrong") == 0x86
    assert b.broker.stats["auth_failures"] == 5


def test_no_auth_configured_accepts_everyone(broker_factory, caplog):
    b = broker_factory()
    assert "authentication off" in caplog.text
    assert b.broker.security.authn is None
    assert _raw_code(b.port, 5, username="any", password=b"thing") == 0
    assert _raw_code(b.port, 4) == 0


def test_anonymous_off_without_users_refuses_everyone(broker_factory):
    b = broker_factory(auth=AuthConfig(allow_anonymous="false"))
    assert _raw_code(b.port, 4) == 0x05
    assert _raw_code(b.port, 4, username="x", password=b"y") == 0x04


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="needs mosquitto_passwd")
@pytest.mark.parametrize("algorithm", ["sha512-pbkdf2", "sha512"])
def test_mosquitto_passwd_file_with_mosquitto_pub(broker_factory, tmp_path, algorithm):
    path = tmp_path / "mosq"
    subprocess.run(
        ["mosquitto_passwd", "-H", algorithm, "-c", "-b", str(path), "dev", "p4ss"], check=True
    )
    b = _auth_broker(broker_factory, path)
    watcher = Paho(b.port, "w", 4, username="dev", password="p4ss")
    watcher.subscribe("m/t", 1)
    ok = mosquitto_pub(b.port, "m/t", "-m", "x", "-q", "1", "-u", "dev", "-P", "p4ss")
    assert ok.returncode == 0, ok.stderr
    assert watcher.get().payload == b"x"
    bad = mosquitto_pub(b.port, "m/t", "-m", "x", "-u", "dev", "-P", "nope")
    assert bad.returncode != 0
    assert "not authorised" in bad.stderr.lower() or "bad user" in bad.stderr.lower()
    watcher.expect_nothing()


def test_very_long_username_is_refused_and_others_still_served(broker_factory, password_file):
    b = _auth_broker(broker_factory, password_file)
    bystander = AliceBystander(b.port)
    assert _raw_code(b.port, 5, username="u" * 65535, password=b"x") == 0x86
    assert _raw_code(b.port, 4, username="é" * 30000, password=b"x") == 0x04
    bystander.check()


def test_bystander_username_is_checked(broker_factory, password_file):
    b = _auth_broker(broker_factory, password_file, allow_anonymous="true")
    Bystander(b.port).check()


def _connect_bytes(username: bytes, version: int = 4) -> bytes:
    """A CONNECT with a raw username field (no validation on our side)."""
    name = b"MQTT"
    variable = len(name).to_bytes(2, "big") + name + bytes((version, 0xC2)) + b"\x00\x3c"
    if version == 5:
        variable += b"\x00"
    payload = b"\x00\x01c" + len(username).to_bytes(2, "big") + username + b"\x00\x01p"
    body = variable + payload
    assert len(body) < 128
    return bytes((0x10, len(body))) + body


@pytest.mark.parametrize("version", [4, 5])
@pytest.mark.parametrize("username", [b"\xff\xfe", b"ab\xc3", b"a\x00b", b"\xed\xa0\x80"])
def test_invalid_utf8_username_closes_the_connection(broker_factory, password_file, version,
                                                     username):  # fmt: skip
    b = _auth_broker(broker_factory, password_file)
    bystander = AliceBystander(b.port)
    raw = Raw(b.port, version)
    raw.send(_connect_bytes(username, version))
    packets = raw.packets_until_closed()
    assert all(not isinstance(p, mqtt_codec.Connack) or p.reason_code >= 0x80 for p in packets)
    bystander.check()


def test_password_without_username_in_311_is_malformed(broker_factory, password_file):
    b = _auth_broker(broker_factory, password_file)
    # Flags 0x42: password without username, forbidden in 3.1.1 (§3.1.2.9).
    body = b"\x00\x04MQTT\x04\x42\x00\x3c\x00\x01c\x00\x01p"
    raw = Raw(b.port, 4)
    raw.send(bytes((0x10, len(body))) + body)
    packets = raw.packets_until_closed()
    assert not any(isinstance(p, mqtt_codec.Connack) and p.reason_code == 0 for p in packets)


def test_passwd_command_then_server_start(tmp_path):
    path = tmp_path / "users"
    done = subprocess.run(
        [*SERVER, "passwd", str(path), "carol", "--password", "c4rol"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "carol" in done.stdout and path.read_text().startswith("carol:$7$")
    proc, port, lines = _start(
        tmp_path, env=_env(**NO_KAFKA, ROBUSTMQ_AUTH_PASSWORD_FILE=str(path))
    )
    try:
        assert _paho_code(port, 5, "carol", "c4rol") == 0
        assert _paho_code(port, 5, "carol", "nope") == 0x86
        assert _raw_code(port, 4) == 0x05
    finally:
        assert _stop(proc) == 0
    assert "authentication on" in proc.stderr.read()


@pytest.mark.parametrize(
    "content, line",
    [("carol:$7$notanumber$AAAA$AAAA\n", 1), ("# users\n\ncarol\n", 3)],
)
def test_server_start_fails_on_a_bad_password_file_line(tmp_path, content, line):
    path = tmp_path / "users"
    path.write_text(content)
    proc = subprocess.run(
        [*SERVER, "start", "--mqtt-port", "0", "--data-dir", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=60,
        env=_env(**NO_KAFKA, ROBUSTMQ_AUTH_PASSWORD_FILE=str(path)),
    )  # fmt: skip
    assert proc.returncode != 0
    assert f"{path}:{line}:" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_server_start_fails_on_a_missing_password_file(tmp_path):
    proc = subprocess.run(
        [*SERVER, "start", "--mqtt-port", "0", "--data-dir", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=60,
        env=_env(**NO_KAFKA, ROBUSTMQ_AUTH_PASSWORD_FILE=str(tmp_path / "missing")),
    )  # fmt: skip
    assert proc.returncode != 0 and "cannot read the password file" in proc.stderr
