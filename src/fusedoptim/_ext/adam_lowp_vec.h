/* The 8-bit and bfloat16 Adam loops of adam_lowp.h written with explicit
 * vectors: a template, included once per instruction set by adam_lowp.h with
 * the V_* names below defined for 512-bit (AVX-512) or 256-bit (AVX2)
 * vectors of W = V_W float32 lanes.
 *
 * Why not leave it to the compiler: the 8-bit loop is bound by its
 * arithmetic at high memory bandwidth, and GCC vectorized it with 16-bit
 * intermediate lanes (byte -> word -> dword widenings, word permutes, a
 * pack per 16 codes), about twice the instructions of this version and half
 * its speed.  Here each lane stays 32 bits from the byte load (one
 * zero-extending load) to the store of 4 W codes (two saturating packs and
 * one dword permute).
 *
 * Every operation is the scalar body's (fo_adam_q8_block, fo_adam_bf16_body)
 * in its order on W lanes: IEEE-rounded float32 operations (no contraction:
 * mul and add are separate instructions) and exact integer ones, so the bits
 * are those of the reference.  Two rewrites of integer steps are exact:
 *   - b = bits(|x| * inv) is taken as bits(x * inv) with the sign bit
 *     cleared: the same for every number, and for a NaN (0 * inf gives one
 *     with the sign set) b >= 0x7F800001 still clamps to the top code;
 *   - ((b + r) >> k) clamped to [lo, hi] minus lo is computed as
 *     (b + (r - (lo << k))) >> k with an arithmetic shift (the same integer
 *     minus lo: lo << k has no bits below k, and the sum lies in
 *     (-2^31, 2^31)), clamped to [0, hi - lo]; the packs' unsigned
 *     saturation does the clamp when hi - lo = 255 (v), and the lower bound
 *     for m;
 *   - the block maximum of |x| is the unsigned maximum of the bit patterns
 *     with the sign cleared, as in the scalar body.
 */

/* Codes of m, magnitude clamped to [0, 127], with m's sign as bit 7. */
V_INLINE V_I V_NAME(q8m_code)(V_F m, V_F inv, V_I rm_lo)
{
    V_I b = v_andi(v_asi(v_mul(m, inv)), v_set1i(0x7FFFFFFF));
    V_I x = v_srai(v_addi(b, rm_lo), 20);
    x = v_maxs(v_mins(x, v_set1i(127)), v_set1i(0));
    return v_or_sign7(x, v_asi(m));
}

/* Codes of s (>= 0) minus 1777 as signed 32-bit lanes: the pack clamps them
 * to [0, 255]. */
V_INLINE V_I V_NAME(q8v_code)(V_F s, V_F inv, V_I rs_lo)
{
    V_I b = v_andi(v_asi(v_mul(s, inv)), v_set1i(0x7FFFFFFF));
    return v_srai(v_addi(b, rs_lo), 19);
}

/* lowbias32 (fo_mix32) on every lane. */
V_INLINE V_I V_NAME(mix32)(V_I x)
{
    x = v_xori(x, v_srli(x, 16));
    x = v_mulu(x, v_set1i(0x7FEB352D));
    x = v_xori(x, v_srli(x, 15));
    x = v_mulu(x, v_set1i((int)0x846CA68Bu));
    return v_xori(x, v_srli(x, 16));
}

