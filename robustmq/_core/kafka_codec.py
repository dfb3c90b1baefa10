"""The Kafka wire codec, pure Python: frames, request/response headers, message bodies
driven by the table in ``kafka_spec.py``, and record batch v2 headers.

Sans-IO: bytes in, dicts out and back. A message body is a ``dict`` keyed by the table's
snake_case field names (nested structs are dicts, arrays are lists); fields a version does
not have are left out when decoding and ignored when encoding, and a missing key encodes
as the field's default. Flexible versions (KIP-482) use compact strings, bytes and arrays
and carry tagged fields; unknown tags are skipped. Record data (``records`` fields) stays
opaque bytes: only record batch headers are parsed (``parse_batches``), never the records
in them, and nothing is ever decompressed. Malformed input raises ``KafkaInvalidRequest``
with the byte offset. ``_kafka_codec.pyx`` is the compiled twin with the same API
(``__all__``); there is no I/O and no broker behaviour here.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, NamedTuple

from robustmq._core import segments as segment_io
from robustmq._core.kafka_spec import APIS, NO_DEFAULT, PRODUCE, Field, in_range
from robustmq.errors import (
    KafkaCorruptMessage,
    KafkaInvalidRequest,
    KafkaUnsupportedForMessageFormat,
    KafkaUnsupportedVersion,
)

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_U16 = struct.Struct(">H")
_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")
_HEADER = struct.Struct(">hhi")  # api_key, api_version, correlation_id

Buffer = bytes | bytearray | memoryview

# The API both twins share (the compiled one re-exports the names it does not redefine).
__all__ = [
    "BATCH_HEADER_SIZE",
    "LOG_OVERHEAD",
    "BatchHeader",
    "Buffer",
    "Decode",
    "Encode",
    "Reader",
    "RequestHeader",
    "body_codec",
    "decode_request",
    "decode_request_header",
    "decode_response",
    "encode_request",
    "encode_response",
    "field_default",
    "is_flexible",
    "parse_batches",
    "response_header_version",
    "split_frames",
    "struct_codec",
    "write_uvarint",
]


class Reader:
    """A read cursor over one frame; every short read raises with its byte offset."""

    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf: Buffer, pos: int = 0, end: int | None = None) -> None:
        self.buf = memoryview(buf)
        self.pos = pos
        self.end = len(self.buf) if end is None else end

    def fail(self, what: str) -> KafkaInvalidRequest:
        return KafkaInvalidRequest(what, self.pos)

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > self.end:
            raise self.fail(f"{n} bytes needed, {self.end - self.pos} left")
        view = self.buf[self.pos : self.pos + n]
        self.pos += n
        return view

    def unpack(self, s: struct.Struct) -> Any:
        if self.pos + s.size > self.end:
            raise self.fail(f"{s.size} bytes needed, {self.end - self.pos} left")
        value = s.unpack_from(self.buf, self.pos)[0]
        self.pos += s.size
        return value

    def uvarint(self) -> int:
        result = shift = 0
        while True:
            if self.pos >= self.end:
                raise self.fail("truncated varint")
            b = self.buf[self.pos]
            self.pos += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise self.fail("varint longer than 10 bytes")

    def varint(self) -> int:
        n = self.uvarint()
        return (n >> 1) ^ -(n & 1)


def write_uvarint(out: bytearray, n: int) -> None:
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 63)


# --- per-type read/write functions -----------------------------------------------------

Decode = Callable[[Reader], Any]
Encode = Callable[[bytearray, Any], None]


def _fixed(s: struct.Struct) -> tuple[Decode, Encode]:
    def dec(r: Reader) -> Any:
        return r.unpack(s)

    def enc(out: bytearray, v: Any) -> None:
        out += s.pack(v)

    return dec, enc


def _bool() -> tuple[Decode, Encode]:
    def dec(r: Reader) -> bool:
        return bool(r.unpack(_I8))

    def enc(out: bytearray, v: Any) -> None:
        out.append(1 if v else 0)

    return dec, enc


def _var() -> tuple[Decode, Encode]:
    """varint and varlong: zigzag-encoded, 7 bits a byte (protobuf's encoding)."""

    def dec(r: Reader) -> int:
        return r.varint()

    def enc(out: bytearray, v: int) -> None:
        write_uvarint(out, _zigzag(v) & 0xFFFFFFFFFFFFFFFF)

    return dec, enc


def _uuid() -> tuple[Decode, Encode]:
    def dec(r: Reader) -> bytes:
        return bytes(r.take(16))

    def enc(out: bytearray, v: bytes) -> None:
        if len(v) != 16:
            raise ValueError("a uuid is 16 bytes")
        out += v

    return dec, enc


def _length_prefixed(
    text: bool, compact: bool, nullable: bool, wide: bool
) -> tuple[Decode, Encode]:
    """string (int16 length) and bytes/records (int32 length), classic or compact."""
    short = _I32 if wide else _I16

    def dec(r: Reader) -> Any:
        n = r.uvarint() - 1 if compact else r.unpack(short)
        if n < 0:
            if n == -1 and nullable:
                return None
            raise r.fail(f"length {n} is not allowed here")
        data = r.take(n)
        if text:
            try:
                return str(data, "utf-8")
            except UnicodeDecodeError:
                raise r.fail("string is not valid UTF-8") from None
        return bytes(data)

    def enc(out: bytearray, v: Any) -> None:
        if v is None:
            if not nullable:
                raise ValueError("null for a non-nullable field")
            if compact:
                out.append(0)
            else:
                out += short.pack(-1)
            return
        data = v.encode() if text else v
        if compact:
            write_uvarint(out, len(data) + 1)
        else:
            out += short.pack(len(data))
        out += data

    return dec, enc


def _array(item: tuple[Decode, Encode], compact: bool, nullable: bool) -> tuple[Decode, Encode]:
    item_dec, item_enc = item

    def dec(r: Reader) -> Any:
        n = r.uvarint() - 1 if compact else r.unpack(_I32)
        if n < 0:
            if n == -1 and nullable:
                return None
            raise r.fail(f"array length {n} is not allowed here")
        if n > r.end - r.pos:  # every element takes at least one byte
            raise r.fail(f"array of {n} elements in {r.end - r.pos} bytes")
        return [item_dec(r) for _ in range(n)]

    def enc(out: bytearray, v: Any) -> None:
        if v is None:
            if not nullable:
                raise ValueError("null for a non-nullable array")
            if compact:
                out.append(0)
            else:
                out += _I32.pack(-1)
            return
        if compact:
            write_uvarint(out, len(v) + 1)
        else:
            out += _I32.pack(len(v))
        for x in v:
            item_enc(out, x)

    return dec, enc


_SCALARS: dict[str, Callable[[], tuple[Decode, Encode]]] = {
    "int8": lambda: _fixed(_I8),
    "int16": lambda: _fixed(_I16),
    "uint16": lambda: _fixed(_U16),
    "int32": lambda: _fixed(_I32),
    "int64": lambda: _fixed(_I64),
    "float64": lambda: _fixed(_F64),
    "bool": _bool,
    "varint": _var,
    "varlong": _var,
    "uuid": _uuid,
}

_ZERO: dict[str, Any] = {
    "bool": False,
    "string": "",
    "bytes": b"",
    "records": b"",
    "uuid": bytes(16),
    "float64": 0.0,
}


def field_default(fld: Field, nullable: bool = True) -> Any:
    """The table's default, or the type's zero (also where a null default is not allowed
    because the field is not nullable in this version)."""
    if fld.default is not NO_DEFAULT and (fld.default is not None or nullable):
        return fld.default
    if fld.type.startswith("[]"):
        return []
    if fld.type == "struct":
        return None
    return _ZERO.get(fld.type, 0)


def _type_codec(fld: Field, version: int, flexible: bool, nullable: bool) -> tuple[Decode, Encode]:
    t = fld.type
    if t in _SCALARS:
        return _SCALARS[t]()
    if t == "string":
        return _length_prefixed(True, flexible, nullable, wide=False)
    if t in ("bytes", "records"):
        return _length_prefixed(False, flexible, nullable, wide=True)
    if t == "struct":
        return struct_codec(fld.fields, version, flexible)
    if t == "[]":
        return _array(struct_codec(fld.fields, version, flexible), flexible, nullable)
    if t.startswith("[]"):
        inner = Field(fld.name, t[2:], fld.versions, None, None, NO_DEFAULT, ())
        return _array(_type_codec(inner, version, flexible, False), flexible, nullable)
    raise ValueError(f"unknown field type {t!r} of {fld.name}")


def struct_codec(fields: tuple[Field, ...], version: int, flexible: bool) -> tuple[Decode, Encode]:
    """(decode, encode) of a struct with ``fields`` at ``version``; the tagged fields
    and the tag buffer exist only when ``flexible``."""
    plain: list[tuple[str, Decode, Encode, Any]] = []
    tagged: dict[int, tuple[str, Decode, Encode, Any]] = {}
    for fld in fields:
        if not in_range(version, fld.versions):
            continue
        nullable = in_range(version, fld.nullable)
        if fld.tag is not None:
            if flexible:
                dec, enc = _type_codec(fld, version, True, nullable)
                tagged[fld.tag] = (fld.name, dec, enc, field_default(fld, nullable))
            continue
        dec, enc = _type_codec(fld, version, flexible, nullable)
        plain.append((fld.name, dec, enc, field_default(fld, nullable)))
    tags = sorted(tagged.items())

    def decode(r: Reader) -> dict[str, Any]:
        out = {name: dec(r) for name, dec, _, _ in plain}
        if flexible:
            for name, _, _, default in tagged.values():
                out[name] = default
            count = r.uvarint()
            last = -1
            for _ in range(count):
                tag = r.uvarint()
                if tag <= last:
                    raise r.fail(f"tagged field {tag} out of order")
                last = tag
                size = r.uvarint()
                end = r.pos + size
                if end > r.end:
                    raise r.fail(f"tagged field {tag} of {size} bytes overruns the frame")
                spec = tagged.get(tag)
                if spec is None:
                    r.pos = end  # KIP-482: unknown tagged fields are skipped
                    continue
                sub = Reader(r.buf, r.pos, end)
                out[spec[0]] = spec[1](sub)
                r.pos = end
        return out

    def encode(out: bytearray, value: Any) -> None:
        get = value.get
        for name, _, enc, default in plain:
            enc(out, get(name, default))
        if flexible:
            present = []
            for tag, (name, _, enc, default) in tags:
                v = get(name, default)
                if v is not None and v != default:
                    present.append((tag, enc, v))
            write_uvarint(out, len(present))
            for tag, enc, v in present:
                data = bytearray()
                enc(data, v)
                write_uvarint(out, tag)
                write_uvarint(out, len(data))
                out += data

    return decode, encode


_CACHE: dict[tuple[int, int, bool], tuple[Decode, Encode]] = {}


def body_codec(api_key: int, version: int, response: bool) -> tuple[Decode, Encode]:
    """(decode, encode) of one API's request or response body at one version."""
    key = (api_key, version, response)
    codec = _CACHE.get(key)
    if codec is None:
        api = APIS.get(api_key)
        if api is None:
            raise KafkaUnsupportedVersion(f"unknown api key {api_key}")
        msg = api.response if response else api.request
        if not in_range(version, msg.valid):
            raise KafkaUnsupportedVersion(f"{api.name} v{version} is not supported")
        codec = struct_codec(msg.fields, version, in_range(version, msg.flexible))
        _CACHE[key] = codec
    return codec


def is_flexible(api_key: int, version: int) -> bool:
    api = APIS.get(api_key)
    return api is not None and in_range(version, api.request.flexible)


def response_header_version(api_key: int, version: int) -> int:
    """1 (with tagged fields) for flexible versions, except ApiVersions, always 0."""
    return 1 if api_key != 18 and is_flexible(api_key, version) else 0


# --- frames and headers ----------------------------------------------------------------


class RequestHeader(NamedTuple):
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None


def split_frames(
    buf: Buffer, max_size: int, max_other_size: int | None = None
) -> tuple[list[memoryview], int]:
    """Complete size-prefixed frames at the start of ``buf`` and how many bytes they span.

    A size above ``max_size`` or below the smallest request header raises (the caller
    closes the connection; Kafka does the same with socket.request.max.bytes), and so does
    a request other than Produce above ``max_other_size``: only Produce carries opaque
    record bytes, every other body is decoded field by field into Python objects about
    forty times its size, so a large one costs the memory and event-loop time of a DoS."""
    view = memoryview(buf)
    frames = []
    pos = 0
    n = len(view)
    while n - pos >= 4:
        size = _I32.unpack_from(view, pos)[0]
        if size < 8 or size > max_size:
            raise KafkaInvalidRequest(
                f"frame size {size} is outside [8, {max_size}] (max_request_size)", pos
            )
        if max_other_size is not None and size > max_other_size:
            if n - pos < 6:
                break  # the api key is not in yet
            api_key = _I16.unpack_from(view, pos + 4)[0]
            if api_key != PRODUCE.key:
                raise KafkaInvalidRequest(
                    f"api key {api_key} request of {size} bytes; only Produce may exceed"
                    f" {max_other_size}",
                    pos,
                )
        if n - pos - 4 < size:
            break
        frames.append(view[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return frames, pos


def decode_request_header(frame: Buffer) -> tuple[RequestHeader, Reader]:
    """The header (v1, or v2 for flexible versions) and a reader positioned at the body.

    The header is read even for versions the table does not know, so the caller can answer
    ApiVersions with UNSUPPORTED_VERSION or log what it refuses."""
    r = Reader(frame)
    if len(r.buf) < _HEADER.size + 2:
        raise r.fail(f"request header needs 10 bytes, the frame has {len(r.buf)}")
    api_key, api_version, correlation_id = _HEADER.unpack_from(r.buf, 0)
    r.pos = _HEADER.size
    n = r.unpack(_I16)
    client_id = None if n == -1 else str(r.take(n), "utf-8", "replace")
    if n < -1:
        raise r.fail(f"client_id length {n}")
    header = RequestHeader(api_key, api_version, correlation_id, client_id)
    if is_flexible(api_key, api_version) and _known(api_key, api_version):
        _skip_tags(r)
    return header, r


def _known(api_key: int, version: int) -> bool:
    api = APIS.get(api_key)
    return api is not None and in_range(version, api.request.valid)


def _skip_tags(r: Reader) -> None:
    for _ in range(r.uvarint()):
        r.uvarint()
        r.take(r.uvarint())


def decode_request(frame: Buffer) -> tuple[RequestHeader, dict[str, Any]]:
    """A whole request frame (without its size prefix): header and body.

    Raises ``KafkaUnsupportedVersion`` for an API key or version not in the table and
    ``KafkaInvalidRequest`` for malformed bytes. Bytes after the end of the body are
    ignored, as Kafka's own broker does: librdkafka 2.16's all-topics Metadata v9 request
    ends with bytes no field accounts for."""
    header, r = decode_request_header(frame)
    decode, _ = body_codec(header.api_key, header.api_version, response=False)
    return header, decode(r)


def encode_request(
    api_key: int, version: int, correlation_id: int, client_id: str | None, body: dict[str, Any]
) -> bytes:
    """A size-prefixed request frame (what a client sends)."""
    _, encode = body_codec(api_key, version, response=False)
    out = bytearray(4)
    out += _HEADER.pack(api_key, version, correlation_id)
    if client_id is None:
        out += _I16.pack(-1)
    else:
        cid = client_id.encode()
        out += _I16.pack(len(cid)) + cid
    if is_flexible(api_key, version):
        out.append(0)
    encode(out, body)
    _I32.pack_into(out, 0, len(out) - 4)
    return bytes(out)


def encode_response(api_key: int, version: int, correlation_id: int, body: dict[str, Any]) -> bytes:
    """A size-prefixed response frame (what the broker sends)."""
    _, encode = body_codec(api_key, version, response=True)
    out = bytearray(4)
    out += _I32.pack(correlation_id)
    if response_header_version(api_key, version):
        out.append(0)
    encode(out, body)
    _I32.pack_into(out, 0, len(out) - 4)
    return bytes(out)


def decode_response(api_key: int, version: int, frame: Buffer) -> tuple[int, dict[str, Any]]:
    """A response frame (without its size prefix): correlation id and body."""
    r = Reader(frame)
    correlation_id = r.unpack(_I32)
    if response_header_version(api_key, version):
        _skip_tags(r)
    decode, _ = body_codec(api_key, version, response=True)
    body = decode(r)
    if r.pos != r.end:
        raise r.fail(f"{r.end - r.pos} bytes after the end of the response body")
    return correlation_id, body


# --- record batches (Kafka message format v2) ------------------------------------------

# baseOffset int64, batchLength int32, partitionLeaderEpoch int32, magic int8, crc uint32,
# attributes int16, lastOffsetDelta int32, baseTimestamp int64, maxTimestamp int64,
# producerId int64, producerEpoch int16, baseSequence int32, recordCount int32.
_BATCH = struct.Struct(">qiibIhiqqqhii")
BATCH_HEADER_SIZE = _BATCH.size  # 61
_CRC_FROM = 21  # the CRC covers attributes to the end of the batch
LOG_OVERHEAD = 12  # baseOffset + batchLength, the part outside batchLength
_RECORDS_FROM = BATCH_HEADER_SIZE - LOG_OVERHEAD  # where the records start, in batchLength
# A record's smallest encoding: its length and six fields of at least one byte each
# (attributes, timestampDelta, offsetDelta, keyLength, valueLength, header count).
_MIN_RECORD = 7


class BatchHeader(NamedTuple):
    position: int  # where the batch starts in the parsed buffer
    size: int  # bytes the batch spans, LOG_OVERHEAD included
    base_offset: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def compression(self) -> int:
        """0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd (attributes bits 0-2)."""
        return self.attributes & 0x07

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & 0x10)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & 0x20)


def parse_batches(data: Buffer) -> list[BatchHeader]:
    """The headers of the record batches in ``data``, each CRC32C-checked.

    Raises ``KafkaUnsupportedForMessageFormat`` for magic 0/1 message sets and
    ``KafkaCorruptMessage`` for a bad length or CRC, no records, or a record count that
    disagrees with lastOffsetDelta (the batch is refused whole, as Kafka does)."""
    view = memoryview(data)
    out = []
    pos = 0
    n = len(view)
    while pos < n:
        if n - pos < LOG_OVERHEAD + 5:
            raise KafkaCorruptMessage(f"truncated record batch ({n - pos} bytes)", pos)
        length = _I32.unpack_from(view, pos + 8)[0]
        magic = view[pos + 16]
        if magic != 2:
            raise KafkaUnsupportedForMessageFormat(
                f"message format magic {magic}; only record batches v2 (magic 2) are accepted",
                pos,
            )
        if length < BATCH_HEADER_SIZE - LOG_OVERHEAD or pos + LOG_OVERHEAD + length > n:
            raise KafkaCorruptMessage(f"record batch length {length} does not fit", pos)
        fields = _BATCH.unpack_from(view, pos)
        end = pos + LOG_OVERHEAD + length
        crc = segment_io.crc32c(view[pos + _CRC_FROM : end])
        if crc != fields[4]:
            raise KafkaCorruptMessage(
                f"record batch CRC32C {fields[4]:#010x}, computed {crc:#010x}", pos
            )
        h = BatchHeader(pos, LOG_OVERHEAD + length, *fields[0:1], *fields[2:])
        # The batch takes lastOffsetDelta + 1 offsets; a header claiming more than it holds
        # would move the log end by up to 2**31 offsets. Kafka's LogValidator refuses an
        # empty batch and one whose offset range and record count disagree; records are
        # never decoded here, but an uncompressed record takes at least _MIN_RECORD bytes.
        if (
            h.record_count <= 0
            or h.last_offset_delta != h.record_count - 1
            or (h.compression == 0 and h.record_count * _MIN_RECORD > length - _RECORDS_FROM)
        ):
            raise KafkaCorruptMessage(
                f"record count {h.record_count}, last offset delta {h.last_offset_delta}"
                f" in {length} bytes",
                pos,
            )
        out.append(h)
        pos = end
    return out
