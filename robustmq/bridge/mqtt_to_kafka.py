"""MQTT → Kafka: an internal subscriber that turns matching MQTT publishes into Kafka
records and appends them, batched, to the Kafka topic's partitions.

``MqttToKafkaBridge`` is an internal subscriber of the MQTT router
(``Router.subscribe_internal``): the router hands it decoded messages, a forwarding-lane
run of plain QoS 0 publishes as one list, without a session, a connection or packet
ids. Each message becomes a record: key = MQTT topic (UTF-8), value = payload, headers = MQTT 5
user properties (and ``content-type`` from the Content Type property), timestamp = now.
Records wait at most ``LINGER`` seconds or ``MAX_BATCH_BYTES`` and are appended as one
uncompressed record batch v2 per partition through the storage engine, waking the
broker's waiting fetches as a Produce does. At most ``MAX_PENDING_BYTES`` wait: when
appends fall that far behind the publishers, further messages are dropped, counted and
logged rather than held without bound. Partitions are chosen like the Java client's
default partitioner (murmur2 of the key), so the messages of one MQTT topic keep their
order in one partition. What happens on the Kafka → MQTT side lives in
``kafka_to_mqtt.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import TYPE_CHECKING

from robustmq.bridge.records import Headers, OutRecord, encode_batch, partition_for
from robustmq.broker.auth.ratelog import RateLimitedLog
from robustmq.config import MqttToKafka
from robustmq.errors import KafkaError, KafkaTopicAlreadyExists, StorageError
from robustmq.storage.engine import wall_clock_ms

if TYPE_CHECKING:
    from robustmq.broker.kafka.server import KafkaBroker
    from robustmq.broker.mqtt.message import Message
    from robustmq.broker.mqtt.server import MqttBroker

log = logging.getLogger(__name__)
drop_log = RateLimitedLog(log)

LINGER = 0.005  # seconds a record may wait for others to share its batch
MAX_BATCH_BYTES = 1 << 20  # a batch holding this much is appended without waiting
MAX_PENDING_BYTES = 64 << 20  # waiting beyond this, messages are dropped (and counted)


class MqttToKafkaBridge:
    def __init__(
        self,
        route: MqttToKafka,
        mqtt: MqttBroker,
        kafka: KafkaBroker,
        stats: Counter[str],
    ) -> None:
        self.route = route
        self.mqtt = mqtt
        self.kafka = kafka
        self.stats = stats
        self._pending: list[OutRecord] = []
        self._pending_bytes = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._ensure_topic()
        self.mqtt.router.subscribe_internal(self, self.route.filter)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Unsubscribes, then appends what is still waiting."""
        self.mqtt.router.unsubscribe_internal(self, self.route.filter)
        # Not cancelled: an append cut short would lose the records it had taken.
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    def deliver_messages(self, messages: list[Message]) -> None:
        """``InternalSubscriber``: queue the messages as records for the next append."""
        now = wall_clock_ms()
        pending = self._pending
        size = self._pending_bytes
        key = b""
        topic = None
        for i, message in enumerate(messages):
            if size >= MAX_PENDING_BYTES:
                self._pending_bytes = size
                self._drop(len(messages) - i)
                break
            if message.topic != topic:  # a run shares one topic: encode its key once
                topic = message.topic
                key = topic.encode()
            headers: Headers = []
            props = message.properties
            if props:
                for name, value in props.get("user_property", ()):
                    headers.append((name, value.encode()))
                content_type = props.get("content_type")
                if content_type is not None:
                    headers.append(("content-type", content_type.encode()))
            pending.append((key, message.payload, headers, now))
            size += len(key) + len(message.payload)
        self._pending_bytes = size
        self._wake.set()

    def _drop(self, count: int) -> None:
        self.stats["mqtt_to_kafka_errors"] += count
        drop_log.log(
            logging.WARNING,
            "bridge %s: %d messages dropped: %d bytes already wait for Kafka topic %r"
            " (appends are behind the publishers)",
            self.route.filter,
            count,
            self._pending_bytes,
            self.route.topic,
        )

    async def _ensure_topic(self) -> int:
        """The Kafka topic's partition count, creating it (``kafka.default_partitions``)
        when it does not exist, whatever ``kafka.auto_create_topics`` says."""
        topics = self.kafka.topics
        topic = topics.get(self.route.topic)
        if topic is None:
            try:
                topic = await topics.create(
                    self.route.topic, self.kafka.config.default_partitions, {}
                )
                log.info("bridge: created Kafka topic %r", self.route.topic)
            except KafkaTopicAlreadyExists:
                topic = topics.get(self.route.topic)
                assert topic is not None
        return topic.partitions

    async def _run(self) -> None:
        while not self._closing:
            await self._wake.wait()
            if self._pending_bytes < MAX_BATCH_BYTES and not self._closing:
                await asyncio.sleep(LINGER)
            self._wake.clear()
            await self._append_pending()

    async def _append_pending(self) -> None:
        while self._pending:
            records, self._pending = self._pending, []
            self._pending_bytes = 0
            try:
                await self._append(records)
            except (KafkaError, StorageError) as exc:
                self.stats["mqtt_to_kafka_errors"] += len(records)
                log.warning(
                    "bridge %s: %d messages not appended to Kafka topic %r: %s",
                    self.route.filter,
                    len(records),
                    self.route.topic,
                    exc,
                )

    async def _append(self, records: list[OutRecord]) -> None:
        """Appends ``records`` as one batch per partition, the way a Produce does (stats,
        then waking the fetches waiting on the partition)."""
        partitions = await self._ensure_topic()
        by_partition: dict[int, list[OutRecord]] = {}
        for record in records:
            key = record[0]
            assert key is not None
            by_partition.setdefault(partition_for(key, partitions), []).append(record)
        kafka = self.kafka
        for partition, records_of_partition in by_partition.items():
            shard = kafka.topics.shard(self.route.topic, partition)
            for part in _chunks(records_of_partition):
                await self._append_batch(shard, part)

    async def _append_batch(self, shard: str, part: list[OutRecord]) -> None:
        kafka = self.kafka
        batch, max_timestamp = encode_batch(part)
        # A batch without a producer id: nothing for the idempotence bookkeeping.
        await kafka.engine.append_batch(
            shard, batch, count=len(part), max_timestamp_ms=max_timestamp, base_offset_at=0
        )
        kafka.stats["records_in"] += len(part)
        kafka.stats["bytes_in"] += len(batch)
        kafka.arrivals.notify(shard)
        self.stats["mqtt_to_kafka_messages"] += len(part)


def _chunks(
    records: list[OutRecord],
) -> list[list[OutRecord]]:
    """``records`` cut into runs of about ``MAX_BATCH_BYTES`` (one batch each), so a burst
    does not become one batch larger than consumers fetch."""
    out: list[list[OutRecord]] = [[]]
    size = 0
    for record in records:
        length = len(record[0] or b"") + len(record[1])
        if out[-1] and size + length > MAX_BATCH_BYTES:
            out.append([])
            size = 0
        out[-1].append(record)
        size += length
    return out
