"""robustmq-ctl as users run it (a subprocess) against a real robustmq-server: every group of
commands, both output formats, the token, the server's errors and an unreachable server.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from robustmq.broker.auth.users import load_password_file
from tests.conftest import free_port
from tests.integration.clients import Paho, code, props
from tests.integration.test_cli import _stop
from tests.integration.test_http_api import TOKEN, Server, start_server

CTL = [sys.executable, "-m", "robustmq.cli.ctl"]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("ctl"))
    yield s
    assert _stop(s.proc) == 0


def ctl(
    server: Server, *args: str, stdin: str = "", token: str | None = TOKEN
) -> subprocess.CompletedProcess[str]:
    base = [*CTL, "--server", server.url]
    if token:
        base += ["--token", token]
    return subprocess.run([*base, *args], input=stdin, capture_output=True, text=True, timeout=30)


def ok(server: Server, *args: str, stdin: str = "") -> str:
    run = ctl(server, *args, stdin=stdin)
    assert run.returncode == 0, (args, run.stdout, run.stderr)
    return run.stdout


def as_json(server: Server, *args: str) -> object:
    return json.loads(ok(server, "--output", "json", *args))


def test_help_lists_every_group_and_completion_works():
    out = subprocess.run([*CTL, "--help"], capture_output=True, text=True, check=True).stdout
    for group in ("cluster", "mqtt", "kafka"):
        assert group in out
    complete = subprocess.run(
        [*CTL],
        env={
            "_ROBUSTMQ_CTL_COMPLETE": "bash_complete",
            "COMP_WORDS": "robustmq-ctl mqtt ",
            "COMP_CWORD": "2",
            "PATH": "",
        },
        capture_output=True,
        text=True,
    )
    words = {line.split(",")[1] for line in complete.stdout.splitlines() if "," in line}
    assert {"client", "session", "retained", "user", "blacklist", "publish"} <= words


def test_cluster_status_table_and_json(server: Server):
    table = ok(server, "cluster", "status")
    assert f"mqtt 127.0.0.1:{server.mqtt}" in table and "version" in table
    assert "offsets" in table and "leader" in table  # the Meta Service's groups
    status = as_json(server, "cluster", "status")
    assert status["nodes"][0]["node_id"] == 1  # type: ignore[index]
    nodes = as_json(server, "cluster", "nodes")
    assert nodes[0]["version"] == "0.1.0"  # type: ignore[index]
    config = json.loads(ok(server, "cluster", "config"))
    assert config["http"]["admin_token"] == "******"


def test_errors_exit_non_zero_with_the_servers_message(server: Server):
    run = ctl(server, "kafka", "topic", "describe", "ghost")
    assert run.returncode == 1
    assert "no topic 'ghost' (HTTP 404 not_found)" in run.stderr
    run = ctl(server, "cluster", "status", token=None)
    assert run.returncode == 1 and "HTTP 401 unauthorized" in run.stderr
    run = ctl(server, "mqtt", "publish", "a/+", "x")
    assert run.returncode == 1 and "topic:" in run.stderr and "HTTP 400" in run.stderr


def test_unreachable_server_names_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    run = subprocess.run(
        [*CTL, "--server", url, "mqtt", "client", "list"], capture_output=True, text=True
    )
    assert run.returncode != 0
    assert f"cannot reach the RobustMQ HTTP API at {url}/api/v1/mqtt/clients" in run.stderr


def test_mqtt_clients_sessions_subscriptions(server: Server):
    sub = Paho(
        server.mqtt,
        "ctl-c1",
        5,
        clean=False,
        connect_props=props("CONNECT", SessionExpiryInterval=60),
    )
    sub.subscribe("ctl/#", qos=1)
    table = ok(server, "mqtt", "client", "list", "--clientid", "ctl-c1")
    assert table.splitlines()[0].split()[:2] == ["CLIENTID", "USERNAME"]
    assert "ctl-c1" in table and "1 shown of 1" in table
    assert as_json(server, "mqtt", "client", "get", "ctl-c1")["protocol_version"] == 5  # type: ignore[index]
    subs = as_json(server, "mqtt", "subscription", "list", "--clientid", "ctl-c1")
    assert [s["topic"] for s in subs["data"]] == ["ctl/#"]  # type: ignore[index]
    assert "kicked ctl-c1" in ok(server, "mqtt", "client", "kick", "ctl-c1")
    assert code(sub.disconnects.get(timeout=5)) == 0x98
    deadline = time.monotonic() + 10
    while as_json(server, "mqtt", "session", "get", "ctl-c1")["connected"]:  # type: ignore[index]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "ctl-c1" in ok(server, "mqtt", "session", "list")
    assert "deleted session ctl-c1" in ok(server, "mqtt", "session", "delete", "ctl-c1")
    assert ctl(server, "mqtt", "session", "get", "ctl-c1").returncode == 1


def test_publish_and_retained(server: Server):
    sub = Paho(server.mqtt, "ctl-p1", 5)
    sub.subscribe("ctl/r/#", qos=1)
    ok(server, "mqtt", "publish", "ctl/r/a", "hello", "--qos", "1", "--retain")
    message = sub.get()
    assert (message.topic, message.payload, message.qos) == ("ctl/r/a", b"hello", 1)
    assert "ctl/r/a" in ok(server, "mqtt", "retained", "list")
    assert as_json(server, "mqtt", "retained", "get", "ctl/r/a")["payload"] == "hello"  # type: ignore[index]
    assert "cleared ctl/r/a" in ok(server, "mqtt", "retained", "delete", "ctl/r/a")
    assert ctl(server, "mqtt", "retained", "get", "ctl/r/a").returncode == 1


def test_users_with_password_on_stdin(server: Server):
    ok(server, "mqtt", "user", "add", "dave", "--password-stdin", stdin="d4ve-pw\n")
    assert load_password_file(server.passwd).get("dave") is not None
    assert "dave" in ok(server, "mqtt", "user", "list")
    Paho(server.mqtt, "ctl-u1", 4, username="dave", password="d4ve-pw").client.disconnect()
    run = ctl(server, "mqtt", "user", "add", "dave", "--password-stdin", stdin="x\n")
    assert run.returncode == 1 and "already exists" in run.stderr
    ok(server, "mqtt", "user", "passwd", "dave", "--password-stdin", stdin="new-pw\n")
    Paho(server.mqtt, "ctl-u2", 4, username="dave", password="new-pw").client.disconnect()
    assert "deleted dave" in ok(server, "mqtt", "user", "delete", "dave")
    assert load_password_file(server.passwd).get("dave") is None
    run = ctl(server, "mqtt", "user", "add", "erin", "--password-stdin", stdin="\n")
    assert run.returncode == 1 and "empty password" in run.stderr


def test_blacklist(server: Server):
    ok(server, "mqtt", "blacklist", "add", "clientid", "ctl-evil")
    refused = Paho(server.mqtt, "ctl-evil", 5, connect=False)
    assert code(refused.connect()[1]) == 0x8A
    ok(server, "mqtt", "blacklist", "add", "ip", "198.51.100.0/24")
    listed = as_json(server, "mqtt", "blacklist", "list")["data"]  # type: ignore[index]
    assert {"kind": "ip", "value": "198.51.100.0/24", "until": None} in listed
    ok(server, "mqtt", "blacklist", "delete", "ip", "198.51.100.0/24")
    ok(server, "mqtt", "blacklist", "delete", "clientid", "ctl-evil")
    Paho(server.mqtt, "ctl-evil", 5).client.disconnect()
    run = ctl(server, "mqtt", "blacklist", "add", "host", "x")
    assert run.returncode == 2 and "Invalid value" in run.stderr  # click refuses the kind


def test_kafka_topics_and_groups(server: Server):
    kafka = pytest.importorskip("kafka")
    ok(
        server,
        "kafka",
        "topic",
        "create",
        "ctl-t",
        "--partitions",
        "2",
        "--config",
        "retention.ms=60000",
    )
    assert "ctl-t" in ok(server, "kafka", "topic", "list")
    run = ctl(server, "kafka", "topic", "create", "ctl-t")
    assert run.returncode == 1 and "already exists" in run.stderr
    bootstrap = f"127.0.0.1:{server.kafka}"
    producer = kafka.KafkaProducer(bootstrap_servers=bootstrap)
    for i in range(4):
        producer.send("ctl-t", b"v", partition=i % 2)
    producer.flush(10)
    producer.close()
    described = as_json(server, "kafka", "topic", "describe", "ctl-t")
    assert [p["latest_offset"] for p in described["partitions"]] == [2, 2]  # type: ignore[index]
    assert described["configs"] == {"retention.ms": "60000"}  # type: ignore[index]
    assert "LATEST_OFFSET" in ok(server, "kafka", "topic", "describe", "ctl-t")
    ok(
        server,
        "kafka",
        "topic",
        "alter",
        "ctl-t",
        "--partitions",
        "3",
        "--config",
        "retention.ms=1",
    )
    altered = as_json(server, "kafka", "topic", "describe", "ctl-t")
    assert len(altered["partitions"]) == 3  # type: ignore[index, arg-type]
    assert altered["configs"] == {"retention.ms": "1"}  # type: ignore[index]
    run = ctl(server, "kafka", "topic", "alter", "ctl-t")
    assert run.returncode != 0 and "give --partitions, --config or both" in run.stderr

    consumer = kafka.KafkaConsumer(
        "ctl-t",
        bootstrap_servers=bootstrap,
        group_id="ctl-g",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    seen = 0
    deadline = time.monotonic() + 20
    while seen < 4 and time.monotonic() < deadline:
        seen += sum(len(r) for r in consumer.poll(timeout_ms=200).values())
    consumer.commit()
    assert "ctl-g" in ok(server, "kafka", "group", "list")
    text = ok(server, "kafka", "group", "describe", "ctl-g")
    assert "state Stable" in text and "total lag 0" in text
    consumer.close()
    assert "deleted topic ctl-t" in ok(server, "kafka", "topic", "delete", "ctl-t")
    assert ctl(server, "kafka", "topic", "describe", "ctl-t").returncode == 1
    run = ctl(server, "kafka", "topic", "create", "x", "--config", "novalue")
    assert run.returncode == 2 and "KEY=VALUE" in run.stderr


def test_mqtt_topics_rewrite_auto_subscribe_and_acl(server: Server):
    sub = Paho(server.mqtt, "ctl-t1", 5)
    sub.subscribe("ctl/tp/+")
    Paho(server.mqtt, "ctl-t2", 5).publish("ctl/tp/a", b"x", qos=2)
    sub.get()
    table = ok(server, "mqtt", "topic", "list", "--match", "ctl/tp/#")
    assert table.splitlines()[0].split() == [
        "TOPIC",
        "SUBSCRIBERS",
        "RETAINED",
        "MESSAGES_IN",
        "MESSAGES_OUT",
    ]
    assert table.splitlines()[1].split() == ["ctl/tp/a", "1", "False", "1", "1"]

    added = json.loads(
        ok(
            server,
            "--output",
            "json",
            "mqtt",
            "rewrite",
            "add",
            "ctl/rw/#",
            "^ctl/rw/(.*)$",
            "ctl/tp/$1",
            "--action",
            "publish",
        )
    )
    assert added["index"] == 0
    Paho(server.mqtt, "ctl-t3", 5).publish("ctl/rw/b", b"y", qos=2)
    assert sub.get().topic == "ctl/tp/b"
    assert "ctl/rw/#" in ok(server, "mqtt", "rewrite", "list")
    assert "deleted rewrite rule 0" in ok(server, "mqtt", "rewrite", "delete", "0")
    run = ctl(server, "mqtt", "rewrite", "delete", "0")
    assert run.returncode == 1 and "HTTP 404" in run.stderr

    ok(server, "mqtt", "auto-subscribe", "add", "ctl/auto/${clientid}", "--qos", "1")
    listed = as_json(server, "mqtt", "auto-subscribe", "list")["data"]  # type: ignore[index]
    assert listed == [{"index": 0, "topic": "ctl/auto/${clientid}", "qos": 1}]
    ok(server, "mqtt", "auto-subscribe", "delete", "0")
    run = ctl(server, "mqtt", "auto-subscribe", "add", "a/#/b")
    assert run.returncode == 1 and "topic:" in run.stderr

    # This server has no auth.acl_file: its rules live in the Meta Service (none yet).
    assert "(none)" in ok(server, "mqtt", "acl", "list")


def test_cluster_config_set_and_storage_shards(server: Server):
    kafka = pytest.importorskip("kafka")
    answer = as_json(server, "cluster", "config", "set", "kafka.default_partitions", "2")
    assert answer["value"] == 2  # type: ignore[index]
    try:
        producer = kafka.KafkaProducer(bootstrap_servers=f"127.0.0.1:{server.kafka}")
        producer.send("ctl-auto", b"v").get(timeout=10)
        producer.close()
    finally:
        ok(server, "cluster", "config", "set", "kafka.default_partitions", "1")
    shards = as_json(server, "storage", "shard", "list", "--prefix", "kafka/ctl-auto/")
    assert [s["name"] for s in shards["data"]] == ["kafka/ctl-auto/0", "kafka/ctl-auto/1"]  # type: ignore[index]
    assert sum(s["records"] for s in shards["data"]) == 1  # type: ignore[index]
    table = ok(server, "storage", "shard", "list", "--prefix", "kafka/ctl-auto/")
    assert table.splitlines()[0].split()[:3] == ["NAME", "ENGINE", "RECORDS"]
    assert "CONFIG" not in table
    assert "end_offset" in ok(server, "storage", "shard", "get", "kafka/ctl-auto/0")
    run = ctl(server, "cluster", "config", "set", "mqtt.port", "1")
    assert run.returncode == 1 and "not hot-reloadable" in run.stderr


def test_acl_rules(tmp_path):
    acl = tmp_path / "acl"
    acl.write_text("allow all all #\n")
    s = start_server(tmp_path, ROBUSTMQ_AUTH_ACL_FILE=str(acl))
    try:
        added = json.loads(
            ok(
                s,
                "--output",
                "json",
                "mqtt",
                "acl",
                "add",
                "deny",
                "user:mallory",
                "publish",
                "secret/#",
                "--position",
                "0",
            )
        )
        assert added["line"] == "deny user:mallory publish secret/#"
        table = ok(s, "mqtt", "acl", "list")
        assert table.splitlines()[1].split()[:5] == [
            "0",
            "deny",
            "user:mallory",
            "publish",
            "secret/#",
        ]
        ok(s, "mqtt", "acl", "add", "allow", "all", "subscribe", "q/#", "--max-qos", "1")
        assert acl.read_text().splitlines() == [
            "deny user:mallory publish secret/#",
            "allow all all #",
            "allow all subscribe q/# qos<=1",
        ]
        run = ctl(s, "mqtt", "acl", "add", "allow", "all", "publish", "a/#/b")
        assert run.returncode == 1 and "topic:" in run.stderr and "HTTP 400" in run.stderr
        assert "deleted ACL rule 0" in ok(s, "mqtt", "acl", "delete", "0")
        assert acl.read_text().splitlines()[0] == "allow all all #"
    finally:
        assert _stop(s.proc) == 0
