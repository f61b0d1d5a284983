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
 *   - the block maximum of |m| is v_absmax's (one instruction with
 *     AVX-512), exact for every block without a NaN m; the blocks off the
 *     fast path, which include every block with a NaN m (and every block
 *     whose old m scale is not finite), take it again;
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

/* The rounding bits' state of a block being encoded: adam_lowp.q8_rounding_bits'
 * hm = (key + ctr) * C1 and hs = hm * C2 of each lane, advanced by W
 * elements per vector (mod 2^32). */
typedef struct { V_I hm, hs; } V_NAME(q8_hash);

V_INLINE V_NAME(q8_hash) V_NAME(q8_hash_init)(uint32_t key, uint32_t ctr0)
{
    const uint32_t c1 = 0x9E3779B1u, c12 = 0x9E3779B1u * 0x85EBCA6Bu;
    const uint32_t h0 = (key + ctr0) * c1;
    V_NAME(q8_hash) h;
    h.hm = v_addi(v_set1i((int)h0), v_mulu(v_iota(), v_set1i((int)c1)));
    h.hs = v_addi(v_set1i((int)(h0 * 0x85EBCA6Bu)), v_mulu(v_iota(), v_set1i((int)c12)));
    return h;
}

/* Pass 2, first half, one vector: bits(m * inv) + r and bits(s * inv) + r
 * (AVX-512; AVX2: >> 20 and >> 19) of W elements of a fast-path block. */
V_INLINE void V_NAME(q8_round)(const float *restrict mb, const float *restrict sb,
                               V_F vinv_m, V_F vinv_s, V_NAME(q8_hash) *h, V_I *tm,
                               V_I *ts, const int sto)
{
    const uint32_t c1 = 0x9E3779B1u, c12 = 0x9E3779B1u * 0x85EBCA6Bu;
    V_I bm = v_asi(v_mul(v_load(mb), vinv_m));
    V_I bs = v_asi(v_mul(v_load(sb), vinv_s));
    V_I um, us;
    if (sto) {
        um = v_addi(bm, v_srli(h->hm, 12));
        us = v_addi(bs, v_srli(h->hs, 13));
        h->hm = v_addi(h->hm, v_set1i((int)(c1 * V_W)));
        h->hs = v_addi(h->hs, v_set1i((int)(c12 * V_W)));
    } else {  /* bits + 0x7FFFF + lsb (nearest even), mod 2^32 */
        um = v_add_bit(v_addi(bm, v_set1i(0x7FFFF)), bm, 20);
        us = v_add_bit(v_addi(bs, v_set1i(0x3FFFF)), bs, 19);
    }
#if V_WORD_PERMUTE
    *tm = um;
    *ts = us;
#else
    *tm = v_srli(um, 20);
    *ts = v_srli(us, 19);
#endif
}

/* Pass 2, second half: the codes of 4 vectors from their q8_round results,
 * 4 W codes per store. */
V_INLINE void V_NAME(q8_pack4)(const V_I *tm, const V_I *ts, uint8_t *restrict mc,
                               uint8_t *restrict vc)
{
#if V_WORD_PERMUTE
    /* one word permute takes the high 16 bits of bits + r of two vectors:
     * (bits + r) >> 20 (m) and >> 19 (v) are those halves >> 4 and >> 3 */
    v_store_u8x4(mc, v_pack2w(V_NAME(q8m_code16)(v_hi16x2(tm[0], tm[1])),
                              V_NAME(q8m_code16)(v_hi16x2(tm[2], tm[3]))));
    v_store_u8x4(vc, v_pack2w(v_subs16(v_srli16(v_hi16x2(ts[0], ts[1]), 3), v_set1w(1777)),
                              v_subs16(v_srli16(v_hi16x2(ts[2], ts[3]), 3), v_set1w(1777))));
#else
    v_store_u8x4(mc, v_pack2w(V_NAME(q8m_clamp16)(v_packus32(tm[0], tm[1])),
                              V_NAME(q8m_clamp16)(v_packus32(tm[2], tm[3]))));
    v_store_u8x4(vc, v_pack2w(v_subs16(v_packus32(ts[0], ts[1]), v_set1w(1777)),
                              v_subs16(v_packus32(ts[2], ts[3]), v_set1w(1777))));
#endif
}

