/* Reduced-precision state for the one-state families: the element loops of
 * families/lowp_onestate.py (the spec), for float32 parameters.
 *
 * A family is its element function below (fo1_<family>_elem: the family's
 * float32 update of one element, in the reference's order, returning the new
 * state) and one line of lowp_onestate_body.h instantiations; the codec,
 * blocking, rounding and dispatch are shared.  Each family is compiled for the
 * baseline ISA and with target("avx2") (no "fma": nothing is contracted, and
 * every operation is IEEE correctly rounded or exact integer arithmetic at
 * any vector width, so both builds give the same bits).
 *
 * The codec helpers are duplicates of adam_lowp.h's (fo_f2u, fo_u2f,
 * fo_mix32, fo_bf16_encode and the q8 m/v bit formulas) under the fo1_
 * prefix, so that this module does not depend on that header's internals
 * while it is being tuned; families/adam_lowp.py is the spec of both.
 */
#ifndef FUSEDOPTIM_LOWP_ONESTATE_H
#define FUSEDOPTIM_LOWP_ONESTATE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <math.h>

#define FO1_QBLOCK 256
#define FO1_NFAM 4

typedef struct {
    float s[8];          /* the family's scalars (LowpDecl.scalars), rounded once */
    float gs, wd;        /* the prelude's clipping scale and L2 decay */
    uint32_t key;        /* step_key(seed, t) */
    int f[4];            /* the family's flags (LowpDecl.flags) */
    int scale, maximize, l2, stochastic;
} fo1_args;

/* Every loop: p, g, the slot (uint16 words, uint8 codes or float32), the
 * block scales (int8 codes only), n elements, index of element 0 in the step. */
typedef void (*fo1_fn)(const fo1_args *A, float *p, const float *g, void *st,
                       float *sc, ptrdiff_t n, ptrdiff_t idx0);

#define FO1_INLINE static inline __attribute__((always_inline))

FO1_INLINE uint32_t fo1_f2u(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
FO1_INLINE float fo1_u2f(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }

/* lowbias32 (adam_lowp.mix32). */
FO1_INLINE uint32_t fo1_mix32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}

/* adam_lowp.bf16_encode with rounding bits r, a NaN stored as the positive
 * quiet NaN (lowp_onestate.encode: its sign is an accident of operand order). */
FO1_INLINE uint16_t fo1_bf16_encode(float x, uint32_t r)
{
    uint32_t b = fo1_f2u(x);
    uint32_t w = (b + r) >> 16;
    return (uint16_t)(x != x ? 0x7FC0u : w);
}

/* adam_lowp.q8m_decode / q8v_decode (times the block's scale outside). */
FO1_INLINE float fo1_q8m_decode(uint32_t c)
{
    uint32_t mag = c & 127u;
    return fo1_u2f((mag == 0 ? 0u : (mag + 889u) << 20) | ((c >> 7) << 31));
}
FO1_INLINE float fo1_q8v_decode(uint32_t c) { return fo1_u2f((c + 1777u) << 19); }

/* families._spec.prelude on one element (p is not changed by it). */
FO1_INLINE float fo1_prelude(const fo1_args *A, float pi, float gi)
{
    if (A->scale) gi = gi * A->gs;
    if (A->maximize) gi = -gi;
    if (A->l2) gi = gi + A->wd * pi;
    return gi;
}

/* --- the families' element updates (x0: the decoded state; returns the new
 * state; *pi: the parameter, updated) ------------------------------------- */

/* sgd.sgd_tensor with a buffer: s = (lr, momentum, 1 - dampening),
 * f = (nesterov, first). */
FO1_INLINE float fo1_sgd_elem(const fo1_args *A, float *pi, float gi, float x0)
{
    float b = A->f[1] ? gi : A->s[1] * x0 + A->s[2] * gi;
    float d = A->f[0] ? gi + A->s[1] * b : b;
    *pi = *pi - A->s[0] * d;
    return b;
}

/* rmsprop.rmsprop_tensor, not centered, no buffer: s = (lr, alpha,
 * 1 - alpha, eps), f = (eps_inside,). */
FO1_INLINE float fo1_rmsprop_elem(const fo1_args *A, float *pi, float gi, float x0)
{
    float x1, r;
    if (A->f[0]) {
        x1 = A->s[1] * x0 + A->s[2] * (gi * gi);
        r = sqrtf(x1 + A->s[3]);
    } else {
        x1 = A->s[1] * x0 + (A->s[2] * gi) * gi;
        r = sqrtf(x1) + A->s[3];
    }
    *pi = *pi - (A->s[0] * gi) / r;
    return x1;
}

