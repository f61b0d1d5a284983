/* Exhaustive check of the float32 division Adam's loops use for m / c1
 * (the compiled backend fusedoptim._ext): for every float32 bit pattern x,
 *
 *     (float)((double)x * (1.0 / (double)c))  ==  x / c     (bit for bit)
 *
 * for each divisor c given on the command line.  Prints one line per divisor
 * and exits 1 if any pattern differs.  Compiled and run by
 * tests/test_kernels.py::test_div_c1_exhaustive with the extension's
 * floating-point flags; run it by hand with more divisors:
 *
 *     gcc -O2 -fopenmp -fno-math-errno -ffp-contract=off -fno-trapping-math \
 *         tests/exhaustive/divc1.c -o divc1 && ./divc1 0.1 0.001 0x1.fffffep-8
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define CHUNK (1L << 16)

typedef union {
    uint32_t u;
    float f;
} bits32;

static long mismatches(float c)
{
    double rc = 1.0 / (double)c;
    long bad = 0, hi;
#pragma omp parallel for reduction(+ : bad) schedule(static)
    for (hi = 0; hi < (1L << 32); hi += CHUNK) {
        long k;
        for (k = 0; k < CHUNK; k++) {
            bits32 x, want, got;
            x.u = (uint32_t)(hi + k);
            want.f = x.f / c;
            got.f = (float)((double)x.f * rc);
            bad += want.u != got.u;
        }
    }
    return bad;
}

int main(int argc, char **argv)
{
    int i, failed = 0;
    for (i = 1; i < argc; i++) {
        float c = strtof(argv[i], NULL);
        long bad = mismatches(c);
        printf("c = %a (%.9g): %ld of 2^32 patterns differ\n", c, c, bad);
        failed |= bad != 0;
    }
    return failed;
}