/* fo_adam_q8_body on whole blocks: n a multiple of FO_QBLOCK. */
V_INLINE void V_NAME(q8_blocks)(const fo_lowp_args *A, float *restrict p,
                                const float *restrict g, uint8_t *restrict mc,
                                uint8_t *restrict vc, float *restrict ms,
                                float *restrict vs, ptrdiff_t n, ptrdiff_t idx0,
                                FO_FLAG_ARGS)
{
    const V_F b1 = v_set1(A->b1), omb1 = v_set1(A->omb1), b2 = v_set1(A->b2);
    const V_F omb2 = v_set1(A->omb2), e = v_set1(A->eps), rsc2 = v_set1(A->rsc2);
    const V_F alr = v_set1(A->alr), gs = v_set1(A->gs), wd = v_set1(A->wd);
    const V_F shrink = v_set1(A->shrink), neg0 = v_set1(-0.0f);
    const V_I absmask = v_set1i(0x7FFFFFFF), key = v_set1i((int)A->key);
    /* the element counter mod 2^32 of each lane */
    V_I ctr = v_addi(v_set1i((int)(uint32_t)idx0), v_iota());
    float mb[FO_QBLOCK] __attribute__((aligned(64)));
    float sb[FO_QBLOCK] __attribute__((aligned(64)));
    ptrdiff_t a, j;
    for (a = 0; a < n; a += FO_QBLOCK) {
        const V_F sm = v_set1(ms[a / FO_QBLOCK]), sv = v_set1(vs[a / FO_QBLOCK]);
        V_I mmax = v_set1i(0), smax = v_set1i(0);
        uint32_t amax_m, amax_s;
        float fm, fs;
        V_F inv_m, inv_s;
        /* pass 1: decode, update, write p, keep m and s = sqrt(v) in L1 */
        for (j = 0; j < FO_QBLOCK; j += V_W) {
            V_I cm = v_load_u8(mc + a + j), cv = v_load_u8(vc + a + j);
            V_F m0 = v_mul(v_asf(v_q8m_decode(cm)), sm);
            V_F s0 = v_mul(v_asf(v_slli(v_addi(cv, v_set1i(1777)), 19)), sv);
            V_F v0 = v_mul(s0, s0);
            V_F pi = v_load(p + a + j), gi = v_load(g + a + j), mi, vi, si, d;
            if (f_scale) gi = v_mul(gi, gs);
            if (f_max) gi = v_xor(gi, neg0);
            if (f_l2) gi = v_add(gi, v_mul(wd, pi));
            if (f_shrink) pi = v_mul(pi, shrink);
            mi = v_add(v_mul(b1, m0), v_mul(omb1, gi));
            vi = v_add(v_mul(b2, v0), v_mul(omb2, v_mul(gi, gi)));
            si = v_sqrt(vi);
            d = v_add(v_mul(si, rsc2), e);
            v_store(p + a + j, v_sub(pi, v_div(v_mul(alr, mi), d)));
            v_store(mb + j, mi);
            v_store(sb + j, si);
            mmax = v_maxu(mmax, v_andi(v_asi(mi), absmask));
            smax = v_maxu(smax, v_andi(v_asi(si), absmask));
        }
        amax_m = v_hmaxu(mmax);
        amax_s = v_hmaxu(smax);
        fm = fo_u2f(amax_m);
        fs = fo_u2f(amax_s);
        inv_m = v_set1(fm == 0.0f ? 0.0f : 1.0f / fm);
        inv_s = v_set1(fs == 0.0f ? 0.0f : 1.0f / fs);
        /* pass 2: encode from L1, 4 W codes per store */
        for (j = 0; j < FO_QBLOCK; j += 4 * V_W) {
            V_I qm[4], qs[4];
            int k;
            for (k = 0; k < 4; k++) {
                V_F mk = v_load(mb + j + k * V_W), sk = v_load(sb + j + k * V_W);
                V_I rm, rs;
                if (sto) {
                    V_I h = V_NAME(mix32)(v_xori(key, ctr));
                    rm = v_subi(v_andi(h, v_set1i(0xFFFFF)), v_set1i(889 << 20));
                    rs = v_subi(v_srli(v_mulu(h, v_set1i((int)0x9E3779B1u)), 13),
                                v_set1i(1777 << 19));
                } else {
                    /* 0x7FFFF + lsb, minus the lower bound (nearest even) */
                    V_I bm = v_andi(v_asi(v_mul(mk, inv_m)), absmask);
                    V_I bs = v_andi(v_asi(v_mul(sk, inv_s)), absmask);
                    rm = v_addi(v_andi(v_srli(bm, 20), v_set1i(1)),
                                v_set1i(0x7FFFF - (889 << 20)));
                    rs = v_addi(v_andi(v_srli(bs, 19), v_set1i(1)),
                                v_set1i(0x3FFFF - (1777 << 19)));
                }
                qm[k] = V_NAME(q8m_code)(mk, inv_m, rm);
                qs[k] = V_NAME(q8v_code)(sk, inv_s, rs);
                ctr = v_addi(ctr, v_set1i(V_W));
            }
            v_store_u8x4(mc + a + j, v_pack4(qm[0], qm[1], qm[2], qm[3]));
            v_store_u8x4(vc + a + j, v_pack4(qs[0], qs[1], qs[2], qs[3]));
        }
        ms[a / FO_QBLOCK] = fm;
        vs[a / FO_QBLOCK] = fs;
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
