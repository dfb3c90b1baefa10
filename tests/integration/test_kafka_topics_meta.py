"""Kafka topics in the Meta Service ``cluster`` group, and ``max.message.bytes`` on Produce.

Covered, with confluent-kafka (and raw Produce requests where one request must carry
several partitions): topics, partition counts and configs made with the AdminClient are
back after a restart of the real ``robustmq-server`` process (segment and leveldb
engines); each create, alter, partition growth and delete is one proposal, and nothing
goes to the engine's key-value space; topics kept by the old path (the engine's
``kafka/topic/<name>`` keys) are moved once at start, never over the Meta Service's; the
``memory`` engine keeps topics in the engine; a Meta Service that does not take a change
answers REQUEST_TIMED_OUT, leaves nothing half made, and the retry succeeds; a record
batch over the topic's ``max.message.bytes`` (or the broker default, 1048588) gets
MESSAGE_TOO_LARGE for its partition only.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from robustmq.broker.kafka.topics_store import ENGINE_KEY, MIGRATED_KEY, EngineTopics, MetaTopics
from robustmq.errors import MetaTimeout
from robustmq.meta.groups import encode_command
from tests.conftest import free_port
from tests.integration.test_kafka_clients import KafkaThread
from tests.integration.test_kafka_offsets_meta import (
    NodeThread,
    _create_topic,
    _produce,
    _start_server,
    _stop_server,
)
from tests.integration.test_kafka_protocol import Raw
from tests.unit.test_kafka_codec import make_batch

kafka_errors = pytest.importorskip("kafka.errors")
ck = pytest.importorskip("confluent_kafka")
admin_mod = pytest.importorskip("confluent_kafka.admin")

TIMEOUT = 30.0
MESSAGE_TOO_LARGE = 10
REQUEST_TIMED_OUT = 7


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


def _admin(bootstrap: str) -> Any:
    return admin_mod.AdminClient({"bootstrap.servers": bootstrap})


def _wait(futures: dict[Any, Any]) -> None:
    for future in futures.values():
        future.result(TIMEOUT)


def _set_config(admin: Any, topic: str, key: str, value: str) -> None:
    entry = admin_mod.ConfigEntry(key, value, incremental_operation=admin_mod.AlterConfigOpType.SET)
    resource = admin_mod.ConfigResource(
        admin_mod.ResourceType.TOPIC, topic, incremental_configs=[entry]
    )
    _wait(admin.incremental_alter_configs([resource]))


def _partitions(bootstrap: str) -> dict[str, int]:
    topics = _admin(bootstrap).list_topics(timeout=TIMEOUT).topics
    return {name: len(t.partitions) for name, t in topics.items()}


def _topic_configs(bootstrap: str, topic: str) -> dict[str, tuple[str, int]]:
    """The topic's own configs: name -> (value, source)."""
    resource = admin_mod.ConfigResource(admin_mod.ResourceType.TOPIC, topic)
    admin = _admin(bootstrap)  # held: its futures fail once it is destroyed
    [future] = admin.describe_configs([resource]).values()
    entries = future.result(TIMEOUT)
    own = admin_mod.ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    return {n: (e.value, e.source) for n, e in entries.items() if e.source == own}


def _values(bootstrap: str, topic: str, partition: int, count: int) -> list[bytes]:
    consumer = ck.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "reader", "enable.auto.commit": False}
    )
    consumer.assign([ck.TopicPartition(topic, partition, 0)])
    values: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT
    try:
        while len(values) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None:
                assert msg.error() is None, msg.error()
                values.append(msg.value())
    finally:
        consumer.close()
    return values


def _meta_topics(node: NodeThread) -> dict[str, Any]:
    assert node.node.meta is not None
    return dict(node.call(node.node.meta.host.read("cluster", "topics")) or {})


# ---------------------------------------------------------------------- real server


