"""The cluster link: MQTT publishes forwarded between the brokers of a cluster.

**Routes.** The Meta Service ``cluster`` group's ``routes`` table holds, per node, the
topic filters its sessions subscribe to (``$share/{group}/...`` as written). The router
tells the link when a session of this node subscribes to a filter or leaves it
(``subscribed``/``unsubscribed``, once per session and filter): a filter's first
subscriber on this node adds it, its last removes it. Changes are batched, one
``route.update`` proposal at a time; the first after a start replaces whatever the table
held for this node (the sessions of a previous run are not all back). Every node follows
the table through the watch stream of its own meta replica and keeps the other nodes'
filters in a trie of its own; for each such filter it is an internal subscriber of its
router, so the router hands it every publish some other node wants (a batched-lane run
as one list).

**Forwarding.** A message goes to every node with a matching plain filter and, for each
matching shared subscription group without a member on this node, to one node with a
member, in turn; to each node once, naming the groups it is to serve there. Per node,
one queue and one sender task: what is queued while a call is in flight goes out in the
next frame, on one ``Forward`` stream per node (the node's gRPC listener; raw bytes framed
here; each frame answered before the next is written), so order per publisher and node
holds. A retained message set or cleared on this node goes to every
other node, which keeps its copy for its own subscribers' SUBSCRIBEs.

**Flow control.** While ``HOLD_BACK`` messages wait for a node that answers, the
connections publishing to it stop being read (as a slow subscriber holds back its
publishers), until its queue is down to ``RESUME``. On the receiving node, a slow
subscriber holds back the link's ``ForwardGate`` as it would a publisher: the next
``Forward`` frame is delivered once the gate is released (or ``mqtt.backpressure_timeout``
has passed), so the sender's queue, and in turn its publishers, wait.

**Retained messages** carry a stamp (when, which node): a node keeps the one set last, so
two nodes setting a topic at once agree (with clocks in step, as NTP keeps them). A node
setting one locally stamps it later than anything it has seen for the topic.

**Takeovers.** A client connecting here is announced to every other broker (an entry
with the ``TAKEOVER`` flag and its connect time), which lets an older connection of the
same client id go with DISCONNECT 0x8E, as one broker would (MQTT 5 §3.1.4-3).

**Handovers.** When a persistent session this node held moves to another node (its
client connected there), what this node still owed the client goes to that node
(``hand_over``): the QoS 1/2 messages in flight to the client, then those queued for it,
as entries with the ``SESSION`` flag, each naming the client and carrying its delivery's
QoS, retain flag, subscription identifiers and shared group, and for one in flight the
packet identifier it was sent with and whether its PUBREL went out. The new node puts
those in flight under the same packet identifiers, when it can (``handed_over``), and
resends them (a PUBREL for a released QoS 2 one), as a broker does for a client that
reconnects (MQTT 5 §4.4), so the client's own QoS 2 state carries over; the rest it
delivers as its own, after whatever it delivered meanwhile. ``done`` tells the old node
when none of its entries waits any more (the frames answered, or the entries dropped),
which keeps its stored copy until then. A node still loading its sessions refuses a
frame with handovers (``ForwardNotReady``: the sender tries again); one that does not
hold the session (it moved on, or came back) passes the entries to the node the
group's record names. Not promised: a node answers before its journal has the entries,
and passes them on from memory, so its crash right then loses them; a message published
during the move may reach the client twice, through the new node's own routes and in
the handover.

**Expiry.** Messages wait in the queue as they are and are encoded when their frame is
built: one whose Message Expiry Interval ran out meanwhile is dropped then. A node that does not answer holds
nobody back: its queue is bounded by ``MAX_QUEUED``, beyond which messages are dropped,
counted and logged.

**Not promised.** Routes reach the other nodes a few milliseconds after the SUBACK: a
message published elsewhere in that window misses the new subscriber. The publisher's
PUBACK comes from this node alone: a message for a node that cannot be reached may be
dropped as above, one in flight when the receiving node crashes is lost, and a frame
whose answer is lost is sent again (its messages delivered twice).

**Frames.** ``>BIIQ``: version, sending node, message count, when it was sent (ms since
the epoch); then per message ``>BHBI``: flags (``STORE_ONLY``: a retained message to
keep, not to deliver; ``SESSION``: a delivery for one client's session), sender length, shared group count, PUBLISH length; with
``STORE_ONLY`` or ``TAKEOVER`` a stamp ``>QI``; with ``SESSION`` a ``>HH?`` (the client id's
length, the packet identifier it was sent with or 0, whether its PUBREL went out) and the
client id (UTF-8); the sender (UTF-8), each group as ``>H`` length and ``group/filter``
(UTF-8), and the message as an MQTT 5 PUBLISH packet (QoS and RETAIN as published, or
as delivered in a ``SESSION`` entry, with its subscription identifiers there;
properties, the remaining message expiry, packet identifier 1). The receiver takes the
frame's age off the messages' expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import orjson

from robustmq._core import mqtt, trie
from robustmq.broker.auth.ratelog import RateLimitedLog
from robustmq.broker.mqtt.message import Message
from robustmq.broker.mqtt.session import Delivery, Owed
from robustmq.errors import ForwardFrameError, ForwardNotReady, MetaError, MqttError
from robustmq.meta.client import MAX_MESSAGE_BYTES
from robustmq.observability.counters import EXPIRED

if TYPE_CHECKING:
    from robustmq.broker.mqtt.connection import Publisher
    from robustmq.broker.mqtt.server import MqttBroker

log = logging.getLogger(__name__)
failure_log = RateLimitedLog(log, burst=5, interval=30.0)

GROUP = "cluster"
FORWARD_METHOD = "/robustmq.BrokerLink/Forward"
VERSION = 3
STORE_ONLY = 1
TAKEOVER = 2  # no message: the sender field names a client that connected at the stamp
SESSION = 4  # a delivery handed over to one client's session (its ``Handover``)
_TAKEOVER_TOPIC = "$cluster/takeover"  # the entry's PUBLISH part, never delivered
MAX_QUEUED = 100_000
MAX_QUEUED_BYTES = 256 << 20
"""Messages (and their bytes) waiting for one node; more are dropped (counted in
``cluster_forward_dropped``)."""
HOLD_BACK = 20_000
HOLD_BACK_BYTES = 64 << 20
"""Messages (or bytes) waiting for a node that answers from which their publishers are
paused..."""
RESUME = 5_000
RESUME_BYTES = 16 << 20
"""...until no more than this many (and these bytes) wait."""
MAX_FRAME_BYTES = 1 << 20
"""A call carries about this much at most (one message may be larger)."""
FRAME_LIMIT = MAX_MESSAGE_BYTES
"""What gRPC lets one call carry, both ways: a message too large for a frame of its own
is not forwarded (dropped and counted) rather than retried forever."""
SEND_TIMEOUT = 5.0
RETRY_DELAYS = (0.05, 0.2, 1.0, 2.0)
"""Seconds before the next attempt after 1, 2, 3 and more failures in a row."""
FOLLOW_RETRY = 1.0
"""Seconds before following the routes again after the watch stream failed."""

_HEAD = struct.Struct(">BIIQ")
_ENTRY = struct.Struct(">BHBI")
_STAMP = struct.Struct(">QI")
_HANDOVER = struct.Struct(">HH?")
_U16 = struct.Struct(">H")


class RouteProposer(Protocol):
    async def propose(self, group: str, command: bytes) -> Any: ...


class RouteWatch(Protocol):
    async def next_events(self) -> list[Any]: ...

    def close(self) -> None: ...


class Peer:
    """Another node: its entry in the route trie, and its queue of encoded messages."""

    __slots__ = (
        "node_id",
        "queue",
        "queued",
        "queued_bytes",
        "ready",
        "task",
        "channel",
        "address",
        "call",
        "answers",
        "held",
    )

    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        self.queue: list[Queued] = []
        self.queued = 0
        self.queued_bytes = 0  # about what the queued messages hold (_size)
        self.ready = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.channel: Any = None
        self.address: str | None = None  # what ``channel`` connects to
        self.call: Any = None  # the open Forward stream
        self.answers = True  # its last call succeeded (or none was made yet)
        self.held: set[Publisher] | None = None  # publishers paused for it


class ForwardGate:
    """The publisher of forwarded messages as a slow subscriber sees it: paused by each
    subscriber that holds it back, open again once all have let it go."""

    __slots__ = ("closing", "pauses", "open")

    def __init__(self) -> None:
        self.closing = False
        self.pauses = 0
        self.open = asyncio.Event()
        self.open.set()

    def _pause_reading(self) -> None:
        self.pauses += 1
        self.open.clear()

    def _resume_reading(self) -> None:
        self.pauses -= 1
        if self.pauses <= 0:
            self.pauses = 0
            self.open.set()


Stamp = tuple[int, int]
"""When a retained message was set: (milliseconds since the epoch, node id), ordered."""


class HandoverTicket:
    """Calls ``done`` once every entry of one handover has left the link's queue:
    sent and answered, or dropped (never while the link stops with some still queued)."""

    __slots__ = ("done", "left")

    def __init__(self, left: int, done: Callable[[], None]) -> None:
        self.left = left
        self.done = done

    def gone(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.done()


class Handover(NamedTuple):
    """What a ``SESSION`` entry carries besides its message: the client whose session it
    is for, the delivery's subscription identifiers, the packet identifier it was sent
    with (0: not in flight) and whether its PUBREL went out; on the sending node, the
    ticket of its handover."""

    client_id: str
    sub_ids: tuple[int, ...]
    packet_id: int
    released: bool
    ticket: HandoverTicket | None = None


def _gone(entries: list[Queued]) -> None:
    """Entries that left a queue: their handovers' tickets hear of it."""
    for entry in entries:
        handover = entry[4]
        if handover is not None and handover.ticket is not None:
            handover.ticket.gone()


