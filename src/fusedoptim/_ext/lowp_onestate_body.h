/* The loops of lowp_onestate.h, written once as always-inline bodies with
 * literal arguments: isa (FO_ISA_*, the build they are compiled into), fam
 * (LowpDecl.index), sq (the sqrt codec), pre (any prelude flag) and sto
 * (stochastic rounding); every body takes the same arguments (FO1_ENTRY).
 *
 * Written for the vectorizer: one 32-bit lane per element from the load
 * (the counter of the rounding bits a uint32 induction variable), the
 * codecs integer operations on bit patterns, selects instead of branches.
 * The int8 block runs in three loops over an L1 buffer (decode; update and
 * block maximum; encode), the AVX-512 build's decode and encode of whole
 * blocks as explicit vectors, with a later block's data prefetched before
 * the encode (it reads no memory, and the hardware's streams would idle
 * through it, as in Adam's int8 loop).
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
            r = 0x7FFFu + ((fo_f2u(x1) >> 16) & 1u);
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
/* The codec passes of a whole int8 block with AVX-512 (16 lanes; the scalar
 * passes below are their spec, operation for operation: GCC vectorized
 * those through 16-bit lanes and byte/word widenings, about twice the
 * instructions).  Decode: xb = the decoded state of codes c at scale s0. */
static FO_AVX512 void
fo1_q8_decode16(const int sq, const uint8_t *restrict c, float s0, float *restrict xb)
{
    const __m512 vs0 = _mm512_set1_ps(s0);
    int i;
    for (i = 0; i < FO_QBLOCK; i += 16) {
        __m512i ci = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(c + i)));
        __m512 x;
        if (sq) {
            __m512 s = _mm512_mul_ps(_mm512_castsi512_ps(_mm512_slli_epi32(
                _mm512_add_epi32(ci, _mm512_set1_epi32((int)FO_Q8V_LO)), FO_Q8V_SHIFT)), vs0);
            x = _mm512_mul_ps(s, s);
        } else {
            /* sign << 31 | (mag + LO) << SHIFT, or sign << 31 for mag 0 */
            __m512i u = _mm512_and_si512(_mm512_slli_epi32(ci, 24), _mm512_set1_epi32((int)0x80000000u));
            __m512i m = _mm512_and_si512(ci, _mm512_set1_epi32(127));
            u = _mm512_mask_or_epi32(u, _mm512_test_epi32_mask(m, m), u,
                                     _mm512_slli_epi32(_mm512_add_epi32(m, _mm512_set1_epi32((int)FO_Q8M_LO)),
                                                       FO_Q8M_SHIFT));
            x = _mm512_mul_ps(_mm512_castsi512_ps(u), vs0);
        }
        _mm512_store_ps(xb + i, x);
    }
}

/* fo_q8_code of 16 lanes: b the bit patterns, r their stochastic rounding
 * bits (read only if sto, a literal: otherwise nearest even, and the
 * caller's computation of r is dead code), the field at shift clamped to
 * [lo, hi] and rebased.  Both codes take it, with their constants. */
FO_INLINE FO_AVX512 __m512i
fo1_q8_code16(__m512i b, __m512i r, const int sto, const int shift, uint32_t lo, uint32_t hi)
{
    __m512i cc;
    if (!sto)
        r = _mm512_add_epi32(_mm512_and_si512(_mm512_srli_epi32(b, shift), _mm512_set1_epi32(1)),
                             _mm512_set1_epi32((int)FO_Q8_HALF(shift)));
    cc = _mm512_srli_epi32(_mm512_add_epi32(b, r), shift);
    cc = _mm512_min_epu32(_mm512_max_epu32(cc, _mm512_set1_epi32((int)lo)),
                          _mm512_set1_epi32((int)hi));
    return _mm512_sub_epi32(cc, _mm512_set1_epi32((int)lo));
}

/* Encode: the codes of the values y (xb) at reciprocal scale inv; rounding
 * counter ctr of element 0. */
static FO_AVX512 void
fo1_q8_encode16(const int sq, const int sto, const float *restrict xb, float inv, uint32_t key,
                uint32_t ctr, uint8_t *restrict c)
{
    const __m512 vinv = _mm512_set1_ps(inv);
    const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    __m512i h = _mm512_mullo_epi32(_mm512_add_epi32(_mm512_set1_epi32((int)(key + ctr)), iota),
                                   _mm512_set1_epi32((int)0x9E3779B1u));
    const __m512i hstep = _mm512_set1_epi32((int)(16u * 0x9E3779B1u));
    int i;
    for (i = 0; i < FO_QBLOCK; i += 16) {
        __m512 y = _mm512_load_ps(xb + i);
        __m512i cc;
        if (sq) {
            __m512i b = _mm512_castps_si512(_mm512_mul_ps(y, vinv));
            __m512i r = _mm512_srli_epi32(_mm512_mullo_epi32(h, _mm512_set1_epi32((int)0x85EBCA6Bu)),
                                          13);
            cc = fo1_q8_code16(b, r, sto, FO_Q8V_SHIFT, FO_Q8V_LO, FO_Q8V_HI);
        } else {
            __m512i yb = _mm512_castps_si512(y);
            __mmask16 ord = _mm512_cmp_ps_mask(y, y, _CMP_ORD_Q);
            __m512i b = _mm512_castps_si512(_mm512_mul_ps(_mm512_castsi512_ps(
                _mm512_and_si512(yb, _mm512_set1_epi32(0x7FFFFFFF))), vinv));
            cc = fo1_q8_code16(b, _mm512_srli_epi32(h, 12), sto, FO_Q8M_SHIFT, FO_Q8M_LO,
                               FO_Q8M_HI);
            /* the sign as bit 7, a NaN's taken as 0 */
            cc = _mm512_mask_or_epi32(cc, ord, cc,
                                      _mm512_slli_epi32(_mm512_srli_epi32(yb, 31), 7));
        }
        h = _mm512_add_epi32(h, hstep);
        _mm_storeu_si128((__m128i *)(c + i), _mm512_cvtepi32_epi8(cc));
    }
}
#endif

/* One block of k <= FO_QBLOCK elements with 8-bit codes, in three loops
 * over an L1 buffer: decode; update, write p and find the block's new
 * scale; encode.  In the AVX-512 build a whole block's decode and encode
 * are the explicit vectors above.  pf: prefetch the p, g and codes of the
 * block FO1_AHEAD on, before the encode (which reads no memory). */
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
