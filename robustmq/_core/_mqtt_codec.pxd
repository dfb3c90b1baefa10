# Declarations of the compiled MQTT codec: packet classes with their typed fields, the
# read cursor, and the C helpers it uses. Cython code elsewhere (the broker's hot path)
# cimports these to reach the fields without attribute lookups.

from libc.stdint cimport uint16_t, uint32_t


cdef extern from "compiler.h":
    bint LIKELY(bint)
    bint UNLIKELY(bint)


cdef extern from "hton.h":
    uint16_t rmq_load_be16(const unsigned char *p)
    uint32_t rmq_load_be32(const unsigned char *p)
    void rmq_store_be16(unsigned char *p, uint16_t v)
    void rmq_store_be32(unsigned char *p, uint32_t v)


# A read position inside one packet; every read checks against `end`.
cdef struct Cursor:
    const unsigned char *data
    Py_ssize_t pos
    Py_ssize_t end


# A growable output buffer; `small` avoids malloc for most packets.
cdef struct Buf:
    unsigned char *data
    Py_ssize_t len
    Py_ssize_t cap
    unsigned char small[256]


cdef class Packet:
    pass


cdef class Will(Packet):
    cdef public str topic
    cdef public object payload
    cdef public int qos
    cdef public bint retain
    cdef public object properties


cdef class Connect(Packet):
    cdef public int protocol_version
    cdef public str client_id
    cdef public bint clean_start
    cdef public int keep_alive
    cdef public str username
    cdef public object password
    cdef public object will
    cdef public object properties


cdef class Connack(Packet):
    cdef public bint session_present
    cdef public int reason_code
    cdef public object properties


cdef class Publish(Packet):
    cdef public str topic
    cdef public object payload
    cdef public int qos
    cdef public bint retain
    cdef public bint dup
    cdef public int packet_id
    cdef public object properties


cdef class _Ack(Packet):
    cdef public int packet_id
    cdef public int reason_code
    cdef public object properties


cdef class Puback(_Ack):
    pass


cdef class Pubrec(_Ack):
    pass


cdef class Pubrel(_Ack):
    pass


cdef class Pubcomp(_Ack):
    pass


cdef class Subscription(Packet):
    cdef public str topic_filter
    cdef public int qos
    cdef public bint no_local
    cdef public bint retain_as_published
    cdef public int retain_handling


cdef class Subscribe(Packet):
    cdef public int packet_id
    cdef public list subscriptions
    cdef public object properties


cdef class Suback(Packet):
    cdef public int packet_id
    cdef public list reason_codes
    cdef public object properties


cdef class Unsubscribe(Packet):
    cdef public int packet_id
    cdef public list topic_filters
    cdef public object properties


cdef class Unsuback(Packet):
    cdef public int packet_id
    cdef public list reason_codes
    cdef public object properties


cdef class Pingreq(Packet):
    pass


cdef class Pingresp(Packet):
    pass


cdef class Disconnect(Packet):
    cdef public int reason_code
    cdef public object properties


cdef class Auth(Packet):
    cdef public int reason_code
    cdef public object properties


cdef class PublishRun(Packet):
    cdef public str topic
    cdef public bytes data
    cdef public Py_ssize_t count
    cdef public Py_ssize_t largest
    cdef public int protocol_version
    cdef public int qos


cdef class AckRun(Packet):
    cdef public int ack_type
    cdef public list packet_ids


cdef class Decoder:
    cdef public int protocol_version
    cdef public Py_ssize_t max_packet_size
    cdef public bint group_publishes
    cdef bytes _whole
    cdef object _decode(self, const unsigned char *data, Py_ssize_t end)
    cdef PublishRun _run(self, const unsigned char *data, Py_ssize_t start, Py_ssize_t end,
                         str topic, Py_ssize_t count, Py_ssize_t largest, int first)
