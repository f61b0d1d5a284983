/* The loops of one family and ISA (lowp_onestate.h includes this once per
 * family and ISA, with FO1_FAM, FO1_SQRT, FO1_ISA and FO1_ATTR defined):
 * fo1_<FAM>_{bf16,q8,f32}_<ISA>, in families.lowp_onestate's order.  No
 * include guard on purpose. */

#define FO1_CAT4(a, b, c, d) a##b##_##c##_##d
#define FO1_XCAT4(a, b, c, d) FO1_CAT4(a, b, c, d)
#define FO1_NAME(KIND) FO1_XCAT4(fo1_, FO1_FAM, KIND, FO1_ISA)
#define FO1_CAT3(a, b, c) a##b##c
#define FO1_XCAT3(a, b, c) FO1_CAT3(a, b, c)
#define FO1_ELEM FO1_XCAT3(fo1_, FO1_FAM, _elem)

/* bfloat16 words of the state (rounded from the new float32 state); pre:
 * any prelude flag, sto: stochastic rounding (literals, FO1_DISPATCH). */
FO1_INLINE void FO1_XCAT3(FO1_NAME(bf16), _, body)(const fo1_args *A, float *restrict p,
                                                   const float *restrict g, void *st,
                                                   ptrdiff_t n, ptrdiff_t idx0,
                                                   const int pre, const int sto)
{
    /* a local copy: the flags are then loop invariants (unswitched loops) */
    const fo1_args L = *A;
    uint16_t *restrict w = (uint16_t *)st;
    uint32_t ctr = (uint32_t)idx0;
    ptrdiff_t i;
    for (i = 0; i < n; i++) {
        float pi = p[i];
        float gi = pre ? fo1_prelude(&L, pi, g[i]) : g[i];
        float x1 = FO1_ELEM(&L, &pi, gi, fo1_u2f((uint32_t)w[i] << 16));
        uint32_t r;
        p[i] = pi;
        if (sto) {
            uint32_t h = fo1_mix32(L.key ^ ctr);
            r = FO1_SQRT ? h >> 16 : h & 0xFFFFu;
        } else {
            r = 0x7FFFu + ((fo1_f2u(x1) >> 16) & 1u);
        }
        w[i] = fo1_bf16_encode(x1, r);
        ctr++;
    }
}

static FO1_ATTR void FO1_NAME(bf16)(const fo1_args *A, float *p, const float *g, void *st,
                                    float *sc, ptrdiff_t n, ptrdiff_t idx0)
{
    (void)sc;
#define FO1_CALL(PRE, STO) \
    FO1_XCAT3(FO1_NAME(bf16), _, body)(A, p, g, st, n, idx0, PRE, STO)
    FO1_DISPATCH(A);
#undef FO1_CALL
}

/* A float32 state (tensors under QMIN_ELEMENTS in int8 mode). */
FO1_INLINE void FO1_XCAT3(FO1_NAME(f32), _, body)(const fo1_args *A, float *restrict p,
                                                  const float *restrict g, void *st,
                                                  ptrdiff_t n, const int pre)
{
    const fo1_args L = *A;
    float *restrict x = (float *)st;
    ptrdiff_t i;
    for (i = 0; i < n; i++) {
        float pi = p[i];
        float gi = pre ? fo1_prelude(&L, pi, g[i]) : g[i];
        x[i] = FO1_ELEM(&L, &pi, gi, x[i]);
        p[i] = pi;
    }
}

static FO1_ATTR void FO1_NAME(f32)(const fo1_args *A, float *p, const float *g, void *st,
                                   float *sc, ptrdiff_t n, ptrdiff_t idx0)
{
    (void)sc;
    (void)idx0;
    if (A->scale || A->maximize || A->l2)
        FO1_XCAT3(FO1_NAME(f32), _, body)(A, p, g, st, n, 1);
    else
        FO1_XCAT3(FO1_NAME(f32), _, body)(A, p, g, st, n, 0);
}

/* One block of k <= FO1_QBLOCK elements with 8-bit codes: decode, update,
 * write p, find the block's new scale, encode. */
