"""TLS, WebSocket and WebSocket/TLS listeners, driven by paho-mqtt and mosquitto clients."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import paho.mqtt.client as paho
import pytest

from robustmq._core import mqtt_codec
from tests.conftest import free_port
from tests.integration.clients import TIMEOUT, Paho, Raw


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all from openssl."""
    d = tmp_path_factory.mktemp("certs")
    ca_key, ca = d / "ca.key", d / "ca.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    for name, cn in (("server", "127.0.0.1"), ("client", "device-7")):
        key, csr, pem = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.pem"
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
                 "-keyout", str(key), "-out", str(csr))  # fmt: skip
        ext = d / f"{name}.ext"
        ext.write_text(
            "subjectAltName=IP:127.0.0.1\n" if name == "server" else "extendedKeyUsage=clientAuth\n"
        )
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
                 "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(pem))  # fmt: skip
    return d


def _tls_broker(broker_factory, certs, verify_client="none"):
    return broker_factory(
        tls_port=free_port(),
        wss_port=free_port(),
        certfile=str(certs / "server.pem"),
        keyfile=str(certs / "server.key"),
        cafile=str(certs / "ca.pem"),
        verify_client=verify_client,
    )


def _client(port, transport="tcp", ca=None, cert=None, key=None, client_id="c"):
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, transport=transport,
                    protocol=paho.MQTTv311)  # fmt: skip
    if transport == "websockets":
        c.ws_set_options(path="/mqtt")
    if ca is not None:
        c.tls_set(ca_certs=str(ca), certfile=cert and str(cert), keyfile=key and str(key))
    received = []
    c.on_message = lambda cl, ud, msg: received.append((msg.topic, msg.payload))
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c, received


def _roundtrip(port, **kwargs):
    c, received = _client(port, **kwargs)
    try:
        c.subscribe("tls/#", 1)
        deadline = time.monotonic() + TIMEOUT
        info = None
        while not received and time.monotonic() < deadline:
            if info is None:
                time.sleep(0.2)
                info = c.publish("tls/x", b"secret", 1)
            time.sleep(0.05)
        assert received == [("tls/x", b"secret")]
    finally:
        c.loop_stop()
        c.disconnect()


def test_tls_listener_serves_mqtt(broker_factory, certs):
    b = _tls_broker(broker_factory, certs)
    _roundtrip(b.config.tls_port, ca=certs / "ca.pem")


def test_tls_listener_rejects_plain_tcp_bytes(broker_factory, certs):
    b = _tls_broker(broker_factory, certs)
    raw = Raw(b.config.tls_port)
    raw.send_packet(mqtt_codec.Connect("plain"))
    assert raw.closed()
    # and the plain listener still works next to it
    Paho(b.port, "ok", 4).disconnect()


def test_required_client_certificate(broker_factory, certs):
    b = _tls_broker(broker_factory, certs, verify_client="required")
    _roundtrip(
        b.config.tls_port, ca=certs / "ca.pem", cert=certs / "client.pem", key=certs / "client.key"
    )
    # Without a client certificate: no CONNACK ever comes back (TLS 1.3 reports the
    # refusal after the handshake, on the first read).
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    with socket.create_connection(("127.0.0.1", b.config.tls_port), timeout=TIMEOUT) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(mqtt_codec.encode(mqtt_codec.Connect("nocert")))
                if not tls.recv(4):
                    raise ConnectionError("closed without CONNACK")


def test_websocket_listener(broker_factory):
    b = broker_factory(ws_port=free_port())
    _roundtrip(b.config.ws_port, transport="websockets")


def test_websocket_tls_listener(broker_factory, certs):
    b = _tls_broker(broker_factory, certs)
    _roundtrip(b.config.wss_port, transport="websockets", ca=certs / "ca.pem")


def test_websocket_path_without_upgrade_is_a_clear_400(broker_factory):
    b = broker_factory(ws_port=free_port())
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{b.config.ws_port}/mqtt", timeout=TIMEOUT)
    assert err.value.code == 400
    assert b"WebSocket" in err.value.read()


def test_mosquitto_clients_over_tls(broker_factory, certs):
    b = _tls_broker(broker_factory, certs)
    port = str(b.config.tls_port)
    tls = ["--cafile", str(certs / "ca.pem")]
    sub = subprocess.Popen(
        [
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            port,
            *tls,
            "-t",
            "m/#",
            "-C",
            "1",
            "-W",
            "10",
            "-v",
        ],
        stdout=subprocess.PIPE,
    )
    time.sleep(0.5)
    subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", port, *tls, "-t", "m/1", "-m", "hi"],
        check=True,
        timeout=10,
    )
    out, _ = sub.communicate(timeout=15)
    assert out.decode().strip() == "m/1 hi"


def test_new_connections_keep_the_loop_awake_for_their_connect(broker):
    """The TCP listener's connections arm the accept poll (``lanes.AcceptPoll``) on the
    loop the broker runs on, at most once per loop iteration, and every client still
    gets its CONNACK."""
    context = broker.broker.lane_context
    poll = context.accept_poll
    assert poll is not None
    scheduled = []

    def call_soon(callback):
        scheduled.append(callback)
        return broker.loop.call_soon(callback)

    broker.run(setattr, context, "accept_poll", type(poll)(poll.fd, poll.window_ns, call_soon))
    clients = [Raw(broker.port) for _ in range(5)]
    assert [c.connect(f"awake-{i}").reason_code for i, c in enumerate(clients)] == [0] * 5
    assert 1 <= len(scheduled) <= 5
