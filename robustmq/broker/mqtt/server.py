"""The MQTT broker of one node: listeners, the session registry, wills and expiry.

``MqttBroker`` owns the sessions (in memory, behind ``open_session`` / ``connection_gone``
/ ``end_session``, which record persistent sessions, their subscriptions and retained
messages in a ``SessionStore`` and rebuild them from it at start), the router and the
broker-wide timers: keep-alive checks, session expiry and delayed wills. Connections call
into it; it never parses bytes. In a multi-node cluster (a ``clustered`` store) it loads
its sessions in the background once the Meta Service can answer, holding back the
CONNECTs that would resume or create a persistent session until then (at most
``connect_timeout``), takes over sessions other nodes hold, and lets go of those other
nodes take (docs/durability.md, "In a cluster").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from robustmq._core import lane, mqtt, trie
from robustmq._core.mqtt_spec import ACK_RUN, ReasonCode
from robustmq.broker.auth.enhanced import AuthMethods
from robustmq.broker.auth.security import Security
from robustmq.broker.auth.users import UserStore
from robustmq.broker.mqtt.connection import MqttConnection, Publisher
from robustmq.broker.mqtt.delayed import PREFIX as DELAYED_PREFIX
from robustmq.broker.mqtt.delayed import DelayedPublisher
from robustmq.broker.mqtt.listeners import start_listeners
from robustmq.broker.mqtt.message import Message
from robustmq.broker.mqtt.persistence import NullStore, SessionStore, StoredSession
from robustmq.broker.mqtt.rewrite import TopicRewriter
from robustmq.broker.mqtt.session import (
    NEVER_EXPIRES,
    Delivery,
    Inflight,
    Owed,
    Session,
    SubscriptionOptions,
)
from robustmq.broker.mqtt.sys_topics import is_sys_topic, sys_topics_loop
from robustmq.broker.router import Router
from robustmq.errors import ConfigError, MqttError
from robustmq.observability.counters import MqttCounters
from robustmq.observability.latency import LatencyHistogram

if TYPE_CHECKING:
    from robustmq.broker.mqtt.cluster_link import Handover
    from robustmq.config import AuthConfig, MqttConfig

log = logging.getLogger(__name__)

# Will properties that travel with the will message (§3.1.3.2); will_delay_interval stays.
_WILL_MESSAGE_PROPERTIES = frozenset(
    {
        "payload_format_indicator",
        "message_expiry_interval",
        "content_type",
        "response_topic",
        "correlation_data",
        "user_property",
    }
)


# A CONNECT waiting for a clustered store to load: its connection, the call that accepts
# it, the timer that refuses it.
_WaitingConnect = tuple[MqttConnection, Callable[[], None], asyncio.TimerHandle]


class MqttBroker:
    def __init__(
        self,
        config: MqttConfig,
        node_name: str = "1",
        auth: AuthConfig | None = None,
        store: SessionStore | None = None,
        users: UserStore | None = None,
    ) -> None:
        self.config = config
        self.store: SessionStore = store if store is not None else NullStore()
        self.node_name = node_name
        self.router = Router(
            config.shared_subscription_strategy,
            config.max_retained_messages,
            config.max_retained_payload,
        )
        self.sessions: dict[str, Session] = {}
        self.connections: set[MqttConnection] = set()
        # Sockets waiting for their CONNECT (one append per socket): the sweep closes
        # those connect_timeout old and keeps only those still waiting, so a closed or
        # connected socket is let go within a second.
        self.connecting: list[MqttConnection] = []
        # When to look at a connected client again for its keep alive (``_sweep``).
        self.wheel = lane.KeepAliveWheel(int(time.monotonic()))
        self.holding: set[MqttConnection] = set()  # subscribers holding publishers back
        self.publishing: Publisher | None = None  # whose PUBLISH is being routed
        self.reading = False  # inside a connection's data_received
        self.pending_flush: list[MqttConnection] = []  # written to during this read
        self.stats: Counter[str] = Counter()
        # By packet type, QoS and drop reason, exported on scrape (observability/metrics.py).
        self.counters = MqttCounters(self.stats)
        # Handler time by packet type, one call in 64 timed (connection._handle_packets).
        self.handler_latency = LatencyHistogram(ACK_RUN + 1, 64)
        # What the lanes and connections use of this broker, looked up once for all.
        self.lane_context = lane.LaneContext(self, mqtt.Decoder, Session)
        self.started_at = time.time()
        self.auth_methods: AuthMethods = {}  # MQTT 5 enhanced authentication, by name
        # Users, authenticators, ACL and abuse limits ([auth]); counters go to self.stats.
        self.security = Security.from_config(auth, self.stats, users)
        self.auth_methods.update(self.security.enhanced_auth_methods())
        self.rewriter = TopicRewriter(config.rewrite)
        self.auto_subscribe = auto_subscriptions(config.auto_subscribe)
        self.delayed = DelayedPublisher(
            config.max_delayed_seconds,
            config.max_delayed_messages,
            self.publish_internal,
            self.store,
        )
        self._servers: list[Any] = []
        self._tasks: list[asyncio.Task[None]] = []
        # While a clustered store loads: the CONNECTs waiting for it. None once loaded.
        self.loading: list[_WaitingConnect] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> list[tuple[str, str, int]]:
        """Recovers stored sessions and retained messages, then opens the listeners;
        returns (name, host, port) for each. In a cluster the listeners open first: the
        Meta Service may have no leader until this node has started."""
        loop = asyncio.get_running_loop()
        self.store.follow(self._session_moved)
        if self.store.clustered:
            self.loading = []
            self.router.store = self.store  # retained messages set meanwhile are stored
            self._tasks.append(loop.create_task(self._recover_in_background()))
        else:
            await self.recover()
        self._servers, listeners = await start_listeners(self)
        self._tasks.append(loop.create_task(self._sweep_keep_alive()))
        if self.config.sys_interval:
            self._tasks.append(
                loop.create_task(sys_topics_loop(self, self.node_name, self.config.sys_interval))
            )
        return listeners

    async def stop(self) -> None:
        """Stops accepting, tells MQTT 5 clients the server is shutting down, closes all."""
        runners = [s for s in self._servers if isinstance(s, web.AppRunner)]
        tcp = [s for s in self._servers if not isinstance(s, web.AppRunner)]
        for server in tcp:
            server.close()
        for task in self._tasks:
            task.cancel()
        for _, _, timer in self.loading or ():
            timer.cancel()
        self.delayed.cancel_all()
        if self.security.authn is not None:
            await self.security.authn.close()
        for conn in list(self.connections):
            conn.will = None  # a shutdown is not the client's failure
            conn.disconnect(ReasonCode.SERVER_SHUTTING_DOWN)
        for server in tcp:
            await server.wait_closed()
        for runner in runners:
            await runner.cleanup()
        await asyncio.sleep(0)
        await self.store.close()

    async def _recover_in_background(self) -> None:
        """``recover`` while the listeners serve, then lets the CONNECTs waiting for it
        through."""
        try:
            await self.recover()
        except Exception as exc:  # noqa: BLE001 - the node serves on, without them
            log.error("persistent sessions not loaded: %s; refusing them", exc)
            return
        waiting, self.loading = self.loading, None
        for conn, accept, timer in waiting or ():
            timer.cancel()
            conn._pending_connect = None
            conn._resume_reading()
            if conn.closing:
                continue
            accept()
            if conn.connected and not conn.closing:
                conn._handle_held()
                self.flush_pending()

    def connect_waits(self, conn: MqttConnection, p: Any, accept: Callable[[], None]) -> bool:
        """Whether ``conn``'s CONNECT ``p`` waits for the sessions to load: it would
        resume or create a persistent session (clean sessions never wait). ``accept`` is
        called once they have; after ``connect_timeout`` it is refused with 0x88 Server
        unavailable (return code 3 on 3.1/3.1.1)."""
        if self.loading is None:
            return False
        cfg = self.config
        if conn.version == 5:
            props = p.properties or {}
            expiry = min(props.get("session_expiry_interval", 0), cfg.max_session_expiry_interval)
        else:
            expiry = 0 if p.clean_start else cfg.max_session_expiry_interval
        if p.clean_start and expiry == 0:
            return False
        # The client's packets behind the CONNECT wait as for an authenticator
        # (connection._handle_packets); our timer, not the CONNECT timeout, ends the wait.
        conn._pending_connect = (p, False, None)
        conn._pause_reading()
        conn.opened_at = 0.0
        entry: _WaitingConnect

        def refuse() -> None:
            if self.loading is not None and entry in self.loading:
                self.loading.remove(entry)
            conn._pending_connect = None
            conn._resume_reading()
            if conn.closing:
                return
            log.warning(
                "client %r: persistent session refused (server unavailable): sessions "
                "not loaded after %.1f s (the Meta Service has no leader)",
                conn.client_id,
                cfg.connect_timeout,
            )
            conn._refuse(ReasonCode.SERVER_UNAVAILABLE, "sessions not loaded yet")

        timer = asyncio.get_running_loop().call_later(cfg.connect_timeout, refuse)
        entry = (conn, accept, timer)
        self.loading.append(entry)
        return True

    async def recover(self) -> None:
        """Rebuilds persistent sessions (offline) and retained messages from the store;
        sessions that expired while the broker was down are dropped."""
        sessions, retained = await self.store.load()
        for message in retained:
            # In a cluster a message retained while the sessions loaded is newer.
            if self.router.retained.get(message.topic) is None:
                self.router.retained.set(message.topic, message)
        self.router.store = self.store
        now = time.time()
        loop = asyncio.get_running_loop()
        wills_due = []
        for stored in sessions:
            remaining = self._remaining_expiry(stored, now)
            # In a cluster a clean session may have taken the client id while they loaded.
            if (remaining is not None and remaining <= 0) or stored.client_id in self.sessions:
                if stored.will is not None:  # its session ended while the broker was down
                    wills_due.append((stored.will, stored.client_id))
                self.store.session_deleted(stored.client_id)
                continue
            session = self._stored_session(stored)
            _restore_queue(session, stored, self.config.max_queued_messages)
            session.qos2_inbound = dict.fromkeys(stored.qos2_inbound)
            if stored.offline_since is None:
                self.store.session_online(stored.client_id, stored.owner, False)
            if remaining is not None:
                session.expiry_handle = loop.call_later(remaining, self.end_session, session)
            if stored.will is not None:  # MQTT 5 §3.1.3.2.2, counted from going offline
                delay = (stored.will.properties or {}).get("will_delay_interval", 0)
                offline_since = now if stored.offline_since is None else stored.offline_since
                session.pending_will = (stored.will, stored.client_id)
                session.will_handle = loop.call_later(
                    max(0.0, offline_since + delay - now), self._fire_will, session
                )
        for will, client_id in wills_due:
            self.publish_will(will, client_id)
        for client_id, node_id, owed, done in self.store.owed_elsewhere():
            self._hand_over(client_id, node_id, owed, done)
        self.delayed.recover(await self.store.load_delayed())
        if sessions or retained:
            log.info(
                "recovered %d persistent sessions and %d retained messages",
                len(self.sessions),
                len(retained),
            )

    def admits_plain_connects(self) -> bool:
        """Whether a plain CONNECT (3.1.1, clean session, no will, username, password or
        properties) whose client id has no session needs no check beyond
        ``max_connections``: nothing in ``MqttConnection.handle_connect`` and ``_accept``
        applies to it but the session, the keep alive and the CONNACK. The connect lane
        (``robustmq/_core/lanes.py``) asks this before it accepts one."""
        security, limits = self.security, self.security.limits
        return not (
            self.config.server_reference
            or self.loading is not None
            or self.auto_subscribe
            or self.store.clustered
            or self.router.link is not None
            or security.authn is not None
            or security.acl is not None
            or security.config.use_identity_as_username
            or limits.checks_connect
            or limits.settings.publish_rate
            or limits.settings.publish_byte_rate
        )

    def connack_limits(self) -> dict[str, int]:
        """What every MQTT 5 CONNACK tells the client of this broker's limits (the config's
        now): Receive Maximum, Maximum Packet Size, Topic Alias Maximum and, when retained
        messages are off, Retain Available."""
        cfg = self.config
        limits = {
            "receive_maximum": cfg.receive_maximum,
            "maximum_packet_size": cfg.max_packet_size,
            "topic_alias_maximum": cfg.topic_alias_maximum,
        }
        if not cfg.retain_available:
            limits["retain_available"] = 0
        return limits

    def plain_connack_v5(self) -> bytes:
        """The MQTT 5 CONNACK of a plain CONNECT (a new session, nothing assigned or
        changed: the connect lane's, ``robustmq/_core/lanes.py``)."""
        return bytes(mqtt.encode(mqtt.Connack(False, 0, self.connack_limits()), 5))

    def new_session(self, client_id: str, owner: str | None) -> Session:
        session: Session = self.lane_context.new_session(self, client_id, owner)
        return session

    def _stored_session(self, stored: StoredSession) -> Session:
        """A persistent session rebuilt from the store, offline, with its subscriptions."""
        session = self.new_session(stored.client_id, stored.owner)
        session.expiry_interval = stored.expiry_interval
        session.persisted = True
        session.journal = self.store.journal()
        for topic_filter, options in stored.subscriptions.items():
            self.router.subscribe(session, topic_filter, options)
            session.subscriptions[topic_filter] = options
        self.sessions[stored.client_id] = session
        return session

    def _session_moved(self, client_id: str, node_id: int | None) -> None:
        """Node ``node_id`` of the cluster took this persistent session (None: another
        node ended it): its connection here gets DISCONNECT 0x8E Session taken over (a
        will without delay is published, as in a takeover here), and this node's copy
        goes, a delayed will with it (the client reconnected before the delay, MQTT 5
        §3.1.3.2.2). What it owed the client, in flight (with its packet identifiers) and
        queued, goes to the session's new node through the cluster link; an ended
        session's goes with it."""
        session = self.sessions.get(client_id)
        if session is None or not session.persisted:
            return
        conn = session.connection
        if conn is not None:
            log.info("client %r: session taken over by another node", client_id)
            self._detach(conn, session_continues=True)
            conn.disconnect(ReasonCode.SESSION_TAKEN_OVER)
        owed: list[Owed] = [
            (entry.delivery, packet_id, entry.released)
            for packet_id, entry in session.inflight.items()
        ]
        owed += ((delivery, 0, False) for delivery in session.queue or ())
        handed = 0
        if node_id is not None:
            handed = self._hand_over(client_id, node_id, owed, self.store.handing_over(client_id))
        for handle in (session.expiry_handle, session.will_handle):
            if handle is not None:
                handle.cancel()
        session.expiry_handle = session.will_handle = session.pending_will = None
        for topic_filter in session.subscriptions:
            self.router.unsubscribe(session, topic_filter)
        session.subscriptions.clear()
        session.inflight.clear()
        session.queue = None
        session.persisted = False
        session.journal = None
        del self.sessions[client_id]
        self.store.session_moved(client_id, node_id, handed)

    def _hand_over(
        self, client_id: str, node_id: int, owed: list[Owed], done: Callable[[], None]
    ) -> int:
        """Sends what this node owed ``client_id``'s session to node ``node_id``, which
        holds it now; how many the link took. ``done`` (the store's, which keeps its
        copy until then) once none of them waits in the link any more."""
        link = self.router.link
        if link is None:
            if owed:
                log.warning(
                    "session %r moved to node %d: %d messages it was owed here are dropped "
                    "(this broker has no cluster link)",
                    client_id,
                    node_id,
                    len(owed),
                )
            done()
            return 0
        return link.hand_over(client_id, node_id, owed, done)

    @staticmethod
    def _remaining_expiry(stored: StoredSession, now: float) -> float | None:
        """Seconds left before a recovered session expires; None: never."""
        if stored.expiry_interval == NEVER_EXPIRES:
            return None
        # A session that was online when the broker stopped went offline then, which is
        # not recorded: its expiry interval starts now.
        offline_since = now if stored.offline_since is None else stored.offline_since
        return stored.expiry_interval - (now - offline_since)

    async def _sweep_keep_alive(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._sweep(time.monotonic())

    def _sweep(self, now: float) -> None:
        """Once a second: closes the sockets whose CONNECT did not come within
        connect_timeout and the connections due that were silent for 1.5 times their
        keep alive, and looks again later at those that were not; ends the backpressure
        that lasted longer than backpressure_timeout."""
        if self.connecting:
            connect_timeout = self.config.connect_timeout  # read now: a change applies at once
            waiting, self.connecting = self.connecting, []
            for conn in waiting:
                if conn.opened_at and not conn.closing:  # no CONNECT yet
                    if now - conn.opened_at > connect_timeout:
                        conn.connect_timed_out()
                    else:
                        self.connecting.append(conn)
        second = int(now)
        wheel = self.wheel.due
        for due in range(self.wheel.swept + 1, second + 1):
            for conn in wheel.pop(due, ()):
                conn.watched = 0
                if conn.closing:
                    continue
                keep_alive = conn.keep_alive  # watched only by _accept, when not 0
                if conn.read_pauses:  # we stopped reading it: its silence is ours
                    conn.last_seen = now
                elif now - conn.last_seen > keep_alive * 1.5:
                    log.info("client %r: keep alive timeout", conn.client_id)
                    conn.disconnect(ReasonCode.KEEP_ALIVE_TIMEOUT)
                    continue
                # As KeepAliveWheel.watch, inline: this loop may file 100,000 at once.
                again = max(int(conn.last_seen + keep_alive * 1.5) + 1, second + 1)
                bucket = wheel.get(again)
                if bucket is None:
                    wheel[again] = {conn}
                else:
                    bucket.add(conn)
                conn.watched = again
        self.wheel.swept = max(self.wheel.swept, second)
        timeout = self.config.backpressure_timeout
        for conn in list(self.holding):
            if now - conn.paused_at > timeout:
                conn._release_publishers()  # held back long enough: drop instead

    def flush_pending(self) -> None:
        """Writes out what the read just handled produced, one write per connection;
        after the session store has written what the read queued for persistent
        sessions, if anything (a PUBACK promises the message is kept)."""
        pending, self.pending_flush = self.pending_flush, []
        if self.store.appending:
            self.store.after_appends(lambda: _flush_all(pending))
            return
        for conn in pending:
            conn._flush()

    # ------------------------------------------------------------------ sessions

    def open_session(
        self, conn: MqttConnection, clean_start: bool, expiry_interval: int
    ) -> tuple[Session, bool]:
        """Binds ``conn`` to its session: taken over, resumed or new. Returns (session, present)."""
        session = self.sessions.get(conn.client_id)
        claim = False  # the session comes from another node of the cluster
        if session is None and self.store.clustered:
            elsewhere = self.store.session_elsewhere(conn.client_id)
            if elsewhere is not None and (clean_start or elsewhere.owner != conn.username):
                # Ended on its node too, which drops it on seeing the delete.
                self.store.session_deleted(conn.client_id)
            elif elsewhere is not None:
                log.info("client %r: session taken over from another node", conn.client_id)
                session = self._stored_session(elsewhere)
                claim = True
        if session is not None and session.owner != conn.username and not clean_start:
            # Like Mosquitto: a session is resumed only by the user who made it; another
            # user presenting the same client id gets a new one, not the subscriptions and
            # queued messages the ACL granted the owner.
            log.info("client %r: session belongs to another user; starting clean", conn.client_id)
            clean_start = True
        if session is not None:
            old = session.connection
            if old is not None:
                log.info("client %r: session taken over from %s", conn.client_id, old.peer)
                self._detach(old, session_continues=not clean_start)
                old.disconnect(ReasonCode.SESSION_TAKEN_OVER)
                session = self.sessions.get(conn.client_id)
        if session is not None and clean_start:
            self.end_session(session)
            session = None
        present = session is not None
        if session is None:
            session = self.new_session(conn.client_id, conn.username)
            self.sessions[conn.client_id] = session
        for handle in (session.expiry_handle, session.will_handle):
            if handle is not None:
                handle.cancel()  # a new connection before the will delay: no will (§3.1.3.2.2)
        session.expiry_handle = session.will_handle = session.pending_will = None
        if expiry_interval != 0:
            if claim or not session.persisted or session.expiry_interval != expiry_interval:
                self.store.session_set(conn.client_id, session.owner, expiry_interval)
                for topic_filter, options in session.subscriptions.items():
                    if not session.persisted:  # a clean session resumed as persistent
                        self.store.subscription_set(conn.client_id, topic_filter, options)
                session.persisted = True
                session.journal = self.store.journal()
            else:
                self.store.session_online(conn.client_id, session.owner, True)
        elif session.persisted:  # resumed with expiry 0: it ends with this connection
            self.store.session_deleted(conn.client_id)
            session.persisted = False
            session.journal = None
        if session.persisted:
            self.store.session_will(conn.client_id, conn.will)
        session.expiry_interval = expiry_interval
        session.moved_to = None
        conn.session = session
        if self.router.link is not None:  # a connection of this id elsewhere goes (§3.1.4-3)
            conn.connected_ms = time.time_ns() // 1_000_000
            self.router.link.connected(conn.client_id)
        return session, present

    def taken_over_elsewhere(self, client_id: str, at_ms: int, node_id: int) -> None:
        """A client with ``client_id`` connected to node ``node_id`` of the cluster at
        ``at_ms``: a connection here from before then goes (DISCONNECT 0x8E), as a
        takeover on this node would. Its session stays when it is persistent (the
        persistent-session store moves it; until then it takes nothing that node
        forwards, which that node delivered itself), and ends otherwise."""
        session = self.sessions.get(client_id)
        conn = session.connection if session is not None else None
        if session is None or conn is None or conn.connected_ms > at_ms:
            return
        log.info("client %r: session taken over by a connection to node %d", client_id, node_id)
        session.moved_to = node_id
        self._detach(conn, session_continues=session.persisted)
        conn.disconnect(ReasonCode.SESSION_TAKEN_OVER)

    def handed_over(self, handover: Handover, delivery: Delivery) -> bool:
        """A delivery another node owed the persistent session of ``handover.client_id``;
        False when this node does not hold it (it moved on, or ended; one taken over by
        another node's connection is still held, and handed on with the rest). One that
        was in flight goes in flight here under the same packet identifier when it can
        (``Session.adopt``, MQTT 5 §4.4); any other is delivered as this node's own."""
        session = self.sessions.get(handover.client_id)
        if session is None or not session.persisted:
            return False
        packet_id = handover.packet_id
        if not packet_id or not session.adopt(delivery, packet_id, handover.released):
            session.deliver(delivery)
        return True

    def connection_gone(self, conn: MqttConnection) -> None:
        """The network connection closed (any reason): wills and session expiry."""
        if conn.counted_ip is not None:
            self.security.limits.released(conn.counted_ip)
            conn.counted_ip = None
        session = conn.session
        if session is not None and session.connection is conn:
            self._detach(conn, session_continues=session.expiry_interval != 0)

    def _detach(self, conn: MqttConnection, session_continues: bool) -> None:
        session = conn.session
        assert session is not None
        session.connection = None
        # Unacknowledged shared-subscription messages go to another member of the group.
        kept = []
        for delivery in session.take_shared():
            if not self.router.redistribute(delivery, session):
                kept.append(delivery)
            elif session.journal is not None:
                session.journal.message_done(session, delivery)
        if kept and session_continues:
            session.requeue(kept)
        will, conn.will = conn.will, None
        loop = asyncio.get_running_loop()
        if will is not None:
            delay = (will.properties or {}).get("will_delay_interval", 0)
            if delay == 0 or not session_continues:
                self.publish_will(will, conn.client_id)
            else:
                delay = min(delay, session.expiry_interval)
                session.pending_will = (will, conn.client_id)
                session.will_handle = loop.call_later(delay, self._fire_will, session)
        if session.persisted and session_continues:
            self.store.session_online(session.client_id, session.owner, False)
            pending = session.pending_will
            self.store.session_will(session.client_id, pending[0] if pending else None)
        if not session_continues:
            self.end_session(session)
        elif session.expiry_interval != NEVER_EXPIRES:
            session.expiry_handle = loop.call_later(
                session.expiry_interval, self.end_session, session
            )

    def _fire_will(self, session: Session) -> None:
        if session.will_handle is not None:
            session.will_handle.cancel()
            session.will_handle = None
        pending, session.pending_will = session.pending_will, None
        if pending is not None:
            self.publish_will(*pending)

    def end_session(self, session: Session) -> None:
        """The session ends: its pending will is published, its subscriptions go."""
        self._fire_will(session)  # a delayed will is due when its session ends (§3.1.2.5)
        if session.expiry_handle is not None:
            session.expiry_handle.cancel()
            session.expiry_handle = None
        for topic_filter in session.subscriptions:
            self.router.unsubscribe(session, topic_filter)
        session.subscriptions.clear()
        if session.persisted:
            session.persisted = False
            session.journal = None
            self.store.session_deleted(session.client_id)
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]

    def publish_will(self, will: Any, client_id: str) -> None:
        props = {k: v for k, v in (will.properties or {}).items() if k in _WILL_MESSAGE_PROPERTIES}
        with self.store.will_published(client_id):
            self.publish_internal(
                Message(will.topic, will.payload, will.qos, will.retain, props, client_id)
            )

    def publish_internal(self, message: Message) -> None:
        """A message the broker publishes itself (a will, a delayed publish coming due)."""
        if message.retain:
            self.router.retain(message)
        self.router.route(message)

    # ------------------------------------------------------------------ messages

    def publish(self, conn: MqttConnection, message: Message) -> int:
        """Routes a client's PUBLISH; returns the reason code for its PUBACK/PUBREC."""
        if message.topic.startswith("$"):
            if message.topic.startswith(DELAYED_PREFIX):
                return self.delayed.schedule(message)
            if is_sys_topic(message.topic):
                log.info("client %r may not publish to %r", conn.client_id, message.topic)
                return ReasonCode.NOT_AUTHORIZED
        self.publishing = conn  # a slow subscriber (or node) may hold this connection back
        try:
            if message.retain:
                self.router.retain(message)
            delivered = self.router.route(message)
        finally:
            self.publishing = None
        return ReasonCode.SUCCESS if delivered else ReasonCode.NO_MATCHING_SUBSCRIBERS

    def subscribe(self, session: Session, topic_filter: str, options: SubscriptionOptions) -> bool:
        new = self.router.subscribe(session, topic_filter, options)
        session.subscriptions[topic_filter] = options
        if session.persisted:
            self.store.subscription_set(session.client_id, topic_filter, options)
        return new

    def unsubscribe(self, session: Session, topic_filter: str) -> bool:
        if session.subscriptions.pop(topic_filter, None) is not None and session.persisted:
            self.store.subscription_deleted(session.client_id, topic_filter)
        return self.router.unsubscribe(session, topic_filter)


def _restore_queue(session: Session, stored: StoredSession, max_queued: int) -> None:
    """Deliveries stored for ``session`` before a restart. Those sent may have reached
    the client, so they go back in flight under their packet identifiers, to be resent
    with DUP set (a PUBREL for QoS 2 ones released), MQTT 3.1.1 §4.4, MQTT 5 §4.4; the
    rest wait in the queue, in order. At most ``max_queued`` wait: older entries are ones
    the queue dropped whose trim had not reached the disk."""
    inflight = session.inflight
    queued = []
    for i, (delivery, packet_id) in enumerate(zip(stored.queued, stored.packet_ids, strict=True)):
        if not packet_id:
            queued.append(delivery)
            continue
        older = inflight.pop(packet_id, None)  # the id was reused: the older one was acked
        if older is not None and session.journal is not None:
            session.journal.message_done(session, older.delivery)
        entry = inflight[packet_id] = Inflight(delivery)
        entry.released = i in stored.released
        session._next_packet_id = packet_id
    dropped = len(queued) - max_queued
    if dropped > 0:
        if session.journal is not None:
            for delivery in queued[:dropped]:
                session.journal.message_done(session, delivery)
        queued = queued[dropped:]
    if queued:
        session.queue = deque(queued)


def _flush_all(connections: list[MqttConnection]) -> None:
    for conn in connections:
        conn._flush()


def auto_subscriptions(entries: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """Validated (filter template, qos) pairs from ``mqtt.auto_subscribe``."""
    subscriptions = []
    for i, entry in enumerate(entries):
        key = f"mqtt.auto_subscribe[{i}]"
        topic, qos = entry.get("topic", ""), entry.get("qos", 0)
        if set(entry) - {"topic", "qos"} or qos not in (0, 1, 2):
            raise ConfigError(key, entry, "a table with topic and qos (0, 1 or 2)")
        try:
            trie.validate_topic_filter(
                topic.replace("${clientid}", "c").replace("${username}", "u")
            )
        except MqttError as exc:
            raise ConfigError(f"{key}.topic", topic, f"a valid topic filter ({exc})") from None
        subscriptions.append((topic, qos))
    return subscriptions
