"""Users, ACL, rewrite and auto-subscribe rules kept in the Meta Service, against real
robustmq-server processes (leveldb engine, no password or ACL file) and real paho-mqtt
clients: a change made over the REST API applies at once and survives a restart of the
server on the same data directory; the config file's rewrite rules seed the group once;
with the memory engine the old in-memory behaviour stays."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import free_port
from tests.integration.clients import Paho, code
from tests.integration.test_cli import _env, _start, _stop
from tests.integration.test_ctl import ctl
from tests.integration.test_http_api import Server, start_server

NO_FILES = {"ROBUSTMQ_AUTH_PASSWORD_FILE": "", "ROBUSTMQ_AUTH_ALLOW_ANONYMOUS": "auto"}
SECRET = "c2-plain-text-secret"
BAD_CREDENTIALS = 0x86  # paho reports MQTT 3.1.1's return code 4 as 0x86 too


def _server(tmp_path: Path, **env: str) -> Server:
    return start_server(tmp_path, token=None, **{**NO_FILES, **env})


def _connack(server: Server, version: int, username: str | None, password: str | None) -> int:
    client = Paho(server.mqtt, "", version, username=username, password=password, connect=False)
    try:
        return code(client.connect()[1])
    finally:
        client.client.disconnect()
        client.client.loop_stop()


def test_a_user_made_over_rest_connects_survives_a_restart_and_is_refused_once_deleted(
    tmp_path: Path,
) -> None:
    s = _server(tmp_path)
    try:
        assert s.ok("GET", "/api/v1/mqtt/users")["data"] == []
        assert _connack(s, 5, None, None) == 0  # no users yet: anonymous clients welcome
        added = s.call("POST", "/api/v1/mqtt/users", {"username": "carol", "password": "c1"})
        assert added == (201, {"username": "carol"})
        # robustmq-ctl goes through the same endpoint.
        run = ctl(s, "mqtt", "user", "add", "keeper", "--password-stdin", stdin="k1\n", token=None)
        assert run.returncode == 0, run.stderr
        status, _ = s.call("POST", "/api/v1/mqtt/users", {"username": "carol", "password": "x"})
        assert status == 409
        assert _connack(s, 5, "carol", "c1") == 0
        assert _connack(s, 4, "carol", "c1") == 0
        assert _connack(s, 5, "carol", "wrong") == BAD_CREDENTIALS
        assert _connack(s, 5, None, None) == 0x87  # users exist: anonymous refused (auto)
        s.ok("PUT", "/api/v1/mqtt/users/carol", {"password": SECRET})
        assert _connack(s, 5, "carol", SECRET) == 0
        assert s.call("PUT", "/api/v1/mqtt/users/nobody", {"password": "x"})[0] == 404
    finally:
        assert _stop(s.proc) == 0
    stored = [f.read_bytes() for f in (tmp_path / "data").rglob("*") if f.is_file()]
    assert stored and not any(SECRET.encode() in b for b in stored)  # only hashes are kept

    s = _server(tmp_path)
    try:
        listed = s.ok("GET", "/api/v1/mqtt/users")["data"]
        assert listed == [
            {"username": "carol", "scram": True},
            {"username": "keeper", "scram": True},
        ]
        assert _connack(s, 5, "carol", SECRET) == 0
        assert _connack(s, 4, "carol", "c1") == BAD_CREDENTIALS
        assert s.call("DELETE", "/api/v1/mqtt/users/carol") == (204, None)
        assert _connack(s, 5, "carol", SECRET) == BAD_CREDENTIALS
        assert _connack(s, 4, "carol", SECRET) == BAD_CREDENTIALS
        assert _connack(s, 5, "keeper", "k1") == 0
        assert s.call("DELETE", "/api/v1/mqtt/users/carol")[0] == 404
    finally:
        assert _stop(s.proc) == 0


def test_an_acl_rule_added_over_rest_binds_connected_clients_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    s = _server(tmp_path)
    try:
        sub = Paho(s.mqtt, "acl-sub", 5)
        sub.subscribe("secret/#")
        sub.subscribe("open/#")
        pub = Paho(s.mqtt, "acl-pub", 5)
        pub.publish("secret/a", b"before")
        assert sub.get().payload == b"before"
        rule = {"permission": "deny", "who": "all", "action": "publish", "topic": "secret/#"}
        added = s.ok("POST", "/api/v1/mqtt/acl", rule)
        assert added["index"] == 0 and added["line"] == "deny all publish secret/#"
        s.ok("POST", "/api/v1/mqtt/acl", {**rule, "topic": "other/#", "position": 0})
        lines = [r["line"] for r in s.ok("GET", "/api/v1/mqtt/acl")["data"]]
        assert lines == ["deny all publish other/#", "deny all publish secret/#"]
        pub.publish("secret/a", b"denied")  # the same, already connected, publisher
        pub.publish("open/a", b"allowed")
        assert sub.get().payload == b"allowed"  # and nothing from secret/a before it
    finally:
        assert _stop(s.proc) == 0

    s = _server(tmp_path)
    try:
        lines = [r["line"] for r in s.ok("GET", "/api/v1/mqtt/acl")["data"]]
        assert lines == ["deny all publish other/#", "deny all publish secret/#"]
        sub = Paho(s.mqtt, "acl-sub2", 5)
        sub.subscribe("secret/#")
        pub = Paho(s.mqtt, "acl-pub2", 4)
        pub.publish("secret/b", b"denied")
        sub.expect_nothing()
        s.ok("DELETE", "/api/v1/mqtt/acl/1")
        pub.publish("secret/b", b"allowed again")
        assert sub.get().payload == b"allowed again"
        assert s.call("DELETE", "/api/v1/mqtt/acl/1")[0] == 404
    finally:
        assert _stop(s.proc) == 0


def test_rewrite_and_auto_subscribe_rules_added_over_rest_survive_a_restart(
    tmp_path: Path,
) -> None:
    rewrite = {"action": "publish", "source_topic": "rw/old/#", "re": "^rw/old/(.+)$"}
    s = _server(tmp_path)
    try:
        s.ok("POST", "/api/v1/mqtt/rewrite", {**rewrite, "dest_topic": "rw/new/$1"})
        s.ok("POST", "/api/v1/mqtt/auto-subscribe", {"topic": "auto/${clientid}", "qos": 1})
    finally:
        assert _stop(s.proc) == 0

    s = _server(tmp_path)
    try:
        assert s.ok("GET", "/api/v1/mqtt/rewrite")["data"] == [
            {"index": 0, **rewrite, "dest_topic": "rw/new/$1"}
        ]
        listed = s.ok("GET", "/api/v1/mqtt/auto-subscribe")["data"]
        assert listed == [{"index": 0, "topic": "auto/${clientid}", "qos": 1}]
        sub = Paho(s.mqtt, "rw-sub", 5)  # auto-subscribed to auto/rw-sub
        sub.subscribe("rw/#")
        pub = Paho(s.mqtt, "rw-pub", 5)
        pub.publish("rw/old/a", b"x")
        assert sub.get().topic == "rw/new/a"
        pub.publish("auto/rw-sub", b"auto", qos=1)
        assert sub.get().payload == b"auto"
    finally:
        assert _stop(s.proc) == 0


def _start_with_config(tmp_path: Path, config: Path) -> Server:
    http = free_port()
    proc, mqtt, _ = _start(
        tmp_path,
        "--config",
        str(config),
        "--http-port",
        str(http),
        "--kafka-port",
        "0",
        env=_env(),
    )
    return Server(proc, mqtt, http, 0, "", None)


def test_config_rewrite_rules_seed_the_group_once_then_rest_changes_win(tmp_path: Path) -> None:
    config = tmp_path / "robustmq.toml"
    config.write_text(
        "[[mqtt.rewrite]]\n"
        'action = "publish"\nsource_topic = "cf/#"\nre = "^cf/(.*)$"\ndest_topic = "seeded/$1"\n'
    )
    s = _start_with_config(tmp_path, config)
    try:
        assert [r["dest_topic"] for r in s.ok("GET", "/api/v1/mqtt/rewrite")["data"]] == [
            "seeded/$1"
        ]
        s.ok("DELETE", "/api/v1/mqtt/rewrite/0")
    finally:
        assert _stop(s.proc) == 0
        assert "seeded the Meta Service" in s.proc.stderr.read()
    s = _start_with_config(tmp_path, config)
    try:
        # The group holds an (empty) list: the config file's rule does not come back.
        assert s.ok("GET", "/api/v1/mqtt/rewrite")["data"] == []
    finally:
        assert _stop(s.proc) == 0


def test_with_the_memory_engine_users_and_acl_need_files_as_before(tmp_path: Path) -> None:
    s = _server(tmp_path, ROBUSTMQ_STORAGE_ENGINE="memory")
    try:
        status, body = s.call("POST", "/api/v1/mqtt/users", {"username": "x", "password": "y"})
        assert status == 409 and "password_file" in body["error"]["message"]
        status, body = s.call("GET", "/api/v1/mqtt/acl")
        assert status == 409 and "acl_file" in body["error"]["message"]
        s.ok("POST", "/api/v1/mqtt/auto-subscribe", {"topic": "mem/${clientid}"})
    finally:
        assert _stop(s.proc) == 0
    s = _server(tmp_path, ROBUSTMQ_STORAGE_ENGINE="memory")
    try:
        assert s.ok("GET", "/api/v1/mqtt/auto-subscribe")["data"] == []  # not kept
    finally:
        assert _stop(s.proc) == 0