@pytest.mark.parametrize("storage", ["segment", "leveldb"])
def test_topics_and_configs_are_back_after_a_server_restart(tmp_path: Any, storage: str) -> None:
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    data_dir = str(tmp_path / "data")
    proc = _start_server(data_dir, storage, port)
    try:
        admin = _admin(bootstrap)
        _wait(
            admin.create_topics(
                [
                    admin_mod.NewTopic(
                        "alpha", 2, 1, config={"retention.ms": "60000", "max.message.bytes": "5000"}
                    ),
                    admin_mod.NewTopic("beta", 1, 1),
                    admin_mod.NewTopic("gamma", 1, 1),
                ]
            )
        )
        _wait(admin.create_partitions([admin_mod.NewPartitions("alpha", 3)]))
        _set_config(admin, "beta", "retention.bytes", "1000000")
        _wait(admin.delete_topics(["gamma"]))
        _produce(bootstrap, "alpha", [b"kept"], partition=2)
    finally:
        _stop_server(proc)
    proc = _start_server(data_dir, storage, port)
    try:
        found = _partitions(bootstrap)
        assert (found["alpha"], found["beta"]) == (3, 1)
        assert "gamma" not in found
        own = admin_mod.ConfigSource.DYNAMIC_TOPIC_CONFIG.value
        assert _topic_configs(bootstrap, "alpha") == {
            "retention.ms": ("60000", own),
            "max.message.bytes": ("5000", own),
        }
        assert _topic_configs(bootstrap, "beta") == {"retention.bytes": ("1000000", own)}
        assert _values(bootstrap, "alpha", 2, 1) == [b"kept"]
    finally:
        _stop_server(proc)


# ---------------------------------------------------------------------- inside a node


def test_each_topic_change_is_one_proposal_in_the_cluster_group(node_factory: Any) -> None:
    node = node_factory()
    assert isinstance(node.node.kafka.topics.store, MetaTopics)
    host = node.node.meta.host
    proposals: list[str] = []
    propose = host.propose

    async def counting(group: str, command: bytes, timeout: float | None = None) -> Any:
        proposals.append(group)
        return await propose(group, command, timeout)

    host.propose = counting
    admin = _admin(node.bootstrap)
    _wait(admin.create_topics([admin_mod.NewTopic("t", 2, 1, config={"retention.ms": "5000"})]))
    assert proposals == ["cluster"]
    _wait(admin.create_partitions([admin_mod.NewPartitions("t", 4)]))
    assert proposals == ["cluster"] * 2
    _set_config(admin, "t", "segment.ms", "60000")
    assert proposals == ["cluster"] * 3
    assert _meta_topics(node) == {
        "t": {
            "name": "t",
            "partitions": 4,
            "configs": {"retention.ms": "5000", "segment.ms": "60000"},
        }
    }
    engine = node.node.storage
    assert node.call(engine.shard_info("kafka/t/3")).config.segment_ms == 60000
    assert node.call(engine.scan(ENGINE_KEY)) == []  # the old path holds nothing
    _wait(admin.delete_topics(["t"]))
    # Its committed offsets' proposal (offsets.py), then the topic's own.
    assert proposals == ["cluster"] * 3 + ["offsets", "cluster"]
    assert _meta_topics(node) == {}
    assert node.call(engine.list_shards("kafka/t/")) == []


def test_topics_of_the_engine_are_moved_once_at_start(node_factory: Any) -> None:
    node = node_factory(data="old")
    engine = node.node.storage
    # What a node before this change left: topic records in the engine's key-value space
    # beside their shards, and no migration mark.
    for name, partitions in (("legacy", 2), ("both", 1)):
        record = {"name": name, "partitions": partitions, "configs": {"retention.ms": "7000"}}
        node.call(engine.put(ENGINE_KEY + name.encode(), orjson.dumps(record)))
        for p in range(partitions):
            node.call(engine.create_shard(f"kafka/{name}/{p}"))
    node.call(engine.create_shard("kafka/both/1"))
    node.call(engine.delete(MIGRATED_KEY))
    # "both" is in the Meta Service already, grown to 2 partitions: that one is newer.
    command = encode_command("topic.set", name="both", partitions=2, configs={})
    node.call(node.node.meta.host.propose("cluster", command))
    node.stop()
    node = node_factory(data="old")
    assert _meta_topics(node) == {
        "legacy": {"name": "legacy", "partitions": 2, "configs": {"retention.ms": "7000"}},
        "both": {"name": "both", "partitions": 2, "configs": {}},
    }
    assert _partitions(node.bootstrap) == {"legacy": 2, "both": 2}
    _produce(node.bootstrap, "legacy", [b"after"], partition=1)
    assert _values(node.bootstrap, "legacy", 1, 1) == [b"after"]
    # Once only: a topic deleted since does not come back from the engine's old record.
    admin = _admin(node.bootstrap)
    _wait(admin.delete_topics(["legacy"]))
    node.stop()
    node = node_factory(data="old")
    assert list(_meta_topics(node)) == ["both"]
    assert "legacy" not in _partitions(node.bootstrap)
    # Left where it was, and not read again.
    assert node.call(node.node.storage.get(ENGINE_KEY + b"legacy")) is not None


