"""The ``cluster`` group's Kafka topics table: ``topic.set`` / ``topic.delete`` results,
reads, bad commands refused with no change of state, snapshot round trips (and snapshots
written before the table existed), and the commands replicated through a real
``MultiRaftHost`` that is stopped and opened again on the same directory."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from robustmq.errors import InvalidMetaCommand, MetaCommandError
from robustmq.meta.groups import ClusterStateMachine, encode_command
from robustmq.meta.host import HostConfig, InMemoryNetwork, MultiRaftHost


def _apply(sm: ClusterStateMachine, op: str, **fields: Any) -> Any:
    return sm.apply(encode_command(op, **fields))


def test_topic_set_stores_the_whole_topic_and_replaces_it() -> None:
    sm = ClusterStateMachine()
    assert _apply(sm, "topic.set", name="t", partitions=2, configs={"retention.ms": "5"}) == {
        "replaced": False
    }
    assert sm.read("topics/t") == {"name": "t", "partitions": 2, "configs": {"retention.ms": "5"}}
    assert _apply(sm, "topic.set", name="t", partitions=3, configs={}) == {"replaced": True}
    assert sm.read("topics") == {"t": {"name": "t", "partitions": 3, "configs": {}}}
    assert sm.read("topics/missing") is None


def test_topic_delete_answers_whether_it_existed() -> None:
    sm = ClusterStateMachine()
    _apply(sm, "topic.set", name="a", partitions=1, configs={})
    _apply(sm, "topic.set", name="b", partitions=1, configs={})
    assert _apply(sm, "topic.delete", name="a") == {"deleted": True}
    assert _apply(sm, "topic.delete", name="a") == {"deleted": False}
    assert list(sm.read("topics")) == ["b"]


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "", "partitions": 1, "configs": {}},
        {"name": "a/b", "partitions": 1, "configs": {}},
        {"name": "t", "partitions": 0, "configs": {}},
        {"name": "t", "partitions": True, "configs": {}},
        {"name": "t", "partitions": "1", "configs": {}},
        {"name": "t", "partitions": 1, "configs": {"retention.ms": 5}},
        {"name": "t", "partitions": 1, "configs": ["retention.ms"]},
        {"name": "t", "partitions": 1},
        {"partitions": 1, "configs": {}},
    ],
)
def test_bad_topic_set_is_refused_and_changes_nothing(fields: dict[str, Any]) -> None:
    sm = ClusterStateMachine()
    _apply(sm, "topic.set", name="t", partitions=4, configs={"segment.ms": "9"})
    before = sm.snapshot()
    with pytest.raises(InvalidMetaCommand):
        _apply(sm, "topic.set", **fields)
    assert sm.snapshot() == before


def test_topic_delete_needs_a_name() -> None:
    sm = ClusterStateMachine()
    with pytest.raises(InvalidMetaCommand):
        _apply(sm, "topic.delete", name=5)


def test_a_newer_command_version_is_refused() -> None:
    sm = ClusterStateMachine()
    command = orjson.dumps({"v": 2, "op": "topic.set", "name": "t", "partitions": 1, "configs": {}})
    with pytest.raises(MetaCommandError, match="version 2"):
        sm.apply(command)
    assert sm.read("topics") == {}


def test_snapshot_round_trip_keeps_topics_and_the_other_tables() -> None:
    sm = ClusterStateMachine()
    _apply(sm, "topic.set", name="t", partitions=2, configs={"retention.ms": "1"})
    _apply(sm, "config.set", key="k", value=1)
    copy = ClusterStateMachine()
    copy.restore(sm.snapshot())
    assert copy.tables == sm.tables


def test_a_snapshot_from_before_the_topics_table_restores_with_it_empty() -> None:
    old = orjson.dumps({"v": 1, "group": "cluster", "tables": {"nodes": {}, "config": {"k": 1}}})
    sm = ClusterStateMachine()
    sm.restore(old)
    assert sm.tables == {"nodes": {}, "config": {"k": 1}, "topics": {}, "routes": {}}
    _apply(sm, "topic.set", name="t", partitions=1, configs={})
    assert list(sm.read("topics")) == ["t"]


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        orjson.dumps({"v": 1, "group": "cluster", "tables": {"nodes": {}}}),
        orjson.dumps({"v": 1, "group": "mqtt", "tables": {"nodes": {}, "config": {}}}),
        orjson.dumps([1, 2]),
    ],
)
def test_a_bad_snapshot_is_still_refused(data: bytes) -> None:
    sm = ClusterStateMachine()
    with pytest.raises(MetaCommandError):
        sm.restore(data)
    assert sm.tables == {"nodes": {}, "config": {}, "topics": {}, "routes": {}}


async def test_topics_survive_a_host_restart(tmp_path: Any) -> None:
    config = HostConfig(
        node_id=1, peers=((1, "127.0.0.1:1"),), data_dir=str(tmp_path), groups=("cluster",)
    )
    host = MultiRaftHost(config, InMemoryNetwork().transport(1))
    await host.start()
    await host.propose("cluster", encode_command("topic.set", name="a", partitions=3, configs={}))
    await host.propose("cluster", encode_command("topic.set", name="b", partitions=1, configs={}))
    await host.propose("cluster", encode_command("topic.delete", name="b"))
    await host.stop()
    host = MultiRaftHost(config, InMemoryNetwork().transport(1))
    await host.start()
    try:
        assert await host.read("cluster", "topics") == {
            "a": {"name": "a", "partitions": 3, "configs": {}}
        }
    finally:
        await host.stop()
