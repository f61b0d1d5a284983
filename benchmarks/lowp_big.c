/* The int8-state Adam loop (adam_lowp.h, AVX-512 build) without Python,
 * in cache and at 2^24 float32 elements, beside float32 Adam (adam_avx2.h)
 * and copy-like loops of the same traffic (their memory floors): the
 * measurement behind issue 14's int8 speed work.
 *
 * "2^24": the elements split as the compiled pool splits a step (blocks of
 * BLOCK_ELEMENTS = 16384 claimed dynamically through one atomic counter);
 * each block timed by its thread's CPU clock (the time it ran: a shared
 * machine deschedules threads, and wall time then measures the neighbours),
 * the loops interleaved in runs of `grp` blocks in a random order per round
 * (so that all see the same load), the median block scaled to a step of
 * 2^24 elements on the threads.  "cache": one thread, each loop on its own
 * 16384 elements, CPU time per element, median over the rounds.  The arrays
 * are placed as _alloc places a step's and given transparent huge pages, as
 * NumPy asks for large arrays.  With -DVARIANT='"file.h"' a variant of the
 * AVX-512 loop (the AVX-512 block of adam_lowp_isa.h with names fo_x16_,
 * including a modified copy of adam_lowp_vec.h) runs beside the library's;
 * with -DVARIANT_BF16='"file.h"' a variant of the bfloat16 loop (a function
 * fo_x16_bf16 with fo_adam_bf16_avx512's arguments).  The bfloat16 rows: the
 * AVX-512 build (nearest, stochastic), a copy of the bfloat16 layout's
 * traffic, and the AVX512_BF16 loop of adam_lowp_bf16.h (nearest; needs a
 * CPU with AVX512_BF16).
 * The bfloat16 rows run as adam_lowp._chunk runs them (the elements before
 * p's first 64-byte boundary apart).  -DOFF=16 -DOFFC=16 starts every array
 * 16 bytes into a cache line, where NumPy and _alloc put them.
 * Build and run from the repository root:
 *
 *   gcc -O3 -fopenmp -fno-math-errno -ffp-contract=off -fno-trapping-math \
 *       -Isrc/fusedoptim/_ext benchmarks/lowp_big.c -o /tmp/lowp_big
 *   OMP_NUM_THREADS=2 /tmp/lowp_big [rounds [grp]]   (rounds * 1024 / loops <= 4096)
 *
 * What it showed on the 2-core Zen 4 VM (shared, load average 3-5; q8
 * branch, issue 14): the 8-bit loop runs at 0.44-0.47 ns per element in
 * cache (3.6 GHz: about 26 cycles per 16 elements for about 37 512-bit
 * operations and a square root and a division); it is bound by its count of
 * vector operations, not by one unit: dropping the encoding's 16-bit code
 * arithmetic and packs (5.5 operations per 16 elements) took 15% off, the
 * square root and division 10%, one and-mask (VRANGEPS for |m|, now in
 * adam_lowp_isa.h) 2-3% (0.4854 -> 0.4728 ns nearest, 0.4668 -> 0.4535
 * stochastic: both builds in one throwaway program, medians of 301
 * alternating samples of 20 passes over 16384 elements), while removing 6
 * scalar-move broadcasts and 3 register copies per 64 elements changed
 * nothing (+-1%).  At 2^24 with
 * huge pages, when the load left each running thread more bandwidth, the
 * int8 step took as long as float32 Adam (0.91-1.08x) against 0.68-0.71x
 * for the copy of its traffic: there it is compute-bound.  Prefetch
 * distances 2 or 3 blocks, an L2 prefetch 3 or 6 blocks ahead, prefetching
 * only p and g or only the codes, prefetching the first blocks of a call,
 * a non-temporal hint for g, visiting two halves of each thread block
 * alternately (twice the streams), and blocks of 64K or 256K elements
 * moved the int8 step by less than the noise (+-5%) or made it slower; no
 * software prefetch made it 7% slower.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "adam_avx2.h"
#include "copy_avx2.h"
#include "adam_lowp.h"
#ifdef VARIANT
/* a variant of the AVX-512 loop (names fo_x16_*) to compare side by side */
#include VARIANT
static FO_AVX512_ATTR void fo_x16(const fo_lowp_args *A, float *p, const float *g,
                                  uint8_t *mc, uint8_t *vc, float *ms, float *vs, ptrdiff_t n,
                                  ptrdiff_t idx0)
{
    if (A->stochastic)
        fo_x16_q8_body(A, p, g, mc, vc, ms, vs, n, idx0, 0, 0, 0, 0, 1);
    else
        fo_x16_q8_body(A, p, g, mc, vc, ms, vs, n, idx0, 0, 0, 0, 0, 0);
}
#endif
#ifdef VARIANT_BF16
/* a variant of the bfloat16 loop: defines fo_x16_bf16 with
 * fo_adam_bf16_avx512's arguments */
