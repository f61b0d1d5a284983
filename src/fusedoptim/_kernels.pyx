# cython: language_level=3
"""Compiled kernels: the ``cython`` backend.

First version: per-tensor fused loops over the arrays ``_validate.gather``
returns.  Operation order is exactly that of ``_reference``; see there for
the formulas.
"""

from cython cimport floating
from libc.math cimport sqrt, sqrtf

import numpy as np

from ._validate import gather

cdef int _num_threads = 1


def set_num_threads(int n):
    global _num_threads
    _num_threads = n


cdef inline floating _sqrt(floating x) noexcept nogil:
    # sqrtf for float32: the double sqrt would round twice and run at half speed.
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline floating _grad(floating g, floating p, floating gscale, bint scale,
                           bint maximize, floating wd, bint decay) noexcept nogil:
    if scale:
        g = g * gscale
    if maximize:
        g = -g
    if decay:
        g = g + wd * p
    return g


cdef void _sgd_loop(floating[::1] p, const floating[::1] g, floating[::1] buf, bint has_buf,
                    double lr, double momentum, double dampening, bint nesterov, bint first,
                    double weight_decay, bint maximize, double gscale) noexcept nogil:
    cdef Py_ssize_t i, n = p.shape[0]
    cdef floating lr_ = <floating>lr, mu = <floating>momentum
    cdef floating omd = <floating>(1.0 - dampening)
    cdef floating wd = <floating>weight_decay, gs = <floating>gscale
    cdef bint scale = gscale != 1.0, decay = weight_decay != 0.0
    cdef floating gi, b
    for i in range(n):
        gi = _grad(g[i], p[i], gs, scale, maximize, wd, decay)
        if has_buf:
            if first:
                b = gi
            else:
                b = mu * buf[i] + omd * gi
            buf[i] = b
            if nesterov:
                gi = gi + mu * b
            else:
                gi = b
        p[i] = p[i] - lr_ * gi


cdef void _rmsprop_loop(floating[::1] p, const floating[::1] g, floating[::1] sq,
                        floating[::1] gavg, bint centered, floating[::1] buf, bint has_buf,
                        double lr, double alpha, double eps, bint eps_inside, double momentum,
                        double weight_decay, bint maximize, double gscale) noexcept nogil:
    cdef Py_ssize_t i, n = p.shape[0]
    cdef floating lr_ = <floating>lr, a = <floating>alpha, oma = <floating>(1.0 - alpha)
    cdef floating e = <floating>eps, mu = <floating>momentum
    cdef floating wd = <floating>weight_decay, gs = <floating>gscale
    cdef bint scale = gscale != 1.0, decay = weight_decay != 0.0
    cdef floating gi, s, d, r, ga, b
    for i in range(n):
        gi = _grad(g[i], p[i], gs, scale, maximize, wd, decay)
        s = a * sq[i] + oma * (gi * gi)
        sq[i] = s
        d = s
        if centered:
            ga = a * gavg[i] + oma * gi
            gavg[i] = ga
            d = s - ga * ga
        if eps_inside:
            r = _sqrt(d + e)
        else:
            r = _sqrt(d) + e
        if has_buf:
            b = mu * buf[i] + gi / r
            buf[i] = b
            p[i] = p[i] - lr_ * b
        else:
            p[i] = p[i] - (lr_ * gi) / r


cdef void _adam_loop(floating[::1] p, const floating[::1] g, floating[::1] m, floating[::1] v,
                     floating[::1] vmax, bint amsgrad, double lr, double beta1, double beta2,
                     double eps, double bc1, double bc2, double weight_decay, bint decoupled,
                     bint maximize, double gscale) noexcept nogil:
    cdef Py_ssize_t i, n = p.shape[0]
    cdef floating lr_ = <floating>lr, b1 = <floating>beta1, omb1 = <floating>(1.0 - beta1)
    cdef floating b2 = <floating>beta2, omb2 = <floating>(1.0 - beta2)
    cdef floating e = <floating>eps, c1 = <floating>bc1, c2 = <floating>bc2
    cdef floating gs = <floating>gscale, wd = <floating>weight_decay
    cdef floating shrink = <floating>(1.0 - lr * weight_decay)
    cdef bint scale = gscale != 1.0, l2 = weight_decay != 0.0 and not decoupled
    cdef bint dw = weight_decay != 0.0 and decoupled
    cdef floating gi, pi, mi, vi, vv
    for i in range(n):
        pi = p[i]
        gi = _grad(g[i], pi, gs, scale, maximize, wd, l2)
        if dw:
            pi = pi * shrink
        mi = b1 * m[i] + omb1 * gi
        m[i] = mi
        vi = b2 * v[i] + omb2 * (gi * gi)
        v[i] = vi
        if amsgrad:
            vv = vmax[i]
            # np.maximum: NaN in either operand propagates.
            if not (vv >= vi or vv != vv):
                vv = vi
            vmax[i] = vv
            vi = vv
        p[i] = pi - (lr_ * (mi / c1)) / (_sqrt(vi / c2) + e)


