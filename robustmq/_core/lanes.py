"""The lanes: the most common reads of an MQTT connection in one call, and the fields
they work on.

``forward`` (the QoS 0 lane) and ``connect`` (the connect lane) each do what the full
path does for the case they cover; anything else returns False before it changes
anything, and the read goes the full way (``MqttConnection._read``). ``ConnectionCore``
and ``SessionCore`` hold the fields of a connection and of a session, ``LaneContext``
what the lanes use of the broker, ``KeepAliveWheel`` when the broker looks at a
connected client again, and ``AcceptPoll`` how long the event loop stays awake after a
connection is made. ``_lanes.pyx`` is the compiled twin (C fields, no Python frame
between a read and its write); the tests compare both with the full path.

The QoS 0 lane: a read of plain QoS 0 PUBLISHes on one topic, forwarded as it came. At
light load most reads hold one PUBLISH or two, and the full path through the
connection's packet loop, the run handler and the write batching costs a dozen Python
calls for them, each slow when the caches are cold between messages.

Covered: a read shorter than 16 KiB of whole PUBLISH packets on one topic (first byte
0x30: QoS 0, no DUP, no RETAIN; the shortest Remaining Length; in 5.0 an empty property
block), each within the connection's maximum packet size: what the decoder makes one
``PublishRun`` of. The topic must have a delivery plan (``Router.forwarding``: a valid
name, no shared subscriptions or subscription identifiers, not ``$``), and every
subscriber must take the packets as they are: connected, in the publisher's protocol
family (3.1/3.1.1 or 5.0), not paused, no outbound topic aliases, each packet within its
Maximum Packet Size. The publisher's ACL, when it has one, must allow the topic; it must
have no publish quota or topic rewriting to apply, and the topic no internal subscriber
(the MQTT to Kafka bridge, the cluster link). When the handler timing is due to sample
this read (one run in ``every``), the lane times its own work and records that: stepping
aside for it put one read in 64 on the full path, the slowest 1.6 % of the messages at
light load.

Unlike the rest of ``_core`` this module reads and writes the broker's objects. Every
read enters through ``ConnectionCore.data_received`` (``MqttConnection``'s base), which
holds all of the connection's fields, among them those the lane uses: ``_buffer
connected closing version max_packet broker publish_quota authorizer client_id
last_seen paused alias_maximum transport client_max_packet _flush_scheduled _out
context``. ``context`` is the broker's
``LaneContext``, what the lane uses of the broker that stays the same for its lifetime
(the router, its trie and ``PlanCache``, ``stats``, ``counters.run_publishes
sent_by_qos``, ``handler_latency``). A hot change replaces the broker's
``config`` and ``rewriter``: the lane looks both up per read and compares them with the
ones the context has seen, whose ``max_topic_levels`` and ``active`` it keeps (both are
fixed for the life of their object).
The lane counts what it forwarded in the context's own integers, not in ``stats`` and
the counter lists: ``LaneContext.fold`` adds them there, and whatever reads those counts
(metrics, ``$SYS``) calls it first.
Of the router it uses ``internal_subscriptions internal_for forwarding``; of the
authorizer ``permits_publish``; of a session ``connection client_id``; of a plan
``messages``. A connection's ``max_packet`` is its decoder's limit (fixed when made).

The connect lane: ``connect`` accepts the most common first read the same way, in one
call instead of the full path's dozen and a half (the CONNECT handler, its checks, the
session, the CONNACK's write batching). It covers one whole 3.1.1 or 5.0 CONNECT with a
clean session and no will, username, password or properties, whose client id is 1 to 115
(5.0: 114) printable ASCII characters (space to ``~``) and has no session: what
``plain_connect`` recognises, sent to a broker whose ``admits_plain_connects()`` says
such a CONNECT needs no check beyond the session and ``max_connections`` (no
authentication, ACL, limits, redirect, auto-subscriptions or cluster); for 5.0 the
broker's ``max_keep_alive`` must leave the client's keep alive as it is (no Server Keep
Alive to send). Anything else goes the full way, where the decoder judges it. Besides the
core's fields it sets the connection's ``keep_alive opened_at session`` and its
decoder's ``protocol_version`` (0 until a CONNECT), and uses the broker's ``sessions
connections config.max_connections config.max_keep_alive`` and the context's
``packets_received packets_sent new_session wheel connack_v5`` (the broker's counters by
packet type; the 5.0 CONNACK of the config the lanes last saw, ``_see_config``).
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable
from typing import Any

from robustmq._core.mqtt_spec import CONNACK, CONNECT, MAX_PACKET_SIZE, PUBLISH_RUN

__all__ = [
    "ACCEPT_POLL_NS", "FAIR_READ", "AcceptPoll", "ConnectionCore", "KeepAliveWheel",
    "LaneContext", "Plan", "PlanCache", "SessionCore", "connect", "forward", "plain_connect",
    "scan",
]  # fmt: skip

FAIR_READ = 16 * 1024  # reads this long are a streaming client's: the full path
_UNKNOWN: Any = object()  # a topic the plan cache does not know (None: known to have no plan)
# A plain CONNECT's variable header up to its keep alive: protocol name "MQTT", level 4
# (3.1.1), flags 0x02 (clean session; no will, username or password).
_PLAIN_CONNECT = b"\x00\x04MQTT\x04\x02"
_CONNACK_ACCEPTED = b"\x20\x02\x00\x00"  # 3.1.1: session not present, accepted
# A 5.0 one: level 5, the same flags; an empty property block follows the keep alive.
_PLAIN_CONNECT_V5 = b"\x00\x04MQTT\x05\x02"


class Plan(list[Any]):
    """The router's delivery plan of one topic: its targets, (session, No Local, maximum
    QoS, Retain As Published) each, and the messages routed by it while cached (one
    integer add per message or run; a C field in the compiled twin)."""

    __slots__ = ("messages",)

    def __init__(self, targets: Any = ()) -> None:
        super().__init__(targets)
        self.messages = 0


class PlanCache:
    """The router's delivery plans per topic (``Router.forwarding``: a plan, or None for
    a topic that has none) and what they hold for: the subscription trie's
    ``generation`` and the ``max_topic_levels`` the topics were validated with. Kept here
    so that the lane reads a cached plan without calling the router."""

    __slots__ = ("plans", "generation", "levels")

    def __init__(self) -> None:
        self.plans: dict[str, Any] = {}
        self.generation = -1
        self.levels = 0


class LaneContext:
    """What the lane uses of one broker, looked up once (each is the broker's for its
    lifetime): the router, its subscription trie and plan cache, the broker's stats,
    the run and sent-by-QoS counters and the handler latencies with their countdown;
    and what the lane forwarded since the last ``fold``."""

    __slots__ = (
        "router", "trie", "plan_cache", "stats", "latency", "countdown", "run_publishes",
        "sent_by_qos",
        "packets_received", "packets_sent",
        "bytes_received", "messages_received", "bytes_sent", "messages_sent",
        "config", "max_levels", "rewriter", "rewriting", "decoder_type", "session_type",
        "counters", "wheel", "connack_v5", "accept_poll",
    )  # fmt: skip

    def __init__(self, broker: Any, decoder_type: Any, session_type: Any) -> None:
        router = broker.router
        self.router = router
        self.trie = router.subscriptions
        self.plan_cache: PlanCache = router.plan_cache
        self.stats: dict[str, int] = broker.stats
        self.latency = broker.handler_latency
        self.countdown: list[int] = broker.handler_latency.countdown
        self.run_publishes: list[int] = broker.counters.run_publishes
        self.sent_by_qos: list[int] = broker.counters.sent_by_qos
        self.packets_received: list[int] = broker.counters.packets_received
        self.packets_sent: list[int] = broker.counters.packets_sent
        # Counted here, in plain integers (C fields in the compiled twin): four updates of
        # the stats Counter cost the compiled lane more than the rest of its work.
        self.bytes_received = 0
        self.messages_received = 0
        self.bytes_sent = 0
        self.messages_sent = 0
        # The broker's config and rewriter the lanes last saw, and what they use of them
        # (``_see_config``: the topic level limit and the plain 5.0 CONNACK).
        self.config: Any = None
        self.max_levels = 0
        self.connack_v5 = b""
        self.rewriter: Any = None
        self.rewriting = False
        # The MQTT decoder class a new connection gets one of (the selected codec twin's),
        # and the broker's session class (a SessionCore).
        self.decoder_type = decoder_type
        self.session_type = session_type
        self.counters = broker.counters
        self.wheel: KeepAliveWheel = broker.wheel
        # Set when the node runs on an epoll loop whose descriptor it found.
        self.accept_poll: AcceptPoll | None = None

    def new_session(self, broker: Any, client_id: str, owner: str | None) -> Any:
        """A new, offline session of ``broker`` for ``client_id``, created by ``owner``:
        its queue's bound and drop policy are the broker's config's now."""
        config = broker.config
        session = self.session_type(
            client_id, config.max_queued_messages, config.queue_drop_policy == "drop_oldest"
        )
        session.owner = owner
        session.drops = self.counters  # counting its drops by reason
        return session

    def fold(self) -> None:
        """Adds what the lane counted to the broker's stats and counters (where the full
        path counts the same messages) and starts again from zero."""
        if not self.bytes_received:  # every read the lanes took counted its bytes
            return
        stats = self.stats
        stats["bytes_received"] += self.bytes_received
        if self.bytes_sent:
            stats["bytes_sent"] += self.bytes_sent
        if self.messages_received:  # not from a CONNECT alone (the connect lane)
            stats["messages_received"] += self.messages_received
            self.run_publishes[0] += self.messages_received  # a run each read: counters.py
        if self.messages_sent:
            stats["messages_sent"] += self.messages_sent
            self.sent_by_qos[0] += self.messages_sent
        self.bytes_received = self.messages_received = self.bytes_sent = self.messages_sent = 0


