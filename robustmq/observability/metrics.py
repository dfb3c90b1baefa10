"""Prometheus metrics, built on scrape from the counters the hot path keeps.

The broker counts in plain integers (``MqttBroker.stats``) and keeps its gauges as the
sizes of its own structures; nothing here runs per message. ``BrokerCollector`` turns
them into ``robustmq_*`` metrics when ``/metrics`` is read. Labels are bounded (never a
client id).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from robustmq.broker.mqtt.server import MqttBroker

# stats key -> (metric name without _total, help)
_COUNTERS = {
    "connections_total": (
        "robustmq_mqtt_connections_accepted",
        "TCP/TLS/WebSocket connections accepted",
    ),
    "messages_received": (
        "robustmq_mqtt_messages_received",
        "PUBLISH packets received from clients",
    ),
    "messages_sent": ("robustmq_mqtt_messages_sent", "PUBLISH packets sent to clients"),
    "messages_dropped": (
        "robustmq_mqtt_messages_dropped",
        "messages dropped (slow subscriber, size limit)",
    ),
    "bytes_received": ("robustmq_mqtt_received_bytes", "bytes received from MQTT clients"),
    "bytes_sent": ("robustmq_mqtt_sent_bytes", "bytes sent to MQTT clients"),
    "protocol_errors": (
        "robustmq_mqtt_protocol_errors",
        "connections ended for malformed packets or protocol errors",
    ),
    "auth_failures": (
        "robustmq_mqtt_auth_failures",
        "CONNECTs refused for bad or missing credentials",
    ),
    "acl_denied_publish": ("robustmq_mqtt_acl_denied_publish", "PUBLISHes denied by the ACL"),
    "acl_denied_subscribe": (
        "robustmq_mqtt_acl_denied_subscribe",
        "subscriptions denied by the ACL",
    ),
    "connect_banned": ("robustmq_mqtt_connect_banned", "CONNECTs refused by the blacklist"),
    "flapping_bans": ("robustmq_mqtt_flapping_bans", "client ids banned for flapping"),
    "connect_ip_limit": (
        "robustmq_mqtt_connect_ip_limit",
        "CONNECTs refused by the per-IP connection limit",
    ),
    "connect_rate_exceeded": (
        "robustmq_mqtt_connect_rate_exceeded",
        "CONNECTs refused by a listener's connect rate limit",
    ),
    "publish_quota_exceeded": (
        "robustmq_mqtt_publish_quota_exceeded",
        "PUBLISHes refused by a client's message or byte quota",
    ),
}


class BrokerCollector(Collector):
    def __init__(self, broker: MqttBroker) -> None:
        self.broker = broker

    def collect(self) -> Iterator[Metric]:
        b = self.broker
        for key, (name, doc) in _COUNTERS.items():
            yield CounterMetricFamily(name, doc, value=b.stats[key])
        yield CounterMetricFamily(
            "robustmq_mqtt_retained_rejected",
            "retained messages not stored: count or size limit reached",
            value=b.router.retained_rejected,
        )
        connected = sum(1 for c in b.connections if c.connected)
        gauges = {
            "robustmq_mqtt_connections": ("connected MQTT clients", connected),
            "robustmq_mqtt_sessions": ("sessions, online and offline", len(b.sessions)),
            "robustmq_mqtt_subscriptions": ("subscriptions", len(b.router.subscriptions)),
            "robustmq_mqtt_retained_messages": ("retained messages", len(b.router.retained)),
            "robustmq_mqtt_delayed_messages": ("pending $delayed publishes", len(b.delayed)),
        }
        for name, (doc, value) in gauges.items():
            yield GaugeMetricFamily(name, doc, value=value)


def registry_for(broker: MqttBroker | None) -> CollectorRegistry:
    """A registry with the process metrics and, when there is one, the broker's."""
    registry = CollectorRegistry(auto_describe=False)
    ProcessCollector(namespace="robustmq", registry=registry)
    if broker is not None:
        registry.register(BrokerCollector(broker))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
