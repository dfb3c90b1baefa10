"""The operations resources of the REST API against a real robustmq-server: ACL rules (file
rewritten, connected clients re-checked at once, kept across a restart), rewrite and
auto-subscribe rules, MQTT topics with message counts, storage shards, writable config
(each hot-reloadable key shown to take effect) and the latency and storage metrics, all
driven by real paho, raw-socket and kafka-python clients.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from robustmq._core import mqtt_codec
from tests.integration.clients import Paho, code, props, raw_connect
from tests.integration.test_cli import _stop
from tests.integration.test_http_api import Server, q, start_server
from tests.unit.test_auth_jwt import hs256

ACL = "# operators' notes stay\nallow all all #\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("ops"))
    yield s
    assert _stop(s.proc) == 0


def _error(server: Server, method: str, path: str, body: object, status: int) -> str:
    got, answer = server.call(method, path, body)
    assert got == status, (got, answer)
    return str(answer["error"]["message"])


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the exposition ``text`` (0 when absent)."""
    for line in text.splitlines():
        m = re.match(r"(\w+)(?:\{(.*)\})? (\S+)$", line)
        if m is None or m.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return 0.0


# ------------------------------------------------------------------ ACL


def test_acl_changes_apply_to_connected_clients_at_once_and_survive_a_restart(tmp_path):
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    s = start_server(tmp_path, ROBUSTMQ_AUTH_ACL_FILE=str(acl))
    try:
        sub = Paho(s.mqtt, "acl-sub", 5)
        sub.subscribe("acl/#")
        pub = Paho(s.mqtt, "acl-pub", 5)
        pub.publish("acl/x", b"1")  # allowed, and the decision is now cached
        assert sub.get().payload == b"1"

        rule = s.ok(
            "POST",
            "/api/v1/mqtt/acl",
            {
                "permission": "deny",
                "who": "clientid:acl-pub",
                "action": "all",
                "topic": "acl/#",
                "position": 0,
            },
        )
        assert rule["index"] == 0 and rule["line"] == "deny clientid:acl-pub all acl/#"
        pub.publish("acl/x", b"2")  # same topic: the cached decision must be gone
        sub.expect_nothing()
        assert code(pub.subscribe("acl/y")[0]) == 0x87  # SUBACK Not authorized
        assert acl.read_text() == "# operators' notes stay\ndeny clientid:acl-pub all acl/#\n" + (
            "allow all all #\n"
        )
        rules = s.ok("GET", "/api/v1/mqtt/acl")
        assert [r["line"] for r in rules["data"]] == [
            "deny clientid:acl-pub all acl/#",
            "allow all all #",
        ]

        s.ok(
            "POST",
            "/api/v1/mqtt/acl",
            {
                "permission": "allow",
                "who": "user:bob",
                "action": "publish",
                "topic": "b/%c",
                "max_qos": 1,
                "retain": False,
            },
        )
        assert acl.read_text().splitlines()[-1] == "allow user:bob publish b/%c qos<=1 retain=false"

        s.ok("DELETE", "/api/v1/mqtt/acl/0")
        pub.publish("acl/x", b"3")
        assert sub.get().payload == b"3"
    finally:
        assert _stop(s.proc) == 0
    again = start_server(tmp_path, ROBUSTMQ_AUTH_ACL_FILE=str(acl))
    try:
        lines = [r["line"] for r in again.ok("GET", "/api/v1/mqtt/acl")["data"]]
        assert lines == ["allow all all #", "allow user:bob publish b/%c qos<=1 retain=false"]
    finally:
        assert _stop(again.proc) == 0


def test_acl_change_keeps_what_the_authenticator_said_about_connected_clients(tmp_path):
    secret = "ops-jwt-secret"
    acl = tmp_path / "acl"
    acl.write_text("allow all all tenants/${jwt.tenant}/#\ndeny all all #\n")
    s = start_server(tmp_path, ROBUSTMQ_AUTH_ACL_FILE=str(acl), ROBUSTMQ_AUTH_JWT_SECRET=secret)
    try:
        token = hs256({"tenant": "acme"}, secret)
        client = Paho(s.mqtt, "jwt-c", 5, username="u", password=token)
        assert code(client.subscribe("tenants/acme/a")[0]) == 0
        s.ok(
            "POST",
            "/api/v1/mqtt/acl",
            {
                "permission": "deny",
                "who": "clientid:someone-else",
                "action": "all",
                "topic": "#",
                "position": 0,
            },
        )
        # Rebuilt with the client's JWT claims: the placeholder rule still applies to it.
        assert code(client.subscribe("tenants/acme/b")[0]) == 0
        assert code(client.subscribe("tenants/other/b")[0]) == 0x87
    finally:
        assert _stop(s.proc) == 0


