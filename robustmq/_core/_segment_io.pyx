# cython: language_level=3
"""Compiled twin of segment_io.py: the same functions, the same results, in C speed.

CRC32C comes from csrc/crc32c.c (SSE4.2 when the CPU has it), byte order and the frame
check from csrc/segment_format.h. Malformed input never raises here: the loops report a
status (OK, INCOMPLETE, CORRUPT, WRONG_KIND), exactly like the pure reference.
"""

from cpython.pyport cimport PY_SSIZE_T_MAX
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport INT64_MAX, int32_t, int64_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

FRAME_HEADER = RMQ_FRAME_HEADER
BODY_HEADER = RMQ_BODY_HEADER
KIND_RECORD = RMQ_KIND_RECORD
KIND_BATCH = RMQ_KIND_BATCH
MAX_BODY = RMQ_MAX_BODY
OK = RMQ_OK
INCOMPLETE = RMQ_INCOMPLETE
CORRUPT = RMQ_CORRUPT
WRONG_KIND = RMQ_WRONG_KIND

# Below this many bytes a CRC is cheaper than releasing and retaking the GIL.
cdef Py_ssize_t NOGIL_CRC_BYTES = 256 * 1024


def crc32c(data, uint32_t crc=0):
    """CRC32C (Castagnoli) of ``data``, continuing from ``crc``."""
    cdef Py_buffer view
    cdef uint32_t result
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        if view.len >= NOGIL_CRC_BYTES:
            with nogil:
                result = rmq_crc32c(crc, view.buf, <size_t>view.len)
        else:
            result = rmq_crc32c(crc, view.buf, <size_t>view.len)
    finally:
        PyBuffer_Release(&view)
    return result


def crc32c_sw(data, uint32_t crc=0):
    """The table implementation, for tests that compare it with the hardware path."""
    cdef Py_buffer view
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        return rmq_crc32c_sw(crc, view.buf, <size_t>view.len)
    finally:
        PyBuffer_Release(&view)


def crc32c_hw():
    """Whether the SSE4.2 crc32 instruction is used."""
    return rmq_crc32c_hw_available() == 1


cdef inline bytes _as_bytes(object obj):
    return obj if type(obj) is bytes else bytes(obj)


cdef Py_ssize_t _payload_size(object key, object headers, object value) except -1:
    cdef Py_ssize_t size = 4 + 2 + (PyBytes_GET_SIZE(value) if type(value) is bytes else len(value))
    cdef Py_ssize_t nh = 0 if headers is () else len(headers)
    if key is not None:
        size += PyBytes_GET_SIZE(key) if type(key) is bytes else len(key)
    if nh == 0:
        return size
    if nh > 0xFFFF:
        raise ValueError(f"{nh} headers; at most 65535 fit a frame")
    for name, hval in headers:
        raw = name.encode()
        if len(raw) > 0xFFFF:
            raise ValueError("header name longer than 65535 bytes")
        size += 2 + len(raw) + 4 + len(hval)
    return size


cdef unsigned char *_put_bytes(unsigned char *p, bytes b):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(b)
    memcpy(p, PyBytes_AS_STRING(b), n)
    return p + n


cdef unsigned char *_put_headers(unsigned char *p, object headers) except NULL:
    cdef bytes kb, vb
    rmq_store_u16(p, <uint16_t>len(headers))
    p += 2
    for name, hval in headers:
        kb = name.encode()
        rmq_store_u16(p, <uint16_t>PyBytes_GET_SIZE(kb))
        p = _put_bytes(p + 2, kb)
        vb = _as_bytes(hval)
        rmq_store_u32(p, <uint32_t>PyBytes_GET_SIZE(vb))
        p = _put_bytes(p + 4, vb)
    return p