# How long the event loop polls, after a loop iteration that made connections, before it
# may sleep (``AcceptPoll``).
ACCEPT_POLL_NS = 30_000


class AcceptPoll:
    """Keeps the event loop awake for a moment after it makes connections.

    A client that has just connected sends its CONNECT microseconds later. A loop that
    goes to sleep in between is woken for it, and on a virtual machine a wake-up costs
    the woken process about 25 us and the waking one an interrupt: in a connection storm
    that was about 3,800 sleeps per 10,000 connections. ``arm`` (from
    ``ConnectionCore.connection_made``) schedules ``run`` once per loop iteration, and
    ``run`` polls the loop's own epoll descriptor ``fd`` until it has an event or
    ``window_ns`` have passed: at most that much CPU per iteration that made
    connections, none while no client connects. It never takes an event: the loop's
    next poll finds it ready. ``fd`` is not owned (``listeners.loop_epoll_fd`` finds it)."""

    __slots__ = ("fd", "window_ns", "armed", "_call_soon", "_poll")

    def __init__(self, fd: int, window_ns: int, call_soon: Callable[..., Any]) -> None:
        self.fd = fd
        self.window_ns = window_ns
        self.armed = False  # a run is scheduled
        self._call_soon = call_soon
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)  # an epoll descriptor: readable with events

    def arm(self) -> None:
        """Schedules one ``run`` for this loop iteration unless one is."""
        if not self.armed:
            self.armed = True
            self._call_soon(self.run)

    def run(self) -> bool:
        """Polls until the loop has an event (True) or the window is over (False)."""
        self.armed = False
        until = time.perf_counter_ns() + self.window_ns
        while True:
            if self._poll.poll(0):
                return True
            if time.perf_counter_ns() >= until:
                return False


