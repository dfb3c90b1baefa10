# cython: language_level=3
"""Compiled twin of ``lanes.py``: see that module for what the lanes cover and the
attributes of the broker's objects they read and write. Same behaviour, without the
interpreter between the read and the write."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.ref cimport PyObject
from libc.string cimport memcmp
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from robustmq._core.mqtt_spec import CONNACK, CONNECT, MAX_PACKET_SIZE, PUBLISH_RUN


cdef extern from "sys/epoll.h" nogil:
    cdef struct epoll_event:
        pass
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)


__all__ = [
    "ACCEPT_POLL_NS", "FAIR_READ", "AcceptPoll", "ConnectionCore", "KeepAliveWheel",
    "LaneContext", "Plan", "PlanCache", "SessionCore", "connect", "forward", "plain_connect",
    "scan",
]

FAIR_READ = 16 * 1024  # reads this long are a streaming client's: the full path
ACCEPT_POLL_NS = 30_000  # see lanes.py

cdef Py_ssize_t _RUN = PUBLISH_RUN
cdef Py_ssize_t _FAIR_READ = FAIR_READ
cdef Py_ssize_t _CONNECT = CONNECT
cdef Py_ssize_t _CONNACK = CONNACK
# A plain CONNECT's variable header up to its keep alive (see lanes.py).
cdef bytes _PLAIN_CONNECT = b"\x00\x04MQTT\x04\x02"
cdef bytes _CONNACK_ACCEPTED = b"\x20\x02\x00\x00"
cdef bytes _PLAIN_CONNECT_V5 = b"\x00\x04MQTT\x05\x02"


cdef inline double _now() noexcept:
    """time.monotonic() without the call: the same clock."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef inline long long _now_ns() noexcept:
    """time.perf_counter_ns() without the call: the same clock."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec * 1000000000 + ts.tv_nsec


cdef class Plan(list):
    """The delivery plan of one topic (see ``lanes.Plan``), counting in a C field."""

    cdef public long long messages


cdef class PlanCache:
    """The router's delivery plans per topic and what they hold for (see
    ``lanes.PlanCache``), as C fields."""

    cdef public dict plans
    cdef public long long generation
    cdef public Py_ssize_t levels

    def __init__(self):
        self.plans = {}
        self.generation = -1


cdef class LaneContext:
    """What the lane uses of one broker, looked up once (see ``lanes.LaneContext``)."""

    cdef public object router, trie
    cdef public PlanCache plan_cache
    cdef public object stats  # a Counter
    cdef public object latency  # the handler latencies (a LatencyHistogram)
    cdef public list countdown, run_publishes, sent_by_qos, packets_received, packets_sent
    cdef public long long bytes_received, messages_received, bytes_sent, messages_sent
    cdef public object config, rewriter, decoder_type, session_type, counters
    cdef public KeepAliveWheel wheel
    cdef public AcceptPoll accept_poll
    cdef public bytes connack_v5
    cdef public Py_ssize_t max_levels
    cdef public bint rewriting

    def __init__(self, broker, decoder_type, session_type):
        self.decoder_type = decoder_type
        self.session_type = session_type
        self.counters = broker.counters
        self.wheel = broker.wheel
        self.connack_v5 = b""
        router = broker.router
        self.router = router
        self.trie = router.subscriptions
        self.plan_cache = router.plan_cache
        self.stats = broker.stats
        self.latency = broker.handler_latency
        self.countdown = broker.handler_latency.countdown
        self.run_publishes = broker.counters.run_publishes
        self.sent_by_qos = broker.counters.sent_by_qos
        self.packets_received = broker.counters.packets_received
        self.packets_sent = broker.counters.packets_sent

    cpdef new_session(self, broker, client_id, owner):
        """A new, offline session of ``broker`` (see ``lanes.LaneContext``)."""
        config = broker.config
        session = self.session_type(
            client_id, config.max_queued_messages, config.queue_drop_policy == "drop_oldest"
        )
        (<SessionCore?>session).owner = owner
        (<SessionCore>session).drops = self.counters
        return session

    def fold(self):
        """Adds what the lane counted to the broker's stats and counters, from zero again."""
        if not self.bytes_received:  # every read the lanes took counted its bytes
            return
        stats = self.stats
        stats["bytes_received"] += self.bytes_received
        if self.bytes_sent:
            stats["bytes_sent"] += self.bytes_sent
        if self.messages_received:  # not from a CONNECT alone (the connect lane)
            stats["messages_received"] += self.messages_received
            self.run_publishes[0] += self.messages_received
        if self.messages_sent:
            stats["messages_sent"] += self.messages_sent
            self.sent_by_qos[0] += self.messages_sent
        self.bytes_received = self.messages_received = self.bytes_sent = self.messages_sent = 0


