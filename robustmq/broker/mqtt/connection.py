"""One MQTT client connection: the asyncio Protocol and its packet handlers.

``data_received`` only feeds the decoder and hands every complete packet of the read to
its handler; output is collected and written once per event-loop tick. What a packet
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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from robustmq._core import mqtt, trie
from robustmq._core.mqtt_spec import (
    AUTH,
    CONNECT,
    DISCONNECT,
    MAX_PACKET_SIZE,
    PINGREQ,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBSCRIBE,
    UNSUBSCRIBE,
    ReasonCode,
)
from robustmq.broker.auth.enhanced import AuthExchange
from robustmq.broker.mqtt.message import Message
from robustmq.broker.mqtt.rewrite import fill_placeholders
from robustmq.broker.mqtt.session import Delivery, SubscriptionOptions
from robustmq.broker.mqtt.sys_topics import is_sys_topic
from robustmq.errors import MqttError, v3_connack_code

if TYPE_CHECKING:
    from robustmq.broker.mqtt.server import MqttBroker
    from robustmq.broker.mqtt.session import Session

log = logging.getLogger(__name__)

_PINGRESP = b"\xd0\x00"
# A read at least this large means the client is streaming: yield to the loop after it.
_FAIR_READ = 16 * 1024


class MqttConnection(asyncio.Protocol):
    # Slots: a broker holds one of these per client, so its size is memory per connection.
    __slots__ = (
        "broker", "decoder", "transport", "peer", "version", "client_id",
        "username", "session", "connected", "closing", "will", "keep_alive", "last_seen",
        "send_quota", "client_max_packet", "topic_aliases", "alias_maximum",
        "outbound_aliases", "paused", "paused_at", "held_back", "read_pauses",
        "_buffer", "_out", "_flush_scheduled", "_connect_timer", "_auth", "_auth_method",
        "_pending_connect",
    )  # fmt: skip

    def __init__(self, broker: MqttBroker) -> None:
        self.broker = broker
        cfg = broker.config
        self.decoder = mqtt.Decoder(0, cfg.max_packet_size)
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.version = 4
        self.client_id = ""
        self.username: str | None = None
        self.session: Session | None = None
        self.connected = False
        self.closing = False
        self.will: Any = None
        self.keep_alive = 0
        self.last_seen = time.monotonic()
        self.send_quota = 65535  # the client's Receive Maximum
        self.client_max_packet = MAX_PACKET_SIZE
        self.topic_aliases: dict[int, str] = {}  # the client's aliases for its PUBLISHes
        self.alias_maximum = 0  # the client's Topic Alias Maximum: aliases we may send
        self.outbound_aliases: dict[str, int] = {}
        self.paused = False
        self.paused_at = 0.0
        self.held_back: set[MqttConnection] = set()  # publishers paused for our sake
        self.read_pauses = 0  # subscribers that paused reading from us
        self._buffer = b""
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._connect_timer: asyncio.TimerHandle | None = None
        self._auth: AuthExchange | None = None  # an enhanced-authentication exchange
        self._auth_method: str | None = None
        self._pending_connect: tuple[Any, bool] | None = None  # CONNECT awaiting its AUTH

    # ------------------------------------------------------------------ transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.broker.connections.add(self)
        self.broker.stats["connections_total"] += 1
        self._connect_timer = asyncio.get_running_loop().call_later(
            self.broker.config.connect_timeout, self._connect_timed_out
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self._connect_timer is not None:
            self._connect_timer.cancel()
        self.broker.connections.discard(self)
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

    def _hold_back(self, publisher: MqttConnection) -> bool:
        """Backpressure for QoS 0: this subscriber cannot keep up, so stop reading from
        the publisher feeding it until it can (for at most backpressure_timeout seconds;
        after that its QoS 0 messages are dropped and counted instead)."""
        if publisher is self or publisher.closing:
            return False
        if time.monotonic() - self.paused_at > self.broker.config.backpressure_timeout:
            return False
        if publisher not in self.held_back:
            self.held_back.add(publisher)
            publisher._pause_reading()
        return True

    def _release_publishers(self) -> None:
        held, self.held_back = self.held_back, set()
        for publisher in held:
            publisher._resume_reading()

    def data_received(self, data: bytes) -> None:
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
            self.transport.resume_reading()

    def _handle_bytes(self, data: bytes) -> None:
        """Decodes every complete packet of ``data`` (after what was left over) and
        hands each to its handler; an incomplete tail waits for the next read."""
        if self._buffer:
            data = self._buffer + data
        handlers = _HANDLERS
        while data and not self.closing:
            try:
                packets, consumed = self.decoder.decode(data)
            except MqttError as exc:
                self.violation(exc.reason_code, str(exc))
                return
            for packet in packets:
                handler = handlers.get(packet.packet_type)
                if not self.connected and packet.packet_type not in (CONNECT, AUTH):
                    handler = None  # §4.12: only AUTH may come before the CONNACK
                if handler is None:
                    self.violation(
                        ReasonCode.PROTOCOL_ERROR,
                        f"{type(packet).__name__.upper()} is not sent by clients",
                    )
                    return
                try:
                    handler(self, packet)
                except Exception:
                    # A bug of ours must cost this client its connection, not the broker.
                    log.exception("client %r: error handling %r", self.client_id, packet)
                    self.violation(ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR, "internal error")
                    return
                if self.closing:
                    return
            data = data[consumed:]
            if not packets:
                break
        self._buffer = data

    def write(self, data: bytes) -> None:
        """Queues bytes for the client. Everything written while one read is handled
        goes out in one write at the end of that read (so PUBACKs for a read, and a
        subscriber's share of it, cost one syscall each); writes from timers go out on
        the next loop iteration."""
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            if self.broker.reading:
                self.broker.pending_flush.append(self)
            else:
                asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))
            self.broker.stats["bytes_sent"] += sum(map(len, out))

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
        elif reason_code == ReasonCode.UNSUPPORTED_PROTOCOL_VERSION:
            self.write(mqtt.encode(mqtt.Connack(False, v3_connack_code(reason_code)), 4))
        self.close()

    def disconnect(self, reason_code: int) -> None:
        """Server-initiated DISCONNECT (MQTT 5) and close."""
        if self.version == 5 and self.connected:
            self.write(mqtt.encode(mqtt.Disconnect(reason_code), 5))
        self.close()

    def _connect_timed_out(self) -> None:
        if not self.connected and not self.closing:
            log.info("connection from %s sent no CONNECT in time; closing", self.peer)
            self.close()

    # ------------------------------------------------------------------ CONNECT

    def _refuse(self, reason_code: int, why: str) -> None:
        log.info("client %r (%s) refused: %s", self.client_id, self.peer, why)
        code = reason_code if self.version == 5 else v3_connack_code(reason_code)
        self.write(mqtt.encode(mqtt.Connack(False, code), self.version))
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
        if len(broker.connections) > cfg.max_connections:
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
        if method is not None:
            self._auth = broker.auth_methods[method]()
            self._auth_method = method
            self._pending_connect = (p, assigned)
            self._auth_step(props.get("authentication_data"))
            return
        self._accept(p, assigned, None)

    def _accept(self, p: Any, assigned: bool, auth_props: dict[str, Any] | None) -> None:
        """CONNECT passed every check (and authentication): bind the session, CONNACK."""
        broker, cfg = self.broker, self.broker.config
        props = p.properties or {}
        v5 = self.version == 5
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
        if self._connect_timer is not None:
            self._connect_timer.cancel()
        self.connected = True
        session, present = broker.open_session(self, p.clean_start, expiry)
        ack_props: dict[str, Any] = {}
        if v5:
            if assigned:
                ack_props["assigned_client_identifier"] = self.client_id
            if server_keep_alive is not None:
                ack_props["server_keep_alive"] = server_keep_alive
            if expiry != props.get("session_expiry_interval", 0):
                ack_props["session_expiry_interval"] = expiry
            if props.get("request_response_information") and cfg.response_information:
                ack_props["response_information"] = cfg.response_information
            ack_props["receive_maximum"] = cfg.receive_maximum
            ack_props["maximum_packet_size"] = cfg.max_packet_size
            ack_props["topic_alias_maximum"] = cfg.topic_alias_maximum
            if not cfg.retain_available:
                ack_props["retain_available"] = 0
            if auth_props:
                ack_props.update(auth_props)
        self.write(mqtt.encode(mqtt.Connack(present, 0, ack_props or None), self.version))
        session.resume(self)
        if broker.auto_subscribe:
            retained: list[tuple[str, int, int]] = []
            for template, qos in broker.auto_subscribe:
                topic_filter = fill_placeholders(template, self.client_id, self.username)
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
            return
        self._auth = None
        pending, self._pending_connect = self._pending_connect, None
        if code != ReasonCode.SUCCESS:
            if pending is not None:
                self._refuse(code, f"authentication method {self._auth_method!r} refused")
            else:
                self.disconnect(code)
        elif pending is not None:
            self._accept(*pending, props)
        else:
            self.write(mqtt.encode(mqtt.Auth(ReasonCode.SUCCESS, props), 5))

    # ------------------------------------------------------------------ PUBLISH in

    def handle_publish(self, p: Any) -> None:
        cfg = self.broker.config
        session = self.session
        assert session is not None
        topic = p.topic
        props = p.properties
        if props is not None and "topic_alias" in props:
            alias = props["topic_alias"]
            if alias > cfg.topic_alias_maximum:
                self.violation(ReasonCode.TOPIC_ALIAS_INVALID, f"topic alias {alias} too large")
                return
            if topic:
                self.topic_aliases[alias] = topic
            else:
                topic = self.topic_aliases.get(alias, "")
                if not topic:
                    self.violation(ReasonCode.PROTOCOL_ERROR, f"unknown topic alias {alias}")
                    return
        if self.broker.rewriter:
            topic = self.broker.rewriter.rewrite("publish", topic, self.client_id, self.username)
        qos = p.qos
        if qos == 2 and p.packet_id in session.qos2_inbound:
            self.write(self._ack(PUBREC, p.packet_id))  # duplicate
            return
        # 3.1/3.1.1 clients are never told our Receive Maximum: only the packet id space
        # bounds them.
        if qos == 2 and self.version == 5 and len(session.qos2_inbound) >= cfg.receive_maximum:
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
        self.broker.stats["messages_received"] += 1
        code = self.broker.publish(
            self, Message(topic, p.payload, qos, p.retain, props, self.client_id)
        )
        if qos == 1:
            self.write(self._ack(PUBACK, p.packet_id, code))
        elif qos == 2:
            if code < 0x80:
                session.qos2_inbound[p.packet_id] = None
            self.write(self._ack(PUBREC, p.packet_id, code))

    def _ack(self, packet_type: int, packet_id: int, reason_code: int = 0) -> bytes:
        """PUBACK/PUBREC/PUBREL/PUBCOMP bytes; the common success form without an object."""
        if reason_code == 0 or self.version != 5:
            first = (packet_type << 4) | (2 if packet_type == PUBREL else 0)
            return bytes((first, 2, packet_id >> 8, packet_id & 0xFF))
        return mqtt.encode(_ACK_CLASSES[packet_type](packet_id, reason_code), 5)

    def handle_pubrel(self, p: Any) -> None:
        session = self.session
        assert session is not None
        found = p.packet_id in session.qos2_inbound
        session.qos2_inbound.pop(p.packet_id, None)
        code = 0 if found else ReasonCode.PACKET_IDENTIFIER_NOT_FOUND
        self.write(self._ack(PUBCOMP, p.packet_id, code))

    # ------------------------------------------------------------------ PUBLISH out

    def send_publish(self, delivery: Delivery, packet_id: int, dup: bool = False) -> None:
        message = delivery.message
        qos = delivery.qos
        if qos == 0 and (self.paused or self.transport is None):
            publisher = self.broker.publishing
            if self.transport is None or publisher is None or not self._hold_back(publisher):
                self.broker.stats["messages_dropped"] += 1
                return
        alias, known = 0, False
        if self.alias_maximum:
            alias = self.outbound_aliases.get(message.topic, 0)
            known = alias != 0
            if not known and len(self.outbound_aliases) < self.alias_maximum:
                alias = len(self.outbound_aliases) + 1
        head, tail = message.encoded(
            self.version, qos, delivery.retain, delivery.sub_ids, alias, known
        )
        if len(head) + len(tail) + (2 if qos else 0) > self.client_max_packet:
            # MQTT 5 §3.1.2.25: discard as if delivered.
            self.broker.stats["messages_dropped"] += 1
            if qos and self.session is not None:
                self.session.inflight.pop(packet_id, None)
            return
        if alias and not known:  # the client learns the alias from this packet
            self.outbound_aliases[message.topic] = alias
        self.broker.stats["messages_sent"] += 1
        if not qos:
            self.write(head)
            return
        if dup:
            head = bytes((head[0] | 0x08,)) + head[1:]
        self.write(head)
        self.write(packet_id.to_bytes(2, "big"))
        self.write(tail)

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

    # ------------------------------------------------------------------ the rest

    def handle_pingreq(self, p: Any) -> None:
        self.write(_PINGRESP)

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
_HANDLERS: dict[int, Callable[[MqttConnection, Any], None]] = {
    PUBLISH: MqttConnection.handle_publish,
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
