/* Adam with bfloat16 or 8-bit blockwise moments: the element loops of
 * families/adam_lowp.py (the spec: every operation below is one of its NumPy
 * operations, in its order), for float32 parameters.
 *
 * Each loop is written once as an always-inline body and compiled three
 * times: for the baseline ISA, with target("avx2") and with
 * target("avx512f,avx512bw,avx512dq,avx512vl"), the last two called only when
 * the CPU has them (fo_lowp_isa).  No "fma" in any target: nothing can be
 * contracted, and every operation is IEEE correctly rounded or exact integer
 * arithmetic at any vector width, so the three builds give the same bits.
 * The codecs are integer operations on the float32 bit pattern (no table, no
 * search), which the compiler vectorizes with the float arithmetic; the
 * 8-bit loop's AVX2 and AVX-512 builds are written with explicit vectors
 * instead (adam_lowp_vec.h, instantiated by adam_lowp_isa.h), the scalar
 * body below being their baseline, their slow path and their last partial
 * block.
 *
 * `restrict` is sound: the arrays of a step never overlap (parameters and
 * gradients are checked by _gather; the states are the optimizer's own).
 */
#ifndef FUSEDOPTIM_ADAM_LOWP_H
#define FUSEDOPTIM_ADAM_LOWP_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <math.h>

#include "lowp_codec.h"  /* FO_QBLOCK, FO_INLINE, fo_f2u, fo_u2f, fo_mix32, fo_bf16_encode */

typedef struct {
    float lr, b1, omb1, b2, omb2, eps, c1, c2, gs, wd, shrink;
    /* lr * sqrt(c2) / c1 and eps * sqrt(c2), computed in double, rounded once */
    float alr, es;
    double rc1;          /* 1 / (double)c1: m / c1 as a product (adam_avx2.h) */
    uint32_t key;        /* step_key(seed, t) */
    int scale, maximize, l2, shrink_p, stochastic;
} fo_lowp_args;

/* families.adam_lowp._prelude for one element (p is shrunk in place). */
#define FO_LOWP_PRELUDE(A, gi, pi)                                            \
    do {                                                                      \
        if (f_scale) gi = gi * f_gs;                                    \
        if (f_max) gi = -gi;                                          \
        if (f_l2) gi = gi + f_wd * pi;                                  \
        if (f_shrink) pi = pi * f_shrinkv;                             \
    } while (0)
/* The prelude's scalars as locals; its flags are the body's arguments, literal
 * in the common cases (FO_LOWP_DISPATCH), so the loop is branch-free. */
#define FO_LOWP_FLAGS(A) \
    const float f_gs = (A)->gs, f_wd = (A)->wd, f_shrinkv = (A)->shrink;
#define FO_FLAG_ARGS const int f_scale, const int f_max, const int f_l2, const int f_shrink, \
    const int sto

/* Adam on [0, n) with bfloat16 m, v; idx0 = index of element 0 in the step. */
FO_INLINE void fo_adam_bf16_body(const fo_lowp_args *A, float *restrict p,
                                 const float *restrict g, uint16_t *restrict m,
                                 uint16_t *restrict v, ptrdiff_t n, ptrdiff_t idx0,
                                 FO_FLAG_ARGS)
{
    const float b1 = A->b1, omb1 = A->omb1, b2 = A->b2, omb2 = A->omb2;
    const float es = A->es, alr = A->alr;
    const uint32_t key = A->key;
    /* the counter mod 2^32 as its own 32-bit induction variable: 32-bit
     * vector lanes (derived from the 64-bit i it took 64-bit lanes) */
    uint32_t ctr = (uint32_t)idx0;
    FO_LOWP_FLAGS(A)
    ptrdiff_t i;
    for (i = 0; i < n; i++) {
        float pi = p[i], gi = g[i];
        float m0 = fo_u2f((uint32_t)m[i] << 16), v0 = fo_u2f((uint32_t)v[i] << 16);
        float mi, vi;
        uint32_t rm, rv;
        FO_LOWP_PRELUDE(A, gi, pi);
        mi = b1 * m0 + omb1 * gi;
        vi = b2 * v0 + omb2 * (gi * gi);
        p[i] = pi - (alr * mi) / (sqrtf(vi) + es);
        if (sto) {
            uint32_t h = fo_mix32(key ^ ctr);
            rm = h & 0xFFFFu;
            rv = h >> 16;
        } else {
            rm = fo_bf16_nearest_bits(mi);
            rv = fo_bf16_nearest_bits(vi);
        }
        m[i] = fo_bf16_encode(mi, rm);
        v[i] = fo_bf16_encode(vi, rv);
        ctr++;
    }
}