class KeepAliveWheel:
    """When the broker looks at a connected client again for its keep alive: the
    clients by whole second of the monotonic clock (``due``) of the sweep that looks at
    them (``MqttBroker._sweep``), when 1.5 times their keep alive (§3.1.2.10) may have
    run out. Once per timeout, not once a second, and in one second at most: a
    connection's ``watched`` is its second (0: none)."""

    __slots__ = ("due", "swept")

    def __init__(self, swept: int) -> None:
        self.due: dict[int, set[Any]] = {}
        self.swept = swept  # the last second swept

    def watch(self, conn: Any, deadline: float) -> None:
        """Looks at ``conn`` in the first sweep after ``deadline`` (monotonic); one
        already past is looked at in the next sweep."""
        self.unwatch(conn)
        due = max(int(deadline) + 1, self.swept + 1)
        bucket = self.due.get(due)
        if bucket is None:
            self.due[due] = {conn}
        else:
            bucket.add(conn)
        conn.watched = due

    def unwatch(self, conn: Any) -> None:
        if conn.watched:
            bucket = self.due.get(conn.watched)
            if bucket is not None:
                bucket.discard(conn)
            conn.watched = 0


class SessionCore:
    """The base of ``Session`` (``robustmq/broker/mqtt/session.py``, which documents
    them): its fields, made here so that a new session costs no Python frame in the
    compiled twin (C fields there, which the lanes read without a lookup)."""

    __slots__ = (
        "client_id", "owner", "expiry_interval", "connection", "subscriptions", "inflight",
        "queue", "qos2_inbound", "max_queued", "drop_oldest", "dropped", "drops",
        "expiry_handle", "will_handle", "pending_will", "persisted", "journal", "moved_to",
        "_next_packet_id", "_unsent",
    )  # fmt: skip

    def __init__(self, client_id: str, max_queued: int, drop_oldest: bool) -> None:
        self.client_id = client_id
        self.owner: str | None = None
        self.expiry_interval = 0
        self.connection: Any = None
        self.subscriptions: dict[str, Any] = {}
        self.inflight: dict[int, Any] = {}
        self.queue: Any = None
        self.qos2_inbound: dict[int, None] = {}
        self.max_queued = max_queued
        self.drop_oldest = drop_oldest
        self.dropped = 0
        self.drops: Any = None
        self.expiry_handle: Any = None
        self.will_handle: Any = None
        self.pending_will: tuple[Any, str] | None = None
        self.persisted = False
        self.journal: Any = None
        self.moved_to: int | None = None
        self._next_packet_id = 0
        self._unsent = 0


