/* CRC32C: a slice-by-8 table implementation and an SSE4.2 one chosen at run time.
 *
 * Slice-by-8 processes eight input bytes per step with eight 256-entry tables, table[k][b]
 * being the CRC of byte b followed by k zero bytes; the tables are built once, lazily.
 * The SSE4.2 path is compiled with a per-function target attribute, so the file builds
 * with plain -O2 and the binary still runs on CPUs without the instruction. */
#include "crc32c.h"

#include <string.h>

#define POLY 0x82F63B78u

static uint32_t table[8][256];
static int table_ready = 0;

static void build_table(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
        table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = table[0][n];
        for (int k = 1; k < 8; k++) {
            c = table[0][c & 0xff] ^ (c >> 8);
            table[k][n] = c;
        }
    }
    table_ready = 1;
}

static inline uint64_t load_le64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

uint32_t rmq_crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
    const unsigned char *p = (const unsigned char *)buf;
    if (!table_ready)
        build_table();
    crc = ~crc;
    while (len && ((uintptr_t)p & 7)) {
        crc = table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
        len--;
    }
    while (len >= 8) {
        uint64_t w = load_le64(p) ^ crc;
        crc = table[7][w & 0xff] ^ table[6][(w >> 8) & 0xff] ^ table[5][(w >> 16) & 0xff] ^
              table[4][(w >> 24) & 0xff] ^ table[3][(w >> 32) & 0xff] ^
              table[2][(w >> 40) & 0xff] ^ table[1][(w >> 48) & 0xff] ^ table[0][w >> 56];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* Shifting a CRC over n zero bytes is linear in the CRC register, so it is a 32x32 matrix
 * over GF(2) (one uint32 column per input bit). Squaring the operator doubles n. The
 * hardware path uses this to run three independent crc32 streams (the instruction has a
 * latency of three cycles but can start one per cycle) and then join their results. */
static uint32_t gf2_times(const uint32_t *mat, uint32_t vec)
{
    uint32_t sum = 0;
    for (; vec; vec >>= 1, mat++)
        if (vec & 1)
            sum ^= *mat;
    return sum;
}

static void gf2_square(uint32_t *out, const uint32_t *mat)
{
    for (int n = 0; n < 32; n++)
        out[n] = gf2_times(mat, mat[n]);
}

/* op = the operator that appends `bytes` zero bytes; `bytes` must be a power of two. */
static void zeros_operator(uint32_t *op, size_t bytes)
{
    uint32_t a[32], b[32];
    a[0] = POLY; /* one zero bit */
    for (int n = 1; n < 32; n++)
        a[n] = 1u << (n - 1);
    gf2_square(b, a); /* 2 bits */
    gf2_square(a, b); /* 4 bits */
    gf2_square(b, a); /* 8 bits: one byte */
    for (; bytes > 1; bytes >>= 1) {
        gf2_square(a, b);
        memcpy(b, a, sizeof(a));
    }
    memcpy(op, b, sizeof(b));
}

/* A shift operator unrolled into four byte tables, for a fast apply. */
static void shift_table(uint32_t tab[4][256], size_t bytes)
{
    uint32_t op[32];
    zeros_operator(op, bytes);
    for (int k = 0; k < 4; k++)
        for (uint32_t n = 0; n < 256; n++)
            tab[k][n] = gf2_times(op, n << (8 * k));
}

static inline uint32_t shift_crc(uint32_t tab[4][256], uint32_t crc)
{
    return tab[0][crc & 0xff] ^ tab[1][(crc >> 8) & 0xff] ^ tab[2][(crc >> 16) & 0xff] ^
           tab[3][crc >> 24];
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define RMQ_HAVE_HW_PATH 1
#include <nmmintrin.h>

#define LONG_BLOCK 8192
#define SHORT_BLOCK 256
static uint32_t long_shift[4][256];
static uint32_t short_shift[4][256];

/* Three interleaved streams over consecutive blocks of `block` bytes, joined by `tab`. */
#define CRC_3WAY(block, tab)                                                      \
    while (len >= 3 * (block)) {                                                  \
        uint64_t c1 = 0, c2 = 0;                                                  \
        const unsigned char *end = p + (block);                                   \
        do {                                                                      \
            uint64_t w0, w1, w2;                                                  \
            memcpy(&w0, p, 8);                                                    \
            memcpy(&w1, p + (block), 8);                                          \
            memcpy(&w2, p + 2 * (block), 8);                                      \
            c = _mm_crc32_u64(c, w0);                                             \
            c1 = _mm_crc32_u64(c1, w1);                                           \
            c2 = _mm_crc32_u64(c2, w2);                                           \
            p += 8;                                                               \
        } while (p < end);                                                        \
        c = shift_crc(tab, (uint32_t)c) ^ (uint32_t)c1;                           \
        c = shift_crc(tab, (uint32_t)c) ^ (uint32_t)c2;                           \
        p += 2 * (block);                                                         \
        len -= 3 * (block);                                                       \
    }

__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const void *buf,
                                                              size_t len)
{
    const unsigned char *p = (const unsigned char *)buf;
    uint64_t c = ~crc;
    while (len && ((uintptr_t)p & 7)) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        len--;
    }
    CRC_3WAY(LONG_BLOCK, long_shift)
    CRC_3WAY(SHORT_BLOCK, short_shift)
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8;
        len -= 8;
    }
    while (len--)
        c = _mm_crc32_u8((uint32_t)c, *p++);
    return ~(uint32_t)c;
}
#endif

/* -1: not probed yet; 0: table; 1: SSE4.2. A benign race: every thread writes the same. */
static int hw_state = -1;

int rmq_crc32c_hw_available(void)
{
    if (hw_state < 0) {
#ifdef RMQ_HAVE_HW_PATH
        __builtin_cpu_init();
        if (__builtin_cpu_supports("sse4.2")) {
            shift_table(long_shift, LONG_BLOCK);
            shift_table(short_shift, SHORT_BLOCK);
            hw_state = 1;
        } else {
            hw_state = 0;
        }
#else
        hw_state = 0;
#endif
        if (!table_ready)
            build_table();
    }
    return hw_state;
}

uint32_t rmq_crc32c(uint32_t crc, const void *buf, size_t len)
{
#ifdef RMQ_HAVE_HW_PATH
    if (rmq_crc32c_hw_available())
        return crc32c_hw(crc, buf, len);
#endif
    return rmq_crc32c_sw(crc, buf, len);
}