def encode_records(records, int64_t base_offset, int64_t now_ms, Py_ssize_t position=0,
                   Py_ssize_t next_index_position=0, Py_ssize_t index_interval=4096,
                   int64_t max_ts=-1):
    """Frame ``records``; see segment_io.encode_records."""
    cdef list recs = records if type(records) is list else list(records)
    cdef Py_ssize_t n = len(recs)
    cdef Py_ssize_t i, total = 0, body_len, pos, start
    cdef int64_t offset, ts
    cdef unsigned char *base
    cdef unsigned char *p
    cdef unsigned char *body
    cdef list entries = []
    cdef bytes out, kb, vb
    for i in range(n):
        value, key, headers, _ = recs[i]
        body_len = RMQ_BODY_HEADER + _payload_size(key, headers, value)
        if body_len > RMQ_MAX_BODY:
            raise ValueError(f"record of {body_len} bytes is larger than a frame can hold")
        total += RMQ_FRAME_HEADER + body_len
    out = PyBytes_FromStringAndSize(NULL, total)
    base = <unsigned char *>PyBytes_AS_STRING(out)
    p = base
    offset = base_offset
    for i in range(n):
        value, key, headers, tsobj = recs[i]
        ts = now_ms if tsobj is None else tsobj
        start = p - base
        pos = position + start
        if pos >= next_index_position:
            entries.append((offset, pos, max_ts))
            next_index_position = pos + index_interval
        body = p + RMQ_FRAME_HEADER
        rmq_store_i64(body, offset)
        rmq_store_i64(body + 8, ts)
        rmq_store_u32(body + 16, 1)
        body[20] = RMQ_KIND_RECORD
        p = body + RMQ_BODY_HEADER
        if key is None:
            rmq_store_u32(p, <uint32_t>-1)
            p += 4
        else:
            kb = _as_bytes(key)
            rmq_store_u32(p, <uint32_t>PyBytes_GET_SIZE(kb))
            p = _put_bytes(p + 4, kb)
        if headers is () or not headers:
            rmq_store_u16(p, 0)
            p += 2
        else:
            p = _put_headers(p, headers)
        p = _put_bytes(p, _as_bytes(value))
        body_len = p - body
        rmq_store_u32(body - 8, <uint32_t>body_len)
        rmq_store_u32(body - 4, rmq_crc32c(0, body, <size_t>body_len))
        offset += 1
        if ts > max_ts:
            max_ts = ts
    return out, entries, next_index_position, max_ts


def encode_batch(int64_t base_offset, uint32_t count, int64_t max_timestamp_ms, data):
    """Frame one opaque batch holding ``count`` offsets."""
    cdef bytes raw = _as_bytes(data)
    cdef Py_ssize_t body_len = RMQ_BODY_HEADER + PyBytes_GET_SIZE(raw)
    if body_len > RMQ_MAX_BODY:
        raise ValueError(f"batch of {body_len} bytes is larger than a frame can hold")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, RMQ_FRAME_HEADER + body_len)
    cdef unsigned char *p = <unsigned char *>PyBytes_AS_STRING(out)
    cdef unsigned char *body = p + RMQ_FRAME_HEADER
    rmq_store_i64(body, base_offset)
    rmq_store_i64(body + 8, max_timestamp_ms)
    rmq_store_u32(body + 16, count)
    body[20] = RMQ_KIND_BATCH
    memcpy(body + RMQ_BODY_HEADER, PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw))
    rmq_store_u32(p, <uint32_t>body_len)
    rmq_store_u32(p + 4, rmq_crc32c(0, body, <size_t>body_len))
    return out


