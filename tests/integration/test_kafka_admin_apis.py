"""The Kafka admin APIs driven by real clients: DescribeConfigs, AlterConfigs,
IncrementalAlterConfigs, CreatePartitions, DeleteRecords, DescribeCluster and DeleteGroups
through confluent-kafka's AdminClient (librdkafka) and kafka-python's KafkaAdminClient,
plus OffsetForLeaderEpoch, ApiVersions and the transactional refusal over a raw socket.

Config changes are checked where they matter: durable across a restart of a segment
engine, and effective on retention (a topic whose retention.ms is lowered loses its old
records at the next retention pass).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from robustmq.storage import LevelDBConfig, MemoryConfig, SegmentConfig
from tests.conftest import free_port
from tests.integration.test_kafka_clients import KafkaThread
from tests.integration.test_kafka_protocol import Raw

ck = pytest.importorskip("confluent_kafka")
kafka = pytest.importorskip("kafka")
from confluent_kafka import TopicPartition  # noqa: E402
from confluent_kafka.admin import (  # noqa: E402
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)
from kafka import KafkaAdminClient  # noqa: E402
from kafka import TopicPartition as KpTopicPartition  # noqa: E402
from kafka.admin import ConfigResource as KpConfigResource  # noqa: E402
from kafka.admin import ConfigResourceType as KpConfigResourceType  # noqa: E402
from kafka.admin import NewPartitions as KpNewPartitions  # noqa: E402

TIMEOUT = 30.0
HOUR_MS = 3_600_000


@pytest.fixture
def started() -> Iterator[list[KafkaThread]]:
    brokers: list[KafkaThread] = []
    yield brokers
    errors = []
    for k in brokers:
        errors += k.problems()
        k.stop()
    assert not errors, f"the broker failed: {errors}"


def start(started: list[KafkaThread], **kw: Any) -> KafkaThread:
    k = KafkaThread(**kw)
    started.append(k)
    return k


@pytest.fixture
def kb(started: list[KafkaThread]) -> KafkaThread:
    return start(started)


def admin(kb: KafkaThread) -> AdminClient:
    return AdminClient({"bootstrap.servers": kb.bootstrap})


def wait(futures: dict[Any, Any]) -> dict[Any, Any]:
    return {key: f.result(timeout=TIMEOUT) for key, f in futures.items()}


def error_of(future: Any) -> Any:
    with pytest.raises(ck.KafkaException) as info:
        future.result(timeout=TIMEOUT)
    return info.value.args[0]


def create(a: AdminClient, name: str, partitions: int = 1, **config: str) -> None:
    wait(a.create_topics([NewTopic(name, partitions, 1, config=config)]))


def describe(a: AdminClient, topic: str) -> dict[str, Any]:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    (entries,) = wait(a.describe_configs([resource])).values()
    return dict(entries)


def produce(kb: KafkaThread, topic: str, n: int, partition: int = 0, ts: int = 0) -> None:
    p = ck.Producer({"bootstrap.servers": kb.bootstrap, "linger.ms": 0})
    for i in range(n):
        p.produce(topic, b"v%d" % i, key=b"k%d" % i, partition=partition, timestamp=ts)
    assert p.flush(TIMEOUT) == 0


# --- DescribeConfigs / AlterConfigs / IncrementalAlterConfigs ---------------------------


def test_describe_configs_reports_defaults_topic_values_and_synonyms(kb: KafkaThread):
    a = admin(kb)
    create(a, "dc", 1, **{"retention.ms": "60000"})
    entries = describe(a, "dc")
    assert set(entries) == {
        "retention.ms",
        "retention.bytes",
        "segment.bytes",
        "segment.ms",
        "cleanup.policy",
        "max.message.bytes",
    }
    retention = entries["retention.ms"]
    assert (
        retention.value == "60000" and retention.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    )
    assert not retention.is_default and not retention.is_read_only
    # librdkafka asks for synonyms: the topic value first, then the broker default.
    assert [(s.name, s.value) for s in retention.synonyms.values()] == [
        ("retention.ms", "60000"),
        ("log.retention.ms", "604800000"),
    ]
    policy = entries["cleanup.policy"]
    assert policy.value == "delete" and policy.source == ConfigSource.DEFAULT_CONFIG.value
    assert policy.is_default
    assert entries["retention.bytes"].value == "-1"

    broker = ConfigResource(ResourceType.BROKER, "1")
    (config,) = wait(a.describe_configs([broker])).values()
    assert config["num.partitions"].value == "1" and config["num.partitions"].is_read_only
    assert config["log.retention.ms"].value == "604800000"
    (missing,) = a.describe_configs([ConfigResource(ResourceType.TOPIC, "nope")]).values()
    assert error_of(missing).code() == ck.KafkaError.UNKNOWN_TOPIC_OR_PART


def test_a_broker_default_from_the_config_file_is_a_static_broker_config(started):
    kb = start(started, retention_ms=HOUR_MS, default_partitions=2)
    a = admin(kb)
    create(a, "static")
    retention = describe(a, "static")["retention.ms"]
    assert retention.value == str(HOUR_MS)
    assert retention.source == ConfigSource.STATIC_BROKER_CONFIG.value
    (config,) = wait(a.describe_configs([ConfigResource(ResourceType.BROKER, "1")])).values()
    assert config["num.partitions"].value == "2"
    assert config["num.partitions"].source == ConfigSource.STATIC_BROKER_CONFIG.value


def test_incremental_alter_configs_set_delete_and_refusals(kb: KafkaThread):
    a = admin(kb)
    create(a, "inc")

    def alter(*entries: ConfigEntry, validate_only: bool = False) -> Any:
        resource = ConfigResource(ResourceType.TOPIC, "inc", incremental_configs=list(entries))
        (f,) = a.incremental_alter_configs([resource], validate_only=validate_only).values()
        return f

    def entry(name: str, value: str | None, op: AlterConfigOpType) -> ConfigEntry:
        return ConfigEntry(name, value, incremental_operation=op)

    SET, DELETE = AlterConfigOpType.SET, AlterConfigOpType.DELETE
    alter(entry("retention.ms", "120000", SET), validate_only=True).result(timeout=TIMEOUT)
    assert describe(a, "inc")["retention.ms"].value == "604800000"
    alter(entry("retention.ms", "120000", SET), entry("retention.bytes", "1048576", SET)).result(
        timeout=TIMEOUT
    )
    entries = describe(a, "inc")
    assert entries["retention.ms"].value == "120000"
    assert entries["retention.bytes"].value == "1048576"
    alter(entry("retention.bytes", None, DELETE)).result(timeout=TIMEOUT)
    entries = describe(a, "inc")
    assert entries["retention.ms"].value == "120000"  # untouched by the DELETE of another key
    assert entries["retention.bytes"].value == "-1" and entries["retention.bytes"].is_default
    assert kb.call(kb.engine.shard_info("kafka/inc/0")).config.retention_ms == 120000

    err = error_of(alter(entry("cleanup.policy", "compact", SET)))
    assert err.code() == ck.KafkaError.INVALID_CONFIG and "compaction is not supported" in err.str()
    err = error_of(alter(entry("cleanup.policy", "delete", AlterConfigOpType.APPEND)))
    assert err.code() == ck.KafkaError.INVALID_CONFIG and "APPEND" in err.str()
    err = error_of(alter(entry("colour", "blue", SET)))
    assert err.code() == ck.KafkaError.INVALID_CONFIG and "'colour'" in err.str()
    err = error_of(alter(entry("retention.ms", "-5", SET)))
    assert err.code() == ck.KafkaError.INVALID_CONFIG and "retention.ms" in err.str()
    assert describe(a, "inc")["retention.ms"].value == "120000"  # nothing half-applied


def test_alter_configs_replaces_the_whole_set(kb: KafkaThread):
    a = admin(kb)
    create(a, "whole", 1, **{"retention.ms": "60000", "segment.bytes": "1048576"})
    resource = ConfigResource(ResourceType.TOPIC, "whole", set_config={"retention.bytes": "4096"})
    with pytest.warns(DeprecationWarning):
        futures = a.alter_configs([resource])
    wait(futures)
    entries = describe(a, "whole")
    assert entries["retention.bytes"].value == "4096"
    assert entries["retention.ms"].is_default and entries["segment.bytes"].is_default
    broker = ConfigResource(ResourceType.BROKER, "1", set_config={"num.partitions": "3"})
    with pytest.warns(DeprecationWarning):
        (f,) = a.alter_configs([broker]).values()
    assert "read-only" in error_of(f).str()


@pytest.mark.parametrize("engine", [SegmentConfig, LevelDBConfig])
def test_config_changes_survive_a_restart(tmp_path, started, engine):
    port = free_port()
    kb = start(started, engine=engine(path=str(tmp_path)), port=port)
    a = admin(kb)
    create(a, "kept", 2)
    resource = ConfigResource(
        ResourceType.TOPIC,
        "kept",
        incremental_configs=[
            ConfigEntry("retention.ms", "90000", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    wait(a.incremental_alter_configs([resource]))
    started.remove(kb)
    kb.stop()
    kb = start(started, engine=engine(path=str(tmp_path)), port=port)
    entries = describe(admin(kb), "kept")
    assert entries["retention.ms"].value == "90000"
    assert entries["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    for p in range(2):
        assert kb.call(kb.engine.shard_info(f"kafka/kept/{p}")).config.retention_ms == 90000


def test_a_new_broker_default_reaches_topics_without_their_own_value(tmp_path, started):
    port = free_port()
    kb = start(started, engine=SegmentConfig(path=str(tmp_path)), port=port)
    create(admin(kb), "own", 1, **{"retention.ms": "60000"})
    create(admin(kb), "inherits")
    started.remove(kb)
    kb.stop()
    kb = start(started, engine=SegmentConfig(path=str(tmp_path)), port=port, retention_ms=HOUR_MS)
    config = kb.call(kb.engine.shard_info("kafka/inherits/0")).config
    assert config.retention_ms == HOUR_MS
    assert kb.call(kb.engine.shard_info("kafka/own/0")).config.retention_ms == 60000


def test_lowering_retention_ms_deletes_old_records_at_the_next_pass(started):
    kb = start(started, engine=MemoryConfig())
    a = admin(kb)
    create(a, "old")
    old = int(time.time() * 1000) - 2 * HOUR_MS
    produce(kb, "old", 5, ts=old)
    produce(kb, "old", 3)
    shard = "kafka/old/0"
    assert kb.call(kb.engine.apply_retention(shard)) == 0  # a week's retention keeps them
    resource = ConfigResource(
        ResourceType.TOPIC,
        "old",
        incremental_configs=[
            ConfigEntry("retention.ms", str(HOUR_MS), incremental_operation=AlterConfigOpType.SET)
        ],
    )
    wait(a.incremental_alter_configs([resource]))
    assert kb.call(kb.engine.apply_retention(shard)) == 5
    offsets = wait(a.list_offsets({TopicPartition("old", 0): OffsetSpec.earliest()}))
    assert [info.offset for info in offsets.values()] == [5]


# --- CreatePartitions ---------------------------------------------------------------


def test_create_partitions_grows_only(kb: KafkaThread):
    a = admin(kb)
    create(a, "grow")
    wait(a.create_partitions([NewPartitions("grow", 3)], validate_only=True))
    assert kb.broker.topics.get("grow").partitions == 1
    wait(a.create_partitions([NewPartitions("grow", 3)]))
    assert len(a.list_topics("grow", timeout=TIMEOUT).topics["grow"].partitions) == 3
    produce(kb, "grow", 2, partition=2)
    assert kb.call(kb.engine.latest_offset("kafka/grow/2")) == 2
    for count in (2, 3):
        (f,) = a.create_partitions([NewPartitions("grow", count)]).values()
        err = error_of(f)
        assert err.code() == ck.KafkaError.INVALID_PARTITIONS and "only grow" in err.str()
    (f,) = a.create_partitions([NewPartitions("nope", 2)]).values()
    assert error_of(f).code() == ck.KafkaError.UNKNOWN_TOPIC_OR_PART


# --- DeleteRecords ------------------------------------------------------------------


def test_delete_records_moves_the_log_start_offset(kb: KafkaThread):
    a = admin(kb)
    create(a, "trim")
    produce(kb, "trim", 10)
    (result,) = wait(a.delete_records([TopicPartition("trim", 0, 4)])).values()
    assert result.low_watermark == 4
    offsets = wait(a.list_offsets({TopicPartition("trim", 0): OffsetSpec.earliest()}))
    assert [info.offset for info in offsets.values()] == [4]
    raw = Raw(kb)
    fetched = _fetch(raw, "trim", 2)
    assert fetched["error_code"] == 1 and fetched["log_start_offset"] == 4  # OFFSET_OUT_OF_RANGE
    assert _fetch(raw, "trim", 11)["error_code"] == 1  # beyond the high watermark
    assert _fetch(raw, "trim", 4)["error_code"] == 0
    (f,) = a.delete_records([TopicPartition("trim", 0, 11)]).values()
    assert error_of(f).code() == ck.KafkaError.OFFSET_OUT_OF_RANGE
    # -1 is the high watermark.
    (result,) = wait(a.delete_records([TopicPartition("trim", 0, -1)])).values()
    assert result.low_watermark == 10
    c = ck.Consumer(
        {"bootstrap.servers": kb.bootstrap, "group.id": "trim", "auto.offset.reset": "earliest"}
    )
    low, high = c.get_watermark_offsets(TopicPartition("trim", 0), timeout=TIMEOUT)
    c.close()
    assert (low, high) == (10, 10)
    raw.close()


def _fetch(raw: Raw, topic: str, offset: int) -> dict[str, Any]:
    body = {
        "max_wait_ms": 0,
        "min_bytes": 0,
        "topics": [
            {
                "topic": topic,
                "partitions": [
                    {"partition": 0, "fetch_offset": offset, "partition_max_bytes": 1 << 20}
                ],
            }
        ],
    }
    return raw.call(1, 11, body)["responses"][0]["partitions"][0]


# --- DescribeCluster, DeleteGroups --------------------------------------------------


def test_describe_cluster(kb: KafkaThread):
    a = admin(kb)  # kept: a collected client cancels its requests
    result = a.describe_cluster().result(timeout=TIMEOUT)
    assert result.cluster_id == "robustmq"
    assert result.controller.id == 1
    assert [(n.id, n.host, n.port) for n in result.nodes] == [(1, "127.0.0.1", kb.port)]


def test_delete_consumer_groups(kb: KafkaThread):
    a = admin(kb)
    create(a, "gt")
    produce(kb, "gt", 3)
    c = ck.Consumer(
        {
            "bootstrap.servers": kb.bootstrap,
            "group.id": "doomed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe(["gt"])
    got = 0
    deadline = time.monotonic() + TIMEOUT
    while got < 3 and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is not None and not msg.error():
            got += 1
            c.commit(msg, asynchronous=False)
    assert got == 3
    (f,) = a.delete_consumer_groups(["doomed"]).values()
    assert error_of(f).code() == ck.KafkaError.NON_EMPTY_GROUP
    c.close()
    wait(a.delete_consumer_groups(["doomed"]))
    assert kb.call(kb.broker.offsets.group_offsets("doomed")) == {}
    (f,) = a.delete_consumer_groups(["doomed"]).values()
    assert error_of(f).code() == ck.KafkaError.GROUP_ID_NOT_FOUND
    # A new member of the same group starts from auto.offset.reset again.
    c = ck.Consumer(
        {"bootstrap.servers": kb.bootstrap, "group.id": "doomed", "auto.offset.reset": "latest"}
    )
    committed = c.committed([TopicPartition("gt", 0)], timeout=TIMEOUT)
    c.close()
    assert committed[0].offset < 0


def test_a_member_joining_while_a_delete_reads_the_offsets_keeps_the_group(kb: KafkaThread):
    import asyncio

    from robustmq.errors import KafkaNonEmptyGroup

    a = admin(kb)
    create(a, "race")
    produce(kb, "race", 1)
    config = {
        "bootstrap.servers": kb.bootstrap,
        "group.id": "racing",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
    c = ck.Consumer(config)
    c.subscribe(["race"])
    msg = None
    deadline = time.monotonic() + TIMEOUT
    while msg is None and time.monotonic() < deadline:
        msg = c.poll(0.5)
    assert msg is not None and not msg.error()
    c.commit(msg, asynchronous=False)
    c.close()  # the group is empty, with a committed offset
    offsets = kb.broker.offsets
    read = offsets.group_offsets
    reading = kb.call(_event())
    release = kb.call(_event())

    async def slow_read(group_id: str) -> Any:
        reading.set()
        await release.wait()
        return await read(group_id)

    offsets.group_offsets = slow_read
    deletion = asyncio.run_coroutine_threadsafe(kb.broker.groups.delete("racing"), kb.loop)
    kb.call(reading.wait())
    joined = ck.Consumer(config)  # joins while the delete waits for the offsets
    joined.subscribe(["race"])
    deadline = time.monotonic() + TIMEOUT
    while not joined.assignment() and time.monotonic() < deadline:
        joined.poll(0.2)
    assert joined.assignment()
    kb.loop.call_soon_threadsafe(release.set)
    with pytest.raises(KafkaNonEmptyGroup):
        deletion.result(TIMEOUT)
    offsets.group_offsets = read
    assert kb.call(read("racing"))  # the committed offset is still there
    joined.close()


async def _event() -> Any:
    import asyncio

    return asyncio.Event()


# --- OffsetForLeaderEpoch, ApiVersions, transactions --------------------------------


def test_offset_for_leader_epoch(kb: KafkaThread):
    a = admin(kb)
    create(a, "ep")
    produce(kb, "ep", 4)
    raw = Raw(kb)

    def ask(version: int, epoch: int, current: int = -1, topic: str = "ep") -> dict[str, Any]:
        body = {
            "replica_id": -1,
            "topics": [
                {
                    "topic": topic,
                    "partitions": [
                        {"partition": 0, "current_leader_epoch": current, "leader_epoch": epoch}
                    ],
                }
            ],
        }
        return raw.call(23, version, body)["topics"][0]["partitions"][0]

    for version in range(5):
        got = ask(version, 0)
        assert (got["error_code"], got["end_offset"]) == (0, 4), version
    assert ask(4, 0, current=0)["leader_epoch"] == 0
    unknown = ask(4, 7)
    assert (unknown["error_code"], unknown["leader_epoch"], unknown["end_offset"]) == (0, -1, -1)
    assert ask(4, 0, current=3)["error_code"] == 76  # UNKNOWN_LEADER_EPOCH
    assert ask(4, 0, topic="nope")["error_code"] == 3
    raw.close()


def test_api_versions_lists_the_admin_apis_and_no_transactions(kb: KafkaThread):
    raw = Raw(kb)
    versions = {
        k["api_key"]: (k["min_version"], k["max_version"])
        for k in raw.call(18, 3, {"client_software_name": "t", "client_software_version": "1"})[
            "api_keys"
        ]
    }
    raw.close()
    assert versions[32] == (0, 4) and versions[33] == (0, 2) and versions[44] == (0, 1)
    assert versions[37] == (0, 3) and versions[21] == (0, 2) and versions[23] == (0, 4)
    assert versions[60] == (0, 1) and versions[42] == (0, 2)
    assert versions[17] == (0, 1) and versions[36] == (0, 2)
    # AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, TxnOffsetCommit: not offered.
    assert not {24, 25, 26, 28} & set(versions)


def test_a_transactional_producer_fails_at_once_with_a_clear_error(kb: KafkaThread):
    p = ck.Producer({"bootstrap.servers": kb.bootstrap, "transactional.id": "tx"})
    with pytest.raises(ck.KafkaException) as info:
        p.init_transactions(TIMEOUT)
    err = info.value.args[0]
    assert err.code() == ck.KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED and err.fatal()
    assert "transactions are not supported" in err.str()


# --- kafka-python -------------------------------------------------------------------


def test_kafka_python_admin_calls(kb: KafkaThread):
    a = admin(kb)
    create(a, "kp", 1, **{"retention.ms": "70000"})
    produce(kb, "kp", 6)
    kp = KafkaAdminClient(bootstrap_servers=kb.bootstrap, request_timeout_ms=int(TIMEOUT * 1000))
    topic = KpConfigResourceType.TOPIC
    try:
        described = kp.describe_configs([KpConfigResource(topic, "kp")], config_filter="all")
        retention = described["topic"]["kp"]["retention.ms"]
        assert (retention["value"], retention["config_source"]) == ("70000", "DYNAMIC_TOPIC_CONFIG")
        assert kp.alter_configs([KpConfigResource(topic, "kp", {"retention.ms": "80000"})]) == {
            "topic": {"kp": "OK"}
        }
        assert describe(a, "kp")["retention.ms"].value == "80000"
        refused = kp.alter_configs(
            [KpConfigResource(topic, "kp", {"colour": "x"})], raise_on_unknown=False
        )
        assert "unknown topic config 'colour'" in refused["topic"]["kp"]
        kp.create_partitions({"kp": KpNewPartitions(total_count=2)})
        assert kb.broker.topics.get("kp").partitions == 2
        deleted = kp.delete_records({KpTopicPartition("kp", 0): 3})
        assert deleted[KpTopicPartition("kp", 0)]["low_watermark"] == 3
        cluster = kp.describe_cluster()
        assert (cluster["cluster_id"], cluster["controller_id"]) == ("robustmq", 1)
        assert kp.delete_groups(["never-was"]) == {"never-was": "GroupIdNotFoundError"}
    finally:
        kp.close()


# --- every advertised version, over a raw socket -------------------------------------


def test_every_version_of_the_admin_apis_answers(kb: KafkaThread):
    a = admin(kb)
    create(a, "v", 1, **{"retention.ms": "60000"})
    produce(kb, "v", 5)
    raw = Raw(kb)
    for v in range(5):
        body = {
            "resources": [
                {
                    "resource_type": 2,
                    "resource_name": "v",
                    "configuration_keys": ["retention.ms", "no.such.key"],
                }
            ],
            "include_synonyms": True,
            "include_documentation": True,
        }
        (result,) = raw.call(32, v, body)["results"]
        (entry,) = result["configs"]
        assert (result["error_code"], entry["name"], entry["value"]) == (0, "retention.ms", "60000")
        assert entry["is_default"] is False if v == 0 else entry["config_source"] == 1
        assert (entry.get("documentation") is not None) == (v >= 3), v
        assert len(entry.get("synonyms", [])) == (2 if v >= 1 else 0), v
    for v in range(3):
        body = {
            "resources": [
                {
                    "resource_type": 2,
                    "resource_name": "v",
                    "configs": [{"name": "retention.ms", "value": str(70000 + v)}],
                }
            ],
            "validate_only": False,
        }
        assert raw.call(33, v, body)["responses"][0]["error_code"] == 0, v
    for v in range(2):
        body = {
            "resources": [
                {
                    "resource_type": 2,
                    "resource_name": "v",
                    "configs": [
                        {"name": "retention.bytes", "config_operation": 0, "value": str(v + 5000)}
                    ],
                }
            ],
            "validate_only": False,
        }
        assert raw.call(44, v, body)["responses"][0]["error_code"] == 0, v
    assert describe(a, "v")["retention.bytes"].value == "5001"
    for v in range(4):
        body = {"topics": [{"name": "v", "count": 2 + v, "assignments": None}], "timeout_ms": 1000}
        assert raw.call(37, v, body | {"validate_only": False})["results"][0]["error_code"] == 0
    assert kb.broker.topics.get("v").partitions == 5
    for v in range(3):
        body = {
            "topics": [{"name": "v", "partitions": [{"partition_index": 0, "offset": v + 1}]}],
            "timeout_ms": 1000,
        }
        (p,) = raw.call(21, v, body)["topics"][0]["partitions"]
        assert (p["error_code"], p["low_watermark"]) == (0, v + 1)
    for v in range(2):
        got = raw.call(60, v, {"include_cluster_authorized_operations": False})
        assert (got["error_code"], got["cluster_id"], got["controller_id"]) == (0, "robustmq", 1)
        assert [b["port"] for b in got["brokers"]] == [kb.port]
    for v in range(3):
        (r,) = raw.call(42, v, {"groups_names": [f"none-{v}"]})["results"]
        assert r == {"group_id": f"none-{v}", "error_code": 69}  # GROUP_ID_NOT_FOUND
    raw.close()
