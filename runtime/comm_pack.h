/*
 * comm_pack: how a range of comm's logical vector goes on the wire when some of it
 * travels as bfloat16 (sync.compression: bf16). Internal to comm.
 *
 * A span's first `bf16` floats travel as bfloat16 (the float's upper 16 bits, rounded to
 * nearest even: 8 significant bits, float32's range), the rest as float32; a payload holds
 * the range's elements in order, each in its span's precision, so both ends compute its
 * layout from the same spans. Payloads must be 2-byte aligned (comm copies a misaligned
 * receive buffer first); float32 elements are read and written with memcpy, as one after
 * an odd number of bfloat16 is not 4-byte aligned.
 */
#ifndef KD_COMM_PACK_H
#define KD_COMM_PACK_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "comm.h"

/* The bfloat16 nearest to f (ties to even); NaN stays a (quiet) NaN, infinities stay.
 * Written without a branch: comm_pack's loops call it and must stay vector code. */
static inline uint16_t comm_bf16_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint32_t nearest = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    uint32_t quiet_nan = (u >> 16) | 0x40u;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : nearest);
}

static inline float comm_f32_of(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* The spans of an operation and their logical start offsets (nspans + 1 entries, the
 * last one the total). */
typedef struct comm_layout {
    const kd_comm_span *spans;
    const size_t *start;
    int nspans;
} comm_layout;

/* Whether any element of the operation travels as bfloat16. */
int comm_pack_any(const comm_layout *l);
/* Payload bytes of the logical range [off, off + len). */
size_t comm_pack_bytes(const comm_layout *l, size_t off, size_t len);
/* Writes the range into out (2-byte aligned) and returns the bytes written
 * (comm_pack_bytes of the range). With keep, every bfloat16 element is also rounded in
 * place in the spans, so that the sender holds exactly the value it sent: that is what
 * keeps the ranks' results bit-identical. */
size_t comm_pack(const comm_layout *l, size_t off, size_t len, unsigned char *out, int keep);
/* Reads a payload of the range from in (2-byte aligned) and adds it into the spans (add)
 * or stores it. */
void comm_unpack(const comm_layout *l, size_t off, size_t len, const unsigned char *in,
                 int add);

#endif
