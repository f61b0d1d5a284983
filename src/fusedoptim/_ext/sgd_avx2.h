/* AVX2 build of sgd.pyx's fast-path loops (see avx2.h): sgd._sgd_loop
 * without prelude after the first step: plain gradient descent (no buffer),
 * heavy-ball momentum, or Nesterov momentum. */
#ifndef FUSEDOPTIM_SGD_AVX2_H
#define FUSEDOPTIM_SGD_AVX2_H

#include "avx2.h"

#if FO_SIMD_AVX2

#define FO_SGD_LOOP(NAME, T)                                                   \
    FO_BODY void NAME##_body(T *restrict p, const T *restrict g,               \
                             T *restrict buf, ptrdiff_t n, T lr, T mu, T omd,  \
                             int has_buf, int nesterov)                        \
    {                                                                          \
        ptrdiff_t i;                                                           \
        if (!has_buf) {                                                        \
            FO_PEELED_FOR(i, p, T, n, {                                        \
                T pi = p[i], gi = g[i];                                        \
                p[i] = pi - lr * gi;                                           \
            });                                                                \
        } else if (nesterov) {                                                 \
            FO_PEELED_FOR(i, p, T, n, {                                        \
                T pi = p[i], b0 = buf[i], gi = g[i], b;                        \
                b = mu * b0 + omd * gi;                                        \
                buf[i] = b;                                                    \
                gi = gi + mu * b;                                              \
                p[i] = pi - lr * gi;                                           \
            });                                                                \
        } else {                                                               \
            FO_PEELED_FOR(i, p, T, n, {                                        \
                T pi = p[i], b0 = buf[i], gi = g[i], b;                        \
                b = mu * b0 + omd * gi;                                        \
                buf[i] = b;                                                    \
                p[i] = pi - lr * b;                                            \
            });                                                                \
        }                                                                      \
    }                                                                          \
    FO_SIMD_BUILD(NAME, (T *restrict p, const T *restrict g,                   \
        T *restrict buf, ptrdiff_t n, T lr, T mu, T omd, int has_buf,          \
        int nesterov), (p, g, buf, n, lr, mu, omd, has_buf, nesterov))

FO_SGD_LOOP(fo_sgd_simd_f32, float)
FO_SGD_LOOP(fo_sgd_simd_f64, double)

#else
#define fo_sgd_simd_f32(...) ((void)0)
#define fo_sgd_simd_f64(...) ((void)0)
#endif

#endif