# A queued message: (message, shared groups as "group/filter", flags, stamp of a retained
# one, what a handed-over delivery carries).
Queued = tuple[Message, tuple[str, ...], int, Stamp | None, Handover | None]


def encode_entry(
    message: Message,
    groups: tuple[str, ...],
    flags: int = 0,
    stamp: Stamp | None = None,
    handover: Handover | None = None,
) -> bytes:
    """One message of a frame, encoded now (so its remaining expiry is current); a
    ``SESSION`` entry carries its ``handover``."""
    sub_ids = handover.sub_ids if handover is not None else ()
    head, tail = message.encoded(5, message.qos, message.retain, sub_ids)
    publish = head + b"\x00\x01" + tail if message.qos else head
    sender = message.sender.encode()
    tags = b"".join(_U16.pack(len(g)) + g for g in (group.encode() for group in groups))
    entry = _ENTRY.pack(flags, len(sender), len(groups), len(publish))
    if flags & (STORE_ONLY | TAKEOVER):
        assert stamp is not None
        entry += _STAMP.pack(*stamp)
    if flags & SESSION:
        assert handover is not None
        client = handover.client_id.encode()
        entry += _HANDOVER.pack(len(client), handover.packet_id, handover.released) + client
    return entry + sender + tags + publish


def encode_frame(node_id: int, entries: list[bytes]) -> bytes:
    """A frame of encoded entries from node ``node_id``, stamped with the time it is sent."""
    sent = time.time_ns() // 1_000_000
    return _HEAD.pack(VERSION, node_id, len(entries), sent) + b"".join(entries)