def test_acl_bad_rules_name_their_field_and_leave_the_file_alone(tmp_path):
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    s = start_server(tmp_path, ROBUSTMQ_AUTH_ACL_FILE=str(acl))
    try:
        good = {"permission": "allow", "who": "all", "action": "publish", "topic": "a"}
        for change, field in (
            ({"action": "pub"}, "action"),
            ({"permission": "maybe"}, "permission"),
            ({"who": "group:x"}, "who"),
            ({"who": "ip:300.1.1.1"}, "who"),
            ({"topic": "a/#/b"}, "topic"),
            ({"topic": "a b"}, "topic"),
            ({"max_qos": 3}, "max_qos"),
            ({"position": -1}, "position"),
            ({"extra": 1}, "extra"),
        ):
            message = _error(s, "POST", "/api/v1/mqtt/acl", {**good, **change}, 400)
            assert message.startswith(f"{field}:"), (change, message)
        assert _error(s, "DELETE", "/api/v1/mqtt/acl/5", None, 404)
        assert _error(s, "DELETE", "/api/v1/mqtt/acl/x", None, 400).startswith("index:")
        assert acl.read_text() == ACL
    finally:
        assert _stop(s.proc) == 0


def test_acl_file_broken_by_hand_is_left_alone(tmp_path):
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    s = start_server(tmp_path, ROBUSTMQ_AUTH_ACL_FILE=str(acl))
    try:
        acl.write_text(ACL + "allow everyone all #\n")  # an operator's typo, after the start
        body = {"permission": "deny", "who": "all", "action": "all", "topic": "x"}
        message = _error(s, "POST", "/api/v1/mqtt/acl", body, 409)
        assert "does not load" in message and ":3:" in message
        assert _error(s, "DELETE", "/api/v1/mqtt/acl/0", None, 409)
        assert acl.read_text() == ACL + "allow everyone all #\n"
        assert s.ok("GET", "/api/v1/mqtt/acl")["meta"]["count"] == 1  # the rules in force
    finally:
        assert _stop(s.proc) == 0


def test_acl_without_an_acl_file_or_meta_service_is_a_conflict_saying_to_configure_one(tmp_path):
    # With a persistent engine the rules live in the Meta Service (test_meta_rules.py).
    server = start_server(tmp_path, ROBUSTMQ_STORAGE_ENGINE="memory")
    try:
        message = _error(server, "GET", "/api/v1/mqtt/acl", None, 409)
        assert "acl_file" in message
        body = {"permission": "allow", "who": "all", "action": "all", "topic": "#"}
        assert "acl_file" in _error(server, "POST", "/api/v1/mqtt/acl", body, 409)
    finally:
        assert _stop(server.proc) == 0


# ------------------------------------------------------------------ rewrite, auto-subscribe


