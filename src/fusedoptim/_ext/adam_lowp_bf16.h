/* Adam with bfloat16 moments, rounded to nearest, for CPUs with AVX512_BF16
 * (fo_adam_bf16_avx512bf, chosen by fo_lowp_isa() == 3): the element loop of
 * fo_adam_bf16_body written with explicit 512-bit vectors, 32 elements per
 * iteration.  Included by adam_lowp.h on x86-64 with GCC or Clang only.
 *
 * Why: GCC's vectorization of the scalar body spends about 15 integer
 * operations per 32 elements and moment on the encoding (nearest-even
 * rounding bits, the NaN blend, a word permute) and a load, an extract and a
 * widening for every second 16 bfloat16 words.  VCVTNE2PS2BF16 rounds 32
 * float32 to nearest even in one instruction, in the words' order, and gives
 * the scalar encoding's bits for every float32 but two kinds, which it
 * handles otherwise: a subnormal (it flushes the input to zero, whatever
 * MXCSR says) and a NaN (it keeps sign and payload; fo_bf16_encode stores
 * 0x7FC0).  VFPCLASSPS finds both; 32 elements with either take the integer
 * encoding (fo_bf16_encode), every other float32 x is normal, zero or
 * infinite, whose nearest-even bfloat16 is (bits + 0x7FFF + lsb) >> 16 as
 * the instruction rounds it (an overflow to infinity included).
 *
 * The update's float operations are the scalar body's, in its order, one
 * IEEE-rounded instruction each (no "fma" in the target), so the bits are
 * the reference's.  Prefetching: as Adam's float32 loop (adam_avx2.h) the
 * square root and division fill the out-of-order window, and the hardware
 * prefetchers alone leave memory idle part of the time.
 */
#ifndef FUSEDOPTIM_ADAM_LOWP_BF16_H
#define FUSEDOPTIM_ADAM_LOWP_BF16_H

#define FO_BF16_ATTR __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16," \
                                               "prefer-vector-width=512")))
#define FO_BF16_INLINE static inline __attribute__((always_inline)) FO_BF16_ATTR

/* Elements ahead of the loop that the prefetches ask for (a multiple of 32).
 * Measured with benchmarks/lowp_big.c (2^24 elements, 2 threads, Zen 5 VM
 * shared with other work, three runs each, time of this loop / the AVX-512
 * build's): 64 ahead 0.86-0.91, 128 0.90-0.95, 256 0.92-0.95, no prefetch
 * 0.92-0.93. */
#ifndef FO_BF16_PREFETCH
#define FO_BF16_PREFETCH 64
#endif

/* 16 bfloat16 words -> float32 (exact). */
FO_BF16_INLINE __m512 fo_bf_load(const uint16_t *w)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(
        _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)w)), 16));
}

/* The words of 32 float32 (lo, hi) by fo_bf16_encode with nearest-even bits
 * (the rare path: some lane is subnormal or NaN). */
static FO_BF16_ATTR __attribute__((noinline)) void fo_bf_encode_slow(__m512 lo, __m512 hi,
                                                                   uint16_t *w)
{
    float x[32];
    _mm512_storeu_ps(x, lo);
    _mm512_storeu_ps(x + 16, hi);
    fo_bf16_encode_nearest(x, w, 32);
}

/* One 16-lane half of an iteration: the update of m, v and p. */
FO_BF16_INLINE void fo_bf_update(float *restrict p, const float *restrict g,
                                 const uint16_t *restrict m, const uint16_t *restrict v,
                                 __m512 b1, __m512 omb1, __m512 b2, __m512 omb2, __m512 es,
                                 __m512 alr, __m512 gs, __m512 wd, __m512 shrink,
                                 __m512 *mi, __m512 *vi, FO_FLAG_ARGS)
{
    __m512 pi = _mm512_loadu_ps(p), gi = _mm512_loadu_ps(g);
    __m512 m0 = fo_bf_load(m), v0 = fo_bf_load(v);
    (void)sto;
    if (f_scale) gi = _mm512_mul_ps(gi, gs);
    if (f_max) gi = _mm512_xor_ps(gi, _mm512_set1_ps(-0.0f));
    if (f_l2) gi = _mm512_add_ps(gi, _mm512_mul_ps(wd, pi));
    if (f_shrink) pi = _mm512_mul_ps(pi, shrink);
    *mi = _mm512_add_ps(_mm512_mul_ps(b1, m0), _mm512_mul_ps(omb1, gi));
    *vi = _mm512_add_ps(_mm512_mul_ps(b2, v0), _mm512_mul_ps(omb2, _mm512_mul_ps(gi, gi)));
    _mm512_storeu_ps(p, _mm512_sub_ps(pi, _mm512_div_ps(_mm512_mul_ps(alr, *mi),
                                                        _mm512_add_ps(_mm512_sqrt_ps(*vi), es))));
}

