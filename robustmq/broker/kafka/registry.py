"""Kafka topics as shards of the storage engine: which topics exist, how many partitions
they have and their configs, and the shard name of each partition.

The registry holds every topic in memory and writes each change through a ``TopicStore``
(``topics_store.py``: the Meta Service's ``cluster`` group, or the engine's key-value
space), one store call per create, alter, partition growth or delete; a change the store
refuses leaves the topic, its shards and the registry as they were. Partition ``p`` of
topic ``t`` is the shard ``kafka/t/p``. The records themselves are read and written by
the handlers through the engine interface.
A topic's configs decide its partitions' shard config (retention, segment size): when they
change, and at start (where a topic without its own value follows the ``[kafka]`` default
of the moment, as in Kafka), every partition's shard config is brought in line, and a
stored partition without a shard gets an empty one.
"""

from __future__ import annotations

import asyncio
import logging
import re

from robustmq.broker.kafka import configs as topic_configs
from robustmq.broker.kafka.topics_store import EngineTopics, Topic, TopicStore
from robustmq.config import MAX_PARTITIONS, KafkaConfig
from robustmq.errors import (
    KafkaError,
    KafkaInvalidPartitions,
    KafkaInvalidTopic,
    KafkaTopicAlreadyExists,
    KafkaUnknownTopicOrPartition,
    ShardNotFound,
    StorageError,
)
from robustmq.storage import ShardConfig, StorageEngine

log = logging.getLogger(__name__)

# Kafka's Topic.validate: at most 249 of [a-zA-Z0-9._-], not "." or "..".
_LEGAL = re.compile(r"[a-zA-Z0-9._-]{1,249}")
# Topic configs that map onto the shard config; the others are kept but have no effect.
_SHARD_KEYS = {
    "retention.ms": "retention_ms",
    "retention.bytes": "retention_bytes",
    "segment.bytes": "segment_bytes",
    "segment.ms": "segment_ms",
}


def shard_name(topic: str, partition: int) -> str:
    return f"kafka/{topic}/{partition}"


def check_partition_count(topic: Topic, count: int) -> None:
    """``KafkaInvalidPartitions`` unless ``count`` grows ``topic`` within the limit."""
    if count <= topic.partitions:
        raise KafkaInvalidPartitions(
            f"topic {topic.name!r} has {topic.partitions} partitions; the count can only grow"
        )
    if count > MAX_PARTITIONS:
        raise KafkaInvalidPartitions(f"{count} partitions; 1 to {MAX_PARTITIONS}")


def validate_topic_name(name: str | None) -> str:
    if not name or not _LEGAL.fullmatch(name) or name in (".", ".."):
        raise KafkaInvalidTopic(
            f"topic name {name!r}: 1 to 249 of a-z A-Z 0-9 . _ - (not '.' or '..')"
        )
    return name


