/* The 8-bit Adam loop of adam_lowp.h written with explicit vectors: a
 * template, included once per instruction set by adam_lowp_isa.h with the
 * V_* and v_* names defined for 512-bit (AVX-512) or 256-bit (AVX2) vectors
 * of W = V_W float32 lanes.
 *
 * Why by hand: at high memory bandwidth the loop is bound by its count of
 * vector instructions (about two 512-bit operations retire per cycle), and
 * GCC vectorized the scalar body with 16-bit intermediate lanes, byte ->
 * word -> dword widenings and a word permute and pack per 16 codes.  Here a
 * lane stays 32 bits from the byte load (one zero-extending load) through
 * the update, and the codes are clamped in 16-bit lanes (two vectors in
 * one) and stored 4 W at a time.
 *
 * Every float operation is the scalar body's (fo_adam_q8_block), in its
 * order, IEEE-rounded (mul and add stay separate instructions), so the bits
 * are those of the reference.  The integer steps differ in form only:
 *   - the block maximum of s = sqrt(v) is the unsigned maximum of the raw
 *     bit patterns: s >= +0 (v is never -0), so only a NaN has the sign
 *     bit, and then the maximum is taken again with the sign cleared;
 *   - fast path, for a block whose scales are 0 or normal numbers with
 *     normal reciprocals (every block but those with a NaN, an infinity or
 *     a scale out of [2^-126, 2^126]): then y = m * inv is finite, |y| =
 *     |m| * inv <= 1 (x * (1/x) <= 1 for normal x, 1/x) and sign(y) =
 *     sign(m), so the code of m is built from bits(y) = sign | bits(|y|):
 *     t = (bits(y) + r) >> 20 has the sign as bit 11 and code + 889 <= 1016
 *     in bits 0-10; s * inv is finite and >= 0, so (bits + r) >> 19 <
 *     2^16.  The lower clamps max(x - lo, 0) are unsigned saturating 16-bit
 *     subtractions, v's upper bound 255 the byte pack's saturation;
 *   - the other blocks take the scalar encoding, after fo_q8_nan_block
 *     for a block with a NaN (its NaNs become the positive quiet NaN).
 */

/* 16-bit lanes t of two m vectors -> codes: sign (bit 11 of t) as bit 7,
 * magnitude max(t mod 2^11 - 889, 0) (<= 127 on the fast path). */
V_INLINE V_I V_NAME(q8m_clamp16)(V_I t)
{
    V_I mag = v_subs16(v_andi(t, v_set1w(0x7FF)), v_set1w(889));
    return v_or_and(mag, v_srli16(t, 4), v_set1w(0x80));
}

/* 16-bit lanes w of two m vectors, the high halves of bits(y) + r -> codes:
 * sign (bit 15 of w) as bit 7, magnitude max(e - 889, 0) (<= 127 on the
 * fast path) with e = (bits(y) + r) >> 20 mod 2^11 = (w >> 4) mod 2^11. */
V_INLINE V_I V_NAME(q8m_code16)(V_I w)
{
    V_I mag = v_srli16(v_subs16(v_andi(w, v_set1w(0x7FF0)), v_set1w(889 << 4)), 4);
    return v_or_and(mag, v_srli16(w, 8), v_set1w(0x80));
}

/* Pass 2 of a fast-path block: the codes of m (mb) and s (sb) at reciprocal
 * scales inv_m, inv_s, 4 W codes per store. */