def test_rewrite_rules_apply_to_the_next_publish_until_removed(server: Server):
    sub = Paho(server.mqtt, "rw-sub", 5)
    sub.subscribe("rw/#")
    pub = Paho(server.mqtt, "rw-pub", 5)
    rule = server.ok(
        "POST",
        "/api/v1/mqtt/rewrite",
        {
            "action": "publish",
            "source_topic": "rw/old/#",
            "re": "^rw/old/(.+)$",
            "dest_topic": "rw/new/$1",
        },
    )
    assert rule["index"] == 0
    pub.publish("rw/old/a", b"x")
    assert sub.get().topic == "rw/new/a"
    listed = server.ok("GET", "/api/v1/mqtt/rewrite")["data"]
    assert listed == [
        {
            "index": 0,
            "action": "publish",
            "source_topic": "rw/old/#",
            "re": "^rw/old/(.+)$",
            "dest_topic": "rw/new/$1",
        }
    ]
    server.ok("DELETE", "/api/v1/mqtt/rewrite/0")
    pub.publish("rw/old/a", b"y")
    assert sub.get().topic == "rw/old/a"
    assert server.ok("GET", "/api/v1/mqtt/rewrite")["meta"]["count"] == 0

    good = {"source_topic": "a/#", "re": "a", "dest_topic": "b"}
    for change, field in (
        ({"re": "("}, "re"),
        ({"source_topic": "a/#/b"}, "source_topic"),
        ({"action": "both"}, "action"),
        ({"dest_topic": ""}, "dest_topic"),
    ):
        message = _error(server, "POST", "/api/v1/mqtt/rewrite", {**good, **change}, 400)
        assert message.startswith(f"{field}:"), message
    assert _error(server, "DELETE", "/api/v1/mqtt/rewrite/0", None, 404)


def test_auto_subscriptions_apply_to_clients_connecting_after_the_change(server: Server):
    added = server.ok(
        "POST", "/api/v1/mqtt/auto-subscribe", {"topic": "auto/${clientid}", "qos": 1}
    )
    assert added == {"index": 0, "topic": "auto/${clientid}", "qos": 1}
    client = Paho(server.mqtt, "auto-c1", 5)
    Paho(server.mqtt, "auto-pub", 5).publish("auto/auto-c1", b"hi", qos=2)
    assert client.get().payload == b"hi"
    assert server.ok("GET", "/api/v1/mqtt/auto-subscribe")["data"] == [added]
    server.ok("DELETE", "/api/v1/mqtt/auto-subscribe/0")
    later = Paho(server.mqtt, "auto-c2", 5)
    Paho(server.mqtt, "auto-pub2", 5).publish("auto/auto-c2", b"no", qos=2)
    later.expect_nothing()
    for body, field in (({"topic": "a/#/b"}, "topic"), ({"topic": "a", "qos": 3}, "qos")):
        message = _error(server, "POST", "/api/v1/mqtt/auto-subscribe", body, 400)
        assert message.startswith(f"{field}:"), message


# ------------------------------------------------------------------ topics


def test_topics_list_subscribed_and_retained_topics_with_message_counts(server: Server):
    sub = Paho(server.mqtt, "tp-sub", 5)
    sub.subscribe("tp/+")
    pub = Paho(server.mqtt, "tp-pub", 5)
    for i in range(7):
        pub.publish("tp/a", b"%d" % i)
    for _ in range(7):
        sub.get()
    pub.publish("tp/kept", b"r", qos=1, retain=True)
    sub.get()

    page = server.ok("GET", "/api/v1/mqtt/topics?match=" + q("tp/+"))
    rows = {r["topic"]: r for r in page["data"]}
    assert rows["tp/a"] == {
        "topic": "tp/a",
        "subscribers": 1,
        "retained": False,
        "messages_in": 7,
        "messages_out": 7,
    }
    assert rows["tp/kept"]["retained"] is True
    assert all(t.startswith("tp/") for t in rows)
    one = server.ok("GET", "/api/v1/mqtt/topics?match=" + q("tp/#") + "&limit=1")
    assert len(one["data"]) == 1 and one["meta"]["count"] == 2
    assert _error(server, "GET", "/api/v1/mqtt/topics?match=" + q("a/#/b"), None, 400).startswith(
        "match:"
    )


# ------------------------------------------------------------------ storage shards


def test_storage_shards_show_records_bytes_and_offsets(server: Server):
    kafka = pytest.importorskip("kafka")
    server.ok("POST", "/api/v1/kafka/topics", {"name": "shards-t", "partitions": 2})
    producer = kafka.KafkaProducer(bootstrap_servers=f"127.0.0.1:{server.kafka}")
    for i in range(5):
        producer.send("shards-t", b"value-%d" % i, partition=0)
    producer.flush(10)
    producer.close()
    page = server.ok("GET", "/api/v1/storage/shards?prefix=" + q("kafka/shards-t/"))
    assert [s["name"] for s in page["data"]] == ["kafka/shards-t/0", "kafka/shards-t/1"]
    first = page["data"][0]
    assert first["records"] == 5 and first["start_offset"] == 0 and first["end_offset"] == 5
    assert first["bytes"] >= 5 * len(b"value-0") and first["engine"] == "leveldb"
    assert page["data"][1]["records"] == 0
    assert server.ok("GET", "/api/v1/storage/shards/" + q("kafka/shards-t/0")) == first
    assert server.ok("GET", "/api/v1/storage/shards/kafka/shards-t/0") == first
    assert "no shard" in _error(server, "GET", "/api/v1/storage/shards/nope", None, 404)


