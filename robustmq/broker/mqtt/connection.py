"""One MQTT client connection: the asyncio Protocol and its packet handlers.

``data_received`` only feeds the decoder and hands every complete packet of the read to
its handler; output is collected and written once per read. Plain QoS 0 PUBLISHes come
from the decoder as runs (``mqtt.PublishRun``) that are routed once per topic and
forwarded to subscribers in their wire form (``handle_publish_run``). What a packet
means for the broker as a whole (sessions, routing, retained messages, wills) is asked of
``MqttBroker``; this module owns per-connection state: protocol version, keep alive, flow
control both ways, topic aliases and the write buffer. Protocol violations end the
connection with the MQTT 5 reason code (or a plain close for 3.1/3.1.1), a log line
naming the client and the reason, and a counter.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from robustmq._core import lane, mqtt, trie
from robustmq._core.mqtt_spec import (
    ACK_RUN,
    AUTH,
    CONNACK,
    CONNECT,
    DISCONNECT,
    MAX_PACKET_SIZE,
    PACKET_NAMES,
    PINGREQ,
    PINGRESP,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBLISH_RUN,
    PUBREC,
    PUBREL,
    SUBACK,
    SUBSCRIBE,
    UNSUBACK,
    UNSUBSCRIBE,
    ReasonCode,
)
from robustmq.broker.auth.acl import Authorizer
from robustmq.broker.auth.authn import (
    ALLOW,
    UNAVAILABLE,
    AuthResult,
    ConnectInfo,
    certificate_identity,
)
from robustmq.broker.auth.enhanced import AuthExchange
from robustmq.broker.auth.limits import PublishQuota
from robustmq.broker.auth.ratelog import RateLimitedLog
from robustmq.broker.mqtt.message import Message
from robustmq.broker.mqtt.rewrite import fill_placeholders
from robustmq.broker.mqtt.session import Delivery, SubscriptionOptions
from robustmq.broker.mqtt.sys_topics import is_sys_topic
from robustmq.errors import MqttError, v3_connack_code
from robustmq.observability.counters import OFFLINE, PACKET_TOO_LARGE, SLOW_CLIENT

if TYPE_CHECKING:
    from robustmq._core.lanes import ConnectionCore
    from robustmq.broker.mqtt.server import MqttBroker
    from robustmq.broker.mqtt.session import Session
else:
    ConnectionCore = lane.ConnectionCore  # the selected twin: C fields when compiled

log = logging.getLogger(__name__)
_refusals = RateLimitedLog(log)  # refused CONNECTs are caused by clients: no log flood

_PINGRESP = b"\xd0\x00"
# A 3.1/3.1.1 CONNACK accepting the client has no properties: encoded once.
_CONNACK_ACCEPTED = {
    (version, present): mqtt.encode(mqtt.Connack(present, 0), version)
    for version in (3, 4)
    for present in (False, True)
}
# A read at least this large means the client is streaming: yield to the loop after it.
_FAIR_READ = lane.FAIR_READ
# Output at least this large goes out as a gather write instead of being joined first.
_GATHER_WRITE = 64 * 1024


class Publisher(Protocol):
    """What a slow subscriber holds back (``_hold_back``): a client's connection, or the
    cluster link's gate for the messages other nodes forward (cluster_link.py)."""

    closing: bool

    def _pause_reading(self) -> None: ...

    def _resume_reading(self) -> None: ...