#include VARIANT_BF16
#endif

#define N (1L << 24)
#ifndef CHUNK
#define CHUNK (1L << 14)
#endif
/* Bytes past a 64-byte boundary at which the float arrays (OFF) and the
 * 8-bit and bfloat16 state arrays (OFFC) start: NumPy starts a large array
 * 16 bytes into a cache line, and _alloc places states at that offset too,
 * so -DOFF=16 -DOFFC=16 models a Python step. */
#ifndef OFF
#define OFF 0
#endif
#ifndef OFFC
#define OFFC 0
#endif

static float *p, *g, *m, *v, *ms, *vs;
static uint8_t *mc, *vc;
static uint16_t *mw, *vw;  /* bfloat16 m, v */
static fo_lowp_args A_sto, A_near;
static int has_bf16;  /* AVX512_BF16 (fo_lowp_isa() == 3) */

/* reads p, g and both codes, writes p and both codes (and the scales): the
 * 8-bit layout's traffic with no arithmetic to speak of */
__attribute__((target("avx512f,avx512bw"))) static void copy8(float *p, const float *g,
                                                             uint8_t *mc, uint8_t *vc,
                                                             float *ms, float *vs, long n)
{
    long i, j;
    const __m512 c = _mm512_set1_ps(1e-7f);
    for (i = 0; i < n; i += 256) {
        __m512i x = _mm512_set1_epi8(1);
        for (j = 0; j < 256; j += 64) {
            int k;
            for (k = 0; k < 64; k += 16)
                _mm512_storeu_ps(p + i + j + k, _mm512_add_ps(_mm512_loadu_ps(p + i + j + k),
                                 _mm512_mul_ps(c, _mm512_loadu_ps(g + i + j + k))));
            _mm512_storeu_si512(mc + i + j, _mm512_xor_si512(_mm512_loadu_si512(mc + i + j), x));
            _mm512_storeu_si512(vc + i + j, _mm512_xor_si512(_mm512_loadu_si512(vc + i + j), x));
        }
        ms[i / 256] += 1.0f;
        vs[i / 256] += 1.0f;
    }
}

/* reads p, g and both bfloat16 moments, writes p and the moments */
__attribute__((target("avx512f,avx512bw"))) static void copy16(float *p, const float *g,
                                                              uint16_t *mw, uint16_t *vw, long n)
{
    long i, k;
    const __m512 c = _mm512_set1_ps(1e-7f);
    const __m512i x = _mm512_set1_epi16(1);
    for (i = 0; i < n; i += 32) {
        for (k = 0; k < 32; k += 16)
            _mm512_storeu_ps(p + i + k, _mm512_add_ps(_mm512_loadu_ps(p + i + k),
                             _mm512_mul_ps(c, _mm512_loadu_ps(g + i + k))));
        _mm512_storeu_si512(mw + i, _mm512_xor_si512(_mm512_loadu_si512(mw + i), x));
        _mm512_storeu_si512(vw + i, _mm512_xor_si512(_mm512_loadu_si512(vw + i), x));
    }
}

enum { F32, COPY7, Q8S, Q8N, COPY8, BFN, BFS, COPY16, BFNB,
#ifdef VARIANT
       Q8SX, Q8NX,
#endif
#ifdef VARIANT_BF16
       BFNX, BFSX,
#endif
       NKINDS };