/* Pass 2 on 4 W elements of a fast-path block: the codes of m (mb) and s
 * (sb) at reciprocal scales vinv_m, vinv_s. */
V_INLINE void V_NAME(q8_encode4)(const float *restrict mb, const float *restrict sb,
                                 V_F vinv_m, V_F vinv_s, uint8_t *restrict mc,
                                 uint8_t *restrict vc, V_NAME(q8_hash) *h, const int sto)
{
    V_I tm[4], ts[4];
    int k;
    for (k = 0; k < 4; k++)
        V_NAME(q8_round)(mb + k * V_W, sb + k * V_W, vinv_m, vinv_s, h, tm + k, ts + k, sto);
    V_NAME(q8_pack4)(tm, ts, mc, vc);
}

/* The per-step constants of pass 1. */
typedef struct { V_F omb1, omb2, es, alr, gs, wd, shrink, neg0; } V_NAME(q8_consts);

/* Pass 1 on W elements: decode, update, write p, keep m and s = sqrt(v)
 * in mb, sb, fold |m| and s into the block maxima (bit patterns). */
V_INLINE void V_NAME(q8_update)(const V_NAME(q8_consts) *C, V_F b1ms, V_F b2vs,
                                float *restrict p, const float *restrict g,
                                const uint8_t *restrict mc, const uint8_t *restrict vc,
                                float *restrict mb, float *restrict sb, V_I *mmax,
                                V_I *smax, const int f_scale, const int f_max,
                                const int f_l2, const int f_shrink)
{
    V_I cm = v_load_s8(mc), cv = v_load_u8(vc);
    V_F dm = v_asf(v_q8m_decode(cm));
    V_F ds = v_asf(v_slli(v_addi(cv, v_set1i(1777)), 19));
    V_F pi = v_load(p), gi = v_load(g), mi, vi, si, d;
    if (f_scale) gi = v_mul(gi, C->gs);
    if (f_max) gi = v_xor(gi, C->neg0);
    if (f_l2) gi = v_add(gi, v_mul(C->wd, pi));
    if (f_shrink) pi = v_mul(pi, C->shrink);
    mi = v_add(v_mul(dm, b1ms), v_mul(C->omb1, gi));
    vi = v_add(v_mul(v_mul(ds, ds), b2vs), v_mul(C->omb2, v_mul(gi, gi)));
    si = v_sqrt(vi);
    d = v_add(si, C->es);
    v_store(p, v_sub(pi, v_div(v_mul(C->alr, mi), d)));
    v_store(mb, mi);
    v_store(sb, si);
    *mmax = v_absmax(*mmax, mi);
    *smax = v_maxu(*smax, v_asi(si));
}

/* Prefetch 4 W elements' parameters, gradients and codes into L1 (issued
 * for the next block while the current one is updated: the hardware's
 * streams alone left the loop waiting at 2^24 elements, 2 threads). */
V_INLINE void V_NAME(q8_prefetch4)(const float *p, const float *g, const uint8_t *mc,
                                   const uint8_t *vc)
{
    int q;
    for (q = 0; q < 4 * V_W * 4; q += 64) {
        _mm_prefetch((const char *)p + q, _MM_HINT_T0);
        _mm_prefetch((const char *)g + q, _MM_HINT_T0);
    }
    for (q = 0; q < 4 * V_W; q += 64) {
        _mm_prefetch((const char *)mc + q, _MM_HINT_T0);
        _mm_prefetch((const char *)vc + q, _MM_HINT_T0);
    }
}

