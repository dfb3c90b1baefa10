# cython: language_level=3
"""MQTT 3.1, 3.1.1 and 5.0 packet codec: the compiled twin of ``mqtt_codec.py``.

Same names, same behaviour, same errors (reason code and byte offset) as the pure-Python
reference; the tests run both and compare. Decoding walks the caller's buffer in place and
copies out only the topic (as str) and the payload (as bytes). Encoding sizes the packet
first and writes it once. The property table and the reason-code tables come from
``mqtt_spec`` at import, so both twins share one definition.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
from libc.string cimport memchr, memcmp, memcpy

from robustmq._core import mqtt_spec as _spec
from robustmq.errors import MqttError

cdef enum:
    MALFORMED = 0x81
    PROTOCOL_ERROR = 0x82
    UNSUPPORTED_VERSION = 0x84
    TOPIC_NAME_INVALID = 0x90
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95

# Packet types (§2.1.2); T_WILL is mqtt_spec.WILL, the pseudo type of Will Properties.
cdef enum:
    T_WILL = 0
    T_CONNECT = 1
    T_CONNACK = 2
    T_PUBLISH = 3
    T_PUBACK = 4
    T_PUBREC = 5
    T_PUBREL = 6
    T_PUBCOMP = 7
    T_SUBSCRIBE = 8
    T_SUBACK = 9
    T_UNSUBSCRIBE = 10
    T_UNSUBACK = 11
    T_PINGREQ = 12
    T_PINGRESP = 13
    T_DISCONNECT = 14
    T_AUTH = 15
    T_PUBLISH_RUN = 16
    T_ACK_RUN = 17
    V5 = 5

# Property wire types (mqtt_spec.BYTE ...) and flags in _prop_flags.
cdef enum:
    K_BYTE = 1
    K_TWO_BYTE_INT = 2
    K_FOUR_BYTE_INT = 3
    K_VARIABLE_BYTE_INT = 4
    K_UTF8_STRING = 5
    K_BINARY_DATA = 6
    K_UTF8_PAIR = 7
    P_BOOLEAN = 1
    P_NONZERO = 2
    P_REPEATABLE = 4

cdef Py_ssize_t MAX_PACKET_SIZE = _spec.MAX_PACKET_SIZE
cdef Py_ssize_t MAX_REMAINING_LENGTH = _spec.MAX_REMAINING_LENGTH

# Lookup tables built once from mqtt_spec.
cdef unsigned char _prop_kind[256]
cdef unsigned int _prop_packets[256]
cdef unsigned char _prop_flags[256]
cdef list _prop_names = [None] * 256
cdef list _prop_bnames = [None] * 256
cdef dict _prop_ids = dict(_spec.PROPERTY_IDS)
cdef unsigned char _reason_ok[16][256]
cdef unsigned char _v3_suback_ok[256]
cdef unsigned char _v3_connack_ok[256]
cdef unsigned char _fixed_flags[16]
cdef list _packet_names = [None] * 16
cdef dict _protocol_names = dict(_spec.PROTOCOL_NAMES)


cdef void _init_tables():
    cdef int pid, ptype, code
    assert (_spec.BYTE, _spec.TWO_BYTE_INT, _spec.FOUR_BYTE_INT, _spec.VARIABLE_BYTE_INT,
            _spec.UTF8_STRING, _spec.BINARY_DATA, _spec.UTF8_PAIR, _spec.WILL) == (
        K_BYTE, K_TWO_BYTE_INT, K_FOUR_BYTE_INT, K_VARIABLE_BYTE_INT, K_UTF8_STRING,
        K_BINARY_DATA, K_UTF8_PAIR, T_WILL)
    for pid in range(256):
        _prop_kind[pid] = 0
        _prop_packets[pid] = 0
        _prop_flags[pid] = 0
        _v3_suback_ok[pid] = 0
        _v3_connack_ok[pid] = 0
        for ptype in range(16):
            _reason_ok[ptype][pid] = 0
    for pid, (name, kind, packets) in _spec.PROPERTIES.items():
        _prop_kind[pid] = kind
        _prop_names[pid] = name
        _prop_bnames[pid] = name.encode()
        for ptype in packets:
            _prop_packets[pid] |= 1u << ptype
        if name in _spec.BOOLEAN_PROPERTIES:
            _prop_flags[pid] |= P_BOOLEAN
        if name in _spec.NONZERO_PROPERTIES:
            _prop_flags[pid] |= P_NONZERO
        if name in _spec.REPEATABLE:
            _prop_flags[pid] |= P_REPEATABLE
    for ptype, codes in _spec.REASON_CODES.items():
        for code in codes:
            _reason_ok[ptype][code] = 1
    for code in _spec.V3_SUBACK_CODES:
        _v3_suback_ok[code] = 1
    for code in _spec.V3_CONNACK_CODES:
        _v3_connack_ok[code] = 1
    for ptype, name in _spec.PACKET_NAMES.items():
        _packet_names[ptype] = name
        _fixed_flags[ptype] = _spec.FIXED_FLAGS[ptype]


_init_tables()


# ---------------------------------------------------------------------------- packets


cdef class Packet:
    """Base of all control packets: field-wise equality and a readable repr."""

    _FIELDS = ()
    packet_type = 0

    def _fields(self):
        return tuple([getattr(self, name) for name in self._FIELDS])

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self._fields() == other._fields()

    def __ne__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return self._fields() != other._fields()

    __hash__ = None

    def __repr__(self):
        args = ", ".join([f"{n}={getattr(self, n)!r}" for n in self._FIELDS])
        return f"{type(self).__name__}({args})"


cdef class Will(Packet):
    """The Will Message carried in CONNECT (§3.1.2.5, §3.1.3.2)."""

    _FIELDS = ("topic", "payload", "qos", "retain", "properties")

    def __init__(self, str topic, payload=b"", int qos=0, bint retain=False, properties=None):
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = properties


cdef class Connect(Packet):
    _FIELDS = (
        "protocol_version", "client_id", "clean_start", "keep_alive",
        "username", "password", "will", "properties",
    )
    packet_type = T_CONNECT

    def __init__(self, str client_id="", *, int protocol_version=4, bint clean_start=True,
                 int keep_alive=60, str username=None, password=None, will=None,
                 properties=None):
        self.protocol_version = protocol_version
        self.client_id = client_id
        self.clean_start = clean_start
        self.keep_alive = keep_alive
        self.username = username
        self.password = password
        self.will = will
        self.properties = properties


cdef class Connack(Packet):
    _FIELDS = ("session_present", "reason_code", "properties")
    packet_type = T_CONNACK

    def __init__(self, bint session_present=False, int reason_code=0, properties=None):
        self.session_present = session_present
        self.reason_code = reason_code
        self.properties = properties


cdef class Publish(Packet):
    _FIELDS = ("topic", "payload", "qos", "retain", "dup", "packet_id", "properties")
    packet_type = T_PUBLISH

    def __init__(self, str topic, payload=b"", int qos=0, bint retain=False, bint dup=False,
                 int packet_id=0, properties=None):
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.dup = dup
        self.packet_id = packet_id
        self.properties = properties


cdef class PublishRun(Packet):
    """Consecutive PUBLISHes of one read with the same QoS, no DUP or RETAIN flag,
    no properties and the same topic, kept as their wire bytes (``data``) so that a broker
    can route them once and forward them without decoding or encoding each one.
    ``largest`` is the size of the largest packet, for Maximum Packet Size checks."""

    _FIELDS = ("topic", "data", "count", "largest", "protocol_version", "qos")
    packet_type = T_PUBLISH_RUN

    def __init__(self, str topic, bytes data, Py_ssize_t count, Py_ssize_t largest,
                 int protocol_version, int qos=0):
        self.topic = topic
        self.data = data
        self.count = count
        self.largest = largest
        self.protocol_version = protocol_version
        self.qos = qos

    def publishes(self):
        """The run as Publish packets."""
        return Decoder(self.protocol_version).decode(self.data)[0]

    def wire(self, int protocol_version):
        """The run's packets as a client of ``protocol_version`` receives them: 3.1 and
        3.1.1 share one form, 5.0 adds an empty property block after the topic. A QoS 0
        run only: a QoS 1/2 run is sent with the receiver's packet identifiers
        (``wire_ids``)."""
        if self.qos:
            raise ValueError("a QoS 1/2 run is sent with the receiver's packet identifiers")
        if (protocol_version == V5) == (self.protocol_version == V5):
            return self.data
        return _convert_run(self.data, protocol_version == V5)

    def payloads(self):
        """The payload of each packet, in order."""
        cdef const unsigned char *src = <const unsigned char *>PyBytes_AS_STRING(self.data)
        cdef Py_ssize_t end = PyBytes_GET_SIZE(self.data), pos = 0, body, length, skip
        cdef Py_ssize_t fixed = (2 if self.qos else 0) + (1 if self.protocol_version == V5 else 0)
        cdef list out = []
        while pos < end:
            body = _run_packet(src, pos, &length)
            skip = 2 + rmq_load_be16(src + body) + fixed
            out.append(PyBytes_FromStringAndSize(<const char *>src + body + skip, length - skip))
            pos = body + length
        return out

    def packet_ids(self):
        """A QoS 1/2 run's packet identifiers, in order."""
        if not self.qos:
            raise ValueError("a QoS 0 run has no packet identifiers")
        cdef const unsigned char *src = <const unsigned char *>PyBytes_AS_STRING(self.data)
        cdef Py_ssize_t end = PyBytes_GET_SIZE(self.data), pos = 0, body, length
        cdef list out = []
        while pos < end:
            body = _run_packet(src, pos, &length)
            out.append(rmq_load_be16(src + body + 2 + rmq_load_be16(src + body)))
            pos = body + length
        return out

    def acks(self):
        """A QoS 1 run's PUBACKs or a QoS 2 run's PUBRECs, in order: the success form, the
        same in every version."""
        if not self.qos:
            raise ValueError("a QoS 0 run is not acknowledged")
        cdef const unsigned char *src = <const unsigned char *>PyBytes_AS_STRING(self.data)
        cdef Py_ssize_t end = PyBytes_GET_SIZE(self.data), pos = 0, body, length, at
        cdef bytes out = PyBytes_FromStringAndSize(NULL, 4 * self.count)
        cdef unsigned char *dst = <unsigned char *>PyBytes_AS_STRING(out)
        while pos < end:
            body = _run_packet(src, pos, &length)
            at = body + 2 + rmq_load_be16(src + body)
            dst[0] = (T_PUBACK if self.qos == 1 else T_PUBREC) << 4
            dst[1] = 2
            dst[2] = src[at]
            dst[3] = src[at + 1]
            dst += 4
            pos = body + length
        return out

    def wire_ids(self, int protocol_version, int qos, packet_ids):
        """A QoS 1/2 run's packets as a client of ``protocol_version`` receives them at
        ``qos`` (1 or 2, at most the run's), each with its identifier from ``packet_ids``
        (one per packet, in order) in place of the publisher's."""
        if not 0 < qos <= self.qos:
            raise ValueError(f"a QoS {self.qos} run cannot be sent at QoS {qos}")
        cdef list ids = list(packet_ids)
        if len(ids) != self.count:
            raise ValueError(f"{len(ids)} packet identifiers for a run of {self.count}")
        cdef const unsigned char *src = <const unsigned char *>PyBytes_AS_STRING(self.data)
        cdef Py_ssize_t end = PyBytes_GET_SIZE(self.data), pos, body, length, n, rest
        cdef Py_ssize_t size = 0, i
        cdef int src_props = 1 if self.protocol_version == V5 else 0
        cdef int dst_props = 1 if protocol_version == V5 else 0
        cdef long packet_id
        cdef bytes out = None
        cdef unsigned char *dst = NULL
        for phase in range(2):
            pos = 0
            i = 0
            while pos < end:
                body = _run_packet(src, pos, &length)
                n = 2 + rmq_load_be16(src + body)  # the topic with its length
                rest = length - n - 2 - src_props  # the payload
                if phase == 0:
                    size += 1 + _varint_size(n + 2 + dst_props + rest) + n + 2 + dst_props + rest
                else:
                    packet_id = ids[i]
                    if not 0 < packet_id <= 0xFFFF:
                        raise ValueError(f"packet identifier {packet_id} is not in 1..65535")
                    dst[0] = (T_PUBLISH << 4) | (qos << 1)
                    dst += 1 + _write_varint(dst + 1, n + 2 + dst_props + rest)
                    memcpy(dst, src + body, n)
                    dst[n] = <unsigned char>(packet_id >> 8)
                    dst[n + 1] = <unsigned char>(packet_id & 0xFF)
                    dst += n + 2
                    if dst_props:
                        dst[0] = 0
                        dst += 1
                    memcpy(dst, src + body + n + 2 + src_props, rest)
                    dst += rest
                i += 1
                pos = body + length
            if phase == 0:
                out = PyBytes_FromStringAndSize(NULL, size)
                dst = <unsigned char *>PyBytes_AS_STRING(out)
        return out


