# cython: language_level=3
"""The ``lamb`` family's compiled step (LAMB): the two passes of
``families.lamb.lamb_tensor`` (``run_reduce``: moments and the blocks' sums
of squares; ``run_step``: the parameter scaled by each tensor's trust
ratio), their flag-specialized dispatch and AVX2 and AVX-512 fast paths
(``lamb_avx2.h``)."""

from cython cimport floating
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.math cimport sqrt

from ._step cimport Tensor, Step, run_step, run_reduce, simd_isa
from ._gather cimport states_match
from ._grouped cimport Shell, shell_groups, shell_step
from ._loops cimport _prelude, _sqrt, _div_c1, _at, _block_sumsq

from fusedoptim.families import FAMILIES
from fusedoptim.families._spec import check_states

_FAMILY = FAMILIES["lamb"]

cdef extern from "lamb_avx2.h" nogil:
    void fo_lamb1_simd_f32(int isa, const float* p, const float* g, float* m, float* v,
                           Py_ssize_t n, float b1, float omb1, float b2, float omb2,
                           float e, float c1, float c2, double rc1, float wd, int decay,
                           double* out, Py_ssize_t lim)
    void fo_lamb1_simd_f64(int isa, const double* p, const double* g, double* m, double* v,
                           Py_ssize_t n, double b1, double omb1, double b2, double omb2,
                           double e, double c1, double c2, double rc1, double wd, int decay,
                           double* out, Py_ssize_t lim)
    void fo_lamb2_simd_f32(int isa, float* p, const float* m, const float* v, Py_ssize_t n,
                           float s, float e, float c1, float c2, double rc1, float wd,
                           int decay, Py_ssize_t lim)
    void fo_lamb2_simd_f64(int isa, double* p, const double* m, const double* v,
                           Py_ssize_t n, double s, double e, double c1, double c2,
                           double rc1, double wd, int decay, Py_ssize_t lim)


ctypedef struct LambArgs:
    double lr, beta1, beta2, eps, bc1, bc2, wd, gscale
    bint maximize
    int simd             # instruction set of the fast paths (_step.simd_isa)
    const Tensor* t0      # the step's first tensor: t - t0 is a tensor's index
    const double* scale   # second pass: lr * trust ratio of each tensor


cdef inline floating _dir(floating mi, floating vi, floating pi, floating e, floating c1,
                          floating c2, double rc1, floating wd, bint decay) noexcept nogil:
    """The direction u of one element (lamb_tensor's order)."""
    cdef floating u = _div_c1(mi, c1, rc1) / (_sqrt(vi / c2) + e)
    if decay:
        u = u + wd * pi
    return u


cdef inline void _lamb1_loop(const floating* p, const floating* g, floating* m, floating* v,
                             Py_ssize_t n, floating b1, floating omb1, floating b2,
                             floating omb2, floating e, floating c1, floating c2, double rc1,
                             floating gs, floating wd, bint scale, bint maximize,
                             bint decay, double* out) noexcept nogil:
    """First pass over one block (``n <= SUMSQ_BLOCK``): the moments, the
    direction into a block buffer (in L1), then the global norm's block sum
    of squares of p and of the direction (apart, so that each loop
    vectorizes)."""
    cdef floating ub[4096]
    cdef Py_ssize_t i
    cdef floating gi, pi, m0, v0, mi, vi
    for i in range(n):
        # Every load of the element before any store (see _loops, _LOADS_FIRST).
        pi = p[i]
        m0 = m[i]
        v0 = v[i]
        gi = _prelude(g[i], pi, gs, scale, maximize, wd, False)
        mi = b1 * m0 + omb1 * gi
        vi = b2 * v0 + omb2 * (gi * gi)
        m[i] = mi
        v[i] = vi
        ub[i] = _dir(mi, vi, pi, e, c1, c2, rc1, wd, decay)
    out[0] = _block_sumsq(p, n)
    out[1] = _block_sumsq(&ub[0], n)