/* fo_adam_q8_body on whole blocks: n a multiple of FO_QBLOCK.
 *
 * With V_PIPELINE (the AVX-512 build), pass 2 (encoding) of a fast-path
 * block runs interleaved with pass 1 of the next block, one vector of each
 * in turn and 4 W codes per store.  Why: pass 1 alone waits on the divider
 * (a 512-bit square root and division take 16 cycles per 16 elements on
 * Zen 4, the rest of pass 1 about 12), pass 2 needs no divider; run one after
 * the other their times added up.  Measured in cache (16384 elements, one
 * thread, Zen 4): 0.44 against 0.455 ns per element with stochastic
 * rounding, 0.465 against 0.49 with nearest; at 2^24 elements, 2 threads,
 * the median 16384-element chunk took 4% less time.  Every element's
 * operations are unchanged. */
V_INLINE void V_NAME(q8_blocks)(const fo_lowp_args *A, float *restrict p,
                                const float *restrict g, uint8_t *restrict mc,
                                uint8_t *restrict vc, float *restrict ms,
                                float *restrict vs, ptrdiff_t n, ptrdiff_t idx0,
                                FO_FLAG_ARGS)
{
    V_NAME(q8_consts) C;
    /* two blocks' m and s: the one being updated and the one being encoded */
    float mb[2][FO_QBLOCK] __attribute__((aligned(64)));
    float sb[2][FO_QBLOCK] __attribute__((aligned(64)));
    /* the pending (updated, not yet encoded) fast-path block */
    int pend = 0, cur = 0;
    ptrdiff_t pa = 0;
    V_F pinv_m = v_set1(0.0f), pinv_s = v_set1(0.0f);
    V_NAME(q8_hash) ph;
    ptrdiff_t a, j, i;
    C.omb1 = v_set1(A->omb1);
    C.omb2 = v_set1(A->omb2);
    C.es = v_set1(A->es);
    C.alr = v_set1(A->alr);
    C.gs = v_set1(A->gs);
    C.wd = v_set1(A->wd);
    C.shrink = v_set1(A->shrink);
    C.neg0 = v_set1(-0.0f);
    ph.hm = ph.hs = v_set1i(0);
    for (a = 0; a < n; a += FO_QBLOCK) {
        /* the old scales folded into the decay factors (float32, per block) */
        const float fms = ms[a / FO_QBLOCK], fvs = vs[a / FO_QBLOCK];
        const V_F b1ms = v_set1(A->b1 * fms), b2vs = v_set1((A->b2 * fvs) * fvs);
        /* the element counter mod 2^32 of each lane */
        const uint32_t ctr0 = (uint32_t)(idx0 + a);
        const int nxt = a + 2 * FO_QBLOCK <= n;
        float *mbc = mb[cur], *sbc = sb[cur];
        V_I mmax = v_set1i(0), smax = v_set1i(0);
        uint32_t amax_m, amax_s, im, is;
        float fm, fs, inv_m, inv_s;
        if (pend) {
            const float *mbp = mb[cur ^ 1], *sbp = sb[cur ^ 1];
            for (j = 0; j < FO_QBLOCK; j += 4 * V_W) {
                V_I tm[4], ts[4];
                int k;
                for (k = 0; k < 4; k++) {
                    const ptrdiff_t e = j + k * V_W;
                    V_NAME(q8_update)(&C, b1ms, b2vs, p + a + e, g + a + e, mc + a + e,
                                      vc + a + e, mbc + e, sbc + e, &mmax, &smax, f_scale,
                                      f_max, f_l2, f_shrink);
                    V_NAME(q8_round)(mbp + e, sbp + e, pinv_m, pinv_s, &ph, tm + k, ts + k,
                                     sto);
                }
                V_NAME(q8_pack4)(tm, ts, mc + pa + j, vc + pa + j);
                if (nxt)
                    V_NAME(q8_prefetch4)(p + a + FO_QBLOCK + j, g + a + FO_QBLOCK + j,
                                         mc + a + FO_QBLOCK + j, vc + a + FO_QBLOCK + j);
            }
        } else {
            for (j = 0; j < FO_QBLOCK; j += V_W)
                V_NAME(q8_update)(&C, b1ms, b2vs, p + a + j, g + a + j, mc + a + j,
                                  vc + a + j, mbc + j, sbc + j, &mmax, &smax, f_scale,
                                  f_max, f_l2, f_shrink);
            if (nxt)
                for (j = 0; j < FO_QBLOCK; j += 4 * V_W)
                    V_NAME(q8_prefetch4)(p + a + FO_QBLOCK + j, g + a + FO_QBLOCK + j,
                                         mc + a + FO_QBLOCK + j, vc + a + FO_QBLOCK + j);
        }
        pend = 0;
        amax_m = v_hmaxu(mmax);
        amax_s = v_hmaxu(smax);
        if (amax_s >> 31) {  /* a NaN with the sign bit: the maximum of |s| */
            amax_s = 0;
            for (i = 0; i < FO_QBLOCK; i++) {
                uint32_t b = fo_f2u(sbc[i]) & 0x7FFFFFFFu;
                amax_s = b > amax_s ? b : amax_s;
            }
        }
        fm = fo_u2f(amax_m);
        fs = fo_u2f(amax_s);
        ms[a / FO_QBLOCK] = fm;
        vs[a / FO_QBLOCK] = fs;
        inv_m = fm == 0.0f ? 0.0f : 1.0f / fm;
        inv_s = fs == 0.0f ? 0.0f : 1.0f / fs;
        im = fo_f2u(inv_m);
        is = fo_f2u(inv_s);
        /* (a block whose old m scale is infinite or NaN also leaves the
         * fast path: see v_absmax in adam_lowp_isa.h) */
        if (!((amax_m == 0 || (amax_m - 0x00800000u < 0x7F000000u
                               && im - 0x00800000u < 0x7F000000u))
              && amax_s < 0x7F800000u && is < 0x7F800000u
              && (fo_f2u(fms) & 0x7FFFFFFFu) < 0x7F800000u)) {
            /* off the fast path: encoded now, by the scalar code.  The
             * maximum of |m| again, as the scalar body takes it: v_absmax
             * may have passed over a NaN m (AVX-512), and a block with a
             * NaN m is always here (see v_absmax in adam_lowp_isa.h). */
            amax_m = 0;
            for (i = 0; i < FO_QBLOCK; i++) {
                uint32_t b = fo_f2u(mbc[i]) & 0x7FFFFFFFu;
                amax_m = b > amax_m ? b : amax_m;
            }
            ms[a / FO_QBLOCK] = fm = fo_u2f(amax_m);
            if (amax_m > 0x7F800000u || amax_s > 0x7F800000u) {
                fo_q8_nan_block(mbc, sbc, FO_QBLOCK, &amax_m, &amax_s);
                ms[a / FO_QBLOCK] = fm = fo_u2f(amax_m);
                vs[a / FO_QBLOCK] = fs = fo_u2f(amax_s);
            }
            fo_q8_encode(mbc, sbc, FO_QBLOCK, fm, fs, mc + a, vc + a, A->key, ctr0, sto);
        } else {
            pinv_m = v_set1(inv_m);
            pinv_s = v_set1(inv_s);
            if (sto)
                ph = V_NAME(q8_hash_init)(A->key, ctr0);
#if V_PIPELINE
            /* encoded with the next block's pass 1 (or after the loop) */
            pend = 1;
            pa = a;
            cur ^= 1;
#else
            for (j = 0; j < FO_QBLOCK; j += 4 * V_W)
                V_NAME(q8_encode4)(mbc + j, sbc + j, pinv_m, pinv_s, mc + a + j, vc + a + j,
                                   &ph, sto);
#endif
        }
    }
    if (pend)
        for (j = 0; j < FO_QBLOCK; j += 4 * V_W)
            V_NAME(q8_encode4)(mb[cur ^ 1] + j, sb[cur ^ 1] + j, pinv_m, pinv_s,
                               mc + pa + j, vc + pa + j, &ph, sto);
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
