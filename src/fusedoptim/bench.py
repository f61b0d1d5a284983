"""Benchmark workloads, defined once.

The ``bench`` command and the pytest-benchmark suite in ``benchmarks/`` both
build their cases here, so they always measure the same thing.  A *case* is
an optimizer, a model size and a dtype; an *implementation* is a fusedoptim
backend (``cython``, ``numba``, ``numpy`` — the plain-NumPy baseline), PyTorch's
optimizer (``torch``, where installed), or ``copy`` — a kernel that moves the
bytes of the step and does nothing else, the machine's practical limit.
"""

import functools
import time
from dataclasses import dataclass

import numpy as np

from . import functional as F
from .backend import use_backend

#: Arrays an optimizer step reads and writes per parameter element
#: (parameter, gradient and states; each state is read and written).
TRAFFIC = {
    "gd": (2, 1),
    "momentum": (3, 2),
    "rmsprop": (3, 2),
    "adam": (4, 3),
}

OPTIMIZERS = tuple(TRAFFIC)

#: Parameter shapes of each model size.
SIZES = {
    # The course's 2-5-2-1 network.
    "course": [(5, 2), (5, 1), (2, 5), (2, 1), (1, 2), (1, 1)],
    # 50 layers of 256x256 weights and 256 biases: 100 tensors, 3.3M elements.
    "mlp": [(256, 256), (256,)] * 50,
    # One tensor of 2**24 elements.
    "big": [(1 << 24,)],
}

DTYPES = {"float32": np.float32, "float64": np.float64}

IMPLS = ("cython", "numba", "numpy", "torch", "copy")

# Hyperparameters of every case: the course defaults.  A small learning rate
# keeps repeated steps finite.
LR = 1e-4
BETA = 0.9
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


@dataclass(frozen=True)
class Case:
    optimizer: str
    size: str
    dtype: str

    @property
    def shapes(self):
        return SIZES[self.size]

    @property
    def elements(self):
        return sum(int(np.prod(s)) for s in self.shapes)

    @property
    def bytes_moved(self):
        """Bytes one step must move at the least: each array read once,
        each written array written once."""
        reads, writes = TRAFFIC[self.optimizer]
        return self.elements * np.dtype(DTYPES[self.dtype]).itemsize * (reads + writes)

    @property
    def name(self):
        return f"{self.optimizer}-{self.size}-{self.dtype}"


def cases(optimizers=OPTIMIZERS, sizes=tuple(SIZES), dtypes=("float32",)):
    return [Case(o, s, d) for s in sizes for o in optimizers for d in dtypes]


@functools.lru_cache(maxsize=1)
def _pristine_model(shapes, dtype, seed):
    # Drawing 2 * 2**24 normals takes longer than timing a step: keep the
    # last model (read-only) so that the implementations of a size share it.
    rng = np.random.default_rng(seed)
    out = []
    for shape in shapes:
        p = rng.standard_normal(shape, dtype=DTYPES[dtype])
        g = rng.standard_normal(shape, dtype=DTYPES[dtype])
        p.flags.writeable = g.flags.writeable = False
        out.append((p, g))
    return tuple(out)


def make_model(case, seed=0):
    """``(parameters, grads)`` for ``case``: course-style keys ``W1``, ``b1``, ...
    and ``dW1``, ``db1``, ..., random normal values (fresh, writable arrays;
    the same values on every call)."""
    params, grads = {}, {}
    for i, (p, g) in enumerate(_pristine_model(tuple(case.shapes), case.dtype, seed)):
        name = f"{'Wb'[i % 2]}{i // 2 + 1}"
        params[name] = p.copy()
        grads["d" + name] = g.copy()
    return params, grads