class ConnectionCore:
    """The base of ``MqttConnection``: its fields, and the entry of every read.
    ``data_received`` offers the read to the lanes first and hands it to the
    connection's ``_read`` (the full path) when they do not take it. In the compiled twin
    the fields are C fields (the lanes read them without a lookup) and a new connection
    and its ``connection_made`` cost no Python frame."""

    __slots__ = (
        "broker", "decoder", "transport", "client_id", "version", "connected", "closing",
        "last_seen", "paused", "alias_maximum", "client_max_packet", "read_pauses",
        "publish_quota", "authorizer", "_buffer", "_out", "_flush_scheduled", "context",
        "max_packet",
        "_peer", "username", "session", "will", "keep_alive", "send_quota", "topic_aliases",
        "outbound_aliases", "paused_at", "held_back", "opened_at", "_auth", "_auth_method",
        "_pending_connect", "counted_ip", "_held", "superuser", "claims", "connected_ms",
        "watched",
    )  # fmt: skip

    def __init__(self, broker: Any) -> None:
        self.broker = broker
        context: LaneContext | None = broker.lane_context
        self.context = context
        self.decoder: Any = None  # made here when the broker has a context
        self.max_packet = MAX_PACKET_SIZE  # ours: the decoder's max_packet_size
        if context is not None:
            limit = broker.config.max_packet_size  # a change applies to later connections
            self.decoder = context.decoder_type(0, limit, True)  # grouping runs
            self.max_packet = limit
        self.transport: Any = None
        self.client_id = ""
        self.version = 4
        self.connected = False
        self.closing = False
        self.last_seen = time.monotonic()
        self.paused = False
        self.alias_maximum = 0  # the client's Topic Alias Maximum: aliases we may send
        self.client_max_packet = MAX_PACKET_SIZE  # the client's Maximum Packet Size
        self.read_pauses = 0  # subscribers that paused reading from us
        self.publish_quota: Any = None  # None: no quota; see broker/auth/limits.py
        self.authorizer: Any = None  # ACL of this client (None: nothing is denied)
        self._buffer = b""  # the start of a packet the next read completes
        self._out: list[bytes] | None = None  # output waiting for the next loop iteration
        self._flush_scheduled = False
        self._peer: str | None = None  # host:port, looked up when first needed
        self.username: str | None = None
        self.session: Any = None
        self.will: Any = None
        self.keep_alive = 0
        self.send_quota = 65535  # the client's Receive Maximum
        # Containers are created on first use: most clients never need them, and an empty
        # dict, set or list costs 56-216 bytes per connection.
        self.topic_aliases: dict[int, str] | None = None  # the client's, for its PUBLISHes
        self.outbound_aliases: dict[str, int] | None = None
        self.paused_at = 0.0
        self.held_back: set[Any] | None = None  # publishers paused for our sake
        # When the network connection was established (set by connection_made; for TLS
        # after its handshake), until CONNECT arrives (then 0; the broker's sweep
        # enforces connect_timeout: no timer per connection).
        self.opened_at = self.last_seen
        self.connected_ms = 0  # wall clock of the CONNACK (a cluster orders takeovers by it)
        self._auth: Any = None  # an enhanced-authentication exchange
        self._auth_method: str | None = None
        # A CONNECT awaiting its AUTH exchange or its authenticators: (packet, assigned id,
        # the exchange).
        self._pending_connect: tuple[Any, bool, Any] | None = None
        # What the authenticators said, kept so an ACL change can rebuild the authorizer.
        self.superuser = False
        self.claims: Any = None
        self.counted_ip: str | None = None  # counted in the per-IP connection limit
        self._held: list[Any] | None = None  # packets behind a CONNECT being authenticated
        self.watched = 0  # the second the broker's sweep looks at it next (0: none)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        # The CONNECT timeout counts from here, after a TLS handshake too (3.1.1 on
        # CONNECT: "a reasonable amount of time after the Network Connection is
        # established"); the handshake has its own timeout.
        self.opened_at = self.last_seen = time.monotonic()
        broker = self.broker
        broker.connections.add(self)
        broker.stats["connections_total"] += 1
        broker.connecting.append(self)
        if self.context is not None and self.context.accept_poll is not None:
            self.context.accept_poll.arm()

    def data_received(self, data: bytes) -> None:
        # Plain QoS 0 PUBLISHes on one topic, or a plain CONNECT: one call (a read is
        # bytes; anything else, a WebSocket frame's bytearray say, takes the full path,
        # as in the C twin).
        if type(data) is bytes and (forward if self.connected else connect)(self, data):
            return
        self._read(data)

    def _read(self, data: bytes) -> None:
        raise NotImplementedError  # MqttConnection: the full path


