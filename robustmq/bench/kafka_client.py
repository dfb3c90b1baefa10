"""The bench's Kafka clients: asyncio Protocols framed by the ``_core`` Kafka codec.

``KafkaClient`` is one connection: requests go out size-prefixed with a correlation id
(``kafka.encode_request``, ``robustmq._core.kafka`` being the selected twin of the
Kafka codec) and responses come back matched by it, decoded by
``kafka.decode_response``; several requests may be in flight, and the broker
answers them in order. ``BatchBuilder`` makes record batches v2 (Kafka's message format,
magic 2) of bench payloads: the records of a batch are encoded once as a template, and a
batch of ``n`` records is the template's first ``n`` records with the send times and
sequence numbers written in by numpy, one CRC32C and, with gzip, one compression.
``Producer`` sends Produce requests (one batch each, partitions taken in turn, as a
sticky partitioner does) within ``--inflight``; ``Consumer`` long-polls Fetch on its
partitions and hands the payload headers to a ``Receiver``: batches of bench-shaped
records (``RecordsLayout``, every framing byte checked) are read with numpy, others are
walked record by record. Which clients to open and when is ``kafka_worker.py``'s.
"""

from __future__ import annotations

import asyncio
import collections
import gzip
import struct
import time
import zlib
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from robustmq._core import kafka
from robustmq._core import segments as segment_io
from robustmq.bench.histogram import Histogram
from robustmq.bench.kafka_config import KafkaBenchConfig
from robustmq.bench.mqtt_client import Receiver
from robustmq.bench.payload import CONSTANT_SIZE, HEADER_SIZE, MAGIC
from robustmq.errors import BenchError, KafkaError, kafka_error_name

