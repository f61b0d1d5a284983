# cython: language_level=3
"""Element helpers the family loops share; inline, so each loop compiles to
the same code as if they were written in it."""

from cython cimport floating
from libc.math cimport sqrt, sqrtf


cdef inline floating _sqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline floating _div_c1(floating x, floating c, double rc) noexcept nogil:
    """``x / c`` correctly rounded, for Adam's first bias correction.

    float32: ``(float)((double)x * rc)`` with ``rc = 1.0 / (double)c``, which
    is the same bits as the float32 division for every ``x`` (zeros,
    subnormals, infinities and NaN payloads included; the proof is in
    ``adam_avx2.h``).  It replaces a division, the slowest instruction of the
    Adam loop, by a multiply and two conversions.  float64 divides.
    """
    if floating is float:
        return <float>(<double>x * rc)
    else:
        return x / c


cdef inline floating _prelude(floating g, floating p, floating gs, bint scale,
                              bint maximize, floating wd, bint decay) noexcept nogil:
    """``families._spec.prelude`` for one element: clip scale, sign, L2."""
    if scale:
        g = g * gs
    if maximize:
        g = -g
    if decay:
        g = g + wd * p
    return g


cdef inline double _lanes_total(const double* acc) noexcept nogil:
    """The pairwise combination of ``_norm.sumsq_blocks``'s 8 lanes."""
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


cdef inline double _block_sumsq(const floating* x, Py_ssize_t n) noexcept nogil:
    """``_norm.sumsq_blocks`` for one block (``n <= SUMSQ_BLOCK``): element
    i to lane i % 8, each lane summed in order in float64, lanes combined
    pairwise (``_lanes_total``)."""
    cdef double acc[8]
    cdef double y
    cdef Py_ssize_t i, k, full = n - n % 8
    for k in range(8):
        acc[k] = 0.0
    # Literal 8 (_norm.SUMSQ_LANES, checked by _step): Cython turns only a
    # literal step into a C loop.
    for i in range(0, full, 8):
        for k in range(8):
            y = <double>x[i + k]
            acc[k] = acc[k] + y * y
    for k in range(n - full):
        y = <double>x[full + k]
        acc[k] = acc[k] + y * y
    return _lanes_total(acc)


cdef inline char* _at(char* base, Py_ssize_t a, Py_ssize_t itemsize) noexcept nogil:
    """Element ``a`` of an array (NULL for an absent state)."""
    return NULL if base == NULL else base + a * itemsize


# _LOADS_FIRST: every element loop reads all of its operands before it
# stores any.  NumPy starts every large array at the same offset in a page, so
# p[i], m[i], v[i] of user-made arrays share their address modulo 4096 (the
# states fusedoptim makes are placed apart, _alloc); a store to m[i] followed
# by a load of v[i] then stalls on 4K aliasing (the CPU's store-to-load check
# compares only the low 12 address bits).  Validation guarantees the arrays do
# not overlap, so the reordering cannot change a result.
