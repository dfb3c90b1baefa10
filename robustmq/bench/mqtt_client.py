"""The bench's MQTT clients: asyncio Protocols framed by the ``_core`` codec.

``BenchClient`` is one connection: CONNECT/CONNACK, PINGREQ, DISCONNECT, and the transport's
pause_writing/resume_writing (an open-loop QoS 0 publisher must not buffer without bound).
``Publisher`` pre-encodes its PUBLISH once with ``mqtt.encode_publish`` and sends batches
of copies of it, patching only the fields that change (packet identifier, send time,
sequence number) with one ``struct.pack_into`` each, one ``transport.write`` per batch; it
runs the QoS 1/2 handshakes on the sending side. ``Subscriber`` decodes every complete packet of a read in
one ``Decoder.decode`` call, answers QoS 1/2 in one write per read, and hands the payload
headers to its ``Receiver`` for latency and sequence accounting. Which clients to open and
when is ``mqtt_worker.py``'s.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from robustmq._core import mqtt
from robustmq._core.mqtt_spec import MQTT_5
from robustmq.bench.config import MqttBenchConfig
from robustmq.bench.histogram import Histogram
from robustmq.bench.payload import (
    CONSTANT_SIZE,
    HEADER,
    HEADER_SIZE,
    MAGIC,
    DeliveryTracker,
    parse_headers,
)
from robustmq.errors import MqttError

# PUBACK, PUBREC, PUBREL, PUBCOMP without reason code or properties: type/flags byte,
# remaining length 2, packet identifier (§3.4-§3.7; the same bytes in 3.1.1 and 5.0).
_ACK = struct.Struct(">BBH")
PUBACK_FIRST, PUBREC_FIRST, PUBREL_FIRST, PUBCOMP_FIRST = 0x40, 0x50, 0x62, 0x70
PINGREQ = b"\xc0\x00"

# At most this many PUBLISH packets (and about this many bytes) per transport.write.
BATCH_PACKETS = 256
BATCH_BYTES = 256 * 1024
# Batches a self-paced publisher writes before it yields to the event loop.
REFILL_BATCHES = 4

Counters = dict[str, int]


def new_errors() -> Counters:
    return dict.fromkeys(
        ("connect", "protocol", "disconnect", "sub_rejected", "pub_rejected", "foreign"), 0
    )


def connect_packet(cfg: MqttBenchConfig, client_id: str) -> bytes:
    """The CONNECT a bench client sends: clean start, the run's keep alive and credentials."""
    password = cfg.password.encode() if cfg.password is not None else None
    connect = mqtt.Connect(
        client_id,
        protocol_version=cfg.version,
        clean_start=True,
        keep_alive=cfg.keepalive,
        username=cfg.username,
        password=password,
    )
    return bytes(mqtt.encode(connect, cfg.version))


class BenchClient(asyncio.Protocol):
    """One MQTT connection of the bench."""

    def __init__(self, cfg: MqttBenchConfig, client_id: str, errors: Counters) -> None:
        self.cfg = cfg
        self.client_id = client_id
        self.errors = errors
        self.decoder = mqtt.Decoder(cfg.version)
        self.pending = b""
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.connack: asyncio.Future[Any] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.paused = False
        self.closing = False
        self.timed_out = False  # set by the worker's watchdog
        self.receive_maximum = 65535
        self.on_writable: Callable[[], None] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        # CONNECT goes out now rather than when create_connection's caller resumes: one
        # loop turn less per handshake, which a connection storm feels.
        self.transport.write(self.connect_packet())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connack.done():
            reason = f": {exc}" if exc else ""
            self.connack.set_exception(ConnectionError(f"connection closed before CONNACK{reason}"))
        elif not self.closing:
            self.errors["disconnect"] += 1
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.on_writable is not None:
            self.on_writable()

    def data_received(self, data: bytes) -> None:
        if self.pending:
            data = self.pending + data
        try:
            packets, used = self.decoder.decode(data)
        except MqttError as exc:
            self.protocol_error(f"malformed packet from the broker: {exc}")
            return
        self.pending = data[used:] if used < len(data) else b""
        if packets:
            self.handle(packets)

    # MQTT

    def connect_packet(self) -> bytes:
        return connect_packet(self.cfg, self.client_id)

    def handle(self, packets: list[Any]) -> None:
        for packet in packets:
            self.control(packet)

    def control(self, packet: Any) -> None:
        """Packets every role handles; anything else is a protocol error for this role."""
        kind = type(packet)
        if kind is mqtt.Connack:
            if self.connack.done():
                self.protocol_error("second CONNACK")
                return
            props = packet.properties or {}
            self.receive_maximum = props.get("receive_maximum", 65535)
            self.connack.set_result(packet)
        elif kind is mqtt.Pingresp:
            pass
        elif kind is mqtt.Disconnect:
            # MQTT 5.0 §3.14: the server closes with a reason code.
            self.errors["disconnect"] += 1
            self.closing = True
        else:
            self.protocol_error(f"unexpected {kind.__name__}")

    def protocol_error(self, message: str) -> None:
        self.errors["protocol"] += 1
        if not self.connack.done():
            self.connack.set_exception(ConnectionError(message))
        if self.transport is not None:
            self.closing = True
            self.transport.abort()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def ping(self) -> None:
        self.write(PINGREQ)

    def disconnect(self) -> None:
        """Sends DISCONNECT (normal disconnection) and closes."""
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(bytes(mqtt.encode(mqtt.Disconnect(), self.cfg.version)))
            self.transport.close()


