/* AVX2 and AVX-512 builds of lamb.pyx's fast-path loops (see avx2.h): the
 * first pass (moments, direction, the blocks' lane sums of squares) without
 * gradient prelude, and the second pass (direction again, parameter
 * update).  The direction is computed by the same operations in both and in
 * the Cython loops; m / c1 is adam_avx2.h's FO_DIV_C1 (correctly rounded),
 * or the division where that measured faster.  The float32 first pass is
 * written with intrinsics (fo_lamb1_simd_f32, below); the C loops before it
 * are the float64 one's. */
#ifndef FUSEDOPTIM_LAMB_AVX2_H
#define FUSEDOPTIM_LAMB_AVX2_H

#include "avx2.h"

#if FO_SIMD_AVX2

/* The float64 first pass prefetches its streams FO_LAMB_PREFETCH elements
 * ahead (the float32 one FO_LAMB1V_AHEAD, the second FO_LAMB2_PREFETCH),
 * as adam_avx2.h does and for the same reason (their arithmetic, two
 * divisions and a square root per element in each pass, fills the
 * out-of-order window); lim is the number of elements of the tensor from
 * the range's start, so that the addresses stay inside the arrays and the
 * first pass prefetches across its 4096-element blocks. */
#ifndef FO_LAMB_PREFETCH
#define FO_LAMB_PREFETCH 256
#endif

#define FO_LAMB_DIV_C1_F32(x) ((float)((double)(x) * rc1))
#define FO_LAMB_DIV_C1_F64(x) ((x) / c1)

/* u of element k from the new mi, vi and the parameter pi. */
#define FO_LAMB_DIR(DIV_C1, SQRT, DECAY, mi, vi, pi)                           \
    (DECAY ? DIV_C1(mi) / (SQRT((vi) / c2) + e) + wd * (pi)                    \
           : DIV_C1(mi) / (SQRT((vi) / c2) + e))

/* Sum of squares of x[0 .. n) in float64, element i in lane i % 8 (n <= 4096,
 * from a multiple of 8), into acc[8]. */
#define FO_LAMB_LANES(T, x, acc)                                               \
    do {                                                                       \
        ptrdiff_t i, k, full = n - n % 8;                                      \
        double y;                                                              \
        for (k = 0; k < 8; k++)                                                \
            acc[k] = 0.0;                                                      \
        for (i = 0; i < full; i += 8)                                          \
            for (k = 0; k < 8; k++) {                                          \
                y = (double)x[i + k];                                          \
                acc[k] = acc[k] + y * y;                                       \
            }                                                                  \
        for (k = 0; k < n - full; k++) {                                       \
            y = (double)x[full + k];                                           \
            acc[k] = acc[k] + y * y;                                           \
        }                                                                      \
    } while (0)

/* The update of element i + k of the block (i + k < n) into m, v and its
 * direction into ub[k]. */
#define FO_LAMB1_ELEMENT(T, SQRT, DIV_C1, DECAY, i, k)                         \
    do {                                                                       \
        /* Every load before any store (_LOADS_FIRST). */                      \
        T pi = p[i + k], m0 = m[i + k], v0 = v[i + k], gi = g[i + k], mi, vi;  \
        mi = b1 * m0 + omb1 * gi;                                              \
        vi = b2 * v0 + omb2 * (gi * gi);                                       \
        m[i + k] = mi;                                                         \
        v[i + k] = vi;                                                         \
        ub[k] = FO_LAMB_DIR(DIV_C1, SQRT, DECAY, mi, vi, pi);                  \
    } while (0)

/* One block (n <= 4096 elements): the update into m, v and the block's
 * direction into ub (on the stack, in L1), then the lane sums of p and ub
 * as _loops._lanes_total combines them.  Why apart: with the lane sums in
 * the update's loop GCC vectorized neither (8.5x slower).  The AVX2 shape. */
