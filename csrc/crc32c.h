/* CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as used by iSCSI (RFC 3720),
 * ext4, Kafka record batches and our segment frames.
 *
 * rmq_crc32c(crc, buf, len) continues a running CRC: start with 0, feed chunks in order.
 * The hardware path (SSE4.2 crc32 instruction) is picked once at first use when the CPU
 * has it; otherwise a slice-by-8 table loop is used. Both give identical results. */
#ifndef RMQ_CRC32C_H
#define RMQ_CRC32C_H

#include <stddef.h>
#include <stdint.h>

uint32_t rmq_crc32c(uint32_t crc, const void *buf, size_t len);

/* The portable table implementation, exported so tests can compare it to the hardware one. */
uint32_t rmq_crc32c_sw(uint32_t crc, const void *buf, size_t len);

/* 1 when rmq_crc32c uses the SSE4.2 instruction. */
int rmq_crc32c_hw_available(void);

#endif
