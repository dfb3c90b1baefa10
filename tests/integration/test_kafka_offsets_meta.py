"""Kafka committed offsets in the Meta Service ``offsets`` group, driven by confluent-kafka.

Covered: a commit survives a restart of the real ``robustmq-server`` process (segment and
leveldb engines) and the consumer resumes there; one OffsetCommit of several partitions is
one proposal; OffsetFetch of every partition a group committed; DeleteGroups and
DeleteTopics clear the group's and the topic's positions; offsets committed by the old
path (the engine's ``commit_offset``) are moved once at start and never over a newer
one; the ``memory`` engine keeps them in memory; the ``offsets`` group's commands refuse
bad input as a whole. The node runs in a thread with all roles (``NodeThread``) where a
test looks inside it.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from robustmq.broker.kafka.offsets import MIGRATED_KEY, EngineOffsets, MetaOffsets
from robustmq.config import load_config
from robustmq.errors import InvalidMetaCommand, MetaTimeout
from robustmq.meta.groups import OffsetsStateMachine, encode_command
from tests.conftest import free_port

ck = pytest.importorskip("confluent_kafka")
admin_mod = pytest.importorskip("confluent_kafka.admin")

TIMEOUT = 30.0
SERVER = [sys.executable, "-m", "robustmq.cli.server"]


class NodeThread:
    """A Node with every role on free ports of 127.0.0.1 (meta without a gRPC listener),
    in its own thread and event loop."""

    def __init__(self, data_dir: str, storage: str = "segment") -> None:
        from robustmq.node import Node

        self.kafka_port = free_port()
        self.bootstrap = f"127.0.0.1:{self.kafka_port}"
        overrides: dict[str, Any] = {
            "node.data_dir": data_dir,
            "mqtt.port": 0,
            "mqtt.tls_port": 0,
            "mqtt.ws_port": 0,
            "mqtt.wss_port": 0,
            "mqtt.sys_interval": 0,
            "kafka.bind": "127.0.0.1",
            "kafka.port": self.kafka_port,
            "http.port": 0,
            "cluster.grpc_port": 0,
            "storage.engine": storage,
        }
        self.node = Node(load_config(environ={}, overrides=overrides))
        self.loop = asyncio.new_event_loop()
        self.loop_errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda loop, ctx: self.loop_errors.append(ctx))
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.call(self.node.start())

    def call(self, coro: Any, timeout: float = TIMEOUT) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def meta_offsets(self) -> dict[str, Any]:
        assert self.node.meta is not None
        return dict(self.call(self.node.meta.host.read("offsets", "offsets")) or {})

    def stop(self) -> None:
        self.call(self.node.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()
        assert not self.loop_errors, self.loop_errors


@pytest.fixture
def node_factory(tmp_path: Any) -> Iterator[Any]:
    running: list[NodeThread] = []

    def start(storage: str = "segment", data: str = "data") -> NodeThread:
        node = NodeThread(str(tmp_path / data), storage)
        running.append(node)
        return node

    yield start
    for node in running:
        if node.loop.is_running():
            node.stop()


def _create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = admin_mod.AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([admin_mod.NewTopic(topic, partitions, 1)]).values():
        future.result(TIMEOUT)


def _produce(bootstrap: str, topic: str, values: list[bytes], partition: int = 0) -> None:
    producer = ck.Producer({"bootstrap.servers": bootstrap})
    for value in values:
        producer.produce(topic, value, partition=partition)
    assert producer.flush(TIMEOUT) == 0


def _consumer(bootstrap: str, group: str) -> Any:
    return ck.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )


def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    consumer = _consumer(bootstrap, group)
    try:
        found = consumer.committed(
            [ck.TopicPartition(topic, p) for p in range(partitions)], timeout=TIMEOUT
        )
        return [tp.offset for tp in found]
    finally:
        consumer.close()


def _commit(bootstrap: str, group: str, positions: list[tuple[str, int, int]]) -> None:
    consumer = _consumer(bootstrap, group)
    try:
        consumer.commit(
            offsets=[ck.TopicPartition(t, p, o) for t, p, o in positions], asynchronous=False
        )
    finally:
        consumer.close()


def _read(bootstrap: str, group: str, topic: str, count: int) -> list[bytes]:
    """``count`` values read by a member of ``group`` (subscribe, so the group's committed
    offset is where it starts); commits after the last one."""
    consumer = _consumer(bootstrap, group)
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT
    try:
        while len(values) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            values.append(msg.value())
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    return values


# ---------------------------------------------------------------------- real server


def _start_server(data_dir: str, storage: str, kafka_port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            *SERVER,
            "start",
            "--data-dir",
            data_dir,
            "--storage",
            storage,
            "--kafka-port",
            str(kafka_port),
            "--mqtt-port",
            "0",
            "--mqtts-port",
            "0",
            "--ws-port",
            "0",
            "--wss-port",
            "0",
            "--http-port",
            "0",
            "--grpc-port",
            "0",
        ],  # fmt: skip
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if "data directory" in line:
            return proc
    proc.kill()
    raise AssertionError(f"server did not start: {proc.stderr.read() if proc.stderr else ''}")


def _stop_server(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=TIMEOUT) == 0


@pytest.mark.parametrize("storage", ["segment", "leveldb"])
def test_a_consumer_resumes_from_its_commit_after_a_server_restart(
    tmp_path: Any, storage: str
) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    data_dir = str(tmp_path / "data")
    values = [b"record-%d" % i for i in range(10)]
    proc = _start_server(data_dir, storage, port)
    try:
        _create_topic(bootstrap, "resume", 1)
        _produce(bootstrap, "resume", values)
        assert _read(bootstrap, "resumers", "resume", 6) == values[:6]
    finally:
        _stop_server(proc)
    proc = _start_server(data_dir, storage, port)
    try:
        assert _committed(bootstrap, "resumers", "resume", 1) == [6]
        assert _read(bootstrap, "resumers", "resume", 4) == values[6:]
        assert _committed(bootstrap, "resumers", "resume", 1) == [10]
    finally:
        _stop_server(proc)


# ---------------------------------------------------------------------- inside a node


def test_one_offset_commit_is_one_proposal(node_factory: Any) -> None:
    node = node_factory()
    _create_topic(node.bootstrap, "many", 3)
    host = node.node.meta.host
    proposals: list[str] = []
    propose = host.propose

    async def counting(group: str, command: bytes, timeout: float | None = None) -> Any:
        proposals.append(group)
        return await propose(group, command, timeout)

    host.propose = counting
    _commit(node.bootstrap, "g1", [("many", 0, 5), ("many", 1, 7), ("many", 2, 9)])
    assert proposals == ["offsets"]
    assert node.meta_offsets() == {
        "g1/many/0": {"offset": 5, "metadata": ""},
        "g1/many/1": {"offset": 7, "metadata": ""},
        "g1/many/2": {"offset": 9, "metadata": ""},
    }
    assert _committed(node.bootstrap, "g1", "many", 3) == [5, 7, 9]
    assert _committed(node.bootstrap, "other", "many", 3) == [-1001] * 3  # nothing committed
    # The engine's old path holds nothing: the Meta Service is where offsets are.
    assert node.call(node.node.storage.committed_offset("g1", "kafka/many/0")) is None


def test_offset_fetch_of_every_partition_a_group_committed(node_factory: Any) -> None:
    from robustmq._core import kafka_codec as kc

    node = node_factory()
    _create_topic(node.bootstrap, "a", 2)
    _create_topic(node.bootstrap, "b", 1)
    _commit(node.bootstrap, "all", [("a", 1, 3), ("b", 0, 4)])
    _commit(node.bootstrap, "all/x", [("a", 0, 8)])  # a group id holding "/"
    from robustmq.broker.kafka.offsets import handle_offset_fetch

    header = kc.RequestHeader(9, 7, 1, "test")
    answer = node.call(
        handle_offset_fetch(node.node.kafka, None, header, {"group_id": "all", "topics": None})
    )
    assert answer["error_code"] == 0
    assert [
        (t["name"], [(p["partition_index"], p["committed_offset"]) for p in t["partitions"]])
        for t in answer["topics"]
    ] == [("a", [(1, 3)]), ("b", [(0, 4)])]


def test_delete_groups_and_delete_topics_clear_committed_offsets(node_factory: Any) -> None:
    node = node_factory()
    _create_topic(node.bootstrap, "kept", 1)
    _create_topic(node.bootstrap, "gone", 1)
    _commit(node.bootstrap, "g", [("kept", 0, 1), ("gone", 0, 2)])
    _commit(node.bootstrap, "h", [("kept", 0, 3), ("gone", 0, 4)])
    admin = admin_mod.AdminClient({"bootstrap.servers": node.bootstrap})
    admin.delete_topics(["gone"])["gone"].result(TIMEOUT)
    assert node.meta_offsets() == {
        "g/kept/0": {"offset": 1, "metadata": ""},
        "h/kept/0": {"offset": 3, "metadata": ""},
    }
    admin.delete_consumer_groups(["g"])["g"].result(TIMEOUT)
    assert node.meta_offsets() == {"h/kept/0": {"offset": 3, "metadata": ""}}
    assert _committed(node.bootstrap, "g", "kept", 1) == [-1001]


def test_offsets_of_the_engine_are_moved_once_at_start(node_factory: Any) -> None:
    node = node_factory(data="old")
    _create_topic(node.bootstrap, "legacy", 2)
    engine = node.node.storage
    # What a node before this change left: offsets in the engine, no migration mark.
    node.call(engine.commit_offset("old-group", "kafka/legacy/0", 11, "m"))
    node.call(engine.commit_offset("old-group", "kafka/legacy/1", 12, ""))
    node.call(engine.commit_offset("newer", "kafka/legacy/0", 1, ""))
    node.call(engine.commit_offset("deleted", "kafka/legacy/0", -1, ""))
    node.call(engine.delete(MIGRATED_KEY))
    node.call(
        node.node.meta.host.propose(
            "offsets",
            encode_command("offset.commit", group="newer", topic="legacy", partition=0, offset=5),
        )
    )
    node.stop()
    node = node_factory(data="old")
    assert node.meta_offsets() == {
        "old-group/legacy/0": {"offset": 11, "metadata": "m"},
        "old-group/legacy/1": {"offset": 12, "metadata": ""},
        "newer/legacy/0": {"offset": 5, "metadata": ""},  # the Meta Service's is newer
    }
    assert _committed(node.bootstrap, "old-group", "legacy", 2) == [11, 12]
    # Once only: a later start does not bring back what the engine still holds.
    _commit(node.bootstrap, "old-group", [("legacy", 0, 20)])
    node.stop()
    node = node_factory(data="old")
    assert _committed(node.bootstrap, "old-group", "legacy", 2) == [20, 12]


def test_the_memory_engine_keeps_offsets_in_memory(node_factory: Any) -> None:
    node = node_factory(storage="memory")
    assert isinstance(node.node.kafka.offsets, EngineOffsets)
    _create_topic(node.bootstrap, "mem", 1)
    _produce(node.bootstrap, "mem", [b"a", b"b", b"c"])
    assert _read(node.bootstrap, "mg", "mem", 3) == [b"a", b"b", b"c"]
    assert _committed(node.bootstrap, "mg", "mem", 1) == [3]
    assert node.meta_offsets() == {}
    admin = admin_mod.AdminClient({"bootstrap.servers": node.bootstrap})
    admin.delete_consumer_groups(["mg"])["mg"].result(TIMEOUT)
    assert _committed(node.bootstrap, "mg", "mem", 1) == [-1001]


def test_persistent_engines_use_the_meta_service(node_factory: Any) -> None:
    assert isinstance(node_factory().node.kafka.offsets, MetaOffsets)


def test_each_commit_is_readable_once_acknowledged(node_factory: Any) -> None:
    node = node_factory()
    _create_topic(node.bootstrap, "lat", 1)
    consumer = _consumer(node.bootstrap, "lat-group")
    try:
        for offset in range(1, 21):
            consumer.commit(offsets=[ck.TopicPartition("lat", 0, offset)], asynchronous=False)
            assert node.meta_offsets()["lat-group/lat/0"]["offset"] == offset
    finally:
        consumer.close()


# ---------------------------------------------------------------------- the group's commands


def _apply(sm: OffsetsStateMachine, op: str, **fields: Any) -> Any:
    return sm.apply(encode_command(op, **fields))


def test_commit_batch_is_all_or_nothing() -> None:
    sm = OffsetsStateMachine()
    rows = [
        {"topic": "t", "partition": 0, "offset": 3, "metadata": "x"},
        {"topic": "t", "partition": 1, "offset": -1},
    ]
    assert _apply(sm, "offset.commit_batch", group="g/1", offsets=rows) == {"committed": 2}
    assert sm.tables["offsets"] == {
        "g/1/t/0": {"offset": 3, "metadata": "x"},
        "g/1/t/1": {"offset": -1, "metadata": ""},
    }
    for bad in (
        [
            {"topic": "t", "partition": 2, "offset": 1},
            {"topic": "a/b", "partition": 0, "offset": 1},
        ],
        [{"topic": "t", "partition": 2, "offset": 1}, {"topic": "t", "partition": -1, "offset": 1}],
        [{"topic": "t", "partition": 2, "offset": -2}],
        [{"topic": "t", "partition": 2, "offset": 1, "metadata": 5}],
        [{"topic": "t", "partition": True, "offset": 1}],
        ["not an object"],
    ):
        with pytest.raises(InvalidMetaCommand):
            _apply(sm, "offset.commit_batch", group="g", offsets=bad)
    assert len(sm.tables["offsets"]) == 2  # nothing of a refused batch was stored
    # Kafka takes the empty group id (OffsetCommit from coordinator-less clients).
    assert _apply(sm, "offset.commit_batch", group="", offsets=rows[:1]) == {"committed": 1}
    assert sm.tables["offsets"]["/t/0"] == {"offset": 3, "metadata": "x"}


def test_a_delete_topics_whose_offsets_cannot_go_keeps_the_topic(node_factory: Any) -> None:
    node = node_factory()
    _create_topic(node.bootstrap, "held", 1)
    _commit(node.bootstrap, "g", [("held", 0, 5)])
    host = node.node.meta.host
    propose = host.propose
    failing = True

    async def flaky(group: str, command: bytes, timeout: float | None = None) -> Any:
        if failing and group == "offsets":
            raise MetaTimeout("no quorum (injected)")
        return await propose(group, command, timeout)

    host.propose = flaky
    admin = admin_mod.AdminClient({"bootstrap.servers": node.bootstrap})
    with pytest.raises(ck.KafkaException) as err:
        admin.delete_topics(["held"])["held"].result(TIMEOUT)
    assert err.value.args[0].code() == ck.KafkaError.REQUEST_TIMED_OUT
    # Nothing half done: the topic and its committed offset are both still there.
    assert node.node.kafka.topics.get("held") is not None
    assert node.meta_offsets() == {"g/held/0": {"offset": 5, "metadata": ""}}
    failing = False
    admin.delete_topics(["held"])["held"].result(TIMEOUT)  # the retry deletes both
    assert node.node.kafka.topics.get("held") is None
    assert node.meta_offsets() == {}


def test_group_and_topic_delete_match_whole_names() -> None:
    sm = OffsetsStateMachine()
    for group in ("g", "g/x", "gg"):
        rows = [{"topic": t, "partition": 0, "offset": 1} for t in ("t", "tt")]
        _apply(sm, "offset.commit_batch", group=group, offsets=rows)
    assert _apply(sm, "group.delete", group="g") == {"deleted": 2}
    assert sorted(sm.tables["offsets"]) == ["g/x/t/0", "g/x/tt/0", "gg/t/0", "gg/tt/0"]
    assert _apply(sm, "topic.delete", topic="t") == {"deleted": 2}
    assert sorted(sm.tables["offsets"]) == ["g/x/tt/0", "gg/tt/0"]