static const char *names[] = {"adam f32", "copy f32 (7 arr)", "adam int8 sto",
                              "adam int8 nearest", "copy 8-bit layout", "adam bf16 nearest",
                              "adam bf16 sto", "copy bf16 layout", "adam bf16 near. BF16",
#ifdef VARIANT
                              "variant int8 sto", "variant int8 nearest",
#endif
#ifdef VARIANT_BF16
                              "variant bf16 nearest", "variant bf16 sto",
#endif
};

/* The bfloat16 loops as adam_lowp._chunk runs them: the elements before
 * p's first 64-byte boundary first, then the rest from that boundary. */
static void bf16_peeled(int kind, long a, long b)
{
    long pre = (long)fo_align_peel_f32(p + a, b - a), k;
    for (k = 0; k < 2; k++) {
        long x = k ? a + pre : a, y = k ? b : a + pre;
        if (y <= x)
            continue;
        if (kind == BFNB)
            fo_adam_bf16_avx512bf(&A_near, p + x, g + x, mw + x, vw + x, y - x, x);
#ifdef VARIANT_BF16
        else if (kind == BFNX || kind == BFSX)
            fo_x16_bf16(kind == BFSX ? &A_sto : &A_near, p + x, g + x, mw + x, vw + x, y - x, x);
#endif
        else
            fo_adam_bf16_avx512(kind == BFS ? &A_sto : &A_near, p + x, g + x, mw + x, vw + x,
                                y - x, x);
    }
}

static void kernel(int kind, long a, long b)
{
    switch (kind) {
    case -1:
        break;
    case F32:
        fo_adam_simd_f32(FO_ISA_AVX512, p + a, g + a, m + a, v + a, b - a, 1e-7f, 0.9f, 0.1f,
                         0.999f, 0.001f, 1e-8f, 0.1f, 0.03f, 1.0 / (double)0.1f, 1.0f, 0.0f, 0, 1);
        break;
    case COPY7:
        fo_copy_simd_f32(FO_ISA_AVX512, p + a, m + a, v + a, g + a, NULL, b - a, 3, 1);
        break;
    case Q8S:
    case Q8N:
        fo_adam_q8_avx512(kind == Q8S ? &A_sto : &A_near, p + a, g + a, mc + a, vc + a,
                          ms + a / 256, vs + a / 256, b - a, a);
        break;
#ifdef VARIANT
    case Q8SX:
    case Q8NX:
        fo_x16(kind == Q8SX ? &A_sto : &A_near, p + a, g + a, mc + a, vc + a, ms + a / 256,
               vs + a / 256, b - a, a);
        break;
#endif
    case BFN:
    case BFS:
        bf16_peeled(kind, a, b);
        break;
    case BFNB:  /* the AVX512_BF16 loop, nearest rounding (where the CPU has it) */
        if (has_bf16)
            bf16_peeled(kind, a, b);
        break;
#ifdef VARIANT_BF16
    case BFNX:
    case BFSX:
        bf16_peeled(kind, a, b);
        break;
#endif
    case COPY16:
        copy16(p + a, g + a, mw + a, vw + a, b - a);
        break;
    case COPY8:
        copy8(p + a, g + a, mc + a, vc + a, ms + a / 256, vs + a / 256, b - a);
        break;
    }
}

/* This thread's CPU seconds: the time it ran (memory stalls included), not
 * the time other tenants of a shared machine held its core. */