class Receiver:
    """Latency and sequence accounting for one receiving unit (see DeliveryTracker).

    ``collect`` runs per read and only stores the joined headers with the read's wall-clock
    time; ``flush`` does the numpy work for everything collected, a few times a second.
    """

    __slots__ = ("tracker", "latency", "errors", "run", "chunks", "received")

    def __init__(self, latency: Histogram, errors: Counters, run: int | None) -> None:
        self.tracker = DeliveryTracker()
        self.latency = latency
        self.errors = errors
        self.run = run  # only this run's publishers count; None accepts any run
        self.chunks: list[tuple[bytes, int, int]] = []
        self.received = 0

    def collect(self, heads: list[bytes], received_ns: int) -> None:
        joined = b"".join(heads)
        if len(joined) != HEADER_SIZE * len(heads):
            whole = [h for h in heads if len(h) == HEADER_SIZE]
            self.errors["foreign"] += len(heads) - len(whole)
            joined = b"".join(whole)
        self.received += len(heads)
        self.chunks.append((joined, received_ns, len(joined) // HEADER_SIZE))

    def flush(self) -> None:
        if not self.chunks:
            return
        chunks, self.chunks = self.chunks, []
        headers = parse_headers(b"".join(c[0] for c in chunks))
        received_ns = np.repeat(
            np.fromiter((c[1] for c in chunks), np.int64, len(chunks)),
            np.fromiter((c[2] for c in chunks), np.int64, len(chunks)),
        )
        ours = headers["magic"] == MAGIC
        if self.run is not None:
            ours &= headers["run"] == self.run
        if not ours.all():
            self.errors["foreign"] += int(np.count_nonzero(~ours))
            headers, received_ns = headers[ours], received_ns[ours]
        self.latency.record(received_ns - headers["sent_ns"].astype(np.int64))
        keys = (headers["run"].astype(np.uint64) << np.uint64(32)) | headers["publisher"]
        self.tracker.add(keys, headers["seq"])


class Subscriber(BenchClient):
    """A client that subscribes to one filter and accounts every delivery."""

    def __init__(
        self,
        cfg: MqttBenchConfig,
        client_id: str,
        errors: Counters,
        topic_filter: str,
        receiver: Receiver,
    ) -> None:
        super().__init__(cfg, client_id, errors)
        self.topic_filter = topic_filter
        self.receiver = receiver
        self.received = 0
        loop = asyncio.get_running_loop()
        self.suback: asyncio.Future[Any] = loop.create_future()

    def subscribe_packet(self) -> bytes:
        subscribe = mqtt.Subscribe(1, [mqtt.Subscription(self.topic_filter, self.cfg.qos)])
        return bytes(mqtt.encode(subscribe, self.cfg.version))

    def handle(self, packets: list[Any]) -> None:
        publish, pubrel = mqtt.Publish, mqtt.Pubrel
        heads = []
        acks = []
        for p in packets:
            kind = type(p)
            if kind is publish:
                heads.append(p.payload[:HEADER_SIZE])
                if p.qos == 1:
                    acks.append(_ACK.pack(PUBACK_FIRST, 2, p.packet_id))
                elif p.qos == 2:
                    acks.append(_ACK.pack(PUBREC_FIRST, 2, p.packet_id))
            elif kind is pubrel:
                acks.append(_ACK.pack(PUBCOMP_FIRST, 2, p.packet_id))
            elif kind is mqtt.Suback:
                if not self.suback.done():
                    self.suback.set_result(p)
            else:
                self.control(p)
        if heads:
            self.received += len(heads)
            self.receiver.collect(heads, time.time_ns())
        if acks:
            self.write(b"".join(acks))


class Publisher(BenchClient):
    """A client that publishes numbered, timestamped messages to one topic."""

    def __init__(
        self,
        cfg: MqttBenchConfig,
        client_id: str,
        errors: Counters,
        topic: str,
        index: int,
    ) -> None:
        super().__init__(cfg, client_id, errors)
        self.index = index
        self.sent = 0
        self.acked = 0
        self.outstanding = 0
        self.limit = 0
        self.active = False
        self.scheduled = False
        qos = cfg.qos
        header = np.zeros(1, dtype=HEADER)
        header["magic"] = MAGIC
        header["run"] = cfg.run_id
        header["publisher"] = index
        payload = header.tobytes() + bytes(cfg.size - HEADER_SIZE)
        self.packet = bytes(
            mqtt.encode_publish(topic, payload, qos, False, False, 1, None, cfg.version)
        )
        self.length = len(self.packet)
        payload_at = self.length - cfg.size
        # Per message only the packet identifier (QoS 1/2), the send time and the sequence
        # change. §3.3.2: topic name, packet identifier, then (5.0) properties, then payload.
        if qos:
            self.patch_at = payload_at - 2 - (1 if cfg.version == MQTT_5 else 0)
            between = self.packet[self.patch_at + 2 : payload_at + CONSTANT_SIZE]
            self.patch = struct.Struct(f">H{len(between)}sqI")
            self.between = between
        else:
            self.patch_at = payload_at + CONSTANT_SIZE
            self.patch = struct.Struct(">qI")
        self.batch = max(1, min(BATCH_PACKETS, BATCH_BYTES // self.length))

    def start(self, limit: int, paced: bool) -> None:
        """Starts publishing: at most ``limit`` messages in all (0: no limit). Unless the
        worker ``paced`` it (--rate), the publisher keeps itself busy: acks and
        resume_writing refill the window, and an open-loop QoS 0 publisher reschedules
        itself each loop turn until the transport pauses it."""
        self.limit = limit
        self.active = True
        if not paced:
            self.on_writable = self.refill
            self.refill()

    def stop(self) -> None:
        self.active = False

    def refill(self) -> None:
        if not self.active:
            return
        for _ in range(REFILL_BATCHES):
            n = self.room()
            if self.limit:
                n = min(n, self.limit - self.sent)
            if n <= 0:
                return
            self.send(n)
        if not self.scheduled:
            # More room left: yield to the loop (reads, acks, timers) and continue. One
            # pending turn at most, whoever (ack, resume_writing) called refill meanwhile.
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self.scheduled = False
        self.refill()

    @property
    def window(self) -> int:
        return min(self.cfg.inflight, self.receive_maximum)

    def room(self) -> int:
        """How many PUBLISH packets may go now (transport and QoS 1/2 window permitting)."""
        if self.paused or self.closing:
            return 0
        if self.cfg.qos:
            return min(self.batch, self.window - self.outstanding)
        return self.batch

    def send(self, n: int) -> None:
        """Writes ``n`` copies of the pre-encoded PUBLISH, each patched, in one write."""
        buf = bytearray(self.packet * n)
        pack, at, length = self.patch.pack_into, self.patch_at, self.length
        sent_ns = time.time_ns()
        first = self.sent
        if self.cfg.qos:
            between = self.between
            for seq in range(first, first + n):
                # Identifiers cycle through 1..65535; the window (<= 65535) keeps them unique.
                pack(buf, at, seq % 65535 + 1, between, sent_ns, seq)
                at += length
            self.outstanding += n
        else:
            for seq in range(first, first + n):
                pack(buf, at, sent_ns, seq)
                at += length
        self.sent = first + n
        self.write(bytes(buf))

    def handle(self, packets: list[Any]) -> None:
        acked = 0
        releases = []
        for p in packets:
            kind = type(p)
            if kind is mqtt.Puback or kind is mqtt.Pubcomp:
                acked += 1
                if p.reason_code >= 0x80:
                    self.errors["pub_rejected"] += 1
            elif kind is mqtt.Pubrec:
                if p.reason_code >= 0x80:
                    # MQTT 5.0 §4.3.3: a PUBREC with an error ends the exchange.
                    self.errors["pub_rejected"] += 1
                    acked += 1
                else:
                    releases.append(_ACK.pack(PUBREL_FIRST, 2, p.packet_id))
            else:
                self.control(p)
        if releases:
            self.write(b"".join(releases))
        if acked:
            self.acked += acked
            self.outstanding -= acked
            if self.on_writable is not None:
                self.on_writable()