def _flat(a):
    return None if a is None else np.ravel(a, order="K")


def sgd(params, grads, states, int mode, double lr, double momentum, double dampening,
        bint nesterov, bint first, double weight_decay, bint maximize, double gscale):
    for p, g, buf in gather(params, grads, states, mode):
        p, g, buf = _flat(p), _flat(g), _flat(buf)
        if p.dtype == np.float32:
            _sgd_loop[float](p, g, buf if buf is not None else p, buf is not None, lr,
                             momentum, dampening, nesterov, first, weight_decay, maximize,
                             gscale)
        else:
            _sgd_loop[double](p, g, buf if buf is not None else p, buf is not None, lr,
                              momentum, dampening, nesterov, first, weight_decay, maximize,
                              gscale)


def rmsprop(params, grads, states, int mode, double lr, double alpha, double eps,
            bint eps_inside, double momentum, double weight_decay, bint maximize,
            double gscale):
    for p, g, sq, gavg, buf in gather(params, grads, states, mode):
        p, g, sq, gavg, buf = _flat(p), _flat(g), _flat(sq), _flat(gavg), _flat(buf)
        args = (p, g, sq, gavg if gavg is not None else p, gavg is not None,
                buf if buf is not None else p, buf is not None)
        if p.dtype == np.float32:
            _rmsprop_loop[float](*args, lr, alpha, eps, eps_inside, momentum, weight_decay,
                                 maximize, gscale)
        else:
            _rmsprop_loop[double](*args, lr, alpha, eps, eps_inside, momentum, weight_decay,
                                  maximize, gscale)


def adam(params, grads, states, int mode, double lr, double beta1, double beta2, double eps,
         double bc1, double bc2, double weight_decay, bint decoupled, bint maximize,
         double gscale):
    for p, g, m, v, vmax in gather(params, grads, states, mode):
        p, g, m, v, vmax = _flat(p), _flat(g), _flat(m), _flat(v), _flat(vmax)
        args = (p, g, m, v, vmax if vmax is not None else p, vmax is not None)
        if p.dtype == np.float32:
            _adam_loop[float](*args, lr, beta1, beta2, eps, bc1, bc2, weight_decay,
                              decoupled, maximize, gscale)
        else:
            _adam_loop[double](*args, lr, beta1, beta2, eps, bc1, bc2, weight_decay,
                               decoupled, maximize, gscale)


def grad_sumsq(params, grads, int mode):
    from ._reference import sumsq_blocks
    total = 0.0
    for _p, g in gather(params, grads, (), mode):
        for b in sumsq_blocks(g).tolist():
            total += b
    return total


# --- the benchmark's physical yardstick --------------------------------------

cdef void _copy_like_loop(floating* x0, floating* x1, floating* x2, int nrw,
                          const floating* g, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        x0[i] = x0[i] + g[i]
        if nrw > 1:
            x1[i] = x1[i] + g[i]
        if nrw > 2:
            x2[i] = x2[i] + g[i]


def copy_like(rw, ro):
    """Move the bytes of an optimizer step and nothing more: each array in
    ``rw`` (1 to 3, read and written) gets ``+= ro[0]`` (read only).

    With ``rw = [p, v, s]`` and ``ro = [g]`` it reads 4 and writes 3 arrays,
    the traffic of an Adam step; the benchmark reports each optimizer's time
    against this floor.  Arrays: same dtype (float32/float64), contiguous,
    same size.
    """
    if not 1 <= len(rw) <= 3 or len(ro) != 1:
        raise ValueError("copy_like takes 1 to 3 read-write arrays and 1 read-only array")
    flat = [np.ravel(a, order="K") for a in list(rw) + list(ro)]
    while len(flat) < 4:
        flat.insert(len(rw), flat[0])
    if flat[0].dtype == np.float32:
        _copy_like_f(flat[0], flat[1], flat[2], len(rw), flat[3])
    else:
        _copy_like_d(flat[0], flat[1], flat[2], len(rw), flat[3])


cdef _copy_like_f(float[::1] a, float[::1] b, float[::1] c, int nrw, const float[::1] g):
    with nogil:
        _copy_like_loop(&a[0], &b[0], &c[0], nrw, &g[0], a.shape[0])


cdef _copy_like_d(double[::1] a, double[::1] b, double[::1] c, int nrw, const double[::1] g):
    with nogil:
        _copy_like_loop(&a[0], &b[0], &c[0], nrw, &g[0], a.shape[0])
