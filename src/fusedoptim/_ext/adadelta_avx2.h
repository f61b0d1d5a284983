/* AVX2 build of adadelta.pyx's fast-path loop (see avx2.h):
 * adadelta._adadelta_loop without prelude, in blocks with prefetches as
 * adam_avx2.h's loop (two square roots and a division per element). */
#ifndef FUSEDOPTIM_ADADELTA_AVX2_H
#define FUSEDOPTIM_ADADELTA_AVX2_H

#include "avx2.h"

#if FO_SIMD_AVX2

#define FO_ADADELTA_ELEMENT(T, SQRT, k)                                        \
    do {                                                                       \
        /* Every load before any store (_LOADS_FIRST). */                      \
        T pi = p[k], s0 = sq[k], a0 = acc[k], gi = g[k], si, d;                \
        si = rho * s0 + (omr * gi) * gi;                                       \
        d = SQRT((a0 + e) / (si + e)) * gi;                                    \
        sq[k] = si;                                                            \
        acc[k] = rho * a0 + (omr * d) * d;                                     \
        p[k] = pi - lr * d;                                                    \
    } while (0)

/* The distance of adam_avx2.h's FO_PREFETCH (measured there). */
#define FO_ADADELTA_PREFETCH 128
#define FO_ADADELTA_LOOP(NAME, T, SQRT)                                        \
    FO_BODY void NAME##_body(T *restrict p, const T *restrict g,               \
                             T *restrict sq, T *restrict acc, ptrdiff_t n,     \
                             T lr, T rho, T omr, T e)                          \
    {                                                                          \
        ptrdiff_t i, k, i0 = FO_ALIGN_PEEL(p, T, n);                           \
        for (k = 0; k < i0; k++)                                               \
            FO_ADADELTA_ELEMENT(T, SQRT, k);                                   \
        for (i = i0; i + 16 <= n; i += 16) {                                   \
            if (i + FO_ADADELTA_PREFETCH < n) {                                \
                __builtin_prefetch(p + i + FO_ADADELTA_PREFETCH, 1, 3);        \
                __builtin_prefetch(sq + i + FO_ADADELTA_PREFETCH, 1, 3);       \
                __builtin_prefetch(acc + i + FO_ADADELTA_PREFETCH, 1, 3);      \
                __builtin_prefetch(g + i + FO_ADADELTA_PREFETCH, 0, 3);        \
            }                                                                  \
            for (k = i; k < i + 16; k++)                                       \
                FO_ADADELTA_ELEMENT(T, SQRT, k);                               \
        }                                                                      \
        for (k = i; k < n; k++)                                                \
            FO_ADADELTA_ELEMENT(T, SQRT, k);                                   \
    }                                                                          \
    FO_SIMD_BUILD(NAME, (T *restrict p, const T *restrict g, T *restrict sq,   \
        T *restrict acc, ptrdiff_t n, T lr, T rho, T omr, T e), (p, g, sq,     \
        acc, n, lr, rho, omr, e))

FO_ADADELTA_LOOP(fo_adadelta_simd_f32, float, sqrtf)
FO_ADADELTA_LOOP(fo_adadelta_simd_f64, double, sqrt)

#else
#define fo_adadelta_simd_f32(...) ((void)0)
#define fo_adadelta_simd_f64(...) ((void)0)
#endif

#endif