def encode_batch_head(int64_t base_offset, uint32_t count, int64_t max_timestamp_ms, data,
                      Py_ssize_t base_offset_at=-1):
    """The frame of one opaque batch, up to where ``data`` goes on unchanged."""
    cdef Py_buffer view
    cdef Py_ssize_t body_len, prefix
    cdef uint64_t be = <uint64_t>base_offset
    cdef uint32_t crc
    cdef bytes out
    cdef unsigned char *p
    cdef unsigned char *body
    cdef const unsigned char *src
    cdef int i
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        src = <const unsigned char *>view.buf
        body_len = RMQ_BODY_HEADER + view.len
        if body_len > RMQ_MAX_BODY:
            raise ValueError(f"batch of {body_len} bytes is larger than a frame can hold")
        prefix = 0
        if base_offset_at >= 0:
            if base_offset_at > view.len - 8:
                raise ValueError(
                    f"base_offset_at={base_offset_at} is outside the {view.len}-byte batch"
                )
            prefix = base_offset_at + 8
        out = PyBytes_FromStringAndSize(NULL, RMQ_FRAME_HEADER + RMQ_BODY_HEADER + prefix)
        p = <unsigned char *>PyBytes_AS_STRING(out)
        body = p + RMQ_FRAME_HEADER
        rmq_store_i64(body, base_offset)
        rmq_store_i64(body + 8, max_timestamp_ms)
        rmq_store_u32(body + 16, count)
        body[20] = RMQ_KIND_BATCH
        if prefix:
            memcpy(body + RMQ_BODY_HEADER, src, base_offset_at)
            # Kafka's baseOffset is big-endian, unlike the frame's own fields.
            for i in range(8):
                body[RMQ_BODY_HEADER + base_offset_at + i] = <unsigned char>(be >> (56 - 8 * i))
        crc = rmq_crc32c(0, body, <size_t>(RMQ_BODY_HEADER + prefix))
        if view.len - prefix >= NOGIL_CRC_BYTES:
            with nogil:
                crc = rmq_crc32c(crc, src + prefix, <size_t>(view.len - prefix))
        else:
            crc = rmq_crc32c(crc, src + prefix, <size_t>(view.len - prefix))
        rmq_store_u32(p, <uint32_t>body_len)
        rmq_store_u32(p + 4, crc)
        return out, prefix
    finally:
        PyBuffer_Release(&view)


def scan(buf, Py_ssize_t position, int64_t expected_offset, Py_ssize_t next_index_position=0,
         Py_ssize_t index_interval=4096, int64_t max_ts=-1):
    """Validate frames; see segment_io.scan."""
    cdef Py_buffer view
    cdef const unsigned char *b
    cdef size_t end, pos = 0
    cdef uint32_t body_len = 0, count
    cdef int status = RMQ_OK
    cdef int64_t offset, ts
    cdef unsigned char kind
    cdef Py_ssize_t frames = 0
    cdef list entries = []
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        b = <const unsigned char *>view.buf
        end = <size_t>view.len
        while pos < end:
            status = rmq_frame_check(b, pos, end, &body_len)
            if status != RMQ_OK:
                break
            offset = rmq_load_i64(b + pos + 8)
            ts = rmq_load_i64(b + pos + 16)
            count = rmq_load_u32(b + pos + 24)
            kind = b[pos + 28]
            if (kind != RMQ_KIND_RECORD and kind != RMQ_KIND_BATCH) or count < 1 or offset < 0:
                status = RMQ_CORRUPT
                break
            if kind == RMQ_KIND_RECORD and count != 1:
                status = RMQ_CORRUPT
                break
            if offset > INT64_MAX - <int64_t>count:
                status = RMQ_CORRUPT
                break
            if expected_offset >= 0 and offset != expected_offset:
                status = RMQ_CORRUPT
                break
            if position + <Py_ssize_t>pos >= next_index_position:
                entries.append((offset, position + <Py_ssize_t>pos, max_ts))
                next_index_position = position + <Py_ssize_t>pos + index_interval
            if ts > max_ts:
                max_ts = ts
            expected_offset = offset + count
            pos += RMQ_FRAME_HEADER + body_len
            frames += 1
    finally:
        PyBuffer_Release(&view)
    return <Py_ssize_t>pos, expected_offset, max_ts, entries, status, frames


cdef object _parse_record(const unsigned char *b, size_t p, size_t end):
    """(key, headers, value) of the record payload b[p:end], or None if malformed."""
    cdef int32_t klen
    cdef uint16_t nh, nlen, j
    cdef uint32_t vlen
    cdef object key = None
    cdef object headers = ()
    cdef list hl
    if end - p < 4:
        return None
    klen = <int32_t>rmq_load_u32(b + p)
    p += 4
    if klen >= 0:
        if end - p < <size_t>klen:
            return None
        key = PyBytes_FromStringAndSize(<const char *>b + p, klen)
        p += klen
    elif klen != -1:
        return None
    if end - p < 2:
        return None
    nh = rmq_load_u16(b + p)
    p += 2
    if nh:
        hl = []
        for j in range(nh):
            if end - p < 2:
                return None
            nlen = rmq_load_u16(b + p)
            p += 2
            if end - p < <size_t>nlen + 4:
                return None
            try:
                name = PyUnicode_DecodeUTF8(<const char *>b + p, nlen, NULL)
            except UnicodeDecodeError:
                return None
            p += nlen
            vlen = rmq_load_u32(b + p)
            p += 4
            if end - p < vlen:
                return None
            hl.append((name, PyBytes_FromStringAndSize(<const char *>b + p, vlen)))
            p += vlen
        headers = tuple(hl)
    return key, headers, PyBytes_FromStringAndSize(<const char *>b + p, end - p)


