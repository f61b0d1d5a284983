# cython: language_level=3
"""The ``adam`` family's compiled step (Adam, AdamW): the element loop of
``families.adam.adam_tensor``, its flag-specialized dispatch and its AVX2 and
AVX-512 fast path (``adam_avx2.h``)."""

from cython cimport floating

from ._step cimport Tensor, simd_isa
from ._gather cimport states_match
from ._grouped cimport Shell, shell_groups, shell_step
from ._loops cimport _prelude, _sqrt, _div_c1, _at
from libc.math cimport sqrt

from fusedoptim.families import FAMILIES
from fusedoptim.families._spec import check_states

_FAMILY = FAMILIES["adam"]

cdef extern from "adam_avx2.h" nogil:
    void fo_adam_simd_f32(int isa, float* p, const float* g, float* m, float* v,
                          Py_ssize_t n, float lr, float b1, float omb1, float b2,
                          float omb2, float e, float c1, float c2, double rc1, float shrink,
                          float wd, int decay, int torch)
    void fo_adam_simd_f64(int isa, double* p, const double* g, double* m, double* v,
                          Py_ssize_t n, double lr, double b1, double omb1, double b2,
                          double omb2, double e, double c1, double c2, double rc1,
                          double shrink, double wd, int decay, int torch)


ctypedef struct AdamArgs:
    double lr, beta1, beta2, eps, bc1, bc2, wd, gscale
    bint decoupled, maximize, amsgrad, torch
    int simd             # instruction set of the fast paths (_step.simd_isa)


cdef inline void _adam_loop(floating* p, const floating* g, floating* m, floating* v,
                            floating* vmax, Py_ssize_t n, floating lr, floating b1,
                            floating omb1, floating b2, floating omb2, floating e, floating c1,
                            floating c2, double rc1, floating gs, floating wd,
                            floating shrink, bint scale, bint maximize, bint l2,
                            bint shrink_p, bint amsgrad, bint torch) noexcept nogil:
    """``c2`` is ``bc2`` rounded, or ``sqrt(bc2)`` rounded when ``torch``
    (PyTorch's order, see ``adam_tensor``)."""
    cdef Py_ssize_t i
    cdef floating gi, pi, mi, vi, vv, m0, v0
    for i in range(n):
        # Every load of the element before any store (see _loops, _LOADS_FIRST).
        pi = p[i]
        m0 = m[i]
        v0 = v[i]
        if amsgrad:
            vv = vmax[i]
        gi = _prelude(g[i], pi, gs, scale, maximize, wd, l2)
        if shrink_p:
            pi = pi * shrink
        mi = b1 * m0 + omb1 * gi
        if torch:
            vi = b2 * v0 + (omb2 * gi) * gi
        else:
            vi = b2 * v0 + omb2 * (gi * gi)
        m[i] = mi
        v[i] = vi
        if amsgrad:
            # np.maximum: the first operand when it is >= or NaN, else the second.
            if not (vv >= vi or vv != vv):
                vv = vi
            vmax[i] = vv
            vi = vv
        if torch:
            p[i] = pi - (lr * _div_c1(mi, c1, rc1)) / (_sqrt(vi) / c2 + e)
        else:
            p[i] = pi - (lr * _div_c1(mi, c1, rc1)) / (_sqrt(vi / c2) + e)


cdef inline void _adam_typed(floating* p, const floating* g, floating* m, floating* v,
                             floating* vmax, Py_ssize_t n, const AdamArgs* A) noexcept nogil:
    cdef floating lr = <floating>A.lr, b1 = <floating>A.beta1
    cdef floating omb1 = <floating>(1.0 - A.beta1), b2 = <floating>A.beta2
    cdef floating omb2 = <floating>(1.0 - A.beta2), e = <floating>A.eps
    cdef floating c1 = <floating>A.bc1
    # PyTorch's order divides sqrt(v) by sqrt(bc2) (double, rounded once).
    cdef floating c2 = <floating>sqrt(A.bc2) if A.torch else <floating>A.bc2
    cdef double rc1 = 1.0 / <double>c1
    cdef floating gs = <floating>A.gscale, wd = <floating>A.wd
    cdef floating shrink = <floating>(1.0 - A.lr * A.wd)
    cdef bint scale = A.gscale != 1.0, mx = A.maximize
    cdef bint l2 = A.wd != 0.0 and not A.decoupled
    cdef bint shrink_p = A.wd != 0.0 and A.decoupled
    if scale or mx or A.amsgrad or (l2 and not A.simd):
        _adam_loop(p, g, m, v, vmax, n, lr, b1, omb1, b2, omb2, e, c1, c2, rc1, gs, wd, shrink,
                   scale, mx, l2, shrink_p, A.amsgrad, A.torch)
    elif A.simd:
        if floating is float:
            fo_adam_simd_f32(A.simd, p, g, m, v, n, lr, b1, omb1, b2, omb2, e, c1, c2, rc1,
                             shrink, wd, 1 if shrink_p else (2 if l2 else 0), A.torch)
        else:
            fo_adam_simd_f64(A.simd, p, g, m, v, n, lr, b1, omb1, b2, omb2, e, c1, c2, rc1,
                             shrink, wd, 1 if shrink_p else (2 if l2 else 0), A.torch)
    elif A.torch:
        # The classes: Adam, AdamW
        if shrink_p:
            _adam_loop(p, g, m, v, vmax, n, lr, b1, omb1, b2, omb2, e, c1, c2, rc1, gs, wd,
                       shrink, False, False, False, True, False, True)
        else:
            _adam_loop(p, g, m, v, vmax, n, lr, b1, omb1, b2, omb2, e, c1, c2, rc1, gs, wd,
                       shrink, False, False, False, False, False, True)
    elif shrink_p:
        _adam_loop(p, g, m, v, vmax, n, lr, b1, omb1, b2, omb2, e, c1, c2, rc1, gs, wd, shrink,
                   False, False, False, True, False, False)
    else:
        # The course's Adam
        _adam_loop(p, g, m, v, vmax, n, lr, b1, omb1, b2, omb2, e, c1, c2, rc1, gs, wd, shrink,
                   False, False, False, False, False, False)


