# cython: language_level=3
"""The ``nadam`` family's compiled step (NAdam): the element loop of
``families.nadam.nadam_tensor``, its flag-specialized dispatch and its AVX2 and
AVX-512 fast path (``nadam_avx2.h``)."""

from cython cimport floating

from ._step cimport Tensor, simd_isa
from ._gather cimport states_match
from ._grouped cimport Shell, shell_groups, shell_step
from ._loops cimport _prelude, _sqrt, _at

from fusedoptim.families import FAMILIES
from fusedoptim.families._spec import check_states

_FAMILY = FAMILIES["nadam"]

cdef extern from "nadam_avx2.h" nogil:
    void fo_nadam_simd_f32(int isa, float* p, const float* g, float* m, float* v,
                           Py_ssize_t n, float b1, float omb1, float b2, float omb2,
                           float e, float c2, float lrg, float lrm, float shrink,
                           int shrink_p)
    void fo_nadam_simd_f64(int isa, double* p, const double* g, double* m, double* v,
                           Py_ssize_t n, double b1, double omb1, double b2, double omb2,
                           double e, double c2, double lrg, double lrm, double shrink,
                           int shrink_p)


ctypedef struct NadamArgs:
    double lr, beta1, beta2, eps, bc2, lr_g, lr_m, wd, gscale
    bint decoupled, maximize
    int simd             # instruction set of the fast paths (_step.simd_isa)


cdef inline void _nadam_loop(floating* p, const floating* g, floating* m, floating* v,
                             Py_ssize_t n, floating b1, floating omb1, floating b2,
                             floating omb2, floating e, floating c2, floating lrg,
                             floating lrm, floating gs, floating wd, floating shrink,
                             bint scale, bint maximize, bint l2, bint shrink_p) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, pi, mi, vi, d, m0, v0
    for i in range(n):
        # Every load of the element before any store (see _loops, _LOADS_FIRST).
        pi = p[i]
        m0 = m[i]
        v0 = v[i]
        gi = _prelude(g[i], pi, gs, scale, maximize, wd, l2)
        if shrink_p:
            pi = pi * shrink
        mi = b1 * m0 + omb1 * gi
        vi = b2 * v0 + (omb2 * gi) * gi
        m[i] = mi
        v[i] = vi
        d = _sqrt(vi / c2) + e
        p[i] = pi - (lrg * gi + lrm * mi) / d


cdef inline void _nadam_typed(floating* p, const floating* g, floating* m, floating* v,
                              Py_ssize_t n, const NadamArgs* A) noexcept nogil:
    cdef floating b1 = <floating>A.beta1, omb1 = <floating>(1.0 - A.beta1)
    cdef floating b2 = <floating>A.beta2, omb2 = <floating>(1.0 - A.beta2)
    cdef floating e = <floating>A.eps, c2 = <floating>A.bc2
    cdef floating lrg = <floating>A.lr_g, lrm = <floating>A.lr_m
    cdef floating gs = <floating>A.gscale, wd = <floating>A.wd
    cdef floating shrink = <floating>(1.0 - A.lr * A.wd)
    cdef bint scale = A.gscale != 1.0, mx = A.maximize
    cdef bint l2 = A.wd != 0.0 and not A.decoupled
    cdef bint shrink_p = A.wd != 0.0 and A.decoupled
    if scale or mx or l2:
        _nadam_loop(p, g, m, v, n, b1, omb1, b2, omb2, e, c2, lrg, lrm, gs, wd, shrink,
                    scale, mx, l2, shrink_p)
    elif A.simd:
        if floating is float:
            fo_nadam_simd_f32(A.simd, p, g, m, v, n, b1, omb1, b2, omb2, e, c2, lrg, lrm, shrink,
                              shrink_p)
        else:
            fo_nadam_simd_f64(A.simd, p, g, m, v, n, b1, omb1, b2, omb2, e, c2, lrg, lrm, shrink,
                              shrink_p)
    elif shrink_p:
        # NAdamW
        _nadam_loop(p, g, m, v, n, b1, omb1, b2, omb2, e, c2, lrg, lrm, gs, wd, shrink,
                    False, False, False, True)
    else:
        _nadam_loop(p, g, m, v, n, b1, omb1, b2, omb2, e, c2, lrg, lrm, gs, wd, shrink,
                    False, False, False, False)


cdef void _nadam_chunk(const Tensor* t, Py_ssize_t a, Py_ssize_t b,
                       const void* args) noexcept nogil:
    cdef const NadamArgs* A = <const NadamArgs*>args
    if t.dbl:
        _nadam_typed(<double*>_at(t.p, a, 8), <const double*>_at(t.g, a, 8),
                     <double*>_at(t.s[0], a, 8), <double*>_at(t.s[1], a, 8), b - a, A)
    else:
        _nadam_typed(<float*>_at(t.p, a, 4), <const float*>_at(t.g, a, 4),
                     <float*>_at(t.s[0], a, 4), <float*>_at(t.s[1], a, 4), b - a, A)


cdef void _fill(NadamArgs* A, double lr, double beta1, double beta2, double eps, double bc2,
                double lr_g, double lr_m, double weight_decay, bint decoupled, bint maximize,
                double gscale) noexcept:
    """One group's step arguments (the step's keywords) into ``A``."""
    A.lr = lr
    A.beta1 = beta1
    A.beta2 = beta2
    A.eps = eps
    A.bc2 = bc2
    A.lr_g = lr_g
    A.lr_m = lr_m
    A.wd = weight_decay
    A.gscale = gscale
    A.decoupled = decoupled
    A.maximize = maximize
    A.simd = simd_isa()


cdef int _fill_group(void* A, object kw, double gscale) except -1:
    """One group's keywords ``kw`` into ``A``; returns 0 (no flag switches a slot on)."""
    cdef NadamArgs* a = <NadamArgs*>A
    _fill(a, kw["lr"], kw["beta1"], kw["beta2"], kw["eps"], kw["bc2"], kw["lr_g"],
          kw["lr_m"], kw["weight_decay"], kw["decoupled"], kw["maximize"], gscale)
    return 0


cdef Shell _SHELL = Shell(chunk=_nadam_chunk, run=NULL, fill=_fill_group,
                          size=sizeof(NadamArgs), nslots=2, need=3,
                          flagged=False)


def step(params, grads, states, int mode, *, double lr, double beta1, double beta2,
         double eps, double bc2, double lr_g, double lr_m, double weight_decay,
         bint decoupled, bint maximize, double gscale):
    """Multi-tensor NAdam step; ``states = (m, v)`` pairs (see
    ``families.nadam.nadam_tensor``)."""
    cdef NadamArgs A
    if not states_match(states, 2, 3):
        check_states(_FAMILY, states, {})
    _fill(&A, lr, beta1, beta2, eps, bc2, lr_g, lr_m, weight_decay, decoupled, maximize,
          gscale)
    shell_step(&_SHELL, params, grads, states, mode, &A)


def step_groups(params, grads, states, int mode, groups, sizes, *, double gscale):
    """``step`` over several parameter groups in one call: ``groups[k]`` is
    group ``k``'s keywords (all but ``gscale``, shared), ``sizes[k]`` its
    number of tensors (see ``_grouped.shell_groups``)."""
    shell_groups(&_SHELL, _FAMILY, params, grads, states, mode, groups, sizes, gscale)
