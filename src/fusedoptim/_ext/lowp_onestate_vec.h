/* The codec passes of a whole int8 block as explicit vectors, written once
 * for both widths: lowp_onestate_body.h includes this header twice, with
 * FO1_W 16 (AVX-512) and 8 (AVX2), and gets fo1_q8_decode16/_encode16 and
 * fo1_q8_decode8/_encode8.  The scalar passes of fo1_q8_block are their
 * spec, operation for operation; GCC vectorized those through 16-bit lanes
 * and byte/word widenings, about twice the instructions.  One 32-bit lane
 * per element: the codes widened on load, narrowed on store (values are
 * below 256, so AVX2's saturating packs are exact).
 */

#if FO1_W == 16
#define FO1_VN(name) name##16
#define FO1_VATTR FO_AVX512
#define VI __m512i
#define VF __m512
#define vi_set1(x) _mm512_set1_epi32((int)(x))
#define vf_set1 _mm512_set1_ps
#define vi_add _mm512_add_epi32
#define vi_sub _mm512_sub_epi32
#define vi_and _mm512_and_si512
#define vi_or _mm512_or_si512
#define vi_mullo _mm512_mullo_epi32
#define vi_slli _mm512_slli_epi32
#define vi_srli _mm512_srli_epi32
#define vi_min _mm512_min_epu32
#define vi_max _mm512_max_epu32
#define vf_mul _mm512_mul_ps
#define vf_asi _mm512_castps_si512
#define vi_asf _mm512_castsi512_ps
#define vf_load _mm512_load_ps
#define vf_store _mm512_store_ps
#define vi_iota _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
/* W codes, widened */
#define vi_load_u8(c) _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(c)))
/* t where m != 0, else 0 */
#define vi_nonzero_then(m, t) _mm512_maskz_mov_epi32(_mm512_test_epi32_mask(m, m), t)
/* t where y is not a NaN, else 0 */
#define vi_ordered_then(y, t) _mm512_maskz_mov_epi32(_mm512_cmp_ps_mask(y, y, _CMP_ORD_Q), t)
#define vi_store_u8(c, x) _mm_storeu_si128((__m128i *)(c), _mm512_cvtepi32_epi8(x))
#elif FO1_W == 8
#define FO1_VN(name) name##8
#define FO1_VATTR FO_AVX2
#define VI __m256i
#define VF __m256
#define vi_set1(x) _mm256_set1_epi32((int)(x))
#define vf_set1 _mm256_set1_ps
#define vi_add _mm256_add_epi32
#define vi_sub _mm256_sub_epi32
#define vi_and _mm256_and_si256
#define vi_or _mm256_or_si256
#define vi_mullo _mm256_mullo_epi32
#define vi_slli _mm256_slli_epi32
#define vi_srli _mm256_srli_epi32
#define vi_min _mm256_min_epu32
#define vi_max _mm256_max_epu32
#define vf_mul _mm256_mul_ps
#define vf_asi _mm256_castps_si256
#define vi_asf _mm256_castsi256_ps
#define vf_load _mm256_load_ps
#define vf_store _mm256_store_ps
#define vi_iota _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)
#define vi_load_u8(c) _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(c)))
#define vi_nonzero_then(m, t) \
    _mm256_andnot_si256(_mm256_cmpeq_epi32(m, _mm256_setzero_si256()), t)
#define vi_ordered_then(y, t) \
    _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(y, y, _CMP_ORD_Q)), t)
/* codes < 256: 32 -> 16 -> 8 bits by unsigned saturation, exact */
#define vi_store_u8(c, x)                                                                \
    do {                                                                                 \
        __m128i w_ = _mm_packus_epi32(_mm256_castsi256_si128(x),                         \
                                      _mm256_extracti128_si256(x, 1));                   \
        _mm_storel_epi64((__m128i *)(c), _mm_packus_epi16(w_, w_));                      \
    } while (0)
#else
#error "FO1_W must be 8 or 16"
#endif

