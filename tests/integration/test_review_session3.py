"""Proofs from the third adversarial review session, over real sockets against the
in-process brokers and the real ``robustmq-server``: the MQTT forwarding lanes and a
5.0 subscriber's Maximum Packet Size; hot config keys through ``PUT
/api/v1/cluster/config`` (a lowered ``mqtt.max_topic_levels`` that cached delivery plans
ignore, ``auth.publish_rate`` taking NaN, ``kafka.default_partitions`` above what a topic
may have); a Kafka listener with SASL that buffers a huge frame from a client that never
authenticated and refuses a short bare PLAIN token after SaslHandshake v0; OffsetCommit
with the empty group id in the Meta Service; DescribeConfigs with an empty key list and
topic config numbers Kafka would refuse; and the REST API's answers to a non-ASCII admin
token, a non-decimal digit in a path, and an ACL rule deleted after the file changed on
disk; and secrets that reached the config read (a URL's ``user:password@``) and the log
(a CONNECT's password when its handler failed).

Each test proved a bug in product code while it was marked ``xfail(strict=True)``; the
mark came off with the fix, so the test now guards against its return. Most have a control, a passing test next to them or a
check inside them, so that a proof does not rest on a broken setup. The file-level
proofs (ACL and password file rewrites) are in ``tests/unit/test_review_session3.py``.
"""

from __future__ import annotations

import functools
import struct
import time
from collections.abc import Iterator

import pytest

from robustmq._core import mqtt_codec
from robustmq.broker.auth.users import MemoryUserStore, new_user
from robustmq.broker.kafka import server as kafka_server
from tests.integration.clients import Paho, Raw, raw_connect
from tests.integration.test_cli import _stop
from tests.integration.test_http_api import Server, start_server
from tests.integration.test_kafka_clients import KafkaThread
from tests.integration.test_kafka_protocol import Raw as KafkaRaw

WAIT = 5.0


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("review3"))
    yield s
    assert _stop(s.proc) == 0


def _next_packet(raw: Raw, timeout: float = WAIT) -> bytes | None:
    """The next whole packet from the broker as its wire bytes (None if none comes): the
    size a client's Maximum Packet Size is about."""
    deadline = time.monotonic() + timeout
    while True:
        buf = raw.buffer
        if len(buf) >= 2:
            length, shift, i = 0, 0, 1
            while i < len(buf):
                length |= (buf[i] & 0x7F) << shift
                i += 1
                if not buf[i - 1] & 0x80:
                    if len(buf) >= i + length:
                        raw.buffer = buf[i + length :]
                        return bytes(buf[: i + length])
                    break
                shift += 7
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        raw.sock.settimeout(left)
        try:
            data = raw.sock.recv(65536)
        except TimeoutError:
            return None
        assert data, "the broker closed the subscriber's connection"
        raw.buffer += data


def _payload_of(packet: bytes) -> bytes:
    decoded, _ = mqtt_codec.Decoder(5).decode(packet)
    (publish,) = decoded
    assert isinstance(publish, mqtt_codec.Publish), publish
    return bytes(publish.payload)


# ------------------------------------------------------------------ MQTT forwarding lanes


def test_qos0_run_from_311_never_exceeds_a_v5_subscribers_maximum_packet_size(broker):
    # topic "t" (3 bytes) + 10-byte payload: 15 bytes in 3.1.1, 16 in 5.0 (property block).
    sub = raw_connect(broker.port, "small-sub", 5, properties={"maximum_packet_size": 15})
    assert sub.subscribe("t", qos=0).reason_codes == [0]
    pub = raw_connect(broker.port, "pub-311", 4)
    pub.publish("t", b"x" * 10)  # MQTT 5 §3.1.2.25: must not reach this subscriber
    pub.publish("t", b"y" * 9)  # 15 bytes in 5.0: fits, and shows the subscriber is served
    packet = _next_packet(sub)
    assert packet is not None, "the subscriber got nothing, not even the message that fits"
    assert len(packet) <= 15, f"a {len(packet)}-byte PUBLISH to a client that allows 15"
    assert _payload_of(packet) == b"y" * 9


