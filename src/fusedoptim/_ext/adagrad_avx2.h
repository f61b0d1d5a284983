/* AVX2 build of adagrad.pyx's fast-path loop (see avx2.h):
 * adagrad._adagrad_loop without prelude. */
#ifndef FUSEDOPTIM_ADAGRAD_AVX2_H
#define FUSEDOPTIM_ADAGRAD_AVX2_H

#include "avx2.h"

#if FO_SIMD_AVX2

#define FO_ADAGRAD_LOOP(NAME, T, SQRT)                                         \
    FO_BODY void NAME##_body(T *restrict p, const T *restrict g,               \
                             T *restrict sum, ptrdiff_t n, T lr, T e)          \
    {                                                                          \
        ptrdiff_t i;                                                           \
        FO_PEELED_FOR(i, p, T, n, {                                            \
            /* Every load before any store (_LOADS_FIRST). */                  \
            T pi = p[i], s0 = sum[i], gi = g[i], s;                            \
            s = s0 + gi * gi;                                                  \
            sum[i] = s;                                                        \
            p[i] = pi - lr * (gi / (SQRT(s) + e));                             \
        });                                                                    \
    }                                                                          \
    FO_SIMD_BUILD(NAME, (T *restrict p, const T *restrict g,                   \
        T *restrict sum, ptrdiff_t n, T lr, T e), (p, g, sum, n, lr, e))

FO_ADAGRAD_LOOP(fo_adagrad_simd_f32, float, sqrtf)
FO_ADAGRAD_LOOP(fo_adagrad_simd_f64, double, sqrt)

#else
#define fo_adagrad_simd_f32(...) ((void)0)
#define fo_adagrad_simd_f64(...) ((void)0)
#endif

#endif
