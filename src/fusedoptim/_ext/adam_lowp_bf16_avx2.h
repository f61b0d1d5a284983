/* The AVX2 build of fo_adam_bf16_body (adam_lowp.h) with round-to-nearest
 * written with explicit vectors; stochastic rounding, the last partial
 * block and any 16 elements holding a NaN take the scalar body.
 *
 * Why: GCC vectorizes the scalar body, but spells its NaN select (a NaN is
 * stored as 0x7FC0) with compares, masks packed to 16 bits, permutes and a
 * byte blend for every 16 elements, and AVX2 (unlike AVX-512, whose loop
 * runs VCVTNE2PS2BF16 on CPUs that have it, adam_lowp_bf16.h) has no
 * instruction for the rounding: in cache (16,384 elements, one thread, the
 * Zen 4 VM with AVX2 only) the step took 0.84-0.85 ns per element, 0.71
 * without the select and 0.54 without the rounding.  Here one unordered
 * compare tests m and v together, a whole block of 16 takes the select only
 * when it holds a NaN, and the rounding (bits + 0x7FFF + lsb) >> 16 is
 * five integer operations per 8 values, packed with one pack and one
 * permute.  Every float operation is the scalar body's, in its order, one
 * IEEE-rounded instruction each (the target has no "fma"); the integer
 * rounding is the scalar one's; so the bits are the reference's
 * (tests/test_lowp_isa.py, tests/test_lowp_nan.py).
 */
#ifndef FUSEDOPTIM_ADAM_LOWP_BF16_AVX2_H
#define FUSEDOPTIM_ADAM_LOWP_BF16_AVX2_H

#define FO_V8BF_INLINE static inline __attribute__((always_inline, target("avx2")))

/* Elements ahead of the loop that it prefetches (a multiple of 32: the
 * moments' 64-byte lines are asked for every second iteration).  Why: as in
 * Adam's float32 loop (adam_avx2.h) the square root and division fill the
 * out-of-order window, and the hardware prefetchers alone leave memory idle
 * part of the time.  Measured with an AVX2 build of benchmarks/lowp_big.c
 * (2^24 elements, 2 threads, the Zen 4 VM with AVX2 only, shared; three
 * runs of 7 rounds, time / float32 Adam's): 64 ahead 0.835, 0.794, 0.816;
 * 128 0.836, 0.798, 0.824; 256 0.853, 0.818, 0.844; no prefetch 0.864,
 * 0.854, 0.845 (the copy of the bfloat16 layout's traffic 0.72, 0.67, 0.70). */
#ifndef FO_V8BF_PREFETCH
#define FO_V8BF_PREFETCH 64
#endif

/* 8 bfloat16 words at w as float32 (exact). */
FO_V8BF_INLINE __m256 fo_v8bf_load(const uint16_t *w)
{
    __m128i x = _mm_loadu_si128((const __m128i *)w);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(x), 16));
}

/* fo_bf16_encode's word of 8 values that are not NaN, nearest rounding:
 * (bits + 0x7FFF + bit 16 of bits) >> 16, in 32-bit lanes. */
FO_V8BF_INLINE __m256i fo_v8bf_round(__m256 x)
{
    __m256i b = _mm256_castps_si256(x);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
    return _mm256_srli_epi32(_mm256_add_epi32(b, _mm256_add_epi32(_mm256_set1_epi32(0x7FFF),
                                                                  lsb)), 16);
}

/* The words of 16 values (lo: elements 0-7, hi: 8-15, each <= 0xFFFF in
 * its 32-bit lane) stored at w: the pack interleaves 128-bit lanes, the
 * permute puts them back in order. */
FO_V8BF_INLINE void fo_v8bf_store(uint16_t *w, __m256i lo, __m256i hi)
{
    _mm256_storeu_si256((__m256i *)w,
                        _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, hi), 0xD8));
}

