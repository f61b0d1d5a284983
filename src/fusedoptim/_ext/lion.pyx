# cython: language_level=3
"""The ``lion`` family's compiled step (Lion): the element loop of
``families.lion.lion_tensor``, its flag-specialized dispatch and its AVX2 and
AVX-512 fast path (``lion_avx2.h``)."""

from cython cimport floating

from ._step cimport Tensor, simd_isa
from ._gather cimport states_match
from ._grouped cimport Shell, shell_groups, shell_step
from ._loops cimport _prelude, _at

from fusedoptim.families import FAMILIES
from fusedoptim.families._spec import check_states

_FAMILY = FAMILIES["lion"]

cdef extern from "lion_avx2.h" nogil:
    void fo_lion_simd_f32(int isa, float* p, const float* g, float* m, Py_ssize_t n,
                          float lr, float b1, float omb1, float b2, float omb2, float wd,
                          int decay)
    void fo_lion_simd_f64(int isa, double* p, const double* g, double* m, Py_ssize_t n,
                          double lr, double b1, double omb1, double b2, double omb2,
                          double wd, int decay)


ctypedef struct LionArgs:
    double lr, beta1, beta2, wd, gscale
    bint maximize
    int simd             # instruction set of the fast paths (_step.simd_isa)


cdef inline floating _sign(floating c) noexcept nogil:
    """``np.sign``: +1, -1, +0.0 for either zero, a NaN itself."""
    if c > 0:
        return 1
    if c < 0:
        return -1
    return 0 if c == c else c


cdef inline void _lion_loop(floating* p, const floating* g, floating* m, Py_ssize_t n,
                            floating lr, floating b1, floating omb1, floating b2,
                            floating omb2, floating wd, floating gs, bint scale,
                            bint maximize, bint decay) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, pi, m0, s
    for i in range(n):
        # Every load of the element before any store (see _loops, _LOADS_FIRST).
        pi = p[i]
        m0 = m[i]
        gi = _prelude(g[i], pi, gs, scale, maximize, wd, False)
        s = _sign(b1 * m0 + omb1 * gi)
        if decay:
            s = s + wd * pi
        p[i] = pi - lr * s
        m[i] = b2 * m0 + omb2 * gi


cdef inline void _lion_typed(floating* p, const floating* g, floating* m, Py_ssize_t n,
                             const LionArgs* A) noexcept nogil:
    cdef floating lr = <floating>A.lr, b1 = <floating>A.beta1
    cdef floating omb1 = <floating>(1.0 - A.beta1), b2 = <floating>A.beta2
    cdef floating omb2 = <floating>(1.0 - A.beta2), wd = <floating>A.wd
    cdef floating gs = <floating>A.gscale
    cdef bint scale = A.gscale != 1.0, mx = A.maximize, decay = A.wd != 0.0
    if scale or mx:
        _lion_loop(p, g, m, n, lr, b1, omb1, b2, omb2, wd, gs, scale, mx, decay)
    elif A.simd:
        if floating is float:
            fo_lion_simd_f32(A.simd, p, g, m, n, lr, b1, omb1, b2, omb2, wd, decay)
        else:
            fo_lion_simd_f64(A.simd, p, g, m, n, lr, b1, omb1, b2, omb2, wd, decay)
    elif decay:
        _lion_loop(p, g, m, n, lr, b1, omb1, b2, omb2, wd, gs, False, False, True)
    else:
        _lion_loop(p, g, m, n, lr, b1, omb1, b2, omb2, wd, gs, False, False, False)


cdef void _lion_chunk(const Tensor* t, Py_ssize_t a, Py_ssize_t b,
                      const void* args) noexcept nogil:
    cdef const LionArgs* A = <const LionArgs*>args
    if t.dbl:
        _lion_typed(<double*>_at(t.p, a, 8), <const double*>_at(t.g, a, 8),
                    <double*>_at(t.s[0], a, 8), b - a, A)
    else:
        _lion_typed(<float*>_at(t.p, a, 4), <const float*>_at(t.g, a, 4),
                    <float*>_at(t.s[0], a, 4), b - a, A)


cdef void _fill(LionArgs* A, double lr, double beta1, double beta2, double weight_decay,
                bint maximize, double gscale) noexcept:
    """One group's step arguments (the step's keywords) into ``A``."""
    A.lr = lr
    A.beta1 = beta1
    A.beta2 = beta2
    A.wd = weight_decay
    A.gscale = gscale
    A.maximize = maximize
    A.simd = simd_isa()


cdef int _fill_group(void* A, object kw, double gscale) except -1:
    """One group's keywords ``kw`` into ``A``; returns 0 (no flag switches a slot on)."""
    cdef LionArgs* a = <LionArgs*>A
    _fill(a, kw["lr"], kw["beta1"], kw["beta2"], kw["weight_decay"],
          kw["maximize"], gscale)
    return 0


cdef Shell _SHELL = Shell(chunk=_lion_chunk, run=NULL, fill=_fill_group,
                          size=sizeof(LionArgs), nslots=1, need=1,
                          flagged=False)


def step(params, grads, states, int mode, *, double lr, double beta1, double beta2,
         double weight_decay, bint maximize, double gscale):
    """Multi-tensor Lion step; ``states = ((label, m),)`` (see
    ``families.lion.lion_tensor``)."""
    cdef LionArgs A
    if not states_match(states, 1, 1):
        check_states(_FAMILY, states, {})
    _fill(&A, lr, beta1, beta2, weight_decay, maximize, gscale)
    shell_step(&_SHELL, params, grads, states, mode, &A)


def step_groups(params, grads, states, int mode, groups, sizes, *, double gscale):
    """``step`` over several parameter groups in one call: ``groups[k]`` is
    group ``k``'s keywords (all but ``gscale``, shared), ``sizes[k]`` its
    number of tensors (see ``_grouped.shell_groups``)."""
    shell_groups(&_SHELL, _FAMILY, params, grads, states, mode, groups, sizes, gscale)
