"""Segment framing: the readable reference of the append (encode) and scan (decode) loops.

``_segment_io.pyx`` (with ``csrc/crc32c.c`` and ``csrc/segment_format.h``) is the compiled
twin with the same API; ``robustmq._core.segments`` is the one selected. The storage
engines own files, offsets bookkeeping and errors; this module only turns records into
frame bytes and frame bytes back into records, and never raises on malformed input: it
reports a status instead.

Frame layout (little-endian; docs/storage.md has the full file formats)::

    u32 body_len | u32 crc32c(body) | body
    body = i64 offset | i64 timestamp_ms | u32 count | u8 kind | payload
    kind 1 (record): i32 key_len (-1: no key) | key | u16 n_headers
                     | n x (u16 name_len | name utf-8 | u32 value_len | value) | value
    kind 2 (batch):  opaque bytes holding ``count`` offsets from ``offset``
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Sequence
from typing import Any

FRAME_HEADER = 8
BODY_HEADER = 21
KIND_RECORD = 1
KIND_BATCH = 2
# A frame body may not exceed this; anything larger is treated as corruption.
MAX_BODY = 1 << 30
_INT64_MAX = (1 << 63) - 1

# Status codes of the scan/decode loops.
OK = 0  # stopped at a limit, or exactly at the end of the buffer
INCOMPLETE = 1  # the buffer ends inside a frame (a torn tail, or read more)
CORRUPT = 2  # bad length, CRC, kind, payload or offset sequence
WRONG_KIND = 3  # decode met a batch, decode_batches met a record

_U32 = struct.Struct("<I")
_FRAME = struct.Struct("<II")
_BODY = struct.Struct("<qqIB")
_I32 = struct.Struct("<i")
_U16 = struct.Struct("<H")


def _make_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _make_table()


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC32C (Castagnoli) of ``data``, continuing from ``crc``."""
    table = _TABLE
    c = crc ^ 0xFFFFFFFF
    for b in bytes(data):
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def crc32c_hw() -> bool:
    """Whether a hardware CRC32C instruction is used (never, in pure Python)."""
    return False


def _record_payload(key: bytes | None, headers: Any, value: bytes) -> bytes:
    if len(headers) > 0xFFFF:
        raise ValueError(f"{len(headers)} headers; at most 65535 fit a frame")
    parts = [_I32.pack(-1 if key is None else len(key))]
    if key is not None:
        parts.append(bytes(key))
    parts.append(_U16.pack(len(headers)))
    for name, hval in headers:
        raw = name.encode()
        if len(raw) > 0xFFFF:
            raise ValueError("header name longer than 65535 bytes")
        parts += [_U16.pack(len(raw)), raw, _U32.pack(len(hval)), bytes(hval)]
    parts.append(bytes(value))
    return b"".join(parts)


def _frame(offset: int, timestamp: int, count: int, kind: int, payload: bytes) -> bytes:
    body = _BODY.pack(offset, timestamp, count, kind) + payload
    if len(body) > MAX_BODY:
        what = "record" if kind == KIND_RECORD else "batch"
        raise ValueError(f"{what} of {len(body)} bytes is larger than a frame can hold")
    return _FRAME.pack(len(body), crc32c(body)) + body


def encode_records(
    records: Sequence[Any],
    base_offset: int,
    now_ms: int,
    position: int = 0,
    next_index_position: int = 0,
    index_interval: int = 4096,
    max_ts: int = -1,
) -> tuple[bytes, list[tuple[int, int, int]], int, int]:
    """Frame ``records`` (``Record``-shaped tuples: value, key, headers, timestamp_ms).

    ``position`` is where the bytes will land in the log. Whenever a frame starts at or
    past ``next_index_position`` an index entry ``(offset, position, max_ts_before)`` is
    emitted (``max_ts_before``: the largest timestamp before that frame in the segment,
    carried in ``max_ts``) and the next one is due ``index_interval`` bytes later.
    Returns ``(bytes, index_entries, next_index_position, max_ts)``.
    """
    out = []
    entries = []
    pos = position
    offset = base_offset
    for rec in records:
        value, key, headers, ts = rec
        if ts is None:
            ts = now_ms
        frame = _frame(offset, ts, 1, KIND_RECORD, _record_payload(key, headers, value))
        if pos >= next_index_position:
            entries.append((offset, pos, max_ts))
            next_index_position = pos + index_interval
        out.append(frame)
        pos += len(frame)
        offset += 1
        if ts > max_ts:
            max_ts = ts
    return b"".join(out), entries, next_index_position, max_ts


