"""MQTT 5 enhanced authentication with SCRAM-SHA-256 against the built-in users, over a
real socket: the CONNECT/AUTH/CONNACK exchange, the server's proof checked by the client,
wrong passwords, unknown users, users imported without SCRAM credentials, and the ACL
applying to the SCRAM user."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from robustmq._core import mqtt_codec
from robustmq.broker.auth.users import set_password
from robustmq.config import AuthConfig
from tests.integration.clients import Raw
from tests.unit.test_auth_scram import ScramClient

METHOD = "SCRAM-SHA-256"


@pytest.fixture(scope="module")
def users(tmp_path_factory):
    d = tmp_path_factory.mktemp("scram")
    set_password(str(d / "passwd"), "alice", "wonderland")
    (d / "acl").write_text("allow all all users/%u/#\ndeny all all #\n")
    return d


def _broker(broker_factory, users):
    return broker_factory(
        auth=AuthConfig(password_file=str(users / "passwd"), acl_file=str(users / "acl"))
    )


def _scram_connect(port, username, password, client_id="s1"):
    """Runs the exchange; returns (Raw, CONNACK, ScramClient)."""
    client = ScramClient(username, password)
    raw = Raw(port, 5)
    props = {"authentication_method": METHOD, "authentication_data": client.first()}
    raw.send_packet(mqtt_codec.Connect(client_id, protocol_version=5, properties=props))
    challenge = raw.recv()
    if isinstance(challenge, mqtt_codec.Connack):
        return raw, challenge, client
    assert isinstance(challenge, mqtt_codec.Auth) and challenge.reason_code == 0x18
    final = client.final(challenge.properties["authentication_data"])
    raw.send_packet(
        mqtt_codec.Auth(0x18, {"authentication_method": METHOD, "authentication_data": final})
    )
    return raw, raw.expect(mqtt_codec.Connack), client


def test_scram_success_and_server_proof(broker_factory, users):
    b = _broker(broker_factory, users)
    raw, ack, client = _scram_connect(b.port, "alice", "wonderland")
    assert ack.reason_code == 0
    assert ack.properties["authentication_method"] == METHOD
    assert client.server_valid(ack.properties["authentication_data"])
    # The connection is alice's: the %u rule applies.
    assert raw.subscribe("users/alice/x", "users/bob/x", qos=1).reason_codes == [1, 0x87]


@pytest.mark.parametrize("username, password", [("alice", "wrong"), ("nobody", "wonderland")])
def test_scram_failure_is_0x86(broker_factory, users, username, password):
    b = _broker(broker_factory, users)
    raw, ack, _ = _scram_connect(b.port, username, password)
    assert ack.reason_code == 0x86 and raw.closed()
    assert b.broker.stats["auth_failures"] == 1


def test_scram_malformed_client_first(broker_factory, users):
    b = _broker(broker_factory, users)
    raw = Raw(b.port, 5)
    props = {"authentication_method": METHOD, "authentication_data": b"\xff garbage"}
    raw.send_packet(mqtt_codec.Connect("m", protocol_version=5, properties=props))
    assert raw.expect(mqtt_codec.Connack).reason_code == 0x86
    assert raw.closed()


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="needs mosquitto_passwd")
def test_imported_user_without_scram_credentials_cannot_use_scram(broker_factory, tmp_path):
    path = tmp_path / "mosq"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(path), "dev", "pw"], check=True)
    b = broker_factory(auth=AuthConfig(password_file=str(path)))
    raw, ack, _ = _scram_connect(b.port, "dev", "pw")
    assert ack.reason_code == 0x86
    plain = Raw(b.port, 5)
    assert plain.connect("p", username="dev", password=b"pw").reason_code == 0


def test_no_users_no_scram(broker_factory):
    b = broker_factory()
    raw = Raw(b.port, 5)
    props = {"authentication_method": METHOD, "authentication_data": b"n,,n=a,r=b"}
    raw.send_packet(mqtt_codec.Connect("x", protocol_version=5, properties=props))
    assert raw.expect(mqtt_codec.Connack).reason_code == 0x8C  # bad authentication method
