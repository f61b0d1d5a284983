# cython: language_level=3
"""The ``sgd`` family's compiled step (GD, Momentum, SGD): the element loop of
``families.sgd.sgd_tensor``, its flag-specialized dispatch and its AVX2 and
AVX-512 fast path (``sgd_avx2.h``)."""

from cython cimport floating

from ._step cimport Tensor, simd_isa
from ._gather cimport states_match
from ._grouped cimport Shell, shell_groups, shell_step
from ._loops cimport _prelude, _at

from fusedoptim.families import FAMILIES
from fusedoptim.families._spec import check_states

_FAMILY = FAMILIES["sgd"]

cdef extern from "sgd_avx2.h" nogil:
    void fo_sgd_simd_f32(int isa, float* p, const float* g, float* buf, Py_ssize_t n,
                         float lr, float mu, float omd, int has_buf, int nesterov)
    void fo_sgd_simd_f64(int isa, double* p, const double* g, double* buf, Py_ssize_t n,
                         double lr, double mu, double omd, int has_buf, int nesterov)


ctypedef struct SgdArgs:
    double lr, momentum, dampening, wd, gscale
    bint nesterov, first, maximize, has_buf
    int simd             # instruction set of the fast paths (_step.simd_isa)


cdef inline void _sgd_loop(floating* p, const floating* g, floating* buf, Py_ssize_t n,
                           floating lr, floating mu, floating omd, floating gs, floating wd,
                           bint has_buf, bint first, bint nesterov, bint scale,
                           bint maximize, bint decay) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, b, pi, b0 = 0  # set before use; the 0 quiets -Wmaybe-uninitialized
    for i in range(n):
        # Every load of the element before any store (see _loops, _LOADS_FIRST).
        pi = p[i]
        if has_buf and not first:
            b0 = buf[i]
        gi = _prelude(g[i], pi, gs, scale, maximize, wd, decay)
        if has_buf:
            if first:
                b = gi
            else:
                b = mu * b0 + omd * gi
            buf[i] = b
            if nesterov:
                gi = gi + mu * b
            else:
                gi = b
        p[i] = pi - lr * gi


cdef inline void _sgd_typed(floating* p, const floating* g, floating* buf, Py_ssize_t n,
                            const SgdArgs* A) noexcept nogil:
    cdef floating lr = <floating>A.lr, mu = <floating>A.momentum
    cdef floating omd = <floating>(1.0 - A.dampening)
    cdef floating gs = <floating>A.gscale, wd = <floating>A.wd
    cdef bint scale = A.gscale != 1.0, decay = A.wd != 0.0, mx = A.maximize
    if scale or mx or decay:
        _sgd_loop(p, g, buf, n, lr, mu, omd, gs, wd, A.has_buf, A.first, A.nesterov,
                  scale, mx, decay)
    elif A.simd and not (A.has_buf and A.first):
        if floating is float:
            fo_sgd_simd_f32(A.simd, p, g, buf, n, lr, mu, omd, A.has_buf, A.nesterov)
        else:
            fo_sgd_simd_f64(A.simd, p, g, buf, n, lr, mu, omd, A.has_buf, A.nesterov)
    elif not A.has_buf:
        _sgd_loop(p, g, buf, n, lr, mu, omd, gs, wd, False, False, False, False, False, False)
    elif A.first:
        if A.nesterov:
            _sgd_loop(p, g, buf, n, lr, mu, omd, gs, wd, True, True, True, False, False, False)
        else:
            _sgd_loop(p, g, buf, n, lr, mu, omd, gs, wd, True, True, False, False, False, False)
    elif A.nesterov:
        _sgd_loop(p, g, buf, n, lr, mu, omd, gs, wd, True, False, True, False, False, False)
    else:
        _sgd_loop(p, g, buf, n, lr, mu, omd, gs, wd, True, False, False, False, False, False)


cdef void _sgd_chunk(const Tensor* t, Py_ssize_t a, Py_ssize_t b,
                     const void* args) noexcept nogil:
    cdef const SgdArgs* A = <const SgdArgs*>args
    if t.dbl:
        _sgd_typed(<double*>_at(t.p, a, 8), <const double*>_at(t.g, a, 8),
                   <double*>_at(t.s[0], a, 8), b - a, A)
    else:
        _sgd_typed(<float*>_at(t.p, a, 4), <const float*>_at(t.g, a, 4),
                   <float*>_at(t.s[0], a, 4), b - a, A)


cdef void _fill(SgdArgs* A, double lr, double momentum, double dampening, double
                weight_decay, bint nesterov, bint first, bint maximize, bint has_buf, double
                gscale) noexcept:
    """One group's step arguments (the step's keywords) into ``A``."""
    A.lr = lr
    A.momentum = momentum
    A.dampening = dampening
    A.wd = weight_decay
    A.gscale = gscale
    A.nesterov = nesterov
    A.first = first
    A.maximize = maximize
    A.has_buf = has_buf
    A.simd = simd_isa()


cdef int _fill_group(void* A, object kw, double gscale) except -1:
    """One group's keywords ``kw`` into ``A``; returns the slots its flags switch on."""
    cdef SgdArgs* a = <SgdArgs*>A
    _fill(a, kw["lr"], kw["momentum"], kw["dampening"], kw["weight_decay"],
          kw["nesterov"], kw["first"], kw["maximize"], kw["has_buf"], gscale)
    return a.has_buf


cdef Shell _SHELL = Shell(chunk=_sgd_chunk, run=NULL, fill=_fill_group,
                          size=sizeof(SgdArgs), nslots=1, need=0,
                          flagged=True)


def step(params, grads, states, int mode, *, double lr, double momentum, double dampening,
         double weight_decay, bint nesterov, bint first, bint maximize, bint has_buf,
         double gscale):
    """Multi-tensor SGD step; ``states = ((label, buf or None),)``, the buffer
    present exactly when ``has_buf`` (see ``families.sgd.sgd_tensor``)."""
    cdef SgdArgs A
    if not states_match(states, 1, has_buf):
        check_states(_FAMILY, states, {"has_buf": has_buf})
    _fill(&A, lr, momentum, dampening, weight_decay, nesterov, first, maximize, has_buf,
          gscale)
    shell_step(&_SHELL, params, grads, states, mode, &A)


def step_groups(params, grads, states, int mode, groups, sizes, *, double gscale):
    """``step`` over several parameter groups in one call: ``groups[k]`` is
    group ``k``'s keywords (all but ``gscale``, shared), ``sizes[k]`` its
    number of tensors (see ``_grouped.shell_groups``)."""
    shell_groups(&_SHELL, _FAMILY, params, grads, states, mode, groups, sizes, gscale)