def encode_batch(base_offset: int, count: int, max_timestamp_ms: int, data: bytes) -> bytes:
    """Frame one opaque batch holding ``count`` offsets."""
    return _frame(base_offset, max_timestamp_ms, count, KIND_BATCH, bytes(data))


def encode_batch_head(
    base_offset: int,
    count: int,
    max_timestamp_ms: int,
    data: bytes | bytearray | memoryview,
    base_offset_at: int = -1,
) -> tuple[bytes, int]:
    """The frame of one opaque batch, up to where ``data`` goes on unchanged.

    Returns ``(head, rest)``: the frame ``encode_batch`` would build is ``head +
    data[rest:]``, so an append writes both with one ``writev`` and never copies the batch.
    With ``base_offset_at >= 0`` the frame carries ``base_offset`` as a big-endian int64 at
    that byte of the batch (Kafka's RecordBatch.baseOffset, outside the batch's own CRC);
    ``head`` then ends with it and ``rest`` is ``base_offset_at + 8``. ``data`` is not
    changed. The frame CRC covers the patched bytes.
    """
    raw = memoryview(data)
    size = raw.nbytes
    body_len = BODY_HEADER + size
    if body_len > MAX_BODY:
        raise ValueError(f"batch of {body_len} bytes is larger than a frame can hold")
    prefix = 0
    if base_offset_at >= 0:
        if base_offset_at > size - 8:
            raise ValueError(f"base_offset_at={base_offset_at} is outside the {size}-byte batch")
        prefix = base_offset_at + 8
    body = _BODY.pack(base_offset, max_timestamp_ms, count, KIND_BATCH)
    if prefix:
        body += bytes(raw[:base_offset_at]) + base_offset.to_bytes(8, "big", signed=True)
    crc = crc32c(raw[prefix:], crc32c(body))
    return _FRAME.pack(body_len, crc) + body, prefix


def _check_frame(buf: bytes | memoryview, pos: int, end: int) -> tuple[int, int]:
    """(status, body_len) of the frame at ``pos``; OK means it is whole and its CRC holds."""
    if end - pos < FRAME_HEADER:
        return INCOMPLETE, 0
    body_len, crc = _FRAME.unpack_from(buf, pos)
    if body_len < BODY_HEADER or body_len > MAX_BODY:
        return CORRUPT, body_len
    if end - pos - FRAME_HEADER < body_len:
        return INCOMPLETE, body_len
    start = pos + FRAME_HEADER
    if crc32c(buf[start : start + body_len]) != crc:
        return CORRUPT, body_len
    return OK, body_len


def scan(
    buf: bytes | bytearray | memoryview,
    position: int,
    expected_offset: int,
    next_index_position: int = 0,
    index_interval: int = 4096,
    max_ts: int = -1,
) -> tuple[int, int, int, list[tuple[int, int, int]], int, int]:
    """Validate frames from the start of ``buf`` (which sits at log ``position``).

    Each frame must be whole, pass its CRC, have a known kind and count >= 1, and start at
    ``expected_offset`` (when >= 0; then offsets must run on without gaps). Returns
    ``(valid_bytes, next_offset, max_ts, index_entries, status, frames)``: everything
    before ``valid_bytes`` is good; ``status`` says why the scan stopped.
    """
    mv = memoryview(buf)
    end = len(mv)
    pos = 0
    entries = []
    frames = 0
    status = OK
    while pos < end:
        status, body_len = _check_frame(mv, pos, end)
        if status != OK:
            break
        offset, ts, count, kind = _BODY.unpack_from(mv, pos + FRAME_HEADER)
        if kind not in (KIND_RECORD, KIND_BATCH) or count < 1 or offset < 0:
            status = CORRUPT
            break
        if kind == KIND_RECORD and count != 1:
            status = CORRUPT
            break
        if offset + count > _INT64_MAX:
            status = CORRUPT
            break
        if expected_offset >= 0 and offset != expected_offset:
            status = CORRUPT
            break
        if position + pos >= next_index_position:
            entries.append((offset, position + pos, max_ts))
            next_index_position = position + pos + index_interval
        if ts > max_ts:
            max_ts = ts
        expected_offset = offset + count
        pos += FRAME_HEADER + body_len
        frames += 1
    return pos, expected_offset, max_ts, entries, status, frames


