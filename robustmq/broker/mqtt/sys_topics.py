"""``$SYS/brokers/{node}/...``: broker statistics published as retained messages.

Published every ``sys_interval`` seconds (EMQX's topic layout). ``#`` and ``+`` at the first
level never match them (MQTT 5 §4.7.2); subscribe to ``$SYS/#`` to read them.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from robustmq import __version__
from robustmq.broker.mqtt.message import Message

if TYPE_CHECKING:
    from robustmq.broker.mqtt.server import MqttBroker

SYS_PREFIX = "$SYS/"


def is_sys_topic(topic: str) -> bool:
    """The broker's own topics: clients may read them but never publish there."""
    return topic.startswith(SYS_PREFIX) or topic == "$SYS"


def sys_values(broker: MqttBroker) -> dict[str, str]:
    broker.lane_context.fold()  # the QoS 0 lane's counts, into stats
    stats = broker.stats
    return {
        "version": __version__,
        "uptime": str(int(time.time() - broker.started_at)),
        "clients/connected": str(sum(1 for c in broker.connections if c.connected)),
        "clients/total": str(stats["connections_total"]),
        "sessions/count": str(len(broker.sessions)),
        "subscriptions/count": str(len(broker.router.subscriptions)),
        "retained/count": str(len(broker.router.retained)),
        "messages/received": str(stats["messages_received"]),
        "messages/sent": str(stats["messages_sent"]),
        "messages/dropped": str(stats["messages_dropped"]),
        "bytes/received": str(stats["bytes_received"]),
        "bytes/sent": str(stats["bytes_sent"]),
    }


def publish_sys_topics(broker: MqttBroker, node: str) -> None:
    for name, value in sys_values(broker).items():
        message = Message(f"{SYS_PREFIX}brokers/{node}/{name}", value.encode(), 0, True)
        broker.router.retain(message)
        broker.router.route(message)


async def sys_topics_loop(broker: MqttBroker, node: str, interval: float) -> None:
    while True:
        publish_sys_topics(broker, node)
        await asyncio.sleep(interval)
