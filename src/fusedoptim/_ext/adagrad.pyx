# cython: language_level=3
"""The ``adagrad`` family's compiled step (Adagrad): the element loop of
``families.adagrad.adagrad_tensor``, its flag-specialized dispatch and its
AVX2 and AVX-512 fast path (``adagrad_avx2.h``)."""

from cython cimport floating

from ._step cimport Tensor, simd_isa
from ._gather cimport states_match
from ._grouped cimport Shell, shell_groups, shell_step
from ._loops cimport _prelude, _sqrt, _at

from fusedoptim.families import FAMILIES
from fusedoptim.families._spec import check_states

_FAMILY = FAMILIES["adagrad"]

cdef extern from "adagrad_avx2.h" nogil:
    void fo_adagrad_simd_f32(int isa, float* p, const float* g, float* s, Py_ssize_t n,
                             float lr, float e)
    void fo_adagrad_simd_f64(int isa, double* p, const double* g, double* s, Py_ssize_t n,
                             double lr, double e)


ctypedef struct AdagradArgs:
    double lr, eps, wd, gscale
    bint maximize
    int simd             # instruction set of the fast paths (_step.simd_isa)


cdef inline void _adagrad_loop(floating* p, const floating* g, floating* sm, Py_ssize_t n,
                               floating lr, floating e, floating gs, floating wd,
                               bint scale, bint maximize, bint decay) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, pi, s0, s
    for i in range(n):
        # Every load of the element before any store (see _loops, _LOADS_FIRST).
        pi = p[i]
        s0 = sm[i]
        gi = _prelude(g[i], pi, gs, scale, maximize, wd, decay)
        s = s0 + gi * gi
        sm[i] = s
        p[i] = pi - lr * (gi / (_sqrt(s) + e))


cdef inline void _adagrad_typed(floating* p, const floating* g, floating* sm, Py_ssize_t n,
                                const AdagradArgs* A) noexcept nogil:
    cdef floating lr = <floating>A.lr, e = <floating>A.eps
    cdef floating gs = <floating>A.gscale, wd = <floating>A.wd
    cdef bint scale = A.gscale != 1.0, decay = A.wd != 0.0, mx = A.maximize
    if scale or mx or decay:
        _adagrad_loop(p, g, sm, n, lr, e, gs, wd, scale, mx, decay)
    elif A.simd:
        if floating is float:
            fo_adagrad_simd_f32(A.simd, p, g, sm, n, lr, e)
        else:
            fo_adagrad_simd_f64(A.simd, p, g, sm, n, lr, e)
    else:
        _adagrad_loop(p, g, sm, n, lr, e, gs, wd, False, False, False)


cdef void _adagrad_chunk(const Tensor* t, Py_ssize_t a, Py_ssize_t b,
                         const void* args) noexcept nogil:
    cdef const AdagradArgs* A = <const AdagradArgs*>args
    if t.dbl:
        _adagrad_typed(<double*>_at(t.p, a, 8), <const double*>_at(t.g, a, 8),
                       <double*>_at(t.s[0], a, 8), b - a, A)
    else:
        _adagrad_typed(<float*>_at(t.p, a, 4), <const float*>_at(t.g, a, 4),
                       <float*>_at(t.s[0], a, 4), b - a, A)


cdef void _fill(AdagradArgs* A, double lr, double eps, double weight_decay, bint maximize,
                double gscale) noexcept:
    """One group's step arguments (the step's keywords) into ``A``."""
    A.lr = lr
    A.eps = eps
    A.wd = weight_decay
    A.gscale = gscale
    A.maximize = maximize
    A.simd = simd_isa()


cdef int _fill_group(void* A, object kw, double gscale) except -1:
    """One group's keywords ``kw`` into ``A``; returns 0: its one slot is
    always on (checked once the groups are read, as the flagged families')."""
    cdef AdagradArgs* a = <AdagradArgs*>A
    _fill(a, kw["lr"], kw["eps"], kw["weight_decay"], kw["maximize"], gscale)
    return 0


cdef Shell _SHELL = Shell(chunk=_adagrad_chunk, run=NULL, fill=_fill_group,
                          size=sizeof(AdagradArgs), nslots=1, need=1,
                          flagged=True)


def step(params, grads, states, int mode, *, double lr, double eps, double weight_decay,
         bint maximize, double gscale):
    """Multi-tensor Adagrad step; ``states = ((label, sum),)`` (see
    ``families.adagrad.adagrad_tensor``)."""
    cdef AdagradArgs A
    if not states_match(states, 1, 1):
        check_states(_FAMILY, states, {})
    _fill(&A, lr, eps, weight_decay, maximize, gscale)
    shell_step(&_SHELL, params, grads, states, mode, &A)


def step_groups(params, grads, states, int mode, groups, sizes, *, double gscale):
    """``step`` over several parameter groups in one call: ``groups[k]`` is
    group ``k``'s keywords (all but ``gscale``, shared), ``sizes[k]`` its
    number of tensors (see ``_grouped.shell_groups``)."""
    shell_groups(&_SHELL, _FAMILY, params, grads, states, mode, groups, sizes, gscale)