static double cpu(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static long next;
static double ctime_[N / CHUNK];

static int cmp(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* One pass over [0, N) on the threads, blocks of CHUNK claimed dynamically,
 * block c running loop kind_of[c]: each block's time in ctime_.  The loops
 * compared are interleaved block by block (runs of grp blocks of one loop,
 * NKINDS runs in a fresh random order), so that they share every load condition of a shared
 * machine, including the loop on the other thread (a descheduled block is
 * an outlier that the medians ignore). */
static int kind_of[N / CHUNK];

static void step(void)
{
    next = 0;
#pragma omp parallel
    {
        long a;
        while ((a = __atomic_fetch_add(&next, CHUNK, __ATOMIC_RELAXED)) < N) {
            double c0 = cpu();
            kernel(kind_of[a / CHUNK], a, a + CHUNK);
            ctime_[a / CHUNK] = cpu() - c0;
        }
    }
}

/* ns per element of one thread's loop over its own CHUNK elements in cache
 * (each kind on its own copy of the first CHUNK elements of every array). */
static double incache(int kind)
{
    static char *own[16];
    float *p0 = p, *g0 = g, *m0 = m, *v0 = v, *ms0 = ms, *vs0 = vs;
    uint8_t *mc0 = mc, *vc0 = vc;
    uint16_t *mw0 = mw, *vw0 = vw;
    double t0, t1;
    int r;
    if (own[kind] == NULL) {
        /* the arrays 4096 + 1088 bytes apart, as in the big step */
        own[kind] = aligned_alloc(4096, 24 * CHUNK + 10 * 5184);
        memcpy(own[kind], p, 4 * CHUNK);
        memcpy(own[kind] + 4 * CHUNK + 5184, g, 4 * CHUNK);
        memcpy(own[kind] + 8 * CHUNK + 2 * 5184, m, 4 * CHUNK);
        memcpy(own[kind] + 12 * CHUNK + 3 * 5184, v, 4 * CHUNK);
        memcpy(own[kind] + 16 * CHUNK + 4 * 5184, mc, CHUNK);
        memcpy(own[kind] + 17 * CHUNK + 5 * 5184, vc, CHUNK);
        memcpy(own[kind] + 18 * CHUNK + 6 * 5184, ms, CHUNK / 64);
        memcpy(own[kind] + 19 * CHUNK + 7 * 5184, vs, CHUNK / 64);
        memcpy(own[kind] + 20 * CHUNK + 8 * 5184, mw, 2 * CHUNK);
        memcpy(own[kind] + 22 * CHUNK + 9 * 5184, vw, 2 * CHUNK);
    }
    p = (float *)own[kind];
    g = (float *)(own[kind] + 4 * CHUNK + 5184);
    m = (float *)(own[kind] + 8 * CHUNK + 2 * 5184);
    v = (float *)(own[kind] + 12 * CHUNK + 3 * 5184);
    mc = (uint8_t *)(own[kind] + 16 * CHUNK + 4 * 5184);
    vc = (uint8_t *)(own[kind] + 17 * CHUNK + 5 * 5184);
    ms = (float *)(own[kind] + 18 * CHUNK + 6 * 5184);
    vs = (float *)(own[kind] + 19 * CHUNK + 7 * 5184);
    mw = (uint16_t *)(own[kind] + 20 * CHUNK + 8 * 5184);
    vw = (uint16_t *)(own[kind] + 22 * CHUNK + 9 * 5184);
    kernel(kind, 0, CHUNK);
    t0 = cpu();
    for (r = 0; r < 100; r++)
        kernel(kind, 0, CHUNK);
    t1 = cpu();
    p = p0; g = g0; m = m0; v = v0; ms = ms0; vs = vs0; mc = mc0; vc = vc0; mw = mw0; vw = vw0;
    return (t1 - t0) / 100 / CHUNK * 1e9;
}

static void args(fo_lowp_args *A, int sto)
{
    A->lr = 1e-3f; A->b1 = 0.9f; A->omb1 = 0.1f; A->b2 = 0.999f; A->omb2 = 0.001f;
    A->eps = 1e-8f; A->c1 = 0.1f; A->c2 = 0.03f; A->gs = 1.0f; A->wd = 0.0f; A->shrink = 1.0f;
    A->alr = (float)(1e-3 * 0.17320508 / 0.1); A->es = (float)(1e-8 * 0.17320508);
    A->rc1 = 10.0; A->key = 12345u; A->scale = A->maximize = A->l2 = A->shrink_p = 0;
    A->stochastic = sto;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 15, nt = omp_get_max_threads();
    /* consecutive blocks of one loop: 1 interleaves finest (the other
     * thread runs another loop), larger runs have both threads on one loop */
    int grp = argc > 2 ? atoi(argv[2]) : 16;
    static double t[NKINDS][4096], ic[NKINDS][64];
    int cnt[NKINDS] = {0};
    unsigned rng = 12345u;
    size_t total = 4 * N * sizeof(float) + 2 * N + N / 32 + 4 * N + 16 * 4096;
    char *base = aligned_alloc(4096, total);
    long i, c;
    int r, k;
    if (base != NULL)  /* as NumPy asks for its large arrays */
        madvise(base, total, MADV_HUGEPAGE);
    if (base == NULL || rounds > 64 || rounds * (N / CHUNK) / NKINDS + 1 > 4096) {
        fprintf(stderr, base == NULL ? "out of memory\n"
                                     : "rounds: at most 64 and %ld with %d loops\n",
                (long)(4095 * NKINDS / (N / CHUNK)), NKINDS);
        return 1;
    }
    p = (float *)(base + OFF);
    g = (float *)(base + 1 * N * 4 + 4096 + OFF);
    m = (float *)(base + 2 * N * 4 + 2 * 4096 + 1088 + OFF);
    v = (float *)(base + 3 * N * 4 + 3 * 4096 + 2176 + OFF);
    mc = (uint8_t *)(base + 4 * N * 4 + 4 * 4096 + 1088 + OFFC);
    vc = (uint8_t *)(base + 4 * N * 4 + N + 5 * 4096 + 2176 + OFFC);
    ms = (float *)(base + 4 * N * 4 + 2 * N + 6 * 4096);
    vs = ms + N / 256 + 64;
    mw = (uint16_t *)(base + 4 * N * 4 + 2 * N + N / 32 + 8 * 4096 + 1088 + OFFC);
    vw = (uint16_t *)(base + 4 * N * 4 + 4 * N + N / 32 + 9 * 4096 + 2176 + OFFC);
    has_bf16 = fo_lowp_isa() == 3;
    args(&A_sto, 1);
    args(&A_near, 0);
#pragma omp parallel for schedule(static)
    for (i = 0; i < N; i++) {
        p[i] = (float)(i % 1000) / 1000 - 0.5f;
        g[i] = (float)(i % 777) / 777 - 0.5f;
        m[i] = 0.0f;
        v[i] = 1e-3f;
        mc[i] = (uint8_t)(i * 7);
        vc[i] = (uint8_t)(100 + i % 100);
        mw[i] = (uint16_t)(0x3C00u + i % 512);  /* about 0.0078-0.03 */
        vw[i] = (uint16_t)(0x3A80u + i % 128);  /* about 0.001 */
        if (i % 256 == 0)
            ms[i / 256] = vs[i / 256] = 1e-2f;
    }
    for (k = 0; k < NKINDS; k++)
        incache(k);  /* each loop's own copy of the fresh state */
    for (r = 0; r < rounds + 1; r++) {
        for (c = 0; c + NKINDS * grp <= N / CHUNK; c += NKINDS * grp) {
            int ord[NKINDS], j, x;
            for (k = 0; k < NKINDS; k++)
                ord[k] = k;
            for (k = NKINDS - 1; k > 0; k--) {  /* Fisher-Yates */
                rng = rng * 1103515245u + 12345u;
                j = (int)((rng >> 8) % (unsigned)(k + 1));
                x = ord[k];
                ord[k] = ord[j];
                ord[j] = x;
            }
            for (k = 0; k < NKINDS * grp; k++)
                kind_of[c + k] = ord[k / grp];
        }
        for (; c < N / CHUNK; c++)
            kind_of[c] = -1;
        step();
        if (r == 0)
            continue;  /* warm-up */
        for (c = 0; c < N / CHUNK; c++) {
            k = kind_of[c];
            if (k >= 0)
                t[k][cnt[k]++] = ctime_[c];
        }
        for (k = 0; k < NKINDS; k++)
            ic[k][r - 1] = incache(k);
    }
    printf("%d threads, %d rounds, runs of %d blocks; median %ld-element block, as ms per 2^24-element step on %d "
           "threads (ratio to adam f32) | in cache ns/element (1 thread)\n", nt, rounds, grp, CHUNK,
           nt);
    for (k = 0; k < NKINDS; k++) {
        qsort(t[k], cnt[k], sizeof(double), cmp);
        qsort(ic[k], rounds, sizeof(double), cmp);
    }
    for (k = 0; k < NKINDS; k++)
        printf("%-20s %7.3f ms %6.3f | %6.3f ns\n", names[k],
               1e3 * t[k][cnt[k] / 2] * (N / CHUNK) / nt, t[k][cnt[k] / 2] / t[F32][cnt[F32] / 2],
               ic[k][rounds / 2]);
    return 0;
}
