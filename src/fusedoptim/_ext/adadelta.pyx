# cython: language_level=3
"""The ``adadelta`` family's compiled step (Adadelta): the element loop of
``families.adadelta.adadelta_tensor``, its flag-specialized dispatch and its
AVX2 and AVX-512 fast path (``adadelta_avx2.h``)."""

from cython cimport floating

from ._step cimport Tensor, simd_isa
from ._gather cimport states_match
from ._grouped cimport Shell, shell_groups, shell_step
from ._loops cimport _prelude, _sqrt, _at

from fusedoptim.families import FAMILIES
from fusedoptim.families._spec import check_states

_FAMILY = FAMILIES["adadelta"]

cdef extern from "adadelta_avx2.h" nogil:
    void fo_adadelta_simd_f32(int isa, float* p, const float* g, float* sq, float* acc,
                              Py_ssize_t n, float lr, float rho, float omr, float e)
    void fo_adadelta_simd_f64(int isa, double* p, const double* g, double* sq, double* acc,
                              Py_ssize_t n, double lr, double rho, double omr, double e)


ctypedef struct AdadeltaArgs:
    double lr, rho, eps, wd, gscale
    bint maximize
    int simd             # instruction set of the fast paths (_step.simd_isa)


cdef inline void _adadelta_loop(floating* p, const floating* g, floating* sq,
                                floating* acc, Py_ssize_t n, floating lr, floating rho,
                                floating omr, floating e, floating gs, floating wd,
                                bint scale, bint maximize, bint l2) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, pi, s0, a0, si, d
    for i in range(n):
        # Every load of the element before any store (see _loops, _LOADS_FIRST).
        pi = p[i]
        s0 = sq[i]
        a0 = acc[i]
        gi = _prelude(g[i], pi, gs, scale, maximize, wd, l2)
        si = rho * s0 + (omr * gi) * gi
        d = _sqrt((a0 + e) / (si + e)) * gi
        sq[i] = si
        acc[i] = rho * a0 + (omr * d) * d
        p[i] = pi - lr * d


cdef inline void _adadelta_typed(floating* p, const floating* g, floating* sq,
                                 floating* acc, Py_ssize_t n,
                                 const AdadeltaArgs* A) noexcept nogil:
    cdef floating lr = <floating>A.lr, rho = <floating>A.rho
    cdef floating omr = <floating>(1.0 - A.rho), e = <floating>A.eps
    cdef floating gs = <floating>A.gscale, wd = <floating>A.wd
    cdef bint scale = A.gscale != 1.0, mx = A.maximize, l2 = A.wd != 0.0
    if scale or mx or l2:
        _adadelta_loop(p, g, sq, acc, n, lr, rho, omr, e, gs, wd, scale, mx, l2)
    elif A.simd:
        if floating is float:
            fo_adadelta_simd_f32(A.simd, p, g, sq, acc, n, lr, rho, omr, e)
        else:
            fo_adadelta_simd_f64(A.simd, p, g, sq, acc, n, lr, rho, omr, e)
    else:
        _adadelta_loop(p, g, sq, acc, n, lr, rho, omr, e, gs, wd, False, False, False)


cdef void _adadelta_chunk(const Tensor* t, Py_ssize_t a, Py_ssize_t b,
                          const void* args) noexcept nogil:
    cdef const AdadeltaArgs* A = <const AdadeltaArgs*>args
    if t.dbl:
        _adadelta_typed(<double*>_at(t.p, a, 8), <const double*>_at(t.g, a, 8),
                        <double*>_at(t.s[0], a, 8), <double*>_at(t.s[1], a, 8), b - a, A)
    else:
        _adadelta_typed(<float*>_at(t.p, a, 4), <const float*>_at(t.g, a, 4),
                        <float*>_at(t.s[0], a, 4), <float*>_at(t.s[1], a, 4), b - a, A)


cdef void _fill(AdadeltaArgs* A, double lr, double rho, double eps, double weight_decay,
                bint maximize, double gscale) noexcept:
    """One group's step arguments (the step's keywords) into ``A``."""
    A.lr = lr
    A.rho = rho
    A.eps = eps
    A.wd = weight_decay
    A.gscale = gscale
    A.maximize = maximize
    A.simd = simd_isa()


cdef int _fill_group(void* A, object kw, double gscale) except -1:
    """One group's keywords ``kw`` into ``A``; returns 0 (no flag switches a slot on)."""
    cdef AdadeltaArgs* a = <AdadeltaArgs*>A
    _fill(a, kw["lr"], kw["rho"], kw["eps"], kw["weight_decay"], kw["maximize"],
          gscale)
    return 0


cdef Shell _SHELL = Shell(chunk=_adadelta_chunk, run=NULL, fill=_fill_group,
                          size=sizeof(AdadeltaArgs), nslots=2, need=3,
                          flagged=False)


def step(params, grads, states, int mode, *, double lr, double rho, double eps,
         double weight_decay, bint maximize, double gscale):
    """Multi-tensor Adadelta step; ``states = (sq, acc)`` pairs (see
    ``families.adadelta.adadelta_tensor``)."""
    cdef AdadeltaArgs A
    if not states_match(states, 2, 3):
        check_states(_FAMILY, states, {})
    _fill(&A, lr, rho, eps, weight_decay, maximize, gscale)
    shell_step(&_SHELL, params, grads, states, mode, &A)


def step_groups(params, grads, states, int mode, groups, sizes, *, double gscale):
    """``step`` over several parameter groups in one call: ``groups[k]`` is
    group ``k``'s keywords (all but ``gscale``, shared), ``sizes[k]`` its
    number of tensors (see ``_grouped.shell_groups``)."""
    shell_groups(&_SHELL, _FAMILY, params, grads, states, mode, groups, sizes, gscale)