class MqttConnection(ConnectionCore, asyncio.Protocol):
    # Slots: a broker holds one of these per client, so its size is memory per connection.
    # Every field is ConnectionCore's (lanes.py documents them): C fields when the
    # core is compiled, so a new connection costs no Python frame.
    __slots__ = ()

    broker: MqttBroker
    decoder: Any  # mqtt.Decoder of the selected twin
    transport: asyncio.Transport | None
    authorizer: Authorizer | None
    publish_quota: PublishQuota | None
    session: Session | None
    held_back: set[Publisher] | None
    _auth: AuthExchange | None
    claims: Mapping[str, Any] | None

    # ------------------------------------------------------------------ transport

    @property
    def peer(self) -> str:
        """The client's address as host:port (looked up when first needed, for logs)."""
        if self._peer is None:
            peer = self.transport.get_extra_info("peername") if self.transport else None
            self._peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        return self._peer

    @property
    def ip(self) -> str:
        """The client's IP address (for limits and ACL rules)."""
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return str(peer[0]) if isinstance(peer, tuple) else str(peer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.broker.connections.discard(self)
        self.broker.wheel.unwatch(self)
        self._release_publishers()
        if self.connected:
            self.broker.connection_gone(self)

    def pause_writing(self) -> None:
        self.paused = True
        self.paused_at = time.monotonic()

    def resume_writing(self) -> None:
        self.paused = False
        self._release_publishers()
        if self.session is not None and self.session.connection is self:
            self.session.drain()

    def _hold_back(self, publisher: Publisher) -> bool:
        """Backpressure for QoS 0: this subscriber cannot keep up, so stop reading from
        the publisher feeding it until it can (for at most backpressure_timeout seconds;
        after that its QoS 0 messages are dropped and counted instead)."""
        if publisher is self or publisher.closing:
            return False
        if time.monotonic() - self.paused_at > self.broker.config.backpressure_timeout:
            return False
        if self.held_back is None:
            self.held_back = set()
            self.broker.holding.add(self)
        if publisher not in self.held_back:
            self.held_back.add(publisher)
            publisher._pause_reading()
        return True

    def _release_publishers(self) -> None:
        held, self.held_back = self.held_back, None
        if held is not None:
            self.broker.holding.discard(self)
            for publisher in held:
                publisher._resume_reading()

    def _read(self, data: bytes) -> None:
        """The full path of a read the QoS 0 lane did not take (``data_received`` is
        ConnectionCore's)."""
        broker = self.broker
        self.last_seen = time.monotonic()
        broker.stats["bytes_received"] += len(data)
        broker.reading = True
        try:
            self._handle_bytes(data)
        finally:
            broker.reading = False
            broker.flush_pending()
        if len(data) >= _FAIR_READ and not self.read_pauses and self.transport is not None:
            # A streaming client: let the loop serve timers and other clients before its
            # next read (the event loop would otherwise read it up to 32 times in a row).
            self._pause_reading()
            asyncio.get_running_loop().call_soon(self._resume_reading)

    def _pause_reading(self) -> None:
        self.read_pauses += 1
        if self.read_pauses == 1 and self.transport is not None:
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        self.read_pauses -= 1
        if self.read_pauses == 0 and not self.closing and self.transport is not None:
            self.last_seen = time.monotonic()  # its silence while we did not read was ours
            self.transport.resume_reading()

    def _handle_bytes(self, data: bytes) -> None:
        """Decodes every complete packet of ``data`` (after what was left over) and
        hands each to its handler; an incomplete tail waits for the next read."""
        buffered = self._buffer
        if buffered:
            self._buffer = b""
            # A streaming client leaves a partial packet at the end of most reads: finish
            # that packet on its own, then decode the rest of the read in place, so the
            # copy is one packet long, not one read long.
            missing = _packet_size(buffered) - len(buffered)
            if 0 < missing < len(data):
                head = self._handle_packets(buffered + data[:missing])
                if self._awaiting_authenticators():
                    self._buffer = head + data[missing:]
                elif not self.closing:
                    rest = head + data[missing:] if head else memoryview(data)[missing:]
                    self._buffer = self._handle_packets(rest)
                return
            data = buffered + data
        self._buffer = self._handle_packets(data)

    def _handle_packets(self, data: Any) -> bytes:
        """Hands every complete packet in ``data`` to its handler; returns the bytes not
        handled yet: the incomplete tail, or everything after a CONNECT whose
        authenticators are still deciding (empty once the connection is closing)."""
        handlers = _HANDLERS
        latency = self.broker.handler_latency
        countdown = latency.countdown
        while data and not self.closing:
            try:
                packets, consumed = self.decoder.decode(data)
            except MqttError as exc:
                self.violation(exc.reason_code, str(exc))
                return b""
            for i, packet in enumerate(packets):
                if self.connected:  # the common case, without _dispatch's checks
                    kind = packet.packet_type
                    handler = handlers.get(kind)
                    if handler is not None:
                        try:
                            left = countdown[kind] - 1
                            countdown[kind] = left
                            if left:
                                handler(self, packet)
                            else:  # timed: one call in latency.every of each packet type
                                countdown[kind] = latency.every
                                start = time.perf_counter_ns()
                                handler(self, packet)
                                latency.record(kind, time.perf_counter_ns() - start)
                        except Exception:
                            self._handler_failed(packet)
                        if self.closing:
                            return b""
                        continue
                if not self._dispatch(packet):
                    return b""
                if self._awaiting_authenticators():
                    # §3.1.4: a client may send packets before its CONNACK; they wait.
                    self._held = packets[i + 1 :]
                    return bytes(data[consumed:])
            data = data[consumed:]
            if not packets:
                break
        return bytes(data)

    def _dispatch(self, packet: Any) -> bool:
        """Runs one packet's handler; False when the connection is ending."""
        # Counted here: _handle_packets' countdown counts the packets it hands over itself.
        self.broker.counters.packets_received[packet.packet_type] += 1
        handler = _HANDLERS.get(packet.packet_type)
        if handler is None:
            self.violation(
                ReasonCode.PROTOCOL_ERROR, f"{type(packet).__name__.upper()} is not sent by clients"
            )
            return False
        if not self.connected and packet.packet_type not in (CONNECT, AUTH):
            name = PACKET_NAMES.get(packet.packet_type, "PUBLISH")
            # §4.12: only AUTH may come before the CONNACK
            self.violation(ReasonCode.PROTOCOL_ERROR, f"{name} before the CONNACK")
            return False
        try:
            handler(self, packet)
        except Exception:
            self._handler_failed(packet)
        return not self.closing

    def _handler_failed(self, packet: Any) -> None:
        # A bug of ours must cost this client its connection, not the broker.
        log.exception("client %r: error handling %s", self.client_id, type(packet).__name__.upper())
        self.violation(ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR, "internal error")

    def _awaiting_authenticators(self) -> bool:
        """A CONNECT is waiting for an asynchronous authenticator (not an AUTH exchange,
        where the client itself must wait, §4.12)."""
        pending = self._pending_connect
        return pending is not None and pending[2] is None

    def _handle_held(self) -> None:
        """The CONNECT was accepted: handles what arrived behind it meanwhile."""
        held, self._held = self._held, None
        broker = self.broker
        broker.reading = True
        try:
            for packet in held or ():
                if not self._dispatch(packet):
                    return
            if self._buffer:
                data, self._buffer = self._buffer, b""
                self._handle_bytes(data)
        finally:
            broker.reading = False
            broker.flush_pending()

    def write(self, data: bytes) -> None:
        """Queues bytes for the client. Everything written while one read is handled
        goes out in one write at the end of that read (so PUBACKs for a read, and a
        subscriber's share of it, cost one syscall each); writes from timers go out on
        the next loop iteration."""
        if self._out is None:
            self._out = [data]
        else:
            self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            if self.broker.reading:
                self.broker.pending_flush.append(self)
            else:
                asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, None
        if out and self.transport is not None and not self.transport.is_closing():
            size = sum(map(len, out))
            if len(out) == 1:
                self.transport.write(out[0])
            elif size >= _GATHER_WRITE:
                self.transport.writelines(out)  # one writev: large pieces are not copied
            else:
                self.transport.write(b"".join(out))
            self.broker.stats["bytes_sent"] += size

    def close(self) -> None:
        """Flushes what is pending, then closes the socket."""
        self.closing = True
        if self._out:
            self._flush()
        if self.transport is not None:
            self.transport.close()

    def violation(self, reason_code: int, message: str) -> None:
        """Ends the connection for a malformed packet or a protocol error."""
        self.broker.stats["protocol_errors"] += 1
        log.warning(
            "client %r (%s): %s; closing the connection",
            self.client_id or "<before CONNECT>",
            self.peer,
            message,
        )
        if self.connected:
            if self.version == 5:
                packet = mqtt.encode(mqtt.Disconnect(reason_code, {"reason_string": message}), 5)
                if len(packet) > self.client_max_packet:  # §3.14.2.2.3: drop the reason string
                    packet = mqtt.encode(mqtt.Disconnect(reason_code), 5)
                self.write(packet)
                self.broker.counters.packets_sent[DISCONNECT] += 1
        elif reason_code == ReasonCode.UNSUPPORTED_PROTOCOL_VERSION:
            self.broker.counters.packets_sent[CONNACK] += 1
            self.write(mqtt.encode(mqtt.Connack(False, v3_connack_code(reason_code)), 4))
        self.close()

    def disconnect(self, reason_code: int) -> None:
        """Server-initiated DISCONNECT (MQTT 5) and close."""
        if self.version == 5 and self.connected:
            self.write(mqtt.encode(mqtt.Disconnect(reason_code), 5))
            self.broker.counters.packets_sent[DISCONNECT] += 1
        self.close()

    def connect_timed_out(self) -> None:
        log.info("connection from %s sent no CONNECT in time; closing", self.peer)
        self.close()

    # ------------------------------------------------------------------ CONNECT

    def _refuse(self, reason_code: int, why: str) -> None:
        _refusals.info("client %r (%s) refused: %s", self.client_id, self.peer, why)
        if self._auth_method is not None and reason_code >= 0x80:
            self.broker.stats["auth_failures"] += 1  # an enhanced-auth exchange failed
        code = reason_code if self.version == 5 else v3_connack_code(reason_code)
        self.write(mqtt.encode(mqtt.Connack(False, code), self.version))
        self.broker.counters.packets_sent[CONNACK] += 1
        self.close()

    def handle_connect(self, p: Any) -> None:
        if self.connected or self._pending_connect is not None:
            self.violation(ReasonCode.PROTOCOL_ERROR, "second CONNECT")
            return
        broker, cfg = self.broker, self.broker.config
        self.version = p.protocol_version
        self.client_id = p.client_id
        self.username = p.username
        props = p.properties or {}
        v5 = self.version == 5
        if cfg.server_reference:
            if v5:
                ack = mqtt.Connack(
                    False, ReasonCode.USE_ANOTHER_SERVER, {"server_reference": cfg.server_reference}
                )
                self.write(mqtt.encode(ack, 5))
                broker.counters.packets_sent[CONNACK] += 1
                self.close()
            else:
                self._refuse(ReasonCode.SERVER_UNAVAILABLE, "redirected (server_reference)")
            return
        method = props.get("authentication_method")
        if method is not None and method not in broker.auth_methods:
            self._refuse(
                ReasonCode.BAD_AUTHENTICATION_METHOD, f"no authentication method {method!r}"
            )
            return
        existing = broker.sessions.get(self.client_id)
        takeover = existing is not None and existing.connection is not None
        # A takeover replaces a connection, so it is allowed when the broker is full.
        if len(broker.connections) > cfg.max_connections and not takeover:
            self._refuse(ReasonCode.QUOTA_EXCEEDED, "max_connections reached")
            return
        if p.will is not None:
            try:
                trie.validate_topic_name(p.will.topic, cfg.max_topic_levels)
            except MqttError as exc:
                self._refuse(exc.reason_code, str(exc))
                return
            if is_sys_topic(p.will.topic):
                self._refuse(ReasonCode.NOT_AUTHORIZED, "will topic in $SYS")
                return
            if p.will.retain and not cfg.retain_available:
                self._refuse(ReasonCode.RETAIN_NOT_SUPPORTED, "will retain without retain")
                return
        assigned = False
        if not p.client_id:
            # 3.1 needs an id; 3.1.1 allows none only with a clean session (§3.1.3.1).
            if self.version == 3 or (self.version == 4 and not p.clean_start):
                self._refuse(ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, "empty client identifier")
                return
            self.client_id = f"auto-{uuid.uuid4().hex}"
            assigned = True
        security = broker.security
        by_certificate, identity = False, None
        if security.config.use_identity_as_username:
            by_certificate, identity = certificate_identity(self.transport)
            if by_certificate:
                self.username = identity  # the certificate's CN, also for the blacklist
        if security.limits.checks_connect:
            listener = self.transport.get_extra_info("sockname") if self.transport else None
            refusal = security.limits.admit(self.client_id, self.username, self.ip, listener)
            if refusal is not None:
                self._refuse(*refusal)
                return
        if method is not None:
            exchange = broker.auth_methods[method]()
            self._auth = exchange
            self._auth_method = method
            self._pending_connect = (p, assigned, exchange)
            self._auth_step(props.get("authentication_data"))
            return
        if by_certificate:
            if identity is None:
                broker.stats["auth_failures"] += 1
                self._refuse(ReasonCode.NOT_AUTHORIZED, "no client certificate identity")
                return
            broker.stats["auth_successes"] += 1
            self._accept(p, assigned, None, None)  # authenticated by the TLS handshake
            return
        if security.authn is None:
            self._accept(p, assigned, None, None)
            return
        info = ConnectInfo(self.client_id, p.username, p.password, self.ip)

        def decided(result: AuthResult) -> None:
            if result.outcome == ALLOW:
                broker.stats["auth_successes"] += 1
                self._accept(p, assigned, None, None, result)
                return
            broker.stats["auth_failures"] += 1
            if result.unavailable:
                self._refuse(ReasonCode.SERVER_UNAVAILABLE, "no authenticator could answer")
            elif p.username is None and p.password is None:
                self._refuse(ReasonCode.NOT_AUTHORIZED, "anonymous clients are refused")
            else:
                # Never say which part was wrong (§3.2.2.2.4 0x86 covers both).
                self._refuse(ReasonCode.BAD_USER_NAME_OR_PASSWORD, "bad credentials")

        def answered(task: asyncio.Task[AuthResult]) -> None:
            self._resume_reading()
            self._pending_connect = None
            if self.closing:
                return  # the client left while the authenticators ran
            failed = task.cancelled() or task.exception() is not None
            decided(UNAVAILABLE if failed else task.result())
            if self.connected and not self.closing:
                self._handle_held()

        outcome = security.authn.authenticate(info)
        if isinstance(outcome, AuthResult):
            decided(outcome)
            return
        # An authenticator answers later (HTTP): stop reading until it has, so nothing
        # the client sends is handled before the CONNACK.
        self._pending_connect = (p, assigned, None)
        self._pause_reading()
        outcome.add_done_callback(answered)

    def _accept(
        self,
        p: Any,
        assigned: bool,
        exchange: Any,
        auth_props: dict[str, Any] | None,
        result: AuthResult | None = None,
    ) -> None:
        """CONNECT passed every check (and authentication): bind the session, CONNACK.

        ``exchange`` is the enhanced-auth exchange that authenticated the client (its
        ``username`` then names the client), ``result`` what the authenticator chain said.
        """
        broker, cfg = self.broker, self.broker.config
        if broker.loading is not None and broker.connect_waits(
            self, p, lambda: self._accept(p, assigned, exchange, auth_props, result)
        ):
            return  # a persistent session, while a cluster node loads them (server.py)
        props = p.properties or {}
        v5 = self.version == 5
        security = broker.security
        authenticated_as = getattr(exchange, "username", None)
        if authenticated_as:
            self.username = authenticated_as
        self.superuser = result is not None and result.superuser
        self.claims = result.claims if result is not None else None
        if security.acl is not None and not self.superuser:
            self.authorizer = security.acl.authorizer_for(
                self.client_id, self.username, self.ip, self.claims
            )
            will = p.will
            if (
                will is not None
                and self.authorizer is not None
                and not self.authorizer.publish_allowed(will.topic, will.qos, will.retain)
            ):
                self._refuse(ReasonCode.NOT_AUTHORIZED, "will topic denied by ACL")
                return
        self.publish_quota = security.limits.publish_quota()
        if security.limits.settings.max_connections_per_ip:
            self.counted_ip = self.ip
            security.limits.connected(self.counted_ip)
        keep_alive = p.keep_alive
        server_keep_alive = None
        # Only MQTT 5 can tell a client its keep alive changed (Server Keep Alive); 3.1 and
        # 3.1.1 clients keep their own.
        if v5 and cfg.max_keep_alive and (keep_alive == 0 or keep_alive > cfg.max_keep_alive):
            keep_alive = server_keep_alive = cfg.max_keep_alive
        self.keep_alive = keep_alive
        self.send_quota = props.get("receive_maximum", 65535)
        self.client_max_packet = props.get("maximum_packet_size", MAX_PACKET_SIZE)
        if cfg.send_topic_aliases:
            self.alias_maximum = props.get("topic_alias_maximum", 0)
        if v5:
            expiry = min(props.get("session_expiry_interval", 0), cfg.max_session_expiry_interval)
        else:
            expiry = 0 if p.clean_start else cfg.max_session_expiry_interval
        self.will = p.will
        self.opened_at = 0.0
        self.connected = True
        if keep_alive:
            broker.wheel.watch(self, self.last_seen + keep_alive * 1.5)
        session, present = broker.open_session(self, p.clean_start, expiry)
        if v5:
            ack_props: dict[str, Any] = {}
            if assigned:
                ack_props["assigned_client_identifier"] = self.client_id
            if server_keep_alive is not None:
                ack_props["server_keep_alive"] = server_keep_alive
            if expiry != props.get("session_expiry_interval", 0):
                ack_props["session_expiry_interval"] = expiry
            if props.get("request_response_information") and cfg.response_information:
                ack_props["response_information"] = cfg.response_information
            ack_props.update(broker.connack_limits())
            if auth_props:
                ack_props.update(auth_props)
            self.write(mqtt.encode(mqtt.Connack(present, 0, ack_props), 5))
        else:
            self.write(_CONNACK_ACCEPTED[self.version, present])
        broker.counters.packets_sent[CONNACK] += 1
        session.resume(self)
        if broker.auto_subscribe:
            retained: list[tuple[str, int, int]] = []
            for template, qos in broker.auto_subscribe:
                topic_filter = fill_placeholders(template, self.client_id, self.username)
                if topic_filter is None:
                    log.info(
                        "client %r: auto-subscription %r skipped: its name contains / + or #",
                        self.client_id,
                        template,
                    )
                    continue
                self._subscribe(topic_filter, qos, False, False, 0, 0, retained)
            self._send_retained(retained)

    def handle_auth(self, p: Any) -> None:
        """AUTH from the client: the next round of an exchange, or re-authentication."""
        props = p.properties or {}
        method = props.get("authentication_method")
        if self._auth_method is None or method != self._auth_method:
            self.violation(ReasonCode.PROTOCOL_ERROR, f"AUTH with method {method!r}")
            return
        if p.reason_code == ReasonCode.RE_AUTHENTICATE:
            if not self.connected or self._auth is not None:
                self.violation(ReasonCode.PROTOCOL_ERROR, "re-authentication out of turn")
                return
            self._auth = self.broker.auth_methods[method]()
        elif self._auth is None or p.reason_code != ReasonCode.CONTINUE_AUTHENTICATION:
            self.violation(ReasonCode.PROTOCOL_ERROR, "AUTH out of turn")
            return
        self._auth_step(props.get("authentication_data"))

    def _auth_step(self, data: bytes | None) -> None:
        assert self._auth is not None
        code, out = self._auth.step(data)
        props: dict[str, Any] = {"authentication_method": self._auth_method}
        if out is not None:
            props["authentication_data"] = out
        if code == ReasonCode.CONTINUE_AUTHENTICATION:
            self.write(mqtt.encode(mqtt.Auth(code, props), 5))
            self.broker.counters.packets_sent[AUTH] += 1
            return
        self._auth = None
        pending, self._pending_connect = self._pending_connect, None
        if code != ReasonCode.SUCCESS:
            if pending is not None:
                self._refuse(code, f"authentication method {self._auth_method!r} refused")
            else:
                self.disconnect(code)
        elif pending is not None:
            self.broker.stats["auth_successes"] += 1
            self._accept(*pending, props)
        else:  # a re-authentication (MQTT 5 §4.12.1)
            self.broker.stats["auth_successes"] += 1
            self.write(mqtt.encode(mqtt.Auth(ReasonCode.SUCCESS, props), 5))
            self.broker.counters.packets_sent[AUTH] += 1

    # ------------------------------------------------------------------ PUBLISH in

    def handle_publish(self, p: Any) -> None:
        broker = self.broker
        cfg = broker.config
        session = self.session
        assert session is not None
        topic = p.topic
        props = p.properties
        if props is not None and "topic_alias" in props:
            topic = self._resolve_alias(topic, props["topic_alias"])
            if not topic:
                return
        if broker.rewriter:
            topic = broker.rewriter.rewrite("publish", topic, self.client_id, self.username)
        qos = p.qos
        if qos == 2:
            if p.packet_id in session.qos2_inbound:
                self.write(self._ack(PUBREC, p.packet_id))  # duplicate
                return
            # 3.1/3.1.1 clients are never told our Receive Maximum: only the packet id
            # space bounds them.
            if self.version == 5 and len(session.qos2_inbound) >= cfg.receive_maximum:
                self.violation(ReasonCode.RECEIVE_MAXIMUM_EXCEEDED, "receive maximum exceeded")
                return
        if p.retain and not cfg.retain_available:
            self.violation(ReasonCode.RETAIN_NOT_SUPPORTED, "retain is not available")
            return
        try:
            trie.validate_topic_name(topic, cfg.max_topic_levels)
        except MqttError as exc:
            self.violation(exc.reason_code, str(exc))
            return
        authz = self.authorizer
        if authz is not None and not authz.publish_allowed(topic, qos, p.retain):
            self._refuse_publish(p, ReasonCode.NOT_AUTHORIZED)
            return
        quota = self.publish_quota
        if quota is not None and not quota.allow(len(p.payload)):
            self._refuse_publish(p, ReasonCode.QUOTA_EXCEEDED)
            return
        broker.stats["messages_received"] += 1
        broker.counters.received_by_qos[qos] += 1
        message = Message(topic, p.payload, qos, p.retain, props, self.client_id)
        if qos == 2 and session.journal is not None:  # its packet id survives a restart
            code = session.journal.qos2_publish(
                session, p.packet_id, lambda: broker.publish(self, message)
            )
        else:
            code = broker.publish(self, message)
        if qos == 1:
            self.write(self._ack(PUBACK, p.packet_id, code))
        elif qos == 2:
            if code < 0x80:
                session.qos2_inbound[p.packet_id] = None
            self.write(self._ack(PUBREC, p.packet_id, code))

    def _resolve_alias(self, topic: str, alias: int) -> str:
        """MQTT 5 §3.3.2.3.4: a topic alias sets or names the topic; "" after a violation."""
        if alias > self.broker.config.topic_alias_maximum:
            self.violation(ReasonCode.TOPIC_ALIAS_INVALID, f"topic alias {alias} too large")
            return ""
        if self.topic_aliases is None:
            self.topic_aliases = {}
        if topic:
            self.topic_aliases[alias] = topic
            return topic
        topic = self.topic_aliases.get(alias, "")
        if not topic:
            self.violation(ReasonCode.PROTOCOL_ERROR, f"unknown topic alias {alias}")
        return topic

    def _refuse_publish(self, p: Any, reason_code: int) -> None:
        """A PUBLISH the ACL or a quota refused (counted and logged where decided): not
        routed. MQTT 5 tells the client with the acknowledgement's reason code; 3.1/3.1.1
        have no way to, so QoS 1/2 are acknowledged as if accepted, as Mosquitto does."""
        if not p.qos:
            return
        code = reason_code if self.version == 5 else 0
        self.write(self._ack(PUBACK if p.qos == 1 else PUBREC, p.packet_id, code))

    def handle_publish_run(self, run: Any) -> None:
        """Plain PUBLISHes of one QoS on one topic (see ``mqtt.PublishRun``): routed
        once; QoS 0 is forwarded in its wire form to every subscriber that can take it as
        it is, QoS 1/2 re-stamped with each subscriber's packet identifiers in one pass.
        Anything these lanes do not cover goes through ``handle_publish``."""
        broker = self.broker
        broker.counters.run_publishes[run.qos] += run.count
        plan = None
        packet_ids = run.packet_ids() if run.qos == 2 else None
        # Rewrites and quotas apply per message; the ACL once per run (one topic).
        if not broker.rewriter and self.publish_quota is None and self._qos2_run_fits(packet_ids):
            plan = broker.router.forwarding(run.topic, broker.config.max_topic_levels)
        if plan is not None and self.authorizer is not None:
            if not self.authorizer.publish_allowed(run.topic, run.qos, False):
                broker.stats["acl_denied_publish"] += run.count - 1  # one counted there
                broker.counters.run_publishes_unrouted[run.qos] += run.count
                if run.qos:
                    for p in run.publishes():
                        self._refuse_publish(p, ReasonCode.NOT_AUTHORIZED)
                return
        if plan is None:
            broker.counters.run_publishes_unrouted[run.qos] += run.count
            for p in run.publishes():
                self.handle_publish(p)
                if self.closing:
                    return
            return
        stats = broker.stats
        count = run.count
        plan.messages += count
        stats["messages_received"] += count
        sender = self.client_id
        if broker.router.internal_subscriptions:  # the MQTT → Kafka bridge, the cluster link
            broker.publishing = self  # the cluster link may hold this connection back
            try:
                broker.router.route_run(run.topic, run.publishes(), sender)
            finally:
                broker.publishing = None
        if run.qos:
            self._publish_acked_run(run, plan, packet_ids)
            return
        largest = _largest_copies(run)
        for session, no_local, _, _ in plan:
            conn = session.connection
            if conn is None:
                broker.counters.drop(OFFLINE, 0, count)  # QoS 0 is not queued offline
                continue
            if no_local and session.client_id == sender:
                continue
            if conn.paused or conn.transport is None:
                if conn.transport is None or not conn._hold_back(self):
                    broker.counters.drop(SLOW_CLIENT, 0, count)
                    continue
            if conn.alias_maximum or largest[conn.version == 5] > conn.client_max_packet:
                self._forward_each(conn, run)
                continue
            conn.write(run.wire(conn.version))
            stats["messages_sent"] += count
            broker.counters.sent_by_qos[0] += count

    def _qos2_run_fits(self, packet_ids: list[int] | None) -> bool:
        """Whether a QoS 2 run (its ``packet_ids``; None for QoS 0/1) may take the run
        lane: none of its identifiers awaits a PUBREL (a resent PUBLISH is acknowledged,
        not routed again), the 5.0 Receive Maximum has room for all of it, and its
        identifiers need not be journaled first; otherwise ``handle_publish`` takes each."""
        if packet_ids is None:
            return True
        session = self.session
        assert session is not None
        inbound = session.qos2_inbound
        if session.journal is not None or len(set(packet_ids)) != len(packet_ids):
            return False
        if self.version == 5:
            if len(inbound) + len(packet_ids) > self.broker.config.receive_maximum:
                return False
        return inbound.keys().isdisjoint(packet_ids)

    def _publish_acked_run(self, run: Any, plan: Any, packet_ids: list[int] | None) -> None:
        """A QoS 1/2 run: one Message per packet, shared by every subscriber; a subscriber
        that can take the whole run now (no queue, room in its Receive Maximum, nothing
        to shape per message) gets it in one write, the others message by message. The
        PUBACKs or PUBRECs go out together once every subscriber has its copy; a QoS 2
        run's identifiers then await their PUBRELs (``packet_ids``)."""
        sender = self.client_id
        topic = run.topic
        run_qos = run.qos
        messages = [
            Message(topic, payload, run_qos, False, None, sender) for payload in run.payloads()
        ]
        largest = _largest_copies(run)[1]
        counters = self.broker.counters
        delivered = 0
        self.broker.publishing = self  # a slow subscriber may hold this connection back
        try:
            for session, no_local, max_qos, _ in plan:
                if no_local and session.client_id == sender:
                    continue
                delivered += 1
                conn = session.connection
                qos = run_qos if run_qos < max_qos else max_qos
                if (
                    qos
                    and conn is not None
                    and conn.transport is not None
                    and not conn.alias_maximum
                    and largest <= conn.client_max_packet
                ):
                    sent_ids = session.send_run(conn, messages, qos)
                    if sent_ids is not None:
                        conn.write(run.wire_ids(conn.version, qos, sent_ids))
                        self.broker.stats["messages_sent"] += len(sent_ids)
                        if qos == 2:
                            counters.sent_by_qos[2] += len(sent_ids)
                        continue
                for message in messages:
                    session.deliver(Delivery(message, qos, False, ()))
        finally:
            self.broker.publishing = None
        if packet_ids is not None:  # §4.3.3: each awaits its PUBREL (0x10 is a success)
            own = self.session
            assert own is not None  # a QoS 2 run only arrives after CONNECT
            own.qos2_inbound.update(dict.fromkeys(packet_ids))
        if delivered or self.version != 5:
            self.write(run.acks())
            if run_qos == 2:
                counters.packets_sent[PUBREC] += run.count
            return
        if run_qos == 1:
            counters.run_pubacks_single += run.count
        ack = PUBACK if run_qos == 1 else PUBREC
        for p in run.publishes():
            self.write(self._ack(ack, p.packet_id, ReasonCode.NO_MATCHING_SUBSCRIBERS))

    def handle_ack_run(self, run: Any) -> None:
        """Acknowledgements of one type in their plain success form (``mqtt.AckRun``)."""
        session = self.session
        assert session is not None
        ack_type = run.ack_type
        self.broker.counters.packets_received[ack_type] += len(run.packet_ids)
        if ack_type == PUBACK or ack_type == PUBCOMP:
            for packet_id in run.packet_ids:
                session.acknowledge(packet_id)
            return
        handler, ack_class = (
            (self.handle_pubrec, mqtt.Pubrec)
            if ack_type == PUBREC
            else (self.handle_pubrel, mqtt.Pubrel)
        )
        for packet_id in run.packet_ids:
            handler(ack_class(packet_id))

    def _forward_each(self, conn: MqttConnection, run: Any) -> None:
        """A run to a subscriber that needs each message shaped for it (topic aliases, a
        Maximum Packet Size some messages exceed)."""
        for p in run.publishes():
            message = Message(p.topic, p.payload, 0, False, None, self.client_id)
            conn.send_publish(Delivery(message, 0, False, ()), 0)

    def _ack(self, packet_type: int, packet_id: int, reason_code: int = 0) -> bytes:
        """PUBACK/PUBREC/PUBREL/PUBCOMP bytes; the common success form without an object."""
        self.broker.counters.packets_sent[packet_type] += 1
        if reason_code == 0 or self.version != 5:
            first = (packet_type << 4) | (2 if packet_type == PUBREL else 0)
            return bytes((first, 2, packet_id >> 8, packet_id & 0xFF))
        return mqtt.encode(_ACK_CLASSES[packet_type](packet_id, reason_code), 5)

    def handle_pubrel(self, p: Any) -> None:
        session = self.session
        assert session is not None
        found = p.packet_id in session.qos2_inbound
        session.qos2_inbound.pop(p.packet_id, None)
        if found and session.journal is not None:
            session.journal.qos2_released(session)
        code = 0 if found else ReasonCode.PACKET_IDENTIFIER_NOT_FOUND
        self.write(self._ack(PUBCOMP, p.packet_id, code))

    # ------------------------------------------------------------------ PUBLISH out

    def send_publish(self, delivery: Delivery, packet_id: int, dup: bool = False) -> None:
        message = delivery.message
        qos = delivery.qos
        if qos == 0 and (self.paused or self.transport is None):
            publisher = self.broker.publishing
            if self.transport is None or publisher is None or not self._hold_back(publisher):
                self.broker.counters.drop(SLOW_CLIENT, 0)
                return
        alias, known = 0, False
        if self.alias_maximum:
            if self.outbound_aliases is None:
                self.outbound_aliases = {}
            alias = self.outbound_aliases.get(message.topic, 0)
            known = alias != 0
            if not known and len(self.outbound_aliases) < self.alias_maximum:
                alias = len(self.outbound_aliases) + 1
        head, tail = message.encoded(
            self.version, qos, delivery.retain, delivery.sub_ids, alias, known
        )
        if len(head) + len(tail) + (2 if qos else 0) > self.client_max_packet:
            # MQTT 5 §3.1.2.25: discard as if delivered.
            self.broker.counters.drop(PACKET_TOO_LARGE, qos)
            session = self.session
            if qos and session is not None and packet_id in session.inflight:
                del session.inflight[packet_id]
                if session.journal is not None:
                    session.journal.message_done(session, delivery)
            return
        if alias and not known:  # the client learns the alias from this packet
            self.outbound_aliases[message.topic] = alias  # type: ignore[index]
        self.broker.stats["messages_sent"] += 1
        if qos != 1:  # QoS 1 is counted as the rest of messages_sent (counters.py)
            self.broker.counters.sent_by_qos[qos] += 1
        if not qos:
            self.write(head)
            return
        if dup:
            head = bytes((head[0] | 0x08,)) + head[1:]
        self.write(head)
        self._out += (packet_id.to_bytes(2, "big"), tail)  # type: ignore[operator]

    def send_pubrel(self, packet_id: int) -> None:
        self.write(self._ack(PUBREL, packet_id))

    def handle_puback(self, p: Any) -> None:
        assert self.session is not None
        self.session.acknowledge(p.packet_id)

    def handle_pubrec(self, p: Any) -> None:
        session = self.session
        assert session is not None
        entry = session.inflight.get(p.packet_id)
        if entry is None:
            if self.version == 5:
                code = ReasonCode.PACKET_IDENTIFIER_NOT_FOUND
                self.write(self._ack(PUBREL, p.packet_id, code))
            return
        if p.reason_code >= 0x80:
            session.acknowledge(p.packet_id)  # §4.3.3: the flow ends on an error PUBREC
            return
        entry.released = True
        if session.journal is not None:
            session.journal.message_released(session, entry.delivery)
        self.send_pubrel(p.packet_id)

    def handle_pubcomp(self, p: Any) -> None:
        assert self.session is not None
        self.session.acknowledge(p.packet_id)

    # ------------------------------------------------------------------ SUBSCRIBE

    def handle_subscribe(self, p: Any) -> None:
        ids = (p.properties or {}).get("subscription_identifier") or [0]
        codes: list[int] = []
        retained: list[tuple[str, int, int]] = []
        for s in p.subscriptions:
            code = self._subscribe(
                s.topic_filter,
                s.qos,
                s.no_local,
                s.retain_as_published,
                s.retain_handling,
                ids[0],
                retained,
            )
            if code is None:
                return
            codes.append(code)
        self.write(mqtt.encode(mqtt.Suback(p.packet_id, codes), self.version))
        self.broker.counters.packets_sent[SUBACK] += 1
        self._send_retained(retained)

    def _subscribe(
        self,
        topic_filter: str,
        qos: int,
        no_local: bool,
        retain_as_published: bool,
        retain_handling: int,
        subscription_id: int,
        retained: list[tuple[str, int, int]],
    ) -> int | None:
        """One subscription: its SUBACK code, or None after a protocol violation.

        Appends to ``retained`` the (filter, qos, id) whose retained messages are due.
        """
        broker, cfg = self.broker, self.broker.config
        session = self.session
        assert session is not None
        v5 = self.version == 5
        if broker.rewriter:
            topic_filter = broker.rewriter.rewrite(
                "subscribe", topic_filter, self.client_id, self.username
            )
        try:
            trie.validate_topic_filter(topic_filter, cfg.max_topic_levels)
        except MqttError as exc:
            log.info("client %r: %s", self.client_id, exc)
            return ReasonCode.TOPIC_FILTER_INVALID if v5 else 0x80
        shared = trie.parse_shared(topic_filter) is not None
        if shared and no_local:
            self.violation(ReasonCode.PROTOCOL_ERROR, "No Local on a shared subscription")
            return None
        if self.authorizer is not None:
            granted = self.authorizer.subscribe_qos(topic_filter, qos)
            if granted is None:
                return ReasonCode.NOT_AUTHORIZED if v5 else 0x80
            qos = granted
        if (
            cfg.max_subscriptions_per_client
            and topic_filter not in session.subscriptions
            and len(session.subscriptions) >= cfg.max_subscriptions_per_client
        ):
            return ReasonCode.QUOTA_EXCEEDED if v5 else 0x80
        options = SubscriptionOptions(qos, no_local, retain_as_published, subscription_id)
        new = broker.subscribe(session, topic_filter, options)
        if not shared and (retain_handling == 0 or (retain_handling == 1 and new)):
            retained.append((topic_filter, qos, subscription_id))
        return qos

    def _send_retained(self, retained: list[tuple[str, int, int]]) -> None:
        """Retained messages for new subscriptions, after the SUBACK (RETAIN=1, §3.3.1.3)."""
        session = self.session
        assert session is not None
        for topic_filter, qos, sub_id in retained:
            sub_ids = (sub_id,) if sub_id else ()
            for message in self.broker.router.retained_for(topic_filter):
                session.deliver(Delivery(message, min(qos, message.qos), True, sub_ids))

    def handle_unsubscribe(self, p: Any) -> None:
        session = self.session
        assert session is not None
        codes: list[int] = []
        for topic_filter in p.topic_filters:
            if self.broker.rewriter:
                topic_filter = self.broker.rewriter.rewrite(
                    "subscribe", topic_filter, self.client_id, self.username
                )
            try:
                trie.validate_topic_filter(topic_filter, self.broker.config.max_topic_levels)
            except MqttError:
                codes.append(ReasonCode.TOPIC_FILTER_INVALID)
                continue
            removed = self.broker.unsubscribe(session, topic_filter)
            codes.append(0 if removed else ReasonCode.NO_SUBSCRIPTION_EXISTED)
        self.write(mqtt.encode(mqtt.Unsuback(p.packet_id, codes), self.version))
        self.broker.counters.packets_sent[UNSUBACK] += 1

    # ------------------------------------------------------------------ the rest

    def handle_pingreq(self, p: Any) -> None:
        self.write(_PINGRESP)
        self.broker.counters.packets_sent[PINGRESP] += 1

    def handle_disconnect(self, p: Any) -> None:
        session = self.session
        assert session is not None
        props = p.properties or {}
        if "session_expiry_interval" in props:
            if session.expiry_interval == 0 and props["session_expiry_interval"] != 0:
                # §3.14.2.2.2: a session that expires at disconnect cannot be extended.
                self.violation(ReasonCode.PROTOCOL_ERROR, "session expiry set after 0")
                return
            session.expiry_interval = min(
                props["session_expiry_interval"], self.broker.config.max_session_expiry_interval
            )
        if p.reason_code != ReasonCode.DISCONNECT_WITH_WILL:
            self.will = None
        # Detach now, not when the socket is gone: a reconnect handled in between must
        # find the session as this DISCONNECT left it (ended when its expiry is 0).
        self.broker.connection_gone(self)
        self.close()


# Packet type -> handler; one table for all connections.
def _largest_copies(run: Any) -> tuple[int, int]:
    """An upper bound of the largest packet of ``run`` as a (3.1/3.1.1, 5.0) client gets
    it: a 5.0 copy of an older client's packet has a property byte more, which may also
    lengthen its Remaining Length by a byte (MQTT 5 §3.1.2.25 counts the whole packet)."""
    if run.protocol_version == 5:
        return run.largest - 1, run.largest
    return run.largest, run.largest + 2


def _packet_size(data: bytes) -> int:
    """The whole size of the packet starting ``data``, or 0 while its fixed header is
    incomplete (or malformed: the decoder reports that)."""
    length = shift = 0
    for i in range(1, min(len(data), 5)):
        length |= (data[i] & 0x7F) << shift
        if not data[i] & 0x80:
            return i + 1 + length
        shift += 7
    return 0


_HANDLERS: dict[int, Callable[[MqttConnection, Any], None]] = {
    PUBLISH: MqttConnection.handle_publish,
    PUBLISH_RUN: MqttConnection.handle_publish_run,
    ACK_RUN: MqttConnection.handle_ack_run,
    PUBACK: MqttConnection.handle_puback,
    PUBREC: MqttConnection.handle_pubrec,
    PUBREL: MqttConnection.handle_pubrel,
    PUBCOMP: MqttConnection.handle_pubcomp,
    SUBSCRIBE: MqttConnection.handle_subscribe,
    UNSUBSCRIBE: MqttConnection.handle_unsubscribe,
    PINGREQ: MqttConnection.handle_pingreq,
    DISCONNECT: MqttConnection.handle_disconnect,
    CONNECT: MqttConnection.handle_connect,
    AUTH: MqttConnection.handle_auth,
}

_ACK_CLASSES = {
    PUBACK: mqtt.Puback,
    PUBREC: mqtt.Pubrec,
    PUBREL: mqtt.Pubrel,
    PUBCOMP: mqtt.Pubcomp,
}