/* Decode: xb = the decoded state of codes c at scale s0. */
static FO1_VATTR void
FO1_VN(fo1_q8_decode)(const int sq, const uint8_t *restrict c, float s0, float *restrict xb)
{
    const VF vs0 = vf_set1(s0);
    int i;
    for (i = 0; i < FO_QBLOCK; i += FO1_W) {
        VI ci = vi_load_u8(c + i);
        VF x;
        if (sq) {
            VF s = vf_mul(vi_asf(vi_slli(vi_add(ci, vi_set1(FO_Q8V_LO)), FO_Q8V_SHIFT)), vs0);
            x = vf_mul(s, s);
        } else {
            /* sign << 31 | (mag + LO) << SHIFT, or sign << 31 for mag 0 */
            VI m = vi_and(ci, vi_set1(127));
            VI u = vi_and(vi_slli(ci, 24), vi_set1(0x80000000u));
            u = vi_or(u, vi_nonzero_then(m, vi_slli(vi_add(m, vi_set1(FO_Q8M_LO)), FO_Q8M_SHIFT)));
            x = vf_mul(vi_asf(u), vs0);
        }
        vf_store(xb + i, x);
    }
}

/* fo_q8_code of W lanes: b the bit patterns, r their stochastic rounding
 * bits (read only if sto, a literal: otherwise nearest even, and the
 * caller's computation of r is dead code), the field at shift clamped to
 * [lo, hi] and rebased.  Both codes take it, with their constants. */
FO_INLINE FO1_VATTR VI
FO1_VN(fo1_q8_code)(VI b, VI r, const int sto, const int shift, uint32_t lo, uint32_t hi)
{
    VI cc;
    if (!sto)
        r = vi_add(vi_and(vi_srli(b, shift), vi_set1(1)), vi_set1(FO_Q8_HALF(shift)));
    cc = vi_srli(vi_add(b, r), shift);
    cc = vi_min(vi_max(cc, vi_set1(lo)), vi_set1(hi));
    return vi_sub(cc, vi_set1(lo));
}

/* Encode: the codes of the values y (xb) at reciprocal scale inv; rounding
 * counter ctr of element 0. */
static FO1_VATTR void
FO1_VN(fo1_q8_encode)(const int sq, const int sto, const float *restrict xb, float inv,
                      uint32_t key, uint32_t ctr, uint8_t *restrict c)
{
    const VF vinv = vf_set1(inv);
    VI h = vi_mullo(vi_add(vi_set1(key + ctr), vi_iota), vi_set1(0x9E3779B1u));
    const VI hstep = vi_set1((uint32_t)FO1_W * 0x9E3779B1u);
    int i;
    for (i = 0; i < FO_QBLOCK; i += FO1_W) {
        VF y = vf_load(xb + i);
        VI cc;
        if (sq) {
            VI b = vf_asi(vf_mul(y, vinv));
            VI r = vi_srli(vi_mullo(h, vi_set1(0x85EBCA6Bu)), 13);
            cc = FO1_VN(fo1_q8_code)(b, r, sto, FO_Q8V_SHIFT, FO_Q8V_LO, FO_Q8V_HI);
        } else {
            VI yb = vf_asi(y);
            VI b = vf_asi(vf_mul(vi_asf(vi_and(yb, vi_set1(0x7FFFFFFF))), vinv));
            cc = FO1_VN(fo1_q8_code)(b, vi_srli(h, 12), sto, FO_Q8M_SHIFT, FO_Q8M_LO, FO_Q8M_HI);
            /* the sign as bit 7, a NaN's taken as 0 */
            cc = vi_or(cc, vi_ordered_then(y, vi_slli(vi_srli(yb, 31), 7)));
        }
        h = vi_add(h, hstep);
        vi_store_u8(c + i, cc);
    }
}

#undef FO1_VN
#undef FO1_VATTR
#undef VI
#undef VF
#undef vi_set1
#undef vf_set1
#undef vi_add
#undef vi_sub
#undef vi_and
#undef vi_or
#undef vi_mullo
#undef vi_slli
#undef vi_srli
#undef vi_min
#undef vi_max
#undef vf_mul
#undef vf_asi
#undef vi_asf
#undef vf_load
#undef vf_store
#undef vi_iota
#undef vi_load_u8
#undef vi_nonzero_then
#undef vi_ordered_then
#undef vi_store_u8