cdef inline void _lamb1_typed(const floating* p, const floating* g, floating* m, floating* v,
                              Py_ssize_t n, Py_ssize_t lim, const LambArgs* A,
                              double* out) noexcept nogil:
    cdef floating b1 = <floating>A.beta1, omb1 = <floating>(1.0 - A.beta1)
    cdef floating b2 = <floating>A.beta2, omb2 = <floating>(1.0 - A.beta2)
    cdef floating e = <floating>A.eps, c1 = <floating>A.bc1, c2 = <floating>A.bc2
    cdef double rc1 = 1.0 / <double>c1
    cdef floating gs = <floating>A.gscale, wd = <floating>A.wd
    cdef bint scale = A.gscale != 1.0, mx = A.maximize, decay = A.wd != 0.0
    if scale or mx:
        _lamb1_loop(p, g, m, v, n, b1, omb1, b2, omb2, e, c1, c2, rc1, gs, wd, scale, mx,
                    decay, out)
    elif A.simd:
        if floating is float:
            fo_lamb1_simd_f32(A.simd, p, g, m, v, n, b1, omb1, b2, omb2, e, c1, c2, rc1, wd, decay,
                              out, lim)
        else:
            fo_lamb1_simd_f64(A.simd, p, g, m, v, n, b1, omb1, b2, omb2, e, c1, c2, rc1, wd, decay,
                              out, lim)
    elif decay:
        _lamb1_loop(p, g, m, v, n, b1, omb1, b2, omb2, e, c1, c2, rc1, gs, wd, False, False,
                    True, out)
    else:
        _lamb1_loop(p, g, m, v, n, b1, omb1, b2, omb2, e, c1, c2, rc1, gs, wd, False, False,
                    False, out)


cdef void _lamb1_block(const Tensor* t, Py_ssize_t a, Py_ssize_t b, double* out,
                       const void* args) noexcept nogil:
    cdef const LambArgs* A = <const LambArgs*>args
    if t.dbl:
        _lamb1_typed(<const double*>_at(t.p, a, 8), <const double*>_at(t.g, a, 8),
                     <double*>_at(t.s[0], a, 8), <double*>_at(t.s[1], a, 8), b - a, t.n - a,
                     A, out)
    else:
        _lamb1_typed(<const float*>_at(t.p, a, 4), <const float*>_at(t.g, a, 4),
                     <float*>_at(t.s[0], a, 4), <float*>_at(t.s[1], a, 4), b - a, t.n - a,
                     A, out)


cdef inline void _lamb2_loop(floating* p, const floating* m, const floating* v,
                             Py_ssize_t n, floating s, floating e, floating c1, floating c2,
                             double rc1, floating wd, bint decay) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating pi
    for i in range(n):
        pi = p[i]
        p[i] = pi - s * _dir(m[i], v[i], pi, e, c1, c2, rc1, wd, decay)


cdef inline void _lamb2_typed(floating* p, const floating* m, const floating* v,
                              Py_ssize_t n, Py_ssize_t lim, const LambArgs* A,
                              double scale) noexcept nogil:
    cdef floating s = <floating>scale, e = <floating>A.eps
    cdef floating c1 = <floating>A.bc1, c2 = <floating>A.bc2
    cdef double rc1 = 1.0 / <double>c1
    cdef floating wd = <floating>A.wd
    cdef bint decay = A.wd != 0.0
    if A.simd:
        if floating is float:
            fo_lamb2_simd_f32(A.simd, p, m, v, n, s, e, c1, c2, rc1, wd, decay, lim)
        else:
            fo_lamb2_simd_f64(A.simd, p, m, v, n, s, e, c1, c2, rc1, wd, decay, lim)
    elif decay:
        _lamb2_loop(p, m, v, n, s, e, c1, c2, rc1, wd, True)
    else:
        _lamb2_loop(p, m, v, n, s, e, c1, c2, rc1, wd, False)


cdef void _lamb2_chunk(const Tensor* t, Py_ssize_t a, Py_ssize_t b,
                       const void* args) noexcept nogil:
    cdef const LambArgs* A = <const LambArgs*>args
    cdef double scale = A.scale[t - A.t0]
    # The prefetches stay inside [a, b) (lim = b - a), as Adam's do: past b
    # lies the next block of the split, which another thread may be writing,
    # and a prefetch for writing takes its lines from that thread's core.
    # bench --size big --optimizer lamb, 2 threads (shared machine, load
    # 1.5-1.8, one run each, interleaved builds): LAMB / copy 0.95-0.97 in 4
    # runs of 5 (one 0.60 with a copy at 9.6 ms) against 0.75, 0.79 and 1.09
    # (copy at 26.7 ms) with the tensor's end as the limit.
    if t.dbl:
        _lamb2_typed(<double*>_at(t.p, a, 8), <const double*>_at(t.s[0], a, 8),
                     <const double*>_at(t.s[1], a, 8), b - a, b - a, A, scale)
    else:
        _lamb2_typed(<float*>_at(t.p, a, 4), <const float*>_at(t.s[0], a, 4),
                     <const float*>_at(t.s[1], a, 4), b - a, b - a, A, scale)


