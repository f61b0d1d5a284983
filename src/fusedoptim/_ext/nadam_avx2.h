/* AVX2 build of nadam.pyx's fast-path loop (see avx2.h): nadam._nadam_loop
 * without prelude, in blocks with prefetches as adam_avx2.h's loop (its
 * arithmetic, three divisions and a square root per element, is heavier
 * than Adam's). */
#ifndef FUSEDOPTIM_NADAM_AVX2_H
#define FUSEDOPTIM_NADAM_AVX2_H

#include "avx2.h"

#if FO_SIMD_AVX2

#define FO_NADAM_ELEMENT(T, SQRT, k, SHRINK_P)                                 \
    do {                                                                       \
        /* Every load before any store (_LOADS_FIRST). */                      \
        T pi = p[k], m0 = m[k], v0 = v[k], gi = g[k], mi, vi, d;               \
        if (SHRINK_P)                                                          \
            pi = pi * shrink;                                                  \
        mi = b1 * m0 + omb1 * gi;                                              \
        vi = b2 * v0 + (omb2 * gi) * gi;                                       \
        m[k] = mi;                                                             \
        v[k] = vi;                                                             \
        d = SQRT(vi / c2) + e;                                                 \
        p[k] = pi - (lrg * gi + lrm * mi) / d;                                 \
    } while (0)

/* The distance of adam_avx2.h's FO_PREFETCH (measured there). */
#define FO_NADAM_PREFETCH 128
#define FO_NADAM_RANGE(T, SQRT, SHRINK_P)                                      \
    do {                                                                       \
        ptrdiff_t i, k, i0 = FO_ALIGN_PEEL(p, T, n);                           \
        for (k = 0; k < i0; k++)                                               \
            FO_NADAM_ELEMENT(T, SQRT, k, SHRINK_P);                            \
        for (i = i0; i + 16 <= n; i += 16) {                                   \
            if (i + FO_NADAM_PREFETCH < n) {                                   \
                __builtin_prefetch(p + i + FO_NADAM_PREFETCH, 1, 3);           \
                __builtin_prefetch(m + i + FO_NADAM_PREFETCH, 1, 3);           \
                __builtin_prefetch(v + i + FO_NADAM_PREFETCH, 1, 3);           \
                __builtin_prefetch(g + i + FO_NADAM_PREFETCH, 0, 3);           \
            }                                                                  \
            for (k = i; k < i + 16; k++)                                       \
                FO_NADAM_ELEMENT(T, SQRT, k, SHRINK_P);                        \
        }                                                                      \
        for (k = i; k < n; k++)                                                \
            FO_NADAM_ELEMENT(T, SQRT, k, SHRINK_P);                            \
    } while (0)

#define FO_NADAM_LOOP(NAME, T, SQRT)                                           \
    FO_BODY void NAME##_body(T *restrict p, const T *restrict g,               \
                             T *restrict m, T *restrict v, ptrdiff_t n,        \
                             T b1, T omb1, T b2, T omb2, T e, T c2, T lrg,     \
                             T lrm, T shrink, int shrink_p)                    \
    {                                                                          \
        if (shrink_p)                                                          \
            FO_NADAM_RANGE(T, SQRT, 1);                                        \
        else                                                                   \
            FO_NADAM_RANGE(T, SQRT, 0);                                        \
    }                                                                          \
    FO_SIMD_BUILD(NAME, (T *restrict p, const T *restrict g, T *restrict m,    \
        T *restrict v, ptrdiff_t n, T b1, T omb1, T b2, T omb2, T e, T c2,     \
        T lrg, T lrm, T shrink, int shrink_p), (p, g, m, v, n, b1, omb1, b2,   \
        omb2, e, c2, lrg, lrm, shrink, shrink_p))

FO_NADAM_LOOP(fo_nadam_simd_f32, float, sqrtf)
FO_NADAM_LOOP(fo_nadam_simd_f64, double, sqrt)

#else
#define fo_nadam_simd_f32(...) ((void)0)
#define fo_nadam_simd_f64(...) ((void)0)
#endif

#endif
