/* AVX2 build of lion.pyx's fast-path loop (see avx2.h): lion._lion_loop
 * without gradient prelude, with or without decoupled weight decay. */
#ifndef FUSEDOPTIM_LION_AVX2_H
#define FUSEDOPTIM_LION_AVX2_H

#include "avx2.h"

#if FO_SIMD_AVX2

/* np.sign: +1, -1, +0 for either zero, NaN itself.  Written as selects so
 * that GCC vectorizes it with compares and blends (no branch). */
#define FO_SIGN(T, c) ((c) > 0 ? (T)1 : ((c) < 0 ? (T)-1 : ((c) == (c) ? (T)0 : (c))))

#define FO_LION_RANGE(T, DECAY)                                                \
    do {                                                                       \
        ptrdiff_t i;                                                           \
        FO_PEELED_FOR(i, p, T, n, {                                            \
            /* Every load before any store (_LOADS_FIRST). */                  \
            T pi = p[i], m0 = m[i], gi = g[i], c, s;                           \
            c = b1 * m0 + omb1 * gi;                                           \
            s = FO_SIGN(T, c);                                                 \
            if (DECAY)                                                         \
                s = s + wd * pi;                                               \
            p[i] = pi - lr * s;                                                \
            m[i] = b2 * m0 + omb2 * gi;                                        \
        });                                                                    \
    } while (0)

#define FO_LION_LOOP(NAME, T)                                                  \
    FO_BODY void NAME##_body(T *restrict p, const T *restrict g,               \
                             T *restrict m, ptrdiff_t n, T lr, T b1, T omb1,   \
                             T b2, T omb2, T wd, int decay)                    \
    {                                                                          \
        if (decay)                                                             \
            FO_LION_RANGE(T, 1);                                               \
        else                                                                   \
            FO_LION_RANGE(T, 0);                                               \
    }                                                                          \
    FO_SIMD_BUILD(NAME, (T *restrict p, const T *restrict g, T *restrict m,    \
        ptrdiff_t n, T lr, T b1, T omb1, T b2, T omb2, T wd, int decay), (p,   \
        g, m, n, lr, b1, omb1, b2, omb2, wd, decay))

FO_LION_LOOP(fo_lion_simd_f32, float)
FO_LION_LOOP(fo_lion_simd_f64, double)

#else
#define fo_lion_simd_f32(...) ((void)0)
#define fo_lion_simd_f64(...) ((void)0)
#endif

#endif