FO1_INLINE void FO1_XCAT3(FO1_NAME(q8), _, block)(const fo1_args *L, float *restrict p,
                                                  const float *restrict g,
                                                  uint8_t *restrict c, float *restrict sc,
                                                  ptrdiff_t k, ptrdiff_t idx0,
                                                  const int pre, const int sto)
{
    const float s0 = *sc;
    uint32_t ctr = (uint32_t)idx0, amax = 0;
    float yb[FO1_QBLOCK], fs, inv;
    ptrdiff_t i;
    for (i = 0; i < k; i++) {
        float pi = p[i], x0, x1, y;
        float gi = pre ? fo1_prelude(L, pi, g[i]) : g[i];
        uint32_t ay;
        if (FO1_SQRT) {
            float s = fo1_q8v_decode(c[i]) * s0;
            x0 = s * s;
        } else {
            x0 = fo1_q8m_decode(c[i]) * s0;
        }
        x1 = FO1_ELEM(L, &pi, gi, x0);
        p[i] = pi;
        y = FO1_SQRT ? sqrtf(x1) : x1;
        yb[i] = y;
        ay = fo1_f2u(y) & 0x7FFFFFFFu;
        amax = ay > amax ? ay : amax;
    }
    fs = fo1_u2f(amax);
    inv = fs == 0.0f ? 0.0f : 1.0f / fs;
    for (i = 0; i < k; i++) {
        uint32_t r, cc;
        if (FO1_SQRT) {
            uint32_t b = fo1_f2u(yb[i] * inv);
            if (sto)
                /* adam_lowp.q8_rounding_bits, v's */
                r = (((L->key + ctr) * 0x9E3779B1u) * 0x85EBCA6Bu) >> 13;
            else
                r = 0x3FFFFu + ((b >> 19) & 1u);
            cc = (b + r) >> 19;
            cc = cc < 1777u ? 1777u : cc;
            cc = cc > 2032u ? 2032u : cc;
            c[i] = (uint8_t)(cc - 1777u);
        } else {
            uint32_t b = fo1_f2u(fabsf(yb[i]) * inv);
            if (sto)
                /* adam_lowp.q8_rounding_bits, m's */
                r = ((L->key + ctr) * 0x9E3779B1u) >> 12;
            else
                r = 0x7FFFFu + ((b >> 20) & 1u);
            cc = (b + r) >> 20;
            cc = cc < 889u ? 889u : cc;
            cc = cc > 1016u ? 1016u : cc;
            /* a NaN takes sign 0 (lowp_onestate.encode) */
            c[i] = (uint8_t)((cc - 889u) | ((yb[i] == yb[i] ? fo1_f2u(yb[i]) >> 31 : 0u) << 7));
        }
        ctr++;
    }
    *sc = fs;
}

/* Elements [0, n) from a block start: whole blocks (literal length), then
 * the last partial one. */
FO1_INLINE void FO1_XCAT3(FO1_NAME(q8), _, body)(const fo1_args *A, float *restrict p,
                                                 const float *restrict g, void *st,
                                                 float *sc, ptrdiff_t n, ptrdiff_t idx0,
                                                 const int pre, const int sto)
{
    const fo1_args L = *A;
    uint8_t *c = (uint8_t *)st;
    ptrdiff_t a;
    for (a = 0; a + FO1_QBLOCK <= n; a += FO1_QBLOCK)
        FO1_XCAT3(FO1_NAME(q8), _, block)(&L, p + a, g + a, c + a, sc + a / FO1_QBLOCK,
                                          FO1_QBLOCK, idx0 + a, pre, sto);
    if (n > a)
        FO1_XCAT3(FO1_NAME(q8), _, block)(&L, p + a, g + a, c + a, sc + a / FO1_QBLOCK,
                                          n - a, idx0 + a, pre, sto);
}

static FO1_ATTR void FO1_NAME(q8)(const fo1_args *A, float *p, const float *g, void *st,
                                  float *sc, ptrdiff_t n, ptrdiff_t idx0)
{
#define FO1_CALL(PRE, STO) \
    FO1_XCAT3(FO1_NAME(q8), _, body)(A, p, g, st, sc, n, idx0, PRE, STO)
    FO1_DISPATCH(A);
#undef FO1_CALL
}

#undef FO1_NAME
#undef FO1_ELEM
#undef FO1_CAT4
#undef FO1_XCAT4
#undef FO1_CAT3
#undef FO1_XCAT3
#undef FO1_FAM
#undef FO1_SQRT
