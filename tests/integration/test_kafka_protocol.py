"""Kafka protocol scenarios driven byte by byte over a raw socket, for what real clients
do not easily show: group coordinator error codes and session expiry, idempotent
producer retries and sequence gaps, produce errors, DescribeGroups and ListGroups.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robustmq._core import kafka_codec as kc
from robustmq._core.kafka_spec import APIS, parse_range
from robustmq.broker.kafka import coordinator
from robustmq.storage.engine import patch_base_offset
from tests.integration.test_kafka_clients import KafkaThread
from tests.unit.test_kafka_codec import _struct, make_batch

TIMEOUT = 30.0


@pytest.fixture
def kb() -> Iterator[KafkaThread]:
    k = KafkaThread()
    yield k
    errors = k.problems()
    k.stop()
    assert not errors, f"the broker failed: {errors}"


class Raw:
    """One client connection speaking the codec directly."""

    def __init__(self, kb: KafkaThread) -> None:
        self.sock = socket.create_connection(("127.0.0.1", kb.port), timeout=TIMEOUT)
        self.correlation_id = 0

    def send(self, api_key: int, version: int, body: dict[str, Any]) -> int:
        self.correlation_id += 1
        self.sock.sendall(kc.encode_request(api_key, version, self.correlation_id, "raw", body))
        return self.correlation_id

    def receive(self, api_key: int, version: int) -> dict[str, Any]:
        (size,) = struct.unpack(">i", self._exactly(4))
        _, body = kc.decode_response(api_key, version, self._exactly(size))
        return body

    def call(self, api_key: int, version: int, body: dict[str, Any]) -> dict[str, Any]:
        self.send(api_key, version, body)
        return self.receive(api_key, version)

    def _exactly(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            assert chunk, "connection closed"
            buf += chunk
        return buf

    def close(self) -> None:
        self.sock.close()


def _join(raw: Raw, group: str, member_id: str = "", session_ms: int = 6000) -> dict[str, Any]:
    return raw.call(
        11,
        5,
        {
            "group_id": group,
            "session_timeout_ms": session_ms,
            "rebalance_timeout_ms": 10_000,
            "member_id": member_id,
            "protocol_type": "consumer",
            "protocols": [{"name": "range", "metadata": b"meta-" + group.encode()}],
        },
    )


def _heartbeat(raw: Raw, group: str, generation: int, member_id: str) -> int:
    body = {"group_id": group, "generation_id": generation, "member_id": member_id}
    return raw.call(12, 3, body)["error_code"]


def test_generation_checks_and_session_expiry(kb: KafkaThread, monkeypatch):
    monkeypatch.setattr(coordinator, "MIN_SESSION_TIMEOUT_MS", 100)
    a = Raw(kb)
    joined = _join(a, "g", session_ms=400)
    assert joined["error_code"] == 0 and joined["generation_id"] == 1
    member = joined["member_id"]
    assert joined["leader"] == member
    assert [m["metadata"] for m in joined["members"]] == [b"meta-g"]
    synced = a.call(
        14,
        3,
        {
            "group_id": "g",
            "generation_id": 1,
            "member_id": member,
            "assignments": [{"member_id": member, "assignment": b"all of it"}],
        },
    )
    assert synced == {"throttle_time_ms": 0, "error_code": 0, "assignment": b"all of it"}
    assert _heartbeat(a, "g", 1, member) == 0
    assert _heartbeat(a, "g", 0, member) == 22  # ILLEGAL_GENERATION
    assert _heartbeat(a, "g", 1, "stranger") == 25  # UNKNOWN_MEMBER_ID
    assert _join(a, "g", member_id="stranger")["error_code"] == 25
    described = a.call(15, 4, {"groups": ["g", "nobody"]})["groups"]
    assert [(g["group_state"], len(g["members"])) for g in described] == [
        ("Stable", 1),
        ("Dead", 0),
    ]
    assert described[0]["members"][0]["member_assignment"] == b"all of it"
    assert described[0]["protocol_type"] == "consumer" and described[0]["protocol_data"] == "range"
    assert a.call(16, 2, {})["groups"] == [{"group_id": "g", "protocol_type": "consumer"}]
    # No more heartbeats: the session (400 ms) runs out and the member is dropped.
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if not a.call(15, 4, {"groups": ["g"]})["groups"][0]["members"]:
            break
        time.sleep(0.1)
    assert a.call(15, 4, {"groups": ["g"]})["groups"][0]["group_state"] == "Empty"
    assert _heartbeat(a, "g", 1, member) == 25
    a.close()


def test_inconsistent_protocols_and_bad_session_timeouts_are_refused(kb: KafkaThread):
    a = Raw(kb)
    assert _join(a, "p")["error_code"] == 0
    b = Raw(kb)
    other = {
        "group_id": "p",
        "session_timeout_ms": 6000,
        "member_id": "",
        "protocol_type": "consumer",
        "protocols": [{"name": "roundrobin", "metadata": b""}],
    }
    assert b.call(11, 5, other)["error_code"] == 23  # INCONSISTENT_GROUP_PROTOCOL
    assert _join(b, "p", session_ms=10)["error_code"] == 26  # INVALID_SESSION_TIMEOUT
    assert _join(b, "")["error_code"] == 24  # INVALID_GROUP_ID
    a.close()
    b.close()


def test_a_second_member_joins_leaves_and_the_first_is_told_to_rejoin(kb: KafkaThread):
    a = Raw(kb)
    first = _join(a, "r")
    ma = first["member_id"]
    a.call(14, 3, {"group_id": "r", "generation_id": 1, "member_id": ma, "assignments": []})
    b = Raw(kb)
    b.send(11, 5, _join_body("r"))  # waits: the group is rebalancing
    _wait_state(a, "r", "PreparingRebalance")
    assert _heartbeat(a, "r", 1, ma) == 27  # REBALANCE_IN_PROGRESS
    again = _join(a, "r", member_id=ma)
    joined_b = b.receive(11, 5)
    assert again["generation_id"] == joined_b["generation_id"] == 2
    assert again["leader"] == ma and len(again["members"]) == 2 and joined_b["members"] == []
    mb = joined_b["member_id"]
    # Each member gets its share of the leader's assignment.
    b.send(14, 3, {"group_id": "r", "generation_id": 2, "member_id": mb, "assignments": []})
    assignments = [{"member_id": ma, "assignment": b"A"}, {"member_id": mb, "assignment": b"B"}]
    leader = a.call(
        14, 3, {"group_id": "r", "generation_id": 2, "member_id": ma, "assignments": assignments}
    )
    assert leader["assignment"] == b"A" and b.receive(14, 3)["assignment"] == b"B"
    left = b.call(13, 3, {"group_id": "r", "members": [{"member_id": mb}]})
    assert left["error_code"] == 0 and left["members"][0]["error_code"] == 0
    assert _heartbeat(a, "r", 2, ma) == 27
    assert _join(a, "r", member_id=ma)["generation_id"] == 3
    a.close()
    b.close()


def _wait_state(raw: Raw, group: str, state: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if raw.call(15, 4, {"groups": [group]})["groups"][0]["group_state"] == state:
            return
        time.sleep(0.05)
    raise AssertionError(f"group {group} never reached {state}")


def _join_body(group: str) -> dict[str, Any]:
    return {
        "group_id": group,
        "session_timeout_ms": 6000,
        "rebalance_timeout_ms": 10_000,
        "member_id": "",
        "protocol_type": "consumer",
        "protocols": [{"name": "range", "metadata": b""}],
    }


def _produce(raw: Raw, topic: str, records: bytes, partition: int = 0) -> dict[str, Any]:
    body = {
        "acks": -1,
        "timeout_ms": 5000,
        "topic_data": [
            {"name": topic, "partition_data": [{"index": partition, "records": records}]}
        ],
    }
    [topic_response] = raw.call(0, 8, body)["responses"]
    [part] = topic_response["partition_responses"]
    return part


def test_idempotent_retries_land_once_and_gaps_are_refused(kb: KafkaThread):
    raw = Raw(kb)
    init = raw.call(22, 1, {"transactional_id": None, "transaction_timeout_ms": 60000})
    assert init["error_code"] == 0 and init["producer_id"] > 0 and init["producer_epoch"] == 0
    pid = init["producer_id"]
    first = make_batch([b"a", b"b"], producer=(pid, 0, 0))
    assert _produce(raw, "idem", first)["base_offset"] == 0
    second = make_batch([b"c"], producer=(pid, 0, 2))
    assert _produce(raw, "idem", second)["base_offset"] == 2
    retry = _produce(raw, "idem", first)  # a retry of the first batch
    assert (retry["error_code"], retry["base_offset"]) == (0, 0)
    gap = _produce(raw, "idem", make_batch([b"e"], producer=(pid, 0, 7)))
    assert gap["error_code"] == 45  # OUT_OF_ORDER_SEQUENCE_NUMBER
    assert kb.call(kb.engine.latest_offset("kafka/idem/0")) == 3
    # A deleted and re-created topic starts with no producer state.
    assert (
        raw.call(20, 3, {"topic_names": ["idem"], "timeout_ms": 1000})["responses"][0]["error_code"]
        == 0
    )
    assert _produce(raw, "idem", first)["base_offset"] == 0
    assert kb.call(kb.engine.latest_offset("kafka/idem/0")) == 2
    refused = raw.call(22, 1, {"transactional_id": "tx", "transaction_timeout_ms": 60000})
    assert refused["error_code"] == 53  # TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    raw.close()


def test_produce_errors_are_per_partition(kb: KafkaThread):
    raw = Raw(kb)
    good = make_batch([b"x"])
    assert _produce(raw, "errs", good)["error_code"] == 0
    assert _produce(raw, "errs", good, partition=5)["error_code"] == 3
    bad = bytearray(make_batch([b"y"]))
    bad[-1] ^= 1
    assert _produce(raw, "errs", bytes(bad))["error_code"] == 2  # CORRUPT_MESSAGE
    assert _produce(raw, "bad topic!", good)["error_code"] == 17  # INVALID_TOPIC_EXCEPTION
    old = bytearray(good)
    old[16] = 1
    assert _produce(raw, "errs", bytes(old))["error_code"] == 43
    acks = {
        "acks": 2,
        "timeout_ms": 1,
        "topic_data": [{"name": "errs", "partition_data": [{"index": 0, "records": good}]}],
    }
    assert raw.call(0, 8, acks)["responses"][0]["partition_responses"][0]["error_code"] == 21
    assert kb.call(kb.engine.latest_offset("kafka/errs/0")) == 1
    assert kb.broker.stats["protocol_errors"] == 0  # errors in answers, the connection lives
    raw.close()


def test_list_offsets_earliest_latest_and_unknown(kb: KafkaThread):
    raw = Raw(kb)
    for i in range(3):
        _produce(raw, "lo", make_batch([b"%d" % i], base_timestamp=10_000 * (i + 1)))
    kb.call(kb.engine.delete_before("kafka/lo/0", 1))
    parts = [
        {"partition_index": 0, "timestamp": -2},
        {"partition_index": 0, "timestamp": -1},
        {"partition_index": 0, "timestamp": 15_000},
        {"partition_index": 0, "timestamp": 99_000},
        {"partition_index": 3, "timestamp": -1},
    ]
    body = raw.call(2, 5, {"topics": [{"name": "lo", "partitions": parts}]})
    got = [(p["error_code"], p["offset"]) for p in body["topics"][0]["partitions"]]
    assert got == [(0, 1), (0, 3), (0, 1), (0, -1), (3, -1)]
    raw.close()


def test_fetch_max_bytes_keeps_the_first_batch_whole(kb: KafkaThread):
    raw = Raw(kb)
    raw.call(
        19,
        4,
        {
            "topics": [{"name": "mb", "num_partitions": 2, "replication_factor": 1}],
            "timeout_ms": 1000,
        },
    )
    big = make_batch([b"x" * 3000])
    small = make_batch([b"y"])
    for _ in range(3):
        _produce(raw, "mb", small, partition=0)
    _produce(raw, "mb", big, partition=1)

    def fetch(max_bytes: int, partition_max: int) -> list[bytes]:
        topics = [
            {
                "topic": "mb",
                "partitions": [
                    {"partition": p, "fetch_offset": 0, "partition_max_bytes": partition_max}
                    for p in (1, 0)
                ],
            }
        ]
        body = {"max_wait_ms": 0, "min_bytes": 0, "max_bytes": max_bytes, "topics": topics}
        parts = raw.call(1, 7, body)["responses"][0]["partitions"]
        return [p["records"] for p in parts]

    # max_bytes below the first batch: it still comes whole, nothing else does (KIP-74).
    assert fetch(100, 1 << 20) == [big, b""]
    # partition_max_bytes of one small batch: one batch per partition.
    assert fetch(1 << 20, len(small)) == [big, small]
    stored = b"".join(patch_base_offset(small, offset, 0) for offset in range(3))
    assert fetch(1 << 20, 1 << 20) == [big, stored]  # as sent, base offsets patched
    raw.close()


def test_a_topic_that_does_not_fit_is_not_half_created():
    from robustmq.storage import MemoryConfig

    kb = KafkaThread(engine=MemoryConfig(max_shards=3))
    try:
        raw = Raw(kb)
        body = {"topics": [{"name": "wide", "num_partitions": 5, "replication_factor": 1}]}
        [topic] = raw.call(19, 4, {**body, "timeout_ms": 1000})["topics"]
        assert topic["error_code"] == 56  # KAFKA_STORAGE_ERROR
        assert kb.call(kb.engine.list_shards("kafka/")) == []
        too_many = {"topics": [{"name": "huge", "num_partitions": 10**6, "replication_factor": 1}]}
        assert raw.call(19, 4, {**too_many, "timeout_ms": 1})["topics"][0]["error_code"] == 37
        raw.close()
        assert not kb.problems()
    finally:
        kb.stop()


# Requests whose answer may legitimately wait (group joins, long polls) are left out of the
# fuzzing; every other API gets bodies built from its own table.
_FUZZED = [
    (key, version)
    for key, api in sorted(APIS.items())
    if key not in (11, 14)
    for version in range(parse_range(api.request.valid)[0], parse_range(api.request.valid)[1] + 1)
]


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzzed_requests_get_answers_or_a_closed_connection_never_a_crash(
    fuzz_broker: KafkaThread, data
) -> None:
    kb = fuzz_broker
    api_key, version = data.draw(st.sampled_from(_FUZZED))
    body = data.draw(_struct(APIS[api_key].request.fields, version))
    if api_key == 1:
        body["max_wait_ms"] = 0
    if api_key == 19:
        for topic in body["topics"]:
            topic["num_partitions"] = min(abs(topic["num_partitions"]), 3)
    raw = Raw(kb)
    try:
        raw.send(api_key, version, body)
        if api_key == 0 and body["acks"] == 0:
            raw.send(18, 0, {})  # acks=0 has no answer; make sure the broker is still there
            api_key, version = 18, 0
        raw.receive(api_key, version)
    except (AssertionError, ConnectionError):
        pass  # the broker closed the connection: allowed for a request it cannot serve
    finally:
        raw.close()
    # Whatever happened, the broker still serves other clients.
    probe = Raw(kb)
    assert probe.call(18, 3, {})["error_code"] == 0
    probe.close()
    assert not kb.problems()


@pytest.fixture(scope="module")
def fuzz_broker() -> Iterator[KafkaThread]:
    k = KafkaThread()
    yield k
    errors = k.problems()
    k.stop()
    assert not errors, f"the broker failed: {errors}"


def test_retention_runs_on_topic_partitions(monkeypatch):
    from robustmq.broker.kafka import server

    monkeypatch.setattr(server, "RETENTION_INTERVAL", 0.05)
    kb = KafkaThread()
    try:
        raw = Raw(kb)
        configs = [{"name": "retention.ms", "value": "60000"}]
        topics = [{"name": "old", "num_partitions": 1, "replication_factor": 1, "configs": configs}]
        assert raw.call(19, 4, {"topics": topics, "timeout_ms": 1})["topics"][0]["error_code"] == 0
        _produce(raw, "old", make_batch([b"ancient"], base_timestamp=1000))  # 1970
        _produce(raw, "old", make_batch([b"recent"], base_timestamp=int(time.time() * 1000)))
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if kb.call(kb.engine.earliest_offset("kafka/old/0")) == 1:
                break
            time.sleep(0.05)
        listed = raw.call(
            2,
            1,
            {"topics": [{"name": "old", "partitions": [{"partition_index": 0, "timestamp": -2}]}]},
        )
        assert listed["topics"][0]["partitions"][0]["offset"] == 1
        raw.close()
        assert not kb.problems()
    finally:
        kb.stop()


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**32 - 1))
def test_requests_cut_anywhere_and_pipelined_are_answered_in_order(kb: KafkaThread, seed: int):
    """The connection's buffer handling: small and large (larger than a read buffer)
    requests, several per write and each cut at random places, all answered in order with
    the records stored byte for byte."""
    import random
    import uuid

    rng = random.Random(seed)
    raw = Raw(kb)
    topic = f"cut-{uuid.uuid4().hex[:12]}"
    sizes = [rng.choice([10, 3_000, 150_000, 300_000]) for _ in range(6)]
    batches = [make_batch([bytes([i]) * size]) for i, size in enumerate(sizes)]
    stream = b""
    for i, batch in enumerate(batches):
        body = {
            "acks": 1,
            "timeout_ms": 5000,
            "topic_data": [{"name": topic, "partition_data": [{"index": 0, "records": batch}]}],
        }
        stream += kc.encode_request(0, 8, i + 1, "raw", body)
        stream += kc.encode_request(18, 3, 100 + i, "raw", {})  # ApiVersions in between
    cuts = sorted(rng.sample(range(1, len(stream)), 20))
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        raw.sock.sendall(stream[start:end])
    offsets = []
    for _ in batches:
        [answer] = raw.receive(0, 8)["responses"]
        [part] = answer["partition_responses"]
        assert part["error_code"] == 0
        offsets.append(part["base_offset"])
        assert raw.receive(18, 3)["error_code"] == 0
    assert offsets == list(range(len(batches)))
    stored = kb.call(kb.engine.read_batches(f"kafka/{topic}/0", 0, 1 << 30))
    assert [bytes(b.data) for b in stored] == [
        patch_base_offset(batch, offset, 0) for offset, batch in enumerate(batches)
    ]
    raw.close()