def test_qos1_run_from_311_never_exceeds_a_v5_subscribers_maximum_packet_size(broker):
    # 3.1.1: topic "t" (3) + packet id (2) + 122 = Remaining Length 127, 129 bytes in all.
    # 5.0: Remaining Length 128 needs two bytes: 131 bytes, over the 130 allowed, though
    # the lane's check (largest + 1 = 130) lets it through.
    sub = raw_connect(broker.port, "small-sub1", 5, properties={"maximum_packet_size": 130})
    assert sub.subscribe("t1", qos=1).reason_codes == [1]
    pub = raw_connect(broker.port, "pub-311-q1", 4)
    pub.publish("t1", b"x" * 121, qos=1, packet_id=1)  # 131 bytes in 5.0: must not arrive
    assert isinstance(pub.recv(), mqtt_codec.Puback)
    pub.publish("t1", b"y" * 120, qos=1, packet_id=2)  # 129 bytes in 5.0: fits
    assert isinstance(pub.recv(), mqtt_codec.Puback)
    packet = _next_packet(sub)
    assert packet is not None, "the subscriber got nothing, not even the message that fits"
    assert len(packet) <= 130, f"a {len(packet)}-byte PUBLISH to a client that allows 130"
    assert _payload_of(packet) == b"y" * 120


# ------------------------------------------------------------------ hot config keys


def _put_config(server: Server, key: str, value: object) -> tuple[int, object]:
    return server.call("PUT", "/api/v1/cluster/config", {"key": key, "value": value})


def _lower_levels_then(server: Server, publish_topic: str) -> None:
    """Caches the plan of "lv/b/c/d" (four levels), lowers mqtt.max_topic_levels to 3
    through the API, and publishes on ``publish_topic`` (four levels) from a new client:
    the broker must refuse it as it refuses any topic over the maximum (MQTT 5 DISCONNECT
    0x90 Topic Name invalid) and not deliver it."""
    sub = Paho(server.mqtt, "levels-sub", 5)
    sub.subscribe("lv/#")
    before = raw_connect(server.mqtt, "levels-pub-1", 5)
    before.publish("lv/b/c/d", b"cached")  # four levels: fine, and the topic's plan is cached
    assert sub.get().payload == b"cached"
    status, answer = _put_config(server, "mqtt.max_topic_levels", 3)
    assert status == 200, answer
    try:
        after = raw_connect(server.mqtt, "levels-pub-2", 5)
        after.publish("lv/b", b"short")  # two levels: still delivered (the subscriber works)
        assert sub.get().payload == b"short"
        after.publish(publish_topic, b"too deep")
        sub.expect_nothing(1.0)
        got = after.recv()
        assert isinstance(got, mqtt_codec.Disconnect), got
        assert got.reason_code == 0x90
    finally:
        status, answer = _put_config(server, "mqtt.max_topic_levels", 128)
        assert status == 200, answer
        sub.disconnect()


def test_lowered_max_topic_levels_applies_to_a_new_topic(server: Server):
    # The control for the test below: a topic the broker has not seen is refused.
    _lower_levels_then(server, "lv/b/c/e")


def test_lowered_max_topic_levels_applies_to_topics_already_published(server: Server):
    _lower_levels_then(server, "lv/b/c/d")


@pytest.mark.parametrize("value", ["nan", "NaN"])
def test_hot_publish_rate_refuses_nan(server: Server, value: str):
    try:
        status, answer = _put_config(server, "auth.publish_rate", value)
        assert status == 400, (status, answer)
    finally:
        status, answer = _put_config(server, "auth.publish_rate", 0)
        assert status == 200, answer


def test_hot_publish_rate_still_takes_a_number(server: Server):
    # The control for the test above: a plain number is accepted and applied.
    try:
        status, answer = _put_config(server, "auth.publish_rate", "2.5")
        assert status == 200 and answer["value"] == 2.5, answer
    finally:
        status, answer = _put_config(server, "auth.publish_rate", 0)
        assert status == 200, answer


# ------------------------------------------------------------------ Kafka SASL


