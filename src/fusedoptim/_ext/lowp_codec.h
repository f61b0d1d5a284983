/* The scalar codec of reduced-precision optimizer state, shared by Adam's
 * loops (adam_lowp.h) and the one-state families' (lowp_onestate.h):
 * families/adam_lowp.py is the spec of every helper here (bfloat16 words,
 * the 8-bit codes of a first moment ("m", signed) and of a square root
 * ("v", unsigned), their rounding bits).  Integer operations on the float32
 * bit pattern, no table or search, so that compilers vectorize them with the
 * float arithmetic around them.
 */
#ifndef FUSEDOPTIM_LOWP_CODEC_H
#define FUSEDOPTIM_LOWP_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Elements per 8-bit quantization block (adam_lowp.QBLOCK). */
#define FO_QBLOCK 256

#define FO_INLINE static inline __attribute__((always_inline))

FO_INLINE uint32_t fo_f2u(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
FO_INLINE float fo_u2f(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }

/* lowbias32 (adam_lowp.mix32). */
FO_INLINE uint32_t fo_mix32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}

/* adam_lowp.bf16_encode with rounding bits r: a NaN stored as the positive
 * quiet NaN (its sign is an accident of operand order). */
FO_INLINE uint16_t fo_bf16_encode(float x, uint32_t r)
{
    uint32_t b = fo_f2u(x);
    uint32_t w = (b + r) >> 16;
    return (uint16_t)(x != x ? 0x7FC0u : w);
}

/* adam_lowp.q8m_decode / q8v_decode (times the block's scale outside). */
FO_INLINE float fo_q8m_decode(uint32_t c)
{
    uint32_t mag = c & 127u;
    return fo_u2f((mag == 0 ? 0u : (mag + 889u) << 20) | ((c >> 7) << 31));
}
FO_INLINE float fo_q8v_decode(uint32_t c) { return fo_u2f((c + 1777u) << 19); }

/* adam_lowp.q8_rounding_bits of element ctr (mod 2^32) under key: m's and
 * v's. */
FO_INLINE uint32_t fo_q8m_bits(uint32_t key, uint32_t ctr)
{
    return ((key + ctr) * 0x9E3779B1u) >> 12;
}
FO_INLINE uint32_t fo_q8v_bits(uint32_t key, uint32_t ctr)
{
    return (((key + ctr) * 0x9E3779B1u) * 0x85EBCA6Bu) >> 13;
}

/* adam_lowp.q8m_encode's magnitude and q8v_encode of one element: b is the
 * bit pattern of |y| * inv (m) or s * inv (v), r its rounding bits (the
 * above, or nearest even: 0x7FFFF / 0x3FFFF plus the kept lsb). */
FO_INLINE uint32_t fo_q8m_mag(uint32_t b, uint32_t r)
{
    uint32_t c = (b + r) >> 20;
    c = c < 889u ? 889u : c;
    c = c > 1016u ? 1016u : c;
    return c - 889u;
}
FO_INLINE uint32_t fo_q8v_code(uint32_t b, uint32_t r)
{
    uint32_t c = (b + r) >> 19;
    c = c < 1777u ? 1777u : c;
    c = c > 2032u ? 2032u : c;
    return c - 1777u;
}

#endif