#define FO_LAMB1_RANGE(T, SQRT, DIV_C1, DECAY)                                 \
    do {                                                                       \
        T ub[4096];                                                            \
        double ap[8], au[8];                                                   \
        ptrdiff_t i;                                                           \
        ptrdiff_t k;                                                           \
        for (i = 0; i < n; i += 16) {                                          \
            ptrdiff_t end = i + 16 < n ? i + 16 : n;                           \
            if (i + FO_LAMB_PREFETCH < lim) {                                  \
                __builtin_prefetch(p + i + FO_LAMB_PREFETCH, 0, 3);            \
                __builtin_prefetch(g + i + FO_LAMB_PREFETCH, 0, 3);            \
                __builtin_prefetch(m + i + FO_LAMB_PREFETCH, 1, 3);            \
                __builtin_prefetch(v + i + FO_LAMB_PREFETCH, 1, 3);            \
            }                                                                  \
            for (k = i; k < end; k++)                                          \
                FO_LAMB1_ELEMENT(T, SQRT, DIV_C1, DECAY, 0, k);                \
        }                                                                      \
        FO_LAMB_LANES(T, p, ap);                                               \
        FO_LAMB_LANES(T, ub, au);                                              \
        out[0] = ((ap[0] + ap[1]) + (ap[2] + ap[3]))                           \
                 + ((ap[4] + ap[5]) + (ap[6] + ap[7]));                        \
        out[1] = ((au[0] + au[1]) + (au[2] + au[3]))                           \
                 + ((au[4] + au[5]) + (au[6] + au[7]));                        \
    } while (0)

/* The AVX-512 shape of FO_LAMB1_RANGE: the block in chunks of
 * FO_LAMB_CHUNK elements, each chunk's update (directions into ub) followed
 * by its squares of p and ub added to the lane sums (element k of the block
 * to lane k % 8, each lane in element order: the same additions in the same
 * order as FO_LAMB_LANES and _loops._block_sumsq).  Why: each lane sum is a
 * chain of 512 dependent additions per block; after the whole block's
 * update they run alone, after each chunk they overlap the next chunk's
 * divisions and square roots.  Measured in L2 (2^15 float32 elements, 1
 * thread, Zen4, fastest of 300 calls in each of 4 processes): the first
 * pass 0.582 ns per element in the block shape, 0.528 in chunks of 64
 * (32: 0.57, 128: 0.59 with the sums as vector types); the AVX2 build
 * measured the other way round, 0.620 in the block shape against 0.683 in
 * chunks, so it keeps the block shape. */
#define FO_LAMB_CHUNK 64
#define FO_LAMB1_CHUNKED(T, SQRT, DIV_C1, DECAY)                               \
    do {                                                                       \
        T ub[FO_LAMB_CHUNK];                                                   \
        double ap[8] = {0.0}, au[8] = {0.0}, y, z;                             \
        ptrdiff_t i, j, k;                                                     \
        for (i = 0; i < n; i += FO_LAMB_CHUNK) {                               \
            const ptrdiff_t len = n - i < FO_LAMB_CHUNK ? n - i                \
                                                        : FO_LAMB_CHUNK;       \
            for (j = 0; j < FO_LAMB_CHUNK; j += 64 / (ptrdiff_t)sizeof(T))     \
                if (i + j + FO_LAMB_PREFETCH < lim) {                          \
                    __builtin_prefetch(p + i + j + FO_LAMB_PREFETCH, 0, 3);    \
                    __builtin_prefetch(g + i + j + FO_LAMB_PREFETCH, 0, 3);    \
                    __builtin_prefetch(m + i + j + FO_LAMB_PREFETCH, 1, 3);    \
                    __builtin_prefetch(v + i + j + FO_LAMB_PREFETCH, 1, 3);    \
                }                                                              \
            for (k = 0; k < len; k++)                                          \
                FO_LAMB1_ELEMENT(T, SQRT, DIV_C1, DECAY, i, k);                \
            if (len == FO_LAMB_CHUNK) {                                        \
                for (j = 0; j < FO_LAMB_CHUNK; j += 8)                         \
                    for (k = 0; k < 8; k++) {                                  \
                        y = (double)p[i + j + k];                              \
                        z = (double)ub[j + k];                                 \
                        ap[k] = ap[k] + y * y;                                 \
                        au[k] = au[k] + z * z;                                 \
                    }                                                          \
            } else {                                                           \
                /* the block's last chunk (i is a multiple of 8) */            \
                for (k = 0; k < len; k++) {                                    \
                    y = (double)p[i + k];                                      \
                    z = (double)ub[k];                                         \
                    ap[k % 8] = ap[k % 8] + y * y;                             \
                    au[k % 8] = au[k % 8] + z * z;                             \
                }                                                              \
            }                                                                  \
        }                                                                      \
        out[0] = ((ap[0] + ap[1]) + (ap[2] + ap[3]))                           \
                 + ((ap[4] + ap[5]) + (ap[6] + ap[7]));                        \
        out[1] = ((au[0] + au[1]) + (au[2] + au[3]))                           \
                 + ((au[4] + au[5]) + (au[6] + au[7]));                        \
    } while (0)

