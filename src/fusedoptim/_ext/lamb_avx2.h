/* AVX2 build of lamb.pyx's fast-path loops (see avx2.h): the first pass
 * (moments, direction, the blocks' lane sums of squares) without gradient
 * prelude, and the second pass (direction again, parameter update).  The
 * direction is computed by the same operations in both and in the Cython
 * loops; m / c1 is adam_avx2.h's FO_DIV_C1 (correctly rounded). */
#ifndef FUSEDOPTIM_LAMB_AVX2_H
#define FUSEDOPTIM_LAMB_AVX2_H

#include "avx2.h"

#if FO_SIMD_AVX2

#define FO_LAMB_DIV_C1_F32(x) ((float)((double)(x) * rc1))
#define FO_LAMB_DIV_C1_F64(x) ((x) / c1)

/* u of element k from the new mi, vi and the parameter pi. */
#define FO_LAMB_DIR(DIV_C1, SQRT, DECAY, mi, vi, pi)                           \
    (DECAY ? DIV_C1(mi) / (SQRT((vi) / c2) + e) + wd * (pi)                    \
           : DIV_C1(mi) / (SQRT((vi) / c2) + e))

/* Element k of the first pass, its squares added to lane L. */
#define FO_LAMB1_ELEMENT(T, SQRT, DIV_C1, DECAY, k, L)                         \
    do {                                                                       \
        /* Every load before any store (_LOADS_FIRST). */                      \
        T pi = p[k], m0 = m[k], v0 = v[k], gi = g[k], mi, vi, u;               \
        double y;                                                              \
        mi = b1 * m0 + omb1 * gi;                                              \
        vi = b2 * v0 + omb2 * (gi * gi);                                       \
        m[k] = mi;                                                             \
        v[k] = vi;                                                             \
        u = FO_LAMB_DIR(DIV_C1, SQRT, DECAY, mi, vi, pi);                      \
        y = (double)pi;                                                        \
        ap[L] = ap[L] + y * y;                                                 \
        y = (double)u;                                                         \
        au[L] = au[L] + y * y;                                                 \
    } while (0)

/* One block (n <= 4096 elements from a multiple of 8): element i in lane
 * i % 8, lanes combined as _loops._lanes_total. */
#define FO_LAMB1_RANGE(T, SQRT, DIV_C1, DECAY)                                 \
    do {                                                                       \
        double ap[8] = {0, 0, 0, 0, 0, 0, 0, 0};                               \
        double au[8] = {0, 0, 0, 0, 0, 0, 0, 0};                               \
        ptrdiff_t i, k, full = n - n % 8;                                      \
        for (i = 0; i < full; i += 8)                                          \
            for (k = 0; k < 8; k++)                                            \
                FO_LAMB1_ELEMENT(T, SQRT, DIV_C1, DECAY, i + k, k);            \
        for (k = 0; k < n - full; k++)                                         \
            FO_LAMB1_ELEMENT(T, SQRT, DIV_C1, DECAY, full + k, k);             \
        out[0] = ((ap[0] + ap[1]) + (ap[2] + ap[3]))                           \
                 + ((ap[4] + ap[5]) + (ap[6] + ap[7]));                        \
        out[1] = ((au[0] + au[1]) + (au[2] + au[3]))                           \
                 + ((au[4] + au[5]) + (au[6] + au[7]));                        \
    } while (0)

#define FO_LAMB1_LOOP(NAME, T, SQRT, DIV_C1)                                   \
    static FO_AVX2 void NAME(const T *restrict p, const T *restrict g,         \
                             T *restrict m, T *restrict v, ptrdiff_t n,        \
                             T b1, T omb1, T b2, T omb2, T e, T c1, T c2,      \
                             double rc1, T wd, int decay, double *out)         \
    {                                                                          \
        if (decay)                                                             \
            FO_LAMB1_RANGE(T, SQRT, DIV_C1, 1);                                \
        else                                                                   \
            FO_LAMB1_RANGE(T, SQRT, DIV_C1, 0);                                \
    }

#define FO_LAMB2_RANGE(T, SQRT, DIV_C1, DECAY)                                 \
    do {                                                                       \
        ptrdiff_t i;                                                           \
        for (i = 0; i < n; i++) {                                              \
            T pi = p[i], mi = m[i], vi = v[i];                                 \
            p[i] = pi - s * FO_LAMB_DIR(DIV_C1, SQRT, DECAY, mi, vi, pi);      \
        }                                                                      \
    } while (0)

#define FO_LAMB2_LOOP(NAME, T, SQRT, DIV_C1)                                   \
    static FO_AVX2 void NAME(T *restrict p, const T *restrict m,               \
                             const T *restrict v, ptrdiff_t n, T s, T e,       \
                             T c1, T c2, double rc1, T wd, int decay)          \
    {                                                                          \
        if (decay)                                                             \
            FO_LAMB2_RANGE(T, SQRT, DIV_C1, 1);                                \
        else                                                                   \
            FO_LAMB2_RANGE(T, SQRT, DIV_C1, 0);                                \
    }

FO_LAMB1_LOOP(fo_lamb1_avx2_f32, float, sqrtf, FO_LAMB_DIV_C1_F32)
FO_LAMB1_LOOP(fo_lamb1_avx2_f64, double, sqrt, FO_LAMB_DIV_C1_F64)
FO_LAMB2_LOOP(fo_lamb2_avx2_f32, float, sqrtf, FO_LAMB_DIV_C1_F32)
FO_LAMB2_LOOP(fo_lamb2_avx2_f64, double, sqrt, FO_LAMB_DIV_C1_F64)

#else
#define fo_lamb1_avx2_f32(...) ((void)0)
#define fo_lamb1_avx2_f64(...) ((void)0)
#define fo_lamb2_avx2_f32(...) ((void)0)
#define fo_lamb2_avx2_f64(...) ((void)0)
#endif

#endif