# ------------------------------------------------------------------ writable config


def _set(server: Server, key: str, value: object) -> dict:
    answer: dict = server.ok("PUT", "/api/v1/cluster/config", {"key": key, "value": value})
    return answer


def test_config_mqtt_keys_take_effect_at_once(server: Server):
    try:
        assert _set(server, "mqtt.retain_available", "false")["value"] is False
        assert server.ok("GET", "/api/v1/cluster/config")["mqtt"]["retain_available"] is False
        body = {"topic": "cfg/r", "payload": "x", "retain": True}
        assert "retain" in _error(server, "POST", "/api/v1/mqtt/publish", body, 400)
        later = Paho(server.mqtt, "cfg-v5", 5)
        assert later.connack_props.RetainAvailable == 0
    finally:
        _set(server, "mqtt.retain_available", True)

    old = Paho(server.mqtt, "cfg-levels", 5)
    try:
        _set(server, "mqtt.max_topic_levels", 3)
        assert code(old.subscribe("a/b/c/d")[0]) >= 0x80  # on a connection made before
        assert code(old.subscribe("a/b/c")[0]) == 0
    finally:
        _set(server, "mqtt.max_topic_levels", 128)

    try:
        _set(server, "mqtt.max_packet_size", 200)
        small = raw_connect(server.mqtt, "cfg-small")
        small.publish("cfg/big", b"x" * 500)
        assert small.closed()
    finally:
        _set(server, "mqtt.max_packet_size", 1_048_576)
    big = raw_connect(server.mqtt, "cfg-big")
    big.publish("cfg/big", b"x" * 500, qos=2)
    assert big.expect(mqtt_codec.Pubrec).reason_code < 0x80  # 0x10: no subscribers


def test_config_publish_rate_limits_clients_connecting_after_it(server: Server):
    try:
        _set(server, "auth.publish_rate", 0.5)
        raw = raw_connect(server.mqtt, "cfg-rate")
        codes = []
        for packet_id in range(1, 6):
            raw.publish("cfg/rate", b"x", qos=2, packet_id=packet_id)
            codes.append(raw.expect(mqtt_codec.Pubrec).reason_code)
        assert codes[0] < 0x80 and 0x97 in codes  # Quota exceeded
    finally:
        _set(server, "auth.publish_rate", 0)
    free = raw_connect(server.mqtt, "cfg-free")
    for packet_id in range(1, 6):
        free.publish("cfg/rate", b"x", qos=2, packet_id=packet_id)
        assert free.expect(mqtt_codec.Pubrec).reason_code < 0x80


def test_config_publish_byte_rate_limits_clients_connecting_after_it(server: Server):
    try:
        _set(server, "auth.publish_byte_rate", "10")
        raw = raw_connect(server.mqtt, "cfg-bytes")
        codes = []
        for packet_id in range(1, 4):
            raw.publish("cfg/bytes", b"x" * 100, qos=2, packet_id=packet_id)
            codes.append(raw.expect(mqtt_codec.Pubrec).reason_code)
        assert codes[0] < 0x80 and codes[1:] == [0x97, 0x97]  # one second's worth, then none
    finally:
        _set(server, "auth.publish_byte_rate", 0)