#define FO_LAMB1_LOOP(NAME, T, SQRT, DIV_C1)                                   \
    FO_BODY void NAME##_body(const int isa, const T *restrict p,               \
                             const T *restrict g, T *restrict m,               \
                             T *restrict v, ptrdiff_t n, T b1, T omb1, T b2,   \
                             T omb2, T e, T c1, T c2, double rc1, T wd,        \
                             int decay, double *out, ptrdiff_t lim)            \
    {                                                                          \
        if (isa == FO_ISA_AVX512 && decay)                                     \
            FO_LAMB1_CHUNKED(T, SQRT, DIV_C1, 1);                              \
        else if (isa == FO_ISA_AVX512)                                         \
            FO_LAMB1_CHUNKED(T, SQRT, DIV_C1, 0);                              \
        else if (decay)                                                        \
            FO_LAMB1_RANGE(T, SQRT, DIV_C1, 1);                                \
        else                                                                   \
            FO_LAMB1_RANGE(T, SQRT, DIV_C1, 0);                                \
    }                                                                          \
    FO_SIMD_BUILD_ISA(NAME, (const T *restrict p, const T *restrict g,         \
        T *restrict m, T *restrict v, ptrdiff_t n, T b1, T omb1, T b2,         \
        T omb2, T e, T c1, T c2, double rc1, T wd, int decay, double *out,     \
        ptrdiff_t lim), (p, g, m, v, n, b1, omb1, b2, omb2, e, c1, c2, rc1,    \
        wd, decay, out, lim))

/* The second pass prefetches 128 elements ahead: measured at 2^24 float32,
 * 2 threads (as benchmarks/loops_big.c measures, but with the four arrays
 * 1024 bytes apart modulo a page; median of 7, three interleaved runs,
 * load average 6), 4.2-4.3 ms against 4.9-5.1 at 256 in the AVX-512 build,
 * 4.2-4.5 against 5.0-5.4 in the AVX2 one; the first pass's old C loops
 * measured better at 256 (AVX-512: 5.95-6.15 ms against 6.1-7.0), as
 * Adam's loop did on Zen1 (adam_avx2.h). */
#ifndef FO_LAMB2_PREFETCH
#define FO_LAMB2_PREFETCH 128
#endif
#define FO_LAMB2_RANGE(T, SQRT, DIV_C1, DECAY)                                 \
    do {                                                                       \
        ptrdiff_t i, k;                                                        \
        for (i = 0; i < n; i += 16) {                                          \
            ptrdiff_t end = i + 16 < n ? i + 16 : n;                           \
            if (i + FO_LAMB2_PREFETCH < lim) {                                 \
                __builtin_prefetch(p + i + FO_LAMB2_PREFETCH, 1, 3);           \
                __builtin_prefetch(m + i + FO_LAMB2_PREFETCH, 0, 3);           \
                __builtin_prefetch(v + i + FO_LAMB2_PREFETCH, 0, 3);           \
            }                                                                  \
            for (k = i; k < end; k++) {                                        \
                T pi = p[k], mi = m[k], vi = v[k];                             \
                p[k] = pi - s * FO_LAMB_DIR(DIV_C1, SQRT, DECAY, mi, vi, pi);  \
            }                                                                  \
        }                                                                      \
    } while (0)