cdef class AckRun(Packet):
    """Consecutive acknowledgements of one type (PUBACK, PUBREC, PUBREL or PUBCOMP) of one
    read in their two-byte success form, as the packet identifiers they carry."""

    _FIELDS = ("ack_type", "packet_ids")
    packet_type = T_ACK_RUN

    def __init__(self, int ack_type, list packet_ids):
        self.ack_type = ack_type
        self.packet_ids = packet_ids


cdef inline Py_ssize_t _run_packet(const unsigned char *src, Py_ssize_t pos,
                                   Py_ssize_t *length):
    """Where the body of the run's packet at ``pos`` starts; its length in ``length``
    (a run holds only whole, validated packets)."""
    cdef Py_ssize_t body = pos + 1
    cdef int shift = 0
    length[0] = 0
    while True:
        length[0] |= (<Py_ssize_t>(src[body] & 0x7F)) << shift
        body += 1
        if not src[body - 1] & 0x80:
            return body
        shift += 7


cdef bytes _convert_run(bytes data, bint to_v5):
    """A QoS 0 run's packets with the empty property block added (to 5.0) or removed
    (from 5.0)."""
    cdef const unsigned char *src = <const unsigned char *>PyBytes_AS_STRING(data)
    cdef Py_ssize_t end = len(data), pos, body, length, n, size = 0, new_length
    cdef bytes out = None
    cdef unsigned char *dst = NULL
    cdef int delta = 1 if to_v5 else -1
    for phase in range(2):
        pos = 0
        while pos < end:
            body = _run_packet(src, pos, &length)
            n = 2 + rmq_load_be16(src + body)
            new_length = length + delta
            if phase == 0:
                size += 1 + _varint_size(new_length) + new_length
            else:
                dst[0] = 0x30
                dst += 1 + _write_varint(dst + 1, new_length)
                memcpy(dst, src + body, n)
                dst += n
                if to_v5:
                    dst[0] = 0
                    dst += 1
                    memcpy(dst, src + body + n, length - n)
                    dst += length - n
                else:
                    memcpy(dst, src + body + n + 1, length - n - 1)
                    dst += length - n - 1
            pos = body + length
        if phase == 0:
            out = PyBytes_FromStringAndSize(NULL, size)
            dst = <unsigned char *>PyBytes_AS_STRING(out)
    return out


