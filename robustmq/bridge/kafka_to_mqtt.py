"""Kafka → MQTT: one task per ``[[bridge.kafka_to_mqtt]]`` entry that reads the Kafka
topic's partitions from the storage engine and publishes each record to MQTT.

The task starts each partition at its group's committed offset (the earliest retained one
when none is committed or the committed one is no longer there), reads stored batches,
decodes their records (gzip always; snappy, lz4 and zstd when their Python packages
import, otherwise the batch is skipped, counted and logged naming the package), and
publishes each record with ``MqttBroker.publish_internal`` on the templated topic: payload
= value, MQTT 5 user properties = headers (a ``content-type`` header becomes the Content
Type property). When every partition is read to its end it waits for the broker's next
append to one of them. Positions are committed with the Kafka broker's committed offsets
(``KafkaBroker.offsets``: the Meta Service, or the engine with ``memory``) every
``COMMIT_INTERVAL`` seconds and at stop, so a restart resumes where it left off (records
published after the last commit are published again: at-least-once). The MQTT → Kafka
side lives in ``mqtt_to_kafka.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from robustmq._core import trie
from robustmq._core.kafka_codec import BatchHeader, parse_batches
from robustmq.bridge.records import CODECS, KafkaRecord, decode_records, missing_codec_package
from robustmq.broker.kafka.registry import shard_name
from robustmq.broker.mqtt.message import Message
from robustmq.config import KafkaToMqtt
from robustmq.errors import KafkaError, MetaError, MqttError, StorageError
from robustmq.storage.engine import CommittedOffset

if TYPE_CHECKING:
    from robustmq.broker.kafka.server import KafkaBroker
    from robustmq.broker.mqtt.server import MqttBroker

log = logging.getLogger(__name__)

COMMIT_INTERVAL = 1.0  # seconds between commits of the positions reached
IDLE_WAIT = 0.5  # seconds to wait for an append before reading the partitions again
READ_BYTES = 1 << 20  # stored bytes read from one partition at a time


class KafkaToMqttBridge:
    def __init__(
        self,
        index: int,
        route: KafkaToMqtt,
        mqtt: MqttBroker,
        kafka: KafkaBroker,
        stats: Counter[str],
    ) -> None:
        self.route = route
        self.sender = f"$bridge/kafka_to_mqtt/{index}"
        self.mqtt = mqtt
        self.kafka = kafka
        self.stats = stats
        self.positions: dict[int, int] = {}  # partition -> next offset to publish
        self._committed: dict[int, int] = {}
        self._last_commit = time.monotonic()
        self._missing_logged: set[int] = set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self._commit()

    async def _run(self) -> None:
        while True:
            try:
                published = await self._poll()
                if time.monotonic() - self._last_commit >= COMMIT_INTERVAL:
                    await self._commit()
            except (KafkaError, StorageError, MetaError) as exc:
                # E.g. the topic was deleted while being read: try again shortly.
                self.stats["kafka_to_mqtt_errors"] += 1
                log.warning("bridge %s: %s", self.route.topic, exc)
                await asyncio.sleep(IDLE_WAIT)
                continue
            if not published:
                if self.positions:
                    shards = [shard_name(self.route.topic, p) for p in self.positions]
                    await self.kafka.arrivals.wait(shards, IDLE_WAIT)
                else:  # the topic does not exist (yet)
                    await asyncio.sleep(IDLE_WAIT)

    async def _poll(self) -> int:
        """Reads one chunk from every partition with records to publish; how many records
        were published."""
        topic = self.kafka.topics.get(self.route.topic)
        if topic is None:
            self.positions.clear()
            return 0
        engine = self.kafka.engine
        published = 0
        for partition in range(topic.partitions):
            shard = self.kafka.topics.shard(topic.name, partition)
            earliest = await engine.earliest_offset(shard)
            latest = await engine.latest_offset(shard)
            position = self.positions.get(partition)
            if position is None:
                (committed,) = await self.kafka.offsets.fetch(
                    self.route.group, [(topic.name, partition)]
                )
                position = committed.offset if committed is not None else earliest
                self._committed[partition] = position
            if not earliest <= position <= latest:
                log.warning(
                    "bridge %s-%d: offset %d is outside [%d, %d]; resuming at %d",
                    topic.name,
                    partition,
                    position,
                    earliest,
                    latest,
                    earliest,
                )
                position = earliest
            self.positions[partition] = position
            if position == latest:
                continue
            for stored in await engine.read_batches(shard, position, READ_BYTES):
                try:
                    headers = parse_batches(stored.data)
                except KafkaError as exc:
                    self.stats["kafka_to_mqtt_errors"] += 1
                    log.warning(
                        "bridge %s-%d: stored batch at offset %d unreadable (%s); skipped",
                        topic.name,
                        partition,
                        stored.base_offset,
                        exc,
                    )
                    position = max(position, stored.base_offset + stored.record_count)
                    continue
                for h in headers:
                    position = max(position, self._publish_batch(partition, stored.data, h))
                    published += h.record_count
            self.positions[partition] = position
            await asyncio.sleep(0)  # let subscribers' writes go out between chunks
        return published

    def _publish_batch(self, partition: int, data: bytes, h: BatchHeader) -> int:
        """Publishes the records of one batch at or after the partition's position;
        returns the offset after the batch."""
        end = h.base_offset + h.last_offset_delta + 1
        position = self.positions[partition]
        if end <= position or h.is_control:
            return end
        missing = missing_codec_package(h.compression)
        if missing is not None:
            self.stats["kafka_to_mqtt_skipped_batches"] += 1
            if h.compression not in self._missing_logged:
                self._missing_logged.add(h.compression)
                log.warning(
                    "bridge %s: %s-compressed batches are skipped: the Python package %r "
                    "is not installed",
                    self.route.topic,
                    CODECS[h.compression][0],
                    missing,
                )
            return end
        try:
            records = decode_records(data[h.position : h.position + h.size], h)
        except Exception as exc:  # a codec's own errors for bad compressed data, too
            self.stats["kafka_to_mqtt_errors"] += 1
            log.warning(
                "bridge %s-%d: batch at offset %d not decoded (%s); skipped",
                self.route.topic,
                partition,
                h.base_offset,
                exc,
            )
            return end
        for record in records:
            if record.offset >= position:
                self._publish(partition, record)
        return end

    def _publish(self, partition: int, record: KafkaRecord) -> None:
        try:
            topic = self._mqtt_topic(partition, record.key)
            trie.validate_topic_name(topic, self.mqtt.config.max_topic_levels)
        except (UnicodeDecodeError, MqttError) as exc:
            self.stats["kafka_to_mqtt_errors"] += 1
            log.warning(
                "bridge %s-%d: record at offset %d has no valid MQTT topic (%s); skipped",
                self.route.topic,
                partition,
                record.offset,
                exc,
            )
            return
        properties: dict[str, Any] = {}
        user_properties = []
        for name, value in record.headers:
            text = value.decode("utf-8", "replace")
            if name == "content-type":
                properties["content_type"] = text
            else:
                user_properties.append((name, text))
        if user_properties:
            properties["user_property"] = user_properties
        self.mqtt.publish_internal(
            Message(
                topic,
                record.value or b"",
                self.route.qos,
                self.route.retain,
                properties,
                self.sender,
            )
        )
        self.stats["kafka_to_mqtt_messages"] += 1

    def _mqtt_topic(self, partition: int, key: bytes | None) -> str:
        template = self.route.mqtt_topic
        if "${" not in template:
            return template
        return (
            template.replace("${topic}", self.route.topic)
            .replace("${partition}", str(partition))
            .replace("${key}", (key or b"").decode())
        )

    async def _commit(self) -> None:
        """Commits the positions that moved since the last commit."""
        self._last_commit = time.monotonic()
        moved = {
            partition: position
            for partition, position in self.positions.items()
            if self._committed.get(partition) != position
        }
        if not moved:
            return
        topic = self.route.topic
        try:
            await self.kafka.offsets.commit(
                self.route.group,
                {(topic, p): CommittedOffset(position, "") for p, position in moved.items()},
            )
        except (KafkaError, StorageError, MetaError) as exc:
            self.stats["kafka_to_mqtt_errors"] += 1
            log.warning("bridge %s: commit failed: %s", topic, exc)
            return
        self._committed.update(moved)
