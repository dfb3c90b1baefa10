"""The MQTT broker's per-type counters: plain integer lists its hot path adds to.

``MqttCounters`` holds, for one broker, packets received and sent by packet type, messages
received and sent by QoS, and messages dropped by reason and QoS, as lists indexed by the
packet type, QoS or reason number, so that counting costs one list add where it happens
(connection.py, session.py); ``metrics.py`` turns them into labelled Prometheus series on
scrape, through the methods here that put the pieces together. The busiest lanes count as
little as they can, and what is already counted elsewhere is not counted again:

- packets a connected client's packet loop hands to their handlers are counted by the
  loop's sampling countdown (``LatencyHistogram.calls``); ``packets_received`` has only
  those handled outside it (before the CONNACK, or refused) and acknowledgements that
  arrived in a run (``mqtt.AckRun``);
- a run of PUBLISHes (``mqtt.PublishRun``) is one add to ``run_publishes``: it is also
  the run's messages received and, at QoS 1, its PUBACKs (a QoS 2 run's PUBRECs are
  counted where they are written); the rare runs the lanes pass on
  to ``handle_publish`` or the ACL refuses are subtracted (``run_publishes_unrouted``, and
  ``run_pubacks_single`` for acknowledgements written one by one);
- messages sent at QoS 1 are ``MqttBroker.stats["messages_sent"]`` less QoS 0 and 2;
- the QoS 0 lane counts in its ``LaneContext``'s own integers: whoever reads the counts
  it feeds (``stats`` bytes and messages, ``run_publishes``, ``sent_by_qos``) calls
  ``MqttBroker.lane_context.fold()`` first, as ``metrics.py`` and ``$SYS`` do.

Nothing here knows Prometheus or sockets.
"""

from __future__ import annotations

from collections import Counter

from robustmq._core.mqtt_spec import ACK_RUN, PUBACK, PUBLISH

# Why a message did not reach a subscriber; the index is what the hot path passes.
QUEUE_FULL = 0  # the session's queue was at max_queued_messages (MQTT 5 §4.9)
PACKET_TOO_LARGE = 1  # bigger than the client's Maximum Packet Size (§3.1.2.25)
SLOW_CLIENT = 2  # QoS 0 to a client not reading past backpressure_timeout
OFFLINE = 3  # QoS 0 to a session whose client is not connected: not queued
EXPIRED = 4  # its Message Expiry Interval ran out while queued (§3.3.2.3.3)
DROP_REASONS = ("queue_full", "packet_too_large", "slow_client", "offline", "expired")


class MqttCounters:
    """Counters of one MQTT broker; ``stats`` is its ``MqttBroker.stats``, where a drop
    also counts towards ``messages_dropped``."""

    __slots__ = (
        "stats",
        "packets_received",
        "packets_sent",
        "run_publishes",
        "run_publishes_unrouted",
        "run_pubacks_single",
        "received_by_qos",
        "sent_by_qos",
        "dropped",
    )

    def __init__(self, stats: Counter[str]) -> None:
        self.stats = stats
        self.packets_received = [0] * (ACK_RUN + 1)  # by packet type; see the module doc
        self.packets_sent = [0] * (ACK_RUN + 1)  # by packet type, but PUBLISH and run PUBACKs
        self.run_publishes = [0, 0, 0]  # PUBLISHes that arrived in runs, by QoS
        self.run_publishes_unrouted = [0, 0, 0]  # of those, not routed by the run lanes
        self.run_pubacks_single = 0  # QoS 1 run PUBLISHes acknowledged one by one
        self.received_by_qos = [0, 0, 0]  # routed by handle_publish, by QoS
        self.sent_by_qos = [0, 0, 0]  # QoS 0 and 2; index 1 stays 0
        self.dropped = [[0, 0, 0] for _ in DROP_REASONS]  # [reason][qos]

    def drop(self, reason: int, qos: int, count: int = 1) -> None:
        """``count`` messages of ``qos`` dropped for ``reason`` (not on the common path)."""
        self.dropped[reason][qos] += count
        self.stats["messages_dropped"] += count

    def packets_received_of(self, kind: int, looped: int) -> int:
        """Packets of ``kind`` received, given how many the packet loop handed over."""
        count = self.packets_received[kind] + looped
        if kind == PUBLISH:
            count += sum(self.run_publishes)
        return count

    def packets_sent_of(self, kind: int) -> int:
        """Packets of ``kind`` sent."""
        if kind == PUBLISH:
            return self.stats["messages_sent"]
        if kind == PUBACK:  # every QoS 1 message a run lane routed was acknowledged
            return self.packets_sent[PUBACK] + self._routed_in_runs(1) - self.run_pubacks_single
        return self.packets_sent[kind]

    def messages_received_by_qos(self) -> list[int]:
        """Messages received and routed, by QoS 0, 1, 2."""
        by_qos = self.received_by_qos
        return [by_qos[i] + self._routed_in_runs(i) for i in range(3)]

    def messages_sent_by_qos(self) -> list[int]:
        """Messages sent, by QoS 0, 1, 2."""
        by_qos = self.sent_by_qos
        return [by_qos[0], self.stats["messages_sent"] - by_qos[0] - by_qos[2], by_qos[2]]

    def messages_dropped_by_qos(self) -> list[int]:
        return [sum(by_reason) for by_reason in zip(*self.dropped, strict=True)]

    def _routed_in_runs(self, qos: int) -> int:
        return self.run_publishes[qos] - self.run_publishes_unrouted[qos]
