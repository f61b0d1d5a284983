/* AVX2 build of radam.pyx's fast-path loop (see avx2.h): radam._radam_loop
 * without prelude, specialized on the step's two switches, in blocks with
 * prefetches as adam_avx2.h's loop (same arithmetic weight: two divisions
 * and a square root per element once rectified).  m / c1 is a plain
 * division: Adam's double-reciprocal form (adam_avx2.h) measured slower
 * here, 1.47 against 1.21 ns per element in cache, float32, 1 thread (one
 * run each on the shared development machine). */
#ifndef FUSEDOPTIM_RADAM_AVX2_H
#define FUSEDOPTIM_RADAM_AVX2_H

#include "avx2.h"

#if FO_SIMD_AVX2

#define FO_RADAM_ELEMENT(T, SQRT, k, SHRINK_P, RECT)                           \
    do {                                                                       \
        /* Every load before any store (_LOADS_FIRST). */                      \
        T pi = p[k], m0 = m[k], v0 = v[k], gi = g[k], mi, vi, mh;              \
        if (SHRINK_P)                                                          \
            pi = pi * shrink;                                                  \
        mi = b1 * m0 + omb1 * gi;                                              \
        vi = b2 * v0 + (omb2 * gi) * gi;                                       \
        m[k] = mi;                                                             \
        v[k] = vi;                                                             \
        mh = mi / c1;                                                          \
        if (RECT)                                                              \
            p[k] = pi - ((mh * lr) * (((T)1 / (SQRT(vi) + e)) * s2)) * rect;   \
        else                                                                   \
            p[k] = pi - mh * lr;                                               \
    } while (0)

/* The distance of adam_avx2.h's FO_PREFETCH (measured there). */
#define FO_RADAM_PREFETCH 128
#define FO_RADAM_RANGE(T, SQRT, SHRINK_P, RECT)                                \
    do {                                                                       \
        ptrdiff_t i, k, i0 = FO_ALIGN_PEEL(p, T, n);                           \
        for (k = 0; k < i0; k++)                                               \
            FO_RADAM_ELEMENT(T, SQRT, k, SHRINK_P, RECT);                      \
        for (i = i0; i + 16 <= n; i += 16) {                                   \
            if (i + FO_RADAM_PREFETCH < n) {                                   \
                __builtin_prefetch(p + i + FO_RADAM_PREFETCH, 1, 3);           \
                __builtin_prefetch(m + i + FO_RADAM_PREFETCH, 1, 3);           \
                __builtin_prefetch(v + i + FO_RADAM_PREFETCH, 1, 3);           \
                __builtin_prefetch(g + i + FO_RADAM_PREFETCH, 0, 3);           \
            }                                                                  \
            for (k = i; k < i + 16; k++)                                       \
                FO_RADAM_ELEMENT(T, SQRT, k, SHRINK_P, RECT);                  \
        }                                                                      \
        for (k = i; k < n; k++)                                                \
            FO_RADAM_ELEMENT(T, SQRT, k, SHRINK_P, RECT);                      \
    } while (0)

#define FO_RADAM_LOOP(NAME, T, SQRT)                                           \
    FO_BODY void NAME##_body(T *restrict p, const T *restrict g,               \
                             T *restrict m, T *restrict v, ptrdiff_t n,        \
                             T lr, T b1, T omb1, T b2, T omb2, T e, T c1,      \
                             T s2, T rect, T shrink, int shrink_p,             \
                             int rectified)                                    \
    {                                                                          \
        if (rectified) {                                                       \
            if (shrink_p)                                                      \
                FO_RADAM_RANGE(T, SQRT, 1, 1);                                 \
            else                                                               \
                FO_RADAM_RANGE(T, SQRT, 0, 1);                                 \
        } else {                                                               \
            if (shrink_p)                                                      \
                FO_RADAM_RANGE(T, SQRT, 1, 0);                                 \
            else                                                               \
                FO_RADAM_RANGE(T, SQRT, 0, 0);                                 \
        }                                                                      \
    }                                                                          \
    FO_SIMD_BUILD(NAME, (T *restrict p, const T *restrict g, T *restrict m,    \
        T *restrict v, ptrdiff_t n, T lr, T b1, T omb1, T b2, T omb2, T e,     \
        T c1, T s2, T rect, T shrink, int shrink_p, int rectified), (p, g,     \
        m, v, n, lr, b1, omb1, b2, omb2, e, c1, s2, rect, shrink, shrink_p,    \
        rectified))

FO_RADAM_LOOP(fo_radam_simd_f32, float, sqrtf)
FO_RADAM_LOOP(fo_radam_simd_f64, double, sqrt)

#else
#define fo_radam_simd_f32(...) ((void)0)
#define fo_radam_simd_f64(...) ((void)0)
#endif

#endif
