/* AVX2 build of rmsprop.pyx's fast-path loop (see avx2.h):
 * rmsprop._rmsprop_loop without prelude, centering or momentum buffer; eps
 * inside the root in the course's rounding order, outside in PyTorch's. */
#ifndef FUSEDOPTIM_RMSPROP_AVX2_H
#define FUSEDOPTIM_RMSPROP_AVX2_H

#include "avx2.h"

#if FO_SIMD_AVX2

#define FO_RMSPROP_LOOP(NAME, T, SQRT)                                         \
    FO_BODY void NAME##_body(T *restrict p, const T *restrict g,               \
                             T *restrict sq, ptrdiff_t n, T lr, T al, T oma,   \
                             T e, int eps_inside)                              \
    {                                                                          \
        ptrdiff_t i;                                                           \
        if (eps_inside) {                                                      \
            FO_PEELED_FOR(i, p, T, n, {                                        \
                T pi = p[i], s0 = sq[i], gi = g[i], s;                         \
                s = al * s0 + oma * (gi * gi);                                 \
                sq[i] = s;                                                     \
                p[i] = pi - (lr * gi) / SQRT(s + e);                           \
            });                                                                \
        } else {                                                               \
            /* PyTorch's order: ((1 - alpha) * g) * g */                   \
            FO_PEELED_FOR(i, p, T, n, {                                        \
                T pi = p[i], s0 = sq[i], gi = g[i], s;                         \
                s = al * s0 + (oma * gi) * gi;                                 \
                sq[i] = s;                                                     \
                p[i] = pi - (lr * gi) / (SQRT(s) + e);                         \
            });                                                                \
        }                                                                      \
    }                                                                          \
    FO_SIMD_BUILD(NAME, (T *restrict p, const T *restrict g, T *restrict sq,   \
        ptrdiff_t n, T lr, T al, T oma, T e, int eps_inside), (p, g, sq, n,    \
        lr, al, oma, e, eps_inside))

FO_RMSPROP_LOOP(fo_rmsprop_simd_f32, float, sqrtf)
FO_RMSPROP_LOOP(fo_rmsprop_simd_f64, double, sqrt)

#else
#define fo_rmsprop_simd_f32(...) ((void)0)
#define fo_rmsprop_simd_f64(...) ((void)0)
#endif

#endif
