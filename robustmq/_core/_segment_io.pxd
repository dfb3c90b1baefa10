# C declarations used by _segment_io.pyx: csrc/crc32c.h and csrc/segment_format.h.
# The frame layout itself is documented in segment_io.py and docs/storage.md.

from libc.stdint cimport int64_t, uint16_t, uint32_t


cdef extern from "crc32c.h" nogil:
    uint32_t rmq_crc32c(uint32_t crc, const void *buf, size_t len)
    uint32_t rmq_crc32c_sw(uint32_t crc, const void *buf, size_t len)
    int rmq_crc32c_hw_available()


cdef extern from "segment_format.h" nogil:
    enum:
        RMQ_FRAME_HEADER
        RMQ_BODY_HEADER
        RMQ_KIND_RECORD
        RMQ_KIND_BATCH
        RMQ_MAX_BODY
        RMQ_OK
        RMQ_INCOMPLETE
        RMQ_CORRUPT
        RMQ_WRONG_KIND

    uint16_t rmq_load_u16(const unsigned char *p)
    uint32_t rmq_load_u32(const unsigned char *p)
    int64_t rmq_load_i64(const unsigned char *p)
    void rmq_store_u16(unsigned char *p, uint16_t v)
    void rmq_store_u32(unsigned char *p, uint32_t v)
    void rmq_store_i64(unsigned char *p, int64_t v)
    int rmq_frame_check(const unsigned char *buf, size_t pos, size_t end, uint32_t *body_len)
