/* Segment file and frame layout constants, and the one place that fixes byte order.
 *
 * Every multi-byte integer in .log, .index and .timeindex files is little-endian; the
 * load/store helpers below are the only code that converts. Layouts are described in
 * docs/storage.md and mirrored by robustmq/_core/segment_io.py (the pure reference). */
#ifndef RMQ_SEGMENT_FORMAT_H
#define RMQ_SEGMENT_FORMAT_H

#include <stdint.h>
#include <string.h>

#include "crc32c.h"

#if defined(__GNUC__) || defined(__clang__)
#define RMQ_LIKELY(x) __builtin_expect(!!(x), 1)
#define RMQ_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define RMQ_LIKELY(x) (x)
#define RMQ_UNLIKELY(x) (x)
#endif

/* frame = u32 body_len | u32 crc32c(body) | body */
#define RMQ_FRAME_HEADER 8
/* body = i64 offset | i64 timestamp_ms | u32 count | u8 kind | payload */
#define RMQ_BODY_HEADER 21
#define RMQ_KIND_RECORD 1
#define RMQ_KIND_BATCH 2
#define RMQ_MAX_BODY (1u << 30)

/* scan/decode status codes (same values as segment_io.py) */
#define RMQ_OK 0
#define RMQ_INCOMPLETE 1
#define RMQ_CORRUPT 2
#define RMQ_WRONG_KIND 3

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define RMQ_LE16(x) __builtin_bswap16(x)
#define RMQ_LE32(x) __builtin_bswap32(x)
#define RMQ_LE64(x) __builtin_bswap64(x)
#else
#define RMQ_LE16(x) (x)
#define RMQ_LE32(x) (x)
#define RMQ_LE64(x) (x)
#endif

static inline uint16_t rmq_load_u16(const unsigned char *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return RMQ_LE16(v);
}

static inline uint32_t rmq_load_u32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return RMQ_LE32(v);
}

static inline int64_t rmq_load_i64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return (int64_t)RMQ_LE64(v);
}

static inline void rmq_store_u16(unsigned char *p, uint16_t v)
{
    v = RMQ_LE16(v);
    memcpy(p, &v, 2);
}

static inline void rmq_store_u32(unsigned char *p, uint32_t v)
{
    v = RMQ_LE32(v);
    memcpy(p, &v, 4);
}

static inline void rmq_store_i64(unsigned char *p, int64_t v)
{
    uint64_t u = RMQ_LE64((uint64_t)v);
    memcpy(p, &u, 8);
}

/* Check the frame at buf[pos:end]: RMQ_OK when it is whole and its CRC holds, with
 * *body_len set; RMQ_INCOMPLETE when the buffer ends inside it; RMQ_CORRUPT otherwise. */
static inline int rmq_frame_check(const unsigned char *buf, size_t pos, size_t end,
                                  uint32_t *body_len)
{
    uint32_t len, crc;
    if (RMQ_UNLIKELY(end - pos < RMQ_FRAME_HEADER))
        return RMQ_INCOMPLETE;
    len = rmq_load_u32(buf + pos);
    crc = rmq_load_u32(buf + pos + 4);
    *body_len = len;
    if (RMQ_UNLIKELY(len < RMQ_BODY_HEADER || len > RMQ_MAX_BODY))
        return RMQ_CORRUPT;
    if (RMQ_UNLIKELY(end - pos - RMQ_FRAME_HEADER < len))
        return RMQ_INCOMPLETE;
    if (RMQ_UNLIKELY(rmq_crc32c(0, buf + pos + RMQ_FRAME_HEADER, len) != crc))
        return RMQ_CORRUPT;
    return RMQ_OK;
}

#endif
