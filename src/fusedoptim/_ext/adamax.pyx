# cython: language_level=3
"""The ``adamax`` family's compiled step (Adamax): the element loop of
``families.adamax.adamax_tensor``, its flag-specialized dispatch and its AVX2 and
AVX-512 fast path (``adamax_avx2.h``)."""

from cython cimport floating
from libc.math cimport fabs, fabsf

from ._step cimport Tensor, simd_isa
from ._gather cimport states_match
from ._grouped cimport Shell, shell_groups, shell_step
from ._loops cimport _prelude, _at

from fusedoptim.families import FAMILIES
from fusedoptim.families._spec import check_states

_FAMILY = FAMILIES["adamax"]

cdef extern from "adamax_avx2.h" nogil:
    void fo_adamax_simd_f32(int isa, float* p, const float* g, float* m, float* u,
                            Py_ssize_t n, float clr, float b1, float omb1, float b2,
                            float e)
    void fo_adamax_simd_f64(int isa, double* p, const double* g, double* m, double* u,
                            Py_ssize_t n, double clr, double b1, double omb1, double b2,
                            double e)


ctypedef struct AdamaxArgs:
    double lr, beta1, beta2, eps, bc1, wd, gscale
    bint maximize
    int simd             # instruction set of the fast paths (_step.simd_isa)


cdef inline floating _abs(floating x) noexcept nogil:
    if floating is float:
        return fabsf(x)
    else:
        return fabs(x)


cdef inline void _adamax_loop(floating* p, const floating* g, floating* m, floating* u,
                              Py_ssize_t n, floating clr, floating b1, floating omb1,
                              floating b2, floating e, floating gs, floating wd, bint scale,
                              bint maximize, bint l2) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, pi, mi, b, x, m0, u0
    for i in range(n):
        # Every load of the element before any store (see _loops, _LOADS_FIRST).
        pi = p[i]
        m0 = m[i]
        u0 = u[i]
        gi = _prelude(g[i], pi, gs, scale, maximize, wd, l2)
        mi = b1 * m0 + omb1 * gi
        b = b2 * u0
        x = _abs(gi) + e
        # torch.maximum: b where b >= x or b is NaN, else x (NaN in x propagates).
        if not ((b >= x) | (b != b)):
            b = x
        m[i] = mi
        u[i] = b
        p[i] = pi - (clr * mi) / b


cdef inline void _adamax_typed(floating* p, const floating* g, floating* m, floating* u,
                               Py_ssize_t n, const AdamaxArgs* A) noexcept nogil:
    # clr = lr / bc1 in double, rounded once (torch's clr).
    cdef floating clr = <floating>(A.lr / A.bc1), b1 = <floating>A.beta1
    cdef floating omb1 = <floating>(1.0 - A.beta1), b2 = <floating>A.beta2
    cdef floating e = <floating>A.eps, gs = <floating>A.gscale, wd = <floating>A.wd
    cdef bint scale = A.gscale != 1.0, mx = A.maximize, l2 = A.wd != 0.0
    if scale or mx or l2:
        _adamax_loop(p, g, m, u, n, clr, b1, omb1, b2, e, gs, wd, scale, mx, l2)
    elif A.simd:
        if floating is float:
            fo_adamax_simd_f32(A.simd, p, g, m, u, n, clr, b1, omb1, b2, e)
        else:
            fo_adamax_simd_f64(A.simd, p, g, m, u, n, clr, b1, omb1, b2, e)
    else:
        _adamax_loop(p, g, m, u, n, clr, b1, omb1, b2, e, gs, wd, False, False, False)


cdef void _adamax_chunk(const Tensor* t, Py_ssize_t a, Py_ssize_t b,
                        const void* args) noexcept nogil:
    cdef const AdamaxArgs* A = <const AdamaxArgs*>args
    if t.dbl:
        _adamax_typed(<double*>_at(t.p, a, 8), <const double*>_at(t.g, a, 8),
                      <double*>_at(t.s[0], a, 8), <double*>_at(t.s[1], a, 8), b - a, A)
    else:
        _adamax_typed(<float*>_at(t.p, a, 4), <const float*>_at(t.g, a, 4),
                      <float*>_at(t.s[0], a, 4), <float*>_at(t.s[1], a, 4), b - a, A)


cdef void _fill(AdamaxArgs* A, double lr, double beta1, double beta2, double eps, double bc1,
                double weight_decay, bint maximize, double gscale) noexcept:
    """One group's step arguments (the step's keywords) into ``A``."""
    A.lr = lr
    A.beta1 = beta1
    A.beta2 = beta2
    A.eps = eps
    A.bc1 = bc1
    A.wd = weight_decay
    A.gscale = gscale
    A.maximize = maximize
    A.simd = simd_isa()


cdef int _fill_group(void* A, object kw, double gscale) except -1:
    """One group's keywords ``kw`` into ``A``; returns 0 (no flag switches a slot on)."""
    cdef AdamaxArgs* a = <AdamaxArgs*>A
    _fill(a, kw["lr"], kw["beta1"], kw["beta2"], kw["eps"], kw["bc1"],
          kw["weight_decay"], kw["maximize"], gscale)
    return 0


cdef Shell _SHELL = Shell(chunk=_adamax_chunk, run=NULL, fill=_fill_group,
                          size=sizeof(AdamaxArgs), nslots=2, need=3,
                          flagged=False)


def step(params, grads, states, int mode, *, double lr, double beta1, double beta2,
         double eps, double bc1, double weight_decay, bint maximize, double gscale):
    """Multi-tensor Adamax step; ``states = (m, u)`` pairs (see
    ``families.adamax.adamax_tensor``)."""
    cdef AdamaxArgs A
    if not states_match(states, 2, 3):
        check_states(_FAMILY, states, {})
    _fill(&A, lr, beta1, beta2, eps, bc1, weight_decay, maximize, gscale)
    shell_step(&_SHELL, params, grads, states, mode, &A)


def step_groups(params, grads, states, int mode, groups, sizes, *, double gscale):
    """``step`` over several parameter groups in one call: ``groups[k]`` is
    group ``k``'s keywords (all but ``gscale``, shared), ``sizes[k]`` its
    number of tensors (see ``_grouped.shell_groups``)."""
    shell_groups(&_SHELL, _FAMILY, params, grads, states, mode, groups, sizes, gscale)
