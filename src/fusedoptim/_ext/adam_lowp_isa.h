/* The vector operations of adam_lowp_vec.h for AVX2 (8 lanes, prefix fo_v8_)
 * and AVX-512 (16 lanes, prefix fo_v16_): each block defines the V_* and v_*
 * names, includes the template, and undefines them.  Included by
 * adam_lowp.h on x86-64 with GCC or Clang only; the functions are called
 * only when the CPU has the instruction set (fo_lowp_isa).
 */
#ifndef FUSEDOPTIM_ADAM_LOWP_ISA_H
#define FUSEDOPTIM_ADAM_LOWP_ISA_H

#define FO_AVX2_ATTR __attribute__((target("avx2")))
#define FO_AVX512_ATTR __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl," \
                                                 "prefer-vector-width=512")))

/* ---- the operations both widths spell alike ---------------------------------- */
#define v_set1(x) V_P(set1_ps)(x)
#define v_set1i(x) V_P(set1_epi32)(x)
#define v_load(a) V_P(loadu_ps)(a)
#define v_store(a, x) V_P(storeu_ps)(a, x)
#define v_add(a, b) V_P(add_ps)(a, b)
#define v_sub(a, b) V_P(sub_ps)(a, b)
#define v_mul(a, b) V_P(mul_ps)(a, b)
#define v_div(a, b) V_P(div_ps)(a, b)
#define v_sqrt(a) V_P(sqrt_ps)(a)
#define v_addi(a, b) V_P(add_epi32)(a, b)
#define v_subi(a, b) V_P(sub_epi32)(a, b)
#define v_mulu(a, b) V_P(mullo_epi32)(a, b)
#define v_maxu(a, b) V_P(max_epu32)(a, b)
#define v_maxs(a, b) V_P(max_epi32)(a, b)
#define v_mins(a, b) V_P(min_epi32)(a, b)
#define v_srli(a, k) V_P(srli_epi32)(a, k)
#define v_srai(a, k) V_P(srai_epi32)(a, k)
#define v_slli(a, k) V_P(slli_epi32)(a, k)
#define v_set1w(x) V_P(set1_epi16)(x)
#define v_min16(a, b) V_P(min_epu16)(a, b)
#define v_subs16(a, b) V_P(subs_epu16)(a, b)
#define v_srli16(a, k) V_P(srli_epi16)(a, k)
#define v_packus32(a, b) V_P(packus_epi32)(a, b)

/* ---- AVX2 ----------------------------------------------------------------- */
#define V_W 8
#define V_F __m256
#define V_I __m256i
#define V_P(op) _mm256_##op
#define V_NAME(f) fo_v8_##f
#define V_INLINE static inline __attribute__((always_inline, target("avx2")))
#define v_xor(a, b) _mm256_xor_ps(a, b)
#define v_andi(a, b) _mm256_and_si256(a, b)
#define v_xori(a, b) _mm256_xor_si256(a, b)
#define v_asf(a) _mm256_castsi256_ps(a)
#define v_asi(a) _mm256_castps_si256(a)
#define v_iota() _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)
#define v_load_u8(a) _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(a)))
#define v_load_s8(a) _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(a)))
#define v_store_u8x4(a, x) _mm256_storeu_si256((__m256i *)(a), x)
#define v_or_and(a, b, c) _mm256_or_si256(a, _mm256_and_si256(b, c))
/* t + bit k of b (0 or 1) */
#define v_add_bit(t, b, k) v_addi(t, v_andi(v_srli(b, k), v_set1i(1)))
#define V_WORD_PERMUTE 0
/* acc = max(acc, bits of |x|), unsigned (adam_lowp_vec.h's maximum of |m|) */
#define v_absmax(acc, x) v_maxu(acc, v_andi(v_asi(x), v_set1i(0x7FFFFFFF)))
/* pass 2 interleaved with the next block's pass 1 (adam_lowp_vec.h): with
 * 16 registers the interleaved loop spilled, and ran slower (AVX2 on Zen 4,
 * in cache: 0.64 against 0.56 ns per element) */
#define V_PIPELINE 0

/* The float32 pattern of m codes c (sign-extended bytes): sign << 31 |
 * (mag + 889) << 20, or sign << 31 for mag 0. */
V_INLINE __m256i fo_v8_q8m_decode(__m256i c)
{
    __m256i x = _mm256_slli_epi32(c, 20);
    __m256i zero = _mm256_cmpeq_epi32(_mm256_and_si256(x, _mm256_set1_epi32(0x07F00000)),
                                      _mm256_setzero_si256());
    return _mm256_add_epi32(_mm256_and_si256(x, _mm256_set1_epi32((int)0x87F00000u)),
                            _mm256_andnot_si256(zero, _mm256_set1_epi32(889 << 20)));
}
#define v_q8m_decode fo_v8_q8m_decode

V_INLINE uint32_t fo_v8_hmaxu(__m256i x)
{
    __m128i y = _mm_max_epu32(_mm256_castsi256_si128(x), _mm256_extracti128_si256(x, 1));
    y = _mm_max_epu32(y, _mm_shuffle_epi32(y, 0x4E));
    y = _mm_max_epu32(y, _mm_shuffle_epi32(y, 0xB1));
    return (uint32_t)_mm_cvtsi128_si32(y);
}
#define v_hmaxu fo_v8_hmaxu

/* Bytes of 16-bit lanes x = packus32(a, b), y = packus32(c, d) (saturated
 * to [0, 255]) in the order of a, b, c, d: the packs interleave 128-bit
 * lanes, the permute puts them back. */