class TopicRegistry:
    def __init__(
        self, engine: StorageEngine, config: KafkaConfig, store: TopicStore | None = None
    ) -> None:
        self.engine = engine
        self.config = config
        self.store = store or EngineTopics(engine)
        self.topics: dict[str, Topic] = {}
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        for topic in await self.store.load():
            self.topics[topic.name] = topic
            wanted = self.shard_config(topic.configs)
            for p in range(topic.partitions):
                shard = shard_name(topic.name, p)
                try:
                    if (await self.engine.shard_info(shard)).config != wanted:
                        await self.engine.set_shard_config(shard, wanted)
                except ShardNotFound:
                    # Stored without its shard: a change answered as timed out whose
                    # proposal committed after all (its new shards were removed), or
                    # files lost by hand. The partition serves again, empty.
                    log.warning(
                        "kafka: partition %s-%d had no shard; created it empty", topic.name, p
                    )
                    await self.engine.create_shard(shard, wanted)

    def get(self, name: str) -> Topic | None:
        return self.topics.get(name)

    def shard(self, topic: str, partition: int) -> str:
        """The shard of an existing partition (``KafkaUnknownTopicOrPartition`` if none)."""
        t = self.topics.get(topic)
        if t is None or not 0 <= partition < t.partitions:
            raise KafkaUnknownTopicOrPartition(f"{topic}-{partition}")
        return shard_name(topic, partition)

    async def ensure(self, name: str, allow_auto_create: bool = True) -> Topic | None:
        """The topic, auto-created with ``default_partitions`` when allowed and enabled."""
        topic = self.topics.get(name)
        if topic is not None or not (allow_auto_create and self.config.auto_create_topics):
            return topic
        validate_topic_name(name)
        try:
            return await self.create(name, self.config.default_partitions, {})
        except KafkaTopicAlreadyExists:
            return self.topics[name]

    def shard_config(self, configs: dict[str, str]) -> ShardConfig:
        values: dict[str, int | None] = {
            "retention_ms": self.config.retention_ms,
            "retention_bytes": self.config.retention_bytes,
        }
        for key, attr in _SHARD_KEYS.items():
            if key in configs:
                values[attr] = int(configs[key])
        for attr in ("retention_ms", "retention_bytes", "segment_ms"):
            if values.get(attr) == -1:
                values[attr] = None
        return ShardConfig(**values)  # type: ignore[arg-type]

    async def create(self, name: str, partitions: int, configs: dict[str, str]) -> Topic:
        validate_topic_name(name)
        topic_configs.validate(configs)  # produce reads max.message.bytes as an integer
        if not 1 <= partitions <= MAX_PARTITIONS:
            raise KafkaInvalidPartitions(f"{partitions} partitions; 1 to {MAX_PARTITIONS}")
        async with self._lock:
            if name in self.topics:
                raise KafkaTopicAlreadyExists(f"topic {name!r} already exists")
            topic = Topic(name, partitions, dict(configs))
            await self._grow(topic, 0)
            return topic

    async def alter_configs(self, name: str, configs: dict[str, str]) -> Topic:
        """Replace a topic's own configs (``KafkaInvalidConfig`` naming a bad one) and its
        partitions' shard configs, durably."""
        topic_configs.validate(configs)
        async with self._lock:
            topic = self._existing(name)
            shard_config = self.shard_config(configs)
            changed = Topic(name, topic.partitions, dict(configs))
            # Stored first: a shard left behind by a failure here is brought in line with
            # the stored configs at the next start (``load``).
            await self.store.save(changed)
            self.topics[name] = changed
            for p in range(topic.partitions):
                await self.engine.set_shard_config(shard_name(name, p), shard_config)
            return changed

    async def add_partitions(self, name: str, count: int) -> Topic:
        """Grow a topic to ``count`` partitions (only ever more: keyed records must keep
        landing where they did for the existing ones)."""
        async with self._lock:
            topic = self._existing(name)
            check_partition_count(topic, count)
            grown = Topic(name, count, topic.configs)
            await self._grow(grown, topic.partitions)
            return grown

    async def _grow(self, topic: Topic, first: int) -> None:
        """Create ``topic``'s partition shards from ``first`` on, then store it; on any
        failure the new shards go again (no half-created topic, e.g. StorageFull midway
        or a Meta Service without a leader)."""
        shard_config = self.shard_config(topic.configs)
        created = []
        try:
            for p in range(first, topic.partitions):
                await self.engine.create_shard(shard_name(topic.name, p), shard_config)
                created.append(shard_name(topic.name, p))
            await self.store.save(topic)
        except (StorageError, KafkaError):
            for shard in created:
                await self.engine.delete_shard(shard)
            raise
        self.topics[topic.name] = topic

    def _existing(self, name: str) -> Topic:
        topic = self.topics.get(name)
        if topic is None:
            raise KafkaUnknownTopicOrPartition(f"topic {name!r} does not exist")
        return topic

    async def delete(self, name: str) -> None:
        async with self._lock:
            topic = self._existing(name)
            await self.store.delete(name)
            del self.topics[name]
            for p in range(topic.partitions):
                try:
                    await self.engine.delete_shard(shard_name(name, p))
                except ShardNotFound:
                    pass

    def partitions(self) -> list[tuple[str, int, str]]:
        """(topic, partition, shard) of every partition."""
        return [
            (t.name, p, shard_name(t.name, p))
            for t in self.topics.values()
            for p in range(t.partitions)
        ]
