/* What a step's memory traffic costs on this machine, apart from its
 * arithmetic: copy-like loops over 2^24 elements on the threads, each
 * reading and writing what one kind of step reads and writes, timed against
 * the float32 Adam layout's (read p, g, m, v; write p, m, v).  The measure
 * behind issue 14's speed goals for reduced-precision state, whose bounds
 * (0.714x for bfloat16 moments, 0.574x for 8-bit ones) count every byte
 * read or written alike.
 *
 * On the 2-core AVX-512 development VM (2026-12-02 16:50 UTC, three runs of
 * 41 rounds) a byte written cost about a quarter of a byte read.  Reading
 * p, g, m and v and writing nothing took 0.81-0.89 of the float32 layout's
 * time, the bfloat16 layout 0.75-0.79, the 8-bit one 0.62-0.66 and p, g
 * alone 0.44-0.46.  Bytes read plus a quarter of the bytes written predict
 * 0.84, 0.74, 0.61 and 0.47; every byte counted alike, 0.571, 0.714, 0.574
 * and 0.429.  (An in-place step writes back lines it has just read.)  So
 * there the reduced states' floors are about 0.75x and 0.63x of the float32
 * step, not 0.714x and 0.574x.
 *
 * Build and run from the repository root:
 *
 *   gcc -O3 -fopenmp benchmarks/traffic.c -o /tmp/traffic
 *   OMP_NUM_THREADS=2 /tmp/traffic [rounds]
 */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define N (1L << 24)
#define CHUNK (1L << 17) /* the pool's block at this size (_tuning.block_elements) */
#define QB 256           /* elements per 8-bit block */
#define AVX512 __attribute__((target("avx512f,avx512bw")))

static float *p, *g, *m, *v, *ms, *vs;
static uint8_t *mc, *vc;
static uint16_t *mw, *vw;

/* p += c * g, 64 elements: the parameter's read and write, the gradient's read */
AVX512 static void pg64(long i)
{
    const __m512 c = _mm512_set1_ps(1e-7f);
    int k;
    for (k = 0; k < 64; k += 16)
        _mm512_storeu_ps(p + i + k, _mm512_add_ps(_mm512_loadu_ps(p + i + k),
                                                  _mm512_mul_ps(c, _mm512_loadu_ps(g + i + k))));
}

AVX512 static __m512i xor1(const void *a)
{
    return _mm512_xor_si512(_mm512_loadu_si512(a), _mm512_set1_epi8(1));
}

/* float32 Adam's layout: p, g, m, v read; p, m, v written (28 bytes) */
AVX512 static void f32(long a, long b)
{
    long i;
    for (i = a; i < b; i += 64) {
        int k;
        pg64(i);
        for (k = 0; k < 64; k += 16) {
            __m512 gi = _mm512_loadu_ps(g + i + k);
            _mm512_storeu_ps(m + i + k, _mm512_add_ps(_mm512_loadu_ps(m + i + k), gi));
            _mm512_storeu_ps(v + i + k, _mm512_add_ps(_mm512_loadu_ps(v + i + k), gi));
        }
    }
}

/* float32 Adam's reads alone: p, g, m, v (16 bytes, nothing written) */
AVX512 static void reads(long a, long b)
{
    __m512 s = _mm512_setzero_ps();
    long i;
    for (i = a; i < b; i += 16)
        s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(_mm512_loadu_ps(p + i),
                                                         _mm512_loadu_ps(g + i)),
                                           _mm512_add_ps(_mm512_loadu_ps(m + i),
                                                         _mm512_loadu_ps(v + i))));
    if (_mm512_reduce_add_ps(s) == -1.0f) /* never: keeps the loads */
        p[a] = 0.0f;
}

/* bfloat16 moments: p, g read, p written, two 16-bit moments read and written (20 bytes) */
AVX512 static void bf16(long a, long b)
{
    long i;
    for (i = a; i < b; i += 64) {
        int k;
        pg64(i);
        for (k = 0; k < 64; k += 32) {
            _mm512_storeu_si512(mw + i + k, xor1(mw + i + k));
            _mm512_storeu_si512(vw + i + k, xor1(vw + i + k));
        }
    }
}

/* 8-bit moments: p, g read, p written, two code arrays read and written, a
 * float32 scale per moment and block read and written (16.06 bytes) */
AVX512 static void q8(long a, long b)
{
    long i, j;
    for (i = a; i < b; i += QB) {
        for (j = 0; j < QB; j += 64) {
            pg64(i + j);
            _mm512_storeu_si512(mc + i + j, xor1(mc + i + j));
            _mm512_storeu_si512(vc + i + j, xor1(vc + i + j));
        }
        ms[i / QB] += 1.0f;
        vs[i / QB] += 1.0f;
    }
}

/* no state: p, g read, p written (12 bytes) */
AVX512 static void none(long a, long b)
{
    long i;
    for (i = a; i < b; i += 64)
        pg64(i);
}

static const struct {
    const char *name;
    void (*run)(long, long);
    double moved, read; /* bytes per element */
} K[] = {
    {"float32 Adam layout", f32, 28, 16},
    {"its reads alone", reads, 16, 16},
    {"bfloat16 moments", bf16, 20, 12},
    {"8-bit moments", q8, 16 + 8.0 / QB * 2, 10 + 8.0 / QB},
    {"no state (p, g)", none, 12, 8},
};
#define NK ((int)(sizeof K / sizeof K[0]))

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int cmp(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* n bytes on huge pages (as NumPy asks for large arrays), touched, at a
 * different offset in a page for each array (as _alloc places states) */
static void *array(size_t n, int k)
{
    char *r = aligned_alloc(4096, n + 8192);
    if (r == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    madvise(r, n + 8192, MADV_HUGEPAGE);
    memset(r, 0, n + 8192);
    return r + 1088 * k;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 41, r, k;
    double *t;
    if (rounds < 1) {
        fprintf(stderr, "rounds must be >= 1\n");
        return 1;
    }
    t = malloc(sizeof(double) * NK * rounds);
    p = array(4 * N, 0);
    g = array(4 * N, 1);
    m = array(4 * N, 2);
    v = array(4 * N, 3);
    mw = array(2 * N, 2);
    vw = array(2 * N, 3);
    mc = array(N, 2);
    vc = array(N, 3);
    ms = array(N / QB * 4, 0);
    vs = array(N / QB * 4, 1);
    /* interleaved: every loop once per round, after one warm-up round */
    for (r = -1; r < rounds; r++)
        for (k = 0; k < NK; k++) {
            double t0 = now();
            long a;
#pragma omp parallel for schedule(dynamic, 1)
            for (a = 0; a < N; a += CHUNK)
                K[k].run(a, a + CHUNK);
            if (r >= 0)
                t[k * rounds + r] = now() - t0;
        }
    printf("2^24 elements, %d threads, median of %d interleaved rounds\n",
           omp_get_max_threads(), rounds);
    printf("%-22s %9s %8s %15s %14s\n", "traffic", "time", "ratio", "bytes moved", "bytes read");
    for (k = 0; k < NK; k++)
        qsort(t + k * rounds, rounds, sizeof(double), cmp);
    for (k = 0; k < NK; k++) {
        double tk = t[k * rounds + rounds / 2], t0 = t[rounds / 2];
        printf("%-22s %6.3f ms %8.3f %6.2f (%.3f) %6.2f (%.3f)\n", K[k].name, 1e3 * tk, tk / t0,
               K[k].moved, K[k].moved / K[0].moved, K[k].read, K[k].read / K[0].read);
    }
    free(t);
    return 0;
}
