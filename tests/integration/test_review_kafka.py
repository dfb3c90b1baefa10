"""Regression tests from the adversarial review of the Kafka broker, over a raw socket:
record batches whose header lies about how many records they hold, InitProducerId asked
to bump an epoch that is already at its int16 limit or an id the client does not own,
topic names that must not become shards, and a long-polling Fetch whose topic is deleted.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from robustmq._core import segments as segment_io
from tests.integration.clients import wait_until
from tests.integration.test_kafka_clients import KafkaThread
from tests.integration.test_kafka_protocol import Raw, _produce
from tests.unit.test_kafka_codec import make_batch

CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_TOPIC = 17
INVALID_REQUEST = 42
INVALID_PRODUCER_EPOCH = 47


@pytest.fixture
def kb() -> Iterator[KafkaThread]:
    k = KafkaThread()
    yield k
    errors = k.problems()
    k.stop()
    assert not errors, f"the broker failed: {errors}"


def _lying_batch(record_count: int, last_offset_delta: int) -> bytes:
    """A one-record batch whose header claims other counts, with a valid CRC32C."""
    batch = bytearray(make_batch([b"x"]))
    struct.pack_into(">i", batch, 23, last_offset_delta)  # after attributes
    struct.pack_into(">i", batch, 57, record_count)  # the header's last field
    struct.pack_into(">I", batch, 17, segment_io.crc32c(bytes(batch[21:])))
    return bytes(batch)


@pytest.mark.parametrize(
    "record_count, last_offset_delta",
    [(1, 1_000_000_000), (1, 2**31 - 1), (0, 0), (5, 4), (2, 0)],
)
def test_a_batch_whose_counts_disagree_is_refused(kb, record_count, last_offset_delta):
    # Each offset the header claims is handed out: a 70-byte batch used to move the log
    # end by up to 2**31 offsets.
    raw = Raw(kb)
    refused = _produce(raw, "lies", _lying_batch(record_count, last_offset_delta))
    assert (refused["error_code"], refused["base_offset"]) == (CORRUPT_MESSAGE, -1)
    assert _produce(raw, "lies", make_batch([b"a", b"b"]))["base_offset"] == 0
    assert kb.call(kb.engine.latest_offset("kafka/lies/0")) == 2
    raw.close()


def _init_producer_id(raw: Raw, producer_id: int = -1, epoch: int = -1) -> dict[str, Any]:
    body = {"transactional_id": None, "transaction_timeout_ms": 60000,
            "producer_id": producer_id, "producer_epoch": epoch}  # fmt: skip
    return raw.call(22, 4, body)


def test_init_producer_id_at_the_last_epoch_is_answered(kb):
    # producer_epoch + 1 did not fit the int16 response field: the handler crashed.
    raw = Raw(kb)
    pid = _init_producer_id(raw)["producer_id"]
    for epoch in (32766, 32767):
        answer = _init_producer_id(raw, pid, epoch)
        assert answer["error_code"] == 0
        assert answer["producer_id"] not in (pid, -1) and answer["producer_epoch"] == 0
    raw.close()


def test_init_producer_id_does_not_fence_another_producer(kb):
    owner, intruder = Raw(kb), Raw(kb)
    pid = _init_producer_id(owner)["producer_id"]
    assert _produce(owner, "fence", make_batch([b"a"], producer=(pid, 0, 0)))["error_code"] == 0
    # Another client names the owner's id: it must not get that id with a higher epoch.
    got = _init_producer_id(intruder, pid, 0)
    assert got["error_code"] == 0 and got["producer_id"] != pid
    batch = make_batch([b"b"], producer=(got["producer_id"], got["producer_epoch"], 0))
    assert _produce(intruder, "fence", batch)["error_code"] == 0
    after = _produce(owner, "fence", make_batch([b"c"], producer=(pid, 0, 1)))
    assert (after["error_code"], after["base_offset"]) == (0, 2)
    # An id without an epoch (or the reverse) is a malformed request.
    assert _init_producer_id(intruder, pid, -1)["error_code"] == INVALID_REQUEST
    assert _init_producer_id(intruder, -1, 3)["error_code"] == INVALID_REQUEST
    owner.close()
    intruder.close()


BAD_NAMES = ["", ".", "..", "a/b", "../etc", "x" * 250, "x" * 300, "tab\there", "ünï"]


def test_bad_topic_names_become_no_shards(kb):
    raw = Raw(kb)
    topics = [
        {"name": name, "num_partitions": 1, "replication_factor": 1, "configs": []}
        for name in BAD_NAMES
    ]
    created = raw.call(19, 4, {"topics": topics, "timeout_ms": 1000})["topics"]
    assert [t["error_code"] for t in created] == [INVALID_TOPIC] * len(BAD_NAMES)
    meta = raw.call(3, 9, {"topics": [{"name": n} for n in BAD_NAMES],
                           "allow_auto_topic_creation": True})  # fmt: skip
    assert [t["error_code"] for t in meta["topics"]] == [INVALID_TOPIC] * len(BAD_NAMES)
    produced = _produce(raw, "a/b", make_batch([b"x"]))
    assert produced["error_code"] == INVALID_TOPIC
    assert kb.broker.topics.topics == {}
    assert kb.call(kb.engine.scan(b"kafka/")) == []
    raw.close()


def _fetch_body(topic: str, max_wait_ms: int) -> dict[str, Any]:
    partition = {"partition": 0, "fetch_offset": 0, "partition_max_bytes": 1 << 20}
    return {"replica_id": -1, "max_wait_ms": max_wait_ms, "min_bytes": 1,
            "max_bytes": 1 << 20, "isolation_level": 0,
            "topics": [{"topic": topic, "partitions": [partition]}]}  # fmt: skip


def test_a_fetch_waiting_on_a_deleted_topic_is_answered(kb):
    raw, admin = Raw(kb), Raw(kb)
    topics = [{"name": "gone", "num_partitions": 1, "replication_factor": 1, "configs": []}]
    assert raw.call(19, 4, {"topics": topics, "timeout_ms": 1})["topics"][0]["error_code"] == 0
    # max_wait_ms beyond the client's socket timeout: only the deletion can end the wait.
    raw.send(1, 11, _fetch_body("gone", 600_000))
    deleted = threading.Event()

    def delete() -> None:
        admin.call(20, 3, {"topic_names": ["gone"], "timeout_ms": 1000})
        deleted.set()

    worker = threading.Thread(target=delete)
    worker.start()
    answer = raw.receive(1, 11)
    worker.join()
    assert deleted.is_set()
    [partition] = answer["responses"][0]["partitions"]
    assert partition["error_code"] == UNKNOWN_TOPIC_OR_PARTITION
    # The connection still serves requests.
    assert raw.call(18, 3, {})["error_code"] == 0
    raw.close()
    admin.close()


def test_only_produce_may_send_a_large_request(kb):
    # A 2 MiB OffsetFetch of tiny array elements decodes into ~80 MiB of Python objects
    # over ~0.6 s of event loop; at max_request_size (100 MiB) a minute and 4 GiB. It is
    # refused on its size prefix and api key, before its body is read.
    sock = socket.create_connection(("127.0.0.1", kb.port), timeout=10)
    size = (2 << 20) + 4
    sock.sendall(struct.pack(">ihhih", size, 9, 1, 1, 0) + b"\x00" * 1000)
    sock.settimeout(10)
    assert sock.recv(4096) == b""  # closed without an answer
    sock.close()
    assert kb.broker.stats["protocol_errors"] == 1
    # A batch over the default max.message.bytes (1048588) needs the topic's raised.
    kb.call(kb.broker.topics.create("big", 1, {"max.message.bytes": str(3 << 20)}))
    raw = Raw(kb)
    produced = _produce(raw, "big", make_batch([b"v" * (2 << 20)]))
    assert (produced["error_code"], produced["base_offset"]) == (0, 0)
    raw.close()


def _reading(kb: KafkaThread) -> list[bool]:
    async def states() -> list[bool]:
        return [c.transport.is_reading() for c in kb.broker.connections if c.transport]

    return list(kb.call(states()))


def test_pipelined_frames_are_bounded_by_bytes_not_only_by_count():
    # 64 queued frames of max_request_size each were buffered before reading paused.
    kb = KafkaThread(max_request_size=1 << 20)
    try:
        raw = Raw(kb)
        topics = [{"name": "idle", "num_partitions": 1, "replication_factor": 1, "configs": []}]
        assert raw.call(19, 4, {"topics": topics, "timeout_ms": 1})["topics"][0]["error_code"] == 0
        raw.send(1, 11, _fetch_body("idle", 10_000))  # holds the connection's worker
        batch = make_batch([b"p" * (400 << 10)])
        for _ in range(3):
            raw.send(0, 8, {"acks": 1, "timeout_ms": 5000, "topic_data": [
                {"name": "bulk", "partition_data": [{"index": 0, "records": batch}]}]})  # fmt: skip
        assert wait_until(lambda: _reading(kb) == [False], timeout=5)
        other = Raw(kb)
        assert _produce(other, "idle", make_batch([b"wake"]))["error_code"] == 0
        fetched = raw.receive(1, 11)
        assert fetched["responses"][0]["partitions"][0]["records"]
        bases = [raw.receive(0, 8)["responses"][0]["partition_responses"][0] for _ in range(3)]
        assert [(p["error_code"], p["base_offset"]) for p in bases] == [(0, 0), (0, 1), (0, 2)]
        assert wait_until(lambda: all(_reading(kb)), timeout=5)
        raw.close()
        other.close()
        assert not kb.problems()
    finally:
        kb.stop()


def test_oversized_offset_metadata_is_refused(kb):
    # Committed metadata is stored per group and partition for good: Kafka bounds it with
    # offset.metadata.max.bytes (4096) and OFFSET_METADATA_TOO_LARGE (12).
    raw = Raw(kb)
    topics = [{"name": "meta", "num_partitions": 1, "replication_factor": 1, "configs": []}]
    assert raw.call(19, 4, {"topics": topics, "timeout_ms": 1})["topics"][0]["error_code"] == 0

    def commit(metadata: str, offset: int) -> int:
        partition = {"partition_index": 0, "committed_offset": offset,
                     "committed_leader_epoch": -1, "committed_metadata": metadata}  # fmt: skip
        body = {"group_id": "g", "generation_id": -1, "member_id": "",
                "topics": [{"name": "meta", "partitions": [partition]}]}  # fmt: skip
        return int(raw.call(8, 8, body)["topics"][0]["partitions"][0]["error_code"])

    assert commit("m" * 4096, 3) == 0
    assert commit("m" * 4097, 5) == 12
    fetched = raw.call(9, 7, {"group_id": "g", "topics": [{"name": "meta",
                                                           "partition_indexes": [0]}]})  # fmt: skip
    [partition] = fetched["topics"][0]["partitions"]
    assert (partition["committed_offset"], len(partition["metadata"])) == (3, 4096)
    raw.close()


def test_idle_connections_are_closed_busy_ones_are_not(monkeypatch):
    # Without Kafka's connections.max.idle.ms, a socket left open after a few bytes (or a
    # client gone without a FIN) held its file descriptor and buffer forever.
    from robustmq.broker.kafka import server

    monkeypatch.setattr(server, "CONNECTIONS_MAX_IDLE", 0.5)
    monkeypatch.setattr(server, "IDLE_SWEEP_INTERVAL", 0.05)
    kb = KafkaThread()
    try:
        raw = Raw(kb)
        topics = [{"name": "wait", "num_partitions": 1, "replication_factor": 1, "configs": []}]
        assert raw.call(19, 4, {"topics": topics, "timeout_ms": 1})["topics"][0]["error_code"] == 0
        raw.send(1, 11, _fetch_body("wait", 1500))  # busy for longer than the idle limit
        idle = socket.create_connection(("127.0.0.1", kb.port), timeout=10)
        idle.sendall(b"\x00\x00")  # half a size prefix, then nothing
        assert idle.recv(16) == b""
        idle.close()
        answer = raw.receive(1, 11)
        assert answer["responses"][0]["partitions"][0]["error_code"] == 0
        assert kb.broker.stats["idle_closed"] >= 1  # the fetching one may follow it later
        raw.close()
        assert not kb.problems()
    finally:
        kb.stop()