def scan(data: bytes, v5: bool) -> tuple[int, int, int, int] | None:
    """(topic start, topic end, packet count, largest packet) when ``data`` is whole
    QoS 0 PUBLISH packets with no DUP or RETAIN flag, all on the first one's topic (in
    5.0 each with an empty property block), else None."""
    n = len(data)
    if n >= FAIR_READ:
        return None
    i, count, largest = 0, 0, 0
    start = end = 0
    while i < n:
        if data[i] != 0x30:
            return None
        pos, length, shift = i + 1, 0, 0
        while True:
            if pos - i > 4 or pos >= n:
                return None
            b = data[pos]
            length |= (b & 0x7F) << shift
            shift += 7
            pos += 1
            if b < 0x80:
                if b == 0 and pos - i > 2:
                    return None  # not the shortest encoding: the decoder judges it
                break
        packet_end = pos + length
        if length < 2 or packet_end > n:
            return None
        tl = (data[pos] << 8) | data[pos + 1]
        if tl == 0 or pos + 2 + tl + v5 > packet_end or (v5 and data[pos + 2 + tl] != 0):
            return None
        if count == 0:
            start, end = pos + 2, pos + 2 + tl
        elif data[pos + 2 : pos + 2 + tl] != data[start:end]:
            return None
        count += 1
        largest = max(largest, packet_end - i)
        i = packet_end
    if count == 0:
        return None
    return start, end, count, largest


def forward(conn: Any, data: bytes) -> bool:
    """Forwards ``data`` when it is plain QoS 0 PUBLISHes the lane covers; True when it
    did (the read is handled), False with nothing changed otherwise (caches aside)."""
    if conn._buffer or not conn.connected or conn.closing:
        return False
    v5 = conn.version == 5
    found = scan(data, v5)
    if found is None:
        return False
    start, end, count, largest = found
    if 0 in data[start:end]:
        return False  # U+0000 is malformed: the decoder says so
    if largest > conn.max_packet:
        return False
    context = conn.context
    if context is None or conn.publish_quota is not None:
        return False
    broker = conn.broker
    config = broker.config
    if config is not context.config:  # replaced by a hot change
        _see_config(context, broker, config)
    rewriter = broker.rewriter
    if rewriter is not context.rewriter:
        context.rewriter, context.rewriting = rewriter, rewriter.active
    if context.rewriting:
        return False
    countdown = context.countdown
    timed = countdown[PUBLISH_RUN] <= 1  # the one run in latency.every that is timed
    started = time.perf_counter_ns() if timed else 0
    try:
        topic = data[start:end].decode("utf-8")
    except UnicodeDecodeError:
        return False
    router = context.router
    max_levels = context.max_levels
    cache = context.plan_cache
    plan = _UNKNOWN
    if context.trie.generation == cache.generation and max_levels == cache.levels:
        plan = cache.plans.get(topic, _UNKNOWN)  # what forwarding would answer
    if plan is _UNKNOWN:
        plan = router.forwarding(topic, max_levels)  # validates, plans and caches it
    if plan is None:
        return False
    if router.internal_subscriptions and router.internal_for(topic):
        return False  # the bridge or the cluster link takes these messages too
    authorizer = conn.authorizer
    if authorizer is not None and not authorizer.permits_publish(topic, 0, False):
        return False  # refused, counted and logged by the full path
    for target in plan:
        sub = target[0].connection
        if sub is None:
            return False  # offline: counted as dropped by the full path
        if (sub.version == 5) != v5 or sub.paused or sub.alias_maximum:
            return False
        transport = sub.transport
        if transport is None or transport.is_closing() or largest > sub.client_max_packet:
            return False
    # Everything is known: forward, and count as the full path would.
    conn.last_seen = time.monotonic()
    n = len(data)
    context.bytes_received += n
    if timed:
        countdown[PUBLISH_RUN] = context.latency.every
    else:
        countdown[PUBLISH_RUN] -= 1  # one run: the full path counts packets by this
    context.messages_received += count
    plan.messages += count
    sender = conn.client_id
    for target in plan:
        session = target[0]
        sub = session.connection
        if target[1] and session.client_id == sender:
            continue  # No Local
        if sub._flush_scheduled:
            sub._out.append(data)  # behind what waits for the next loop iteration
        else:
            sub.transport.write(data)
            context.bytes_sent += n
        context.messages_sent += count
    if timed:
        context.latency.record(PUBLISH_RUN, time.perf_counter_ns() - started)
    return True