cdef class AcceptPoll:
    """Keeps the event loop awake for a moment after it makes connections (see
    ``lanes.AcceptPoll``)."""

    cdef public int fd
    cdef public long long window_ns
    cdef public bint armed
    cdef object _call_soon, _run

    def __init__(self, int fd, long long window_ns, call_soon):
        self.fd = fd
        self.window_ns = window_ns
        self.armed = False
        self._call_soon = call_soon
        self._run = self.run  # bound once: arm makes no object

    cpdef arm(self):
        if not self.armed:
            self.armed = True
            self._call_soon(self._run)

    def run(self):
        cdef epoll_event event
        cdef long long until
        self.armed = False
        until = _now_ns() + self.window_ns
        while True:
            if epoll_wait(self.fd, &event, 1, 0) != 0:  # an event, or the descriptor is gone
                return True
            if _now_ns() >= until:
                return False


cdef class KeepAliveWheel:
    """When the broker looks at a connected client again (see
    ``lanes.KeepAliveWheel``)."""

    cdef public dict due
    cdef public long long swept

    def __init__(self, long long swept):
        self.due = {}
        self.swept = swept

    cpdef watch(self, ConnectionCore conn, double deadline):
        """Looks at ``conn`` in the first sweep after ``deadline`` (monotonic)."""
        cdef long long due
        cdef PyObject *bucket
        self.unwatch(conn)
        due = max(<long long>deadline + 1, self.swept + 1)
        key = due
        bucket = PyDict_GetItem(self.due, key)
        if bucket is NULL:
            self.due[key] = {conn}
        else:
            (<set>bucket).add(conn)
        conn.watched = due

    cpdef unwatch(self, ConnectionCore conn):
        cdef PyObject *bucket
        if conn.watched:
            bucket = PyDict_GetItem(self.due, conn.watched)
            if bucket is not NULL:
                (<set>bucket).discard(conn)
            conn.watched = 0


cdef class SessionCore:
    """The base of ``Session`` (see ``lanes.SessionCore``): its fields, as C fields."""

    cdef public object client_id, owner, connection, subscriptions, inflight, queue
    cdef public object qos2_inbound, drops, expiry_handle, will_handle, pending_will
    cdef public object journal, moved_to
    cdef public long long expiry_interval, max_queued, dropped, _next_packet_id, _unsent
    cdef public bint drop_oldest, persisted

    def __init__(self, client_id, long long max_queued, bint drop_oldest):
        self.client_id = client_id
        self.subscriptions = {}
        self.inflight = {}
        self.qos2_inbound = {}
        self.max_queued = max_queued
        self.drop_oldest = drop_oldest


cdef class ConnectionCore:
    """The base of ``MqttConnection`` (see ``lanes.ConnectionCore``): its fields, as
    C fields, and the entry of every read."""

    cdef public object broker, decoder, transport, client_id, publish_quota, authorizer
    cdef public object _buffer, _out
    cdef public int version
    cdef public bint connected, closing, paused, _flush_scheduled
    cdef public double last_seen
    cdef public Py_ssize_t alias_maximum, client_max_packet, read_pauses, max_packet
    cdef public LaneContext context
    cdef public object _peer, username, session, will, topic_aliases, outbound_aliases
    cdef public object held_back, _auth, _auth_method, _pending_connect, counted_ip, _held
    cdef public object claims
    cdef public long keep_alive, send_quota
    cdef public double paused_at, opened_at
    cdef public bint superuser
    cdef public long long connected_ms, watched

    def __init__(self, broker):
        cdef Py_ssize_t limit
        context = broker.lane_context
        self.broker = broker
        self.context = context
        self.max_packet = MAX_PACKET_SIZE
        if context is not None:
            limit = broker.config.max_packet_size  # a change applies to later connections
            self.decoder = self.context.decoder_type(0, limit, True)  # grouping runs
            self.max_packet = limit
        self.client_id = ""
        self.version = 4
        self.last_seen = self.opened_at = _now()
        self.client_max_packet = MAX_PACKET_SIZE
        self.send_quota = 65535
        self._buffer = b""

    def connection_made(self, transport):
        self.transport = transport
        self.opened_at = self.last_seen = _now()  # the CONNECT timeout counts from here
        broker = self.broker
        broker.connections.add(self)
        self.context.stats["connections_total"] += 1
        broker.connecting.append(self)
        if self.context.accept_poll is not None:
            self.context.accept_poll.arm()

    def data_received(self, data):
        if type(data) is bytes:
            if self.connected:
                if _forward(self, <bytes>data):
                    return
            elif _connect(self, <bytes>data):
                return
        self._read(data)

    def _read(self, data):
        raise NotImplementedError  # MqttConnection: the full path