cdef class _Ack(Packet):
    """PUBACK, PUBREC, PUBREL and PUBCOMP share one shape (§3.4-§3.7)."""

    _FIELDS = ("packet_id", "reason_code", "properties")

    def __init__(self, int packet_id, int reason_code=0, properties=None):
        self.packet_id = packet_id
        self.reason_code = reason_code
        self.properties = properties


cdef class Puback(_Ack):
    packet_type = T_PUBACK


cdef class Pubrec(_Ack):
    packet_type = T_PUBREC


cdef class Pubrel(_Ack):
    packet_type = T_PUBREL


cdef class Pubcomp(_Ack):
    packet_type = T_PUBCOMP


cdef class Subscription(Packet):
    """One topic filter of a SUBSCRIBE with its options (§3.8.3.1)."""

    _FIELDS = ("topic_filter", "qos", "no_local", "retain_as_published", "retain_handling")

    def __init__(self, str topic_filter, int qos=0, bint no_local=False,
                 bint retain_as_published=False, int retain_handling=0):
        self.topic_filter = topic_filter
        self.qos = qos
        self.no_local = no_local
        self.retain_as_published = retain_as_published
        self.retain_handling = retain_handling


cdef class Subscribe(Packet):
    _FIELDS = ("packet_id", "subscriptions", "properties")
    packet_type = T_SUBSCRIBE

    def __init__(self, int packet_id, list subscriptions, properties=None):
        self.packet_id = packet_id
        self.subscriptions = subscriptions
        self.properties = properties


cdef class Suback(Packet):
    _FIELDS = ("packet_id", "reason_codes", "properties")
    packet_type = T_SUBACK

    def __init__(self, int packet_id, list reason_codes, properties=None):
        self.packet_id = packet_id
        self.reason_codes = reason_codes
        self.properties = properties


cdef class Unsubscribe(Packet):
    _FIELDS = ("packet_id", "topic_filters", "properties")
    packet_type = T_UNSUBSCRIBE

    def __init__(self, int packet_id, list topic_filters, properties=None):
        self.packet_id = packet_id
        self.topic_filters = topic_filters
        self.properties = properties


cdef class Unsuback(Packet):
    """UNSUBACK; ``reason_codes`` is empty for MQTT 3.1/3.1.1, which has none."""

    _FIELDS = ("packet_id", "reason_codes", "properties")
    packet_type = T_UNSUBACK

    def __init__(self, int packet_id, list reason_codes=None, properties=None):
        self.packet_id = packet_id
        self.reason_codes = reason_codes if reason_codes is not None else []
        self.properties = properties


cdef class Pingreq(Packet):
    packet_type = T_PINGREQ


cdef class Pingresp(Packet):
    packet_type = T_PINGRESP


cdef class Disconnect(Packet):
    _FIELDS = ("reason_code", "properties")
    packet_type = T_DISCONNECT

    def __init__(self, int reason_code=0, properties=None):
        self.reason_code = reason_code
        self.properties = properties


cdef class Auth(Packet):
    _FIELDS = ("reason_code", "properties")
    packet_type = T_AUTH

    def __init__(self, int reason_code=0, properties=None):
        self.reason_code = reason_code
        self.properties = properties


# ---------------------------------------------------------------------------- decoding


cdef inline str _name(const char *what):
    return what.decode("ascii")


cdef int _fail(int code, str message, Py_ssize_t offset) except -1:
    raise MqttError(code, message, offset)


cdef inline int _need(Cursor *c, Py_ssize_t n, const char *what) except -1:
    if UNLIKELY(c.pos + n > c.end):
        _fail(MALFORMED, "truncated " + _name(what), c.pos)
    return 0


cdef inline long _u8(Cursor *c, const char *what) except -1:
    _need(c, 1, what)
    c.pos += 1
    return c.data[c.pos - 1]


cdef inline long _u16(Cursor *c, const char *what) except -1:
    _need(c, 2, what)
    c.pos += 2
    return rmq_load_be16(c.data + c.pos - 2)


cdef inline long long _u32(Cursor *c, const char *what) except -1:
    _need(c, 4, what)
    c.pos += 4
    return rmq_load_be32(c.data + c.pos - 4)


cdef long _varint(Cursor *c, const char *what) except -1:
    """A Variable Byte Integer (§1.5.5): at most four bytes."""
    cdef long value = 0
    cdef int i
    cdef unsigned char byte
    for i in range(4):
        if c.pos >= c.end:
            _fail(MALFORMED, "truncated " + _name(what), c.pos)
        byte = c.data[c.pos]
        c.pos += 1
        value |= (<long>(byte & 0x7F)) << (7 * i)
        if not byte & 0x80:
            return value
    _fail(MALFORMED, _name(what) + " longer than four bytes", c.pos - 1)


cdef bytes _binary(Cursor *c, const char *what):
    cdef long n = _u16(c, what)
    _need(c, n, what)
    c.pos += n
    return PyBytes_FromStringAndSize(<const char *>c.data + c.pos - n, n)


cdef str _utf8(Cursor *c, const char *what):
    cdef Py_ssize_t start = c.pos
    cdef long n = _u16(c, what)
    _need(c, n, what)
    cdef const char *p = <const char *>c.data + c.pos
    # §1.5.4: well-formed UTF-8, no surrogates, no U+0000.
    if memchr(p, 0, n) != NULL:
        _fail(MALFORMED, _name(what) + " contains U+0000", start)
    try:
        text = PyUnicode_DecodeUTF8(p, n, "strict")
    except UnicodeDecodeError:
        _fail(MALFORMED, _name(what) + " is not valid UTF-8", start)
    c.pos += n
    return text


cdef inline long _packet_id(Cursor *c) except -1:
    cdef Py_ssize_t at = c.pos
    cdef long value = _u16(c, "packet identifier")
    if UNLIKELY(value == 0):
        _fail(PROTOCOL_ERROR, "packet identifier 0", at)
    return value


cdef int _expect_end(Cursor *c, str what) except -1:
    if c.pos != c.end:
        _fail(MALFORMED, "unexpected bytes after " + what, c.pos)
    return 0