/* fo_adam_bf16_body with nearest rounding (sto must be 0). */
FO_BF16_INLINE void fo_bf_body(const fo_lowp_args *A, float *restrict p,
                               const float *restrict g, uint16_t *restrict m,
                               uint16_t *restrict v, ptrdiff_t n, ptrdiff_t idx0, FO_FLAG_ARGS)
{
    const __m512 b1 = _mm512_set1_ps(A->b1), omb1 = _mm512_set1_ps(A->omb1);
    const __m512 b2 = _mm512_set1_ps(A->b2), omb2 = _mm512_set1_ps(A->omb2);
    const __m512 es = _mm512_set1_ps(A->es), alr = _mm512_set1_ps(A->alr);
    const __m512 gs = _mm512_set1_ps(A->gs), wd = _mm512_set1_ps(A->wd);
    const __m512 shrink = _mm512_set1_ps(A->shrink);
    ptrdiff_t i;
    int q;
    for (i = 0; i + 32 <= n; i += 32) {
        __m512 ma, mb, va, vb;
        __mmask16 odd;
        if (i + FO_BF16_PREFETCH + 32 <= n) {
            for (q = 0; q < 128; q += 64) {
                _mm_prefetch((const char *)(p + i + FO_BF16_PREFETCH) + q, _MM_HINT_T0);
                _mm_prefetch((const char *)(g + i + FO_BF16_PREFETCH) + q, _MM_HINT_T0);
            }
            _mm_prefetch((const char *)(m + i + FO_BF16_PREFETCH), _MM_HINT_T0);
            _mm_prefetch((const char *)(v + i + FO_BF16_PREFETCH), _MM_HINT_T0);
        }
        fo_bf_update(p + i, g + i, m + i, v + i, b1, omb1, b2, omb2, es, alr, gs, wd, shrink,
                     &ma, &va, f_scale, f_max, f_l2, f_shrink, sto);
        fo_bf_update(p + i + 16, g + i + 16, m + i + 16, v + i + 16, b1, omb1, b2, omb2, es,
                     alr, gs, wd, shrink, &mb, &vb, f_scale, f_max, f_l2, f_shrink, sto);
        /* 0xA1: a quiet or signalling NaN or a subnormal */
        odd = _mm512_fpclass_ps_mask(ma, 0xA1) | _mm512_fpclass_ps_mask(mb, 0xA1)
              | _mm512_fpclass_ps_mask(va, 0xA1) | _mm512_fpclass_ps_mask(vb, 0xA1);
        if (__builtin_expect(odd == 0, 1)) {
            _mm512_storeu_si512((void *)(m + i), (__m512i)_mm512_cvtne2ps_pbh(mb, ma));
            _mm512_storeu_si512((void *)(v + i), (__m512i)_mm512_cvtne2ps_pbh(vb, va));
        } else {
            fo_bf_encode_slow(ma, mb, m + i);
            fo_bf_encode_slow(va, vb, v + i);
        }
    }
    if (i < n)
        fo_adam_bf16_body(A, p + i, g + i, m + i, v + i, n - i, idx0 + i, f_scale, f_max,
                          f_l2, f_shrink, sto);
}

#define FO_BF_CALL(...) fo_bf_body(A, p, g, m, v, n, idx0, __VA_ARGS__)

/* fo_adam_bf16_avx512 with the nearest rounding done by VCVTNE2PS2BF16;
 * stochastic rounding is the AVX-512 build's. */
static FO_BF16_ATTR void fo_adam_bf16_avx512bf(const fo_lowp_args *A, float *p,
                                               const float *g, uint16_t *m, uint16_t *v,
                                               ptrdiff_t n, ptrdiff_t idx0)
{
    if (A->stochastic)
        fo_adam_bf16_avx512(A, p, g, m, v, n, idx0);
    else if (A->scale || A->maximize || A->l2)
        FO_BF_CALL(A->scale, A->maximize, A->l2, A->shrink_p, 0);
    else if (A->shrink_p)
        FO_BF_CALL(0, 0, 0, 1, 0);
    else
        FO_BF_CALL(0, 0, 0, 0, 0);
}

#endif
