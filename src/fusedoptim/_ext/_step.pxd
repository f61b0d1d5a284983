# cython: language_level=3
"""The gathered step every family's ``step`` runs, and how it is run.

A family module gathers the step (``_gather.gather_step``), fills its
arguments struct, and hands ``run_step`` a chunk function: ``run_step``
calls it through the pointer over ranges of the concatenated tensors, on one
thread or in fixed blocks shared by the caller and the pool's workers.
"""

from cpython.object cimport PyObject

cdef enum:
    MAX_STATES = 3
    SLOTS = 5          # refs per tensor: p, g, state 0..2

ctypedef struct Tensor:
    char* p              # parameter (written)
    char* g              # gradient in the parameter's layout (read)
    char* s[3]           # states in family order, NULL when absent (written)
    Py_ssize_t n         # elements
    bint dbl             # float64, else float32
    int group            # parameter group: the chunk gets args + group * stride

ctypedef struct Span:
    size_t lo, hi        # bytes [lo, hi)
    Py_ssize_t idx       # position in step order
    int code             # param index * 8 + kind (0 param, 1 grad, 2 + j state j)
    int written

ctypedef struct Step:
    Tensor* t
    Py_ssize_t* start    # start[i]: offset of tensor i in the concatenation
    Py_ssize_t count
    Py_ssize_t total
    int nstates
    bint has_state[3]
    PyObject** refs      # owned: SLOTS per tensor (NULL where absent)
    Span* spans
    Py_ssize_t nspans
    void* args           # owned: one family args struct per group (step_args), or NULL
    size_t stride        # bytes per group's args struct (0: one group)

# Applies a family's update to elements [a, b) of tensor t; args is the
# family's own struct of step arguments (that of the tensor's group).
ctypedef void (*chunk_fn)(const Tensor* t, Py_ssize_t a, Py_ssize_t b,
                          const void* args) noexcept nogil

# The first pass of a two-pass family (a per-tensor reduction, LAMB's norms):
# updates elements [a, b) of tensor t, one block of the global norm's
# SUMSQ_BLOCK elements (a a multiple of it from the tensor's start), and
# writes the block's float64 partial results to out[0 .. nout).
ctypedef void (*reduce_fn)(const Tensor* t, Py_ssize_t a, Py_ssize_t b, double* out,
                           const void* args) noexcept nogil

cdef bint simd_enabled() noexcept nogil
cdef int simd_isa() noexcept nogil
cdef int run_step(const Step* st, chunk_fn fn, const void* args) except -1
cdef int run_reduce(const Step* st, reduce_fn fn, const void* args, int nout,
                    double* sums) except -1