cdef struct _Scan:
    Py_ssize_t start
    Py_ssize_t end
    Py_ssize_t count
    Py_ssize_t largest


cdef bint _scan(const unsigned char *p, Py_ssize_t n, bint v5, _Scan *out):
    cdef Py_ssize_t i = 0, pos, length, shift, packet_end, tl
    cdef unsigned char b
    out.start = out.end = out.count = out.largest = 0
    if n >= _FAIR_READ:
        return False
    while i < n:
        if p[i] != 0x30:
            return False
        pos = i + 1
        length = 0
        shift = 0
        while True:
            if pos - i > 4 or pos >= n:
                return False
            b = p[pos]
            length |= <Py_ssize_t>(b & 0x7F) << shift
            shift += 7
            pos += 1
            if b < 0x80:
                if b == 0 and pos - i > 2:
                    return False  # not the shortest encoding: the decoder judges it
                break
        packet_end = pos + length
        if length < 2 or packet_end > n:
            return False
        tl = (<Py_ssize_t>p[pos] << 8) | p[pos + 1]
        if tl == 0 or pos + 2 + tl + v5 > packet_end or (v5 and p[pos + 2 + tl] != 0):
            return False
        if out.count == 0:
            out.start = pos + 2
            out.end = pos + 2 + tl
        elif tl != out.end - out.start or memcmp(p + pos + 2, p + out.start, tl) != 0:
            return False
        out.count += 1
        if packet_end - i > out.largest:
            out.largest = packet_end - i
        i = packet_end
    return out.count > 0


def scan(bytes data, bint v5):
    """(topic start, topic end, packet count, largest packet) when ``data`` is whole
    QoS 0 PUBLISH packets with no DUP or RETAIN flag, all on the first one's topic (in
    5.0 each with an empty property block), else None."""
    cdef _Scan s
    if not _scan(<const unsigned char *>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), v5, &s):
        return None
    return s.start, s.end, s.count, s.largest


def forward(ConnectionCore conn, bytes data):
    """Forwards ``data`` when it is plain QoS 0 PUBLISHes the lane covers; True when it
    did (the read is handled), False with nothing changed otherwise (caches aside)."""
    return _forward(conn, data)


cdef bint _forward(ConnectionCore conn, bytes data) except -1:
    cdef const unsigned char *p = <const unsigned char *>PyBytes_AS_STRING(data)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data), i, count
    cdef bint v5
    cdef _Scan s
    cdef ConnectionCore sub
    cdef SessionCore core
    cdef LaneContext context
    cdef PlanCache cache
    cdef PyObject *found
    cdef list countdown
    cdef Py_ssize_t max_levels
    cdef bint timed
    cdef long long started = 0
    if conn._buffer or not conn.connected or conn.closing:
        return False
    v5 = conn.version == 5
    if not _scan(p, n, v5, &s):
        return False
    for i in range(s.start, s.end):
        if p[i] == 0:
            return False  # U+0000 is malformed: the decoder says so
    if s.largest > conn.max_packet:
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
        context.rewriting = rewriter.active
        context.rewriter = rewriter
    if context.rewriting:
        return False
    countdown = context.countdown
    timed = countdown[_RUN] <= 1  # the one run in latency.every that is timed
    if timed:
        started = _now_ns()
    try:
        topic = data[s.start:s.end].decode("utf-8")
    except UnicodeDecodeError:
        return False
    router = context.router
    max_levels = context.max_levels
    cache = context.plan_cache
    found = NULL
    if context.trie.generation == cache.generation and max_levels == cache.levels:
        found = PyDict_GetItem(cache.plans, topic)  # what forwarding would answer
    if found is NULL:
        plan = router.forwarding(topic, max_levels)  # validates, plans and caches it
    else:
        plan = <object>found
    if type(plan) is not Plan:
        return False  # None: no plan (the full path routes it message by message)
    if router.internal_subscriptions and router.internal_for(topic):
        return False  # the bridge or the cluster link takes these messages too
    authorizer = conn.authorizer
    if authorizer is not None and not authorizer.permits_publish(topic, 0, False):
        return False  # refused, counted and logged by the full path
    for target in plan:
        session = target[0]
        if not isinstance(session, SessionCore):
            return False  # cannot happen (plans hold sessions): never a crash
        connection = (<SessionCore>session).connection
        if not isinstance(connection, ConnectionCore):
            return False  # offline (None): counted as dropped by the full path
        sub = <ConnectionCore>connection
        if (sub.version == 5) != v5 or sub.paused or sub.alias_maximum:
            return False
        transport = sub.transport
        if transport is None or transport.is_closing() or s.largest > sub.client_max_packet:
            return False
    # Everything is known: forward, and count as the full path would.
    conn.last_seen = _now()
    count = s.count
    context.bytes_received += n
    if timed:
        countdown[_RUN] = context.latency.every
    else:
        countdown[_RUN] -= 1  # one run: the full path counts packets by this
    context.messages_received += count
    (<Plan>plan).messages += count
    sender = conn.client_id
    for target in plan:
        core = <SessionCore>target[0]  # checked above, nothing ran since
        connection = core.connection
        if not isinstance(connection, ConnectionCore):
            continue  # cannot happen (checked above): never a crash
        sub = <ConnectionCore>connection
        if target[1] and core.client_id == sender:
            continue  # No Local
        if sub._flush_scheduled:
            sub._out.append(data)  # behind what waits for the next loop iteration
        else:
            sub.transport.write(data)
            context.bytes_sent += n
        context.messages_sent += count
    if timed:
        context.latency.record(_RUN, _now_ns() - started)
    return True