cdef object _properties(Cursor *c, int packet):
    """The property block of a packet (§2.2.2); None when it is empty."""
    cdef long length = _varint(c, "property length")
    _need(c, length, "properties")
    cdef Py_ssize_t end = c.pos + length
    cdef Py_ssize_t outer_end = c.end
    cdef Py_ssize_t at
    cdef long pid
    cdef long long number
    cdef unsigned char kind, flags
    cdef bytes bname
    if length == 0:
        return None
    cdef dict props = {}
    c.end = end
    try:
        while c.pos < end:
            at = c.pos
            pid = _varint(c, "property identifier")
            kind = _prop_kind[pid] if pid < 256 else 0
            if kind == 0:
                _fail(MALFORMED, f"unknown property identifier {pid:#04x}", at)
            name = _prop_names[pid]
            if not _prop_packets[pid] & (1u << packet):
                where = "Will" if packet == T_WILL else _packet_names[packet]
                _fail(PROTOCOL_ERROR, f"property {name} is not allowed in {where}", at)
            flags = _prop_flags[pid]
            bname = _prop_bnames[pid]
            if kind == K_BYTE:
                number = _u8(c, bname)
                value = number
            elif kind == K_TWO_BYTE_INT:
                number = _u16(c, bname)
                value = number
            elif kind == K_FOUR_BYTE_INT:
                number = _u32(c, bname)
                value = number
            elif kind == K_VARIABLE_BYTE_INT:
                number = _varint(c, bname)
                value = number
            elif kind == K_UTF8_STRING:
                number = -1
                value = _utf8(c, bname)
            elif kind == K_BINARY_DATA:
                number = -1
                value = _binary(c, bname)
            else:
                number = -1
                key = _utf8(c, bname)
                value = (key, _utf8(c, bname))
            if flags & P_BOOLEAN and number > 1:
                _fail(PROTOCOL_ERROR, f"{name} must be 0 or 1, got {number}", at)
            if flags & P_NONZERO and number == 0:
                _fail(TOPIC_ALIAS_INVALID if pid == 0x23 else PROTOCOL_ERROR,
                      f"{name} must not be 0", at)
            if flags & P_REPEATABLE:
                existing = props.get(name)
                if existing is None:
                    props[name] = [value]
                elif packet == T_SUBSCRIBE and pid == 0x0B:  # §3.8.2.1.2: one identifier
                    _fail(PROTOCOL_ERROR, f"property {name} appears twice", at)
                else:
                    (<list>existing).append(value)
            elif name in props:
                _fail(PROTOCOL_ERROR, f"property {name} appears twice", at)
            else:
                props[name] = value
    finally:
        c.end = outer_end
    return props or None


cdef int _check_topic_name(str topic, Py_ssize_t at, str what) except -1:
    if "+" in topic or "#" in topic:
        _fail(TOPIC_NAME_INVALID, f"{what} {topic!r} contains a wildcard", at)
    return 0


cdef int _check_reason(int code, int packet, Py_ssize_t at) except -1:
    if not _reason_ok[packet][code]:
        _fail(MALFORMED, f"reason code {code:#04x} is not valid in {_packet_names[packet]}", at)
    return 0


cdef Connect _decode_connect(Cursor *c):
    cdef Py_ssize_t start = c.pos
    name = _utf8(c, "protocol name")
    cdef long level = _u8(c, "protocol level")
    if _protocol_names.get(level) != name:
        _fail(UNSUPPORTED_VERSION, f"unsupported protocol {name!r} level {level}", start)
    cdef Py_ssize_t at = c.pos
    cdef long flags = _u8(c, "connect flags")
    if flags & 0x01:
        _fail(MALFORMED, "reserved connect flag is set", at)
    cdef bint will_flag = flags & 0x04
    cdef int will_qos = (flags >> 3) & 0x03
    cdef bint will_retain = flags & 0x20
    if will_qos == 3:
        _fail(MALFORMED, "will QoS 3", at)
    if not will_flag and (will_qos or will_retain):
        _fail(MALFORMED, "will QoS or retain set without a will", at)
    cdef bint has_password = flags & 0x40
    cdef bint has_username = flags & 0x80
    if level != V5 and has_password and not has_username:
        _fail(MALFORMED, "password flag set without user name flag", at)
    cdef Connect p = Connect.__new__(Connect)
    p.protocol_version = level
    p.clean_start = flags & 0x02
    p.keep_alive = _u16(c, "keep alive")
    p.properties = _properties(c, T_CONNECT) if level == V5 else None
    p.client_id = _utf8(c, "client identifier")
    cdef Will will
    if will_flag:
        will = Will.__new__(Will)
        will.properties = _properties(c, T_WILL) if level == V5 else None
        at = c.pos
        will.topic = _utf8(c, "will topic")
        if not will.topic:
            _fail(TOPIC_NAME_INVALID, "will topic is empty", at)
        _check_topic_name(will.topic, at, "will topic")
        will.payload = _binary(c, "will payload")
        will.qos = will_qos
        will.retain = will_retain
        p.will = will
    p.username = _utf8(c, "user name") if has_username else None
    p.password = _binary(c, "password") if has_password else None
    _expect_end(c, "CONNECT payload")
    return p


cdef Publish _decode_publish(Cursor *c, int flags, int version, Py_ssize_t header_at):
    cdef int qos = (flags >> 1) & 0x03
    if UNLIKELY(qos == 3):
        _fail(MALFORMED, "PUBLISH with QoS 3", header_at)
    cdef bint dup = flags & 0x08
    if UNLIKELY(dup and qos == 0):
        _fail(MALFORMED, "PUBLISH with DUP set at QoS 0", header_at)
    cdef Py_ssize_t at = c.pos
    cdef Publish p = Publish.__new__(Publish)
    p.topic = _utf8(c, "topic name")
    cdef Py_ssize_t n = c.pos - at - 2
    cdef const char *raw = <const char *>c.data + at + 2
    if UNLIKELY(memchr(raw, b"+", n) != NULL or memchr(raw, b"#", n) != NULL):
        _fail(TOPIC_NAME_INVALID, f"topic name {p.topic!r} contains a wildcard", at)
    p.qos = qos
    p.dup = dup
    p.retain = flags & 0x01
    p.packet_id = _packet_id(c) if qos else 0
    if version == V5:
        p.properties = _properties(c, T_PUBLISH)
    else:
        p.properties = None
    if UNLIKELY(n == 0 and (p.properties is None or "topic_alias" not in p.properties)):
        _fail(PROTOCOL_ERROR, "empty topic name without a topic alias", at)
    p.payload = PyBytes_FromStringAndSize(<const char *>c.data + c.pos, c.end - c.pos)
    c.pos = c.end
    return p