#define FO_LAMB2_LOOP(NAME, T, SQRT, DIV_C1)                                   \
    FO_BODY void NAME##_body(T *restrict p, const T *restrict m,               \
                             const T *restrict v, ptrdiff_t n, T s, T e,       \
                             T c1, T c2, double rc1, T wd, int decay,          \
                             ptrdiff_t lim)                                    \
    {                                                                          \
        if (decay)                                                             \
            FO_LAMB2_RANGE(T, SQRT, DIV_C1, 1);                                \
        else                                                                   \
            FO_LAMB2_RANGE(T, SQRT, DIV_C1, 0);                                \
    }                                                                          \
    FO_SIMD_BUILD(NAME, (T *restrict p, const T *restrict m,                   \
        const T *restrict v, ptrdiff_t n, T s, T e, T c1, T c2, double rc1,    \
        T wd, int decay, ptrdiff_t lim), (p, m, v, n, s, e, c1, c2, rc1, wd,   \
        decay, lim))

/* The float32 first pass, written with intrinsics: the lane sums of
 * squares accumulate in registers inside the update's loop, with no block
 * buffer.  Why: the C loops above need the directions in a buffer and the
 * sums in loops of their own (GCC vectorizes neither when they share the
 * update's loop), and each lane sum is a chain of 512 dependent additions
 * per block: run after the update (FO_LAMB1_RANGE), the chains cost 0.2 ns
 * per element in cache (AVX2: 0.62 against 0.415 without them) and leave
 * memory idle meanwhile; run in chunks (FO_LAMB1_CHUNKED), the buffer's
 * stores and reloads and their conversions keep the AVX-512 pass at 0.53.
 * Here each 8-element group's squares are added to the lane sums as soon
 * as its direction is known: element i of the block to lane i % 8, each
 * lane in element order (the AVX2 build holds lanes 0-3 and 4-7 in two
 * registers; the AVX-512 build adds a 16-element group's low then high
 * half to its one register), the same additions in the same order as
 * FO_LAMB_LANES and _loops._block_sumsq.  The arithmetic of each element is
 * FO_LAMB1_ELEMENT's, operation for operation, but m / c1 is the division
 * itself (the same bits as FO_LAMB_DIV_C1_F32, see adam_avx2.h): this
 * pass's conversions to double (the squares) already keep the conversion
 * and addition pipes the busiest, and moving m / c1 there measured slower
 * than leaving it to the divider (in L2, 2^13 elements, 1 thread, Zen4:
 * AVX2 0.545 ns per element against 0.582, AVX-512 0.50-0.53 against
 * 0.51-0.54); the second pass, which the divider limits, keeps the
 * conversions.  Measured the same way: the old AVX2 shape 0.62, the old
 * AVX-512 shape 0.53-0.54. */
#include <immintrin.h>

/* The last n % step elements of a block from element i: the scalar
 * element and the lane sums in ap, au (the tail of a tensor's last block,
 * i a multiple of 8). */
#define FO_LAMB1V_TAIL(DECAY)                                                  \
    do {                                                                       \
        ptrdiff_t k;                                                           \
        double y, z;                                                           \
        for (k = i; k < n; k++) {                                              \
            float pi = p[k], m0 = m[k], v0 = v[k], gi = g[k], mi, vi, ui;      \
            mi = b1 * m0 + omb1 * gi;                                          \
            vi = b2 * v0 + omb2 * (gi * gi);                                   \
            m[k] = mi;                                                         \
            v[k] = vi;                                                         \
            ui = FO_LAMB_DIR(FO_LAMB_DIV_C1_F32, sqrtf, DECAY, mi, vi, pi);    \
            y = (double)pi;                                                    \
            z = (double)ui;                                                    \
            ap[k & 7] = ap[k & 7] + y * y;                                     \
            au[k & 7] = au[k & 7] + z * z;                                     \
        }                                                                      \
    } while (0)