def _parse_record(
    mv: memoryview, start: int, end: int
) -> tuple[bytes | None, tuple[tuple[str, bytes], ...], bytes] | None:
    """(key, headers, value) of a record payload in ``mv[start:end]``, or None if malformed."""
    try:
        p = start
        if end - p < 4:
            return None
        (klen,) = _I32.unpack_from(mv, p)
        p += 4
        key = None
        if klen >= 0:
            if end - p < klen:
                return None
            key = bytes(mv[p : p + klen])
            p += klen
        elif klen != -1:
            return None
        if end - p < 2:
            return None
        (nh,) = _U16.unpack_from(mv, p)
        p += 2
        headers = []
        for _ in range(nh):
            if end - p < 2:
                return None
            (nlen,) = _U16.unpack_from(mv, p)
            p += 2
            if end - p < nlen + 4:
                return None
            name = bytes(mv[p : p + nlen]).decode()
            p += nlen
            (vlen,) = _U32.unpack_from(mv, p)
            p += 4
            if end - p < vlen:
                return None
            headers.append((name, bytes(mv[p : p + vlen])))
            p += vlen
        return key, tuple(headers), bytes(mv[p:end])
    except (UnicodeDecodeError, struct.error):
        return None


def decode(
    buf: bytes | bytearray | memoryview,
    offset: int,
    max_records: int,
    max_bytes: int,
    make_record: Callable[..., Any],
) -> tuple[list[Any], int, int]:
    """Records with offsets >= ``offset`` from the frames in ``buf``.

    Stops after ``max_records``, or before a frame that would take the total frame bytes
    of returned records past ``max_bytes`` (one record is always returned if whole).
    Each record is ``make_record(offset, timestamp_ms, key, value, headers)``.
    Returns ``(records, stop_position, status)``; ``stop_position`` is where the next
    unread frame starts.
    """
    return _walk(buf, offset, max_records, max_bytes, False, make_record)


def decode_batches(
    buf: bytes | bytearray | memoryview,
    offset: int,
    max_bytes: int,
    make_batch: Callable[..., Any],
) -> tuple[list[Any], int, int]:
    """Opaque batches ending after ``offset`` from the frames in ``buf``, like ``decode``.

    Each is ``make_batch(base_offset, count, max_timestamp_ms, data)``.
    """
    return _walk(buf, offset, sys.maxsize, max_bytes, True, make_batch)


def _walk(
    buf: bytes | bytearray | memoryview,
    offset: int,
    max_records: int,
    max_bytes: int,
    batches: bool,
    make: Callable[..., Any],
) -> tuple[list[Any], int, int]:
    """The frame walk behind ``decode`` (records) and ``decode_batches`` (opaque batches)."""
    want, other = (KIND_BATCH, KIND_RECORD) if batches else (KIND_RECORD, KIND_BATCH)
    mv = memoryview(buf)
    end = len(mv)
    pos = 0
    out: list[Any] = []
    used = 0
    status = OK
    while pos < end and len(out) < max_records:
        status, body_len = _check_frame(mv, pos, end)
        if status != OK:
            break
        b = pos + FRAME_HEADER
        off, ts, count, kind = _BODY.unpack_from(mv, b)
        size = FRAME_HEADER + body_len
        if off < 0:
            status = CORRUPT
            break
        if off + count <= offset:
            pos += size
            continue
        if kind != want:
            status = WRONG_KIND if kind == other else CORRUPT
            break
        if out and used + size > max_bytes:
            break
        if batches:
            out.append(make(off, count, ts, bytes(mv[b + BODY_HEADER : b + body_len])))
        else:
            parsed = _parse_record(mv, b + BODY_HEADER, b + body_len)
            if parsed is None or count != 1:
                status = CORRUPT
                break
            key, headers, value = parsed
            out.append(make(off, ts, key, value, headers))
        used += size
        pos += size
    return out, pos, status


def frames(
    buf: bytes | bytearray | memoryview, position: int
) -> tuple[list[tuple[int, int, int, int]], int, int]:
    """Every whole, CRC-valid frame in ``buf`` (which sits at log ``position``) as
    ``(offset, count, timestamp_ms, position)``; also the bytes they span and the status
    that stopped the walk (offset sequence is not checked; see ``scan`` for that)."""
    mv = memoryview(buf)
    end = len(mv)
    pos = 0
    rows = []
    status = OK
    while pos < end:
        status, body_len = _check_frame(mv, pos, end)
        if status != OK:
            break
        offset, ts, count, _ = _BODY.unpack_from(mv, pos + FRAME_HEADER)
        rows.append((offset, count, ts, position + pos))
        pos += FRAME_HEADER + body_len
    return rows, pos, status