def decode(buf, int64_t offset, Py_ssize_t max_records, Py_ssize_t max_bytes, make_record):
    """Records with offsets >= ``offset``; see segment_io.decode."""
    return _walk(buf, offset, max_records, max_bytes, False, make_record)


def decode_batches(buf, int64_t offset, Py_ssize_t max_bytes, make_batch):
    """Opaque batches ending after ``offset``; see segment_io.decode_batches."""
    return _walk(buf, offset, PY_SSIZE_T_MAX, max_bytes, True, make_batch)


cdef tuple _walk(buf, int64_t offset, Py_ssize_t max_records, Py_ssize_t max_bytes,
                 bint batches, make):
    """The frame walk behind decode (records) and decode_batches (opaque batches)."""
    cdef Py_buffer view
    cdef const unsigned char *b
    cdef size_t end, pos = 0, size, bp
    cdef uint32_t body_len = 0, count
    cdef int status = RMQ_OK
    cdef int64_t off, ts
    cdef unsigned char kind
    cdef unsigned char want = RMQ_KIND_BATCH if batches else RMQ_KIND_RECORD
    cdef unsigned char other = RMQ_KIND_RECORD if batches else RMQ_KIND_BATCH
    cdef Py_ssize_t used = 0, nout = 0
    cdef list out = []
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        b = <const unsigned char *>view.buf
        end = <size_t>view.len
        while pos < end and nout < max_records:
            status = rmq_frame_check(b, pos, end, &body_len)
            if status != RMQ_OK:
                break
            bp = pos + RMQ_FRAME_HEADER
            off = rmq_load_i64(b + bp)
            ts = rmq_load_i64(b + bp + 8)
            count = rmq_load_u32(b + bp + 16)
            kind = b[bp + 20]
            size = RMQ_FRAME_HEADER + body_len
            if off < 0:
                status = RMQ_CORRUPT
                break
            if off <= offset and <int64_t>count <= offset - off:
                pos += size
                continue
            if kind != want:
                status = RMQ_WRONG_KIND if kind == other else RMQ_CORRUPT
                break
            if nout and used + <Py_ssize_t>size > max_bytes:
                break
            if batches:
                out.append(make(off, count, ts, PyBytes_FromStringAndSize(
                    <const char *>b + bp + RMQ_BODY_HEADER, body_len - RMQ_BODY_HEADER)))
            else:
                parsed = _parse_record(b, bp + RMQ_BODY_HEADER, bp + body_len)
                if parsed is None or count != 1:
                    status = RMQ_CORRUPT
                    break
                key, headers, value = <tuple>parsed
                out.append(make(off, ts, key, value, headers))
            nout += 1
            used += size
            pos += size
    finally:
        PyBuffer_Release(&view)
    return out, <Py_ssize_t>pos, status


def frames(buf, Py_ssize_t position):
    """Every whole, CRC-valid frame; see segment_io.frames."""
    cdef Py_buffer view
    cdef const unsigned char *b
    cdef size_t end, pos = 0
    cdef uint32_t body_len = 0
    cdef int status = RMQ_OK
    cdef list rows = []
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        b = <const unsigned char *>view.buf
        end = <size_t>view.len
        while pos < end:
            status = rmq_frame_check(b, pos, end, &body_len)
            if status != RMQ_OK:
                break
            rows.append((rmq_load_i64(b + pos + 8), rmq_load_u32(b + pos + 24),
                         rmq_load_i64(b + pos + 16), position + <Py_ssize_t>pos))
            pos += RMQ_FRAME_HEADER + body_len
    finally:
        PyBuffer_Release(&view)
    return rows, <Py_ssize_t>pos, status


# Probe the CPU and build the CRC tables now, while the GIL makes it single-threaded.
rmq_crc32c_hw_available()