cdef _Ack _decode_ack(Cursor *c, int ptype, int version):
    cdef _Ack p
    if ptype == T_PUBACK:
        p = Puback.__new__(Puback)
    elif ptype == T_PUBREC:
        p = Pubrec.__new__(Pubrec)
    elif ptype == T_PUBREL:
        p = Pubrel.__new__(Pubrel)
    else:
        p = Pubcomp.__new__(Pubcomp)
    p.packet_id = _packet_id(c)
    p.reason_code = 0
    p.properties = None
    if version != V5 or c.pos >= c.end:
        _expect_end(c, _packet_names[ptype])
        return p
    cdef Py_ssize_t at = c.pos
    p.reason_code = _u8(c, "reason code")
    _check_reason(p.reason_code, ptype, at)
    if c.pos < c.end:
        p.properties = _properties(c, ptype)
    _expect_end(c, _packet_names[ptype])
    return p


cdef Subscribe _decode_subscribe(Cursor *c, int version):
    cdef Subscribe p = Subscribe.__new__(Subscribe)
    p.packet_id = _packet_id(c)
    p.properties = _properties(c, T_SUBSCRIBE) if version == V5 else None
    p.subscriptions = []
    cdef int reserved = 0xC0 if version == V5 else 0xFC
    cdef Py_ssize_t at
    cdef long options
    cdef Subscription s
    while c.pos < c.end:
        topic_filter = _utf8(c, "topic filter")
        at = c.pos
        options = _u8(c, "subscription options")
        if options & reserved:
            _fail(MALFORMED, "reserved subscription option bits set", at)
        if options & 0x03 == 3:
            _fail(MALFORMED, "subscription with QoS 3", at)
        if (options >> 4) & 0x03 == 3:
            _fail(PROTOCOL_ERROR, "retain handling 3", at)
        s = Subscription.__new__(Subscription)
        s.topic_filter = topic_filter
        s.qos = options & 0x03
        s.no_local = options & 0x04
        s.retain_as_published = options & 0x08
        s.retain_handling = (options >> 4) & 0x03
        p.subscriptions.append(s)
    if not p.subscriptions:
        _fail(PROTOCOL_ERROR, "SUBSCRIBE without a topic filter", c.pos)
    return p


cdef Unsubscribe _decode_unsubscribe(Cursor *c, int version):
    cdef Unsubscribe p = Unsubscribe.__new__(Unsubscribe)
    p.packet_id = _packet_id(c)
    p.properties = _properties(c, T_UNSUBSCRIBE) if version == V5 else None
    p.topic_filters = []
    while c.pos < c.end:
        p.topic_filters.append(_utf8(c, "topic filter"))
    if not p.topic_filters:
        _fail(PROTOCOL_ERROR, "UNSUBSCRIBE without a topic filter", c.pos)
    return p


cdef list _decode_codes(Cursor *c, int ptype, const unsigned char *allowed):
    cdef list codes = []
    cdef long code
    while c.pos < c.end:
        code = _u8(c, "reason code")
        if not allowed[code]:
            _fail(MALFORMED, f"reason code {code:#04x} is not valid in {_packet_names[ptype]}",
                  c.pos - 1)
        codes.append(code)
    return codes


cdef object _decode_body(Cursor *c, int ptype, int flags, int version, Py_ssize_t header_at):
    """One packet's variable header and payload; c spans exactly its Remaining Length."""
    cdef Py_ssize_t at
    cdef long code, ack_flags
    if ptype == T_PUBLISH:
        return _decode_publish(c, flags, version, header_at)
    if T_PUBACK <= ptype <= T_PUBCOMP:
        return _decode_ack(c, ptype, version)
    if ptype == T_SUBSCRIBE:
        return _decode_subscribe(c, version)
    if ptype == T_SUBACK:
        suback = Suback.__new__(Suback)
        (<Suback>suback).packet_id = _packet_id(c)
        if version == V5:
            (<Suback>suback).properties = _properties(c, T_SUBACK)
            (<Suback>suback).reason_codes = _decode_codes(c, T_SUBACK, _reason_ok[T_SUBACK])
        else:
            (<Suback>suback).properties = None
            (<Suback>suback).reason_codes = _decode_codes(c, T_SUBACK, _v3_suback_ok)
        return suback
    if ptype == T_UNSUBSCRIBE:
        return _decode_unsubscribe(c, version)
    if ptype == T_UNSUBACK:
        unsuback = Unsuback.__new__(Unsuback)
        (<Unsuback>unsuback).packet_id = _packet_id(c)
        if version != V5:
            _expect_end(c, "UNSUBACK")
            (<Unsuback>unsuback).reason_codes = []
            (<Unsuback>unsuback).properties = None
            return unsuback
        (<Unsuback>unsuback).properties = _properties(c, T_UNSUBACK)
        (<Unsuback>unsuback).reason_codes = _decode_codes(c, T_UNSUBACK, _reason_ok[T_UNSUBACK])
        return unsuback
    if ptype == T_PINGREQ or ptype == T_PINGRESP:
        _expect_end(c, _packet_names[ptype])
        return Pingreq.__new__(Pingreq) if ptype == T_PINGREQ else Pingresp.__new__(Pingresp)
    if ptype == T_CONNACK:
        at = c.pos
        ack_flags = _u8(c, "connack flags")
        if ack_flags & 0xFE:
            _fail(MALFORMED, "reserved CONNACK flags set", at)
        at = c.pos
        code = _u8(c, "reason code")
        connack = Connack.__new__(Connack)
        if version == V5:
            _check_reason(code, T_CONNACK, at)
            (<Connack>connack).properties = _properties(c, T_CONNACK)
        else:
            if not _v3_connack_ok[code]:
                _fail(MALFORMED, f"CONNACK return code {code} is not valid", at)
            (<Connack>connack).properties = None
        _expect_end(c, "CONNACK")
        (<Connack>connack).session_present = ack_flags
        (<Connack>connack).reason_code = code
        return connack
    if ptype == T_CONNECT:
        return _decode_connect(c)
    # DISCONNECT and AUTH (§3.14.2.1, §3.15.2.1): reason code and properties may be omitted.
    code = 0
    properties = None
    if version == V5 and c.pos < c.end:
        at = c.pos
        code = _u8(c, "reason code")
        _check_reason(code, ptype, at)
        if c.pos < c.end:
            properties = _properties(c, ptype)
    _expect_end(c, _packet_names[ptype])
    if ptype == T_DISCONNECT:
        disconnect = Disconnect.__new__(Disconnect)
        (<Disconnect>disconnect).reason_code = code
        (<Disconnect>disconnect).properties = properties
        return disconnect
    auth = Auth.__new__(Auth)
    (<Auth>auth).reason_code = code
    (<Auth>auth).properties = properties
    return auth


