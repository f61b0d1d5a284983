# cython: language_level=3
"""The benchmark's physical yardstick, ``copy_like`` (not on any step's path).

It moves the bytes of an optimizer step and does no arithmetic to speak of,
through the same split, placement and (on AVX2 and AVX-512 CPUs) the same
kind of SIMD loop (``copy_avx2.h``) as the optimizer kernels, so that each optimizer's
time can be reported against it as against a floor.
"""

from cython cimport floating
cimport numpy as cnp

from ._step cimport Tensor, Step, run_step, simd_isa
from ._gather cimport float_array, writeable, step_alloc, step_init, step_free
from ._loops cimport _at

cnp.import_array()

cdef extern from "copy_avx2.h" nogil:
    void fo_copy_simd_f32(int isa, float* x0, float* x1, float* x2, const float* g,
                          const float* g2, Py_ssize_t n, int nrw, int nro)
    void fo_copy_simd_f64(int isa, double* x0, double* x1, double* x2, const double* g,
                          const double* g2, Py_ssize_t n, int nrw, int nro)

ctypedef struct CopyArgs:
    int nrw, nro
    int simd             # instruction set of the fast paths (_step.simd_isa)


cdef inline void _copy_like_loop(floating* x0, floating* x1, floating* x2, const floating* g,
                                 const floating* g2, Py_ssize_t n, int nrw,
                                 int nro) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating a0, a1, a2, gi
    for i in range(n):
        # All loads before any store, as in the optimizer kernels
        # (_LOADS_FIRST), so the yardstick is not slower than what it measures.
        gi = g[i]
        if nro > 1:
            gi = gi + g2[i]
        a0 = x0[i]
        if nrw > 1:
            a1 = x1[i]
        if nrw > 2:
            a2 = x2[i]
        x0[i] = a0 + gi
        if nrw > 1:
            x1[i] = a1 + gi
        if nrw > 2:
            x2[i] = a2 + gi


cdef inline void _copy_like_typed(floating* x0, floating* x1, floating* x2, const floating* g,
                                  const floating* g2, Py_ssize_t n, int nrw, int nro,
                                  int simd) noexcept nogil:
    if simd:
        if floating is float:
            fo_copy_simd_f32(simd, x0, x1, x2, g, g2, n, nrw, nro)
        else:
            fo_copy_simd_f64(simd, x0, x1, x2, g, g2, n, nrw, nro)
    elif nro == 2:
        _copy_like_loop(x0, x1, x2, g, g2, n, nrw, 2)
    elif nrw == 1:
        _copy_like_loop(x0, x1, x2, g, g2, n, 1, 1)
    elif nrw == 2:
        _copy_like_loop(x0, x1, x2, g, g2, n, 2, 1)
    else:
        _copy_like_loop(x0, x1, x2, g, g2, n, 3, 1)


cdef void _copy_like_chunk(const Tensor* t, Py_ssize_t a, Py_ssize_t b,
                           const void* args) noexcept nogil:
    cdef const CopyArgs* A = <const CopyArgs*>args
    if t.dbl:
        _copy_like_typed(<double*>_at(t.p, a, 8), <double*>_at(t.s[0], a, 8),
                         <double*>_at(t.s[1], a, 8), <const double*>_at(t.g, a, 8),
                         <const double*>_at(t.s[2], a, 8), b - a, A.nrw, A.nro, A.simd)
    else:
        _copy_like_typed(<float*>_at(t.p, a, 4), <float*>_at(t.s[0], a, 4),
                         <float*>_at(t.s[1], a, 4), <const float*>_at(t.g, a, 4),
                         <const float*>_at(t.s[2], a, 4), b - a, A.nrw, A.nro, A.simd)


def copy_like(rw, ro):
    """Move the bytes of an optimizer step and nothing more: each array in
    ``rw`` (1 to 3, read and written) gets ``+= ro[0]`` (read only), or
    ``+= ro[0] + ro[1]`` with two read-only arrays (the traffic of a second
    pass that reads states again, LAMB's).

    With ``rw = [p, v, s]`` and ``ro = [g]`` it reads 4 and writes 3 arrays,
    the traffic of an Adam step; the benchmark reports each optimizer's time
    against this floor.  It runs through the same split as the optimizer
    kernels (serial below ``PARALLEL_MIN_ELEMENTS``, else one contiguous range
    per thread), so the comparison is like for like.  Arrays: same dtype
    (float32/float64), C-contiguous, same size.
    """
    cdef Step st
    cdef CopyArgs A
    cdef int nrw = len(rw), nro = len(ro), k
    cdef cnp.ndarray a
    if not 1 <= nrw <= 3 or not 1 <= nro <= 2:
        raise ValueError("copy_like takes 1 to 3 read-write arrays and 1 or 2 read-only "
                         "arrays")
    arrays = list(rw) + list(ro)
    first = arrays[0]
    for x in arrays:
        if not (float_array(x) and cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>x)
                and cnp.PyArray_TYPE(<cnp.ndarray>x) == cnp.PyArray_TYPE(<cnp.ndarray>first)
                and cnp.PyArray_SIZE(<cnp.ndarray>x) == cnp.PyArray_SIZE(<cnp.ndarray>first)):
            raise ValueError("copy_like needs C-contiguous float32/float64 arrays of one "
                             "dtype and size")
    for x in rw:
        if not writeable(<cnp.ndarray>x):
            raise ValueError("copy_like: a read-write array is read-only")
    step_init(&st)
    try:
        step_alloc(&st, 1, 0)
        a = <cnp.ndarray>first
        st.t[0].p = <char*>cnp.PyArray_DATA(a)
        st.t[0].g = <char*>cnp.PyArray_DATA(<cnp.ndarray>arrays[nrw])
        for k in range(3):
            st.t[0].s[k] = NULL
        for k in range(1, nrw):
            st.t[0].s[k - 1] = <char*>cnp.PyArray_DATA(<cnp.ndarray>arrays[k])
        if nro == 2:  # s[2] is free: at most 3 read-write arrays
            st.t[0].s[2] = <char*>cnp.PyArray_DATA(<cnp.ndarray>arrays[nrw + 1])
        st.t[0].n = cnp.PyArray_SIZE(a)
        st.t[0].dbl = cnp.PyArray_TYPE(a) == cnp.NPY_DOUBLE
        st.start[0] = 0
        st.start[1] = st.t[0].n
        st.total = st.t[0].n
        A.nrw = nrw
        A.nro = nro
        A.simd = simd_isa()
        run_step(&st, _copy_like_chunk, &A)
    finally:
        step_free(&st)
