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

/* The two 8-bit codes as float32 bit fields (families/adam_lowp.py): the
 * field of y = |x| / scale in [0, 1] is bits(y) >> SHIFT (the exponent and
 * the top 3 (m) or 4 (v) mantissa bits), clamped to [LO, HI], and the code
 * is field - LO.  HI is the field of 1.0 (m: code 127, v: 255); LO the
 * field of 1.125 * 2^-16 (m: code 0, which decodes to zero) or 1.0625 *
 * 2^-16 (v: code 0, decoded as that, never zero).  Named once here: the
 * scalar helpers below and every vector encode/decode must agree to the
 * bit.  FO_Q8_HALF(SHIFT) is the nearest-even bias (half a code step less
 * one; the field's lsb is added to it). */
#define FO_Q8M_SHIFT 20
#define FO_Q8M_LO 889u
#define FO_Q8M_HI 1016u
#define FO_Q8V_SHIFT 19
#define FO_Q8V_LO 1777u
#define FO_Q8V_HI 2032u
#define FO_Q8_HALF(shift) ((1u << ((shift) - 1)) - 1u)

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

/* fo_bf16_encode's rounding bits for round to nearest even: half an ulp
 * of the bfloat16 word, less one when the word is even (ties to even). */
FO_INLINE uint32_t fo_bf16_nearest_bits(float x)
{
    return 0x7FFFu + ((fo_f2u(x) >> 16) & 1u);
}

/* n words of x by fo_bf16_encode with nearest-even bits: the vector loops'
 * rare path (a NaN, or for VCVTNE2PS2BF16 a subnormal, among the lanes). */
FO_INLINE void fo_bf16_encode_nearest(const float *x, uint16_t *w, int n)
{
    int k;
    for (k = 0; k < n; k++)
        w[k] = fo_bf16_encode(x[k], fo_bf16_nearest_bits(x[k]));
}

/* adam_lowp.q8m_decode / q8v_decode (times the block's scale outside). */
FO_INLINE float fo_q8m_decode(uint32_t c)
{
    uint32_t mag = c & 127u;
    return fo_u2f((mag == 0 ? 0u : (mag + FO_Q8M_LO) << FO_Q8M_SHIFT) | ((c >> 7) << 31));
}
FO_INLINE float fo_q8v_decode(uint32_t c) { return fo_u2f((c + FO_Q8V_LO) << FO_Q8V_SHIFT); }

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
 * above, or fo_q8_nearest's).  One formula for both codes: add the rounding
 * bits below the kept field, shift, clamp to [lo, hi] and rebase. */
FO_INLINE uint32_t fo_q8_code(uint32_t b, uint32_t r, const int shift, uint32_t lo, uint32_t hi)
{
    uint32_t c = (b + r) >> shift;
    c = c < lo ? lo : c;
    c = c > hi ? hi : c;
    return c - lo;
}
/* Nearest-even rounding bits of bit pattern b for a field at shift. */
FO_INLINE uint32_t fo_q8_nearest(uint32_t b, const int shift)
{
    return FO_Q8_HALF(shift) + ((b >> shift) & 1u);
}
FO_INLINE uint32_t fo_q8m_mag(uint32_t b, uint32_t r)
{
    return fo_q8_code(b, r, FO_Q8M_SHIFT, FO_Q8M_LO, FO_Q8M_HI);
}
FO_INLINE uint32_t fo_q8v_code(uint32_t b, uint32_t r)
{
    return fo_q8_code(b, r, FO_Q8V_SHIFT, FO_Q8V_LO, FO_Q8V_HI);
}

#endif
