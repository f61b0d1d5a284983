/* Shared by the AVX2 builds of the fast-path element loops (one header per
 * family beside its .pyx): whether the build has them, the target attribute,
 * and the run-time CPU check.
 *
 * Why: the modules are compiled for the baseline ISA (SSE2 on x86-64), so the
 * Cython loops vectorize 4 float32 lanes wide.  The *_avx2.h headers write
 * the same loops again in C, operation for operation, so that GCC can compile
 * them for another target inside the same module; `target("avx2")` without
 * "fma" means the compiler cannot fuse a multiply and an add even if someone
 * builds without -ffp-contract=off, and every operation (+, -, *, /, sqrt)
 * is IEEE correctly rounded at any vector width: the results are the same
 * bits as the baseline loops and the NumPy reference.
 *
 * Measured on the development machine (AMD EPYC Zen1, which splits 256-bit
 * operations in two, so AVX2 gains less here than on full-width CPUs):
 * float32 Adam in cache (16384 elements, 1 thread) 1.30-1.38 ns per element
 * with these loops against 1.47-1.52 with the baseline ones; float64 the same
 * (3.8); at 2^24 float32 elements, 2 threads, Adam / copy 0.995-1.023 against
 * 1.004-1.056 for the baseline loop (three processes, interleaved).
 *
 * `restrict` is sound because the validation (_gather) refuses a step in
 * which any written array overlaps another array of the step.
 *
 * Only GCC and Clang on x86-64; elsewhere fo_simd_detect() returns 0, the
 * loop names are no-op macros that are never called, and the Cython loops
 * run.
 */
#ifndef FUSEDOPTIM_AVX2_H
#define FUSEDOPTIM_AVX2_H

#include <stddef.h>
#include <math.h>

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) \
    && !defined(FUSEDOPTIM_NO_SIMD)
#define FO_SIMD_AVX2 1
#define FO_AVX2 __attribute__((target("avx2")))

static inline int fo_simd_detect(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}
#else
#define FO_SIMD_AVX2 0

static inline int fo_simd_detect(void) { return 0; }
#endif

#endif
