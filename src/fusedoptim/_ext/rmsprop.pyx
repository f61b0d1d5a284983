# cython: language_level=3
"""The ``rmsprop`` family's compiled step (RMSProp): the element loop of
``families.rmsprop.rmsprop_tensor``, its flag-specialized dispatch and its AVX2 and
AVX-512 fast path (``rmsprop_avx2.h``)."""

from cython cimport floating

from ._step cimport Tensor, simd_isa
from ._gather cimport states_match
from ._grouped cimport Shell, shell_groups, shell_step
from ._loops cimport _prelude, _sqrt, _at
from libc.math cimport INFINITY

from fusedoptim.families import FAMILIES
from fusedoptim.families._spec import check_states

_FAMILY = FAMILIES["rmsprop"]

cdef extern from "rmsprop_avx2.h" nogil:
    void fo_rmsprop_simd_f32(int isa, float* p, const float* g, float* sq, Py_ssize_t n,
                             float lr, float al, float oma, float e, int eps_inside)
    void fo_rmsprop_simd_f64(int isa, double* p, const double* g, double* sq, Py_ssize_t n,
                             double lr, double al, double oma, double e, int eps_inside)


ctypedef struct RmspropArgs:
    double lr, alpha, eps, momentum, wd, gscale
    bint eps_inside, maximize, centered, has_buf
    int simd             # instruction set of the fast paths (_step.simd_isa)


cdef inline void _rmsprop_loop(floating* p, const floating* g, floating* sq, floating* gavg,
                               floating* buf, Py_ssize_t n, floating lr, floating al,
                               floating oma, floating e, floating mu, floating gs, floating wd,
                               bint centered, bint eps_inside, bint has_buf, bint scale,
                               bint maximize, bint decay) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, s, d, r, b, pi, s0, ga0, b0
    cdef floating ga = 0  # set before use; the 0 quiets -Wmaybe-uninitialized
    for i in range(n):
        # Every load of the element before any store (see _loops, _LOADS_FIRST).
        pi = p[i]
        s0 = sq[i]
        if centered:
            ga0 = gavg[i]
        if has_buf:
            b0 = buf[i]
        gi = _prelude(g[i], pi, gs, scale, maximize, wd, decay)
        # eps_inside: the course's (and Keras's) rounding order; otherwise
        # PyTorch's (families.rmsprop.rmsprop_tensor).
        if eps_inside:
            s = al * s0 + oma * (gi * gi)
        else:
            s = al * s0 + (oma * gi) * gi
        d = s
        if centered:
            ga = al * ga0 + oma * gi
            if not eps_inside and s == INFINITY and -INFINITY < ga < INFINITY:
                d = s  # torch's fused multiply-add: inf - (finite)^2 is inf
            else:
                d = s - ga * ga
        if eps_inside:
            r = _sqrt(d + e)
        else:
            r = _sqrt(d) + e
        sq[i] = s
        if centered:
            gavg[i] = ga
        if has_buf:
            b = mu * b0 + gi / r
            buf[i] = b
            p[i] = pi - lr * b
        else:
            p[i] = pi - (lr * gi) / r


cdef inline void _rmsprop_fast(floating* p, const floating* g, floating* sq, floating* gavg,
                               floating* buf, Py_ssize_t n, floating lr, floating al,
                               floating oma, floating e, floating mu, floating gs, floating wd,
                               bint centered, bint eps_inside, bint has_buf) noexcept nogil:
    """No prelude: one literal-flag loop per structure (centered, eps
    placement, momentum buffer)."""
    if centered:
        if eps_inside:
            if has_buf:
                _rmsprop_loop(p, g, sq, gavg, buf, n, lr, al, oma, e, mu, gs, wd,
                              True, True, True, False, False, False)
            else:
                _rmsprop_loop(p, g, sq, gavg, buf, n, lr, al, oma, e, mu, gs, wd,
                              True, True, False, False, False, False)
        elif has_buf:
            _rmsprop_loop(p, g, sq, gavg, buf, n, lr, al, oma, e, mu, gs, wd,
                          True, False, True, False, False, False)
        else:
            _rmsprop_loop(p, g, sq, gavg, buf, n, lr, al, oma, e, mu, gs, wd,
                          True, False, False, False, False, False)
    elif eps_inside:
        if has_buf:
            _rmsprop_loop(p, g, sq, gavg, buf, n, lr, al, oma, e, mu, gs, wd,
                          False, True, True, False, False, False)
        else:
            _rmsprop_loop(p, g, sq, gavg, buf, n, lr, al, oma, e, mu, gs, wd,
                          False, True, False, False, False, False)
    elif has_buf:
        _rmsprop_loop(p, g, sq, gavg, buf, n, lr, al, oma, e, mu, gs, wd,
                      False, False, True, False, False, False)
    else:
        _rmsprop_loop(p, g, sq, gavg, buf, n, lr, al, oma, e, mu, gs, wd,
                      False, False, False, False, False, False)