cdef void _adam_chunk(const Tensor* t, Py_ssize_t a, Py_ssize_t b,
                      const void* args) noexcept nogil:
    cdef const AdamArgs* A = <const AdamArgs*>args
    if t.dbl:
        _adam_typed(<double*>_at(t.p, a, 8), <const double*>_at(t.g, a, 8),
                    <double*>_at(t.s[0], a, 8), <double*>_at(t.s[1], a, 8),
                    <double*>_at(t.s[2], a, 8), b - a, A)
    else:
        _adam_typed(<float*>_at(t.p, a, 4), <const float*>_at(t.g, a, 4),
                    <float*>_at(t.s[0], a, 4), <float*>_at(t.s[1], a, 4),
                    <float*>_at(t.s[2], a, 4), b - a, A)


cdef void _fill(AdamArgs* A, double lr, double beta1, double beta2, double eps, double bc1,
                double bc2, double weight_decay, bint decoupled, bint maximize, bint
                amsgrad, bint torch_order, double gscale) noexcept:
    """One group's step arguments (the step's keywords) into ``A``."""
    A.lr = lr
    A.beta1 = beta1
    A.beta2 = beta2
    A.eps = eps
    A.bc1 = bc1
    A.bc2 = bc2
    A.wd = weight_decay
    A.gscale = gscale
    A.decoupled = decoupled
    A.maximize = maximize
    A.amsgrad = amsgrad
    A.torch = torch_order
    A.simd = simd_isa()


cdef int _fill_group(void* A, object kw, double gscale) except -1:
    """One group's keywords ``kw`` into ``A``; returns the slots its flags switch on."""
    cdef AdamArgs* a = <AdamArgs*>A
    _fill(a, kw["lr"], kw["beta1"], kw["beta2"], kw["eps"], kw["bc1"],
          kw["bc2"], kw["weight_decay"], kw["decoupled"], kw["maximize"],
          kw["amsgrad"], kw["torch_order"], gscale)
    return (a.amsgrad << 2)


cdef Shell _SHELL = Shell(chunk=_adam_chunk, run=NULL, fill=_fill_group,
                          size=sizeof(AdamArgs), nslots=3, need=3,
                          flagged=True)


def step(params, grads, states, int mode, *, double lr, double beta1, double beta2,
         double eps, double bc1, double bc2, double weight_decay, bint decoupled,
         bint maximize, bint amsgrad, bint torch_order, double gscale):
    """Multi-tensor Adam step; ``states = (m, v, vmax)`` pairs, ``vmax``
    present exactly when ``amsgrad`` (see ``families.adam.adam_tensor``)."""
    cdef AdamArgs A
    if not states_match(states, 3, 3 | (amsgrad << 2)):
        check_states(_FAMILY, states, {"amsgrad": amsgrad})
    _fill(&A, lr, beta1, beta2, eps, bc1, bc2, weight_decay, decoupled, maximize,
          amsgrad, torch_order, gscale)
    shell_step(&_SHELL, params, grads, states, mode, &A)


def step_groups(params, grads, states, int mode, groups, sizes, *, double gscale):
    """``step`` over several parameter groups in one call: ``groups[k]`` is
    group ``k``'s keywords (all but ``gscale``, shared), ``sizes[k]`` its
    number of tensors (see ``_grouped.shell_groups``)."""
    shell_groups(&_SHELL, _FAMILY, params, grads, states, mode, groups, sizes, gscale)
