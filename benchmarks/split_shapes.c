/* GPT-2 small's shapes (148 float32 tensors, 124M elements), Adam and the copy
 * of its traffic on 2 threads, without Python: how the step is cut between
 * the threads, and where the arrays start in a cache line.  The measurement
 * behind _tuning.BLOCK_MAX_ELEMENTS and avx2.h's FO_ALIGN_PEEL (issue 16).
 *
 * Splits: the pool's dynamic blocks over the concatenated tensors (2^14 to
 * 2^20 elements), each thread's own half of the blocks in order ("own-half":
 * contiguous streams, blocks still claimed one by one), torch's layout
 * (every tensor halved between the threads) and the concatenation halved.
 * Each array gets its own mapping (madvise'd for huge pages, as NumPy does,
 * unless the first argument is 0), p and g at byte 16 of a cache line
 * (NumPy's large arrays) or at 0, m and v 1088 and 2176 bytes after them
 * (_alloc).  A step's time is the slower thread's CPU time; the figure the
 * median of the rounds (second argument), every variant interleaved.
 *
 *   gcc -O3 -fopenmp -fno-math-errno -ffp-contract=off -fno-trapping-math \
 *       -Isrc/fusedoptim/_ext benchmarks/split_shapes.c -o /tmp/split_shapes
 *   OMP_NUM_THREADS=2 OMP_WAIT_POLICY=passive /tmp/split_shapes 1 15
 *
 * Measured (load 4 from other sessions, 11-15 rounds, ms, byte 16 | byte 0):
 * before the peel, Adam in blocks of 2^14 45.1 | 44.5, 2^16 40.0 | 38.2,
 * 2^18 40.3 | 39.2, 2^20 39.3 | 38.3, own-half 2^14 43.9 | 44.0, torch's
 * layout 40.8 | 39.0; the copy 41.9 | 40.8 at 2^14, 39.2 | 37.9 at 2^16,
 * 40.8 | 36.6 halved.  With the peel: Adam 2^14 45.9 | 46.1, 2^16
 * 40.3 | 38.9, 2^18 38.5 | 40.0, torch's layout 38.5 | 39.2.  So the cost
 * is the block's start (own-half, whose blocks follow each other, is as slow
 * as alternating ones), not the threads' alternation.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <stdatomic.h>
#include "adam_avx2.h"
#include "copy_avx2.h"

#define MAXT 200
static long sizes[MAXT]; static int nt_;
static long start[MAXT + 1];
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+1e-9*t.tv_nsec;}
static double cpu(void){struct timespec t;clock_gettime(CLOCK_THREAD_CPUTIME_ID,&t);return t.tv_sec+1e-9*t.tv_nsec;}
typedef struct { float *p[MAXT], *g[MAXT], *m[MAXT], *v[MAXT]; } Set;
static Set sets[2];
static int isa;
static void chunk(int kind, Set *S, int t, long a, long b) {
    if (kind == 0)
        fo_adam_simd_f32(isa, S->p[t]+a, S->g[t]+a, S->m[t]+a, S->v[t]+a, b-a, 1e-7f, 0.9f, 0.1f,
                         0.999f, 0.001f, 1e-8f, 0.1f, 0.03f, 1.0/(double)0.1f, 1.0f, 0.0f, 0, 1);
    else
        fo_copy_simd_f32(isa, S->p[t]+a, S->m[t]+a, S->v[t]+a, S->g[t]+a, NULL, b-a, 3, 1);
}
static void range(int kind, Set *S, long a, long b) {
    for (int t = 0; t < nt_; t++) {
        long s = start[t], e = start[t+1];
        long x = a > s ? a : s, y = b < e ? b : e;
        if (y > x) chunk(kind, S, t, x - s, y - s);
    }
}
static _Atomic long ticket;
static _Atomic long tix[2][16];
/* split: 0 dynamic blocks of B over concatenation; 1 per-tensor halves; 2 static halves of concat */
static double run(int kind, int split, long B, Set *S, double *wall) {
    double tmax = 0; long total = start[nt_];
    atomic_store(&ticket, 0); atomic_store(&tix[0][0], 0); atomic_store(&tix[1][0], 0);
    double w0 = now();
#pragma omp parallel reduction(max: tmax)
    {
        int th = omp_get_thread_num(), n = omp_get_num_threads();
        double c0 = cpu();
        if (split == 0) {
            long k;
            while ((k = atomic_fetch_add(&ticket, 1)) * B < total)
                range(kind, S, k * B, (k + 1) * B < total ? (k + 1) * B : total);
        } else if (split == 3) {
            long nb = (total + B - 1) / B, k, h = nb / n;
            for (int r = 0; r < n; r++) {
                int reg = (th + r) % n;
                long lo = reg * h, hi = reg == n - 1 ? nb : (reg + 1) * h;
                while ((k = lo + atomic_fetch_add(&tix[reg][0], 1)) < hi)
                    range(kind, S, k * B, (k + 1) * B < total ? (k + 1) * B : total);
            }
        } else if (split == 1) {
            for (int t = 0; t < nt_; t++) {
                long len = sizes[t], h = (len / n / 16) * 16;
                long a = h * th, b = th == n - 1 ? len : h * (th + 1);
                if (b > a) chunk(kind, S, t, a, b);
            }
        } else {
            long h = (total / n / 16) * 16;
            range(kind, S, h * th, th == n - 1 ? total : h * (th + 1));
        }
        tmax = cpu() - c0;
    }
    *wall = now() - w0;
    return tmax;
}
static float *alloc(long n, long off, int thp) {
    size_t bytes = n * 4 + 8192;
    char *b = mmap(NULL, bytes, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0);
    if (thp) madvise(b, bytes, MADV_HUGEPAGE);
    float *f = (float *)(b + off);
    for (long i = 0; i < n; i++) f[i] = (float)(i % 1000) / 1000 - 0.5f;
    return f;
}
static int cmp(const void *x, const void *y){double a=*(double*)x,b=*(double*)y;return a<b?-1:a>b;}
int main(int argc, char **argv) {
    int thp = argc > 1 ? atoi(argv[1]) : 1, rounds = argc > 2 ? atoi(argv[2]) : 9;
    long offs[2] = {16, 0};
    long L = 12, W = 768;
    nt_ = 0;
    sizes[nt_++] = 50257 * W; sizes[nt_++] = 1024 * W;
    for (int l = 0; l < L; l++) {
        long s[] = {W, W, W*3*W, 3*W, W*W, W, W, W, W*4*W, 4*W, 4*W*W, W};
        for (int j = 0; j < 12; j++) sizes[nt_++] = s[j];
    }
    sizes[nt_++] = W; sizes[nt_++] = W;
    start[0] = 0; for (int t = 0; t < nt_; t++) start[t+1] = start[t] + sizes[t];
    isa = fo_simd_detect();
    for (int s = 0; s < 2; s++) for (int t = 0; t < nt_; t++) {
        /* malloc-like: small arrays share pages; keep it simple: own mapping each */
        sets[s].p[t] = alloc(sizes[t], offs[s], thp);
        sets[s].g[t] = alloc(sizes[t], offs[s], thp);
        sets[s].m[t] = alloc(sizes[t], (offs[s] + 1088) % 4096, thp);
        sets[s].v[t] = alloc(sizes[t], (offs[s] + 2176) % 4096, thp);
    }
    struct { int kind, split; long B; const char *name; } V[] = {
        {0,0,16384,"adam blocks16k"}, {0,0,65536,"adam blocks64k"}, {0,0,262144,"adam blocks256k"},
        {0,0,1048576,"adam blocks1M"}, {0,3,16384,"adam own-half 16k"}, {0,1,0,"adam tensor-halves"}, {0,2,0,"adam concat-halves"},
        {1,0,16384,"copy blocks16k"}, {1,0,65536,"copy blocks64k"}, {1,0,262144,"copy blocks256k"},
        {1,0,1048576,"copy blocks1M"}, {1,3,16384,"copy own-half 16k"}, {1,1,0,"copy tensor-halves"}, {1,2,0,"copy concat-halves"}};
    int nv = sizeof V / sizeof V[0];
    static double tc[20][2][64], tw[20][2][64];
    for (int r = 0; r < rounds; r++)
        for (int v = 0; v < nv; v++) for (int s = 0; s < 2; s++) {
            int vv = (r % 2) ? nv - 1 - v : v;
            tc[vv][s][r] = run(V[vv].kind, V[vv].split, V[vv].B, &sets[s], &tw[vv][s][r]);
        }
    printf("GPT-2 %ld elements, thp=%d, %d rounds, ms: cpu(max thread) / wall, off16 | off0\n", start[nt_], thp, rounds);
    for (int v = 0; v < nv; v++) {
        printf("%-20s", V[v].name);
        for (int s = 0; s < 2; s++) {
            qsort(tc[v][s], rounds, 8, cmp); qsort(tw[v][s], rounds, 8, cmp);
            printf("  %7.2f / %7.2f", 1e3*tc[v][s][rounds/2], 1e3*tw[v][s][rounds/2]);
        }
        printf("\n");
    }
}
