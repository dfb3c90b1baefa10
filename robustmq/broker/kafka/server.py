"""The Kafka listener: ``KafkaBroker`` (listener, shared state, request dispatch) and
``KafkaConnection`` (one per client socket).

A connection only frames bytes: ``data_received`` splits complete size-prefixed frames
off its buffer and queues them; one task per connection answers them strictly in order,
one at a time, as a Kafka broker does (a waiting Fetch holds back the requests behind it
on that connection only). A frame announcing more than ``max_request_size`` (any request
but Produce: more than ``MAX_NON_PRODUCE_REQUEST``), a header that cannot be read or a
request this broker does not implement closes the connection, with a log line and a count
in ``stats``; ApiVersions with too new a version is answered with UNSUPPORTED_VERSION and
the supported list instead (KIP-511). With SASL configured, a request other than
ApiVersions, SaslHandshake and SaslAuthenticate before authentication closes the
connection the same way (``sasl.py``), so does a frame over ``SASL_MAX_RECEIVE_SIZE``
before authentication, and after SaslHandshake v0 the next frame is a bare SASL token
(of any size from 0). A connection idle for ``CONNECTIONS_MAX_IDLE`` seconds is closed, as
Kafka does. What each API does lives in the handler modules; this file does no protocol
logic of its own.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import struct
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, cast

from robustmq._core import kafka
from robustmq._core.kafka_codec import RequestHeader
from robustmq._core.kafka_spec import APIS
from robustmq.broker.auth.users import UserStore
from robustmq.broker.kafka import (
    admin,
    coordinator,
    fetch,
    metadata,
    offsets,
    produce,
    producers,
    sasl,
)
from robustmq.broker.kafka.coordinator import GroupCoordinator
from robustmq.broker.kafka.registry import TopicRegistry
from robustmq.broker.kafka.topics_store import TopicStore
from robustmq.config import KafkaConfig
from robustmq.errors import (
    KafkaError,
    KafkaIllegalSaslState,
    KafkaInvalidRequest,
    KafkaUnsupportedVersion,
    ShardNotFound,
)
from robustmq.observability.latency import LatencyHistogram
from robustmq.storage import StorageEngine

log = logging.getLogger(__name__)

Handler = Callable[
    ["KafkaBroker", "KafkaConnection", RequestHeader, dict[str, Any]],
    Awaitable[dict[str, Any] | None],
]

HANDLERS: dict[int, Handler] = {
    0: produce.handle_produce,
    1: fetch.handle_fetch,
    2: offsets.handle_list_offsets,
    3: metadata.handle_metadata,
    8: offsets.handle_offset_commit,
    9: offsets.handle_offset_fetch,
    10: metadata.handle_find_coordinator,
    11: coordinator.handle_join_group,
    12: coordinator.handle_heartbeat,
    13: coordinator.handle_leave_group,
    14: coordinator.handle_sync_group,
    15: coordinator.handle_describe_groups,
    16: coordinator.handle_list_groups,
    17: sasl.handle_sasl_handshake,
    18: metadata.handle_api_versions,
    19: admin.handle_create_topics,
    20: admin.handle_delete_topics,
    21: admin.handle_delete_records,
    22: producers.handle_init_producer_id,
    23: metadata.handle_offset_for_leader_epoch,
    32: admin.handle_describe_configs,
    33: admin.handle_alter_configs,
    36: sasl.handle_sasl_authenticate,
    37: admin.handle_create_partitions,
    42: coordinator.handle_delete_groups,
    44: admin.handle_incremental_alter_configs,
    60: admin.handle_describe_cluster,
}
assert set(HANDLERS) == set(APIS), "every API in the spec table needs a handler"

# Requests queued on one connection before it stops reading (clients pipeline at most
# max.in.flight.requests.per.connection, 5 by default); it also stops once the queued
# frames hold max_request_size bytes, so one connection buffers at most about two frames'
# worth (Kafka reads one request per connection at a time).
_MAX_QUEUED = 64
# Largest frame of any request but Produce. The biggest legitimate ones (OffsetCommit of
# tens of thousands of partitions, a leader's SyncGroup for a large group) stay well
# below it; decoding 1 MiB of small array elements takes about 0.3 s and 40 MiB of
# Python objects, where max_request_size (100 MiB by default) would take a minute and 4 GiB.
MAX_NON_PRODUCE_REQUEST = 1 << 20
# How often retention runs over the Kafka partitions, seconds.
RETENTION_INTERVAL = 60.0
# Kafka's connections.max.idle.ms default: a connection that sends nothing and has no
# request in progress for this long is closed (clients reconnect when they need to), so
# peers that vanished without a FIN, or that opened sockets and left them, do not pile up.
CONNECTIONS_MAX_IDLE = 600.0
IDLE_SWEEP_INTERVAL = 10.0
FAILED_AUTHENTICATION_DELAY = 0.1  # seconds; Kafka's connection.failed.authentication.delay.ms
# Kafka's sasl.server.max.receive.size: the largest frame read from a connection that has
# not authenticated yet, so a peer without credentials cannot make the broker buffer a
# Produce-sized frame.
SASL_MAX_RECEIVE_SIZE = 512 * 1024
_FRAME_SIZE = struct.Struct(">i")


class KafkaBroker:
    def __init__(
        self,
        config: KafkaConfig,
        engine: StorageEngine,
        node_id: int = 1,
        users: UserStore | None = None,
        offset_store: offsets.OffsetStore | None = None,
        topic_store: TopicStore | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        # Committed offsets: the node passes the Meta Service's (offsets.MetaOffsets).
        self.offsets = offset_store or offsets.EngineOffsets(engine)
        self.node_id = node_id
        self.sasl_users = sasl.SaslUsers(users)
        self.cluster_id = "robustmq"
        # Topic metadata: the node passes the Meta Service's (topics_store.MetaTopics).
        self.topics = TopicRegistry(engine, config, topic_store)
        self.arrivals = fetch.DataArrivals()
        self.producers = producers.ProducerStates()
        self.groups = GroupCoordinator(self)
        self.connections: set[KafkaConnection] = set()
        self.stats: Counter[str] = Counter()
        # Handler time of every request by API key (robustmq_kafka_request_seconds).
        self.request_latency = LatencyHistogram(max(APIS) + 1, 1)
        self._server: asyncio.AbstractServer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> list[tuple[str, str, int]]:
        if self.config.sasl_mechanisms and not len(self.sasl_users):
            log.warning("kafka SASL is on but [auth] has no users: every authentication fails")
        await self.topics.load()
        await self.offsets.start(self.topics)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: KafkaConnection(self),
            self.config.bind,
            self.config.port,
            reuse_address=True,
        )
        host, port = self._server.sockets[0].getsockname()[:2]
        self._tasks = [
            loop.create_task(self.groups.run_expiry()),
            loop.create_task(self._run_retention()),
            loop.create_task(self._close_idle()),
        ]
        return [("kafka", host, port)]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        for conn in list(self.connections):
            conn.close()
        self.groups.close()
        if self._server is not None:
            await self._server.wait_closed()

    async def _run_retention(self) -> None:
        while True:
            await asyncio.sleep(RETENTION_INTERVAL)
            for _, _, shard in self.topics.partitions():
                try:
                    await self.engine.apply_retention(shard)
                except ShardNotFound:
                    pass  # the topic was deleted meanwhile

    async def _close_idle(self) -> None:
        while True:
            await asyncio.sleep(IDLE_SWEEP_INTERVAL)
            now = time.monotonic()
            for conn in list(self.connections):
                if not conn.busy and now - conn.last_active > CONNECTIONS_MAX_IDLE:
                    log.info("kafka %s: idle for %g s; closing", conn.peer, CONNECTIONS_MAX_IDLE)
                    self.stats["idle_closed"] += 1
                    conn.close()

    async def dispatch(self, conn: KafkaConnection, frame: memoryview) -> bytes | None:
        """The response frame to one request frame; None when no response is due (acks=0).

        Raises ``KafkaError`` when the connection has to be closed."""
        if conn.sasl.raw and not conn.sasl.authenticated:
            # After SaslHandshake v0 the tokens travel as bare size-prefixed frames.
            reply = await sasl.authenticate_token(self, conn, bytes(frame))
            return struct.pack(">i", len(reply)) + reply
        header, reader = kafka.decode_request_header(frame)
        if not conn.sasl.authenticated and header.api_key not in sasl.PRE_AUTHENTICATION_APIS:
            self.stats["sasl_unauthenticated_requests"] += 1
            raise KafkaIllegalSaslState(
                f"api key {header.api_key} before SASL authentication (Kafka closes such "
                "connections)"
            )
        try:
            decode, _ = kafka.body_codec(header.api_key, header.api_version, response=False)
        except KafkaUnsupportedVersion:
            if header.api_key != 18:
                raise
            # KIP-511: ApiVersions answers in v0 with the versions it does support.
            self.stats["unsupported_versions"] += 1
            return kafka.encode_response(
                18,
                0,
                header.correlation_id,
                metadata.api_versions_body(KafkaUnsupportedVersion.code),
            )
        conn.client_id = header.client_id
        start = time.perf_counter_ns()
        response = await HANDLERS[header.api_key](self, conn, header, decode(reader))
        self.request_latency.record(header.api_key, time.perf_counter_ns() - start)
        if response is None:
            return None
        self.stats["requests"] += 1
        # By API key and top-level error code, exported as robustmq_kafka_requests_total.
        self.stats[f"api {header.api_key} {response.get('error_code', 0)}"] += 1
        return kafka.encode_response(
            header.api_key, header.api_version, header.correlation_id, response
        )


def _split_unauthenticated_frames(buf: bytearray) -> tuple[list[memoryview], int]:
    """Complete size-prefixed frames at the start of ``buf`` of a connection that has not
    authenticated, and how many bytes they span.

    Unlike ``split_frames`` there is no lower bound: after SaslHandshake v0 a frame is a
    bare SASL token ("\\0al\\0pw1" is 7 bytes), and a short request frame is refused when
    its header is read. The upper bound is Kafka's for such connections. Clients send
    nothing after SaslAuthenticate until its answer, so no frame split here belongs to the
    authenticated connection."""
    view = memoryview(buf)
    frames = []
    pos = 0
    while len(view) - pos >= 4:
        size = _FRAME_SIZE.unpack_from(view, pos)[0]
        if not 0 <= size <= SASL_MAX_RECEIVE_SIZE:
            raise KafkaInvalidRequest(
                f"frame size {size} before SASL authentication is outside "
                f"[0, {SASL_MAX_RECEIVE_SIZE}] (Kafka's sasl.server.max.receive.size)",
                pos,
            )
        if len(view) - pos - 4 < size:
            break
        frames.append(view[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return frames, pos


class KafkaConnection(asyncio.Protocol):
    def __init__(self, broker: KafkaBroker) -> None:
        self.broker = broker
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.host = "127.0.0.1"  # the address the client reached us at (Metadata answers it)
        self.port = broker.config.port
        self.client_id: str | None = None
        self.sasl = sasl.SaslSession(bool(broker.config.sasl_mechanisms))
        self.close_after_response = False  # a failed SASL exchange: answer, then close
        self._buf = bytearray()
        self._queue: collections.deque[memoryview] = collections.deque()
        self._queued_bytes = 0
        self._worker: asyncio.Task[None] | None = None
        self._paused = False
        self.closed = False
        self.last_active = time.monotonic()  # last bytes received or response sent

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        sock = transport.get_extra_info("sockname")
        if sock:
            self.host, self.port = sock[0], sock[1]
        self.broker.connections.add(self)
        self.broker.stats["connections_total"] += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.broker.connections.discard(self)
        if self._worker is not None:
            self._worker.cancel()

    @property
    def busy(self) -> bool:
        """Whether a request is queued or being answered (a long-polling Fetch is not idle)."""
        return self._worker is not None and not self._worker.done()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_active = time.monotonic()
        self._buf += data
        max_size = self.broker.config.max_request_size
        try:
            if self.sasl.authenticated:
                frames, used = kafka.split_frames(
                    self._buf, max_size, min(max_size, MAX_NON_PRODUCE_REQUEST)
                )
            else:
                frames, used = _split_unauthenticated_frames(self._buf)
        except KafkaError as exc:
            self.fail(exc)
            return
        if not frames:
            return
        # The frames stay views of the bytes they arrived in, never copied: the buffer
        # they point into is handed over to them and a new one holds what follows.
        self._queue.extend(frames)
        self._queued_bytes += used
        self._buf = self._buf[used:] if used < len(self._buf) else bytearray()
        if (
            (len(self._queue) >= _MAX_QUEUED or self._queued_bytes >= max_size)
            and not self._paused
            and self.transport is not None
        ):
            self._paused = True
            self.transport.pause_reading()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._answer())

    async def _answer(self) -> None:
        while self._queue and not self.closed:
            frame = self._queue.popleft()
            self._queued_bytes -= len(frame) + 4
            try:
                response = await self.broker.dispatch(self, frame)
            except KafkaError as exc:
                self.fail(exc)
                return
            except Exception:
                log.exception("kafka %s: request failed; closing the connection", self.peer)
                self.broker.stats["internal_errors"] += 1
                self.close()
                return
            self.last_active = time.monotonic()
            if response is not None and self.transport is not None and not self.closed:
                self.transport.write(response)
            if self.close_after_response:
                # Kafka's connection.failed.authentication.delay.ms: the client reads the
                # error before the connection goes, and a retry loop is slowed down.
                self._queue.clear()
                if self.transport is not None:
                    self.transport.pause_reading()
                asyncio.get_running_loop().call_later(FAILED_AUTHENTICATION_DELAY, self.close)
                return
            if (
                self._paused
                and len(self._queue) < _MAX_QUEUED // 2
                and self._queued_bytes < self.broker.config.max_request_size // 2
                and self.transport
            ):
                self._paused = False
                self.transport.resume_reading()

    def fail(self, exc: KafkaError) -> None:
        """Log and count a request the broker cannot answer, and close the connection."""
        self.broker.stats["protocol_errors"] += 1
        log.warning(
            "kafka %s (client id %r): %s; closing the connection", self.peer, self.client_id, exc
        )
        self.close()

    def close(self) -> None:
        self.closed = True
        self._queue.clear()
        self._queued_bytes = 0
        if self.transport is not None:
            self.transport.close()
