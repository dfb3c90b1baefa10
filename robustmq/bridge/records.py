"""Kafka record batches v2 as the bridges need them: encoding a batch of records,
decoding the records of a stored batch (decompressing it first), and the Java client's
default partitioner (murmur2 of the key).

The broker itself never looks inside a batch (it stores what producers send); only the
bridges do, because they turn records into MQTT messages and back. Batch framing, the
CRC32C and header parsing are ``robustmq._core.kafka_codec``'s; this file adds the record
layer (Kafka protocol guide, "Record" and "Record Header") and nothing about transport.
"""

from __future__ import annotations

import gzip
import importlib
import struct
from collections.abc import Callable
from typing import NamedTuple

from robustmq._core import segments as segment_io
from robustmq._core.kafka_codec import BATCH_HEADER_SIZE, BatchHeader
from robustmq.errors import KafkaCorruptMessage

Headers = list[tuple[str, bytes]]
# A record to encode: (key, value, headers, timestamp in ms).
OutRecord = tuple[bytes | None, bytes, Headers, int]

# RecordBatch v2 header after baseOffset and batchLength: partitionLeaderEpoch, magic,
# crc, then (covered by the CRC) attributes .. recordCount.
_HEAD = struct.Struct(">qiibI")
_CRC_PART = struct.Struct(">hiqqqhii")
_CRC_FROM = 21
_NO_PRODUCER = -1  # producerId/epoch/baseSequence of a non-idempotent producer


class KafkaRecord(NamedTuple):
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Headers


def _write_varint(out: bytearray, n: int) -> None:
    n = (n << 1) ^ (n >> 63)  # zigzag (protocol guide: varint/varlong)
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _write_bytes(out: bytearray, data: bytes | None) -> None:
    if data is None:
        _write_varint(out, -1)
    else:
        _write_varint(out, len(data))
        out += data


def encode_batch(records: list[OutRecord]) -> tuple[bytes, int]:
    """An uncompressed record batch v2 of (key, value, headers, timestamp ms) records, base
    offset 0 (the engine patches it); returns (batch bytes, max timestamp)."""
    base_ts = min(r[3] for r in records)
    max_ts = max(r[3] for r in records)
    body = bytearray()
    record = bytearray()
    for delta, (key, value, headers, ts) in enumerate(records):
        record.clear()
        record.append(0)  # attributes: unused in v2 records
        _write_varint(record, ts - base_ts)
        _write_varint(record, delta)
        _write_bytes(record, key)
        _write_bytes(record, value)
        _write_varint(record, len(headers))
        for name, data in headers:
            _write_bytes(record, name.encode())
            _write_bytes(record, data)
        _write_varint(body, len(record))
        body += record
    crc_part = (
        _CRC_PART.pack(
            0,  # attributes: no compression, CreateTime, not transactional
            len(records) - 1,
            base_ts,
            max_ts,
            _NO_PRODUCER,
            _NO_PRODUCER,
            _NO_PRODUCER,
            len(records),
        )
        + body
    )
    length = len(crc_part) + _CRC_FROM - 12
    head = _HEAD.pack(0, length, 0, 2, segment_io.crc32c(crc_part))
    return head + crc_part, max_ts


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def varint(self) -> int:
        data, pos, shift, n = self.data, self.pos, 0, 0
        while True:
            if pos >= len(data) or shift > 63:
                raise KafkaCorruptMessage("record varint runs past its batch", pos)
            b = data[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
        self.pos = pos
        return (n >> 1) ^ -(n & 1)

    def take(self, n: int) -> bytes | None:
        if n < 0:
            return None
        end = self.pos + n
        if end > len(self.data):
            raise KafkaCorruptMessage("record field runs past its batch", self.pos)
        out = self.data[self.pos : end]
        self.pos = end
        return out


def _snappy(data: bytes) -> bytes:
    snappy = importlib.import_module("snappy")
    # The Java client (and kafka-python) frame snappy the xerial way: a 16-byte header,
    # then blocks of a big-endian length and a raw snappy block. librdkafka sends raw.
    if data[:8] != b"\x82SNAPPY\x00":
        return bytes(snappy.decompress(data))
    out = bytearray()
    pos = 16
    while pos + 4 <= len(data):
        (size,) = struct.unpack_from(">i", data, pos)
        out += snappy.decompress(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return bytes(out)


def _lz4(data: bytes) -> bytes:
    return bytes(importlib.import_module("lz4.frame").decompress(data))


def _zstd(data: bytes) -> bytes:
    zstandard = importlib.import_module("zstandard")
    # Producers stream zstd frames without a content size: decompress as a stream.
    return bytes(zstandard.ZstdDecompressor().decompressobj().decompress(data))


# Compression codec id (attributes bits 0-2) -> (name, Python package, decompressor).
CODECS: dict[int, tuple[str, str, Callable[[bytes], bytes]]] = {
    1: ("gzip", "zlib", gzip.decompress),
    2: ("snappy", "python-snappy", _snappy),
    3: ("lz4", "lz4", _lz4),
    4: ("zstd", "zstandard", _zstd),
}
_MODULES = {2: "snappy", 3: "lz4.frame", 4: "zstandard"}


def missing_codec_package(compression: int) -> str | None:
    """The package a codec needs that does not import here; None when it is usable."""
    module = _MODULES.get(compression)
    if module is None:
        return None
    try:
        importlib.import_module(module)
    except ImportError:
        return CODECS[compression][1]
    return None


def decode_records(data: bytes, h: BatchHeader) -> list[KafkaRecord]:
    """The records of one stored batch (``data`` spans exactly the batch), decompressed.

    Raises ``KafkaCorruptMessage`` when the records do not decode, and whatever the
    codec raises for bad compressed data."""
    records_data = data[BATCH_HEADER_SIZE:]
    if h.compression:
        records_data = CODECS[h.compression][2](records_data)
    r = _Reader(records_data)
    out = []
    for _ in range(h.record_count):
        length = r.varint()
        end = r.pos + length
        r.pos += 1  # attributes
        timestamp = h.base_timestamp + r.varint()
        offset = h.base_offset + r.varint()
        key = r.take(r.varint())
        value = r.take(r.varint())
        headers: Headers = []
        for _ in range(r.varint()):
            name = r.take(r.varint()) or b""
            headers.append((name.decode("utf-8", "replace"), r.take(r.varint()) or b""))
        if r.pos != end:
            raise KafkaCorruptMessage(f"record at offset {offset} is not {length} bytes", r.pos)
        out.append(KafkaRecord(offset, timestamp, key, value, headers))
    return out


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2`` (seed 0x9747b28c), as a signed 32-bit int."""
    m, seed = 0x5BD1E995, 0x9747B28C
    length = len(data)
    h = (seed ^ length) & 0xFFFFFFFF
    whole = length & ~3
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[whole + 2] << 16
    if rest >= 2:
        h ^= data[whole + 1] << 8
    if rest >= 1:
        h ^= data[whole]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: bytes, partitions: int) -> int:
    """The Java client's default partition of a keyed record: toPositive(murmur2) % n."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