cdef double _trust_ratio(double sp, double su) noexcept nogil:
    """``families.lamb.trust_ratio``."""
    if sp == 0.0 or su == 0.0:
        return 1.0
    return sqrt(sp) / sqrt(su)


cdef void _fill(LambArgs* A, double lr, double beta1, double beta2, double eps, double bc1,
                double bc2, double weight_decay, bint maximize, double gscale) noexcept:
    """One group's step arguments (the step's keywords) into ``A``; ``t0``
    and ``scale`` are set by ``_two_passes``."""
    A.lr = lr
    A.beta1 = beta1
    A.beta2 = beta2
    A.eps = eps
    A.bc1 = bc1
    A.bc2 = bc2
    A.wd = weight_decay
    A.gscale = gscale
    A.maximize = maximize
    A.simd = simd_isa()


cdef int _two_passes(Step* st, LambArgs* A, Py_ssize_t ngroups) except -1:
    """The gathered step's two passes, group ``k``'s arguments in ``A[k]``
    (each tensor's chunks and blocks get their group's: ``run_step``,
    ``run_reduce``): the moments and the sums of squares, then each
    tensor's ``lr * trust ratio`` with its group's ``lr``, then the
    parameters."""
    cdef double* sums = NULL
    cdef double* scale = NULL
    cdef Py_ssize_t i, k, n = st.count if st.count > 0 else 1
    try:
        sums = <double*>PyMem_Malloc(2 * n * sizeof(double))
        scale = <double*>PyMem_Malloc(n * sizeof(double))
        if sums == NULL or scale == NULL:
            raise MemoryError()
        for k in range(ngroups):
            A[k].t0 = st.t
            A[k].scale = scale
        run_reduce(st, _lamb1_block, A, 2, sums)
        for i in range(st.count):
            scale[i] = A[st.t[i].group].lr * _trust_ratio(sums[2 * i], sums[2 * i + 1])
        run_step(st, _lamb2_chunk, A)
    finally:
        PyMem_Free(sums)
        PyMem_Free(scale)
    return 0


cdef int _run(Step* st, void* A, Py_ssize_t ngroups) except -1:
    # The shared shell's hook: LAMB runs two passes, not one run_step.
    return _two_passes(st, <LambArgs*>A, ngroups)


cdef int _fill_group(void* A, object kw, double gscale) except -1:
    """One group's keywords ``kw`` into ``A``; returns 0 (no flag switches a slot on)."""
    _fill(<LambArgs*>A, kw["lr"], kw["beta1"], kw["beta2"], kw["eps"], kw["bc1"], kw["bc2"],
          kw["weight_decay"], kw["maximize"], gscale)
    return 0


cdef Shell _SHELL = Shell(chunk=NULL, run=_run, fill=_fill_group, size=sizeof(LambArgs),
                          nslots=2, need=3, flagged=False)


def step(params, grads, states, int mode, *, double lr, double beta1, double beta2,
         double eps, double bc1, double bc2, double weight_decay, bint maximize,
         double gscale):
    """Multi-tensor LAMB step, one call, two passes; ``states = (m, v)``
    pairs (see ``families.lamb.lamb_tensor``)."""
    cdef LambArgs A
    if not states_match(states, 2, 3):
        check_states(_FAMILY, states, {})
    _fill(&A, lr, beta1, beta2, eps, bc1, bc2, weight_decay, maximize, gscale)
    shell_step(&_SHELL, params, grads, states, mode, &A)


def step_groups(params, grads, states, int mode, groups, sizes, *, double gscale):
    """``step`` over several parameter groups in one call: ``groups[k]`` is
    group ``k``'s keywords (all but ``gscale``, shared), ``sizes[k]`` its
    number of tensors (see ``_grouped.shell_groups``); both passes use each
    tensor's group's arguments."""
    shell_groups(&_SHELL, _FAMILY, params, grads, states, mode, groups, sizes, gscale)