def test_unauthenticated_client_cannot_make_the_broker_buffer_a_huge_frame():
    # SASL on; no users are needed, as the client never gets as far as authenticating.
    kb = KafkaThread(sasl_mechanisms=["PLAIN"])
    try:
        raw = KafkaRaw(kb)
        # A Produce v9 header announcing a 64 MiB request; the rest never comes.
        header = struct.pack(">hhih", 0, 9, 1, 3) + b"raw"
        raw.sock.sendall(struct.pack(">i", 64 << 20) + header + b"\0" * 1024)
        raw.sock.settimeout(WAIT)
        try:
            closed = raw.sock.recv(1) == b""
        except TimeoutError:
            closed = False
        except ConnectionResetError:
            closed = True
        raw.close()
        assert closed, "the broker kept reading a 64 MiB frame from an unauthenticated client"
    finally:
        problems = kb.problems()
        kb.stop()
    assert not problems, problems


# ------------------------------------------------------------------ Kafka committed offsets


class _KafkaPort:
    """What ``test_kafka_protocol.Raw`` needs of a broker: its port."""

    def __init__(self, port: int) -> None:
        self.port = port


def _commit_codes(raw: KafkaRaw, group: str, offsets: list[int]) -> list[int]:
    partitions = [
        {"partition_index": i, "committed_offset": offset, "committed_leader_epoch": -1,
         "committed_metadata": ""}
        for i, offset in enumerate(offsets)
    ]  # fmt: skip
    body = {"group_id": group, "generation_id": -1, "member_id": "",
            "topics": [{"name": "rv3-offsets", "partitions": partitions}]}  # fmt: skip
    return [p["error_code"] for p in raw.call(8, 8, body)["topics"][0]["partitions"]]


def _offsets_topic(server: Server) -> KafkaRaw:
    raw = KafkaRaw(_KafkaPort(server.kafka))
    topics = [{"name": "rv3-offsets", "num_partitions": 2, "replication_factor": 1,
               "configs": []}]  # fmt: skip
    code = raw.call(19, 4, {"topics": topics, "timeout_ms": 5000})["topics"][0]["error_code"]
    assert code in (0, 36), code  # created, or TOPIC_ALREADY_EXISTS from an earlier test
    return raw


def test_offset_commit_to_the_meta_service_works_for_a_named_group(server: Server):
    # The control for the test below: the same request with a group id is accepted.
    raw = _offsets_topic(server)
    assert _commit_codes(raw, "rv3-group", [5, 7]) == [0, 0]
    raw.close()


def test_offset_commit_with_the_empty_group_id_is_accepted_as_kafka_does(server: Server):
    raw = _offsets_topic(server)
    assert _commit_codes(raw, "", [5, 7]) == [0, 0]
    raw.close()


# ------------------------------------------------------------------ HTTP admin token


def test_a_non_ascii_admin_token_is_refused_with_401_not_a_500(server: Server):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.http, timeout=10)
    conn.putrequest("GET", "/api/v1/cluster/status")
    conn.putheader("Authorization", "Bearer caf\xe9".encode("latin-1"))
    conn.endheaders()
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.status == 401


# ------------------------------------------------------------------ HTTP path parameters


@pytest.mark.parametrize("path", ["/api/v1/mqtt/rewrite/%C2%B2", "/api/v1/cluster/nodes/%C2%B2"])
def test_a_non_decimal_digit_in_a_path_parameter_is_a_400_not_a_500(server: Server, path: str):
    status, answer = server.call("DELETE", path)
    assert status == 400, (status, answer)


def test_a_non_decimal_digit_in_a_node_address_port_is_a_400(server: Server):
    body = {"node_id": 7, "address": "127.0.0.1:\u00b2"}
    status, answer = server.call("POST", "/api/v1/cluster/nodes", body)
    assert status == 400, (status, answer)
    assert answer["error"]["message"].startswith("address"), answer


def test_a_letter_in_a_path_parameter_is_a_400(server: Server):
    # The control for the test above: the same parameter with a plain non-digit.
    status, answer = server.call("DELETE", "/api/v1/mqtt/rewrite/x")
    assert status == 400, (status, answer)


# ------------------------------------------------------------------ ACL rules over the API