def test_the_memory_engine_keeps_topics_in_the_engine(node_factory: Any) -> None:
    node = node_factory(storage="memory")
    assert isinstance(node.node.kafka.topics.store, EngineTopics)
    _create_topic(node.bootstrap, "mem", 2)
    _produce(node.bootstrap, "mem", [b"m"])
    assert _values(node.bootstrap, "mem", 0, 1) == [b"m"]
    assert _meta_topics(node) == {}
    stored = node.call(node.node.storage.scan(ENGINE_KEY))
    assert [orjson.loads(v)["partitions"] for _, v in stored] == [2]


def test_a_change_the_meta_service_does_not_take_is_retriable(node_factory: Any) -> None:
    node = node_factory()
    _create_topic(node.bootstrap, "kept", 1)
    host = node.node.meta.host
    propose = host.propose
    failing = True

    async def flaky(group: str, command: bytes, timeout: float | None = None) -> Any:
        if failing and group == "cluster":
            raise MetaTimeout("no quorum (injected)")
        return await propose(group, command, timeout)

    host.propose = flaky
    admin = _admin(node.bootstrap)
    attempts = {
        "create": admin.create_topics([admin_mod.NewTopic("new", 3, 1)])["new"],
        "grow": admin.create_partitions([admin_mod.NewPartitions("kept", 2)])["kept"],
        "delete": admin.delete_topics(["kept"])["kept"],
    }
    for what, future in attempts.items():
        with pytest.raises(ck.KafkaException) as err:
            future.result(TIMEOUT)
        assert err.value.args[0].code() == REQUEST_TIMED_OUT, what
    # Kafka's table of retriable errors (which kafka-python carries; librdkafka leaves
    # retrying admin requests to the application).
    assert kafka_errors.for_code(REQUEST_TIMED_OUT).retriable
    engine = node.node.storage
    assert node.call(engine.list_shards("kafka/new/")) == []  # nothing half made
    assert node.call(engine.list_shards("kafka/kept/")) == ["kafka/kept/0"]
    assert _partitions(node.bootstrap) == {"kept": 1}
    failing = False
    _wait(admin.create_topics([admin_mod.NewTopic("new", 3, 1)]))
    assert _partitions(node.bootstrap) == {"kept": 1, "new": 3}


def test_a_create_that_commits_after_its_timeout_serves_after_a_restart(
    node_factory: Any,
) -> None:
    node = node_factory(data="late")
    host = node.node.meta.host
    propose = host.propose

    async def late(group: str, command: bytes, timeout: float | None = None) -> Any:
        await propose(group, command, timeout)
        raise MetaTimeout("the answer was lost (injected)")

    host.propose = late
    admin = _admin(node.bootstrap)
    with pytest.raises(ck.KafkaException) as err:
        admin.create_topics([admin_mod.NewTopic("late", 2, 1)])["late"].result(TIMEOUT)
    assert err.value.args[0].code() == REQUEST_TIMED_OUT
    assert "late" in _meta_topics(node)  # committed, but its shards were removed
    assert node.call(node.node.storage.list_shards("kafka/late/")) == []
    node.stop()
    node = node_factory(data="late")
    assert _partitions(node.bootstrap) == {"late": 2}
    _produce(node.bootstrap, "late", [b"served"], partition=1)
    assert _values(node.bootstrap, "late", 1, 1) == [b"served"]


