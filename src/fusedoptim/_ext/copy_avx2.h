/* AVX2 build of _yardstick._copy_like_loop (see avx2.h): each of the nrw
 * arrays += g (+ g2 when nro == 2).  The yardstick gets the same treatment as the optimizer loops
 * so that it stays a floor. */
#ifndef FUSEDOPTIM_COPY_AVX2_H
#define FUSEDOPTIM_COPY_AVX2_H

#include "avx2.h"

#if FO_SIMD_AVX2

#define FO_COPY_RANGE(T, G)                                                    \
    do {                                                                       \
        ptrdiff_t i;                                                           \
        if (nrw == 1) {                                                        \
            for (i = i0; i < n; i++) {                                         \
                T gi = G, a0 = x0[i];                                          \
                x0[i] = a0 + gi;                                               \
            }                                                                  \
        } else if (nrw == 2) {                                                 \
            for (i = i0; i < n; i++) {                                         \
                T gi = G, a0 = x0[i], a1 = x1[i];                              \
                x0[i] = a0 + gi;                                               \
                x1[i] = a1 + gi;                                               \
            }                                                                  \
        } else {                                                               \
            for (i = i0; i < n; i++) {                                         \
                T gi = G, a0 = x0[i], a1 = x1[i], a2 = x2[i];                  \
                x0[i] = a0 + gi;                                               \
                x1[i] = a1 + gi;                                               \
                x2[i] = a2 + gi;                                               \
            }                                                                  \
        }                                                                      \
    } while (0)

#define FO_COPY_LOOP(NAME, T)                                                  \
    FO_BODY void NAME##_body(T *restrict x0, T *restrict x1, T *restrict x2,   \
                             const T *restrict g, const T *restrict g2,        \
                             ptrdiff_t nall, int nrw, int nro)                 \
    {                                                                          \
        /* The elements before x0's first 64-byte boundary alone first, as   \
         * in Adam's loop (FO_ALIGN_PEEL). */                                 \
        ptrdiff_t i0 = 0, n = FO_ALIGN_PEEL(x0, T, nall);                      \
        if (nro == 2)                                                          \
            FO_COPY_RANGE(T, g[i] + g2[i]);                                    \
        else                                                                   \
            FO_COPY_RANGE(T, g[i]);                                            \
        i0 = n;                                                                \
        n = nall;                                                              \
        if (nro == 2)                                                          \
            FO_COPY_RANGE(T, g[i] + g2[i]);                                    \
        else                                                                   \
            FO_COPY_RANGE(T, g[i]);                                            \
    }                                                                          \
    FO_SIMD_BUILD(NAME, (T *restrict x0, T *restrict x1, T *restrict x2,       \
        const T *restrict g, const T *restrict g2, ptrdiff_t n, int nrw,       \
        int nro), (x0, x1, x2, g, g2, n, nrw, nro))

FO_COPY_LOOP(fo_copy_simd_f32, float)
FO_COPY_LOOP(fo_copy_simd_f64, double)

#else
#define fo_copy_simd_f32(...) ((void)0)
#define fo_copy_simd_f64(...) ((void)0)
#endif

#endif