/* Adam with float32 moments (tensors under QMIN_ELEMENTS in int8 mode):
 * families.adam.adam_tensor without AMSGrad. */
FO_INLINE void fo_adam_f32_body(const fo_lowp_args *A, float *restrict p,
                                const float *restrict g, float *restrict m,
                                float *restrict v, ptrdiff_t n, FO_FLAG_ARGS)
{
    const float lr = A->lr, b1 = A->b1, omb1 = A->omb1, b2 = A->b2, omb2 = A->omb2;
    const float e = A->eps, c2 = A->c2;
    const double rc1 = A->rc1;
    FO_LOWP_FLAGS(A)
    ptrdiff_t i;
    for (i = 0; i < n; i++) {
        float pi = p[i], gi = g[i], m0 = m[i], v0 = v[i], mi, vi;
        FO_LOWP_PRELUDE(A, gi, pi);
        mi = b1 * m0 + omb1 * gi;
        vi = b2 * v0 + omb2 * (gi * gi);
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - (lr * (float)((double)mi * rc1)) / (sqrtf(vi / c2) + e);
    }
}

/* The encoding half of a block: codes of m (mb) and s = sqrt(v) (sb) at
 * the block's new scales fm, fs (k elements, counter of element 0 ctr). */
FO_INLINE void fo_q8_encode(const float *restrict mb, const float *restrict sb,
                            ptrdiff_t k, float fm, float fs, uint8_t *restrict mc,
                            uint8_t *restrict vc, uint32_t key, uint32_t ctr, int sto)
{
    const float inv_m = fm == 0.0f ? 0.0f : 1.0f / fm;
    const float inv_s = fs == 0.0f ? 0.0f : 1.0f / fs;
    ptrdiff_t i;
    for (i = 0; i < k; i++) {
        uint32_t bm = fo_f2u(fabsf(mb[i]) * inv_m), bs = fo_f2u(sb[i] * inv_s);
        uint32_t rm, rs, cm, cs;
        if (sto) {  /* adam_lowp.q8_rounding_bits */
            uint32_t h = (key + ctr) * 0x9E3779B1u;
            rm = h >> 12;
            rs = (h * 0x85EBCA6Bu) >> 13;
        } else {
            rm = 0x7FFFFu + ((bm >> 20) & 1u);
            rs = 0x3FFFFu + ((bs >> 19) & 1u);
        }
        cm = (bm + rm) >> 20;
        cm = cm < 889u ? 889u : cm;
        cm = cm > 1016u ? 1016u : cm;
        cs = (bs + rs) >> 19;
        cs = cs < 1777u ? 1777u : cs;
        cs = cs > 2032u ? 2032u : cs;
        mc[i] = (uint8_t)((cm - 889u) | ((fo_f2u(mb[i]) >> 31) << 7));
        vc[i] = (uint8_t)(cs - 1777u);
        ctr++;
    }
}

/* A block whose largest |m| or s bit pattern (*am, *as) is a NaN's: each
 * NaN m, s and scale becomes the positive quiet NaN before encoding
 * (adam_lowp.adam_q8_tensor: a NaN's sign and payload depend on operand
 * order).  Called only for such blocks, off the finite path. */
FO_INLINE void fo_q8_nan_block(float *restrict mb, float *restrict sb, ptrdiff_t k,
                               uint32_t *am, uint32_t *as)
{
    const float qnan = fo_u2f(0x7FC00000u);
    ptrdiff_t i;
    for (i = 0; i < k; i++) {
        if (mb[i] != mb[i]) mb[i] = qnan;
        if (sb[i] != sb[i]) sb[i] = qnan;
    }
    if (*am > 0x7F800000u) *am = 0x7FC00000u;
    if (*as > 0x7F800000u) *as = 0x7FC00000u;
}