cdef inline void _rmsprop_typed(floating* p, const floating* g, floating* sq, floating* gavg,
                                floating* buf, Py_ssize_t n,
                                const RmspropArgs* A) noexcept nogil:
    cdef floating lr = <floating>A.lr, al = <floating>A.alpha
    cdef floating oma = <floating>(1.0 - A.alpha), e = <floating>A.eps
    cdef floating mu = <floating>A.momentum, gs = <floating>A.gscale, wd = <floating>A.wd
    cdef bint scale = A.gscale != 1.0, decay = A.wd != 0.0, mx = A.maximize
    if scale or mx or decay:
        _rmsprop_loop(p, g, sq, gavg, buf, n, lr, al, oma, e, mu, gs, wd, A.centered,
                      A.eps_inside, A.has_buf, scale, mx, decay)
    elif A.simd and not (A.centered or A.has_buf):
        if floating is float:
            fo_rmsprop_simd_f32(A.simd, p, g, sq, n, lr, al, oma, e, A.eps_inside)
        else:
            fo_rmsprop_simd_f64(A.simd, p, g, sq, n, lr, al, oma, e, A.eps_inside)
    else:
        _rmsprop_fast(p, g, sq, gavg, buf, n, lr, al, oma, e, mu, gs, wd, A.centered,
                      A.eps_inside, A.has_buf)


cdef void _rmsprop_chunk(const Tensor* t, Py_ssize_t a, Py_ssize_t b,
                         const void* args) noexcept nogil:
    cdef const RmspropArgs* A = <const RmspropArgs*>args
    if t.dbl:
        _rmsprop_typed(<double*>_at(t.p, a, 8), <const double*>_at(t.g, a, 8),
                       <double*>_at(t.s[0], a, 8), <double*>_at(t.s[1], a, 8),
                       <double*>_at(t.s[2], a, 8), b - a, A)
    else:
        _rmsprop_typed(<float*>_at(t.p, a, 4), <const float*>_at(t.g, a, 4),
                       <float*>_at(t.s[0], a, 4), <float*>_at(t.s[1], a, 4),
                       <float*>_at(t.s[2], a, 4), b - a, A)


cdef void _fill(RmspropArgs* A, double lr, double alpha, double eps, double momentum, double
                weight_decay, bint eps_inside, bint maximize, bint centered, bint has_buf,
                double gscale) noexcept:
    """One group's step arguments (the step's keywords) into ``A``."""
    A.lr = lr
    A.alpha = alpha
    A.eps = eps
    A.momentum = momentum
    A.wd = weight_decay
    A.gscale = gscale
    A.eps_inside = eps_inside
    A.maximize = maximize
    A.centered = centered
    A.has_buf = has_buf
    A.simd = simd_isa()


cdef int _fill_group(void* A, object kw, double gscale) except -1:
    """One group's keywords ``kw`` into ``A``; returns the slots its flags switch on."""
    cdef RmspropArgs* a = <RmspropArgs*>A
    _fill(a, kw["lr"], kw["alpha"], kw["eps"], kw["momentum"],
          kw["weight_decay"], kw["eps_inside"], kw["maximize"], kw["centered"],
          kw["has_buf"], gscale)
    return (a.centered << 1) | (a.has_buf << 2)


cdef Shell _SHELL = Shell(chunk=_rmsprop_chunk, run=NULL, fill=_fill_group,
                          size=sizeof(RmspropArgs), nslots=3, need=1,
                          flagged=True)


def step(params, grads, states, int mode, *, double lr, double alpha, double eps,
         double momentum, double weight_decay, bint eps_inside, bint maximize,
         bint centered, bint has_buf, double gscale):
    """Multi-tensor RMSProp step; ``states = (sq, gavg, buf)`` pairs, ``gavg``
    present exactly when ``centered``, ``buf`` when ``has_buf`` (see
    ``families.rmsprop.rmsprop_tensor``)."""
    cdef RmspropArgs A
    if not states_match(states, 3, 1 | (centered << 1) | (has_buf << 2)):
        check_states(_FAMILY, states, {"centered": centered, "has_buf": has_buf})
    _fill(&A, lr, alpha, eps, momentum, weight_decay, eps_inside, maximize, centered,
          has_buf, gscale)
    shell_step(&_SHELL, params, grads, states, mode, &A)


def step_groups(params, grads, states, int mode, groups, sizes, *, double gscale):
    """``step`` over several parameter groups in one call: ``groups[k]`` is
    group ``k``'s keywords (all but ``gscale``, shared), ``sizes[k]`` its
    number of tensors (see ``_grouped.shell_groups``)."""
    shell_groups(&_SHELL, _FAMILY, params, grads, states, mode, groups, sizes, gscale)
