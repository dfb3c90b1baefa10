# cython: language_level=3
"""The Kafka wire codec, compiled: the twin of ``kafka_codec.py``, same names, same
results, same errors (class, message and byte offset); the tests feed both the same
frames and compare.

The message table (``kafka_spec``) is turned once per API version into a tree of typed
field codecs that read the caller's buffer in place and write into a growing bytearray;
frame splitting, request headers and record batch headers are plain C loops. What stays
Python is imported from the pure twin: the header tuples, ``field_default`` and
``write_uvarint`` for integers beyond 64 bits. No I/O and no broker behaviour here;
records are never decoded or decompressed.
"""

import struct

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_CheckExact, PyDict_GetItem
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from cpython.ref cimport PyObject
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

from robustmq._core import kafka_codec as _pure
from robustmq._core import segments as _segment_io
from robustmq._core.kafka_codec import (
    BATCH_HEADER_SIZE,
    LOG_OVERHEAD,
    BatchHeader,
    Buffer,
    Decode,
    Encode,
    RequestHeader,
    field_default,
)
from robustmq._core.kafka_spec import APIS, NO_DEFAULT, PRODUCE, Field, in_range, parse_range
from robustmq.errors import (
    KafkaCorruptMessage,
    KafkaInvalidRequest,
    KafkaUnsupportedForMessageFormat,
    KafkaUnsupportedVersion,
)

__all__ = _pure.__all__

_F64 = struct.Struct(">d")
_I16 = struct.Struct(">h")
_crc32c = _segment_io.crc32c

cdef enum:
    T_INT8 = 1
    T_INT16
    T_UINT16
    T_INT32
    T_INT64
    T_FLOAT64
    T_BOOL
    T_VAR
    T_UUID

# Batch header layout (see kafka_codec._BATCH): the CRC covers attributes to the end.
cdef enum:
    CRC_FROM = 21
    RECORDS_FROM = 49
    MIN_RECORD = 7
    MAX_KEYS = 64


# --- byte order ------------------------------------------------------------------------

cdef inline uint64_t _load_be(const unsigned char *p, int size) noexcept nogil:
    cdef uint64_t v = 0
    cdef int i
    for i in range(size):
        v = (v << 8) | p[i]
    return v


cdef inline void _store_be(unsigned char *p, uint64_t v, int size) noexcept nogil:
    cdef int i
    for i in range(size - 1, -1, -1):
        p[i] = <unsigned char>(v & 0xFF)
        v >>= 8


cdef inline unsigned char *_grow(bytearray out, Py_ssize_t n) except NULL:
    """Room for ``n`` more bytes at the end of ``out`` (bytearray over-allocates, so
    appending stays amortised O(1))."""
    cdef Py_ssize_t size = PyByteArray_GET_SIZE(out)
    if PyByteArray_Resize(out, size + n) < 0:
        return NULL
    return <unsigned char *>PyByteArray_AS_STRING(out) + size


cdef inline int _put_uvarint(bytearray out, uint64_t n) except -1:
    cdef unsigned char tmp[10]
    cdef int k = 0
    while n > 0x7F:
        tmp[k] = <unsigned char>((n & 0x7F) | 0x80)
        n >>= 7
        k += 1
    tmp[k] = <unsigned char>n
    memcpy(_grow(out, k + 1), tmp, k + 1)
    return 0