/* One block of k <= FO_QBLOCK elements with 8-bit m, v: decode, update,
 * write p, find the new scales, encode (families.adam_lowp.adam_q8_tensor). */
FO_INLINE void fo_adam_q8_block(const fo_lowp_args *A, float *restrict p,
                                const float *restrict g, uint8_t *restrict mc,
                                uint8_t *restrict vc, float *restrict ms,
                                float *restrict vs, ptrdiff_t k, ptrdiff_t idx0,
                                FO_FLAG_ARGS)
{
    const float b1 = A->b1, omb1 = A->omb1, b2 = A->b2, omb2 = A->omb2;
    const float es = A->es, alr = A->alr;
    /* the old scales folded into the decay factors (float32, per block) */
    const float b1ms = b1 * *ms, b2vs = (b2 * *vs) * *vs;
    float mb[FO_QBLOCK], sb[FO_QBLOCK];
    uint32_t amax_m = 0, amax_s = 0;
    FO_LOWP_FLAGS(A)
    ptrdiff_t i;
    for (i = 0; i < k; i++) {
        uint32_t cm = mc[i], mag = cm & 127u;
        float pi = p[i], gi = g[i], mi, vi, si, d;
        float dm = fo_u2f((mag == 0 ? 0u : (mag + 889u) << 20) | ((cm >> 7) << 31));
        float ds = fo_u2f(((uint32_t)vc[i] + 1777u) << 19);
        uint32_t am, as;
        FO_LOWP_PRELUDE(A, gi, pi);
        mi = dm * b1ms + omb1 * gi;
        vi = (ds * ds) * b2vs + omb2 * (gi * gi);
        si = sqrtf(vi);
        d = si + es;
        p[i] = pi - (alr * mi) / d;
        mb[i] = mi;
        sb[i] = si;
        am = fo_f2u(mi) & 0x7FFFFFFFu;
        as = fo_f2u(si) & 0x7FFFFFFFu;
        amax_m = am > amax_m ? am : amax_m;
        amax_s = as > amax_s ? as : amax_s;
    }
    if (amax_m > 0x7F800000u || amax_s > 0x7F800000u)
        fo_q8_nan_block(mb, sb, k, &amax_m, &amax_s);
    /* the counter mod 2^32 (idx0's low 32 bits) */
    fo_q8_encode(mb, sb, k, fo_u2f(amax_m), fo_u2f(amax_s), mc, vc, A->key,
                 (uint32_t)idx0, sto);
    *ms = fo_u2f(amax_m);
    *vs = fo_u2f(amax_s);
}

/* Elements [0, n) of one tensor, n from a block start: whole blocks, then a
 * last partial one. */
FO_INLINE void fo_adam_q8_body(const fo_lowp_args *A, float *restrict p,
                               const float *restrict g, uint8_t *restrict mc,
                               uint8_t *restrict vc, float *restrict ms,
                               float *restrict vs, ptrdiff_t n, ptrdiff_t idx0,
                               FO_FLAG_ARGS)
{
    ptrdiff_t a, b;
    /* Whole blocks with a literal length (no loop remainders), then the last. */
    for (a = 0; a + FO_QBLOCK <= n; a += FO_QBLOCK)
        fo_adam_q8_block(A, p + a, g + a, mc + a, vc + a, ms + a / FO_QBLOCK,
                         vs + a / FO_QBLOCK, FO_QBLOCK, idx0 + a, f_scale, f_max, f_l2,
                         f_shrink, sto);
    b = n - a;
    if (b > 0)
        fo_adam_q8_block(A, p + a, g + a, mc + a, vc + a, ms + a / FO_QBLOCK,
                         vs + a / FO_QBLOCK, b, idx0 + a, f_scale, f_max, f_l2, f_shrink, sto);
}

/* CALL(flags...) with literal flags for the common cases (no clipping, no
 * maximize, no L2; AdamW's decay or none; either rounding), the step's own
 * flags otherwise. */
