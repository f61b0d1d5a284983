/* AVX2 build of adam.pyx's fast-path loop (see avx2.h for why and how the
 * bits stay those of the baseline loop).
 *
 * Adam's m / c1 (c1 = 1 - beta1^t, a positive float32 constant of the step)
 * is computed for float32 as (float)((double)m * rc1) with rc1 = RN(1/c1) in
 * double, in this loop and in the Cython one alike.  That is the
 * correctly rounded float32 quotient for every m: the double product is
 * within 2^-52 (relative) of m/c1, while a float32 quotient that is not a
 * float is at least 2^-49 (relative) away from the nearest rounding boundary
 * (the midpoint of two floats has 25 significant bits; m/c1 = midpoint would
 * need m to have more than 24), in the subnormal range too; zeros,
 * infinities and NaN (payload and sign) pass through the multiply and the
 * two conversions unchanged, as through the division.  (In the subnormal
 * range the boundary is at least 2^-150/C >= 2^-174 away, C the odd part of
 * c1's significand, and the error below 2^-178; the overflow threshold is a
 * 25-bit midpoint like the others.)  Checked for all 2^32 float32 m against
 * the division for 119 divisors with tests/exhaustive/divc1.c, which the
 * tests run for three.  The division unit, which Adam's loop saturates (two
 * more divisions and a square root per element), is then left one
 * instruction less per element: in cache 1.76 -> 1.48 ns per element on Zen1
 * in a C model of the SSE2 loop.  Doing v / c2 the same way measured slower
 * (the conversions cost more than the division saves), as did removing both
 * divisions with FMA-based correction (Markstein): the checks it needs for
 * its exponent range cost more than the division.
 */
#ifndef FUSEDOPTIM_ADAM_AVX2_H
#define FUSEDOPTIM_ADAM_AVX2_H

#include "avx2.h"

#if FO_SIMD_AVX2

/* One element k of adam._adam_loop with the fast-path flags (no gradient
 * scale, maximize or AMSGrad); DECAY (0: none; 1: decoupled, AdamW's
 * shrink of p; 2: L2, Adam's wd * p added to the gradient) and TORCH
 * (PyTorch's rounding order, the classes; c2 is then sqrt(bc2) rounded) are
 * literal, so each of the six loops is branch-free.  L2 used to leave this
 * loop for the scalar one with every flag read per element: 4.8 ns per
 * element in L2 cache against 0.49, for torch.optim.Adam's common
 * weight_decay. */
#define FO_ADAM_ELEMENT(T, SQRT, DIV_C1, k, DECAY, TORCH)                      \
    do {                                                                       \
        /* Every load before any store (_LOADS_FIRST). */                      \
        T pi = p[k], m0 = m[k], v0 = v[k], gi = g[k], mi, vi;                  \
        if (DECAY == 2)                                                        \
            gi = gi + wd * pi;                                                 \
        if (DECAY == 1)                                                        \
            pi = pi * shrink;                                                  \
        mi = b1 * m0 + omb1 * gi;                                              \
        if (TORCH)                                                             \
            vi = b2 * v0 + (omb2 * gi) * gi;                                   \
        else                                                                   \
            vi = b2 * v0 + omb2 * (gi * gi);                                   \
        m[k] = mi;                                                             \
        v[k] = vi;                                                             \
        if (TORCH)                                                             \
            p[k] = pi - (lr * DIV_C1(mi)) / (SQRT(vi) / c2 + e);               \
        else                                                                   \
            p[k] = pi - (lr * DIV_C1(mi)) / (SQRT(vi / c2) + e);               \
    } while (0)

/* Adam's loop runs in blocks of 16 elements, prefetching each of its four
 * streams FO_PREFETCH elements ahead.  Why: its arithmetic (two divisions
 * and a square root per element) fills the out-of-order window, so the
 * hardware prefetchers alone leave memory idle part of the time.  Measured
 * at 2^24 float32 elements, 2 threads, benchmarks/targets.py --processes 5:
 * Adam / copy median 1.025 without, 1.001 with (0.975 in a second run).
 * The lighter loops gain nothing from it: the copy yardstick with the same
 * prefetches measured slower (Adam / copy 0.947 against 0.975 with the
 * plain copy), so neither it nor SGD, RMSProp or Adagrad prefetch.  The
 * addresses stay inside the arrays (a pointer past the end would be
 * undefined C).  The distance, 256 elements on Zen1 above, is 128: on the
 * AVX-512 Zen4 VM (the method of benchmarks/loops_big.c: 2^24 float32, 2
 * threads each on a contiguous half, the states placed as _alloc places
 * them, per-thread CPU time, median of 7; three interleaved runs, load
 * average 7-8 from other tenants) Adam took 5.3-5.8 ms at 128 elements
 * ahead, 6.6-7.3 ms at 256 and 4.9-6.1 without, the copy of its traffic
 * 5.4-5.9 ms; NAdam and Adadelta, which share the distance, alike (NAdam
 * 5.8-6.2 against 6.9-7.2, Adadelta 5.6-6.0 against 6.6-7.5), in both
 * builds.  Not re-measured on Zen1. */