def _functional_step(case, params, grads):
    opt = case.optimizer
    if opt == "gd":
        return lambda: F.update_parameters_with_gd(params, grads, LR)
    if opt == "momentum":
        v = F.initialize_velocity(params)
        return lambda: F.update_parameters_with_momentum(params, grads, v, BETA, LR)
    if opt == "rmsprop":
        s = F.initialize_rmsprop(params)
        return lambda: F.update_parameters_with_rmsprop(params, grads, s, BETA, LR, EPS)
    v, s = F.initialize_adam(params)
    t = [0]

    def adam():
        t[0] += 1
        F.update_parameters_with_adam(params, grads, v, s, t[0], LR, BETA1, BETA2, EPS)
    return adam


def _torch_step(case, params, grads, threads):
    import torch

    torch.set_num_threads(threads)
    ps = []
    for name, a in params.items():
        p = torch.from_numpy(a)
        p.grad = torch.from_numpy(grads["d" + name])
        ps.append(p)
    opt = case.optimizer
    if opt == "gd":
        o = torch.optim.SGD(ps, lr=LR, fused=True)
    elif opt == "momentum":
        o = torch.optim.SGD(ps, lr=LR, momentum=BETA, dampening=BETA, fused=True)
    elif opt == "rmsprop":
        # RMSprop has no fused CPU kernel; foreach is PyTorch's fastest.
        o = torch.optim.RMSprop(ps, lr=LR, alpha=BETA, eps=EPS, foreach=True)
    else:
        o = torch.optim.Adam(ps, lr=LR, betas=(BETA1, BETA2), eps=EPS, fused=True)
    return o.step


def _copy_step(case):
    from ._alloc import zeros_like_state
    from ._ext._yardstick import copy_like

    reads, writes = TRAFFIC[case.optimizer]
    dtype = DTYPES[case.dtype]
    n = case.elements
    # The first read-write array stands for the parameter, the others for
    # states, placed in memory as the library places its states (_alloc), so
    # that the yardstick moves its bytes under the same conditions.
    rw = [np.zeros(n, dtype=dtype)]
    rw += [zeros_like_state(rw[0], k) for k in range(writes - 1)]
    # The read-only operand: the case's gradients (already drawn for the
    # other implementations), scaled so that repeated adds stay small.
    g = np.concatenate([g.ravel() for _, g in _pristine_model(tuple(case.shapes), case.dtype, 0)])
    ro = [g * dtype(1e-6) for _ in range(reads - writes)]
    return lambda: copy_like(rw, ro)


def make_step(case, impl, threads=None, seed=0):
    """A zero-argument callable that runs one step of ``case`` on ``impl``.

    Backends are run through the course-compatible functional API (what a
    user calls); call it inside ``use_backend(impl)`` (``measure`` does).
    Raises ``ImportError`` when ``impl`` is not available here.
    """
    from .backend import get_num_threads, _load

    if impl == "copy":
        return _copy_step(case)
    params, grads = make_model(case, seed)
    if impl == "torch":
        return _torch_step(case, params, grads, threads or get_num_threads())
    _load(impl)
    return _functional_step(case, params, grads)


def _batch_size(fn, target=2e-3):
    """Calls per timed batch so that one batch takes about ``target`` s
    (timer overhead is then negligible for microsecond steps)."""
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt >= target or n >= 1 << 20:
            return n
        n *= 2 if dt <= 0 else max(2, min(10, int(target / dt) + 1))


def measure(fn, impl=None, warmup=3, repeat=15, number=None):
    """Seconds per call of ``fn``: one float per timed batch, after warm-up.

    ``impl``, if it names a fusedoptim backend, is made active while timing.
    ``number`` calls per batch, or ``None`` to size batches to about 2 ms.
    Take the median of the result.
    """
    from contextlib import nullcontext

    ctx = use_backend(impl) if impl in ("cython", "numba", "numpy") else nullcontext()
    with ctx:
        for _ in range(warmup):
            fn()
        if number is None:
            number = _batch_size(fn)
        out = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            out.append((time.perf_counter() - t0) / number)
    return out