V_INLINE __m256i fo_v8_pack2w(__m256i x, __m256i y)
{
    return _mm256_permutevar8x32_epi32(_mm256_packus_epi16(x, y),
                                       _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}
#define v_pack2w fo_v8_pack2w

#include "adam_lowp_vec.h"

#undef V_W
#undef V_F
#undef V_I
#undef V_P
#undef V_NAME
#undef V_INLINE
#undef v_xor
#undef v_andi
#undef v_xori
#undef v_asf
#undef v_asi
#undef v_iota
#undef v_load_u8
#undef v_load_s8
#undef v_or_and
#undef v_add_bit
#undef v_hi16x2
#undef V_WORD_PERMUTE
#undef V_PIPELINE
#undef v_store_u8x4
#undef v_q8m_decode
#undef v_hmaxu
#undef v_pack2w
#undef v_absmax

/* ---- AVX-512 ---------------------------------------------------------------- */
#define V_W 16
#define V_F __m512
#define V_I __m512i
#define V_P(op) _mm512_##op
#define V_NAME(f) fo_v16_##f
#define V_INLINE static inline __attribute__((always_inline, \
    target("avx512f,avx512bw,avx512dq,avx512vl,prefer-vector-width=512")))
#define v_xor(a, b) _mm512_xor_ps(a, b)
#define v_andi(a, b) _mm512_and_si512(a, b)
#define v_xori(a, b) _mm512_xor_si512(a, b)
#define v_asf(a) _mm512_castsi512_ps(a)
#define v_asi(a) _mm512_castps_si512(a)
#define v_iota() _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
#define v_load_u8(a) _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(a)))
#define v_load_s8(a) _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(a)))
#define v_store_u8x4(a, x) _mm512_storeu_si512((void *)(a), x)
#define v_or_and(a, b, c) _mm512_ternarylogic_epi32(a, b, c, 0xF8)
/* t + bit k of b: one test into a mask and a masked add instead of a
 * shift, an and and an add (int8 nearest rounding in cache, one thread, 16384
 * elements: 0.450 against 0.467 ns per element, three runs alike) */
#define v_add_bit(t, b, k) \
    _mm512_mask_add_epi32(t, _mm512_test_epi32_mask(b, v_set1i(1 << (k))), t, v_set1i(1))
#define V_WORD_PERMUTE 1
#define V_PIPELINE 1
/* The running maximum of |m| in one instruction instead of an and and a
 * maximum (the loop is bound by its count of vector operations: 2-3% less
 * time in cache, benchmarks/lowp_big.c): VRANGEPS, imm 0x0B = the operand
 * of larger magnitude with the sign cleared.  For acc >= +0 and x not a
 * NaN that is the larger bit pattern of |x| (|+0| = |-0| give +0, an
 * infinity is the largest).  It passes over a NaN x (returns acc), which is
 * safe because such a block leaves the fast path, where the maximum is taken
 * again: a NaN m = dm * (b1*ms) + (1-b1)*g (g after the prelude) needs a NaN
 * or infinite g (then v = ... + (1-b2)*(g*g) and s are NaN or infinite), an
 * old scale ms that is not finite (such blocks are sent off the fast path
 * outright: beta1 is checked to be in [0, 1), so b1 <= 1 in float32 and
 * b1*ms is finite otherwise), or an infinite sum of
 * finite terms, which needs (1-b1)*|g| >= 2^103, half an ulp of the largest
 * float (then g*g is infinite). */
#define v_absmax(acc, x) _mm512_castps_si512(_mm512_range_ps(_mm512_castsi512_ps(acc), x, 0x0B))
/* the high 16 bits of the 32-bit lanes of a, b in packus32's lane order
 * (per 128-bit lane: 4 of a, then 4 of b), one word permute */
#define v_hi16x2(a, b) _mm512_permutex2var_epi16(a, _mm512_setr_epi32(            \
    0x00030001, 0x00070005, 0x00230021, 0x00270025, 0x000B0009, 0x000F000D,      \
    0x002B0029, 0x002F002D, 0x00130011, 0x00170015, 0x00330031, 0x00370035,      \
    0x001B0019, 0x001F001D, 0x003B0039, 0x003F003D), b)

V_INLINE __m512i fo_v16_q8m_decode(__m512i c)
{
    __m512i x = _mm512_and_si512(_mm512_slli_epi32(c, 20), _mm512_set1_epi32((int)0x87F00000u));
    return _mm512_mask_add_epi32(x, _mm512_test_epi32_mask(c, _mm512_set1_epi32(127)), x,
                                 _mm512_set1_epi32(889 << 20));
}
#define v_q8m_decode fo_v16_q8m_decode
#define v_hmaxu(x) ((uint32_t)_mm512_reduce_max_epu32(x))

V_INLINE __m512i fo_v16_pack2w(__m512i x, __m512i y)
{
    return _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13,
                                                      2, 6, 10, 14, 3, 7, 11, 15),
                                    _mm512_packus_epi16(x, y));
}
#define v_pack2w fo_v16_pack2w

#include "adam_lowp_vec.h"

#undef V_W
#undef V_F
#undef V_I
#undef V_P
#undef V_NAME
#undef V_INLINE
#undef v_xor
#undef v_andi
#undef v_xori
#undef v_asf
#undef v_asi
#undef v_iota
#undef v_load_u8
#undef v_load_s8
#undef v_or_and
#undef v_add_bit
#undef v_hi16x2
#undef V_WORD_PERMUTE
#undef V_PIPELINE
#undef v_store_u8x4
#undef v_q8m_decode
#undef v_hmaxu
#undef v_pack2w
#undef v_absmax

#endif