# API keys and the versions this client speaks: the newest non-flexible version of each
# (flexible versions would buy nothing here; brokers from Kafka 2.4 on accept them all),
# and ApiVersions v0, which every broker answers.
PRODUCE, FETCH, LIST_OFFSETS, METADATA = (0, 8), (1, 11), (2, 5), (3, 8)
OFFSET_COMMIT, OFFSET_FETCH, API_VERSIONS, CREATE_TOPICS = (8, 7), (9, 5), (18, 0), (19, 4)
REQUIRED = (PRODUCE, FETCH, LIST_OFFSETS, METADATA, CREATE_TOPICS)
API_NAMES = {0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata", 8: "OffsetCommit"}
API_NAMES.update({9: "OffsetFetch", 18: "ApiVersions", 19: "CreateTopics"})
MAX_RESPONSE = 1 << 30
LATEST, EARLIEST = -1, -2  # ListOffsets timestamps
PRODUCE_TIMEOUT_MS = 30_000
# Larger batches are walked record by record rather than given a RecordsLayout.
MAX_LAYOUT_RECORDS = 1_000_000
# Self-paced producers write at most this many batches before yielding to the loop.
REFILL_BATCHES = 4

# The record batch v2 header (Kafka's DefaultRecordBatch): baseOffset, batchLength,
# partitionLeaderEpoch, magic, crc, attributes, lastOffsetDelta, baseTimestamp,
# maxTimestamp, producerId, producerEpoch, baseSequence, recordCount.
_BATCH = struct.Struct(">qiibIhiqqqhii")
_CRC_FROM = 21  # the CRC32C covers attributes to the end of the batch
_LENGTH_FROM = 12  # batchLength counts from partitionLeaderEpoch on
# Where the send time and the sequence number sit in the payload header.
_SENT_AT = CONSTANT_SIZE
_SEQ_AT = CONSTANT_SIZE + 8

Counters = dict[str, int]


def new_errors() -> Counters:
    return dict.fromkeys(("connect", "disconnect", "produce", "fetch", "foreign"), 0)


def _varint(n: int) -> bytes:
    """A signed varint: zigzag, then 7 bits a byte, low bits first (the record format's
    encoding, protobuf's)."""
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class KafkaClient(asyncio.Protocol):
    """One connection to a broker. ``request`` returns the decoded response body;
    ``send`` calls back instead (the producer's path, no future per request)."""

    def __init__(self, where: str, client_id: str, errors: Counters) -> None:
        self.where = where
        self.client_id = client_id
        self.errors = errors
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.correlation_id = 0
        self.waiting: collections.OrderedDict[
            int, tuple[int, int, Callable[[dict[str, Any] | None, str], None]]
        ] = collections.OrderedDict()
        self.paused = False
        self.closing = False
        self.failure = ""
        self.on_writable: Callable[[], None] | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.errors["disconnect"] += 1
            self.fail(f"{self.where} closed the connection" + (f": {exc}" if exc else ""))
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.on_writable is not None:
            self.on_writable()

    def data_received(self, data: bytes) -> None:
        if self.failure:
            return
        self.buffer += data
        try:
            used = self._answer_frames()
        except KafkaError as exc:
            self.fail(f"malformed response from {self.where}: {exc}")
            return
        del self.buffer[:used]

    def _answer_frames(self) -> int:
        """Answers every complete response in the buffer; returns the bytes they span. The
        frames are views into the buffer, gone when this returns, so it can shrink."""
        frames, used = kafka.split_frames(self.buffer, MAX_RESPONSE)
        for frame in frames:
            self._answer(frame)
        return used

    def _answer(self, frame: memoryview) -> None:
        correlation_id = struct.unpack_from(">i", frame)[0]
        pending = self.waiting.pop(correlation_id, None)
        if pending is None:
            raise KafkaError(f"response with unknown correlation id {correlation_id}")
        api_key, version, callback = pending
        _, body = kafka.decode_response(api_key, version, frame)
        callback(body, "")

    # requests

    def send(
        self,
        api: tuple[int, int],
        body: dict[str, Any],
        callback: Callable[[dict[str, Any] | None, str], None] | None,
    ) -> None:
        """Writes one request; ``callback(body, "")`` gets the response, or ``(None,
        reason)`` when the connection fails first. No callback: no response is due
        (Produce with acks=0)."""
        if self.failure:
            if callback is not None:
                callback(None, self.failure)
            return
        self.correlation_id = (self.correlation_id + 1) & 0x7FFFFFFF
        frame = kafka.encode_request(api[0], api[1], self.correlation_id, self.client_id, body)
        if callback is not None:
            self.waiting[self.correlation_id] = (api[0], api[1], callback)
        assert self.transport is not None
        self.transport.write(frame)

    async def request(self, api: tuple[int, int], body: dict[str, Any]) -> dict[str, Any]:
        """The response body; BenchError naming the broker when the connection fails."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        def done(response: dict[str, Any] | None, reason: str) -> None:
            if future.done():
                return
            if response is None:
                future.set_exception(BenchError(f"{API_NAMES[api[0]]}: {reason}"))
            else:
                future.set_result(response)

        self.send(api, body, done)
        return await future

    def fail(self, reason: str) -> None:
        """The connection is unusable: every waiting request learns why, and it closes."""
        if self.failure:
            return
        self.failure = reason
        waiting, self.waiting = self.waiting, collections.OrderedDict()
        for _, _, callback in waiting.values():
            callback(None, reason)
        self.close()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()


async def connect(cfg: KafkaBenchConfig, client_id: str, errors: Counters) -> KafkaClient:
    """A connected client; BenchError naming host:port when the broker cannot be reached."""
    where = f"{cfg.host}:{cfg.port}"
    client = KafkaClient(where, client_id, errors)
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(
            loop.create_connection(lambda: client, cfg.host, cfg.port), cfg.connect_timeout
        )
    except asyncio.TimeoutError:
        errors["connect"] += 1
        raise BenchError(
            f"cannot connect to {where}: timed out after {cfg.connect_timeout:g} s"
        ) from None
    except OSError as exc:
        errors["connect"] += 1
        raise BenchError(f"cannot connect to {where}: {exc.strerror or exc}") from None
    return client


def check_error(code: int, what: str) -> None:
    """BenchError naming ``what`` and the error by its protocol name, unless ``code`` is 0."""
    if code:
        raise BenchError(f"{what} failed: {kafka_error_name(code)} (Kafka error {code})")


# ---------------------------------------------------------------------------- producing


class RecordsLayout:
    """The records section of a batch of ``n`` bench-shaped records (Kafka protocol
    guide, "Record"): attributes 0, timestampDelta 0, offsetDelta i, null key, a value of
    ``value_size`` bytes, no headers. ``value_at[i]`` is where record ``i``'s value starts
    and ``ends[i]`` where the record ends; ``framing`` lists the positions of every byte
    that is not a value byte, and ``framing_bytes`` what they hold."""

    def __init__(self, value_size: int, n: int) -> None:
        self.value_size = value_size
        self.n = n
        self.value_at = np.empty(n, dtype=np.int64)
        self.ends = np.empty(n, dtype=np.int64)
        framing: list[int] = []
        framing_bytes = bytearray()
        tail = _varint(-1) + _varint(value_size)  # keyLength -1 (null key), valueLength
        pos = 0
        for i in range(n):
            head = b"\x00\x00" + _varint(i) + tail  # attributes, timestampDelta, offsetDelta
            head = _varint(len(head) + value_size + 1) + head  # length first
            framing.extend(range(pos, pos + len(head)))
            framing_bytes += head
            self.value_at[i] = pos + len(head)
            pos += len(head) + value_size
            framing.append(pos)
            framing_bytes.append(0)  # header count
            pos += 1
            self.ends[i] = pos
        self.framing = np.array(framing, dtype=np.int64)
        self.framing_bytes = np.frombuffer(bytes(framing_bytes), dtype=np.uint8)

    def template(self) -> np.ndarray:
        """The ``n`` records with zero values."""
        out = np.zeros(int(self.ends[-1]), dtype=np.uint8)
        out[self.framing] = self.framing_bytes
        return out

    def heads(self, body: np.ndarray, n: int, skip: int) -> bytes | None:
        """The joined payload headers of records ``skip`` to ``n`` of ``body`` when it is
        exactly ``n`` records of this shape (every framing byte checked), else None."""
        size = int(self.ends[n - 1])
        if len(body) != size:
            return None
        used = int(np.searchsorted(self.framing, size))
        if not np.array_equal(body[self.framing[:used]], self.framing_bytes[:used]):
            return None
        index = self.value_at[skip:n, None] + np.arange(HEADER_SIZE)
        return body[index].tobytes()


class BatchBuilder:
    """Record batches v2 of one producer's bench payloads (Kafka protocol guide, "Record
    Batch"), records shaped as in ``RecordsLayout``."""

    def __init__(self, cfg: KafkaBenchConfig, producer: int) -> None:
        self.compression = cfg.compression_code
        record_size = cfg.size + 16  # a record's framing is at most 16 bytes here
        self.max_records = max(1, min(cfg.batch_bytes // record_size, MAX_LAYOUT_RECORDS))
        layout = RecordsLayout(cfg.size, self.max_records)
        template = layout.template()
        constant = struct.pack(">III", MAGIC, cfg.run_id, producer)
        index = layout.value_at[:, None] + np.arange(len(constant))
        template[index] = np.frombuffer(constant, dtype=np.uint8)
        self.template = template
        self.ends = layout.ends
        # Where each record's send time and sequence number go, byte by byte.
        self.sent_index = layout.value_at[:, None] + _SENT_AT + np.arange(8)
        self.seq_index = layout.value_at[:, None] + _SEQ_AT + np.arange(4)

    def build(self, first_seq: int, sent_ns: np.ndarray) -> bytes:
        """A batch of ``len(sent_ns)`` records numbered from ``first_seq``."""
        n = len(sent_ns)
        records = self.template[: int(self.ends[n - 1])].copy()
        records[self.sent_index[:n]] = sent_ns.astype(">i8").view(np.uint8).reshape(n, 8)
        seqs = np.arange(first_seq, first_seq + n, dtype=">u4")
        records[self.seq_index[:n]] = seqs.view(np.uint8).reshape(n, 4)
        data = records.tobytes()
        if self.compression == 1:
            data = gzip.compress(data, compresslevel=1)
        first_ms, last_ms = int(sent_ns[0]) // 1_000_000, int(sent_ns[-1]) // 1_000_000
        header = _BATCH.pack(
            0, _BATCH.size - _LENGTH_FROM + len(data), -1, 2, 0, self.compression, n - 1,
            first_ms, last_ms, -1, -1, -1, n,
        )  # fmt: skip
        batch = bytearray(header)
        batch += data
        struct.pack_into(">I", batch, 17, segment_io.crc32c(memoryview(batch)[_CRC_FROM:]))
        return bytes(batch)


class Producer:
    """One producer connection: batches to the topic's partitions in turn, at most
    ``--inflight`` Produce requests unanswered (acks 1/-1), or as fast as the socket
    takes them (acks 0)."""

    def __init__(
        self,
        cfg: KafkaBenchConfig,
        index: int,
        client: KafkaClient,
        partitions: int,
        ack_latency: Histogram,
    ) -> None:
        self.cfg = cfg
        self.index = index
        self.client = client
        self.partitions = partitions
        self.partition = index % partitions
        self.builder = BatchBuilder(cfg, index)
        self.ack_latency = ack_latency
        self.answer_ns: list[int] = []  # Produce answer times not yet in ack_latency
        self.sent = 0  # records in Produce requests written
        self.acked = 0
        self.outstanding = 0  # Produce requests unanswered
        self.limit = 0  # self-paced: records to send in all; 0 = no limit
        self.running = False
        self.paced = False
        self.flushing = False
        self.scheduled = False
        self.made = 0  # paced: records made due so far
        self.barrier_sent = False  # acks 0: see flush
        self.barrier_answered = False
        self.pending: list[tuple[int, int]] = []  # paced: (records, due time ns) not sent
        self.pending_records = 0
        self.pending_since = 0.0
        self.failure = ""
        client.on_writable = self.pump

    @property
    def room(self) -> bool:
        full = self.cfg.acks and self.outstanding >= self.cfg.inflight
        return not (full or self.client.paused or self.failure or self.client.failure)

    @property
    def done(self) -> bool:
        """Stopped (or failed), nothing pending, and every request it sent answered."""
        if self.failure or self.client.failure:
            return True
        stopped = self.flushing or not self.running
        read = self.cfg.acks or self.barrier_answered
        return stopped and not self.pending_records and self.outstanding == 0 and bool(read)

    def flush(self) -> None:
        """Called until ``done`` once the producer stopped: sends what is pending, then,
        with acks 0, one ApiVersions request whose answer shows that the broker has read
        every Produce before it (it answers a connection's requests in order)."""
        self.pump()
        stopped = self.flushing or not self.running
        if self.cfg.acks or self.barrier_sent or self.pending_records or not stopped:
            return
        self.barrier_sent = True

        def answered(response: dict[str, Any] | None, reason: str) -> None:
            if response is None:
                self._fail(f"ApiVersions: {reason}")
            self.barrier_answered = True

        self.client.send(API_VERSIONS, {}, answered)

    def start(self, limit: int) -> None:
        """Self-paced (no ``--rate``): sends full batches as long as there is room."""
        self.limit = limit
        self.running = True
        self.pump()

    def start_paced(self) -> None:
        """Paced: sends what ``add`` made due, batch by batch, after ``--linger-ms``."""
        self.paced = True
        self.running = True

    def stop(self) -> None:
        """No more records; paced ones still pending go out now."""
        if self.paced:
            self.flushing = True
            self.pump()
        else:
            self.running = False

    def add(self, records: int, due_ns: int) -> None:
        """Paced: ``records`` more records became due at ``due_ns``."""
        if not self.pending_records:
            self.pending_since = time.monotonic()
        self.pending.append((records, due_ns))
        self.pending_records += records
        self.made += records

    def linger_deadline(self) -> float:
        if not self.pending_records:
            return float("inf")
        return self.pending_since + self.cfg.linger_ms / 1000

    def pump(self) -> None:
        """Sends what may go now: full batches while there is room (self-paced), or the
        pending records once a batch is full or has lingered ``--linger-ms`` (paced)."""
        self.scheduled = False
        if not self.running:
            return
        for _ in range(REFILL_BATCHES):
            if not self.room:
                return
            if self.paced:
                if not self.pending_records:
                    return
                full = self.pending_records >= self.builder.max_records
                if not (full or self.flushing) and time.monotonic() < self.linger_deadline():
                    return
                self._send(self._take_pending())
                continue
            n = self.builder.max_records
            if self.limit:
                n = min(n, self.limit - self.sent)
            if n <= 0:
                self.running = False
                return
            self._send(np.full(n, time.time_ns(), dtype=np.int64))
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self.pump)

    def _take_pending(self) -> np.ndarray:
        n = min(self.pending_records, self.builder.max_records)
        counts: list[int] = []
        times: list[int] = []
        while sum(counts) < n:
            records, due_ns = self.pending[0]
            take = min(records, n - sum(counts))
            counts.append(take)
            times.append(due_ns)
            if take == records:
                self.pending.pop(0)
            else:
                self.pending[0] = (records - take, due_ns)
        self.pending_records -= n
        if self.pending_records:
            self.pending_since = time.monotonic()
        return np.repeat(np.array(times, dtype=np.int64), counts)

    def _send(self, sent_ns: np.ndarray) -> None:
        n = len(sent_ns)
        batch = self.builder.build(self.sent, sent_ns)
        partition = self.partition
        self.partition = (partition + 1) % self.partitions
        body = {
            "transactional_id": None,
            "acks": self.cfg.acks,
            "timeout_ms": PRODUCE_TIMEOUT_MS,
            "topic_data": [
                {"name": self.cfg.topic, "partition_data": [{"index": partition, "records": batch}]}
            ],
        }
        self.sent += n
        if not self.cfg.acks:
            self.client.send(PRODUCE, body, None)
            return
        self.outstanding += 1
        began = time.perf_counter_ns()

        def answered(response: dict[str, Any] | None, reason: str) -> None:
            self.outstanding -= 1
            if response is None:
                self._fail(f"Produce: {reason}")
                return
            self.answer_ns.append(time.perf_counter_ns() - began)
            for topic in response["responses"]:
                for p in topic["partition_responses"]:
                    code = p["error_code"]
                    if code:
                        self.client.errors["produce"] += 1
                        what = f"Produce to {self.cfg.topic}[{p['index']}] at {self.client.where}"
                        self._fail(f"{what} failed: {kafka_error_name(code)} (Kafka error {code})")
                        return
            self.acked += n
            self.pump()

        self.client.send(PRODUCE, body, answered)

    def _fail(self, reason: str) -> None:
        self.failure = self.failure or reason
        self.running = False

    def record_latency(self) -> None:
        """Moves the Produce answer times into ``ack_latency``, a few times a second:
        one numpy pass for many answers."""
        if self.answer_ns:
            self.ack_latency.record(np.array(self.answer_ns, dtype=np.int64))
            self.answer_ns = []


# ---------------------------------------------------------------------------- consuming


def value_heads(
    records: bytes, fetch_offset: int, errors: Counters, layouts: dict[int, RecordsLayout]
) -> tuple[bytes, int]:
    """The first ``HEADER_SIZE`` bytes of each record value at or after ``fetch_offset``
    in ``records`` (record batches v2, CRC-checked), joined, and the offset after the last
    batch.

    Batches of bench-shaped records (``RecordsLayout``, kept in ``layouts`` by value size)
    are read with numpy; any other record is walked field by field. A value too short to
    hold a bench header counts as foreign; gzip batches are decompressed, other codecs are
    refused with the codec's number."""
    heads: list[bytes] = []
    next_offset = fetch_offset
    for h in kafka.parse_batches(records):
        end_offset = h.base_offset + h.last_offset_delta + 1
        if end_offset <= fetch_offset:
            continue
        next_offset = end_offset
        body: bytes | memoryview = memoryview(records)[
            h.position + _BATCH.size : h.position + h.size
        ]
        if h.compression == 1:
            body = zlib.decompress(body, wbits=47)  # gzip or zlib framing
        elif h.compression:
            raise BenchError(f"record batch compressed with codec {h.compression}; only gzip")
        if h.is_control:
            continue
        skip = max(fetch_offset - h.base_offset, 0)
        joined = _shaped_heads(body, h.record_count, skip, layouts)
        if joined is None:
            _walk_records(body, h.record_count, h.base_offset, fetch_offset, heads, errors)
        else:
            heads.append(joined)
    return b"".join(heads), next_offset


def _shaped_heads(
    body: bytes | memoryview, n: int, skip: int, layouts: dict[int, RecordsLayout]
) -> bytes | None:
    """``RecordsLayout.heads`` for the value size of the first record, or None."""
    buf = body if isinstance(body, bytes) else bytes(body)
    try:
        pos = _read_varint(buf, 0)[1]
        if buf[pos] or buf[pos + 1] or buf[pos + 2] or buf[pos + 3] != 1:
            return None  # attributes, timestampDelta, offsetDelta 0, null key
        value_size = _read_varint(buf, pos + 4)[0]
    except IndexError:
        return None
    if value_size < HEADER_SIZE:
        return None
    layout = layouts.get(value_size)
    if n > MAX_LAYOUT_RECORDS:
        return None
    if layout is None or layout.n < n:
        size = max(n, 2 * layout.n if layout else 1024)
        layout = layouts[value_size] = RecordsLayout(value_size, size)
    return layout.heads(np.frombuffer(buf, dtype=np.uint8), n, skip)


def _walk_records(
    body: bytes | memoryview,
    count: int,
    base_offset: int,
    fetch_offset: int,
    heads: list[bytes],
    errors: Counters,
) -> None:
    """Kafka protocol guide, "Record": length, attributes, timestampDelta, offsetDelta,
    key, value, headers, every length and delta a zigzag varint."""
    buf = body if isinstance(body, bytes) else bytes(body)
    pos = 0
    try:
        for _ in range(count):
            length, pos = _read_varint(buf, pos)
            end = pos + length
            p = pos + 1  # attributes
            _, p = _read_varint(buf, p)  # timestampDelta
            offset_delta, p = _read_varint(buf, p)
            key_length, p = _read_varint(buf, p)
            if key_length > 0:
                p += key_length
            value_length, p = _read_varint(buf, p)
            if base_offset + offset_delta >= fetch_offset:
                if value_length >= HEADER_SIZE and p + HEADER_SIZE <= len(buf):
                    heads.append(buf[p : p + HEADER_SIZE])
                else:
                    errors["foreign"] += 1
            pos = end
    except IndexError:
        raise BenchError(f"truncated record in the batch at offset {base_offset}") from None


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    b = buf[pos]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    n, shift = 0, 0
    while True:
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return (n >> 1) ^ -(n & 1), pos
        shift += 7


class Consumer:
    """One consumer connection: Fetch long polls over its partitions, one at a time (the
    broker answers a connection's requests in order, so a second would only queue)."""

    def __init__(
        self,
        cfg: KafkaBenchConfig,
        client: KafkaClient,
        offsets: dict[int, int],
        receiver: Receiver,
    ) -> None:
        self.cfg = cfg
        self.client = client
        self.offsets = offsets  # partition -> next offset to fetch
        self.receiver = receiver
        self.layouts: dict[int, RecordsLayout] = {}

    async def run(self) -> None:
        """Fetches until cancelled; BenchError on a Fetch error or a lost connection."""
        cfg = self.cfg
        while True:
            body = {
                "replica_id": -1,
                "max_wait_ms": cfg.fetch_max_wait_ms,
                "min_bytes": 1,
                "max_bytes": cfg.fetch_max_bytes,
                "isolation_level": 0,
                "session_id": 0,
                "session_epoch": -1,
                "topics": [
                    {
                        "topic": cfg.topic,
                        "partitions": [
                            {
                                "partition": p,
                                "fetch_offset": offset,
                                "log_start_offset": -1,
                                "partition_max_bytes": cfg.partition_max_bytes,
                            }
                            for p, offset in self.offsets.items()
                        ],
                    }
                ],
                "forgotten_topics_data": [],
                "rack_id": "",
            }
            response = await self.client.request(FETCH, body)
            received_ns = time.time_ns()
            check_error(response["error_code"], f"Fetch from {self.client.where}")
            for topic in response["responses"]:
                for p in topic["partitions"]:
                    index = p["partition_index"]
                    if p["error_code"]:
                        self.client.errors["fetch"] += 1
                        check_error(p["error_code"], f"Fetch from {cfg.topic}[{index}]")
                    records = p["records"]
                    if not records:
                        continue
                    heads, self.offsets[index] = value_heads(
                        records, self.offsets[index], self.client.errors, self.layouts
                    )
                    if heads:
                        # What Receiver.collect stores, without a bytes object per record.
                        n = len(heads) // HEADER_SIZE
                        self.receiver.received += n
                        self.receiver.chunks.append((heads, received_ns, n))
