/* The loops of lowp_onestate.h, written once as always-inline bodies with
 * literal arguments: isa (FO_ISA_*, the build they are compiled into), fam
 * (LowpDecl.index), sq (the sqrt codec), pre (any prelude flag) and sto
 * (stochastic rounding); every body takes the same arguments (FO1_ENTRY).
 *
 * Written for the vectorizer: one 32-bit lane per element from the load
 * (the counter of the rounding bits a uint32 induction variable), the
 * codecs integer operations on bit patterns, selects instead of branches.
 * The int8 block runs in three loops over an L1 buffer (decode; update and
 * block maximum; encode), the AVX-512 and AVX2 builds' decode and encode
 * of whole blocks as explicit vectors (lowp_onestate_vec.h), with a later
 * block's data prefetched before the encode (it reads no memory, and the
 * hardware's streams would idle through it, as in Adam's int8 loop).
 */

/* Blocks ahead of the prefetch (2^24 elements, 2 threads, shared machine:
 * 2 ahead ran the int8 steps 0-15% faster than 1; 4 was slower). */
#ifndef FO1_AHEAD
#define FO1_AHEAD 2
#endif

#define FO1_BODY_ARGS const int isa, const int fam, const int sq, const fo1_args *A,    \
    float *restrict p, const float *restrict g, void *st, float *restrict sc,           \
    ptrdiff_t n, ptrdiff_t idx0, const int pre, const int sto

/* bfloat16 words of the state (rounded from the new float32 state). */
FO1_INLINE void fo1_bf16_body(FO1_BODY_ARGS)
{
    /* a local copy: the family's flags are then loop invariants */
    const fo1_args L = *A;
    uint16_t *restrict w = (uint16_t *)st;
    uint32_t ctr = (uint32_t)idx0;
    ptrdiff_t i;
    (void)isa;
    (void)sc;
    for (i = 0; i < n; i++) {
        float pi = p[i];
        float gi = pre ? fo1_prelude(&L, pi, g[i]) : g[i];
        float x1 = fo1_elem(fam, &L, &pi, gi, fo_u2f((uint32_t)w[i] << 16));
        uint32_t r;
        p[i] = pi;
        if (sto) {
            uint32_t h = fo_mix32(L.key ^ ctr);
            r = sq ? h >> 16 : h & 0xFFFFu;
        } else {
            r = fo_bf16_nearest_bits(x1);
        }
        w[i] = fo_bf16_encode(x1, r);
        ctr++;
    }
}

/* A float32 state (tensors under QMIN_ELEMENTS in int8 mode). */
FO1_INLINE void fo1_f32_body(FO1_BODY_ARGS)
{
    const fo1_args L = *A;
    float *restrict x = (float *)st;
    ptrdiff_t i;
    (void)isa;
    (void)sq;
    (void)sc;
    (void)idx0;
    (void)sto;
    for (i = 0; i < n; i++) {
        float pi = p[i];
        float gi = pre ? fo1_prelude(&L, pi, g[i]) : g[i];
        x[i] = fo1_elem(fam, &L, &pi, gi, x[i]);
        p[i] = pi;
    }
}

#if FO_SIMD_AVX2
#include <immintrin.h>
/* fo1_q8_decode16/_encode16 (AVX-512) and fo1_q8_decode8/_encode8 (AVX2):
 * one text, two widths. */
#define FO1_W 16
#include "lowp_onestate_vec.h"
#undef FO1_W
#define FO1_W 8
#include "lowp_onestate_vec.h"
#undef FO1_W
#endif

/* One block of k <= FO_QBLOCK elements with 8-bit codes, in three loops
 * over an L1 buffer: decode; update, write p and find the block's new
 * scale; encode.  In the AVX-512 and AVX2 builds a whole block's decode
 * and encode are the explicit vectors above.  pf: prefetch the p, g and
 * codes of the block FO1_AHEAD on, before the encode (which reads no
 * memory). */
