/* The SIMD loops at 2^24 float32 elements, 2 threads, without Python: the
 * measurement behind the prefetch distances in src/fusedoptim/_ext/adam_avx2.h
 * and lamb_avx2.h (issue 13).
 *
 * Each thread runs the loop over its contiguous half (LAMB's first pass over
 * its half's 4096-element blocks) and times itself with its own CPU clock
 * (CLOCK_THREAD_CPUTIME_ID: the time it ran, memory stalls included, not the
 * time other tenants of a shared machine held the core); a step's time is
 * the slower thread's, the figure the median of 7 rounds, every loop and
 * build interleaved in each round.  The arrays are placed as _alloc places a
 * step's: p and g at one offset in a page (user arrays), m and v 1088 and
 * 2176 bytes after it.  "copy" is the yardstick of the same traffic
 * (copy_avx2.h; two passes for LAMB).  Build and run, from the repository
 * root, once per distance to compare:
 *
 *   gcc -O3 -fopenmp -fno-math-errno -ffp-contract=off -fno-trapping-math \
 *       -Isrc/fusedoptim/_ext benchmarks/loops_big.c -o /tmp/loops_big
 *   OMP_NUM_THREADS=2 /tmp/loops_big
 *
 * (change FO_PREFETCH / FO_LAMB2_PREFETCH in the headers, or pass
 * -DFO_PREFETCH=... after removing their #define, to compare distances).
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "adadelta_avx2.h"
#include "adam_avx2.h"
#include "copy_avx2.h"
#include "lamb_avx2.h"
#include "nadam_avx2.h"

#define N (1L << 24)
#define ROUNDS 7

static float *p, *g, *m, *v;
static double out[2 * (N / 4096)];

static double cpu(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

enum { ADAM, NADAM, ADADELTA, COPY7, LAMB1, LAMB2, COPY6, COPY4, NKINDS };
static const char *names[NKINDS] = {"adam", "nadam", "adadelta", "copy (7 arrays)",
                                    "lamb pass 1", "lamb pass 2", "copy (6 arrays)",
                                    "copy (4 arrays)"};

/* The slower thread's CPU seconds for one loop over the whole step. */
static double run(int kind, int isa)
{
    double tmax = 0.0;
#pragma omp parallel reduction(max : tmax)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        long a = N / nt * t, b = t == nt - 1 ? N : N / nt * (t + 1), x;
        double t0 = cpu();
        switch (kind) {
        case ADAM:
            fo_adam_simd_f32(isa, p + a, g + a, m + a, v + a, b - a, 1e-7f, 0.9f, 0.1f,
                             0.999f, 0.001f, 1e-8f, 0.1f, 0.03f, 1.0 / (double)0.1f, 1.0f, 0.0f,
                             0, 1);
            break;
        case NADAM:
            fo_nadam_simd_f32(isa, p + a, g + a, m + a, v + a, b - a, 0.9f, 0.1f, 0.999f,
                              0.001f, 1e-8f, 0.03f, 1e-7f, 1e-7f, 1.0f, 0);
            break;
        case ADADELTA:
            fo_adadelta_simd_f32(isa, p + a, g + a, m + a, v + a, b - a, 1e-7f, 0.9f, 0.1f,
                                 1e-6f);
            break;
        case COPY7:
            fo_copy_simd_f32(isa, p + a, m + a, v + a, g + a, NULL, b - a, 3, 1);
            break;
        case LAMB1:
            for (x = a; x < b; x += 4096)
                fo_lamb1_simd_f32(isa, p + x, g + x, m + x, v + x, b - x < 4096 ? b - x : 4096,
                                  0.9f, 0.1f, 0.999f, 0.001f, 1e-6f, 0.1f, 0.001f,
                                  1.0 / (double)0.1f, 0.0f, 0, out + 2 * (x / 4096), N - x);
            break;
        case LAMB2:
            fo_lamb2_simd_f32(isa, p + a, m + a, v + a, b - a, 1e-7f, 1e-6f, 0.1f, 0.001f,
                              1.0 / (double)0.1f, 0.0f, 0, N - a);
            break;
        case COPY6:
            fo_copy_simd_f32(isa, m + a, v + a, NULL, p + a, g + a, b - a, 2, 2);
            break;
        case COPY4:
            fo_copy_simd_f32(isa, p + a, NULL, NULL, m + a, v + a, b - a, 1, 2);
            break;
        }
        tmax = cpu() - t0;
    }
    return tmax;
}

static int cmp(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

int main(void)
{
    static double t[NKINDS][3][ROUNDS];
    char *base = aligned_alloc(4096, 4 * N * sizeof(float) + 8 * 4096);
    long i;
    int r, k, isa;
    if (base == NULL || fo_simd_detect() == FO_ISA_BASELINE) {
        fprintf(stderr, "no memory or no SIMD loops here\n");
        return 1;
    }
    p = (float *)base;
    g = (float *)(base + 1 * N * sizeof(float) + 4096);
    m = (float *)(base + 2 * N * sizeof(float) + 2 * 4096 + 1088);
    v = (float *)(base + 3 * N * sizeof(float) + 3 * 4096 + 2176);
#pragma omp parallel for schedule(static)
    for (i = 0; i < N; i++) {
        p[i] = (float)(i % 1000) / 1000 - 0.5f;
        g[i] = (float)(i % 777) / 777 - 0.5f;
        m[i] = 0.0f;
        v[i] = 1e-3f;
    }
    for (r = 0; r < ROUNDS; r++)
        for (k = 0; k < NKINDS; k++)
            for (isa = FO_ISA_AVX2; isa <= fo_simd_detect(); isa++)
                t[k][isa][r] = run(k, isa);
    printf("2^24 float32, %d threads, median of %d rounds, ms (slower thread's CPU time)\n",
           omp_get_max_threads(), ROUNDS);
    for (k = 0; k < NKINDS; k++) {
        printf("%-16s", names[k]);
        for (isa = FO_ISA_AVX2; isa <= fo_simd_detect(); isa++) {
            qsort(t[k][isa], ROUNDS, sizeof(double), cmp);
            printf("  %s %6.2f", isa == FO_ISA_AVX2 ? "avx2" : "avx512",
                   1e3 * t[k][isa][ROUNDS / 2]);
        }
        printf("\n");
    }
    return 0;
}
