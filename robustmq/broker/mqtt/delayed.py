"""Delayed publish: ``$delayed/{seconds}/{topic}`` publishes to ``{topic}`` later (EMQX).

The delay is bounded by ``max_delayed_seconds`` and the number pending by
``max_delayed_messages``; a publish beyond either is refused with a reason code. Pending
publishes are timers here and records in the broker's ``SessionStore`` (persistence.py),
so with a persistent storage engine they survive a restart and fire when they were due
(at once if that passed while the broker was down). How they are stored is not here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from robustmq._core import trie
from robustmq._core.mqtt_spec import ReasonCode
from robustmq.broker.mqtt.message import Message
from robustmq.broker.mqtt.sys_topics import is_sys_topic
from robustmq.errors import MqttError

if TYPE_CHECKING:
    from robustmq.broker.mqtt.persistence import DelayedEntry, SessionStore

log = logging.getLogger(__name__)

PREFIX = "$delayed/"


class DelayedPublisher:
    def __init__(
        self,
        max_seconds: int,
        max_pending: int,
        publish: Callable[[Message], object],
        store: SessionStore,
    ) -> None:
        self.max_seconds = max_seconds
        self.max_pending = max_pending
        self._publish = publish
        self._store = store
        self._pending: set[asyncio.TimerHandle] = set()

    def __len__(self) -> int:
        return len(self._pending)

    def schedule(self, message: Message) -> int:
        """Schedules a ``$delayed/...`` message; returns the reason code for its ack."""
        delay_text, _, topic = message.topic[len(PREFIX) :].partition("/")
        try:
            delay = int(delay_text)
            trie.validate_topic_name(topic)
        except (ValueError, MqttError):
            log.info(
                "bad delayed publish topic %r (want $delayed/{seconds}/{topic})", message.topic
            )
            return ReasonCode.TOPIC_NAME_INVALID
        if is_sys_topic(topic):
            log.info("delayed publish %r: clients may not publish to $SYS", message.topic)
            return ReasonCode.NOT_AUTHORIZED
        if not 0 <= delay <= self.max_seconds or topic.startswith(PREFIX):
            log.info("delayed publish %r: delay must be 0..%d s", message.topic, self.max_seconds)
            return ReasonCode.TOPIC_NAME_INVALID
        if len(self._pending) >= self.max_pending:
            log.warning(
                "delayed publish refused: %d already pending (max_delayed_messages)",
                len(self._pending),
            )
            return ReasonCode.QUOTA_EXCEEDED
        target = Message(
            topic, message.payload, message.qos, message.retain, message.properties, message.sender
        )
        # Stored before the PUBACK goes out (the broker holds its writes back meanwhile).
        key = self._store.delayed_set(time.time() + delay, target)
        self._start(delay, key, target)
        return ReasonCode.SUCCESS

    def recover(self, entries: list[DelayedEntry]) -> None:
        """Restarts the timers of publishes stored before a restart: each fires when it
        was due, or now if that has passed. They were accepted, so no limit applies."""
        now = time.time()
        for entry in entries:
            self._start(max(0.0, entry.due - now), entry.key, entry.message)
        if entries:
            log.info("recovered %d delayed publishes", len(entries))

    def _start(self, delay: float, key: str | None, target: Message) -> None:
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._pending.discard(handle)
            with self._store.delayed_published(key):
                self._publish(target)

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._pending.add(handle)

    def cancel_all(self) -> None:
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