# ---------------------------------------------------------------------- max.message.bytes


@pytest.fixture
def kb() -> Iterator[KafkaThread]:
    k = KafkaThread()
    yield k
    errors = k.problems()
    k.stop()
    assert not errors, f"the broker failed: {errors}"


def _deliver(bootstrap: str, topic: str, value: bytes) -> Any:
    """The delivery error of one message (None when it was stored)."""
    outcome: list[Any] = []
    producer = ck.Producer(
        {"bootstrap.servers": bootstrap, "message.max.bytes": 4_000_000, "linger.ms": 0}
    )
    producer.produce(topic, value, callback=lambda err, msg: outcome.append(err))
    assert producer.flush(TIMEOUT) == 0
    return outcome[0]


def test_confluent_kafka_sees_message_too_large_over_the_topic_limit(kb: KafkaThread) -> None:
    admin = _admin(kb.bootstrap)
    _wait(
        admin.create_topics(
            [admin_mod.NewTopic("small", 1, 1, config={"max.message.bytes": "1000"})]
        )
    )
    error = _deliver(kb.bootstrap, "small", b"x" * 5000)
    assert error is not None and error.code() == ck.KafkaError.MSG_SIZE_TOO_LARGE
    assert not error.retriable()
    assert _deliver(kb.bootstrap, "small", b"y" * 100) is None
    # A raised limit takes effect at once.
    _set_config(admin, "small", "max.message.bytes", "10000")
    assert _deliver(kb.bootstrap, "small", b"z" * 5000) is None
    assert kb.call(kb.engine.latest_offset("kafka/small/0")) == 2


def test_the_broker_default_is_kafkas_message_max_bytes(kb: KafkaThread) -> None:
    _create_topic(kb.bootstrap, "plain", 1)
    error = _deliver(kb.bootstrap, "plain", b"\x01" * 1_048_576)  # plus the batch overhead
    assert error is not None and error.code() == ck.KafkaError.MSG_SIZE_TOO_LARGE
    assert _deliver(kb.bootstrap, "plain", b"\x01" * 1_048_000) is None
    assert kb.call(kb.engine.latest_offset("kafka/plain/0")) == 1


def test_only_the_partition_over_the_limit_is_refused(kb: KafkaThread) -> None:
    small = make_batch([b"s"])
    big = make_batch([b"b" * 200])
    limit = len(big) - 1  # the whole batch counts, log overhead included
    kb.call(kb.broker.topics.create("capped", 2, {"max.message.bytes": str(limit)}))
    kb.call(kb.broker.topics.create("open", 1, {}))
    raw = Raw(kb)
    try:
        capped = {
            "name": "capped",
            "partition_data": [
                {"index": 0, "records": big},
                {"index": 1, "records": small + big},  # one batch over: all refused
            ],
        }
        other = {"name": "open", "partition_data": [{"index": 0, "records": big}]}
        body: dict[str, Any] = {"acks": -1, "timeout_ms": 5000, "topic_data": [capped, other]}
        answer = raw.call(0, 8, body)["responses"]
        codes = {
            (t["name"], p["index"]): p["error_code"]
            for t in answer
            for p in t["partition_responses"]
        }
        assert codes == {
            ("capped", 0): MESSAGE_TOO_LARGE,
            ("capped", 1): MESSAGE_TOO_LARGE,
            ("open", 0): 0,
        }
        exact = {"max.message.bytes": str(len(big))}
        kb.call(kb.broker.topics.alter_configs("capped", exact))
        body["topic_data"] = [capped]
        answer = raw.call(0, 8, body)["responses"]
        assert [p["error_code"] for p in answer[0]["partition_responses"]] == [0, 0]
    finally:
        raw.close()
    assert kb.call(kb.engine.latest_offset("kafka/capped/1")) == 2
    assert kb.call(kb.engine.latest_offset("kafka/open/0")) == 1
