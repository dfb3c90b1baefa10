"""Client certificates on the TLS listener: the certificate's CN as the username
(use_identity_as_username), a certificate from the wrong CA, and no certificate."""

from __future__ import annotations

import queue
import socket
import ssl
import subprocess

import paho.mqtt.client as paho
import pytest

from robustmq._core import mqtt_codec
from robustmq.broker.auth.users import set_password
from robustmq.config import AuthConfig
from tests.conftest import free_port
from tests.integration.clients import LIVE, TIMEOUT, Paho, code


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """Our CA with a server and a client certificate, and a rogue CA with its own client
    certificate carrying the same CN."""
    d = tmp_path_factory.mktemp("authcerts")
    for ca in ("ca", "rogue"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-subj", f"/CN={ca}", "-keyout", str(d / f"{ca}.key"), "-out", str(d / f"{ca}.pem"))  # fmt: skip
    for name, cn, ca in (("server", "127.0.0.1", "ca"), ("client", "device-7", "ca"),
                         ("rogue-client", "device-7", "rogue")):  # fmt: skip
        key, csr, pem, ext = (d / f"{name}.{x}" for x in ("key", "csr", "pem", "ext"))
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
                 "-keyout", str(key), "-out", str(csr))  # fmt: skip
        ext.write_text(
            "subjectAltName=IP:127.0.0.1\n" if name == "server" else "extendedKeyUsage=clientAuth\n"
        )
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(d / f"{ca}.pem"), "-CAkey",
                 str(d / f"{ca}.key"), "-CAcreateserial", "-days", "2", "-extfile", str(ext),
                 "-out", str(pem))  # fmt: skip
    set_password(str(d / "passwd"), "alice", "pw")
    (d / "acl").write_text("allow all all devices/%u/#\ndeny all all #\n")
    return d


def _broker(broker_factory, certs, verify_client, blacklist=()):
    return broker_factory(
        tls_port=free_port(),
        certfile=str(certs / "server.pem"),
        keyfile=str(certs / "server.key"),
        cafile=str(certs / "ca.pem"),
        verify_client=verify_client,
        auth=AuthConfig(
            password_file=str(certs / "passwd"),
            acl_file=str(certs / "acl"),
            use_identity_as_username=True,
            blacklist=list(blacklist),
        ),
    )


class TlsClient:
    def __init__(self, port, certs, cert=None, version=paho.MQTTv311, username=None):
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="tls-c",
                                  protocol=version)  # fmt: skip
        LIVE.append(self)
        self.client.tls_set(
            ca_certs=str(certs / "ca.pem"),
            certfile=cert and str(certs / f"{cert}.pem"),
            keyfile=cert and str(certs / f"{cert}.key"),
        )
        if username:
            self.client.username_pw_set(username, "x")
        self.connack: queue.Queue = queue.Queue()
        self.subacks: queue.Queue = queue.Queue()
        self.client.on_connect = lambda c, u, f, rc, p: self.connack.put(rc)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put(rcs)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def reason_code(self):
        rc = self.connack.get(timeout=TIMEOUT)
        self.client.disconnect() if rc != 0 else None
        return rc

    def close(self):
        self.client.loop_stop()
        self.client.disconnect()

    kill = close  # what stop_clients() calls on clients it does not know


def test_certificate_cn_is_the_username(broker_factory, certs):
    b = _broker(broker_factory, certs, "required")
    c = TlsClient(b.broker.config.tls_port, certs, "client")
    assert c.reason_code() == 0
    conn = b.run(lambda: next(x for x in b.broker.connections if x.connected))
    assert conn.username == "device-7"
    # The %u ACL rule applies to the certificate's name.
    c.client.subscribe("devices/device-7/cmd", 1)
    assert [int(x.value) for x in c.subacks.get(timeout=TIMEOUT)] == [1]
    c.client.subscribe("devices/other/cmd", 1)
    assert [int(x.value) for x in c.subacks.get(timeout=TIMEOUT)] == [0x80]
    c.close()


def test_certificate_overrides_a_claimed_username(broker_factory, certs):
    b = _broker(broker_factory, certs, "required")
    c = TlsClient(b.broker.config.tls_port, certs, "client", username="alice")
    assert c.reason_code() == 0
    conn = b.run(lambda: next(x for x in b.broker.connections if x.connected))
    assert conn.username == "device-7"
    c.close()


def _tls_connect_answer(port, certs, cert):
    """Opens TLS with ``cert``, sends a CONNECT; returns the bytes answered, or the error."""
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    ctx.load_cert_chain(str(certs / f"{cert}.pem"), str(certs / f"{cert}.key"))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            with ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
                tls.sendall(mqtt_codec.encode(mqtt_codec.Connect("rogue"), 4))
                # TLS 1.3 reports the client certificate's rejection on the first read.
                return tls.recv(100)
    except (ssl.SSLError, ConnectionError) as exc:
        return exc


def test_certificate_from_the_wrong_ca_fails_the_handshake(broker_factory, certs):
    b = _broker(broker_factory, certs, "optional")
    port = b.broker.config.tls_port
    assert _tls_connect_answer(port, certs, "client")[:1] == b"\x20"  # CONNACK: the control
    answer = _tls_connect_answer(port, certs, "rogue-client")
    assert isinstance(answer, (ssl.SSLError, ConnectionError)) or answer == b"", answer
    assert b.broker.stats["auth_failures"] == 0  # it never got as far as CONNECT


def test_no_certificate_is_refused_when_identity_is_the_username(broker_factory, certs):
    b = _broker(broker_factory, certs, "optional")
    assert TlsClient(b.broker.config.tls_port, certs, None, username="alice").reason_code() != 0
    assert b.broker.stats["auth_failures"] == 1


def test_plain_tcp_listener_still_uses_passwords(broker_factory, certs):
    b = _broker(broker_factory, certs, "optional")
    assert code(Paho(b.port, "plain", 4, username="alice", password="pw").reason_code) == 0
    client = Paho(b.port, "plain2", 4, username="alice", password="bad", connect=False)
    _, rc, _ = client.connect()
    client.client.loop_stop()
    assert code(rc) == 0x86


def test_blacklisted_certificate_name(broker_factory, certs):
    b = _broker(broker_factory, certs, "required", blacklist=[{"username": "device-7"}])
    rc = TlsClient(b.broker.config.tls_port, certs, "client").reason_code()
    assert code(rc) == 0x87  # paho reports 3.1.1 return code 5 (banned) as 0x87
    assert b.broker.stats["connect_banned"] == 1
