"""ApiVersions, Metadata, FindCoordinator and OffsetForLeaderEpoch: what a client asks
before anything else, and the leader epochs Metadata advertises.

This node is the only broker, the controller, the leader of every partition and the
coordinator of every group, so the answers name it alone, at the address the client
reached it at. Every partition has had one leader, in epoch ``LEADER_EPOCH``, for its
whole life: OffsetForLeaderEpoch answers that epoch's end offset (the log end offset),
and UNDEFINED (-1, -1) for any other epoch, as Kafka does for an epoch it does not know.
Topic creation itself lives in ``registry.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from robustmq._core.kafka_codec import RequestHeader
from robustmq._core.kafka_spec import SUPPORTED
from robustmq.errors import (
    KafkaError,
    KafkaTransactionalIdAuthorizationFailed,
    KafkaUnknownLeaderEpoch,
    KafkaUnknownTopicOrPartition,
    StorageError,
    kafka_error_code,
)

if TYPE_CHECKING:
    from robustmq.broker.kafka.server import KafkaBroker, KafkaConnection


LEADER_EPOCH = 0


def api_versions_body(error_code: int = 0) -> dict[str, Any]:
    return {
        "error_code": error_code,
        "api_keys": [
            {"api_key": key, "min_version": lo, "max_version": hi}
            for key, (lo, hi) in SUPPORTED.items()
        ],
    }


async def handle_api_versions(
    broker: KafkaBroker, conn: KafkaConnection, header: RequestHeader, req: dict[str, Any]
) -> dict[str, Any]:
    return api_versions_body()


async def handle_metadata(
    broker: KafkaBroker, conn: KafkaConnection, header: RequestHeader, req: dict[str, Any]
) -> dict[str, Any]:
    requested = req["topics"]
    if header.api_version == 0 and not requested:
        requested = None  # v0: an empty list means every topic
    topics = []
    if requested is None:
        names = sorted(broker.topics.topics)
    else:
        names = [t["name"] for t in requested]
    allow = req.get("allow_auto_topic_creation", True)
    for name in names:
        try:
            topic = await broker.topics.ensure(name, allow and requested is not None)
            if topic is None:
                raise KafkaUnknownTopicOrPartition(f"topic {name!r} does not exist")
        except KafkaError as exc:
            topics.append({"error_code": exc.code, "name": name, "partitions": []})
            continue
        topics.append(
            {
                "error_code": 0,
                "name": name,
                "partitions": [
                    {
                        "error_code": 0,
                        "partition_index": p,
                        "leader_id": broker.node_id,
                        "leader_epoch": LEADER_EPOCH,
                        "replica_nodes": [broker.node_id],
                        "isr_nodes": [broker.node_id],
                    }
                    for p in range(topic.partitions)
                ],
            }
        )
    return {
        "brokers": [{"node_id": broker.node_id, "host": conn.host, "port": conn.port}],
        "cluster_id": broker.cluster_id,
        "controller_id": broker.node_id,
        "topics": topics,
    }


async def handle_find_coordinator(
    broker: KafkaBroker, conn: KafkaConnection, header: RequestHeader, req: dict[str, Any]
) -> dict[str, Any]:
    if req.get("key_type", 0) != 0:
        # key_type 1 is a transactional id. Transactions are not offered; a fatal error
        # (not the retriable COORDINATOR_NOT_AVAILABLE) makes clients fail at once.
        return {
            "error_code": KafkaTransactionalIdAuthorizationFailed.code,
            "error_message": "transactions are not supported by this broker",
            "node_id": -1,
            "host": "",
            "port": -1,
        }
    return {
        "error_code": 0,
        "node_id": broker.node_id,
        "host": conn.host,
        "port": conn.port,
    }


async def handle_offset_for_leader_epoch(
    broker: KafkaBroker, conn: KafkaConnection, header: RequestHeader, req: dict[str, Any]
) -> dict[str, Any]:
    topics = []
    for t in req["topics"]:
        partitions = []
        for p in t["partitions"]:
            out = {
                "error_code": 0,
                "partition": p["partition"],
                "leader_epoch": -1,
                "end_offset": -1,
            }
            try:
                shard = broker.topics.shard(t["topic"], p["partition"])
                if p.get("current_leader_epoch", -1) > LEADER_EPOCH:
                    raise KafkaUnknownLeaderEpoch(f"epoch {p['current_leader_epoch']}")
                if p["leader_epoch"] == LEADER_EPOCH:
                    out.update(
                        leader_epoch=LEADER_EPOCH,
                        end_offset=await broker.engine.latest_offset(shard),
                    )
            except (KafkaError, StorageError) as exc:
                out["error_code"] = kafka_error_code(exc)
            partitions.append(out)
        topics.append({"topic": t["topic"], "partitions": partitions})
    return {"topics": topics}
