"""The HTTP listener of a real robustmq-server: /health, /ready, /metrics, token, errors."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.conftest import free_port
from tests.integration.clients import Paho, code
from tests.integration.test_cli import _env, _start, _stop


def _get(port: int, path: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def server(tmp_path):
    http_port = free_port()
    proc, mqtt_port, lines = _start(tmp_path, "--http-port", str(http_port))
    assert f"robustmq: http listening on 127.0.0.1:{http_port}" in lines
    yield mqtt_port, http_port
    assert _stop(proc) == 0


def test_health_and_ready(server):
    _, http = server
    assert _get(http, "/health") == (200, '{"status": "ok"}')
    assert _get(http, "/ready") == (200, '{"status": "ready"}')


def test_metrics_count_what_clients_did(server):
    mqtt, http = server
    sub = Paho(mqtt, "sub", 4)
    sub.subscribe("m/#")
    pub = Paho(mqtt, "pub", 4)
    for _ in range(3):
        pub.publish("m/x", b"12345")
    for _ in range(3):
        sub.get()
    status, body = _get(http, "/metrics")
    assert status == 200
    values = {
        line.split()[0]: float(line.split()[1])
        for line in body.splitlines()
        if line.startswith("robustmq_") and " " in line
    }
    assert values["robustmq_mqtt_connections"] == 2
    assert values["robustmq_mqtt_messages_received_total"] == 3
    assert values["robustmq_mqtt_messages_sent_total"] == 3
    assert values["robustmq_mqtt_subscriptions"] == 1
    assert values["robustmq_process_resident_memory_bytes"] > 0


def test_unknown_path_is_a_json_404(server):
    _, http = server
    status, body = _get(http, "/api/v1/nope")
    assert status == 404
    assert json.loads(body)["error"]["code"] == "not_found"


def test_admin_token_guards_all_but_health_and_ready(tmp_path):
    http_port = free_port()
    env = _env(ROBUSTMQ_HTTP_ADMIN_TOKEN="s3cret")
    proc, _, _ = _start(tmp_path, "--http-port", str(http_port), env=env)
    try:
        assert _get(http_port, "/health")[0] == 200
        assert _get(http_port, "/ready")[0] == 200
        status, body = _get(http_port, "/metrics")
        assert status == 401 and json.loads(body)["error"]["code"] == "unauthorized"
        assert _get(http_port, "/metrics", token="wrong")[0] == 401
        assert _get(http_port, "/metrics", token="s3cret")[0] == 200
    finally:
        _stop(proc)


def test_refused_retained_messages_are_counted(tmp_path):
    http_port = free_port()
    env = _env(ROBUSTMQ_MQTT_MAX_RETAINED_PAYLOAD="3")
    proc, mqtt_port, _ = _start(tmp_path, "--http-port", str(http_port), env=env)
    try:
        Paho(mqtt_port, "pub", 4).publish("r/big", b"12345", retain=True)
        body = _get(http_port, "/metrics")[1]
        assert "robustmq_mqtt_retained_rejected_total 1.0" in body
    finally:
        _stop(proc)


def test_security_refusals_are_counted(tmp_path):
    from robustmq.broker.auth.users import set_password

    set_password(str(tmp_path / "passwd"), "alice", "right")
    (tmp_path / "acl").write_text("allow all subscribe #\ndeny all publish secret/#\n")
    http_port = free_port()
    env = _env(
        ROBUSTMQ_AUTH_PASSWORD_FILE=str(tmp_path / "passwd"),
        ROBUSTMQ_AUTH_ACL_FILE=str(tmp_path / "acl"),
    )
    proc, mqtt_port, _ = _start(tmp_path, "--http-port", str(http_port), env=env)
    try:
        bad = Paho(mqtt_port, "bad", 4, username="alice", password="wrong", connect=False)
        assert code(bad.connect()[1]) == 0x86  # paho maps 3.1.1 return code 4 to 0x86
        alice = Paho(mqtt_port, "alice", 4, username="alice", password="right")
        alice.publish("secret/x", b"1", qos=1)
        body = _get(http_port, "/metrics")[1]
        assert "robustmq_mqtt_auth_failures_total 1.0" in body
        assert "robustmq_mqtt_acl_denied_publish_total 1.0" in body
    finally:
        _stop(proc)
