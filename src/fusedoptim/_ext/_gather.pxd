# cython: language_level=3
from libc.string cimport memset
cimport numpy as cnp
from ._step cimport Step

cdef void step_free(Step* st) noexcept
cdef int step_alloc(Step* st, Py_ssize_t n, int nstates) except -1
cdef int gather_step(object params, object grads, object states, int mode,
                     Step* st) except -1
cdef bint states_match(object states, Py_ssize_t nslots, unsigned need) noexcept
cdef bint plain_subclass(object a) noexcept


cdef inline void step_init(Step* st) noexcept:
    memset(st, 0, sizeof(Step))


cdef inline bint float_array(object a) noexcept:
    """A native-order float32/float64 ndarray, or an accepted subclass
    (what ``_check_array`` accepts)."""
    cdef int tn
    if not cnp.PyArray_CheckExact(a) and not (cnp.PyArray_Check(a) and plain_subclass(a)):
        return False
    tn = cnp.PyArray_TYPE(<cnp.ndarray>a)
    return (tn == cnp.NPY_FLOAT or tn == cnp.NPY_DOUBLE) and \
        cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>a)


cdef inline bint writeable(cnp.ndarray a) noexcept:
    return cnp.PyArray_ISWRITEABLE(a) and cnp.PyArray_ISALIGNED(a)
