/* AVX2 build of adamax.pyx's fast-path loop (see avx2.h):
 * adamax._adamax_loop without prelude. */
#ifndef FUSEDOPTIM_ADAMAX_AVX2_H
#define FUSEDOPTIM_ADAMAX_AVX2_H

#include "avx2.h"

#if FO_SIMD_AVX2

#define FO_ADAMAX_LOOP(NAME, T, FABS)                                          \
    FO_BODY void NAME##_body(T *restrict p, const T *restrict g,               \
                             T *restrict m, T *restrict u, ptrdiff_t n,        \
                             T clr, T b1, T omb1, T b2, T e)                   \
    {                                                                          \
        ptrdiff_t i;                                                           \
        FO_PEELED_FOR(i, p, T, n, {                                            \
            /* Every load before any store (_LOADS_FIRST). */                  \
            T pi = p[i], m0 = m[i], u0 = u[i], gi = g[i], mi, b, x;            \
            mi = b1 * m0 + omb1 * gi;                                          \
            b = b2 * u0;                                                       \
            x = FABS(gi) + e;                                                  \
            b = ((b >= x) | (b != b)) ? b : x;                                 \
            m[i] = mi;                                                         \
            u[i] = b;                                                          \
            p[i] = pi - (clr * mi) / b;                                        \
        });                                                                    \
    }                                                                          \
    FO_SIMD_BUILD(NAME, (T *restrict p, const T *restrict g, T *restrict m,    \
        T *restrict u, ptrdiff_t n, T clr, T b1, T omb1, T b2, T e), (p, g,    \
        m, u, n, clr, b1, omb1, b2, e))

FO_ADAMAX_LOOP(fo_adamax_simd_f32, float, fabsf)
FO_ADAMAX_LOOP(fo_adamax_simd_f64, double, fabs)

#else
#define fo_adamax_simd_f32(...) ((void)0)
#define fo_adamax_simd_f64(...) ((void)0)
#endif

#endif