/* The float32 first pass prefetches its streams FO_LAMB1V_AHEAD elements
 * ahead (512 bytes), not FO_LAMB_PREFETCH.  Measured at 2^24 elements, 1
 * thread, with the arrays placed as benchmarks/loops_big.c places them (each
 * pass's CPU time, median of 11 rounds, every distance interleaved in each
 * round, two runs, shared machine at load 3.8): AVX-512 9.93-9.99 ms at
 * 128 against 11.0-11.2 at 256 and 10.2-10.4 without prefetching (the copy
 * of the same traffic 9.3-10.1); AVX2 11.2-11.3 against 12.6-12.8 (64:
 * 11.0). */
#ifndef FO_LAMB1V_AHEAD
#define FO_LAMB1V_AHEAD 128
#endif
#define FO_LAMB1V_PREFETCH(i)                                                  \
    do {                                                                       \
        if ((i) + FO_LAMB1V_AHEAD < lim) {                                     \
            __builtin_prefetch(p + (i) + FO_LAMB1V_AHEAD, 0, 3);               \
            __builtin_prefetch(g + (i) + FO_LAMB1V_AHEAD, 0, 3);               \
            __builtin_prefetch(m + (i) + FO_LAMB1V_AHEAD, 1, 3);               \
            __builtin_prefetch(v + (i) + FO_LAMB1V_AHEAD, 1, 3);               \
        }                                                                      \
    } while (0)

#define FO_LAMB1V_SUMS()                                                       \
    do {                                                                       \
        out[0] = ((ap[0] + ap[1]) + (ap[2] + ap[3]))                           \
                 + ((ap[4] + ap[5]) + (ap[6] + ap[7]));                        \
        out[1] = ((au[0] + au[1]) + (au[2] + au[3]))                           \
                 + ((au[4] + au[5]) + (au[6] + au[7]));                        \
    } while (0)

/* 8 elements from i: the update, and their squares into the lane sums
 * (pl/ph: lanes 0-3 and 4-7 of p, ul/uh of the direction). */
#define FO_LAMB1V_GROUP8(DECAY, i)                                             \
    do {                                                                       \
        __m256 pi = _mm256_loadu_ps(p + (i)), m0 = _mm256_loadu_ps(m + (i));   \
        __m256 v0 = _mm256_loadu_ps(v + (i)), gi = _mm256_loadu_ps(g + (i));   \
        __m256 mi, vi, a, u;                                                   \
        __m256d y;                                                             \
        mi = _mm256_add_ps(_mm256_mul_ps(vb1, m0), _mm256_mul_ps(vomb1, gi));  \
        vi = _mm256_add_ps(_mm256_mul_ps(vb2, v0),                             \
                           _mm256_mul_ps(vomb2, _mm256_mul_ps(gi, gi)));       \
        _mm256_storeu_ps(m + (i), mi);                                         \
        _mm256_storeu_ps(v + (i), vi);                                         \
        a = _mm256_div_ps(mi, vc1);                                            \
        u = _mm256_div_ps(a, _mm256_add_ps(                                    \
                _mm256_sqrt_ps(_mm256_div_ps(vi, vc2)), ve));                  \
        if (DECAY)                                                             \
            u = _mm256_add_ps(u, _mm256_mul_ps(vwd, pi));                      \
        y = _mm256_cvtps_pd(_mm256_castps256_ps128(pi));                       \
        pl = _mm256_add_pd(pl, _mm256_mul_pd(y, y));                           \
        y = _mm256_cvtps_pd(_mm256_extractf128_ps(pi, 1));                     \
        ph = _mm256_add_pd(ph, _mm256_mul_pd(y, y));                           \
        y = _mm256_cvtps_pd(_mm256_castps256_ps128(u));                        \
        ul = _mm256_add_pd(ul, _mm256_mul_pd(y, y));                           \
        y = _mm256_cvtps_pd(_mm256_extractf128_ps(u, 1));                      \
        uh = _mm256_add_pd(uh, _mm256_mul_pd(y, y));                           \
    } while (0)

