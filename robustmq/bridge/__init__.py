"""The in-process bridges between MQTT and Kafka (``[[bridge.mqtt_to_kafka]]`` and
``[[bridge.kafka_to_mqtt]]``): ``Bridges`` builds, starts and stops them for a node and
keeps their counters, and refuses a configuration whose records would loop.

The two directions live in ``mqtt_to_kafka.py`` and ``kafka_to_mqtt.py``, the record
batch encoding and decoding in ``records.py``. Entries are validated in
``robustmq.config``; nothing here opens a socket: the bridges use the node's own
``MqttBroker`` and ``KafkaBroker``.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from robustmq.bridge.kafka_to_mqtt import KafkaToMqttBridge
from robustmq.bridge.mqtt_to_kafka import MqttToKafkaBridge
from robustmq.config import BridgeConfig
from robustmq.errors import ConfigError

if TYPE_CHECKING:
    from robustmq.broker.kafka.server import KafkaBroker
    from robustmq.broker.mqtt.server import MqttBroker

__all__ = ["Bridges", "check_loops"]

# Stand-ins for template levels whose content is only known per record.
_ANY_LEVELS = object()  # a level holding ${key}: any text, "/" included
_ANY_LEVEL = object()  # a level holding ${partition}: one level


class Bridges:
    """Counters in ``stats``: ``mqtt_to_kafka_messages``, ``mqtt_to_kafka_errors``,
    ``kafka_to_mqtt_messages``, ``kafka_to_mqtt_errors``,
    ``kafka_to_mqtt_skipped_batches``."""

    def __init__(self, config: BridgeConfig, mqtt: MqttBroker, kafka: KafkaBroker) -> None:
        check_loops(config)
        self.stats: Counter[str] = Counter()
        self.mqtt_to_kafka = [
            MqttToKafkaBridge(route, mqtt, kafka, self.stats)
            for route in config.mqtt_to_kafka_routes()
        ]
        self.kafka_to_mqtt = [
            KafkaToMqttBridge(i, route, mqtt, kafka, self.stats)
            for i, route in enumerate(config.kafka_to_mqtt_routes())
        ]

    async def start(self) -> None:
        for outbound in self.mqtt_to_kafka:
            await outbound.start()
        for inbound in self.kafka_to_mqtt:
            inbound.start()

    async def stop(self) -> None:
        """Stops publishing to MQTT and commits, then appends what waits for Kafka."""
        for inbound in self.kafka_to_mqtt:
            await inbound.stop()
        for outbound in self.mqtt_to_kafka:
            await outbound.stop()


def check_loops(config: BridgeConfig) -> None:
    """Raises ``ConfigError`` when records published to MQTT by a kafka_to_mqtt entry can
    come back to its Kafka topic through mqtt_to_kafka entries, directly or through other
    Kafka topics and bridges: they would circulate forever. Placeholders count as any
    text, so this errs on the side of refusing."""
    outbound = config.mqtt_to_kafka_routes()
    # Kafka topic -> Kafka topics its records reach again, with the entries doing it.
    edges: list[tuple[int, int, str, str]] = []
    for i, inbound in enumerate(config.kafka_to_mqtt_routes()):
        pattern = _template_levels(inbound.mqtt_topic.replace("${topic}", inbound.topic))
        for j, route in enumerate(outbound):
            if _overlap(pattern, route.filter.split("/")):
                edges.append((i, j, inbound.topic, route.topic))
    for i, j, source, target in edges:
        reached, todo = {target}, [target]
        while todo:
            topic = todo.pop()
            for _, _, a, b in edges:
                if a == topic and b not in reached:
                    reached.add(b)
                    todo.append(b)
        if source in reached:
            via = "" if target == source else f" (and from there back to {source!r})"
            raise ConfigError(
                f"bridge.kafka_to_mqtt[{i}].mqtt_topic",
                config.kafka_to_mqtt[i]["mqtt_topic"],
                f"a topic that bridge.mqtt_to_kafka[{j}] (filter {outbound[j].filter!r}) does "
                f"not copy into Kafka topic {target!r}{via}: the records would loop",
            )


def _template_levels(template: str) -> list[object]:
    levels: list[object] = []
    for level in template.split("/"):
        if "${key}" in level:
            levels.append(_ANY_LEVELS)
        elif "${partition}" in level:
            levels.append(_ANY_LEVEL)
        else:
            levels.append(level)
    return levels


def _overlap(topic: list[object], topic_filter: list[str], first: bool = True) -> bool:
    """Whether some topic name the template levels can produce matches the filter."""
    if not topic_filter:
        return not topic
    head = topic_filter[0]
    # MQTT 5 §4.7.2: a filter starting with a wildcard does not match $ topics.
    if first and head in ("+", "#") and isinstance(topic[0], str) and topic[0].startswith("$"):
        return False
    if head == "#":
        return True
    if not topic:
        return False
    level = topic[0]
    if level is _ANY_LEVELS:  # takes this filter level, and perhaps the next ones too
        return _overlap(topic[1:], topic_filter[1:], False) or _overlap(
            topic, topic_filter[1:], False
        )
    if level is _ANY_LEVEL or head == "+" or head == level:
        return _overlap(topic[1:], topic_filter[1:], False)
    return False