cdef class Decoder:
    """Incremental decoder for one connection.

    ``protocol_version`` is 0 until a CONNECT is decoded (server side) or is set up front
    (client side). ``max_packet_size`` bounds the whole packet, fixed header included; a
    larger one raises 0x95 as soon as its fixed header is seen, before its body arrives.
    """

    def __init__(self, int protocol_version=0, Py_ssize_t max_packet_size=MAX_PACKET_SIZE,
                 bint group_publishes=False):
        if protocol_version not in (0, 3, 4, 5):
            raise ValueError(f"protocol_version must be 0, 3, 4 or 5, not {protocol_version}")
        if not 2 <= max_packet_size <= MAX_PACKET_SIZE:
            raise ValueError(f"max_packet_size must be in [2, {MAX_PACKET_SIZE}]")
        self.protocol_version = protocol_version
        self.max_packet_size = max_packet_size
        # Hand plain PUBLISHes over as PublishRuns and plain acknowledgements as
        # AckRuns (the broker's batched lanes).
        self.group_publishes = group_publishes

    def decode(self, data):
        """Every complete packet at the start of ``data`` and the number of bytes they span.

        When a packet is malformed after others decoded fine, those are returned and the
        error is raised by the next call, which starts at the bad packet.
        """
        cdef Py_buffer view
        if type(data) is bytes:
            self._whole = data  # a run spanning all of it is this object, not a copy
            try:
                return self._decode(<const unsigned char *>PyBytes_AS_STRING(data),
                                    len(<bytes>data))
            finally:
                self._whole = None
        try:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        except BufferError:  # a non-contiguous buffer: decode a contiguous copy
            data = memoryview(data).tobytes()
            return self._decode(<const unsigned char *>PyBytes_AS_STRING(data), len(<bytes>data))
        try:
            return self._decode(<const unsigned char *>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    cdef object _decode(self, const unsigned char *data, Py_ssize_t end):
        cdef list packets = []
        cdef Py_ssize_t pos = 0, i, body, length, total, n, ids
        cdef int ptype, flags, shift, first
        cdef unsigned char byte
        cdef Cursor c
        # The open run of plain PUBLISHes: its first packet's offset and first byte, topic
        # bytes, count and largest packet.
        cdef Py_ssize_t run_start = -1, run_topic_at = 0, run_topic_len = 0
        cdef Py_ssize_t run_count = 0, run_largest = 0
        cdef int run_first = 0
        cdef str run_topic = None
        # The open run of acknowledgements: their first byte and packet identifiers.
        cdef list acks = None
        cdef int acks_first = 0
        cdef bint v5 = self.protocol_version == V5
        c.data = data
        try:
            while end - pos >= 2:
                ptype = data[pos] >> 4
                flags = data[pos] & 0x0F
                # Remaining Length (§2.1.4): up to four bytes; stop if it is still arriving.
                length = 0
                shift = 0
                i = pos + 1
                while True:
                    if i >= end:
                        if run_start >= 0:
                            packets.append(self._run(data, run_start, pos, run_topic, run_count,
                                                     run_largest, run_first))
                        if acks is not None:
                            packets.append(_ack_run(acks_first, acks))
                        return packets, pos
                    byte = data[i]
                    length |= (<Py_ssize_t>(byte & 0x7F)) << shift
                    i += 1
                    if not byte & 0x80:
                        break
                    if i - pos > 4:
                        _fail(MALFORMED, "remaining length longer than four bytes", i - 1)
                    shift += 7
                body = i
                total = body - pos + length
                if UNLIKELY(total > self.max_packet_size):
                    _fail(PACKET_TOO_LARGE,
                          f"{_packet_names[ptype] or 'packet'} of {total} bytes exceeds "
                          f"the maximum packet size {self.max_packet_size}", pos)
                if UNLIKELY(ptype == 0 or (ptype == T_AUTH and self.protocol_version != V5
                                           and self.protocol_version != 0)):
                    _fail(MALFORMED, f"reserved packet type {ptype}", pos)
                if UNLIKELY(ptype != T_PUBLISH and flags != _fixed_flags[ptype]):
                    _fail(MALFORMED, f"invalid flags {flags:#x} on {_packet_names[ptype]}", pos)
                if UNLIKELY(self.protocol_version == 0 and ptype != T_CONNECT):
                    _fail(PROTOCOL_ERROR, f"{_packet_names[ptype]} before CONNECT: "
                          "first packet must be CONNECT", pos)
                if body + length > end:
                    break
                c.pos = body
                c.end = body + length
                first = data[pos]
                if (self.group_publishes and length == 2 and body == pos + 2
                        and T_PUBACK <= ptype <= T_PUBCOMP):
                    n = rmq_load_be16(data + body)
                    if n:  # identifier 0 is an error the plain decoder reports
                        if acks is not None and first == acks_first:
                            acks.append(n)
                            pos = body + length
                            continue
                        if run_start >= 0:
                            packets.append(self._run(data, run_start, pos, run_topic, run_count,
                                                     run_largest, run_first))
                            run_start = -1
                        if acks is not None:
                            packets.append(_ack_run(acks_first, acks))
                        acks = [n]
                        acks_first = first
                        pos = body + length
                        continue
                if (self.group_publishes and (first == 0x30 or first == 0x32 or first == 0x34)
                        and length >= 2):
                    n = rmq_load_be16(data + body)
                    ids = 0 if first == 0x30 else 2
                    if (n and n + 2 + ids + v5 <= length
                            and (not ids or rmq_load_be16(data + body + 2 + n) != 0)
                            and (not v5 or data[body + 2 + n + ids] == 0)):
                        if acks is not None:
                            packets.append(_ack_run(acks_first, acks))
                            acks = None
                        if (run_start >= 0 and first == run_first and n == run_topic_len
                                and memcmp(data + body + 2, data + run_topic_at, n) == 0):
                            # Same topic as the run's first packet, which was validated.
                            run_count += 1
                            if total > run_largest:
                                run_largest = total
                            pos = body + length
                            continue
                        packet = _decode_body(&c, ptype, flags, self.protocol_version, pos)
                        if run_start >= 0:
                            packets.append(self._run(data, run_start, pos, run_topic, run_count,
                                                     run_largest, run_first))
                        run_start = pos
                        run_first = first
                        run_topic_at = body + 2
                        run_topic_len = n
                        run_topic = (<Publish>packet).topic
                        run_count = 1
                        run_largest = total
                        pos = body + length
                        continue
                packet = _decode_body(&c, ptype, flags, self.protocol_version, pos)
                if ptype == T_CONNECT:
                    self.protocol_version = (<Connect>packet).protocol_version
                    v5 = self.protocol_version == V5
                if run_start >= 0:
                    packets.append(self._run(data, run_start, pos, run_topic, run_count,
                                             run_largest, run_first))
                    run_start = -1
                if acks is not None:
                    packets.append(_ack_run(acks_first, acks))
                    acks = None
                packets.append(packet)
                pos = body + length
        except MqttError:
            if run_start >= 0:
                packets.append(self._run(data, run_start, pos, run_topic, run_count, run_largest,
                                         run_first))
            if acks is not None:
                packets.append(_ack_run(acks_first, acks))
            if packets:
                return packets, pos
            raise
        if run_start >= 0:
            packets.append(self._run(data, run_start, pos, run_topic, run_count, run_largest,
                                     run_first))
        if acks is not None:
            packets.append(_ack_run(acks_first, acks))
        return packets, pos

    cdef PublishRun _run(self, const unsigned char *data, Py_ssize_t start, Py_ssize_t end,
                         str topic, Py_ssize_t count, Py_ssize_t largest, int first):
        cdef PublishRun run = PublishRun.__new__(PublishRun)
        run.topic = topic
        if (start == 0 and self._whole is not None
                and end == len(self._whole)):
            run.data = self._whole
        else:
            run.data = PyBytes_FromStringAndSize(<const char *>data + start, end - start)
        run.count = count
        run.largest = largest
        run.protocol_version = self.protocol_version
        run.qos = (first >> 1) & 0x03
        return run


cdef AckRun _ack_run(int first, list packet_ids):
    cdef AckRun run = AckRun.__new__(AckRun)
    run.ack_type = first >> 4
    run.packet_ids = packet_ids
    return run


# ---------------------------------------------------------------------------- encoding


cdef inline void _buf_init(Buf *b):
    b.data = b.small
    b.len = 0
    b.cap = sizeof(b.small)


cdef inline void _buf_free(Buf *b):
    if b.data != b.small:
        PyMem_Free(b.data)


cdef int _reserve(Buf *b, Py_ssize_t n) except -1:
    cdef Py_ssize_t cap
    cdef unsigned char *data
    if b.len + n <= b.cap:
        return 0
    cap = max(b.cap * 2, b.len + n)
    if b.data == b.small:
        data = <unsigned char *>PyMem_Malloc(cap)
        if data != NULL:
            memcpy(data, b.small, b.len)
    else:
        data = <unsigned char *>PyMem_Realloc(b.data, cap)
    if data == NULL:
        raise MemoryError()
    b.data = data
    b.cap = cap
    return 0


cdef inline int _put(Buf *b, const void *src, Py_ssize_t n) except -1:
    _reserve(b, n)
    memcpy(b.data + b.len, src, n)
    b.len += n
    return 0


cdef int _out_of_range(long long v, long long maximum) except -1:
    raise ValueError(f"value {v} does not fit its field (0..{maximum})")


cdef inline int _put_u8(Buf *b, long long v) except -1:
    if UNLIKELY(v < 0 or v > 0xFF):
        _out_of_range(v, 0xFF)
    _reserve(b, 1)
    b.data[b.len] = <unsigned char>v
    b.len += 1
    return 0


cdef inline int _put_u16(Buf *b, long long v) except -1:
    if UNLIKELY(v < 0 or v > 0xFFFF):
        _out_of_range(v, 0xFFFF)
    _reserve(b, 2)
    rmq_store_be16(b.data + b.len, <uint16_t>v)
    b.len += 2
    return 0


cdef inline int _put_u32(Buf *b, long long v) except -1:
    if UNLIKELY(v < 0 or v > 0xFFFFFFFF):
        _out_of_range(v, 0xFFFFFFFF)
    _reserve(b, 4)
    rmq_store_be32(b.data + b.len, <uint32_t>v)
    b.len += 4
    return 0


cdef inline int _varint_size(Py_ssize_t v):
    return 1 if v < 128 else 2 if v < 16384 else 3 if v < 2097152 else 4


cdef inline int _write_varint(unsigned char *out, Py_ssize_t v):
    cdef int n = 0
    while True:
        if v >= 128:
            out[n] = <unsigned char>((v & 0x7F) | 0x80)
        else:
            out[n] = <unsigned char>v
            return n + 1
        v >>= 7
        n += 1


cdef int _put_varint(Buf *b, Py_ssize_t v) except -1:
    if v < 0 or v > MAX_REMAINING_LENGTH:
        raise ValueError(f"variable byte integer {v} out of range")
    _reserve(b, 4)
    b.len += _write_varint(b.data + b.len, v)
    return 0


cdef int _put_binary(Buf *b, object value) except -1:
    cdef Py_buffer view
    PyObject_GetBuffer(value, &view, PyBUF_SIMPLE)
    try:
        if view.len > 0xFFFF:
            raise ValueError(f"binary field of {view.len} bytes exceeds 65535")
        _put_u16(b, <unsigned int>view.len)
        _put(b, view.buf, view.len)
    finally:
        PyBuffer_Release(&view)
    return 0


cdef int _put_utf8(Buf *b, str value) except -1:
    cdef Py_ssize_t n
    if value is None:
        raise TypeError("expected str, got None")
    cdef const char *p = PyUnicode_AsUTF8AndSize(value, &n)
    if n > 0xFFFF:
        raise ValueError(f"string field of {n} bytes exceeds 65535")
    _put_u16(b, <unsigned int>n)
    _put(b, p, n)
    return 0


cdef int _put_properties(Buf *b, object props) except -1:
    """Writes the property block (§2.2.2), length first."""
    cdef Buf tmp
    cdef int pid, kind
    if not props:
        return _put_u8(b, 0)
    _buf_init(&tmp)
    try:
        for name, value in props.items():
            found = _prop_ids.get(name)
            if found is None:
                raise ValueError(f"unknown MQTT property {name!r}")
            pid = found
            kind = _prop_kind[pid]
            for item in (value if _prop_flags[pid] & P_REPEATABLE else (value,)):
                _put_u8(&tmp, pid)
                if kind == K_BYTE:
                    _put_u8(&tmp, item)
                elif kind == K_TWO_BYTE_INT:
                    _put_u16(&tmp, item)
                elif kind == K_FOUR_BYTE_INT:
                    _put_u32(&tmp, item)
                elif kind == K_VARIABLE_BYTE_INT:
                    _put_varint(&tmp, item)
                elif kind == K_UTF8_STRING:
                    _put_utf8(&tmp, item)
                elif kind == K_BINARY_DATA:
                    _put_binary(&tmp, item)
                else:
                    _put_utf8(&tmp, item[0])
                    _put_utf8(&tmp, item[1])
        _put_varint(b, tmp.len)
        _put(b, tmp.data, tmp.len)
    finally:
        _buf_free(&tmp)
    return 0


cdef bytes _finish(unsigned int first, Buf *b, const void *tail, Py_ssize_t tail_len):
    """Fixed header + body + an optional tail (the PUBLISH payload) as one bytes object."""
    cdef Py_ssize_t length = b.len + tail_len
    if length > MAX_REMAINING_LENGTH:
        raise ValueError(f"packet body of {length} bytes exceeds {MAX_REMAINING_LENGTH}")
    cdef int hdr = 1 + _varint_size(length)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, hdr + length)
    cdef unsigned char *o = <unsigned char *>PyBytes_AS_STRING(out)
    o[0] = <unsigned char>first
    _write_varint(o + 1, length)
    memcpy(o + hdr, b.data, b.len)
    if tail_len:
        memcpy(o + hdr + b.len, tail, tail_len)
    return out


