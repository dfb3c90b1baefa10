"""The Kafka listener driven by real clients over real sockets: kafka-python 3.x,
confluent-kafka (librdkafka) and aiokafka, unchanged, against a ``KafkaBroker`` running in
a thread with its own event loop on a free port of 127.0.0.1.

Covered: byte-exact keys, values, headers and timestamps across clients; every
compression codec, stored as the producer sent it; ordering and keyed partitioning; a
consumer group splitting partitions and rebalancing when a member leaves; commit and
resume; seek and offsets by time; admin create/delete; a 1 MB message; acks=0; long
polling; bad frames closing only their own connection.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from robustmq._core import kafka_codec as kc
from robustmq.config import KafkaConfig
from tests.conftest import free_port

kafka = pytest.importorskip("kafka")
ck = pytest.importorskip("confluent_kafka")
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402
from kafka.admin import NewTopic as KpNewTopic  # noqa: E402
from kafka.errors import TopicAlreadyExistsError  # noqa: E402

TIMEOUT = 30.0


class KafkaThread:
    """A KafkaBroker on 127.0.0.1:<free port> over a storage engine, in its own thread."""

    def __init__(self, engine: Any = None, **overrides: Any) -> None:
        from robustmq.broker.kafka.server import KafkaBroker
        from robustmq.storage import MemoryConfig, open_engine

        overrides.setdefault("bind", "127.0.0.1")
        overrides.setdefault("port", free_port())
        self.config = KafkaConfig(**overrides)
        self.port = self.config.port
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self.loop_errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda loop, ctx: self.loop_errors.append(ctx))
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.engine = self.call(open_engine(engine or MemoryConfig()))
        self.broker = KafkaBroker(self.config, self.engine)
        self.call(self.broker.start())

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stored_compression(self, topic: str, partition: int = 0) -> set[int]:
        batches = self.call(self.engine.read_batches(f"kafka/{topic}/{partition}", 0, 1 << 30))
        return {h.compression for b in batches for h in kc.parse_batches(b.data)}

    def problems(self) -> list[Any]:
        """Exceptions the event loop logged and requests that crashed a handler (the
        connection is closed and the crash logged; a test must not pass over it)."""
        crashed = self.broker.stats["internal_errors"]
        return self.loop_errors + ([f"{crashed} requests crashed a handler"] if crashed else [])

    def stop(self) -> None:
        self.call(self.broker.stop())
        self.call(self.engine.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


@pytest.fixture
def kafka_factory() -> Iterator[Any]:
    started: list[KafkaThread] = []

    def start(**overrides: Any) -> KafkaThread:
        k = KafkaThread(**overrides)
        started.append(k)
        return k

    yield start
    errors = []
    for k in started:
        errors += k.problems()
        k.stop()
    assert not errors, f"the broker failed: {errors}"


@pytest.fixture
def kb(kafka_factory: Any) -> KafkaThread:
    return kafka_factory()


# --- client helpers -------------------------------------------------------------------


def kp_producer(kb: KafkaThread, **cfg: Any) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=kb.bootstrap, **cfg)


def kp_consumer(kb: KafkaThread, *topics: str, **cfg: Any) -> KafkaConsumer:
    cfg.setdefault("auto_offset_reset", "earliest")
    return KafkaConsumer(*topics, bootstrap_servers=kb.bootstrap, **cfg)


def kp_take(consumer: KafkaConsumer, n: int) -> list[Any]:
    out: list[Any] = []
    deadline = time.monotonic() + TIMEOUT
    while len(out) < n and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            out += records
    assert len(out) >= n, f"got {len(out)} of {n} records"
    return out


def ck_producer(kb: KafkaThread, **cfg: Any) -> Any:
    return ck.Producer({"bootstrap.servers": kb.bootstrap, **cfg})


def ck_consumer(kb: KafkaThread, group: str, **cfg: Any) -> Any:
    conf = {
        "bootstrap.servers": kb.bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        # Long sessions: on a loaded machine no member may be expired mid-test (the group
        # tests rebalance on LeaveGroup; expiry is tested in test_kafka_protocol.py).
        "session.timeout.ms": 30000,
        "heartbeat.interval.ms": 300,
        **cfg,
    }
    return ck.Consumer(conf)


def ck_take(consumer: Any, n: int) -> list[Any]:
    out: list[Any] = []
    deadline = time.monotonic() + TIMEOUT
    while len(out) < n and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        out.append(msg)
    assert len(out) >= n, f"got {len(out)} of {n} records"
    return out


def ck_flush(producer: Any) -> None:
    assert producer.flush(TIMEOUT) == 0, "messages left unsent"


def ck_create(kb: KafkaThread, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": kb.bootstrap})
    for fut in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        fut.result(TIMEOUT)


RECORDS = [
    (b"key-0", b"value-0", [("h1", b"\x00\x01"), ("h2", b"")], 1_700_000_000_000),
    (None, b"no key", [], 1_700_000_000_001),
    (b"k", b"", [("dup", b"a"), ("dup", b"b")], 1_700_000_000_500),
    (b"\xff\xfe binary", bytes(range(256)), [("unicode-\u00e9", b"\xff")], 1_600_000_000_000),
]


def _produce_kp(kb: KafkaThread, topic: str, **cfg: Any) -> None:
    p = kp_producer(kb, **cfg)
    for key, value, headers, ts in RECORDS:
        p.send(topic, key=key, value=value, headers=headers, timestamp_ms=ts)
    p.flush(TIMEOUT)
    p.close()


def _produce_ck(kb: KafkaThread, topic: str, **cfg: Any) -> None:
    p = ck_producer(kb, **cfg)
    for key, value, headers, ts in RECORDS:
        p.produce(topic, key=key, value=value, headers=headers, timestamp=ts)
    ck_flush(p)


def _consume_kp(kb: KafkaThread, topic: str) -> list[tuple[Any, ...]]:
    c = kp_consumer(kb, topic)
    try:
        got = kp_take(c, len(RECORDS))
    finally:
        c.close()
    return [(r.key, r.value, list(r.headers), r.timestamp) for r in got]


def _consume_ck(kb: KafkaThread, topic: str) -> list[tuple[Any, ...]]:
    c = ck_consumer(kb, f"g-{topic}")
    c.subscribe([topic])
    try:
        got = ck_take(c, len(RECORDS))
    finally:
        c.close()
    return [(m.key(), m.value(), m.headers() or [], m.timestamp()[1]) for m in got]


PRODUCERS = {"kafka-python": _produce_kp, "librdkafka": _produce_ck}
CONSUMERS = {"kafka-python": _consume_kp, "librdkafka": _consume_ck}


@pytest.mark.parametrize("producer", sorted(PRODUCERS))
@pytest.mark.parametrize("consumer", sorted(CONSUMERS))
def test_records_are_byte_exact_across_clients(kb: KafkaThread, producer: str, consumer: str):
    topic = f"exact-{producer}-{consumer}"
    PRODUCERS[producer](kb, topic)
    got = CONSUMERS[consumer](kb, topic)
    expected = [(k, v, [(hk, hv) for hk, hv in h], ts) for k, v, h, ts in RECORDS]
    if consumer == "librdkafka":
        expected = [(k, v or None, h, ts) for k, v, h, ts in expected]  # b"" reads as None
        got = [(k, v or None, h, ts) for k, v, h, ts in got]
    assert got == expected


CODECS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
# Compressible values: kafka-python sends a batch uncompressed when compressing does not
# make it smaller.
BULKY = [(b"k%d" % i, b"robustmq " * 200 + b"%d" % i) for i in range(20)]


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_kafka_python_compression_is_stored_as_sent(kb: KafkaThread, codec: str):
    topic = f"kp-{codec}"
    p = kp_producer(kb, compression_type=codec, linger_ms=50)
    for key, value in BULKY:
        p.send(topic, key=key, value=value)
    p.flush(TIMEOUT)
    p.close()
    assert kb.stored_compression(topic) == {CODECS[codec]}
    c = ck_consumer(kb, f"g-{topic}")
    c.subscribe([topic])
    got = ck_take(c, len(BULKY))
    c.close()
    assert [(m.key(), m.value()) for m in got] == BULKY


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_librdkafka_compression_is_stored_as_sent(kb: KafkaThread, codec: str):
    topic = f"ck-{codec}"
    p = ck_producer(kb, **{"compression.type": codec, "linger.ms": 50})
    for key, value in BULKY:
        p.produce(topic, key=key, value=value)
    ck_flush(p)
    assert kb.stored_compression(topic) == {CODECS[codec]}
    c = kp_consumer(kb, topic)
    got = kp_take(c, len(BULKY))
    c.close()
    assert [(r.key, r.value) for r in got] == BULKY


def test_keyed_partitioning_and_order_per_partition(kb: KafkaThread):
    ck_create(kb, "keyed", 3)
    p = ck_producer(kb, **{"linger.ms": 5})
    for i in range(300):
        p.produce("keyed", key=f"key-{i % 10}".encode(), value=str(i).encode())
    ck_flush(p)
    c = ck_consumer(kb, "keyed-reader")
    c.subscribe(["keyed"])
    got = ck_take(c, 300)
    c.close()
    partition_of: dict[bytes, set[int]] = {}
    for m in got:
        partition_of.setdefault(m.key(), set()).add(m.partition())
    assert all(len(parts) == 1 for parts in partition_of.values())
    assert len({m.partition() for m in got}) > 1  # ten keys spread over the partitions
    for part in range(3):
        mine = [m for m in got if m.partition() == part]
        assert [m.offset() for m in mine] == list(range(len(mine)))
        for key in {m.key() for m in mine}:
            values = [int(m.value()) for m in mine if m.key() == key]
            assert values == sorted(values)


def test_consumer_group_splits_partitions_and_rebalances_when_one_leaves(kb: KafkaThread):
    ck_create(kb, "grouped", 4)
    c1 = ck_consumer(kb, "split")
    c2 = ck_consumer(kb, "split")
    c1.subscribe(["grouped"])
    c2.subscribe(["grouped"])
    deadline = time.monotonic() + TIMEOUT
    a1: set[int] = set()
    a2: set[int] = set()
    while time.monotonic() < deadline:
        c1.poll(0.1)
        c2.poll(0.1)
        a1 = {tp.partition for tp in c1.assignment()}
        a2 = {tp.partition for tp in c2.assignment()}
        if a1 and a2 and a1 | a2 == {0, 1, 2, 3}:
            break
    assert a1 and a2 and not a1 & a2 and a1 | a2 == {0, 1, 2, 3}, (a1, a2)
    p = ck_producer(kb)
    for i in range(40):
        p.produce("grouped", value=str(i).encode(), partition=i % 4)
    ck_flush(p)
    got1: list[Any] = []
    got2: list[Any] = []
    deadline = time.monotonic() + TIMEOUT
    while len(got1) + len(got2) < 40 and time.monotonic() < deadline:
        for c, got in ((c1, got1), (c2, got2)):
            m = c.poll(0.1)
            if m is not None and m.error() is None:
                got.append(m)
    assert {m.partition() for m in got1} <= a1 and {m.partition() for m in got2} <= a2
    assert sorted(int(m.value()) for m in got1 + got2) == list(range(40))
    c2.close()  # LeaveGroup: the coordinator rebalances c1 onto every partition
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        c1.poll(0.1)
        if {tp.partition for tp in c1.assignment()} == {0, 1, 2, 3}:
            break
    assert {tp.partition for tp in c1.assignment()} == {0, 1, 2, 3}
    for i in range(8):
        p.produce("grouped", value=b"after-%d" % i, partition=i % 4)
    ck_flush(p)
    later = []
    deadline = time.monotonic() + TIMEOUT
    while len(later) < 8 and time.monotonic() < deadline:
        m = c1.poll(0.1)
        if m is not None and m.error() is None and m.value().startswith(b"after"):
            later.append(m)
    c1.close()
    assert sorted(m.value() for m in later) == sorted(b"after-%d" % i for i in range(8))


class PollingConsumer:
    """A kafka-python consumer polling in its own thread, as an application would: a
    consumer that is not polled cannot rejoin a rebalancing group."""

    def __init__(self, kb: KafkaThread, topic: str, **cfg: Any) -> None:
        self.consumer = kp_consumer(kb, topic, **cfg)
        self.assignment: set[int] = set()
        self.values: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            # Long polls: kafka-python 3.0.12 loses a join that completes after poll's
            # timeout cut ensure_active_group short (a leader then never installs its own
            # assignment: need_rejoin is False and on_join_complete never runs). A join
            # waits for every member, which on a loaded machine took over 100 ms.
            for records in self.consumer.poll(timeout_ms=2000).values():
                self.values += [r.value for r in records]
            self.assignment = {tp.partition for tp in self.consumer.assignment()}
        self.consumer.close()  # LeaveGroup

    def close(self) -> None:
        self._stop.set()
        self._thread.join(TIMEOUT)


def _until(condition: Any) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and not condition():
        time.sleep(0.05)


def test_kafka_python_group_splits_partitions_and_rebalances_when_one_leaves(kb: KafkaThread):
    admin = KafkaAdminClient(bootstrap_servers=kb.bootstrap)
    admin.create_topics([KpNewTopic("kp-grouped", num_partitions=4, replication_factor=1)])
    admin.close()
    cfg = {"group_id": "kp-split", "heartbeat_interval_ms": 300, "session_timeout_ms": 30000}
    c1 = PollingConsumer(kb, "kp-grouped", **cfg)
    c2 = PollingConsumer(kb, "kp-grouped", **cfg)

    def split() -> bool:
        a1, a2 = c1.assignment, c2.assignment
        return bool(a1 and a2 and not a1 & a2 and a1 | a2 == {0, 1, 2, 3})

    _until(split)
    assert split(), (c1.assignment, c2.assignment)
    c2.close()
    _until(lambda: c1.assignment == {0, 1, 2, 3})
    assert c1.assignment == {0, 1, 2, 3}
    p = kp_producer(kb)
    for i in range(8):
        p.send("kp-grouped", value=b"%d" % i, partition=i % 4)
    p.flush(TIMEOUT)
    p.close()
    _until(lambda: len(c1.values) >= 8)
    c1.close()
    assert sorted(int(v) for v in c1.values) == list(range(8))


def test_kafka_python_and_librdkafka_share_one_group(kb: KafkaThread):
    ck_create(kb, "mixed", 2)
    # kafka-python may lead a generation before its metadata lists the new topic (it
    # then assigns nothing, "No partition metadata"); a short metadata age makes it see
    # the partitions and rejoin within a second, as it would later in production.
    kp = PollingConsumer(
        kb,
        "mixed",
        group_id="mixed",
        heartbeat_interval_ms=300,
        session_timeout_ms=30000,
        metadata_max_age_ms=1000,
    )
    rd = ck_consumer(kb, "mixed")
    rd.subscribe(["mixed"])
    deadline = time.monotonic() + TIMEOUT
    mine: set[int] = set()
    while time.monotonic() < deadline:
        rd.poll(0.1)
        mine = {tp.partition for tp in rd.assignment()}
        if len(mine) == 1 and len(kp.assignment) == 1 and mine | kp.assignment == {0, 1}:
            break
    assert len(mine) == 1 and mine | kp.assignment == {0, 1}, (mine, kp.assignment)
    rd.close()
    kp.close()


def test_kafka_python_commit_and_resume(kb: KafkaThread):
    p = kp_producer(kb)
    for i in range(10):
        p.send("resume", value=b"%d" % i)
    p.flush(TIMEOUT)
    p.close()
    c = kp_consumer(kb, "resume", group_id="resumers", enable_auto_commit=False, max_poll_records=5)
    first = kp_take(c, 5)[:5]
    tp = TopicPartition("resume", 0)
    c.commit({tp: kafka.OffsetAndMetadata(5, "half way", -1)})
    assert c.committed(tp) == 5
    c.close()
    assert first[0].offset == 0
    c = kp_consumer(kb, "resume", group_id="resumers", enable_auto_commit=False)
    rest = kp_take(c, 5)
    c.close()
    assert [r.offset for r in rest] == [5, 6, 7, 8, 9]


def test_librdkafka_commit_and_resume(kb: KafkaThread):
    p = ck_producer(kb)
    for i in range(10):
        p.produce("ck-resume", value=b"%d" % i)
    ck_flush(p)
    c = ck_consumer(kb, "ck-resumers", **{"enable.auto.commit": False})
    c.subscribe(["ck-resume"])
    got = ck_take(c, 4)
    c.commit(message=got[3], asynchronous=False)
    c.close()
    c = ck_consumer(kb, "ck-resumers", **{"enable.auto.commit": False})
    c.subscribe(["ck-resume"])
    rest = ck_take(c, 6)
    c.close()
    assert [m.offset() for m in rest] == [4, 5, 6, 7, 8, 9]


def test_seek_and_offsets_for_times(kb: KafkaThread):
    p = kp_producer(kb)
    for i in range(6):
        # One batch per record, so the by-time look-up is exact (it is per batch).
        p.send("seek", value=b"%d" % i, timestamp_ms=1_000_000 + 1000 * i).get(TIMEOUT)
    p.close()
    c = kp_consumer(kb)
    tp = TopicPartition("seek", 0)
    c.assign([tp])
    assert c.beginning_offsets([tp]) == {tp: 0}
    assert c.end_offsets([tp]) == {tp: 6}
    c.seek(tp, 3)
    assert [r.offset for r in kp_take(c, 3)] == [3, 4, 5]
    c.seek_to_beginning(tp)
    assert kp_take(c, 1)[0].offset == 0
    found = c.offsets_for_times({tp: 1_002_500})[tp]
    assert (found.offset, found.timestamp) == (3, 1_003_000)
    assert c.offsets_for_times({tp: 9_999_999})[tp] is None
    c.close()


def test_kafka_python_admin_creates_and_deletes_topics(kb: KafkaThread):
    admin = KafkaAdminClient(bootstrap_servers=kb.bootstrap)
    admin.create_topics([KpNewTopic("made", num_partitions=3, replication_factor=1)])
    assert "made" in admin.list_topics()
    with pytest.raises(TopicAlreadyExistsError):
        admin.create_topics([KpNewTopic("made", num_partitions=1, replication_factor=1)])
    described = admin.describe_topics(["made"])
    assert len(described[0]["partitions"]) == 3
    admin.delete_topics(["made"])
    assert "made" not in admin.list_topics()
    admin.close()


def test_librdkafka_admin_creates_and_deletes_topics(kb: KafkaThread):
    admin = AdminClient({"bootstrap.servers": kb.bootstrap})
    futures = admin.create_topics(
        [NewTopic("adm", 2, 1, config={"retention.ms": "60000"}), NewTopic("bad", 1, 3)]
    )
    futures["adm"].result(TIMEOUT)
    with pytest.raises(ck.KafkaException) as err:
        futures["bad"].result(TIMEOUT)
    assert err.value.args[0].code() == ck.KafkaError.INVALID_REPLICATION_FACTOR
    meta = admin.list_topics(timeout=TIMEOUT)
    assert len(meta.topics["adm"].partitions) == 2
    assert kb.call(kb.engine.shard_info("kafka/adm/1")).config.retention_ms == 60000
    admin.delete_topics(["adm"])["adm"].result(TIMEOUT)
    assert "adm" not in admin.list_topics(timeout=TIMEOUT).topics
    assert kb.call(kb.engine.list_shards("kafka/adm/")) == []


def test_one_megabyte_message(kb: KafkaThread):
    value = os.urandom(1 << 20)
    # As in Kafka, a 1 MiB value is over the default max.message.bytes (1048588 with
    # the batch's overhead): the topic raises it.
    kb.call(kb.broker.topics.create("big", 1, {"max.message.bytes": "2000000"}))
    p = ck_producer(kb, **{"message.max.bytes": 2_000_000})
    p.produce("big", key=b"big", value=value)
    ck_flush(p)
    c = kp_consumer(kb, "big")
    [record] = kp_take(c, 1)
    c.close()
    assert record.value == value


def test_acks_zero_gets_no_response_but_is_stored(kb: KafkaThread):
    p = kp_producer(kb, acks=0)
    for i in range(3):
        p.send("fire-and-forget", value=b"%d" % i)
    p.flush(TIMEOUT)
    p.close()
    c = kp_consumer(kb, "fire-and-forget")
    assert [r.value for r in kp_take(c, 3)] == [b"0", b"1", b"2"]
    c.close()


def test_aiokafka_produces_and_consumes(kb: KafkaThread):
    aiokafka = pytest.importorskip("aiokafka")

    async def run() -> Any:
        producer = aiokafka.AIOKafkaProducer(bootstrap_servers=kb.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait("aio", b"hello", key=b"k", headers=[("h", b"v")])
        finally:
            await producer.stop()
        consumer = aiokafka.AIOKafkaConsumer(
            "aio", bootstrap_servers=kb.bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            return await asyncio.wait_for(consumer.getone(), TIMEOUT)
        finally:
            await consumer.stop()

    msg = asyncio.run(run())
    assert (msg.key, msg.value, list(msg.headers)) == (b"k", b"hello", [("h", b"v")])


# --- raw sockets ----------------------------------------------------------------------


def _connect(kb: KafkaThread) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", kb.port), timeout=TIMEOUT)
    return s


def _read_frame(s: socket.socket) -> bytes:
    def exactly(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            assert chunk, "connection closed"
            buf += chunk
        return buf

    (size,) = struct.unpack(">i", exactly(4))
    return exactly(size)


def _closed(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


def test_a_waiting_fetch_is_answered_when_data_arrives(kb: KafkaThread):
    ck_create(kb, "poll", 1)
    s = _connect(kb)
    fetch = {
        "max_wait_ms": 60_000,  # far beyond the socket timeout: only new data can end it
        "min_bytes": 1,
        "topics": [
            {
                "topic": "poll",
                "partitions": [{"partition": 0, "fetch_offset": 0, "partition_max_bytes": 1 << 20}],
            }
        ],
    }
    s.sendall(kc.encode_request(1, 11, 7, "raw", fetch))
    time.sleep(0.3)
    p = ck_producer(kb)
    p.produce("poll", value=b"wake up")
    ck_flush(p)
    correlation_id, body = kc.decode_response(1, 11, _read_frame(s))
    s.close()
    [part] = body["responses"][0]["partitions"]
    assert correlation_id == 7 and part["error_code"] == 0 and part["high_watermark"] == 1
    [h] = kc.parse_batches(part["records"])
    assert h.base_offset == 0 and h.record_count == 1


def test_fetch_out_of_range_and_unknown_partition(kb: KafkaThread):
    ck_create(kb, "ranges", 1)
    s = _connect(kb)
    parts = [
        {
            "topic": "ranges",
            "partitions": [{"partition": 0, "fetch_offset": 5, "partition_max_bytes": 100}],
        },
        {
            "topic": "ranges",
            "partitions": [{"partition": 9, "fetch_offset": 0, "partition_max_bytes": 100}],
        },
    ]
    s.sendall(kc.encode_request(1, 4, 1, None, {"max_wait_ms": 0, "min_bytes": 0, "topics": parts}))
    _, body = kc.decode_response(1, 4, _read_frame(s))
    s.close()
    codes = [r["partitions"][0]["error_code"] for r in body["responses"]]
    assert codes == [1, 3]  # OFFSET_OUT_OF_RANGE, UNKNOWN_TOPIC_OR_PARTITION


def test_api_versions_too_new_answers_unsupported_version_with_the_list(kb: KafkaThread):
    s = _connect(kb)
    s.sendall(struct.pack(">ihhih", 10, 18, 99, 5, -1))
    correlation_id, body = kc.decode_response(18, 0, _read_frame(s))
    assert correlation_id == 5 and body["error_code"] == 35
    assert {a["api_key"] for a in body["api_keys"]} >= {0, 1, 3, 18}
    s.sendall(kc.encode_request(18, 3, 6, "raw", {}))  # the connection stays usable
    assert kc.decode_response(18, 3, _read_frame(s))[1]["error_code"] == 0
    s.close()


@pytest.mark.parametrize(
    "frame",
    [
        b"\x00\x00\x00\x0chello world!",  # api key 0x6865: unknown
        struct.pack(">i", 1 << 30),  # over max_request_size
        struct.pack(">i", -5) + b"xxxx",  # negative size
        struct.pack(">ihhih", 10, 3, 42, 1, -1),  # Metadata v42
        kc.encode_request(0, 9, 1, None, {"acks": 1, "timeout_ms": 1, "topic_data": []})[:-1]
        + b"\xff\xff",  # truncated body with trailing garbage
    ],
    ids=["garbage", "oversize", "negative-size", "unsupported-version", "malformed-body"],
)
def test_bad_frames_close_only_their_connection(kafka_factory: Any, frame: bytes, caplog):
    kb = kafka_factory(max_request_size=1 << 20)
    good = ck_producer(kb)
    good.produce("steady", value=b"before")
    ck_flush(good)
    bad = _connect(kb)
    bad.sendall(frame)
    assert _closed(bad)
    bad.close()
    good.produce("steady", value=b"after")
    ck_flush(good)
    c = kp_consumer(kb, "steady")
    assert [r.value for r in kp_take(c, 2)] == [b"before", b"after"]
    c.close()
    assert kb.broker.stats["protocol_errors"] == 1
    assert any("closing the connection" in r.getMessage() for r in caplog.records)