def test_deleting_a_listed_acl_rule_removes_that_rule_even_if_the_file_changed(tmp_path):
    acl = tmp_path / "acl"
    acl.write_text("allow all all #\n")
    s = start_server(tmp_path, ROBUSTMQ_AUTH_ACL_FILE=str(acl))
    try:
        listed = [r["line"] for r in s.ok("GET", "/api/v1/mqtt/acl")["data"]]
        assert listed == ["allow all all #"]
        # Someone edits the file on disk (the broker does not reload it by itself).
        acl.write_text("deny all all secret/#\nallow all all #\n")
        status, answer = s.call("DELETE", "/api/v1/mqtt/acl/0")  # rule 0 as listed above
        after = [r["line"] for r in s.ok("GET", "/api/v1/mqtt/acl")["data"]]
        # Either the change is refused as a conflict, or the listed rule is the one gone.
        assert status == 409 or "allow all all #" not in after, (status, answer, after)
    finally:
        assert _stop(s.proc) == 0


def test_hot_default_partitions_refuses_what_no_topic_can_have(server: Server):
    try:
        status, answer = _put_config(server, "kafka.default_partitions", 20_000)
        if status == 200:  # what it costs: auto-creation now fails for every new topic
            raw = KafkaRaw(_KafkaPort(server.kafka))
            body = {"topics": [{"name": "rv3-auto"}], "allow_auto_topic_creation": True}
            [topic] = raw.call(3, 4, body)["topics"]
            raw.close()
            answer = {"applied": answer, "auto-created topic error": topic["error_code"]}
        assert status == 400, (status, answer)
    finally:
        status, answer = _put_config(server, "kafka.default_partitions", 1)
        assert status == 200, answer


def test_hot_default_partitions_takes_a_value_topics_can_have(server: Server):
    # The control for the test above.
    try:
        status, answer = _put_config(server, "kafka.default_partitions", 2)
        assert status == 200, answer
        raw = KafkaRaw(_KafkaPort(server.kafka))
        body = {"topics": [{"name": "rv3-auto2"}], "allow_auto_topic_creation": True}
        [topic] = raw.call(3, 4, body)["topics"]
        raw.close()
        assert topic["error_code"] == 0 and len(topic["partitions"]) == 2, topic
    finally:
        status, answer = _put_config(server, "kafka.default_partitions", 1)
        assert status == 200, answer


# ------------------------------------------------------------------ Kafka admin APIs


@pytest.fixture
def kb() -> Iterator[KafkaThread]:
    k = KafkaThread()
    yield k
    errors = k.problems()
    k.stop()
    assert not errors, f"the broker failed: {errors}"


def _described(kb: KafkaThread, kind: int, name: str, keys: list[str] | None) -> list[str]:
    raw = KafkaRaw(kb)
    if kind == 2:
        topics = [{"name": name, "num_partitions": 1, "replication_factor": 1, "configs": []}]
        assert raw.call(19, 4, {"topics": topics, "timeout_ms": 1})["topics"][0]["error_code"] == 0
    body = {
        "resources": [{"resource_type": kind, "resource_name": name, "configuration_keys": keys}],
        "include_synonyms": False,
    }
    [result] = raw.call(32, 1, body)["results"]
    raw.close()
    assert result["error_code"] == 0, result
    return [c["name"] for c in result["configs"]]


def test_describe_configs_with_null_keys_lists_every_key(kb: KafkaThread):
    # The control for the test below.
    assert "retention.ms" in _described(kb, 2, "dc-null", None)
    assert "num.partitions" in _described(kb, 4, "1", None)


@pytest.mark.parametrize("kind, name", [(2, "dc-empty"), (4, "1")])
def test_describe_configs_with_an_empty_key_list_lists_every_key(kb, kind, name):
    assert _described(kb, kind, name, []) == _described(
        kb, kind, f"{name}x" if kind == 2 else name, None
    )


def _alter_retention(kb: KafkaThread, topic: str, value: str) -> int:
    raw = KafkaRaw(kb)
    topics = [{"name": topic, "num_partitions": 1, "replication_factor": 1, "configs": []}]
    assert raw.call(19, 4, {"topics": topics, "timeout_ms": 1})["topics"][0]["error_code"] == 0
    change = {"name": "retention.ms", "config_operation": 0, "value": value}
    body = {
        "resources": [{"resource_type": 2, "resource_name": topic, "configs": [change]}],
        "validate_only": False,
    }
    [response] = raw.call(44, 0, body)["responses"]
    raw.close()
    return int(response["error_code"])


