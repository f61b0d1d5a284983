/* Reduced-precision state for the one-state families: the element loops of
 * families/lowp_onestate.py (the spec), for float32 parameters.
 *
 * A family is its element function below (fo1_<family>_elem: the family's
 * float32 update of one element, in the reference's order, returning the new
 * state) and one entry of FO1_FAMILIES; the codec (lowp_codec.h, shared with
 * Adam's loops), blocking, rounding and dispatch are shared
 * (lowp_onestate_body.h).  Every loop is compiled for the baseline ISA and,
 * on x86-64 with GCC or Clang, with avx2.h's AVX2 and AVX-512 target
 * attributes (the widest the CPU has runs: _step's simd_isa, as for the
 * family loops).  No "fma" and -ffp-contract=off: nothing is contracted,
 * and every operation is IEEE correctly rounded or exact integer arithmetic
 * at any vector width, so every build gives the same bits.
 */
#ifndef FUSEDOPTIM_LOWP_ONESTATE_H
#define FUSEDOPTIM_LOWP_ONESTATE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <math.h>

#include "avx2.h"
#include "lowp_codec.h"

#define FO1_QBLOCK FO_QBLOCK
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

#define FO1_INLINE FO_INLINE

/* The families, in LowpDecl.index order: X(index, name, sqrt codec, ...),
 * the trailing arguments passed through. */
#define FO1_FAMILIES(X, ...)                                                   \
    X(0, sgd, 0, __VA_ARGS__) X(1, rmsprop, 1, __VA_ARGS__)                    \
    X(2, adagrad, 1, __VA_ARGS__) X(3, lion, 0, __VA_ARGS__)

/* families._spec.prelude on one element (p is not changed by it).
 * maximize flips the sign bit by an integer xor with a mask the compiler
 * cannot know, not by a branch on the flag: GCC unswitches the loop on a
 * loop-invariant flag and then folds the negation into the update
 * (p - (lr*(-g))/r as p + (lr*g)/r), exact for numbers but not for a NaN
 * gradient, whose sign then reaches the parameter flipped (RMSProp with
 * maximize, L2 and eps inside the root, int8 state; the reference and Numba
 * keep the operation order). */
FO1_INLINE float fo1_prelude(const fo1_args *A, float pi, float gi)
{
    if (A->scale) gi = gi * A->gs;
    gi = fo_u2f(fo_f2u(gi) ^ ((uint32_t)(A->maximize != 0) << 31));
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

/* The element update of family fam (a literal: the switch folds away). */
#define FO1_ELEM_CASE(I, FAM, SQ, ...) case I: return fo1_##FAM##_elem(A, pi, gi, x0);
FO1_INLINE float fo1_elem(const int fam, const fo1_args *A, float *pi, float gi, float x0)
{
    switch (fam) { FO1_FAMILIES(FO1_ELEM_CASE, ) }
    return x0;
}
#undef FO1_ELEM_CASE

#include "lowp_onestate_body.h"

/* --- instantiations: ISA x family x kind ----------------------------------- */

/* fo1_<FAM>_<KIND>_<SUF>: the body with literal ISA, family and codec, and
 * the prelude and rounding flags literal in each branch (the loops are then
 * branch-free in the common cases). */
#define FO1_ENTRY(KIND, I, SQ, FAM, SUF, ATTR, ISA)                            \
    static ATTR void fo1_##FAM##_##KIND##_##SUF(const fo1_args *A, float *p,   \
                                                 const float *g, void *st,     \
                                                 float *sc, ptrdiff_t n,       \
                                                 ptrdiff_t idx0)               \
    {                                                                          \
        if (A->scale || A->maximize || A->l2) {                                \
            if (A->stochastic)                                                 \
                fo1_##KIND##_body(ISA, I, SQ, A, p, g, st, sc, n, idx0, 1, 1); \
            else                                                               \
                fo1_##KIND##_body(ISA, I, SQ, A, p, g, st, sc, n, idx0, 1, 0); \
        } else {                                                               \
            if (A->stochastic)                                                 \
                fo1_##KIND##_body(ISA, I, SQ, A, p, g, st, sc, n, idx0, 0, 1); \
            else                                                               \
                fo1_##KIND##_body(ISA, I, SQ, A, p, g, st, sc, n, idx0, 0, 0); \
        }                                                                      \
    }
#define FO1_LOOPS(I, FAM, SQ, SUF, ATTR, ISA)                                  \
    FO1_ENTRY(bf16, I, SQ, FAM, SUF, ATTR, ISA)                                \
    FO1_ENTRY(q8, I, SQ, FAM, SUF, ATTR, ISA)                                  \
    FO1_ENTRY(f32, I, SQ, FAM, SUF, ATTR, ISA)
#define FO1_KINDS(FAM, SUF) { fo1_##FAM##_bf16_##SUF, fo1_##FAM##_q8_##SUF, fo1_##FAM##_f32_##SUF }

FO1_FAMILIES(FO1_LOOPS, base, , FO_ISA_BASELINE)
#if FO_SIMD_AVX2
FO1_FAMILIES(FO1_LOOPS, avx2, FO_AVX2, FO_ISA_AVX2)
FO1_FAMILIES(FO1_LOOPS, avx512, FO_AVX512, FO_ISA_AVX512)
#define FO1_ROW(I, FAM, ...) { FO1_KINDS(FAM, base), FO1_KINDS(FAM, avx2), FO1_KINDS(FAM, avx512) },
#else
#define FO1_ROW(I, FAM, ...) { FO1_KINDS(FAM, base), FO1_KINDS(FAM, base), FO1_KINDS(FAM, base) },
#endif

/* fo1_table[family (LowpDecl.index)][isa (FO_ISA_*)][kind: 0 bf16, 1 int8, 2 float32] */
static const fo1_fn fo1_table[FO1_NFAM][3][3] = { FO1_FAMILIES(FO1_ROW, ) };

#undef FO1_ENTRY
#undef FO1_LOOPS
#undef FO1_KINDS
#undef FO1_ROW

FO1_INLINE fo1_fn fo1_get(int fam, int isa, int kind) { return fo1_table[fam][isa][kind]; }

#endif