Entry = tuple[int, Message, frozenset[tuple[str, str]], Stamp | None, Handover | None]
"""A decoded entry: flags, message, shared groups, stamp, handover (of a ``SESSION``
entry)."""


def decode_frame(data: bytes) -> tuple[int, int, list[Entry]]:
    """(sending node, when it was sent in ms, [entry]); ``ForwardFrameError`` naming the
    byte where a frame is not what ``encode_frame`` writes."""
    if len(data) < _HEAD.size:
        raise ForwardFrameError(0, f"{len(data)} bytes: shorter than the frame header")
    version, node_id, count, sent = _HEAD.unpack_from(data)
    if version != VERSION:
        raise ForwardFrameError(0, f"version {version}; this node reads version {VERSION}")
    decoder = mqtt.Decoder(5)
    out: list[Entry] = []
    pos = _HEAD.size
    for _ in range(count):
        at = pos
        if len(data) - pos < _ENTRY.size:
            raise ForwardFrameError(at, "truncated message header")
        flags, sender_len, group_count, publish_len = _ENTRY.unpack_from(data, pos)
        pos += _ENTRY.size
        stamp: Stamp | None = None
        if flags & (STORE_ONLY | TAKEOVER):
            if len(data) - pos < _STAMP.size:
                raise ForwardFrameError(pos, "truncated stamp")
            stamp = _STAMP.unpack_from(data, pos)
            pos += _STAMP.size
        client_id = ""
        packet_id = 0
        released = False
        if flags & SESSION:
            if len(data) - pos < _HANDOVER.size:
                raise ForwardFrameError(pos, "truncated handover")
            client_len, packet_id, released = _HANDOVER.unpack_from(data, pos)
            pos += _HANDOVER.size
            try:
                client_id = data[pos : pos + client_len].decode()
            except UnicodeDecodeError as exc:
                raise ForwardFrameError(pos, f"bad client id: {exc}") from None
            if len(client_id.encode()) != client_len or not client_id:
                raise ForwardFrameError(pos, "truncated or empty client id")
            pos += client_len
        try:
            sender = data[pos : pos + sender_len].decode()
            pos += sender_len
            groups = []
            for _ in range(group_count):
                (size,) = _U16.unpack_from(data, pos)
                tag = data[pos + 2 : pos + 2 + size].decode()
                group, sep, topic_filter = tag.partition("/")
                if not sep or len(tag.encode()) != size:
                    raise ForwardFrameError(pos, f"shared group {tag!r} is not group/filter")
                groups.append((group, topic_filter))
                pos += 2 + size
        except (UnicodeDecodeError, struct.error) as exc:
            raise ForwardFrameError(at, f"bad sender or shared group: {exc}") from None
        publish = data[pos : pos + publish_len]
        if len(publish) != publish_len:
            raise ForwardFrameError(pos, f"PUBLISH of {publish_len} bytes truncated")
        try:
            packets, used = decoder.decode(publish)
        except MqttError as exc:
            raise ForwardFrameError(pos, f"bad PUBLISH: {exc}") from None
        if len(packets) != 1 or used != publish_len or not isinstance(packets[0], mqtt.Publish):
            raise ForwardFrameError(pos, "not exactly one PUBLISH packet")
        pos += publish_len
        p = packets[0]
        handover = None
        if flags & SESSION:
            sub_ids = tuple((p.properties or {}).get("subscription_identifier") or ())
            handover = Handover(client_id, sub_ids, packet_id, bool(released))
        message = Message(p.topic, p.payload, p.qos, p.retain, p.properties, sender)
        out.append((flags, message, frozenset(groups), stamp, handover))
    if pos != len(data):
        raise ForwardFrameError(pos, f"{len(data) - pos} bytes after the last message")
    return node_id, sent, out