static FO_AVX2 inline __attribute__((always_inline)) void fo_lamb1v_f32_avx2_body(
    const float *restrict p, const float *restrict g, float *restrict m,
    float *restrict v, ptrdiff_t n, float b1, float omb1, float b2, float omb2,
    float e, float c1, float c2, double rc1, float wd, const int DECAY,
    double *out, ptrdiff_t lim)
{
    const __m256 vb1 = _mm256_set1_ps(b1), vomb1 = _mm256_set1_ps(omb1);
    const __m256 vb2 = _mm256_set1_ps(b2), vomb2 = _mm256_set1_ps(omb2);
    const __m256 vc2 = _mm256_set1_ps(c2), ve = _mm256_set1_ps(e);
    const __m256 vc1 = _mm256_set1_ps(c1);
    const __m256 vwd = _mm256_set1_ps(wd);
    __m256d pl = _mm256_setzero_pd(), ph = _mm256_setzero_pd();
    __m256d ul = _mm256_setzero_pd(), uh = _mm256_setzero_pd();
    double ap[8], au[8];
    ptrdiff_t i;
    for (i = 0; i + 16 <= n; i += 16) {
        FO_LAMB1V_PREFETCH(i);
        FO_LAMB1V_GROUP8(DECAY, i);
        FO_LAMB1V_GROUP8(DECAY, i + 8);
    }
    _mm256_storeu_pd(ap, pl);
    _mm256_storeu_pd(ap + 4, ph);
    _mm256_storeu_pd(au, ul);
    _mm256_storeu_pd(au + 4, uh);
    FO_LAMB1V_TAIL(DECAY);
    FO_LAMB1V_SUMS();
}

/* The AVX-512 build: 16 elements from i, the low half's squares added to
 * the lane sums before the high half's. */
static FO_AVX512 inline __attribute__((always_inline)) void fo_lamb1v_f32_avx512_body(
    const float *restrict p, const float *restrict g, float *restrict m,
    float *restrict v, ptrdiff_t n, float b1, float omb1, float b2, float omb2,
    float e, float c1, float c2, double rc1, float wd, const int DECAY,
    double *out, ptrdiff_t lim)
{
    const __m512 wb1 = _mm512_set1_ps(b1), womb1 = _mm512_set1_ps(omb1);
    const __m512 wb2 = _mm512_set1_ps(b2), womb2 = _mm512_set1_ps(omb2);
    const __m512 wc2 = _mm512_set1_ps(c2), we = _mm512_set1_ps(e);
    const __m512 wc1 = _mm512_set1_ps(c1);
    const __m512 wwd = _mm512_set1_ps(wd);
    __m512d sp = _mm512_setzero_pd(), su = _mm512_setzero_pd(), y;
    double ap[8], au[8];
    ptrdiff_t i;
    for (i = 0; i + 16 <= n; i += 16) {
        __m512 pi, m0, v0, gi, mi, vi, a, u;
        FO_LAMB1V_PREFETCH(i);
        pi = _mm512_loadu_ps(p + i);
        m0 = _mm512_loadu_ps(m + i);
        v0 = _mm512_loadu_ps(v + i);
        gi = _mm512_loadu_ps(g + i);
        mi = _mm512_add_ps(_mm512_mul_ps(wb1, m0), _mm512_mul_ps(womb1, gi));
        vi = _mm512_add_ps(_mm512_mul_ps(wb2, v0),
                           _mm512_mul_ps(womb2, _mm512_mul_ps(gi, gi)));
        _mm512_storeu_ps(m + i, mi);
        _mm512_storeu_ps(v + i, vi);
        a = _mm512_div_ps(mi, wc1);
        u = _mm512_div_ps(a, _mm512_add_ps(_mm512_sqrt_ps(_mm512_div_ps(vi, wc2)), we));
        if (DECAY)
            u = _mm512_add_ps(u, _mm512_mul_ps(wwd, pi));
        y = _mm512_cvtps_pd(_mm512_castps512_ps256(pi));
        sp = _mm512_add_pd(sp, _mm512_mul_pd(y, y));
        y = _mm512_cvtps_pd(_mm512_extractf32x8_ps(pi, 1));
        sp = _mm512_add_pd(sp, _mm512_mul_pd(y, y));
        y = _mm512_cvtps_pd(_mm512_castps512_ps256(u));
        su = _mm512_add_pd(su, _mm512_mul_pd(y, y));
        y = _mm512_cvtps_pd(_mm512_extractf32x8_ps(u, 1));
        su = _mm512_add_pd(su, _mm512_mul_pd(y, y));
    }
    _mm512_storeu_pd(ap, sp);
    _mm512_storeu_pd(au, su);
    FO_LAMB1V_TAIL(DECAY);
    FO_LAMB1V_SUMS();
}

