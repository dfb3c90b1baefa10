"""An MQTT session: what outlives one network connection (MQTT 5 §4.1).

Subscriptions, QoS 1/2 messages in flight to the client, the queue of messages waiting
for the client (offline, or beyond its Receive Maximum), and inbound QoS 2 packet ids
awaiting PUBREL. Sessions live in memory here, owned by ``MqttBroker``, which records the
durable part of persistent ones in its ``SessionStore`` (persistence.py). Nothing here
touches a socket: the session hands PUBLISHes to its connection, if it has one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple

from robustmq._core import lane
from robustmq.broker.mqtt.message import Message
from robustmq.observability.counters import EXPIRED, OFFLINE, QUEUE_FULL

if TYPE_CHECKING:
    from robustmq._core.lanes import SessionCore
    from robustmq.broker.mqtt.connection import MqttConnection
    from robustmq.broker.mqtt.persistence import QueueJournal
    from robustmq.observability.counters import MqttCounters
else:
    SessionCore = lane.SessionCore  # the selected twin: C fields when compiled

log = logging.getLogger(__name__)

# A session whose expiry interval is this value never expires (MQTT 5 §3.1.2.11.2).
NEVER_EXPIRES = 0xFFFFFFFF


class SubscriptionOptions(NamedTuple):
    """What the broker keeps per subscription (MQTT 5 §3.8.3.1)."""

    qos: int
    no_local: bool
    retain_as_published: bool
    subscription_id: int


class Delivery(NamedTuple):
    message: Message
    qos: int
    retain: bool
    sub_ids: tuple[int, ...]
    # (group, filter) when the message came through a shared subscription: if this member
    # goes away before acknowledging it, another member gets it.
    shared: tuple[str, str] | None = None


# What a session still owes its client, as it moves to another node of a cluster: a
# delivery, the packet identifier it was sent with (0: never sent) and whether its PUBREL
# went out.
Owed = tuple[Delivery, int, bool]


class Inflight:
    """An outgoing QoS 1/2 delivery awaiting PUBACK, or PUBREC then PUBCOMP."""

    __slots__ = ("delivery", "released", "sent")

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        self.released = False  # True once PUBREC arrived and PUBREL went out
        self.sent = True  # False while waiting, after a reconnect, for the Receive Maximum


class Session(SessionCore):
    # Every field is SessionCore's (robustmq/_core/lanes.py): C fields when the core
    # is compiled, so a new session costs no Python frame and the lanes read them
    # directly. What they hold:
    __slots__ = ()

    client_id: str
    owner: str | None  # the username that created it; only it resumes it
    expiry_interval: int
    connection: MqttConnection | None
    subscriptions: dict[str, SubscriptionOptions]
    inflight: dict[int, Inflight]
    # Allocated on first use: most sessions never queue, and an empty deque is 600 B.
    queue: deque[Delivery] | None
    # Inbound QoS 2 packet ids awaiting PUBREL (a dict: 4x smaller than a set empty).
    qos2_inbound: dict[int, None]
    max_queued: int
    drop_oldest: bool
    dropped: int
    drops: MqttCounters | None  # the broker's, counting drops by reason
    expiry_handle: asyncio.TimerHandle | None
    will_handle: asyncio.TimerHandle | None
    pending_will: tuple[Any, str] | None  # (will, client id) awaiting its delay
    # In the broker's SessionStore (a persistent session): its changes are stored.
    persisted: bool
    # Where its QoS 1/2 deliveries, queued and in flight, are written until acknowledged
    # (a persistent session with a persistent storage engine), else None.
    journal: QueueJournal | None
    # The node a connection of this client moved to (cluster takeover) while the
    # session's move through the Meta Service is on its way: what that node forwards for
    # it, it has already delivered there.
    moved_to: int | None
    _next_packet_id: int
    # At least the number of in-flight entries waiting to be resent (sent=False): an
    # acknowledgement looks for one to resend only when this is not zero.
    _unsent: int

    def __repr__(self) -> str:
        return f"Session({self.client_id!r})"

    def deliver(self, delivery: Delivery) -> None:
        """Send now if the connection and flow control allow, else queue (QoS 1/2)."""
        conn = self.connection
        if delivery.qos == 0:
            if conn is not None:
                conn.send_publish(delivery, 0)
            elif self.drops is not None:
                self.drops.drop(OFFLINE, 0)
            return
        if (
            conn is not None
            and not self.queue
            and not conn.paused  # a client not reading: queue (bounded), don't buffer
            and len(self.inflight) < conn.send_quota
        ):
            packet_id = self._send(conn, delivery)
            # In flight survives a restart too (unless the client's Maximum Packet Size
            # discarded it).
            if self.journal is not None and packet_id in self.inflight:
                self.journal.message_queued(self, delivery, packet_id)
        else:
            self._enqueue(delivery)

    def _enqueue(self, delivery: Delivery) -> None:
        if self.queue is None:
            self.queue = deque()
        if len(self.queue) >= self.max_queued:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning(
                    "session %s: queue full (%d messages); dropped %d so far (%s)",
                    self.client_id,
                    self.max_queued,
                    self.dropped,
                    "oldest" if self.drop_oldest else "newest",
                )
            if not self.drop_oldest or not self.queue:
                if self.drops is not None:
                    self.drops.drop(QUEUE_FULL, delivery.qos)
                return
            dropped = self.queue.popleft()
            if self.drops is not None:
                self.drops.drop(QUEUE_FULL, dropped.qos)
            if self.journal is not None:
                self.journal.message_done(self, dropped)
        self.queue.append(delivery)
        if self.journal is not None:
            self.journal.message_queued(self, delivery)

    def _send(self, conn: MqttConnection, delivery: Delivery) -> int:
        packet_id = self._next_packet_id % 65535 + 1
        if packet_id in self.inflight:
            packet_id = self._allocate_packet_id()
        else:
            self._next_packet_id = packet_id
        self.inflight[packet_id] = Inflight(delivery)
        conn.send_publish(delivery, packet_id)
        return packet_id

    def send_run(self, conn: MqttConnection, messages: list[Message], qos: int) -> list[int] | None:
        """Puts ``messages`` in flight together at ``qos`` (1 or 2) and returns their packet
        ids, for
        the caller to send in one write; None, with nothing done, when they must go one by
        one: something is queued ahead of them, the client is not reading, its Receive
        Maximum has no room for all of them, or they are journaled."""
        inflight = self.inflight
        if (
            self.queue
            or self.journal is not None
            or conn.paused
            or len(inflight) + len(messages) > conn.send_quota
        ):
            return None
        packet_ids = []
        packet_id = self._next_packet_id
        for message in messages:
            packet_id = packet_id % 65535 + 1
            if packet_id in inflight:
                self._next_packet_id = packet_id
                packet_id = self._allocate_packet_id()
            inflight[packet_id] = Inflight(Delivery(message, qos, False, ()))
            packet_ids.append(packet_id)
        self._next_packet_id = packet_id
        return packet_ids

    def _allocate_packet_id(self) -> int:
        for _ in range(65535):
            self._next_packet_id = self._next_packet_id % 65535 + 1
            if self._next_packet_id not in self.inflight:
                return self._next_packet_id
        raise RuntimeError("no free packet identifier")  # bounded by Receive Maximum

    def drain(self) -> None:
        """Move queued messages into flight while the client's Receive Maximum allows."""
        conn = self.connection
        if conn is None or not self.queue:
            return
        now = time.monotonic()
        while self.queue and len(self.inflight) < conn.send_quota and not conn.paused:
            delivery = self.queue.popleft()
            if delivery.message.expired(now):
                if self.drops is not None:
                    self.drops.drop(EXPIRED, delivery.qos)
                if self.journal is not None:
                    self.journal.message_done(self, delivery)
                continue
            packet_id = self._send(conn, delivery)
            if self.journal is not None:  # a restart resends it with this id (§4.4)
                self.journal.message_sent(self, delivery, packet_id)

    def acknowledge(self, packet_id: int) -> bool:
        """PUBACK or PUBCOMP: the delivery is complete."""
        entry = self.inflight.pop(packet_id, None)
        if entry is None:
            return False
        if self.journal is not None:
            self.journal.message_done(self, entry.delivery)
        conn = self.connection
        if conn is not None and self._unsent:
            for waiting_id, entry in self.inflight.items():
                if not entry.sent:  # resent in order as the client frees its window
                    entry.sent = True
                    self._unsent -= 1
                    conn.send_publish(entry.delivery, waiting_id, dup=True)
                    return True
            self._unsent = 0
        self.drain()
        return True

    def take_shared(self) -> list[Delivery]:
        """Removes and returns the unacknowledged deliveries of shared subscriptions."""
        # QoS 2 deliveries under way stay: they must complete with this client, never
        # another (MQTT 5 §4.8.2); QoS 1 ones may go to another member.
        if not self.inflight and not self.queue:
            return []
        moving = [p for p, e in self.inflight.items() if e.delivery.shared and e.delivery.qos == 1]
        taken = [self.inflight.pop(p).delivery for p in moving]
        if self.queue:
            taken += [d for d in self.queue if d.shared]
            self.queue = deque(d for d in self.queue if not d.shared)
        return taken

    def requeue(self, deliveries: list[Delivery]) -> None:
        """Puts deliveries back at the head of the queue, in order."""
        if self.queue is None:
            self.queue = deque()
        self.queue.extendleft(reversed(deliveries))

    def resume(self, conn: MqttConnection) -> None:
        """A client reconnected to this session: resend what was in flight (§4.4)."""
        self.connection = conn
        if not self.inflight and not self.queue:
            return  # a new session, or one that owed the client nothing
        window = conn.send_quota  # MQTT 5 §4.9 applies to resent PUBLISHes too
        for packet_id, entry in list(self.inflight.items()):  # send_publish may discard
            self._resend(conn, packet_id, entry, window > 0)
            window -= 1
        self.drain()

    def adopt(self, delivery: Delivery, packet_id: int, released: bool) -> bool:
        """Takes ``delivery`` in flight under ``packet_id``, as another node of the cluster
        sent it to the client (``released``: its PUBREL went out), and resends it as after
        a reconnect; False, with nothing done, when the identifier is taken here or
        something waits in the queue (journaled after queued deliveries, it would make a
        restart take a queued one that later got its identifier for acknowledged)."""
        if packet_id in self.inflight or self.queue:
            return False
        entry = self.inflight[packet_id] = Inflight(delivery)
        entry.released = released
        if self.journal is not None:  # a restart resends it (or its PUBREL) with this id
            self.journal.message_queued(self, delivery, packet_id)
            if released:
                self.journal.message_released(self, delivery)
        conn = self.connection
        if conn is not None:  # else resent when the client comes back (resume)
            self._resend(conn, packet_id, entry, len(self.inflight) <= conn.send_quota)
        return True

    def _resend(self, conn: MqttConnection, packet_id: int, entry: Inflight, room: bool) -> None:
        """An in-flight entry again: its PUBREL, or the PUBLISH with DUP set while the
        client's Receive Maximum has ``room``, else once it frees some (acknowledge)."""
        if entry.released:
            conn.send_pubrel(packet_id)
        elif room:
            entry.sent = True
            conn.send_publish(entry.delivery, packet_id, dup=True)
        else:
            entry.sent = False
            self._unsent += 1