/* 8 elements of the update: p written, the new m and v returned. */
FO_V8BF_INLINE void fo_v8bf_update(float *restrict p, const float *restrict g,
                                   const uint16_t *restrict m, const uint16_t *restrict v,
                                   const fo_lowp_args *A, __m256 *mi, __m256 *vi,
                                   FO_FLAG_ARGS)
{
    __m256 pi = _mm256_loadu_ps(p), gi = _mm256_loadu_ps(g);
    __m256 m0 = fo_v8bf_load(m), v0 = fo_v8bf_load(v);
    (void)sto;
    if (f_scale) gi = _mm256_mul_ps(gi, _mm256_set1_ps(A->gs));
    if (f_max) gi = _mm256_xor_ps(gi, _mm256_set1_ps(-0.0f));
    if (f_l2) gi = _mm256_add_ps(gi, _mm256_mul_ps(_mm256_set1_ps(A->wd), pi));
    if (f_shrink) pi = _mm256_mul_ps(pi, _mm256_set1_ps(A->shrink));
    *mi = _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(A->b1), m0),
                        _mm256_mul_ps(_mm256_set1_ps(A->omb1), gi));
    *vi = _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(A->b2), v0),
                        _mm256_mul_ps(_mm256_set1_ps(A->omb2), _mm256_mul_ps(gi, gi)));
    _mm256_storeu_ps(p, _mm256_sub_ps(pi, _mm256_div_ps(
        _mm256_mul_ps(_mm256_set1_ps(A->alr), *mi),
        _mm256_add_ps(_mm256_sqrt_ps(*vi), _mm256_set1_ps(A->es)))));
}

/* fo_adam_bf16_body for the AVX2 build. */
FO_V8BF_INLINE void fo_v8_bf16_body(const fo_lowp_args *A, float *restrict p,
                                    const float *restrict g, uint16_t *restrict m,
                                    uint16_t *restrict v, ptrdiff_t n, ptrdiff_t idx0,
                                    FO_FLAG_ARGS)
{
    ptrdiff_t i;
    if (sto) {
        fo_adam_bf16_body(A, p, g, m, v, n, idx0, f_scale, f_max, f_l2, f_shrink, 1);
        return;
    }
    for (i = 0; i + 16 <= n; i += 16) {
        __m256 ma, mb, va, vb, nan;
        if (i + FO_V8BF_PREFETCH + 16 <= n) {
            __builtin_prefetch(p + i + FO_V8BF_PREFETCH, 1, 3);
            __builtin_prefetch(g + i + FO_V8BF_PREFETCH, 0, 3);
            if ((i & 16) == 0) {
                __builtin_prefetch(m + i + FO_V8BF_PREFETCH, 1, 3);
                __builtin_prefetch(v + i + FO_V8BF_PREFETCH, 1, 3);
            }
        }
        fo_v8bf_update(p + i, g + i, m + i, v + i, A, &ma, &va, f_scale, f_max, f_l2,
                       f_shrink, 0);
        fo_v8bf_update(p + i + 8, g + i + 8, m + i + 8, v + i + 8, A, &mb, &vb, f_scale,
                       f_max, f_l2, f_shrink, 0);
        nan = _mm256_or_ps(_mm256_cmp_ps(ma, va, _CMP_UNORD_Q),
                           _mm256_cmp_ps(mb, vb, _CMP_UNORD_Q));
        if (__builtin_expect(_mm256_testz_ps(nan, nan), 1)) {
            fo_v8bf_store(m + i, fo_v8bf_round(ma), fo_v8bf_round(mb));
            fo_v8bf_store(v + i, fo_v8bf_round(va), fo_v8bf_round(vb));
        } else {
            float t[32];
            _mm256_storeu_ps(t, ma);
            _mm256_storeu_ps(t + 8, mb);
            _mm256_storeu_ps(t + 16, va);
            _mm256_storeu_ps(t + 24, vb);
            fo_bf16_encode_nearest(t, m + i, 16);
            fo_bf16_encode_nearest(t + 16, v + i, 16);
        }
    }
    if (i < n)
        fo_adam_bf16_body(A, p + i, g + i, m + i, v + i, n - i, idx0 + i, f_scale, f_max,
                          f_l2, f_shrink, 0);
}

#endif
