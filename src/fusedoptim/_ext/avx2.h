/* Shared by the SIMD builds of the fast-path element loops (one header per
 * family beside its .pyx, <family>_avx2.h, which holds both its AVX2 and its
 * AVX-512 build): whether the build has them, the target attributes, the
 * run-time CPU check, and FO_SIMD_BUILD, which compiles one loop body for
 * both targets and chooses between them.
 *
 * Why: the modules are compiled for the baseline ISA (SSE2 on x86-64), so the
 * Cython loops vectorize 4 float32 lanes wide.  The *_avx2.h headers write
 * the same loops again in C, operation for operation, once, as scalar C that
 * GCC vectorizes: compiled inside the same module with target("avx2") (8
 * float32 lanes) and with target("avx512f,...", prefer-vector-width=512) (16
 * lanes).  Neither target names "fma", and the build has -ffp-contract=off
 * (setup.py), so no multiply and add are fused, although AVX-512F itself
 * has the FMA instructions; every operation (+, -, *, /, sqrt, compares
 * and selects) is IEEE correctly rounded at any vector width: the results
 * are the same bits as the baseline loops and the NumPy reference (the
 * tests run all three builds, tests/conftest.py BACKEND_PARAMS).
 *
 * Measured on the development machine (AMD EPYC Zen1, which splits 256-bit
 * operations in two, so AVX2 gains less here than on full-width CPUs):
 * float32 Adam in cache (16384 elements, 1 thread) 1.30-1.38 ns per element
 * with these loops against 1.47-1.52 with the baseline ones; float64 the same
 * (3.8); at 2^24 float32 elements, 2 threads, Adam / copy 0.995-1.023 against
 * 1.004-1.056 for the baseline loop (three processes, interleaved).  The
 * AVX-512 build's measurements (Zen4) are in benchmarks/simd_profile.py's
 * docstring.
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

/* Instruction sets of the loops, in the order of preference: _step's
 * ``_isa`` holds one, ``simd()`` names it. */
#define FO_ISA_BASELINE 0
#define FO_ISA_AVX2 1
#define FO_ISA_AVX512 2

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__) \
    && !defined(FUSEDOPTIM_NO_SIMD)
#define FO_SIMD_AVX2 1
#define FO_AVX2 __attribute__((target("avx2")))
/* F for the arithmetic, VL and BW/DQ so that the compiler may also use
 * masked 256/128-bit forms for the loop remainders: every AVX-512 CPU with
 * F has them but the first Xeon Phi, which then runs the AVX2 loops. */
#define FO_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl," \
                                        "prefer-vector-width=512")))
/* A loop's body, inlined into each target's function and compiled for it. */
#define FO_BODY static inline __attribute__((always_inline))

/* The best instruction set of the CPU (and OS: __builtin_cpu_supports
 * checks that the OS saves the registers). */
static inline int fo_simd_detect(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512dq")
        && __builtin_cpu_supports("avx512vl"))
        return FO_ISA_AVX512;
    return __builtin_cpu_supports("avx2") ? FO_ISA_AVX2 : FO_ISA_BASELINE;
}

/* Elements of type T from x to the next 64-byte boundary (0 when x is on
 * one, or not aligned to its own type), at most n: a loop that runs these
 * alone first has its 64-byte vector accesses to x (and to the arrays at
 * the same offset in a cache line: the states _alloc places) each in one
 * cache line instead of two (a load or store across two lines costs two
 * accesses).  NumPy starts large arrays 16 bytes into a page, so without
 * this every AVX-512 access of an optimizer step straddles two lines. */
#define FO_ALIGN_PEEL(x, T, n)                                                 \
    ((ptrdiff_t)(((((size_t)(x)) & 63) % sizeof(T)) ? 0 :                      \
     (((64 - (((size_t)(x)) & 63)) & 63) / sizeof(T)) < (size_t)(n)            \
     ? (((64 - (((size_t)(x)) & 63)) & 63) / sizeof(T)) : (size_t)(n)))

/* for (i = 0; i < n; i++) BODY, as two loops split at FO_ALIGN_PEEL(x, T,
 * n): the second, vectorized, then accesses whole cache lines.  Measured on
 * Lion (2^24 float32, 2 threads, AVX-512, arrays 16 bytes into a cache line
 * as NumPy places them): 7.52 -> 6.75 ms, the copy of its traffic 6.86.
 * Element-wise loops only: the bits do not change, a reduction's would. */
#define FO_PEELED_FOR(i, x, T, n, ...)                                         \
    do {                                                                       \
        const ptrdiff_t fo_i0_ = FO_ALIGN_PEEL(x, T, n);                       \
        for (i = 0; i < fo_i0_; i++) __VA_ARGS__                               \
        for (i = fo_i0_; i < (n); i++) __VA_ARGS__                             \
    } while (0)

/* FO_ALIGN_PEEL for float32, for the Cython callers (the reduced-precision
 * dispatch, which splits a range before calling a loop). */
static inline ptrdiff_t fo_align_peel_f32(const float *x, ptrdiff_t n)
{
    return FO_ALIGN_PEEL(x, float, n);
}

#define FO_UNPAREN(...) __VA_ARGS__
/* NAME(isa, PARAMS...): NAME##_body (an FO_BODY function taking PARAMS)
 * compiled for AVX-512 when isa is FO_ISA_AVX512, else for AVX2; PARAMS
 * and ARGS are parenthesized lists (the parameters, their names). */
#define FO_SIMD_BUILD(NAME, PARAMS, ARGS)                                      \
    static FO_AVX2 void NAME##_avx2 PARAMS { NAME##_body ARGS; }               \
    static FO_AVX512 void NAME##_avx512 PARAMS { NAME##_body ARGS; }           \
    static void NAME(int isa, FO_UNPAREN PARAMS)                               \
    {                                                                          \
        if (isa == FO_ISA_AVX512)                                              \
            NAME##_avx512 ARGS;                                                \
        else                                                                   \
            NAME##_avx2 ARGS;                                                  \
    }
/* FO_SIMD_BUILD for a body whose first parameter is the target it is
 * compiled for (a literal FO_ISA_* in each build, so that its tests fold
 * away): for a loop whose best shape differs between the two widths. */
#define FO_SIMD_BUILD_ISA(NAME, PARAMS, ARGS)                                  \
    static FO_AVX2 void NAME##_avx2 PARAMS                                     \
    { NAME##_body(FO_ISA_AVX2, FO_UNPAREN ARGS); }                             \
    static FO_AVX512 void NAME##_avx512 PARAMS                                 \
    { NAME##_body(FO_ISA_AVX512, FO_UNPAREN ARGS); }                           \
    static void NAME(int isa, FO_UNPAREN PARAMS)                               \
    {                                                                          \
        if (isa == FO_ISA_AVX512)                                              \
            NAME##_avx512 ARGS;                                                \
        else                                                                   \
            NAME##_avx2 ARGS;                                                  \
    }
#else
#define FO_SIMD_AVX2 0

static inline int fo_simd_detect(void) { return FO_ISA_BASELINE; }
/* No vector loops: nothing to align. */
static inline ptrdiff_t fo_align_peel_f32(const float *x, ptrdiff_t n)
{
    (void)x;
    (void)n;
    return 0;
}
#endif

#endif