def encode_publish(str topic, payload, int qos=0, bint retain=False, bint dup=False,
                   int packet_id=0, properties=None, int protocol_version=4):
    """A PUBLISH packet from its fields, without building a Publish object."""
    cdef Buf b
    cdef Py_buffer view
    if qos < 0 or qos > 2:
        raise ValueError(f"QoS must be 0, 1 or 2, not {qos}")
    cdef unsigned int first = (T_PUBLISH << 4) | (0x08 if dup else 0) | (qos << 1) | (
        0x01 if retain else 0)
    PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
    _buf_init(&b)
    try:
        _put_utf8(&b, topic)
        if qos:
            _put_u16(&b, packet_id)
        if protocol_version == V5:
            _put_properties(&b, properties)
        return _finish(first, &b, view.buf, view.len)
    finally:
        _buf_free(&b)
        PyBuffer_Release(&view)


def encode_publish_split(str topic, payload, int qos, bint retain=False, properties=None,
                         int protocol_version=4):
    """A QoS 1/2 PUBLISH in two parts around its packet identifier, (head, tail), so one
    encoding serves every delivery: head + identifier + tail is the packet."""
    cdef Buf b
    cdef Py_buffer view
    cdef Py_ssize_t n, length, rest
    cdef int hdr
    cdef bytes head, tail
    cdef unsigned char *o
    if qos != 1 and qos != 2:
        raise ValueError(f"only QoS 1 and 2 carry a packet identifier, not QoS {qos}")
    PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
    _buf_init(&b)
    try:
        _put_utf8(&b, topic)
        n = b.len
        if protocol_version == V5:
            _put_properties(&b, properties)
        length = b.len + 2 + view.len
        if length > MAX_REMAINING_LENGTH:
            raise ValueError(f"packet body of {length} bytes exceeds {MAX_REMAINING_LENGTH}")
        hdr = 1 + _varint_size(length)
        head = PyBytes_FromStringAndSize(NULL, hdr + n)
        o = <unsigned char *>PyBytes_AS_STRING(head)
        o[0] = <unsigned char>((T_PUBLISH << 4) | (qos << 1) | (0x01 if retain else 0))
        _write_varint(o + 1, length)
        memcpy(o + hdr, b.data, n)
        rest = b.len - n
        tail = PyBytes_FromStringAndSize(NULL, rest + view.len)
        o = <unsigned char *>PyBytes_AS_STRING(tail)
        memcpy(o, b.data + n, rest)
        if view.len:
            memcpy(o + rest, view.buf, view.len)
        return head, tail
    finally:
        _buf_free(&b)
        PyBuffer_Release(&view)