FO1_INLINE void fo1_q8_block(const int isa, const int fam, const int sq, const fo1_args *L,
                             float *restrict p, const float *restrict g,
                             uint8_t *restrict c, float *restrict sc, ptrdiff_t k,
                             uint32_t ctr, const int pre, const int sto, const int pf)
{
    const float s0 = *sc;
    uint32_t amax = 0;
    float xb[FO_QBLOCK] __attribute__((aligned(64)));
    float fs, inv;
    ptrdiff_t i;
#if FO_SIMD_AVX2
    if (isa == FO_ISA_AVX512 && k == FO_QBLOCK)
        fo1_q8_decode16(sq, c, s0, xb);
    else if (isa == FO_ISA_AVX2 && k == FO_QBLOCK)
        fo1_q8_decode8(sq, c, s0, xb);
    else
#endif
    for (i = 0; i < k; i++) {
        if (sq) {
            float s = fo_q8v_decode(c[i]) * s0;
            xb[i] = s * s;
        } else {
            xb[i] = fo_q8m_decode(c[i]) * s0;
        }
    }
    for (i = 0; i < k; i++) {
        float pi = p[i], x1, y;
        float gi = pre ? fo1_prelude(L, pi, g[i]) : g[i];
        uint32_t ay;
        x1 = fo1_elem(fam, L, &pi, gi, xb[i]);
        p[i] = pi;
        y = sq ? sqrtf(x1) : x1;
        xb[i] = y;
        ay = fo_f2u(y) & 0x7FFFFFFFu;
        amax = ay > amax ? ay : amax;
    }
    if (pf) {
        for (i = 0; i < FO_QBLOCK * 4; i += 64) {
            __builtin_prefetch((const char *)(p + FO1_AHEAD * FO_QBLOCK) + i);
            __builtin_prefetch((const char *)(g + FO1_AHEAD * FO_QBLOCK) + i);
        }
        for (i = 0; i < FO_QBLOCK; i += 64)
            __builtin_prefetch(c + FO1_AHEAD * FO_QBLOCK + i);
    }
    fs = fo_u2f(amax);
    inv = fs == 0.0f ? 0.0f : 1.0f / fs;
    *sc = fs;
#if FO_SIMD_AVX2
    if (isa == FO_ISA_AVX512 && k == FO_QBLOCK) {
        fo1_q8_encode16(sq, sto, xb, inv, L->key, ctr, c);
        return;
    }
    if (isa == FO_ISA_AVX2 && k == FO_QBLOCK) {
        fo1_q8_encode8(sq, sto, xb, inv, L->key, ctr, c);
        return;
    }
#endif
    for (i = 0; i < k; i++) {
        float y = xb[i];
        uint32_t r, ci = ctr + (uint32_t)i;
        if (sq) {
            uint32_t b = fo_f2u(y * inv);
            r = sto ? fo_q8v_bits(L->key, ci) : fo_q8_nearest(b, FO_Q8V_SHIFT);
            c[i] = (uint8_t)fo_q8v_code(b, r);
        } else {
            uint32_t b = fo_f2u(fabsf(y) * inv);
            r = sto ? fo_q8m_bits(L->key, ci) : fo_q8_nearest(b, FO_Q8M_SHIFT);
            /* a NaN takes sign 0 (lowp_onestate.encode) */
            c[i] = (uint8_t)(fo_q8m_mag(b, r) | ((y == y ? fo_f2u(y) >> 31 : 0u) << 7));
        }
    }
}

/* Elements [0, n) from a block start: whole blocks (literal length), then
 * the last partial one.  The rounding counter is idx0 mod 2^32. */
FO1_INLINE void fo1_q8_body(FO1_BODY_ARGS)
{
    const fo1_args L = *A;
    uint8_t *c = (uint8_t *)st;
    ptrdiff_t a;
    for (a = 0; a + FO_QBLOCK <= n; a += FO_QBLOCK)
        fo1_q8_block(isa, fam, sq, &L, p + a, g + a, c + a, sc + a / FO_QBLOCK, FO_QBLOCK,
                     (uint32_t)(idx0 + a), pre, sto, a + (FO1_AHEAD + 1) * FO_QBLOCK <= n);
    if (n > a)
        fo1_q8_block(isa, fam, sq, &L, p + a, g + a, c + a, sc + a / FO_QBLOCK, n - a,
                     (uint32_t)(idx0 + a), pre, sto, 0);
}

#undef FO1_BODY_ARGS