cdef int _put_bytes(bytearray out, object data) except -1:
    cdef Py_buffer view
    if PyBytes_Check(data):
        memcpy(_grow(out, PyBytes_GET_SIZE(data)), PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        return 0
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        memcpy(_grow(out, view.len), view.buf, view.len)
    finally:
        PyBuffer_Release(&view)
    return 0


def write_uvarint(out, n):
    if type(out) is bytearray and 0 <= n <= 0xFFFFFFFFFFFFFFFF:
        _put_uvarint(out, n)
    else:
        _pure.write_uvarint(out, n)


# --- the read cursor -------------------------------------------------------------------


cdef class Reader:
    """A read cursor over one frame; every short read raises with its byte offset."""

    cdef readonly object buf
    cdef Py_ssize_t _pos
    cdef readonly Py_ssize_t end
    cdef const unsigned char[::1] _mem
    cdef const unsigned char *p

    def __init__(self, buf, Py_ssize_t pos=0, end=None):
        self.buf = memoryview(buf)
        self._mem = self.buf.cast("B") if self.buf.ndim != 1 or self.buf.format != "B" else self.buf
        cdef Py_ssize_t size = self._mem.shape[0]
        self.p = &self._mem[0] if size else NULL
        self.end = size if end is None else end
        if not 0 <= pos <= self.end <= size:
            raise ValueError(f"reader window [{pos}, {self.end}] outside a {size}-byte buffer")
        self._pos = pos

    @property
    def pos(self):
        return self._pos

    @pos.setter
    def pos(self, Py_ssize_t value):
        if not 0 <= value <= self.end:
            raise ValueError(f"position {value} outside [0, {self.end}]")
        self._pos = value

    def fail(self, what):
        return KafkaInvalidRequest(what, self._pos)

    cdef inline int _need(self, Py_ssize_t n) except -1:
        if n < 0 or n > self.end - self._pos:
            raise self.fail(f"{n} bytes needed, {self.end - self._pos} left")
        return 0

    cdef inline uint64_t _fixed(self, int size) except? 0xFFFFFFFFFFFFFFFF:
        if size > self.end - self._pos:
            raise self.fail(f"{size} bytes needed, {self.end - self._pos} left")
        cdef uint64_t v = _load_be(self.p + self._pos, size)
        self._pos += size
        return v

    cdef inline int16_t _i16(self) except? -32768:
        return <int16_t><uint16_t>self._fixed(2)

    cdef inline int32_t _i32(self) except? -2147483648:
        return <int32_t><uint32_t>self._fixed(4)

    def take(self, n):
        # A length read from the wire may not fit a Py_ssize_t: checked as a Python int,
        # the error the pure twin raises.
        if n < 0 or n > self.end - self._pos:
            raise self.fail(f"{n} bytes needed, {self.end - self._pos} left")
        cdef Py_ssize_t size = n
        view = self.buf[self._pos : self._pos + size]
        self._pos += size
        return view

    def unpack(self, s):
        if self._pos + s.size > self.end:
            raise self.fail(f"{s.size} bytes needed, {self.end - self._pos} left")
        value = s.unpack_from(self.buf, self._pos)[0]
        self._pos += s.size
        return value

    cdef int _uv(self, uint64_t *out) except -1:
        """Reads a uvarint into ``out``: 0 when it fits in 64 bits, 1 when its tenth
        byte carries more (``out`` then holds the first nine and the caller finishes the
        read with ``_uv_finish``)."""
        cdef uint64_t result = 0
        cdef unsigned char b
        cdef int shift = 0
        while True:
            if self._pos >= self.end:
                raise self.fail("truncated varint")
            b = self.p[self._pos]
            self._pos += 1
            if shift == 63 and (b & 0x7F) > 1:
                out[0] = result
                self._pos -= 1
                return 1
            result |= (<uint64_t>(b & 0x7F)) << shift
            if not b & 0x80:
                out[0] = result
                return 0
            shift += 7
            if shift > 63:
                raise self.fail("varint longer than 10 bytes")

    cdef object _uv_finish(self, uint64_t low):
        # The tenth byte adds bits above 64: finish in Python integers, as the pure twin.
        cdef unsigned char b = self.p[self._pos]
        self._pos += 1
        if b & 0x80:
            raise self.fail("varint longer than 10 bytes")
        cdef object high = b & 0x7F
        return low | (high << 63)

    cdef object _uvarint(self):
        cdef uint64_t v
        if self._uv(&v) == 0:
            return v
        return self._uv_finish(v)

    def uvarint(self):
        return self._uvarint()

    def varint(self):
        n = self._uvarint()
        return (n >> 1) ^ -(n & 1)

    cdef Py_ssize_t _compact_len(self, bint array) except -2:
        """A compact length (uvarint N+1) as N; -1 for null. A length too big for memory
        raises the error the pure twin raises when it meets it."""
        cdef uint64_t v
        cdef Py_ssize_t left
        if self._uv(&v):
            n = self._uv_finish(v) - 1
        elif v <= <uint64_t>0x7FFFFFFFFFFFFFFF:
            return <Py_ssize_t>v - 1
        else:
            n = v - 1
        left = self.end - self._pos
        if array:
            raise self.fail(f"array of {n} elements in {left} bytes")
        raise self.fail(f"{n} bytes needed, {left} left")


# --- field codecs ----------------------------------------------------------------------


cdef class _Codec:
    cdef object dec(self, Reader r):
        raise NotImplementedError

    cdef int enc(self, bytearray out, object v) except -1:
        raise NotImplementedError


cdef class _Scalar(_Codec):
    cdef int kind
    cdef int size
    cdef int64_t lo
    cdef int64_t hi
    cdef str fmt

    def __init__(self, int kind):
        self.kind = kind
        self.size, self.lo, self.hi, self.fmt = {
            T_INT8: (1, -(2**7), 2**7 - 1, "b"),
            T_INT16: (2, -(2**15), 2**15 - 1, "h"),
            T_UINT16: (2, 0, 2**16 - 1, "H"),
            T_INT32: (4, -(2**31), 2**31 - 1, "i"),
            T_INT64: (8, -(2**63), 2**63 - 1, "q"),
            T_BOOL: (1, 0, 0, "b"),
        }.get(kind, (0, 0, 0, ""))

    cdef object dec(self, Reader r):
        cdef uint64_t v
        cdef uint64_t n
        if self.kind == T_VAR:
            if r._uv(&n) == 0:
                return <int64_t>((n >> 1) ^ (0 - (n & 1)))
            big = r._uv_finish(n)
            return (big >> 1) ^ -(big & 1)
        if self.kind == T_FLOAT64:
            if 8 > r.end - r._pos:
                raise r.fail(f"8 bytes needed, {r.end - r._pos} left")
            value = _F64.unpack_from(r.buf, r._pos)[0]
            r._pos += 8
            return value
        if self.kind == T_UUID:
            r._need(16)
            r._pos += 16
            return PyBytes_FromStringAndSize(<const char *>r.p + r._pos - 16, 16)
        v = r._fixed(self.size)
        if self.kind == T_BOOL:
            return v != 0
        if self.kind == T_INT8:
            return <int8_t>v
        if self.kind == T_INT16:
            return <int16_t>v
        if self.kind == T_UINT16:
            return <uint16_t>v
        if self.kind == T_INT32:
            return <int32_t>v
        return <int64_t>v

    cdef int enc(self, bytearray out, object v) except -1:
        cdef int64_t x
        if self.kind == T_BOOL:
            _grow(out, 1)[0] = 1 if v else 0
            return 0
        if self.kind == T_VAR:
            if -(2**63) <= v <= 2**63 - 1:
                x = v
                _put_uvarint(out, (<uint64_t>x << 1) ^ <uint64_t>(x >> 63))
            else:
                _pure.write_uvarint(out, ((v << 1) ^ (v >> 63)) & 0xFFFFFFFFFFFFFFFF)
            return 0
        if self.kind == T_FLOAT64:
            out += _F64.pack(v)
            return 0
        if self.kind == T_UUID:
            if len(v) != 16:
                raise ValueError("a uuid is 16 bytes")
            _put_bytes(out, v)
            return 0
        try:
            x = v
        except (TypeError, OverflowError):
            raise struct.error(f"'{self.fmt}' format requires an integer in [{self.lo}, {self.hi}]")
        if x < self.lo or x > self.hi:
            raise struct.error(f"'{self.fmt}' format requires {self.lo} <= number <= {self.hi}")
        _store_be(_grow(out, self.size), <uint64_t>x, self.size)
        return 0


cdef class _Sized(_Codec):
    """string (int16 length) and bytes/records (int32 length), classic or compact."""

    cdef bint text
    cdef bint compact
    cdef bint nullable
    cdef bint wide

    def __init__(self, bint text, bint compact, bint nullable, bint wide):
        self.text = text
        self.compact = compact
        self.nullable = nullable
        self.wide = wide

    cdef object dec(self, Reader r):
        cdef Py_ssize_t n
        if self.compact:
            n = r._compact_len(False)
        elif self.wide:
            n = r._i32()
        else:
            n = r._i16()
        if n < 0:
            if n == -1 and self.nullable:
                return None
            raise r.fail(f"length {n} is not allowed here")
        r._need(n)
        cdef const char *start = <const char *>r.p + r._pos
        r._pos += n
        if self.text:
            try:
                return PyUnicode_DecodeUTF8(start, n, NULL)
            except UnicodeDecodeError:
                raise r.fail("string is not valid UTF-8") from None
        return PyBytes_FromStringAndSize(start, n)

    cdef int enc(self, bytearray out, object v) except -1:
        cdef Py_ssize_t n
        cdef const char *s = NULL
        if v is None:
            if not self.nullable:
                raise ValueError("null for a non-nullable field")
            if self.compact:
                _grow(out, 1)[0] = 0
            else:
                _store_be(_grow(out, 4 if self.wide else 2), <uint64_t>-1, 4 if self.wide else 2)
            return 0
        if self.text:
            s = PyUnicode_AsUTF8AndSize(v, &n)
        else:
            n = len(v)
        if self.compact:
            _put_uvarint(out, <uint64_t>n + 1)
        elif self.wide:
            if n > 0x7FFFFFFF:
                raise struct.error("'i' format requires -2147483648 <= number <= 2147483647")
            _store_be(_grow(out, 4), <uint64_t>n, 4)
        else:
            if n > 0x7FFF:
                raise struct.error("'h' format requires -32768 <= number <= 32767")
            _store_be(_grow(out, 2), <uint64_t>n, 2)
        if self.text:
            memcpy(_grow(out, n), s, n)
        else:
            _put_bytes(out, v)
        return 0


cdef class _Array(_Codec):
    cdef _Codec item
    cdef bint compact
    cdef bint nullable

    def __init__(self, _Codec item, bint compact, bint nullable):
        self.item = item
        self.compact = compact
        self.nullable = nullable

    cdef object dec(self, Reader r):
        cdef Py_ssize_t n
        cdef Py_ssize_t i
        n = r._compact_len(True) if self.compact else r._i32()
        if n < 0:
            if n == -1 and self.nullable:
                return None
            raise r.fail(f"array length {n} is not allowed here")
        if n > r.end - r._pos:  # every element takes at least one byte
            raise r.fail(f"array of {n} elements in {r.end - r._pos} bytes")
        cdef list out = []
        for i in range(n):
            out.append(self.item.dec(r))
        return out

    cdef int enc(self, bytearray out, object v) except -1:
        if v is None:
            if not self.nullable:
                raise ValueError("null for a non-nullable array")
            if self.compact:
                _grow(out, 1)[0] = 0
            else:
                _store_be(_grow(out, 4), <uint64_t>-1, 4)
            return 0
        cdef Py_ssize_t n = len(v)
        if self.compact:
            _put_uvarint(out, <uint64_t>n + 1)
        else:
            _store_be(_grow(out, 4), <uint64_t>n, 4)
        for x in v:
            self.item.enc(out, x)
        return 0


cdef class _Struct(_Codec):
    """A struct at one version: its plain fields in order, then (flexible versions only)
    the tag buffer of KIP-482."""

    cdef tuple names
    cdef tuple codecs
    cdef tuple defaults
    cdef bint flexible
    cdef dict tagged  # tag -> (name, codec, default), in table order
    cdef tuple tags  # the same, sorted by tag

    def __init__(self, tuple fields, int version, bint flexible):
        names, codecs, defaults = [], [], []
        self.tagged = {}
        self.flexible = flexible
        for fld in fields:
            if not in_range(version, fld.versions):
                continue
            nullable = in_range(version, fld.nullable)
            if fld.tag is not None:
                if flexible:
                    self.tagged[fld.tag] = (
                        fld.name,
                        _type_codec(fld, version, True, nullable),
                        field_default(fld, nullable),
                    )
                continue
            names.append(fld.name)
            codecs.append(_type_codec(fld, version, flexible, nullable))
            defaults.append(field_default(fld, nullable))
        self.names = tuple(names)
        self.codecs = tuple(codecs)
        self.defaults = tuple(defaults)
        self.tags = tuple(sorted(self.tagged.items()))

    cdef object dec(self, Reader r):
        cdef dict out = {}
        cdef Py_ssize_t i
        cdef uint64_t count
        cdef uint64_t k
        for i in range(len(self.names)):
            out[self.names[i]] = (<_Codec>self.codecs[i]).dec(r)
        if not self.flexible:
            return out
        for name, _, default in self.tagged.values():
            out[name] = default
        if r._uv(&count):
            r._uv_finish(count)
            count = 0xFFFFFFFFFFFFFFFF  # more tags than bytes: the reads below run out
        last = -1
        k = 0
        while k < count:
            k += 1
            tag = r._uvarint()
            if tag <= last:
                raise r.fail(f"tagged field {tag} out of order")
            last = tag
            size = r._uvarint()
            end = r._pos + size
            if end > r.end:
                raise r.fail(f"tagged field {tag} of {size} bytes overruns the frame")
            spec = self.tagged.get(tag)
            if spec is None:
                r._pos = end  # KIP-482: unknown tagged fields are skipped
                continue
            out[spec[0]] = (<_Codec>spec[1]).dec(Reader(r.buf, r._pos, end))
            r._pos = end
        return out

    cdef int enc(self, bytearray out, object value) except -1:
        cdef Py_ssize_t i
        cdef object v
        cdef PyObject *item
        cdef bint exact = PyDict_CheckExact(value)
        get = None if exact else value.get
        for i in range(len(self.names)):
            if exact:
                item = PyDict_GetItem(value, self.names[i])
                v = self.defaults[i] if item is NULL else <object>item
            else:
                v = get(self.names[i], self.defaults[i])
            (<_Codec>self.codecs[i]).enc(out, v)
        if not self.flexible:
            return 0
        present = []
        for tag, (name, codec, default) in self.tags:
            v = value.get(name, default)
            if v is not None and v != default:
                present.append((tag, codec, v))
        _put_uvarint(out, len(present))
        for tag, codec, v in present:
            data = bytearray()
            (<_Codec>codec).enc(data, v)
            _put_uvarint(out, tag)
            _put_uvarint(out, len(data))
            _put_bytes(out, data)
        return 0

    def decode(self, Reader r):
        return self.dec(r)

    def encode(self, bytearray out, value):
        self.enc(out, value)


_SCALARS = {
    "int8": T_INT8,
    "int16": T_INT16,
    "uint16": T_UINT16,
    "int32": T_INT32,
    "int64": T_INT64,
    "float64": T_FLOAT64,
    "bool": T_BOOL,
    "varint": T_VAR,
    "varlong": T_VAR,
    "uuid": T_UUID,
}


cdef _Codec _type_codec(fld, int version, bint flexible, bint nullable):
    t = fld.type
    if t in _SCALARS:
        return _Scalar(_SCALARS[t])
    if t == "string":
        return _Sized(True, flexible, nullable, False)
    if t in ("bytes", "records"):
        return _Sized(False, flexible, nullable, True)
    if t == "struct":
        return _Struct(fld.fields, version, flexible)
    if t == "[]":
        return _Array(_Struct(fld.fields, version, flexible), flexible, nullable)
    if t.startswith("[]"):
        inner = Field(fld.name, t[2:], fld.versions, None, None, NO_DEFAULT, ())
        return _Array(_type_codec(inner, version, flexible, False), flexible, nullable)
    raise ValueError(f"unknown field type {t!r} of {fld.name}")


def struct_codec(fields, int version, bint flexible):
    """(decode, encode) of a struct with ``fields`` at ``version``; the tagged fields
    and the tag buffer exist only when ``flexible``."""
    s = _Struct(tuple(fields), version, flexible)
    return s.decode, s.encode


# Per api key below MAX_KEYS: the request versions the table has and the flexible ones.
cdef int _valid_lo[MAX_KEYS]
cdef int _valid_hi[MAX_KEYS]
cdef int _flex_lo[MAX_KEYS]
cdef int _flex_hi[MAX_KEYS]
cdef int _key
for _key in range(MAX_KEYS):
    _valid_lo[_key], _valid_hi[_key] = 1, 0
    _flex_lo[_key], _flex_hi[_key] = 1, 0
for _key, _api in APIS.items():
    _valid_lo[_key], _valid_hi[_key] = parse_range(_api.request.valid)
    _flex_lo[_key], _flex_hi[_key] = parse_range(_api.request.flexible)


cdef inline bint _flexible(int api_key, int version) noexcept:
    return 0 <= api_key < MAX_KEYS and _flex_lo[api_key] <= version <= _flex_hi[api_key]


cdef inline bint _known(int api_key, int version) noexcept:
    return 0 <= api_key < MAX_KEYS and _valid_lo[api_key] <= version <= _valid_hi[api_key]


cdef dict _CACHE = {}


cdef _Struct _body(int api_key, int version, bint response):
    key = (api_key, version, response)
    cached = _CACHE.get(key)
    if cached is not None:
        return <_Struct>cached[0]
    api = APIS.get(api_key)
    if api is None:
        raise KafkaUnsupportedVersion(f"unknown api key {api_key}")
    msg = api.response if response else api.request
    if not in_range(version, msg.valid):
        raise KafkaUnsupportedVersion(f"{api.name} v{version} is not supported")
    s = _Struct(msg.fields, version, in_range(version, msg.flexible))
    _CACHE[key] = (s, (s.decode, s.encode))
    return s


def body_codec(int api_key, int version, bint response):
    """(decode, encode) of one API's request or response body at one version."""
    _body(api_key, version, response)
    return _CACHE[(api_key, version, response)][1]


def is_flexible(int api_key, int version):
    return _flexible(api_key, version)


def response_header_version(int api_key, int version):
    """1 (with tagged fields) for flexible versions, except ApiVersions, always 0."""
    return 1 if api_key != 18 and _flexible(api_key, version) else 0


# --- frames and headers ----------------------------------------------------------------


def split_frames(buf, long long max_size, max_other_size=None):
    """Complete size-prefixed frames at the start of ``buf`` and how many bytes they span
    (see the pure twin for the limits and why)."""
    view = memoryview(buf)
    cdef const unsigned char[::1] mem = view.cast("B") if view.format != "B" else view
    cdef Py_ssize_t n = mem.shape[0]
    cdef const unsigned char *p = &mem[0] if n else NULL
    cdef bint limit_other = max_other_size is not None
    cdef long long other = max_other_size if limit_other else 0
    cdef Py_ssize_t pos = 0
    cdef int32_t size
    cdef int16_t api_key
    cdef list frames = []
    while n - pos >= 4:
        size = <int32_t>_load_be(p + pos, 4)
        if size < 8 or size > max_size:
            raise KafkaInvalidRequest(
                f"frame size {size} is outside [8, {max_size}] (max_request_size)", pos
            )
        if limit_other and size > other:
            if n - pos < 6:
                break  # the api key is not in yet
            api_key = <int16_t>_load_be(p + pos + 4, 2)
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


cdef int _skip_tags(Reader r) except -1:
    cdef uint64_t count
    cdef uint64_t k = 0
    if r._uv(&count):
        r._uv_finish(count)
        count = 0xFFFFFFFFFFFFFFFF  # more tags than bytes: the reads below run out
    while k < count:
        k += 1
        r._uvarint()
        r.take(r._uvarint())
    return 0


cdef tuple _header(frame):
    cdef Reader r = Reader(frame)
    cdef Py_ssize_t size = r.end
    if size < 10:
        raise r.fail(f"request header needs 10 bytes, the frame has {size}")
    cdef int api_key = <int16_t>_load_be(r.p, 2)
    cdef int api_version = <int16_t>_load_be(r.p + 2, 2)
    cdef int32_t correlation_id = <int32_t>_load_be(r.p + 4, 4)
    r._pos = 8
    cdef Py_ssize_t n = r._i16()
    client_id = None
    if n != -1:
        r._need(n)
        client_id = PyUnicode_DecodeUTF8(<const char *>r.p + r._pos, n, "replace")
        r._pos += n
    header = RequestHeader(api_key, api_version, correlation_id, client_id)
    if _flexible(api_key, api_version) and _known(api_key, api_version):
        _skip_tags(r)
    return header, r


def decode_request_header(frame):
    """The header (v1, or v2 for flexible versions) and a reader positioned at the body;
    read even for versions the table does not know (see the pure twin)."""
    return _header(frame)


def decode_request(frame):
    """A whole request frame (without its size prefix): header and body; bytes after the
    body are ignored, as Kafka's broker does."""
    header, r = _header(frame)
    return header, _body(header.api_key, header.api_version, False).dec(r)


def encode_request(int api_key, int version, int correlation_id, client_id, body):
    """A size-prefixed request frame (what a client sends)."""
    cdef _Struct s = _body(api_key, version, False)
    cdef bytearray out = bytearray(12)
    _store_be(<unsigned char *>PyByteArray_AS_STRING(out) + 4, <uint64_t>api_key, 2)
    _store_be(<unsigned char *>PyByteArray_AS_STRING(out) + 6, <uint64_t>version, 2)
    _store_be(<unsigned char *>PyByteArray_AS_STRING(out) + 8, <uint64_t>correlation_id, 4)
    if client_id is None:
        out += _I16.pack(-1)
    else:
        cid = client_id.encode()
        out += _I16.pack(len(cid)) + cid
    if _flexible(api_key, version):
        out.append(0)
    s.enc(out, body)
    _store_be(<unsigned char *>PyByteArray_AS_STRING(out), <uint64_t>(len(out) - 4), 4)
    return bytes(out)


def encode_response(int api_key, int version, int correlation_id, body):
    """A size-prefixed response frame (what the broker sends)."""
    cdef _Struct s = _body(api_key, version, True)
    cdef bytearray out = bytearray(8)
    _store_be(<unsigned char *>PyByteArray_AS_STRING(out) + 4, <uint64_t>correlation_id, 4)
    if api_key != 18 and _flexible(api_key, version):
        out.append(0)
    s.enc(out, body)
    _store_be(<unsigned char *>PyByteArray_AS_STRING(out), <uint64_t>(len(out) - 4), 4)
    return bytes(out)


def decode_response(int api_key, int version, frame):
    """A response frame (without its size prefix): correlation id and body."""
    cdef Reader r = Reader(frame)
    cdef int32_t correlation_id = r._i32()
    if api_key != 18 and _flexible(api_key, version):
        _skip_tags(r)
    body = _body(api_key, version, True).dec(r)
    if r._pos != r.end:
        raise r.fail(f"{r.end - r._pos} bytes after the end of the response body")
    return correlation_id, body


# --- record batches (Kafka message format v2) ------------------------------------------


def parse_batches(data):
    """The headers of the record batches in ``data``, each CRC32C-checked; refuses what
    the pure twin refuses, with the same errors."""
    view = memoryview(data)
    cdef const unsigned char[::1] mem = view.cast("B") if view.format != "B" else view
    cdef Py_ssize_t n = mem.shape[0]
    cdef const unsigned char *p = &mem[0] if n else NULL
    cdef const unsigned char *b
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t end
    cdef int32_t length
    cdef int32_t last_offset_delta
    cdef int32_t record_count
    cdef int16_t attributes
    cdef uint32_t crc
    cdef unsigned char magic
    cdef list out = []
    while pos < n:
        if n - pos < LOG_OVERHEAD + 5:
            raise KafkaCorruptMessage(f"truncated record batch ({n - pos} bytes)", pos)
        b = p + pos
        length = <int32_t>_load_be(b + 8, 4)
        magic = b[16]
        if magic != 2:
            raise KafkaUnsupportedForMessageFormat(
                f"message format magic {magic}; only record batches v2 (magic 2) are accepted",
                pos,
            )
        if length < RECORDS_FROM or length > n - pos - LOG_OVERHEAD:
            raise KafkaCorruptMessage(f"record batch length {length} does not fit", pos)
        end = pos + LOG_OVERHEAD + length
        stored = <uint32_t>_load_be(b + 17, 4)
        computed = _crc32c(view[pos + CRC_FROM : end])
        if computed != stored:
            raise KafkaCorruptMessage(
                f"record batch CRC32C {stored:#010x}, computed {computed:#010x}", pos
            )
        attributes = <int16_t>_load_be(b + 21, 2)
        last_offset_delta = <int32_t>_load_be(b + 23, 4)
        record_count = <int32_t>_load_be(b + 57, 4)
        # See the pure twin: an empty batch, or one whose offset range and record count
        # disagree, is refused as Kafka's LogValidator does.
        if (
            record_count <= 0
            or last_offset_delta != record_count - 1
            or (
                (attributes & 0x07) == 0
                and <int64_t>record_count * MIN_RECORD > length - RECORDS_FROM
            )
        ):
            raise KafkaCorruptMessage(
                f"record count {record_count}, last offset delta {last_offset_delta}"
                f" in {length} bytes",
                pos,
            )
        out.append(
            BatchHeader(
                pos,
                LOG_OVERHEAD + length,
                <int64_t>_load_be(b, 8),
                <int32_t>_load_be(b + 12, 4),
                2,
                stored,
                attributes,
                last_offset_delta,
                <int64_t>_load_be(b + 27, 8),
                <int64_t>_load_be(b + 35, 8),
                <int64_t>_load_be(b + 43, 8),
                <int16_t>_load_be(b + 51, 2),
                <int32_t>_load_be(b + 53, 4),
                record_count,
            )
        )
        pos = end
    return out