class ClusterLink:
    """The forwarding between this node's broker and the other nodes' (see the module
    docstring): ``broker``'s router, counters and publishing connection. ``routes()``
    reads the ``routes`` table of this node's meta replica, ``watch()`` opens a watch
    stream on it, ``addresses()`` maps node ids to gRPC addresses, ``brokers()`` names
    the nodes that run a broker (the node registry), ``channel(address)`` opens a gRPC
    channel."""

    def __init__(
        self,
        node_id: int,
        broker: MqttBroker,
        proposer: RouteProposer,
        watch: Callable[[], RouteWatch],
        routes: Callable[[], dict[str, dict[str, int]]],
        addresses: Callable[[], dict[int, str]],
        brokers: Callable[[], set[int]],
        channel: Callable[[str], Any],
    ) -> None:
        self.node_id = node_id
        self.broker = broker
        self.router = broker.router
        self.stats: Counter[str] = broker.stats
        self._proposer = proposer
        self._watch = watch
        self._routes = routes
        self._addresses = addresses
        self._brokers = brokers
        self._channel = channel
        self._local: dict[str, int] = {}  # filter -> sessions of this node holding it
        self._dirty: set[str] = set()
        self._proposed: set[str] = set()
        self._replace = True
        self._route_wake = asyncio.Event()
        self._remote = trie.SubscriptionTrie()
        self._remote_routes: dict[int, set[str]] = {}
        self._internal: dict[str, int] = {}  # filter the router hands us -> remote routes
        self._plans: dict[str, tuple[list[Peer], list[tuple[str, str, list[Peer]]]]] = {}
        self._plans_generation = (-1, -1)
        self._turn: dict[str, int] = {}  # "group/filter" -> the next member's turn
        self._peers: dict[int, Peer] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._gate = ForwardGate()
        self._retained_at: dict[str, Stamp] = {}  # topic -> when its retained message was set
        self._last_stamp = 0

    # ------------------------------------------------------------------ router hooks

    def subscribed(self, topic_filter: str) -> None:
        held = self._local.get(topic_filter, 0)
        self._local[topic_filter] = held + 1
        if not held:
            self._dirty.add(topic_filter)
            self._route_wake.set()

    def unsubscribed(self, topic_filter: str) -> None:
        held = self._local.get(topic_filter, 0) - 1
        if held > 0:
            self._local[topic_filter] = held
            return
        self._local.pop(topic_filter, None)
        self._dirty.add(topic_filter)
        self._route_wake.set()

    def retained(self, message: Message) -> None:
        """A retained message set (or cleared) by a client of this node: stamped later than
        anything this node has seen for its topic, and sent to every other broker."""
        held = self._retained_at.get(message.topic)
        ms = max(time.time_ns() // 1_000_000, self._last_stamp + 1)
        if held is not None and held[0] >= ms:
            ms = held[0] + 1
        self._last_stamp = ms
        stamp = self._retained_at[message.topic] = (ms, self.node_id)
        for node_id in self._brokers():
            if node_id != self.node_id:
                self._enqueue(self._peer(node_id), (message, (), STORE_ONLY, stamp, None))

    def connected(self, client_id: str) -> None:
        """A client connected here: every other broker lets its connection of the same
        client id go (MQTT 5 §3.1.4-3), if it is older than this one."""
        stamp = (time.time_ns() // 1_000_000, self.node_id)
        notice = Message(_TAKEOVER_TOPIC, b"", 0, False, None, client_id)
        for node_id in self._brokers():
            if node_id != self.node_id:
                self._enqueue(self._peer(node_id), (notice, (), TAKEOVER, stamp, None))

    def hand_over(
        self, client_id: str, node_id: int, owed: list[Owed], done: Callable[[], None]
    ) -> int:
        """What this node owed ``client_id``'s session, for node ``node_id``, which holds
        the session now, in order: each delivery with the packet identifier it was sent
        with (0: never sent) and whether its PUBREL went out. Returns how many were
        queued (beyond the link's bounds the rest are dropped, counted and logged);
        ``done`` is called once none waits any more (``HandoverTicket``)."""
        if not owed:
            done()
            return 0
        peer = self._peer(node_id)
        ticket = HandoverTicket(len(owed), done)
        queued = 0
        for delivery, packet_id, released in owed:
            message = delivery.message
            copy = Message(message.topic, message.payload, delivery.qos, delivery.retain)
            copy.properties = message.properties
            copy.expires_at = message.expires_at
            copy.sender = message.sender
            groups = ("/".join(delivery.shared),) if delivery.shared else ()
            handover = Handover(client_id, delivery.sub_ids, packet_id, released, ticket)
            if self._enqueue(peer, (copy, groups, SESSION, None, handover)):
                queued += 1
            else:
                ticket.gone()
        return queued

    def deliver_messages(self, messages: list[Message]) -> None:
        """``InternalSubscriber``: messages some other node subscribes to."""
        topic = None
        normal: list[Peer] = []
        shared: list[tuple[str, str, list[Peer]]] = []
        for message in messages:
            if message.topic != topic:
                topic = message.topic
                normal, shared = self._plan(topic)
            if not shared:
                for peer in normal:
                    self._enqueue(peer, (message, (), 0, None, None))
                continue
            chosen: dict[Peer, list[str]] = {peer: [] for peer in normal}
            here = self.router.shared_online_here(topic)
            for group, topic_filter, members in shared:
                if (group, topic_filter) in here:
                    continue  # a member connected here takes it (Router.route)
                # A node that does not answer takes no turn while another member's does.
                tag = f"{group}/{topic_filter}"
                answering = [m for m in members if m.answers] or members
                chosen.setdefault(self._next_member(tag, answering), []).append(tag)
            for peer, groups in chosen.items():
                self._enqueue(peer, (message, tuple(groups), 0, None, None))

    def shared_elsewhere(self, topic: str, group: str, topic_filter: str) -> bool:
        """Whether another node has a member of shared group ``group`` on
        ``topic_filter``, matching ``topic``."""
        return any(g == group and f == topic_filter for g, f, _ in self._plan(topic)[1])

    def _plan(self, topic: str) -> tuple[list[Peer], list[tuple[str, str, list[Peer]]]]:
        """The nodes with a plain filter matching ``topic``, and the shared groups matching
        it that have members on other nodes (cached until either changes). A message goes
        to one of a group's nodes when no member of the group is connected here."""
        generation = (self._remote.generation, self.router.subscriptions.generation)
        if generation != self._plans_generation:
            self._plans.clear()
            self._plans_generation = generation
        plan = self._plans.get(topic)
        if plan is None:
            normal, groups = self._remote.match(topic)
            plan = (
                list(dict.fromkeys(peer for peer, _ in normal)),
                [(g, f, list(members)) for g, f, members in groups],
            )
            if len(self._plans) >= 65536:
                self._plans.clear()
            self._plans[topic] = plan
        return plan

    # ------------------------------------------------------------------ receiving

    async def receive(self, frame: bytes) -> None:
        """A frame another node forwarded: decoded whole (``ForwardFrameError`` refuses it
        all), each message delivered, or kept as a retained message when it was set later
        than the one this node holds; first, while a slow subscriber holds the gate back,
        it waits (at most ``mqtt.backpressure_timeout``)."""
        from_node, sent, entries = decode_frame(frame)
        broker = self.broker
        if broker.loading is not None and any(entry[4] is not None for entry in entries):
            raise ForwardNotReady(
                f"node {self.node_id} is loading its sessions: handovers from node {from_node} wait"
            )
        if not self._gate.open.is_set():
            # A subscriber here is behind: this frame waits (the sender's next one with
            # it), and is delivered once the gate opens or the wait is over. Waiting after
            # delivering instead would let the sender time out and send it again.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._gate.open.wait(), broker.config.backpressure_timeout)
        router = self.router
        retained_at = self._retained_at
        # The time a frame spent on its way (a node stopped, a network stall) counts
        # against the messages' expiry, as their time in a queue would (§3.3.2.3.3).
        age = max(0.0, (time.time_ns() // 1_000_000 - sent) / 1000)
        now = time.monotonic()
        broker.publishing = self._gate
        broker.reading = True  # what the frame makes is written as one read's output
        try:
            for flags, message, groups, stamp, handover in entries:
                if flags & TAKEOVER:
                    if stamp is not None:
                        broker.taken_over_elsewhere(message.sender, stamp[0], from_node)
                    continue
                if message.expires_at:
                    message.expires_at -= age
                    if message.expired(now):
                        broker.counters.drop(EXPIRED, message.qos)
                        continue
                if handover is not None:
                    shared = next(iter(groups), None)
                    delivery = Delivery(
                        message, message.qos, message.retain, handover.sub_ids, shared
                    )
                    if not broker.handed_over(handover, delivery):
                        self._pass_on(message, groups, handover, from_node)
                elif flags & STORE_ONLY:
                    held = retained_at.get(message.topic)
                    if stamp is not None and (held is None or stamp > held):
                        retained_at[message.topic] = stamp
                        router.retain(message, local=False)
                else:
                    router.route_forwarded(message, groups, from_node)
        finally:
            broker.publishing = None
            broker.reading = False
            broker.flush_pending()
        self.stats["cluster_forwarded_in"] += len(entries)

    def _pass_on(
        self,
        message: Message,
        groups: frozenset[tuple[str, str]],
        handover: Handover,
        from_node: int,
    ) -> None:
        """A handed-over delivery for a session this node does not hold: to the node the
        group's record names (the session moved on, or came back to the sender before
        the handover arrived); dropped, counted and logged when there is none."""
        node_id = self.broker.store.session_node(handover.client_id)
        if node_id is None or node_id == self.node_id:
            self.stats["cluster_forward_dropped"] += 1
            failure_log.log(
                logging.WARNING,
                "a message node %d handed over for session %r is dropped: no node holds "
                "the session",
                from_node,
                handover.client_id,
            )
            return
        tags = tuple(f"{group}/{topic_filter}" for group, topic_filter in groups)
        self._enqueue(self._peer(node_id), (message, tags, SESSION, None, handover))

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._route_wake.set()  # the first round replaces what a previous run left
        self._tasks.append(loop.create_task(self._write_routes()))
        self._tasks.append(loop.create_task(self._follow_routes()))

    async def stop(self) -> None:
        self._closing = True
        for peer in self._peers.values():
            self._release(peer)
        tasks = self._tasks + [p.task for p in self._peers.values() if p.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for peer in self._peers.values():
            if peer.channel is not None:
                await peer.channel.close()

    # ------------------------------------------------------------------ routes

    async def _write_routes(self) -> None:
        failures = 0
        while True:
            await self._route_wake.wait()
            self._route_wake.clear()
            replace = self._replace
            if replace:
                self._dirty.clear()
                add, delete = sorted(self._local), []
            else:
                dirty, self._dirty = self._dirty, set()
                add = [f for f in dirty if f in self._local and f not in self._proposed]
                delete = [f for f in dirty if f not in self._local and f in self._proposed]
                if not add and not delete:
                    continue
            command = orjson.dumps(
                {
                    "v": 1,
                    "op": "route.update",
                    "node_id": self.node_id,
                    "add": add,
                    "delete": delete,
                    "replace": replace,
                }
            )
            try:
                await self._proposer.propose(GROUP, command)
            except MetaError as exc:
                failures += 1
                # While the cluster forms (the first round) a missing leader is expected.
                failure_log.log(
                    logging.INFO if replace else logging.WARNING,
                    "cluster routes of node %d not stored yet (%s); retrying",
                    self.node_id,
                    exc,
                )
                # A timed-out proposal may have committed after all: what the table holds
                # for this node is unknown, so the next round sends the whole set.
                self._replace = True
                await asyncio.sleep(RETRY_DELAYS[min(failures, len(RETRY_DELAYS)) - 1])
                self._route_wake.set()
                continue
            failures = 0
            if replace:
                self._replace = False
                self._proposed = set(add)
            else:
                self._proposed.update(add)
                self._proposed.difference_update(delete)

    async def _follow_routes(self) -> None:
        """The other nodes' routes, kept up to date from the watch stream; anything but
        the meta role stopping opens a new stream, from a full resync, after a pause."""
        restarted = False
        while True:
            watch = self._watch()
            try:
                if restarted:
                    self._sync_routes(None)
                while True:
                    touched: set[int] | None = set()
                    for event in await watch.next_events():
                        if event.kind == "snapshot":
                            touched = None
                        elif event.kind == "entry" and event.data and touched is not None:
                            touched.update(_route_nodes(event.data))
                    if touched is None or touched:
                        self._sync_routes(touched)
            except MetaError:
                return  # the meta role stopped
            except Exception:
                log.exception(
                    "following the other nodes' routes failed; starting over in %.0f s",
                    FOLLOW_RETRY,
                )
            finally:
                watch.close()
            restarted = True
            await asyncio.sleep(FOLLOW_RETRY)

    def _sync_routes(self, nodes: set[int] | None) -> None:
        """The other nodes' routes in the trie made what the table holds, for ``nodes``
        (None: all of them)."""
        table = self._routes()
        if nodes is None:
            nodes = {int(k) for k in table} | set(self._remote_routes)
        nodes.discard(self.node_id)
        for node_id in nodes:
            wanted = set(table.get(str(node_id), ()))
            held = self._remote_routes.get(node_id, set())
            if wanted == held:
                continue
            peer = self._peer(node_id)
            for topic_filter in held - wanted:
                self._remote.remove(topic_filter, peer)
                self._internal_change(topic_filter, -1)
            for topic_filter in wanted - held:
                self._remote.add(topic_filter, peer, None)
                self._internal_change(topic_filter, 1)
            if wanted:
                self._remote_routes[node_id] = wanted
            else:
                self._remote_routes.pop(node_id, None)
            for topic_filter in held - wanted:
                self._forget_turn(topic_filter)

    def _forget_turn(self, topic_filter: str) -> None:
        """A shared group's turn goes with its last route on another node, so that groups
        come and gone leave nothing behind."""
        shared = trie.parse_shared(topic_filter)
        if shared is None or any(topic_filter in held for held in self._remote_routes.values()):
            return
        self._turn.pop(f"{shared[0]}/{shared[1]}", None)

    def _internal_change(self, topic_filter: str, change: int) -> None:
        shared = trie.parse_shared(topic_filter)
        plain = shared[1] if shared is not None else topic_filter
        count = self._internal.get(plain, 0) + change
        if count > 0:
            if count == 1 and change > 0:
                self.router.subscribe_internal(self, plain)
            self._internal[plain] = count
        else:
            self._internal.pop(plain, None)
            self.router.unsubscribe_internal(self, plain)

    # ------------------------------------------------------------------ sending

    def _peer(self, node_id: int) -> Peer:
        peer = self._peers.get(node_id)
        if peer is None:
            peer = self._peers[node_id] = Peer(node_id)
        return peer

    def _enqueue(self, peer: Peer, entry: Queued) -> bool:
        size = _size(entry[0])
        if peer.queued >= MAX_QUEUED or (
            peer.queued and peer.queued_bytes + size > MAX_QUEUED_BYTES
        ):
            self.stats["cluster_forward_dropped"] += 1
            failure_log.log(
                logging.WARNING,
                "messages for node %d dropped: %d already wait for it (%d bytes)",
                peer.node_id,
                peer.queued,
                peer.queued_bytes,
            )
            return False
        peer.queue.append(entry)
        peer.queued += 1
        peer.queued_bytes += size
        if (peer.queued >= HOLD_BACK or peer.queued_bytes >= HOLD_BACK_BYTES) and peer.answers:
            self._hold_back(peer)
        if peer.task is None and not self._closing:
            peer.task = asyncio.get_running_loop().create_task(self._send(peer))
        peer.ready.set()
        return True

    def _hold_back(self, peer: Peer) -> None:
        publisher = self.broker.publishing
        if publisher is None or publisher.closing:
            return
        if peer.held is None:
            peer.held = set()
        if publisher not in peer.held:
            peer.held.add(publisher)
            publisher._pause_reading()

    @staticmethod
    def _release(peer: Peer) -> None:
        held, peer.held = peer.held, None
        for publisher in held or ():
            publisher._resume_reading()

    async def _send(self, peer: Peer) -> None:
        failures = 0
        while True:
            await peer.ready.wait()
            peer.ready.clear()
            while peer.queue:
                if peer.call is None:
                    if peer.channel is None:
                        address = self._addresses().get(peer.node_id)
                        if address is None:
                            self._drop_all(peer, "its address is not known")
                            break
                        peer.channel = self._channel(address)
                        peer.address = address
                    peer.call = peer.channel.stream_stream(FORWARD_METHOD)()
                batch, taken = self._frame(peer)
                if not batch:  # all of it expired or was too large
                    self._sent(peer, 0, 0)  # (releases the publishers it held back)
                    continue
                try:
                    timeout = SEND_TIMEOUT + self.broker.config.backpressure_timeout
                    await asyncio.wait_for(self._call(peer, batch), timeout)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # grpc.aio.AioRpcError, a timeout, the stream ending
                    peer.call.cancel()
                    peer.call = None  # the next attempt opens a new stream
                    if self._addresses().get(peer.node_id) != peer.address:
                        # The node moved (or left the cluster): a new channel, or none.
                        stale, peer.channel = peer.channel, None
                        closing = asyncio.get_running_loop().create_task(stale.close())
                        self._tasks.append(closing)
                        closing.add_done_callback(self._tasks.remove)
                    failures += 1
                    peer.answers = False
                    self._release(peer)  # a node that does not answer holds nobody back
                    self._reroute(peer)
                    failure_log.log(
                        logging.WARNING,
                        "forwarding to node %d failed (%s); %d messages wait",
                        peer.node_id,
                        exc.details() if hasattr(exc, "details") else exc,
                        peer.queued,
                    )
                    await asyncio.sleep(RETRY_DELAYS[min(failures, len(RETRY_DELAYS)) - 1])
                    continue
                failures = 0
                peer.answers = True
                self._sent(peer, taken, len(batch))

    def _reroute(self, peer: Peer) -> None:
        """Shared-group messages waiting for a node that does not answer go to another
        member of their group on a node that does; what the node's plain subscriptions
        want stays queued for it."""
        kept: list[Queued] = []
        for entry in peer.queue:
            message, groups, flags = entry[:3]
            if not groups or flags & SESSION:  # a handover is for that node's session
                kept.append(entry)
                continue
            normal, shared = self._plan(message.topic)
            members = {f"{g}/{f}": m for g, f, m in shared}
            stay = []
            for tag in groups:
                others = [m for m in members.get(tag, ()) if m is not peer and m.answers]
                if others:
                    self._enqueue(self._next_member(tag, others), (message, (tag,), 0, None, None))
                else:
                    stay.append(tag)
            if stay or peer in normal:
                kept.append((message, tuple(stay), flags, entry[3], entry[4]))
        peer.queue[:] = kept
        peer.queued = len(kept)
        peer.queued_bytes = sum(_size(entry[0]) for entry in kept)

    def _next_member(self, tag: str, members: list[Peer]) -> Peer:
        turn = self._turn.get(tag, 0)
        self._turn[tag] = turn + 1
        return members[turn % len(members)]

    def _frame(self, peer: Peer) -> tuple[list[bytes], int]:
        """The next frame's entries from the head of ``peer``'s queue (about
        ``MAX_FRAME_BYTES``, never over ``FRAME_LIMIT``), encoded now, and how many queued
        messages they are. A message whose expiry ran out while it waited is dropped
        (MQTT 5 §3.3.2.3.3), as is one too large for a frame of its own: both leave the
        queue here, so a failed attempt does not count them again on the next."""
        batch: list[bytes] = []
        size = 0
        taken = 0
        dropped: list[int] = []
        now = time.monotonic()
        for index, (message, groups, flags, stamp, handover) in enumerate(peer.queue):
            if batch and size >= MAX_FRAME_BYTES:
                break
            if message.expired(now):
                self.broker.counters.drop(EXPIRED, message.qos)
                dropped.append(index)
                continue
            entry = encode_entry(message, groups, flags, stamp, handover)
            if _HEAD.size + len(entry) > FRAME_LIMIT:
                self.stats["cluster_forward_dropped"] += 1
                failure_log.log(
                    logging.WARNING,
                    "a message on %r of %d bytes is not forwarded to node %d: a frame "
                    "carries at most %d bytes",
                    message.topic,
                    len(entry),
                    peer.node_id,
                    FRAME_LIMIT,
                )
                dropped.append(index)
                continue
            if batch and _HEAD.size + size + len(entry) > FRAME_LIMIT:
                break  # it goes in a frame of its own, next
            batch.append(entry)
            size += len(entry)
            taken += 1
        gone = []
        for index in reversed(dropped):  # the batch's entries move up to the head
            gone.append(peer.queue.pop(index))
            peer.queued_bytes -= _size(gone[-1][0])
            peer.queued -= 1
        _gone(gone)
        return batch, taken

    def _sent(self, peer: Peer, taken: int, sent: int) -> None:
        gone = peer.queue[:taken]
        peer.queued_bytes -= sum(_size(entry[0]) for entry in gone)
        del peer.queue[:taken]
        peer.queued -= taken
        _gone(gone)
        self.stats["cluster_forwarded_out"] += sent
        if peer.held is not None and peer.queued <= RESUME and peer.queued_bytes <= RESUME_BYTES:
            self._release(peer)

    async def _call(self, peer: Peer, batch: list[bytes]) -> None:
        """One frame written to the node's Forward stream, and its answer read."""
        await peer.call.write(encode_frame(self.node_id, batch))
        answer = await peer.call.read()
        if not isinstance(answer, bytes):
            raise ConnectionError("the Forward stream ended")

    def _drop_all(self, peer: Peer, why: str) -> None:
        self.stats["cluster_forward_dropped"] += peer.queued
        failure_log.log(
            logging.WARNING, "%d messages for node %d dropped: %s", peer.queued, peer.node_id, why
        )
        gone, peer.queue = peer.queue, []
        peer.queued = peer.queued_bytes = 0
        self._release(peer)
        _gone(gone)


def _size(message: Message) -> int:
    """About the memory a queued message holds: its payload, topic and the rest."""
    return len(message.payload) + len(message.topic) + 100


def _route_nodes(command: bytes) -> set[int]:
    """The nodes whose routes an entry of the ``cluster`` group may change."""
    try:
        cmd = orjson.loads(command)
    except orjson.JSONDecodeError:
        return set()
    op = cmd.get("op") if isinstance(cmd, dict) else None
    if op == "route.update":
        node = cmd.get("node_id")
    elif op == "node.remove":
        node = cmd.get("id")
    else:
        return set()
    return {node} if isinstance(node, int) else set()