/* The entry of each ISA's float32 first pass: decay picked once per call,
 * each body compiled with it constant (its test out of the loop). */
#define FO_LAMB1V_ENTRY(ATTR, NAME)                                            \
    static ATTR void NAME(const float *restrict p, const float *restrict g,    \
                          float *restrict m, float *restrict v, ptrdiff_t n,   \
                          float b1, float omb1, float b2, float omb2, float e, \
                          float c1, float c2, double rc1, float wd, int decay, \
                          double *out, ptrdiff_t lim)                          \
    {                                                                          \
        if (decay)                                                             \
            NAME##_body(p, g, m, v, n, b1, omb1, b2, omb2, e, c1, c2, rc1, wd, \
                        1, out, lim);                                          \
        else                                                                   \
            NAME##_body(p, g, m, v, n, b1, omb1, b2, omb2, e, c1, c2, rc1, wd, \
                        0, out, lim);                                          \
    }

FO_LAMB1V_ENTRY(FO_AVX2, fo_lamb1v_f32_avx2)
FO_LAMB1V_ENTRY(FO_AVX512, fo_lamb1v_f32_avx512)

static void fo_lamb1_simd_f32(int isa, const float *p, const float *g, float *m, float *v,
                              ptrdiff_t n, float b1, float omb1, float b2, float omb2,
                              float e, float c1, float c2, double rc1, float wd,
                              int decay, double *out, ptrdiff_t lim)
{
    if (isa == FO_ISA_AVX512)
        fo_lamb1v_f32_avx512(p, g, m, v, n, b1, omb1, b2, omb2, e, c1, c2, rc1, wd,
                             decay, out, lim);
    else
        fo_lamb1v_f32_avx2(p, g, m, v, n, b1, omb1, b2, omb2, e, c1, c2, rc1, wd,
                           decay, out, lim);
}

FO_LAMB1_LOOP(fo_lamb1_simd_f64, double, sqrt, FO_LAMB_DIV_C1_F64)
FO_LAMB2_LOOP(fo_lamb2_simd_f32, float, sqrtf, FO_LAMB_DIV_C1_F32)
FO_LAMB2_LOOP(fo_lamb2_simd_f64, double, sqrt, FO_LAMB_DIV_C1_F64)

#else
#define fo_lamb1_simd_f32(...) ((void)0)
#define fo_lamb1_simd_f64(...) ((void)0)
#define fo_lamb2_simd_f32(...) ((void)0)
#define fo_lamb2_simd_f64(...) ((void)0)
#endif

#endif