def _see_config(context: LaneContext, broker: Any, config: Any) -> None:
    """The broker's config is one the lanes have not seen (a hot change replaces it):
    keeps what they use of it."""
    context.max_levels = config.max_topic_levels
    context.connack_v5 = broker.plain_connack_v5()
    context.config = config


def plain_connect(data: bytes) -> tuple[int, str, int] | None:
    """(protocol version, client id, keep alive) when ``data`` is one whole plain CONNECT
    (see the module doc), else None."""
    n = len(data)
    if n < 15 or n > 129 or data[0] != 0x10 or data[1] + 2 != n:
        return None  # n <= 129: a one-byte Remaining Length
    header = data[2:10]
    if header == _PLAIN_CONNECT:
        version, start = 4, 14
    elif header == _PLAIN_CONNECT_V5 and n >= 16 and data[12] == 0:
        version, start = 5, 15  # no properties: their length is 0
    else:
        return None
    if (data[start - 2] << 8) | data[start - 1] != n - start:
        return None
    client_id = data[start:]
    if any(b < 0x20 or b > 0x7E for b in client_id):
        return None
    return version, client_id.decode("ascii"), (data[10] << 8) | data[11]


def connect(conn: Any, data: bytes) -> bool:
    """Accepts ``data`` when it is a plain CONNECT the connect lane covers, as the full
    path would: a new session, the CONNACK written, the keep alive watched. True when it
    did, False with nothing changed otherwise."""
    found = plain_connect(data)
    if found is None:
        return False
    decoder, transport, context = conn.decoder, conn.transport, conn.context
    if conn._buffer or conn.closing or conn._out is not None or context is None:
        return False
    if decoder is None or decoder.protocol_version or transport is None or transport.is_closing():
        return False  # a CONNECT came before: the full path refuses this one
    broker = conn.broker
    version, client_id, keep_alive = found
    sessions = broker.sessions
    config = broker.config
    if client_id in sessions or len(broker.connections) > config.max_connections:
        return False
    connack = _CONNACK_ACCEPTED
    if version == 5:
        longest = config.max_keep_alive  # 0: any; else the client would be told another
        if longest and (keep_alive == 0 or keep_alive > longest):
            return False
        if config is not context.config:  # replaced by a hot change
            _see_config(context, broker, config)
        connack = context.connack_v5
    if not broker.admits_plain_connects():
        return False
    # Accepted: what the CONNECT handler, its session and CONNACK would do.
    decoder.protocol_version = version
    conn.version = version
    conn.client_id = client_id
    conn.last_seen = time.monotonic()
    conn.keep_alive = keep_alive
    conn.opened_at = 0.0  # the broker's sweep drops it from the sockets awaiting CONNECT
    conn.connected = True
    if keep_alive:
        context.wheel.watch(conn, conn.last_seen + keep_alive * 1.5)
    session = context.new_session(broker, client_id, None)
    sessions[client_id] = session
    session.connection = conn  # Session.resume for a new session
    conn.session = session
    context.packets_received[CONNECT] += 1
    context.packets_sent[CONNACK] += 1
    context.bytes_received += len(data)
    context.bytes_sent += len(connack)
    transport.write(connack)
    return True