def test_a_topic_config_number_is_accepted(kb: KafkaThread):
    # The control for the test below.
    assert _alter_retention(kb, "rv3-num", "1000") == 0


def test_a_topic_config_number_with_an_underscore_is_invalid_config(kb: KafkaThread):
    assert _alter_retention(kb, "rv3-underscore", "1_000") == 40  # INVALID_CONFIG


# ------------------------------------------------------------------ Kafka SASL, handshake v0


def _v0_plain(monkeypatch, username: str, password: str) -> bytes:
    """SaslHandshake v0 then PLAIN as a bare token for ``username``, whose password is
    ``password``; the 4-byte size of the server's answer token ("" when the socket closed
    instead)."""
    users = MemoryUserStore([new_user(username, password)])
    monkeypatch.setattr(
        kafka_server, "KafkaBroker", functools.partial(kafka_server.KafkaBroker, users=users)
    )
    kb = KafkaThread(sasl_mechanisms=["PLAIN"])
    try:
        raw = KafkaRaw(kb)
        assert raw.call(17, 0, {"mechanism": "PLAIN"})["error_code"] == 0
        token = b"\0" + username.encode() + b"\0" + password.encode()
        raw.sock.sendall(struct.pack(">i", len(token)) + token)
        raw.sock.settimeout(WAIT)
        got = b""
        try:
            while len(got) < 4:
                chunk = raw.sock.recv(4 - len(got))
                if not chunk:
                    break
                got += chunk
        except ConnectionResetError:
            pass
        raw.close()
        return got
    finally:
        problems = kb.problems()
        kb.stop()
        assert not problems, problems


def test_v0_bare_plain_token_of_eight_bytes_authenticates(monkeypatch):
    # The control for the test below: "\0" + "alice" + "\0" + "s3" is 9 bytes.
    assert _v0_plain(monkeypatch, "alice", "s3") == b"\0\0\0\0"


def test_v0_bare_plain_token_under_eight_bytes_authenticates(monkeypatch):
    assert _v0_plain(monkeypatch, "al", "pw1") == b"\0\0\0\0"  # "\0al\0pw1": 7 bytes


# ------------------------------------------------------------------ secrets kept out of sight


def test_the_config_read_masks_credentials_inside_a_url(tmp_path):
    # auth.http_url is not a *_secret or *_token key, yet its user:password@ is one.
    url = "http://alice:s3cr3t-pw@127.0.0.1:9/check"
    s = start_server(tmp_path, ROBUSTMQ_AUTH_HTTP_URL=url)
    try:
        config = s.ok("GET", "/api/v1/cluster/config")
        assert config["auth"]["http_url"] == "http://******@127.0.0.1:9/check"
        assert "s3cr3t-pw" not in repr(config)
    finally:
        assert _stop(s.proc) == 0


def test_a_connect_its_handler_fails_on_is_logged_without_its_password(monkeypatch, caplog):
    from robustmq.broker.mqtt import connection
    from tests.conftest import BrokerThread

    def broken(conn: object, packet: object) -> None:
        raise RuntimeError("a bug in the CONNECT handler")

    monkeypatch.setitem(connection._HANDLERS, mqtt_codec.CONNECT, broken)
    b = BrokerThread()  # not the broker fixture: this test makes the broker log an exception
    try:
        raw = Raw(b.port, 5)
        connect = mqtt_codec.Connect(
            "leaky", protocol_version=5, username="alice", password=b"hunter2-pw"
        )
        raw.send_packet(connect)
        assert raw.closed(WAIT), "the broker kept a connection its handler failed on"
    finally:
        b.stop()
    failures = [r.getMessage() for r in caplog.records if "error handling" in r.getMessage()]
    assert failures, "the handler's failure was not logged"
    assert all("hunter2-pw" not in m and "CONNECT" in m for m in failures), failures