V_INLINE void V_NAME(q8_encode)(const float *restrict mb, const float *restrict sb,
                                float inv_m, float inv_s, uint8_t *restrict mc,
                                uint8_t *restrict vc, uint32_t key, uint32_t ctr0,
                                const int sto)
{
    const V_F vinv_m = v_set1(inv_m), vinv_s = v_set1(inv_s);
    /* adam_lowp.q8_rounding_bits: hm = (key + ctr) * C1, hs = hm * C2 of
     * each lane, advanced by W elements per vector (mod 2^32) */
    const uint32_t c1 = 0x9E3779B1u, c12 = 0x9E3779B1u * 0x85EBCA6Bu;
    const uint32_t h0 = (key + ctr0) * c1;
    V_I hm = v_addi(v_set1i((int)h0), v_mulu(v_iota(), v_set1i((int)c1)));
    V_I hs = v_addi(v_set1i((int)(h0 * 0x85EBCA6Bu)), v_mulu(v_iota(), v_set1i((int)c12)));
    ptrdiff_t j;
    for (j = 0; j < FO_QBLOCK; j += 4 * V_W) {
        V_I tm[4], ts[4];
        int k;
        for (k = 0; k < 4; k++) {
            V_I bm = v_asi(v_mul(v_load(mb + j + k * V_W), vinv_m));
            V_I bs = v_asi(v_mul(v_load(sb + j + k * V_W), vinv_s));
            V_I rm, rs;
            if (sto) {
                rm = v_srli(hm, 12);
                rs = v_srli(hs, 13);
                hm = v_addi(hm, v_set1i((int)(c1 * V_W)));
                hs = v_addi(hs, v_set1i((int)(c12 * V_W)));
            } else {  /* 0x7FFFF + lsb (nearest even) */
                rm = v_addi(v_andi(v_srli(bm, 20), v_set1i(1)), v_set1i(0x7FFFF));
                rs = v_addi(v_andi(v_srli(bs, 19), v_set1i(1)), v_set1i(0x3FFFF));
            }
#if V_WORD_PERMUTE
            tm[k] = v_addi(bm, rm);
            ts[k] = v_addi(bs, rs);
#else
            tm[k] = v_srli(v_addi(bm, rm), 20);
            ts[k] = v_srli(v_addi(bs, rs), 19);
#endif
        }
#if V_WORD_PERMUTE
        /* one word permute takes the high 16 bits of bits + r of two
         * vectors: (bits + r) >> 20 (m) and >> 19 (v) are those halves >> 4
         * and >> 3 */
        v_store_u8x4(mc + j, v_pack2w(V_NAME(q8m_code16)(v_hi16x2(tm[0], tm[1])),
                                      V_NAME(q8m_code16)(v_hi16x2(tm[2], tm[3]))));
        v_store_u8x4(vc + j, v_pack2w(v_subs16(v_srli16(v_hi16x2(ts[0], ts[1]), 3),
                                               v_set1w(1777)),
                                      v_subs16(v_srli16(v_hi16x2(ts[2], ts[3]), 3),
                                               v_set1w(1777))));
#else
        v_store_u8x4(mc + j, v_pack2w(V_NAME(q8m_clamp16)(v_packus32(tm[0], tm[1])),
                                      V_NAME(q8m_clamp16)(v_packus32(tm[2], tm[3]))));
        v_store_u8x4(vc + j, v_pack2w(v_subs16(v_packus32(ts[0], ts[1]), v_set1w(1777)),
                                      v_subs16(v_packus32(ts[2], ts[3]), v_set1w(1777))));
#endif
    }
}

/* Prefetch a block's parameters, gradients and codes into L1: issued for
 * the next block between pass 1 and pass 2 of the current one, because pass
 * 2 reads no memory and the hardware's streams would idle through it (at
 * 2^24 elements, 2 threads, the step took 12-15% less time with it; two or
 * more blocks ahead, or before pass 1, did not help). */
V_INLINE void V_NAME(q8_prefetch)(const float *p, const float *g, const uint8_t *mc,
                                  const uint8_t *vc)
{
    int q;
    for (q = 0; q < FO_QBLOCK * 4; q += 64) {
        _mm_prefetch((const char *)p + q, _MM_HINT_T0);
        _mm_prefetch((const char *)g + q, _MM_HINT_T0);
    }
    for (q = 0; q < FO_QBLOCK; q += 64) {
        _mm_prefetch((const char *)mc + q, _MM_HINT_T0);
        _mm_prefetch((const char *)vc + q, _MM_HINT_T0);
    }
}

