# cython: language_level=3
"""The ``radam`` family's compiled step (RAdam): the element loop of
``families.radam.radam_tensor``, its flag-specialized dispatch and its AVX2 and
AVX-512 fast path (``radam_avx2.h``).  ``rectified`` is one branch per step, chosen
outside the element loop."""

from cython cimport floating

from ._step cimport Tensor, simd_isa
from ._gather cimport states_match
from ._grouped cimport Shell, shell_groups, shell_step
from ._loops cimport _prelude, _sqrt, _at

from fusedoptim.families import FAMILIES
from fusedoptim.families._spec import check_states

_FAMILY = FAMILIES["radam"]

cdef extern from "radam_avx2.h" nogil:
    void fo_radam_simd_f32(int isa, float* p, const float* g, float* m, float* v,
                           Py_ssize_t n, float lr, float b1, float omb1, float b2,
                           float omb2, float e, float c1, float s2, float rect,
                           float shrink, int shrink_p, int rectified)
    void fo_radam_simd_f64(int isa, double* p, const double* g, double* m, double* v,
                           Py_ssize_t n, double lr, double b1, double omb1, double b2,
                           double omb2, double e, double c1, double s2, double rect,
                           double shrink, int shrink_p, int rectified)


ctypedef struct RadamArgs:
    double lr, beta1, beta2, eps, bc1, bc2_sqrt, rect, wd, gscale
    bint decoupled, maximize, rectified
    int simd             # instruction set of the fast paths (_step.simd_isa)


cdef inline void _radam_loop(floating* p, const floating* g, floating* m, floating* v,
                             Py_ssize_t n, floating lr, floating b1, floating omb1,
                             floating b2, floating omb2, floating e, floating c1,
                             floating s2, floating rect, floating gs, floating wd,
                             floating shrink, bint scale, bint maximize, bint l2,
                             bint shrink_p, bint rectified) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, pi, mi, vi, mh, a, m0, v0
    cdef floating one = 1.0
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
        mh = mi / c1
        if rectified:
            # torch: bc2 ** 0.5 / x is x.reciprocal() * bc2 ** 0.5.
            a = (one / (_sqrt(vi) + e)) * s2
            p[i] = pi - ((mh * lr) * a) * rect
        else:
            p[i] = pi - mh * lr


cdef inline void _radam_typed(floating* p, const floating* g, floating* m, floating* v,
                              Py_ssize_t n, const RadamArgs* A) noexcept nogil:
    cdef floating lr = <floating>A.lr, b1 = <floating>A.beta1
    cdef floating omb1 = <floating>(1.0 - A.beta1), b2 = <floating>A.beta2
    cdef floating omb2 = <floating>(1.0 - A.beta2), e = <floating>A.eps
    cdef floating c1 = <floating>A.bc1
    cdef floating s2 = <floating>A.bc2_sqrt, rect = <floating>A.rect
    cdef floating gs = <floating>A.gscale, wd = <floating>A.wd
    cdef floating shrink = <floating>(1.0 - A.lr * A.wd)
    cdef bint scale = A.gscale != 1.0, mx = A.maximize, rf = A.rectified
    cdef bint l2 = A.wd != 0.0 and not A.decoupled
    cdef bint shrink_p = A.wd != 0.0 and A.decoupled
    if scale or mx or l2:
        _radam_loop(p, g, m, v, n, lr, b1, omb1, b2, omb2, e, c1, s2, rect, gs, wd,
                    shrink, scale, mx, l2, shrink_p, rf)
    elif A.simd:
        if floating is float:
            fo_radam_simd_f32(A.simd, p, g, m, v, n, lr, b1, omb1, b2, omb2, e, c1, s2, rect,
                              shrink, shrink_p, rf)
        else:
            fo_radam_simd_f64(A.simd, p, g, m, v, n, lr, b1, omb1, b2, omb2, e, c1, s2, rect,
                              shrink, shrink_p, rf)
    elif rf:
        _radam_loop(p, g, m, v, n, lr, b1, omb1, b2, omb2, e, c1, s2, rect, gs, wd,
                    shrink, False, False, False, shrink_p, True)
    else:
        _radam_loop(p, g, m, v, n, lr, b1, omb1, b2, omb2, e, c1, s2, rect, gs, wd,
                    shrink, False, False, False, shrink_p, False)


cdef void _radam_chunk(const Tensor* t, Py_ssize_t a, Py_ssize_t b,
                       const void* args) noexcept nogil:
    cdef const RadamArgs* A = <const RadamArgs*>args
    if t.dbl:
        _radam_typed(<double*>_at(t.p, a, 8), <const double*>_at(t.g, a, 8),
                     <double*>_at(t.s[0], a, 8), <double*>_at(t.s[1], a, 8), b - a, A)
    else:
        _radam_typed(<float*>_at(t.p, a, 4), <const float*>_at(t.g, a, 4),
                     <float*>_at(t.s[0], a, 4), <float*>_at(t.s[1], a, 4), b - a, A)


cdef void _fill(RadamArgs* A, double lr, double beta1, double beta2, double eps, double bc1,
                double bc2_sqrt, double rect, double weight_decay, bint decoupled,
                bint maximize, bint rectified, double gscale) noexcept:
    """One group's step arguments (the step's keywords) into ``A``."""
    A.lr = lr
    A.beta1 = beta1
    A.beta2 = beta2
    A.eps = eps
    A.bc1 = bc1
    A.bc2_sqrt = bc2_sqrt
    A.rect = rect
    A.wd = weight_decay
    A.gscale = gscale
    A.decoupled = decoupled
    A.maximize = maximize
    A.rectified = rectified
    A.simd = simd_isa()


cdef int _fill_group(void* A, object kw, double gscale) except -1:
    """One group's keywords ``kw`` into ``A``; returns 0 (no flag switches a slot on)."""
    cdef RadamArgs* a = <RadamArgs*>A
    _fill(a, kw["lr"], kw["beta1"], kw["beta2"], kw["eps"], kw["bc1"],
          kw["bc2_sqrt"], kw["rect"], kw["weight_decay"], kw["decoupled"],
          kw["maximize"], kw["rectified"], gscale)
    return 0


cdef Shell _SHELL = Shell(chunk=_radam_chunk, run=NULL, fill=_fill_group,
                          size=sizeof(RadamArgs), nslots=2, need=3,
                          flagged=False)


def step(params, grads, states, int mode, *, double lr, double beta1, double beta2,
         double eps, double bc1, double bc2_sqrt, double rect, double weight_decay,
         bint decoupled, bint maximize, bint rectified, double gscale):
    """Multi-tensor RAdam step; ``states = (m, v)`` pairs (see
    ``families.radam.radam_tensor``)."""
    cdef RadamArgs A
    if not states_match(states, 2, 3):
        check_states(_FAMILY, states, {})
    _fill(&A, lr, beta1, beta2, eps, bc1, bc2_sqrt, rect, weight_decay, decoupled,
          maximize, rectified, gscale)
    shell_step(&_SHELL, params, grads, states, mode, &A)


def step_groups(params, grads, states, int mode, groups, sizes, *, double gscale):
    """``step`` over several parameter groups in one call: ``groups[k]`` is
    group ``k``'s keywords (all but ``gscale``, shared), ``sizes[k]`` its
    number of tensors (see ``_grouped.shell_groups``)."""
    shell_groups(&_SHELL, _FAMILY, params, grads, states, mode, groups, sizes, gscale)