cdef bytes _encode_connect(Connect p):
    cdef Buf b
    cdef Will will = p.will
    cdef bint v5 = p.protocol_version == V5
    cdef unsigned int flags = 0x02 if p.clean_start else 0
    if will is not None:
        if will.qos < 0 or will.qos > 2:
            raise ValueError(f"will QoS must be 0, 1 or 2, not {will.qos}")
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if p.password is not None:
        flags |= 0x40
    if p.username is not None:
        flags |= 0x80
    _buf_init(&b)
    try:
        _put_utf8(&b, _protocol_names[p.protocol_version])
        _put_u8(&b, p.protocol_version)
        _put_u8(&b, flags)
        _put_u16(&b, p.keep_alive)
        if v5:
            _put_properties(&b, p.properties)
        _put_utf8(&b, p.client_id)
        if will is not None:
            if v5:
                _put_properties(&b, will.properties)
            _put_utf8(&b, will.topic)
            _put_binary(&b, will.payload)
        if p.username is not None:
            _put_utf8(&b, p.username)
        if p.password is not None:
            _put_binary(&b, p.password)
        return _finish(T_CONNECT << 4, &b, NULL, 0)
    finally:
        _buf_free(&b)


cdef bytes _encode_with_codes(int ptype, int packet_id, object properties, list codes,
                              int version):
    """SUBACK and UNSUBACK: packet id, properties (MQTT 5), then one byte per filter."""
    cdef Buf b
    _buf_init(&b)
    try:
        _put_u16(&b, packet_id)
        if version == V5:
            _put_properties(&b, properties)
        if version == V5 or ptype == T_SUBACK:
            for code in codes:
                _put_u8(&b, code)
        return _finish(ptype << 4, &b, NULL, 0)
    finally:
        _buf_free(&b)


def encode(Packet packet not None, int protocol_version=4):
    """The wire bytes of ``packet`` for a connection speaking ``protocol_version``."""
    cdef Buf b
    cdef bint v5 = protocol_version == V5
    cdef int ptype = packet.packet_type
    cdef unsigned int options
    cdef Publish pub
    cdef _Ack ack
    cdef Subscription s
    if ptype == T_PUBLISH:
        pub = <Publish>packet
        return encode_publish(pub.topic, pub.payload, pub.qos, pub.retain, pub.dup,
                              pub.packet_id, pub.properties, protocol_version)
    if ptype == T_CONNECT:
        return _encode_connect(<Connect>packet)
    if ptype == T_SUBACK:
        return _encode_with_codes(ptype, (<Suback>packet).packet_id,
                                  (<Suback>packet).properties, (<Suback>packet).reason_codes,
                                  protocol_version)
    if ptype == T_UNSUBACK:
        return _encode_with_codes(ptype, (<Unsuback>packet).packet_id,
                                  (<Unsuback>packet).properties,
                                  (<Unsuback>packet).reason_codes, protocol_version)
    if ptype == T_PINGREQ or ptype == T_PINGRESP:
        return bytes((ptype << 4, 0))
    _buf_init(&b)
    try:
        if T_PUBACK <= ptype <= T_PUBCOMP:
            ack = <_Ack>packet
            _put_u16(&b, ack.packet_id)
            if v5 and (ack.reason_code or ack.properties):
                _put_u8(&b, ack.reason_code)
                if ack.properties:
                    _put_properties(&b, ack.properties)
        elif ptype == T_CONNACK:
            _put_u8(&b, 1 if (<Connack>packet).session_present else 0)
            _put_u8(&b, (<Connack>packet).reason_code)
            if v5:
                _put_properties(&b, (<Connack>packet).properties)
        elif ptype == T_SUBSCRIBE:
            _put_u16(&b, (<Subscribe>packet).packet_id)
            if v5:
                _put_properties(&b, (<Subscribe>packet).properties)
            for s in (<Subscribe>packet).subscriptions:
                if not (0 <= s.qos <= 2 and 0 <= s.retain_handling <= 2):
                    raise ValueError(f"bad subscription options in {s!r}")
                options = s.qos
                if v5:
                    options |= ((0x04 if s.no_local else 0)
                                | (0x08 if s.retain_as_published else 0)
                                | (s.retain_handling << 4))
                _put_utf8(&b, s.topic_filter)
                _put_u8(&b, options)
        elif ptype == T_UNSUBSCRIBE:
            _put_u16(&b, (<Unsubscribe>packet).packet_id)
            if v5:
                _put_properties(&b, (<Unsubscribe>packet).properties)
            for topic_filter in (<Unsubscribe>packet).topic_filters:
                _put_utf8(&b, topic_filter)
        elif ptype == T_DISCONNECT or ptype == T_AUTH:
            code = packet.reason_code
            properties = packet.properties
            if v5 and (code or properties):
                _put_u8(&b, code)
                if properties:
                    _put_properties(&b, properties)
        else:
            raise TypeError(f"not an MQTT packet: {packet!r}")
        return _finish((ptype << 4) | _fixed_flags[ptype], &b, NULL, 0)
    finally:
        _buf_free(&b)


__all__ = [
    "AckRun", "Auth", "Connack", "Connect", "Decoder", "Disconnect", "Packet", "Pingreq",
    "Pingresp", "Puback", "Pubcomp", "Publish", "PublishRun", "Pubrec", "Pubrel", "Suback", "Subscribe", "Subscription",
    "Unsuback", "Unsubscribe", "Will", "encode", "encode_publish", "encode_publish_split",
]
