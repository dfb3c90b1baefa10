"""Where a node keeps its Kafka topics' metadata: name, partition count and configs.

``TopicStore`` is the contract ``TopicRegistry`` (``registry.py``) writes through; the
registry keeps the topics in memory and decides what a valid change is, the store only
makes it durable. ``MetaTopics`` keeps topics in the Meta Service's ``cluster`` group
(DESIGN.md, "Metadata"; commands ``topic.set`` / ``topic.delete`` in
robustmq/meta/groups/cluster.py), one proposal per change; a change the Meta Service does
not take becomes REQUEST_TIMED_OUT, which clients retry. At its first start after an
upgrade it copies the topics the storage engine holds, once, never over one the Meta
Service already has. ``EngineTopics`` keeps them in the storage engine's key-value space
under ``kafka/topic/<name>`` (the ``memory`` engine, nodes without a meta role, and
multi-node clusters: ``robustmq/node.py`` chooses, as for committed offsets). Partition
shards are the registry's business, not the store's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from robustmq.broker.kafka.offsets import MetaProposer, _command
from robustmq.errors import KafkaError, KafkaRequestTimedOut, MetaError

if TYPE_CHECKING:
    from robustmq.storage import StorageEngine

log = logging.getLogger(__name__)

ENGINE_KEY = b"kafka/topic/"
GROUP = "cluster"  # the Meta Service group
TABLE = "topics"
# Set in the engine's key-value space once its topics are in the Meta Service (outside
# ENGINE_KEY's prefix, so scanning the topics never meets it).
MIGRATED_KEY = b"kafka/topics/migrated"


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)


def _record(topic: Topic) -> dict[str, Any]:
    return {"name": topic.name, "partitions": topic.partitions, "configs": topic.configs}


def _topic(record: dict[str, Any]) -> Topic:
    return Topic(record["name"], record["partitions"], dict(record.get("configs") or {}))


class TopicStore(Protocol):
    """Durable topic metadata; each call is all or nothing."""

    async def load(self) -> list[Topic]:
        """Every topic, once at start (before the listener opens)."""

    async def save(self, topic: Topic) -> None:
        """Store ``topic`` whole, over any earlier version of it."""

    async def delete(self, name: str) -> None:
        """Forget the topic ``name`` (nothing when it is not stored)."""


class EngineTopics:
    """Topics in the storage engine's key-value space (in memory with ``memory``)."""

    def __init__(self, engine: StorageEngine) -> None:
        self.engine = engine

    async def load(self) -> list[Topic]:
        return [_topic(orjson.loads(value)) for _, value in await self.engine.scan(ENGINE_KEY)]

    async def save(self, topic: Topic) -> None:
        await self.engine.put(ENGINE_KEY + topic.name.encode(), orjson.dumps(_record(topic)))

    async def delete(self, name: str) -> None:
        await self.engine.delete(ENGINE_KEY + name.encode())


class MetaTopics:
    """Topics in the Meta Service ``cluster`` group's ``topics`` table."""

    def __init__(self, meta: MetaProposer, engine: StorageEngine) -> None:
        self.meta = meta
        self.engine = engine

    async def load(self) -> list[Topic]:
        # A Meta Service that cannot answer here stops the start (MetaError): serving
        # without knowing the topics would auto-create them again, empty.
        held = await self._held()
        if await self.engine.get(MIGRATED_KEY) is None:
            held = await self._migrate(held)
        return list(held.values())

    async def _held(self) -> dict[str, Topic]:
        table = await self.meta.read(GROUP, TABLE) or {}
        return {name: _topic(record) for name, record in table.items()}

    async def _migrate(self, held: dict[str, Topic]) -> dict[str, Topic]:
        """Topics created before they moved to the Meta Service are copied once; one the
        Meta Service already holds is newer and stays."""
        moved = 0
        for topic in await EngineTopics(self.engine).load():
            if topic.name not in held:
                await self.meta.propose(GROUP, _command("topic.set", **_record(topic)))
                held[topic.name] = topic
                moved += 1
        await self.engine.put(MIGRATED_KEY, b"1")
        if moved:
            log.info("kafka: moved %d topics from the storage engine to the Meta Service", moved)
        return held

    async def save(self, topic: Topic) -> None:
        await self._propose(_command("topic.set", **_record(topic)), topic.name)

    async def delete(self, name: str) -> None:
        await self._propose(_command("topic.delete", name=name), name)

    async def _propose(self, command: bytes, name: str) -> None:
        try:
            await self.meta.propose(GROUP, command)
        except MetaError as exc:
            if exc.retriable:
                raise KafkaRequestTimedOut(
                    f"topic {name!r}: the Meta Service did not take the change ({exc}); retry"
                ) from exc
            raise KafkaError(f"topic {name!r}: the Meta Service refused the change: {exc}") from exc
