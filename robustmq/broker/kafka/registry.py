"""Kafka topics as shards of the storage engine: which topics exist, how many partitions
they have and their configs, and the shard name of each partition.

Topic metadata is kept in the engine's key-value space under ``kafka/topic/<name>`` until
the Meta Service owns it; ``TopicRegistry`` is the only code that knows that, so moving it
changes this file only. Partition ``p`` of topic ``t`` is the shard ``kafka/t/p``. The
records themselves are read and written by the handlers through the engine interface.
A topic's configs decide its partitions' shard config (retention, segment size): when they
change, and at start (where a topic without its own value follows the ``[kafka]`` default
of the moment, as in Kafka), every partition's shard config is brought in line.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

import orjson

from robustmq.config import KafkaConfig
from robustmq.errors import (
    KafkaInvalidPartitions,
    KafkaInvalidTopic,
    KafkaTopicAlreadyExists,
    KafkaUnknownTopicOrPartition,
    ShardNotFound,
    StorageError,
)
from robustmq.storage import ShardConfig, StorageEngine

_KEY = b"kafka/topic/"
# Kafka's Topic.validate: at most 249 of [a-zA-Z0-9._-], not "." or "..".
_LEGAL = re.compile(r"[a-zA-Z0-9._-]{1,249}")
# Partitions per topic: one request must not be able to create millions of shards.
MAX_PARTITIONS = 10_000
# Topic configs that map onto the shard config; the others are kept but have no effect.
_SHARD_KEYS = {
    "retention.ms": "retention_ms",
    "retention.bytes": "retention_bytes",
    "segment.bytes": "segment_bytes",
    "segment.ms": "segment_ms",
}


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


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
    def __init__(self, engine: StorageEngine, config: KafkaConfig) -> None:
        self.engine = engine
        self.config = config
        self.topics: dict[str, Topic] = {}
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        for _, value in await self.engine.scan(_KEY):
            data = orjson.loads(value)
            topic = Topic(data["name"], data["partitions"], data.get("configs", {}))
            self.topics[topic.name] = topic
            wanted = self.shard_config(topic.configs)
            for p in range(topic.partitions):
                shard = shard_name(topic.name, p)
                try:
                    if (await self.engine.shard_info(shard)).config != wanted:
                        await self.engine.set_shard_config(shard, wanted)
                except ShardNotFound:
                    pass  # a partition lost with its files: reads answer UNKNOWN_TOPIC_OR_PARTITION

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
        if not 1 <= partitions <= MAX_PARTITIONS:
            raise KafkaInvalidPartitions(f"{partitions} partitions; 1 to {MAX_PARTITIONS}")
        async with self._lock:
            if name in self.topics:
                raise KafkaTopicAlreadyExists(f"topic {name!r} already exists")
            shard_config = self.shard_config(configs)
            created = []
            try:
                for p in range(partitions):
                    await self.engine.create_shard(shard_name(name, p), shard_config)
                    created.append(shard_name(name, p))
            except StorageError:
                for shard in created:  # no half-created topic (e.g. StorageFull midway)
                    await self.engine.delete_shard(shard)
                raise
            topic = Topic(name, partitions, dict(configs))
            await self._save(topic)
            return topic

    async def alter_configs(self, name: str, configs: dict[str, str]) -> Topic:
        """Replace a topic's own configs (validated by the caller) and its partitions'
        shard configs, durably."""
        async with self._lock:
            topic = self._existing(name)
            shard_config = self.shard_config(configs)
            for p in range(topic.partitions):
                await self.engine.set_shard_config(shard_name(name, p), shard_config)
            changed = Topic(name, topic.partitions, dict(configs))
            await self._save(changed)
            return changed

    async def add_partitions(self, name: str, count: int) -> Topic:
        """Grow a topic to ``count`` partitions (only ever more: keyed records must keep
        landing where they did for the existing ones)."""
        async with self._lock:
            topic = self._existing(name)
            check_partition_count(topic, count)
            shard_config = self.shard_config(topic.configs)
            created = []
            try:
                for p in range(topic.partitions, count):
                    await self.engine.create_shard(shard_name(name, p), shard_config)
                    created.append(shard_name(name, p))
            except StorageError:
                for shard in created:
                    await self.engine.delete_shard(shard)
                raise
            grown = Topic(name, count, topic.configs)
            await self._save(grown)
            return grown

    def _existing(self, name: str) -> Topic:
        topic = self.topics.get(name)
        if topic is None:
            raise KafkaUnknownTopicOrPartition(f"topic {name!r} does not exist")
        return topic

    async def _save(self, topic: Topic) -> None:
        await self.engine.put(
            _KEY + topic.name.encode(),
            orjson.dumps(
                {"name": topic.name, "partitions": topic.partitions, "configs": topic.configs}
            ),
        )
        self.topics[topic.name] = topic

    async def delete(self, name: str) -> None:
        async with self._lock:
            topic = self.topics.pop(name, None)
            if topic is None:
                raise KafkaUnknownTopicOrPartition(f"topic {name!r} does not exist")
            await self.engine.delete(_KEY + name.encode())
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