/* fo_adam_q8_body on whole blocks: n a multiple of FO_QBLOCK. */
V_INLINE void V_NAME(q8_blocks)(const fo_lowp_args *A, float *restrict p,
                                const float *restrict g, uint8_t *restrict mc,
                                uint8_t *restrict vc, float *restrict ms,
                                float *restrict vs, ptrdiff_t n, ptrdiff_t idx0,
                                FO_FLAG_ARGS)
{
    const V_F omb1 = v_set1(A->omb1);
    const V_F omb2 = v_set1(A->omb2), es = v_set1(A->es);
    const V_F alr = v_set1(A->alr), gs = v_set1(A->gs), wd = v_set1(A->wd);
    const V_F shrink = v_set1(A->shrink), neg0 = v_set1(-0.0f);
    float mb[FO_QBLOCK] __attribute__((aligned(64)));
    float sb[FO_QBLOCK] __attribute__((aligned(64)));
    ptrdiff_t a, j, i;
    for (a = 0; a < n; a += FO_QBLOCK) {
        /* the old scales folded into the decay factors (float32, per block) */
        const float fms = ms[a / FO_QBLOCK], fvs = vs[a / FO_QBLOCK];
        const V_F b1ms = v_set1(A->b1 * fms), b2vs = v_set1((A->b2 * fvs) * fvs);
        /* the element counter mod 2^32 of each lane */
        const uint32_t ctr0 = (uint32_t)(idx0 + a);
        V_I mmax = v_set1i(0), smax = v_set1i(0);
        uint32_t amax_m, amax_s, im, is;
        float fm, fs, inv_m, inv_s;
        /* pass 1: decode, update, write p, keep m and s = sqrt(v) in L1 */
        for (j = 0; j < FO_QBLOCK; j += V_W) {
            V_I cm = v_load_s8(mc + a + j), cv = v_load_u8(vc + a + j);
            V_F dm = v_asf(v_q8m_decode(cm));
            V_F ds = v_asf(v_slli(v_addi(cv, v_set1i(1777)), 19));
            V_F pi = v_load(p + a + j), gi = v_load(g + a + j), mi, vi, si, d;
            if (f_scale) gi = v_mul(gi, gs);
            if (f_max) gi = v_xor(gi, neg0);
            if (f_l2) gi = v_add(gi, v_mul(wd, pi));
            if (f_shrink) pi = v_mul(pi, shrink);
            mi = v_add(v_mul(dm, b1ms), v_mul(omb1, gi));
            vi = v_add(v_mul(v_mul(ds, ds), b2vs), v_mul(omb2, v_mul(gi, gi)));
            si = v_sqrt(vi);
            d = v_add(si, es);
            v_store(p + a + j, v_sub(pi, v_div(v_mul(alr, mi), d)));
            v_store(mb + j, mi);
            v_store(sb + j, si);
            mmax = v_maxu(mmax, v_andi(v_asi(mi), v_set1i(0x7FFFFFFF)));
            smax = v_maxu(smax, v_asi(si));
        }
        amax_m = v_hmaxu(mmax);
        amax_s = v_hmaxu(smax);
        if (amax_s >> 31) {  /* a NaN with the sign bit: the maximum of |s| */
            amax_s = 0;
            for (i = 0; i < FO_QBLOCK; i++) {
                uint32_t b = fo_f2u(sb[i]) & 0x7FFFFFFFu;
                amax_s = b > amax_s ? b : amax_s;
            }
        }
        fm = fo_u2f(amax_m);
        fs = fo_u2f(amax_s);
        ms[a / FO_QBLOCK] = fm;
        vs[a / FO_QBLOCK] = fs;
        inv_m = fm == 0.0f ? 0.0f : 1.0f / fm;
        inv_s = fs == 0.0f ? 0.0f : 1.0f / fs;
        if (a + 2 * FO_QBLOCK <= n)
            V_NAME(q8_prefetch)(p + a + FO_QBLOCK, g + a + FO_QBLOCK, mc + a + FO_QBLOCK,
                                vc + a + FO_QBLOCK);
        im = fo_f2u(inv_m);
        is = fo_f2u(inv_s);
        if (!((amax_m == 0 || (amax_m - 0x00800000u < 0x7F000000u
                               && im - 0x00800000u < 0x7F000000u))
              && amax_s < 0x7F800000u && is < 0x7F800000u)) {
            if (amax_m > 0x7F800000u || amax_s > 0x7F800000u) {
                fo_q8_nan_block(mb, sb, FO_QBLOCK, &amax_m, &amax_s);
                ms[a / FO_QBLOCK] = fm = fo_u2f(amax_m);
                vs[a / FO_QBLOCK] = fs = fo_u2f(amax_s);
            }
            fo_q8_encode(mb, sb, FO_QBLOCK, fm, fs, mc + a, vc + a, A->key, ctr0, sto);
        } else
            V_NAME(q8_encode)(mb, sb, inv_m, inv_s, mc + a, vc + a, A->key, ctr0, sto);
    }
}

/* fo_adam_q8_body: whole blocks with vectors, a last partial block with the
 * scalar body (once per tensor). */
V_INLINE void V_NAME(q8_body)(const fo_lowp_args *A, float *restrict p,
                              const float *restrict g, uint8_t *restrict mc,
                              uint8_t *restrict vc, float *restrict ms,
                              float *restrict vs, ptrdiff_t n, ptrdiff_t idx0,
                              FO_FLAG_ARGS)
{
    ptrdiff_t a = n / FO_QBLOCK * FO_QBLOCK;
    V_NAME(q8_blocks)(A, p, g, mc, vc, ms, vs, a, idx0, f_scale, f_max, f_l2, f_shrink,
                      sto);
    if (n > a)
        fo_adam_q8_block(A, p + a, g + a, mc + a, vc + a, ms + a / FO_QBLOCK,
                         vs + a / FO_QBLOCK, n - a, idx0 + a, f_scale, f_max, f_l2,
                         f_shrink, sto);
}