/* adagrad.adagrad_tensor: s = (lr, eps). */
FO1_INLINE float fo1_adagrad_elem(const fo1_args *A, float *pi, float gi, float x0)
{
    float x1 = x0 + gi * gi;
    *pi = *pi - A->s[0] * (gi / (sqrtf(x1) + A->s[1]));
    return x1;
}

/* lion.lion_tensor: s = (lr, b1, 1 - b1, b2, 1 - b2, wd), f = (wd != 0,);
 * np.sign as selects (+1, -1, +0 for either zero, NaN itself). */
FO1_INLINE float fo1_lion_elem(const fo1_args *A, float *pi, float gi, float x0)
{
    float c = A->s[1] * x0 + A->s[2] * gi;
    float u = c > 0 ? 1.0f : (c < 0 ? -1.0f : (c == c ? 0.0f : c));
    if (A->f[0]) u = u + A->s[5] * *pi;
    *pi = *pi - A->s[0] * u;
    return A->s[3] * x0 + A->s[4] * gi;
}

/* FO1_CALL(pre, sto) with literal flags: the loops without the prelude's
 * branches in the common case, and either rounding. */
#define FO1_DISPATCH(A)                                                        \
    do {                                                                       \
        int pre_ = (A)->scale || (A)->maximize || (A)->l2;                     \
        if (pre_) {                                                            \
            if ((A)->stochastic) FO1_CALL(1, 1); else FO1_CALL(1, 0);          \
        } else {                                                               \
            if ((A)->stochastic) FO1_CALL(0, 1); else FO1_CALL(0, 0);          \
        }                                                                      \
    } while (0)

/* --- instantiations: family x ISA ----------------------------------------- */

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) \
    && !defined(FUSEDOPTIM_NO_SIMD)
#define FO1_X86 1
#else
#define FO1_X86 0
#endif

#define FO1_ISA base
#define FO1_ATTR
#define FO1_FAM sgd
#define FO1_SQRT 0
#include "lowp_onestate_body.h"
#define FO1_FAM rmsprop
#define FO1_SQRT 1
#include "lowp_onestate_body.h"
#define FO1_FAM adagrad
#define FO1_SQRT 1
#include "lowp_onestate_body.h"
#define FO1_FAM lion
#define FO1_SQRT 0
#include "lowp_onestate_body.h"
#undef FO1_ISA
#undef FO1_ATTR

#if FO1_X86
#define FO1_ISA avx2
#define FO1_ATTR __attribute__((target("avx2")))
#define FO1_FAM sgd
#define FO1_SQRT 0
#include "lowp_onestate_body.h"
#define FO1_FAM rmsprop
#define FO1_SQRT 1
#include "lowp_onestate_body.h"
#define FO1_FAM adagrad
#define FO1_SQRT 1
#include "lowp_onestate_body.h"
#define FO1_FAM lion
#define FO1_SQRT 0
#include "lowp_onestate_body.h"
#undef FO1_ISA
#undef FO1_ATTR
#define FO1_ROW(FAM) { { fo1_##FAM##_bf16_base, fo1_##FAM##_q8_base, fo1_##FAM##_f32_base }, \
                       { fo1_##FAM##_bf16_avx2, fo1_##FAM##_q8_avx2, fo1_##FAM##_f32_avx2 } }
/* 1: AVX2, 0: baseline loops. */
static inline int fo1_isa(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") ? 1 : 0;
}
#else
#define FO1_ROW(FAM) { { fo1_##FAM##_bf16_base, fo1_##FAM##_q8_base, fo1_##FAM##_f32_base }, \
                       { fo1_##FAM##_bf16_base, fo1_##FAM##_q8_base, fo1_##FAM##_f32_base } }
static inline int fo1_isa(void) { return 0; }
#endif

/* fo1_table[family (LowpDecl.index)][isa][kind: 0 bf16, 1 int8, 2 float32] */
static const fo1_fn fo1_table[FO1_NFAM][2][3] = {
    FO1_ROW(sgd), FO1_ROW(rmsprop), FO1_ROW(adagrad), FO1_ROW(lion)
};

FO1_INLINE fo1_fn fo1_get(int fam, int isa, int kind) { return fo1_table[fam][isa][kind]; }

#endif