def test_config_kafka_auto_create_and_default_partitions(server: Server):
    kafka = pytest.importorskip("kafka")
    bootstrap = f"127.0.0.1:{server.kafka}"
    try:
        _set(server, "kafka.auto_create_topics", False)
        producer = kafka.KafkaProducer(bootstrap_servers=bootstrap, max_block_ms=1500)
        with pytest.raises(kafka.errors.KafkaTimeoutError):
            producer.send("cfg-never", b"v").get(timeout=5)
        producer.close()
        assert server.call("GET", "/api/v1/kafka/topics/cfg-never")[0] == 404
    finally:
        _set(server, "kafka.auto_create_topics", "true")
    try:
        _set(server, "kafka.default_partitions", "3")
        producer = kafka.KafkaProducer(bootstrap_servers=bootstrap)
        producer.send("cfg-three", b"v").get(timeout=10)
        producer.close()
        topic = server.ok("GET", "/api/v1/kafka/topics/cfg-three")
        assert len(topic["partitions"]) == 3
    finally:
        _set(server, "kafka.default_partitions", 1)


def test_config_refuses_keys_that_are_not_hot_and_bad_values(server: Server):
    put = "/api/v1/cluster/config"
    message = _error(server, "PUT", put, {"key": "mqtt.port", "value": 1884}, 400)
    assert message == (
        "key: mqtt.port is not hot-reloadable; restart with it set in the config file"
    )
    assert _error(server, "PUT", put, {"key": "mqtt.nope", "value": 1}, 400).startswith("key:")
    assert _error(server, "PUT", put, {"key": "nope.x", "value": 1}, 400).startswith("key:")
    message = _error(server, "PUT", put, {"key": "kafka.default_partitions", "value": 0}, 400)
    assert message.startswith("value:") and "[1, 10000]" in message
    assert _error(server, "PUT", put, {"key": "log.level", "value": "loud"}, 400).startswith(
        "value:"
    )
    assert _error(server, "PUT", put, {"key": "log.level"}, 400).startswith("value:")
    assert server.ok("GET", "/api/v1/cluster/config")["kafka"]["default_partitions"] == 1


def test_config_log_level_changes_what_is_logged(tmp_path):
    s = start_server(tmp_path)
    try:
        _set(s, "mqtt.retain_available", True)  # logged at info
        _set(s, "log.level", "warning")
        _set(s, "mqtt.max_topic_levels", 100)  # not logged
        _set(s, "log.level", "info")  # logged after the change
    finally:
        assert _stop(s.proc) == 0
    assert s.proc.stderr is not None
    logged = [ln for ln in s.proc.stderr.read().splitlines() if "through the HTTP API" in ln]
    assert len(logged) == 2, logged
    assert "mqtt.retain_available" in logged[0] and "log.level" in logged[1]


# ------------------------------------------------------------------ metrics


def test_handler_request_and_storage_latency_metrics(server: Server):
    kafka = pytest.importorskip("kafka")
    pub = Paho(server.mqtt, "lat-pub", 5)
    before = _metric(
        server.call("GET", "/metrics")[1],
        "robustmq_mqtt_handler_seconds_count",
        packet_type="PUBLISH",
    )
    # One PUBLISH in 64 is timed; with a property it is never part of a run.
    tagged = props("PUBLISH", ContentType="text/plain")
    for i in range(130):
        pub.publish("lat/x", b"%d" % i, qos=1, properties=tagged)
    producer = kafka.KafkaProducer(bootstrap_servers=f"127.0.0.1:{server.kafka}")
    producer.send("lat-t", b"v" * 100).get(timeout=10)
    producer.close()
    text = server.call("GET", "/metrics")[1]
    after = _metric(text, "robustmq_mqtt_handler_seconds_count", packet_type="PUBLISH")
    assert after - before >= 2
    assert (
        _metric(text, "robustmq_mqtt_handler_seconds_bucket", packet_type="PUBLISH", le="+Inf")
        == after
    )
    assert _metric(text, "robustmq_mqtt_handler_seconds_sum", packet_type="PUBLISH") > 0
    # A type never timed has no latency series.
    assert 'robustmq_mqtt_handler_seconds_count{packet_type="AUTH"}' not in text
    assert _metric(text, "robustmq_kafka_request_seconds_count", api="Produce") >= 1
    assert _metric(text, "robustmq_kafka_request_seconds_sum", api="Produce") > 0
    assert _metric(text, "robustmq_storage_operations_total", engine="leveldb", op="append") >= 1
    assert _metric(text, "robustmq_storage_bytes_total", engine="leveldb", op="append") >= 100