cdef int _see_config(LaneContext context, broker, config) except -1:
    """See ``lanes._see_config``."""
    context.max_levels = config.max_topic_levels
    context.connack_v5 = broker.plain_connack_v5()
    context.config = config
    return 0


cdef int _plain_connect(const unsigned char *p, Py_ssize_t n, int *keep_alive) noexcept:
    """The protocol version (4 or 5) of a plain CONNECT, else 0; its client id starts at
    byte 14 (4) or 15 (5)."""
    cdef Py_ssize_t i, start
    cdef int version
    if n < 15 or n > 129 or p[0] != 0x10 or p[1] + 2 != n:
        return 0  # n <= 129: a one-byte Remaining Length
    if memcmp(p + 2, PyBytes_AS_STRING(_PLAIN_CONNECT), 8) == 0:
        version, start = 4, 14
    elif memcmp(p + 2, PyBytes_AS_STRING(_PLAIN_CONNECT_V5), 8) == 0 and n >= 16 and p[12] == 0:
        version, start = 5, 15  # no properties: their length is 0
    else:
        return 0
    if ((p[start - 2] << 8) | p[start - 1]) != n - start:
        return 0
    for i in range(start, n):
        if p[i] < 0x20 or p[i] > 0x7E:
            return 0
    keep_alive[0] = (p[10] << 8) | p[11]
    return version


def plain_connect(bytes data):
    """(protocol version, client id, keep alive) when ``data`` is one whole plain
    CONNECT (see lanes.py), else None."""
    cdef int keep_alive
    cdef int version = _plain_connect(<const unsigned char *>PyBytes_AS_STRING(data),
                                      PyBytes_GET_SIZE(data), &keep_alive)
    if not version:
        return None
    return version, data[10 + version:].decode("ascii"), keep_alive


def connect(ConnectionCore conn, bytes data):
    """Accepts ``data`` when it is a plain CONNECT the connect lane covers, as the full
    path would; True when it did, False with nothing changed otherwise."""
    return _connect(conn, data)


cdef bint _connect(ConnectionCore conn, bytes data) except -1:
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    cdef int keep_alive
    cdef long longest
    cdef LaneContext context
    cdef bytes connack = _CONNACK_ACCEPTED
    cdef int version = _plain_connect(<const unsigned char *>PyBytes_AS_STRING(data), n,
                                      &keep_alive)
    if not version:
        return False
    decoder, transport, context = conn.decoder, conn.transport, conn.context
    if conn._buffer or conn.closing or conn._out is not None or context is None:
        return False
    if decoder is None or decoder.protocol_version or transport is None or transport.is_closing():
        return False  # a CONNECT came before: the full path refuses this one
    broker = conn.broker
    client_id = data[10 + version:].decode("ascii")
    sessions = broker.sessions
    if PyDict_GetItem(sessions, client_id) is not NULL:
        return False
    config = broker.config
    if len(broker.connections) > config.max_connections:
        return False
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
    conn.last_seen = _now()
    conn.keep_alive = keep_alive
    conn.opened_at = 0.0  # the broker's sweep drops it from the sockets awaiting CONNECT
    conn.connected = True
    if keep_alive:
        context.wheel.watch(conn, conn.last_seen + keep_alive * 1.5)
    session = context.new_session(broker, client_id, None)
    sessions[client_id] = session
    session.connection = conn  # Session.resume for a new session
    conn.session = session
    context.packets_received[_CONNECT] += 1
    context.packets_sent[_CONNACK] += 1
    context.bytes_received += n
    context.bytes_sent += PyBytes_GET_SIZE(connack)
    transport.write(connack)
    return True
