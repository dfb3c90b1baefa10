"""Prometheus metrics, built on scrape from the counters the hot path keeps.

The brokers count in plain integers (``MqttBroker.stats``, ``KafkaBroker.stats``, the
MQTT broker's ``counters``, see counters.py) and keep their gauges as the sizes of their
own structures; nothing here runs per message. ``NodeCollector`` turns them into
``robustmq_*`` metrics when ``/metrics`` is read, at a cost that grows with the number of
connections, sessions and subscriptions (see benchmarks/bench_metrics.py). ``METRICS`` lists every metric with its type, labels and
meaning: the collector takes its help text from there (so an undocumented metric fails
the first scrape) and docs/operations.md is generated from it
(``python -m robustmq.observability.metrics``). Labels are bounded (never a client id).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from robustmq._core.kafka_spec import APIS
from robustmq._core.mqtt_spec import (
    ACK_RUN,
    AUTH,
    CONNACK,
    DISCONNECT,
    PACKET_NAMES,
    PINGRESP,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBLISH_RUN,
    PUBREC,
    PUBREL,
    SUBACK,
    UNSUBACK,
)
from robustmq._core.topic_trie import SHARE_PREFIX
from robustmq.broker.mqtt.listeners import listener_of
from robustmq.observability.counters import DROP_REASONS
from robustmq.observability.latency import LatencyHistogram
from robustmq.storage.metered import OPS, MeteredEngine

if TYPE_CHECKING:
    from robustmq.broker.kafka.server import KafkaBroker
    from robustmq.broker.mqtt.server import MqttBroker
    from robustmq.meta.service import MetaServer
    from robustmq.node import Node


class MetricInfo(NamedTuple):
    kind: str  # counter, gauge or histogram
    labels: tuple[str, ...]
    help: str


# MQTT broker stats key -> counter name (without _total).
_MQTT_COUNTERS = {
    "connections_total": "robustmq_mqtt_connections_accepted",
    "messages_received": "robustmq_mqtt_messages_received",
    "messages_sent": "robustmq_mqtt_messages_sent",
    "messages_dropped": "robustmq_mqtt_messages_dropped",
    "cluster_forwarded_out": "robustmq_mqtt_cluster_forwarded_out",
    "cluster_forwarded_in": "robustmq_mqtt_cluster_forwarded_in",
    "cluster_forward_dropped": "robustmq_mqtt_cluster_forward_dropped",
    "bytes_received": "robustmq_mqtt_received_bytes",
    "bytes_sent": "robustmq_mqtt_sent_bytes",
    "protocol_errors": "robustmq_mqtt_protocol_errors",
    "auth_failures": "robustmq_mqtt_auth_failures",
    "auth_successes": "robustmq_mqtt_auth_successes",
    "acl_denied_publish": "robustmq_mqtt_acl_denied_publish",
    "acl_denied_subscribe": "robustmq_mqtt_acl_denied_subscribe",
    "connect_banned": "robustmq_mqtt_connect_banned",
    "flapping_bans": "robustmq_mqtt_flapping_bans",
    "connect_ip_limit": "robustmq_mqtt_connect_ip_limit",
    "connect_rate_exceeded": "robustmq_mqtt_connect_rate_exceeded",
    "publish_quota_exceeded": "robustmq_mqtt_publish_quota_exceeded",
}
# Kafka broker stats key -> counter name (without _total).
_KAFKA_COUNTERS = {
    "connections_total": "robustmq_kafka_connections_accepted",
    "protocol_errors": "robustmq_kafka_protocol_errors",
    "internal_errors": "robustmq_kafka_internal_errors",
    "idle_closed": "robustmq_kafka_idle_closed",
    "group_rebalances": "robustmq_kafka_group_rebalances",
}

# Packet types the broker sends (MQTT 5.0 §2.1.2, "Server to Client").
_SENT_BY_BROKER = (
    CONNACK,
    PUBLISH,
    PUBACK,
    PUBREC,
    PUBREL,
    PUBCOMP,
    SUBACK,
    UNSUBACK,
    PINGRESP,
    DISCONNECT,
    AUTH,
)

C, G, H = "counter", "gauge", "histogram"
METRICS: dict[str, MetricInfo] = {
    "robustmq_mqtt_connections_accepted": MetricInfo(
        C, (), "TCP/TLS/WebSocket connections accepted by the MQTT listeners"
    ),
    "robustmq_mqtt_messages_received": MetricInfo(C, (), "PUBLISH packets received from clients"),
    "robustmq_mqtt_messages_sent": MetricInfo(C, (), "PUBLISH packets sent to clients"),
    "robustmq_mqtt_cluster_forwarded_out": MetricInfo(
        C, (), "messages forwarded to other nodes of the cluster (one per node)"
    ),
    "robustmq_mqtt_cluster_forwarded_in": MetricInfo(
        C, (), "messages other nodes of the cluster forwarded to this one"
    ),
    "robustmq_mqtt_cluster_forward_dropped": MetricInfo(
        C, (), "messages for another node dropped: its queue was full or its address unknown"
    ),
    "robustmq_mqtt_messages_dropped": MetricInfo(
        C, (), "messages not delivered to a subscriber, all reasons (see _by_reason)"
    ),
    "robustmq_mqtt_messages_received_by_qos": MetricInfo(
        C, ("qos",), "PUBLISH packets received from clients and routed, by their QoS"
    ),
    "robustmq_mqtt_messages_sent_by_qos": MetricInfo(
        C, ("qos",), "PUBLISH packets sent to clients, by the QoS they were sent with"
    ),
    "robustmq_mqtt_messages_dropped_by_qos": MetricInfo(
        C, ("qos",), "messages not delivered to a subscriber, by the QoS of the delivery"
    ),
    "robustmq_mqtt_messages_dropped_by_reason": MetricInfo(
        C,
        ("reason",),
        "messages not delivered to a subscriber, by reason: queue_full (the session's "
        "queue at max_queued_messages), packet_too_large (over the client's Maximum Packet "
        "Size), slow_client (QoS 0 to a client not reading past backpressure_timeout), "
        "offline (QoS 0 to a session without a connection), expired (Message Expiry "
        "Interval reached while queued)",
    ),
    "robustmq_mqtt_packets_received": MetricInfo(
        C,
        ("packet_type",),
        "MQTT control packets received, by type (a PUBLISH or acknowledgement that arrived "
        "in a run counts once per packet)",
    ),
    "robustmq_mqtt_packets_sent": MetricInfo(
        C,
        ("packet_type",),
        "MQTT control packets sent, by type (PUBLISH: the messages sent)",
    ),
    "robustmq_mqtt_received_bytes": MetricInfo(C, (), "bytes received from MQTT clients"),
    "robustmq_mqtt_sent_bytes": MetricInfo(C, (), "bytes sent to MQTT clients"),
    "robustmq_mqtt_protocol_errors": MetricInfo(
        C, (), "connections ended for malformed packets or protocol errors"
    ),
    "robustmq_mqtt_auth_failures": MetricInfo(
        C, (), "CONNECTs refused for bad or missing credentials"
    ),
    "robustmq_mqtt_auth_successes": MetricInfo(
        C,
        (),
        "clients authenticated: CONNECTs an authenticator (password file, HTTP, JWT), a "
        "client certificate or an enhanced-authentication exchange accepted, and MQTT 5 "
        "re-authentications; not counted when no authentication is configured",
    ),
    "robustmq_mqtt_acl_denied_publish": MetricInfo(C, (), "PUBLISHes denied by the ACL"),
    "robustmq_mqtt_acl_denied_subscribe": MetricInfo(C, (), "subscriptions denied by the ACL"),
    "robustmq_mqtt_connect_banned": MetricInfo(C, (), "CONNECTs refused by the blacklist"),
    "robustmq_mqtt_flapping_bans": MetricInfo(C, (), "client ids banned for flapping"),
    "robustmq_mqtt_connect_ip_limit": MetricInfo(
        C, (), "CONNECTs refused by the per-IP connection limit"
    ),
    "robustmq_mqtt_connect_rate_exceeded": MetricInfo(
        C, (), "CONNECTs refused by a listener's connect rate limit"
    ),
    "robustmq_mqtt_publish_quota_exceeded": MetricInfo(
        C, (), "PUBLISHes refused by a client's message or byte quota"
    ),
    "robustmq_mqtt_retained_rejected": MetricInfo(
        C, (), "retained messages not stored: count or size limit reached"
    ),
    "robustmq_mqtt_handler_seconds": MetricInfo(
        H,
        ("packet_type",),
        "time to handle a packet from a connected client, by packet type (PUBLISH_RUN: a "
        "run of plain QoS 0 or 1 PUBLISHes on one topic handled at once; ACK_RUN: a run of "
        "plain acknowledgements of one type); sampled: one handler "
        "call in 64 of each type is timed, so _count counts samples",
    ),
    "robustmq_mqtt_connections": MetricInfo(G, (), "connected MQTT clients"),
    "robustmq_mqtt_connections_by_protocol": MetricInfo(
        G, ("protocol_version",), "connected MQTT clients by protocol version (3, 4 = 3.1.1, 5)"
    ),
    "robustmq_mqtt_connections_by_listener": MetricInfo(
        G, ("listener",), "connected MQTT clients by listener (tcp, tls, ws, wss)"
    ),
    "robustmq_mqtt_sessions": MetricInfo(G, (), "sessions, online and offline"),
    "robustmq_mqtt_sessions_online": MetricInfo(G, (), "sessions with a connected client"),
    "robustmq_mqtt_sessions_offline": MetricInfo(
        G, (), "sessions kept for a disconnected client (session expiry not reached)"
    ),
    "robustmq_mqtt_sessions_persistent": MetricInfo(
        G,
        (),
        "sessions kept in the session store (a session expiry interval above 0), online "
        "and offline",
    ),
    "robustmq_mqtt_subscriptions": MetricInfo(G, (), "subscriptions"),
    "robustmq_mqtt_shared_subscriptions": MetricInfo(
        G, (), "shared subscription groups: distinct $share/<group>/<filter>"
    ),
    "robustmq_mqtt_shared_subscription_members": MetricInfo(
        G, (), "members of shared subscription groups, all groups together"
    ),
    "robustmq_mqtt_retained_messages": MetricInfo(
        G, (), "retained messages (including the broker's $SYS ones)"
    ),
    "robustmq_mqtt_delayed_messages": MetricInfo(G, (), "pending $delayed publishes"),
    "robustmq_mqtt_queued_messages": MetricInfo(
        G, (), "QoS 1/2 messages queued in sessions, waiting for their client"
    ),
    "robustmq_mqtt_inflight_messages": MetricInfo(
        G, (), "QoS 1/2 messages sent to clients and not yet acknowledged"
    ),
    "robustmq_kafka_connections_accepted": MetricInfo(C, (), "Kafka client connections accepted"),
    "robustmq_kafka_protocol_errors": MetricInfo(
        C, (), "Kafka connections closed for a request that could not be read or answered"
    ),
    "robustmq_kafka_internal_errors": MetricInfo(
        C, (), "Kafka connections closed because a request handler failed"
    ),
    "robustmq_kafka_idle_closed": MetricInfo(
        C, (), "Kafka connections closed after connections.max.idle without traffic"
    ),
    "robustmq_kafka_requests": MetricInfo(
        C,
        ("api", "error_code"),
        "Kafka requests answered, by API name and the response's top-level error code "
        "(0 when the response has none; per-partition errors are not counted here)",
    ),
    "robustmq_kafka_request_seconds": MetricInfo(
        H,
        ("api",),
        "time from a decoded Kafka request to its response, by API name (includes a "
        "Fetch's or JoinGroup's wait); every request is timed",
    ),
    "robustmq_kafka_group_rebalances": MetricInfo(
        C,
        (),
        "consumer group rebalances completed: a group's generation advanced (members "
        "joined or left, or the group emptied)",
    ),
    "robustmq_kafka_connections": MetricInfo(G, (), "connected Kafka clients"),
    "robustmq_kafka_topics": MetricInfo(G, (), "Kafka topics"),
    "robustmq_kafka_partitions": MetricInfo(G, (), "Kafka partitions, all topics"),
    "robustmq_kafka_groups": MetricInfo(G, (), "consumer groups known to the coordinator"),
    "robustmq_storage_operations": MetricInfo(
        C,
        ("engine", "op"),
        "storage engine calls: op append (records or one Kafka batch) or read",
    ),
    "robustmq_storage_bytes": MetricInfo(
        C,
        ("engine", "op"),
        "bytes appended to or read from the storage engine (keys and values, or batches)",
    ),
    "robustmq_storage_operation_seconds": MetricInfo(
        H,
        ("engine", "op"),
        "storage engine call time by op; sampled: one call in 16 of each op is timed",
    ),
    "robustmq_bridge_messages": MetricInfo(
        C, ("direction",), "messages a bridge copied (mqtt_to_kafka, kafka_to_mqtt)"
    ),
    "robustmq_bridge_errors": MetricInfo(
        C, ("direction",), "messages a bridge could not copy (logged)"
    ),
    "robustmq_bridge_skipped_batches": MetricInfo(
        C, (), "Kafka batches kafka_to_mqtt skipped (a compression codec's package missing)"
    ),
    "robustmq_meta_proposals": MetricInfo(
        C, ("group",), "commands this node proposed to a Meta Service Raft group as its leader"
    ),
    "robustmq_meta_commit_seconds": MetricInfo(
        H,
        ("group",),
        "time from a proposal at this node to its applied result, by Raft group; every "
        "proposal is timed",
    ),
    "robustmq_meta_leader_changes": MetricInfo(
        C, ("group",), "times this node saw a new leader of a Raft group (itself included)"
    ),
    "robustmq_meta_leader": MetricInfo(G, ("group",), "1 when this node leads the Raft group"),
    "robustmq_meta_term": MetricInfo(G, ("group",), "the Raft group's term on this node"),
    "robustmq_meta_commit_index": MetricInfo(
        G, ("group",), "the Raft group's commit index on this node"
    ),
    "robustmq_meta_applied_index": MetricInfo(
        G, ("group",), "the Raft group's last index applied to its state machine on this node"
    ),
    "robustmq_meta_voters": MetricInfo(
        G, ("group",), "voting members of the Raft group, as this node knows them"
    ),
    "robustmq_meta_grpc_requests": MetricInfo(
        C, ("method",), "Meta Service gRPC requests answered by this node, by method"
    ),
    "robustmq_meta_grpc_seconds": MetricInfo(
        H,
        ("method",),
        "Meta Service gRPC request time by method (Watch streams are counted, not timed)",
    ),
}
PROCESS_METRICS = {
    "robustmq_process_cpu_seconds": "user and system CPU time (counter)",
    "robustmq_process_resident_memory_bytes": "resident memory",
    "robustmq_process_virtual_memory_bytes": "virtual memory",
    "robustmq_process_open_fds": "open file descriptors",
    "robustmq_process_max_fds": "open-files limit",
    "robustmq_process_start_time_seconds": "process start, seconds since the epoch",
}


def _metric(name: str, value: float = 0.0) -> Any:
    info = METRICS[name]  # every exported metric is documented
    if info.kind == H:
        return HistogramMetricFamily(name, info.help, labels=info.labels)
    family = CounterMetricFamily if info.kind == C else GaugeMetricFamily
    if info.labels:
        return family(name, info.help, labels=info.labels)
    return family(name, info.help, value=value)


class NodeCollector(Collector):
    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        if self.node.mqtt is not None:
            yield from _mqtt_metrics(self.node.mqtt)
        if self.node.kafka is not None:
            yield from _kafka_metrics(self.node.kafka)
        if self.node.bridges is not None:
            yield from _bridge_metrics(self.node.bridges.stats)
        if isinstance(self.node.storage, MeteredEngine):
            yield from _storage_metrics(self.node.storage)
        if self.node.meta is not None:
            yield from _meta_metrics(self.node.meta)


def _mqtt_metrics(b: MqttBroker) -> Iterator[Metric]:
    b.lane_context.fold()  # the QoS 0 lane's counts, into stats and counters
    for key, name in _MQTT_COUNTERS.items():
        yield _metric(name, b.stats[key])
    yield _metric("robustmq_mqtt_retained_rejected", b.router.retained_rejected)
    yield from _mqtt_counters(b)
    handler = _metric("robustmq_mqtt_handler_seconds")
    for kind, name in (*PACKET_NAMES.items(), (PUBLISH_RUN, "PUBLISH_RUN"), (ACK_RUN, "ACK_RUN")):
        _add_histogram(handler, [name], b.handler_latency, kind)
    yield handler
    versions: Counter[int] = Counter(c.version for c in b.connections if c.connected)
    yield _metric("robustmq_mqtt_connections", sum(versions.values()))
    by_version = _metric("robustmq_mqtt_connections_by_protocol")
    for version in (3, 4, 5):
        by_version.add_metric([str(version)], versions[version])
    yield by_version
    listeners: Counter[str] = Counter(
        listener_of(c.transport) for c in b.connections if c.connected and c.transport
    )
    by_listener = _metric("robustmq_mqtt_connections_by_listener")
    for listener in ("tcp", "tls", "ws", "wss"):
        by_listener.add_metric([listener], listeners[listener])
    yield by_listener
    online = queued = inflight = persistent = 0
    for session in b.sessions.values():
        if session.connection is not None:
            online += 1
        if session.queue:
            queued += len(session.queue)
        inflight += len(session.inflight)
        persistent += session.persisted
    yield _metric("robustmq_mqtt_sessions", len(b.sessions))
    yield _metric("robustmq_mqtt_sessions_online", online)
    yield _metric("robustmq_mqtt_sessions_offline", len(b.sessions) - online)
    yield _metric("robustmq_mqtt_sessions_persistent", persistent)
    yield _metric("robustmq_mqtt_subscriptions", len(b.router.subscriptions))
    groups: set[str] = set()
    members = 0
    for topic_filter, _, _ in b.router.subscriptions.subscriptions():
        if topic_filter.startswith(SHARE_PREFIX):
            groups.add(topic_filter)
            members += 1
    yield _metric("robustmq_mqtt_shared_subscriptions", len(groups))
    yield _metric("robustmq_mqtt_shared_subscription_members", members)
    yield _metric("robustmq_mqtt_retained_messages", len(b.router.retained))
    yield _metric("robustmq_mqtt_delayed_messages", len(b.delayed))
    yield _metric("robustmq_mqtt_queued_messages", queued)
    yield _metric("robustmq_mqtt_inflight_messages", inflight)


def _mqtt_counters(b: MqttBroker) -> Iterator[Metric]:
    """The labelled counters the MQTT hot path keeps as integer lists (counters.py)."""
    counters, looped = b.counters, b.handler_latency
    received = _metric("robustmq_mqtt_packets_received")
    for kind, name in PACKET_NAMES.items():
        received.add_metric([name], counters.packets_received_of(kind, looped.calls(kind)))
    yield received
    sent = _metric("robustmq_mqtt_packets_sent")
    for kind in _SENT_BY_BROKER:
        sent.add_metric([PACKET_NAMES[kind]], counters.packets_sent_of(kind))
    yield sent
    for name, by_qos in (
        ("robustmq_mqtt_messages_received_by_qos", counters.messages_received_by_qos()),
        ("robustmq_mqtt_messages_sent_by_qos", counters.messages_sent_by_qos()),
        ("robustmq_mqtt_messages_dropped_by_qos", counters.messages_dropped_by_qos()),
    ):
        family = _metric(name)
        for qos, count in enumerate(by_qos):
            family.add_metric([str(qos)], count)
        yield family
    dropped = _metric("robustmq_mqtt_messages_dropped_by_reason")
    for reason, by_qos in zip(DROP_REASONS, counters.dropped, strict=True):
        dropped.add_metric([reason], sum(by_qos))
    yield dropped


def _kafka_metrics(k: KafkaBroker) -> Iterator[Metric]:
    for key, name in _KAFKA_COUNTERS.items():
        yield _metric(name, k.stats[key])
    requests = _metric("robustmq_kafka_requests")
    for key, count in list(k.stats.items()):
        if key.startswith("api "):  # "api <key> <error code>", counted in dispatch
            _, api_key, error_code = key.split(" ")
            api = APIS.get(int(api_key))
            requests.add_metric([api.name if api else api_key, error_code], count)
    yield requests
    latency = _metric("robustmq_kafka_request_seconds")
    for number, api in APIS.items():
        _add_histogram(latency, [api.name], k.request_latency, number)
    yield latency
    yield _metric("robustmq_kafka_connections", len(k.connections))
    yield _metric("robustmq_kafka_topics", len(k.topics.topics))
    yield _metric("robustmq_kafka_partitions", sum(t.partitions for t in k.topics.topics.values()))
    yield _metric("robustmq_kafka_groups", len(k.groups.groups))


def _bridge_metrics(stats: Counter[str]) -> Iterator[Metric]:
    messages = _metric("robustmq_bridge_messages")
    errors = _metric("robustmq_bridge_errors")
    for direction in ("mqtt_to_kafka", "kafka_to_mqtt"):
        messages.add_metric([direction], stats[f"{direction}_messages"])
        errors.add_metric([direction], stats[f"{direction}_errors"])
    yield messages
    yield errors
    yield _metric("robustmq_bridge_skipped_batches", stats["kafka_to_mqtt_skipped_batches"])


def _meta_metrics(meta: MetaServer) -> Iterator[Metric]:
    from robustmq.meta.service import METHODS  # grpc is imported only with the meta role

    families = {
        name: _metric(f"robustmq_meta_{name}")
        for name in (
            "proposals",
            "commit_seconds",
            "leader_changes",
            "leader",
            "term",
            "commit_index",
            "applied_index",
            "voters",
        )
    }
    for status in meta.host.status():
        name = status["group"]
        stats = meta.host.groups[name].stats
        families["proposals"].add_metric([name], stats.proposals)
        families["commit_seconds"].add_metric([name], *stats.commit_latency.cumulative(0))
        families["leader_changes"].add_metric([name], stats.leader_changes)
        families["leader"].add_metric([name], int(status["role"] == "leader"))
        families["term"].add_metric([name], status["term"])
        families["commit_index"].add_metric([name], status["commit"])
        families["applied_index"].add_metric([name], status["applied"])
        families["voters"].add_metric([name], len(status["voters"]))
    yield from families.values()
    requests = _metric("robustmq_meta_grpc_requests")
    latency = _metric("robustmq_meta_grpc_seconds")
    for k, method in enumerate(METHODS):
        requests.add_metric([method], meta.stats.requests[k])
        _add_histogram(latency, [method], meta.stats.latency, k)
    yield requests
    yield latency


def _storage_metrics(engine: MeteredEngine) -> Iterator[Metric]:
    calls = _metric("robustmq_storage_operations")
    size = _metric("robustmq_storage_bytes")
    latency = _metric("robustmq_storage_operation_seconds")
    for op, name in enumerate(OPS):
        calls.add_metric([engine.name, name], engine.calls[op])
        size.add_metric([engine.name, name], engine.bytes[op])
        latency.add_metric([engine.name, name], *engine.latency.cumulative(op))
    yield calls
    yield size
    yield latency


def _add_histogram(
    family: HistogramMetricFamily, labels: list[str], latency: LatencyHistogram, kind: int
) -> None:
    """One series of ``family`` from ``latency``; a kind never timed is left out, so the
    series that exist are the packet types and APIs really in use."""
    if latency.sampled(kind):
        family.add_metric(labels, *latency.cumulative(kind))


def registry_for(node: Node | None) -> CollectorRegistry:
    """A registry with the process metrics and, when there is a node, its brokers'."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(namespace="robustmq", registry=registry)
    if node is not None:
        registry.register(NodeCollector(node))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def markdown() -> str:
    """The metrics table of docs/operations.md."""
    rows = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for name, info in METRICS.items():
        shown = f"{name}_total" if info.kind == C else name
        labels = ", ".join(f"`{label}`" for label in info.labels) or "-"
        rows.append(f"| `{shown}` | {info.kind} | {labels} | {info.help} |")
    for name, meaning in PROCESS_METRICS.items():
        shown = f"{name}_total" if name.endswith("cpu_seconds") else name
        kind = C if name.endswith("cpu_seconds") else G
        rows.append(f"| `{shown}` | {kind} | - | {meaning} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown())