#define FO_LOWP_DISPATCH(A, CALL)                                                       \
    do {                                                                                \
        if ((A)->scale || (A)->maximize || (A)->l2)                                     \
            CALL((A)->scale, (A)->maximize, (A)->l2, (A)->shrink_p, (A)->stochastic);   \
        else if ((A)->shrink_p) {                                                       \
            if ((A)->stochastic) CALL(0, 0, 0, 1, 1); else CALL(0, 0, 0, 1, 0);         \
        } else {                                                                        \
            if ((A)->stochastic) CALL(0, 0, 0, 0, 1); else CALL(0, 0, 0, 0, 0);         \
        }                                                                               \
    } while (0)

#define FO_LOWP_BUILD(SUFFIX, ATTR)                                                     \
    static ATTR void fo_adam_bf16_##SUFFIX(const fo_lowp_args *A, float *p,              \
                                           const float *g, uint16_t *m, uint16_t *v,     \
                                           ptrdiff_t n, ptrdiff_t idx0)                  \
    { FO_LOWP_DISPATCH(A, FO_BF16_CALL_##SUFFIX); }                                      \
    static ATTR void fo_adam_f32_##SUFFIX(const fo_lowp_args *A, float *p,               \
                                          const float *g, float *m, float *v,            \
                                          ptrdiff_t n)                                   \
    { FO_LOWP_DISPATCH(A, FO_F32_CALL); }                                                \
    static ATTR void fo_adam_q8_##SUFFIX(const fo_lowp_args *A, float *p,                \
                                         const float *g, uint8_t *mc, uint8_t *vc,       \
                                         float *ms, float *vs, ptrdiff_t n,              \
                                         ptrdiff_t idx0)                                 \
    { FO_LOWP_DISPATCH(A, FO_Q8_CALL_##SUFFIX); }

#define FO_BF16_CALL_base(...) fo_adam_bf16_body(A, p, g, m, v, n, idx0, __VA_ARGS__)
#define FO_BF16_CALL_avx2(...) fo_v8_bf16_body(A, p, g, m, v, n, idx0, __VA_ARGS__)
#define FO_BF16_CALL_avx512 FO_BF16_CALL_base
#define FO_F32_CALL(...) fo_adam_f32_body(A, p, g, m, v, n, __VA_ARGS__)
#define FO_Q8_CALL_base(...) fo_adam_q8_body(A, p, g, mc, vc, ms, vs, n, idx0, __VA_ARGS__)
#define FO_Q8_CALL_avx2(...) fo_v8_q8_body(A, p, g, mc, vc, ms, vs, n, idx0, __VA_ARGS__)
#define FO_Q8_CALL_avx512(...) fo_v16_q8_body(A, p, g, mc, vc, ms, vs, n, idx0, __VA_ARGS__)

FO_LOWP_BUILD(base, )

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) \
    && !defined(FUSEDOPTIM_NO_SIMD)
#define FO_LOWP_X86 1
#include <immintrin.h>
#include "adam_lowp_isa.h"
#include "adam_lowp_bf16_avx2.h"
FO_LOWP_BUILD(avx2, FO_AVX2_ATTR)
FO_LOWP_BUILD(avx512, FO_AVX512_ATTR)
#include "adam_lowp_bf16.h"

/* 3: AVX-512 (F, BW, DQ, VL) and AVX512_BF16, 2: AVX-512 without it, 1: AVX2,
 * 0: neither (baseline loops). */
static inline int fo_lowp_isa(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        return __builtin_cpu_supports("avx512bf16") ? 3 : 2;
    return __builtin_cpu_supports("avx2") ? 1 : 0;
}
#else
#define FO_LOWP_X86 0
#define fo_adam_bf16_avx2 fo_adam_bf16_base
#define fo_adam_f32_avx2 fo_adam_f32_base
#define fo_adam_q8_avx2 fo_adam_q8_base
#define fo_adam_bf16_avx512 fo_adam_bf16_base
#define fo_adam_bf16_avx512bf fo_adam_bf16_base
#define fo_adam_f32_avx512 fo_adam_f32_base
#define fo_adam_q8_avx512 fo_adam_q8_base
static inline int fo_lowp_isa(void) { return 0; }
#endif

#endif