#define FO_PREFETCH 128
#define FO_ADAM_RANGE(T, SQRT, DIV_C1, DECAY, TORCH)                           \
    do {                                                                       \
        ptrdiff_t i, k, i0 = FO_ALIGN_PEEL(p, T, n);                           \
        for (k = 0; k < i0; k++)                                               \
            FO_ADAM_ELEMENT(T, SQRT, DIV_C1, k, DECAY, TORCH);                 \
        for (i = i0; i + 16 <= n; i += 16) {                                   \
            if (i + FO_PREFETCH < n) {                                         \
                __builtin_prefetch(p + i + FO_PREFETCH, 1, 3);                 \
                __builtin_prefetch(m + i + FO_PREFETCH, 1, 3);                 \
                __builtin_prefetch(v + i + FO_PREFETCH, 1, 3);                 \
                __builtin_prefetch(g + i + FO_PREFETCH, 0, 3);                 \
            }                                                                  \
            for (k = i; k < i + 16; k++)                                       \
                FO_ADAM_ELEMENT(T, SQRT, DIV_C1, k, DECAY, TORCH);             \
        }                                                                      \
        for (k = i; k < n; k++)                                                \
            FO_ADAM_ELEMENT(T, SQRT, DIV_C1, k, DECAY, TORCH);                 \
    } while (0)

/* decay: 0 none, 1 decoupled (shrink), 2 L2 (wd). */
#define FO_ADAM_LOOP(NAME, T, SQRT, DIV_C1)                                    \
    FO_BODY void NAME##_body(T *restrict p, const T *restrict g,               \
                             T *restrict m, T *restrict v, ptrdiff_t n,        \
                             T lr, T b1, T omb1, T b2, T omb2, T e, T c1,      \
                             T c2, double rc1, T shrink, T wd, int decay,      \
                             int torch)                                        \
    {                                                                          \
        if (torch) {                                                           \
            if (decay == 1) FO_ADAM_RANGE(T, SQRT, DIV_C1, 1, 1);              \
            else if (decay == 2) FO_ADAM_RANGE(T, SQRT, DIV_C1, 2, 1);         \
            else FO_ADAM_RANGE(T, SQRT, DIV_C1, 0, 1);                         \
        } else {                                                               \
            if (decay == 1) FO_ADAM_RANGE(T, SQRT, DIV_C1, 1, 0);              \
            else if (decay == 2) FO_ADAM_RANGE(T, SQRT, DIV_C1, 2, 0);         \
            else FO_ADAM_RANGE(T, SQRT, DIV_C1, 0, 0);                         \
        }                                                                      \
    }                                                                          \
    FO_SIMD_BUILD(NAME, (T *restrict p, const T *restrict g, T *restrict m,    \
        T *restrict v, ptrdiff_t n, T lr, T b1, T omb1, T b2, T omb2, T e,     \
        T c1, T c2, double rc1, T shrink, T wd, int decay, int torch), (p, g,  \
        m, v, n, lr, b1, omb1, b2, omb2, e, c1, c2, rc1, shrink, wd, decay,    \
        torch))

/* _loops._div_c1: mi / c1, for float32 through the double reciprocal. */
#define FO_DIV_C1_F32(x) ((float)((double)(x) * rc1))
#define FO_DIV_C1_F64(x) ((x) / c1)
FO_ADAM_LOOP(fo_adam_simd_f32, float, sqrtf, FO_DIV_C1_F32)
FO_ADAM_LOOP(fo_adam_simd_f64, double, sqrt, FO_DIV_C1_F64)

#else
/* Never called (fo_simd_detect() is 0); defined so that the module compiles. */
#define fo_adam_simd_f32(...) ((void)0)
#define fo_adam_simd_f64(...) ((void)0)
#endif

#endif
