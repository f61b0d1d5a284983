"""Benchmark workloads, defined once and derived from the registry.

The ``bench`` command and the pytest-benchmark suite in ``benchmarks/`` both
build their cases here, so they always measure the same thing.  A *case* is
a row (one registered optimizer class, :data:`fusedoptim.OPTIMIZERS`, named
by its lowercased class name), a model size and a dtype; an
*implementation* is a fusedoptim backend (``cython``, ``numba``, ``numpy``
-- the plain-NumPy baseline) stepping the class through ``opt.step(grads)``,
PyTorch's counterpart optimizer (``torch``, where installed and where the
class has one, :mod:`.counterparts`), the other peers of the Adam rows
(``deepspeed``, ``bitsandbytes``, ``torchao``, asked for by name,
:mod:`.peers`), or ``copy`` -- a compiled kernel that
moves the bytes of the step and does nothing else, the machine's practical
limit.

The course functions (``update_parameters_with_adam`` and friends) run the
same family steps as the GD, Momentum, RMSProp and Adam rows, behind a thin
wrapper; they are not rows of their own.
"""

import functools
import inspect
import itertools
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ...backend import use_backend
from ...families import OPTIMIZERS as _REGISTERED
from . import peers
from .counterparts import COUNTERPARTS, torch_params
from .shapes import gpt2_shapes, resnet50_shapes, tiny_shapes

__all__ = ["ROWS", "OPTIMIZERS", "SIZES", "MODEL_SIZES", "PER_TENSOR_SIZES", "DTYPES", "IMPLS",
           "BACKENDS", "BASELINE", "LIMIT", "LR", "STATEFUL", "STATES", "STATE_ROWS", "YARDSTICK_MAX_READ_WRITE",
           "NotMeasurable", "Case", "cases", "hyperparameters", "size_elements", "make_model",
           "make_step", "measure", "warm_up", "time_batch", "settle", "interleave", "round_ratios",
           "yardstick"]

#: Row name (lowercased class name) -> optimizer class, in registry order.
ROWS = {cls.__name__.lower(): cls for cls in _REGISTERED.values()}

#: The row names, in table order.
OPTIMIZERS = tuple(ROWS)

#: Parameter shapes of each model size.
SIZES = {
    # The course's 2-5-2-1 network.
    "course": [(5, 2), (5, 1), (2, 5), (2, 1), (1, 2), (1, 1)],
    # 50 layers of 256x256 weights and 256 biases: 100 tensors, 3.3M elements.
    "mlp": [(256, 256), (256,)] * 50,
    # One tensor of 2**24 elements.
    "big": [(1 << 24,)],
    # Real models' shapes (.shapes): GPT-2 small, 148 tensors, 124.4M
    # elements; torchvision's ResNet-50, 161 tensors, 25.6M elements.
    "gpt2": gpt2_shapes(),
    "resnet50": resnet50_shapes(),
    # 2000 vectors of 1 to 4096 elements: the per-tensor overhead.
    "tiny": tiny_shapes(),
}

#: Sizes that ``bench --quick`` leaves out unless ``--size`` names them:
#: gigabytes of arrays and seconds per plain-NumPy step.
MODEL_SIZES = ("gpt2", "resnet50")

#: Sizes whose report quotes the per-tensor cost (time / tensors): what
#: they measure is the overhead of each tensor, not memory traffic.
PER_TENSOR_SIZES = ("tiny",)

DTYPES = {"float32": np.float32, "float64": np.float64}

IMPLS = ("cython", "numba", "numpy", "torch") + tuple(peers.PEERS) + ("copy",)
#: The fusedoptim backends among ``IMPLS``.
BACKENDS = IMPLS[:3]
#: What every time is compared with, and the memory-bandwidth yardstick.
BASELINE, LIMIT = "numpy", "copy"

#: Learning rate of every row: small, so that repeated steps stay finite.
LR = 1e-4
#: Hyperparameters that differ from the class defaults, by class name: a
#: momentum, so that the row has a state to move (Momentum's ``beta`` is
#: 0.9 by default already).
STATEFUL = {"SGD": {"momentum": 0.9}}

#: State precisions (``--state``): ``float32`` is the parameter's dtype
#: (``state_dtype=None``); the others are ``state_dtype`` values, run for
#: the rows whose class supports them (:data:`STATE_ROWS`) at float32 only.
#: Their ``copy`` is the float32-state step's, so that "% of limit" is the
#: time of the float32 copy limit over this time (above 100%: faster than
#: any float32-state step can be).
STATES = ("float32", "bfloat16", "int8")
STATE_ROWS = ("momentum", "sgd", "rmsprop", "adam", "adamw", "adagrad", "lion")

#: Read-write arrays ``_ext._yardstick.copy_like`` takes at most (the
#: parameter and two states): a step with more active state slots has no
#: yardstick.
YARDSTICK_MAX_READ_WRITE = 3


class NotMeasurable(LookupError):
    """This implementation has no step for this case (no torch counterpart,
    or more arrays than the copy yardstick moves)."""


def hyperparameters(cls):
    """The bench's constructor arguments of ``cls``: its defaults, ``lr`` =
    :data:`LR` and the :data:`STATEFUL` overrides."""
    hp = {"lr": LR}
    chosen = STATEFUL.get(cls.__name__, {})
    unknown = set(chosen) - {h.name for h in cls.hyper}
    if unknown:
        raise TypeError(f"STATEFUL[{cls.__name__!r}]: {cls.__name__} has no "
                        f"hyperparameter {sorted(unknown)[0]!r}")
    for h in cls.hyper:
        if h.name in chosen:
            hp[h.name] = chosen[h.name]
        elif h.default is inspect.Parameter.empty:
            raise TypeError(f"{cls.__name__}'s {h.name!r} has no default: give the bench "
                            f"a value in fusedoptim.cli.bench.workloads.STATEFUL")
        else:
            hp[h.name] = h.default
    return hp


def size_elements(size):
    """Parameter elements of model size ``size``."""
    return sum(int(np.prod(s)) for s in SIZES[size])


def _kernel_args(row):
    """The family keywords of the row's first step, from the class itself
    (an instance over one element: the keywords may depend on instance
    attributes, such as AdamW's ``decoupled``)."""
    cls = ROWS[row]
    hp = hyperparameters(cls)
    opt = cls({"w": np.zeros(1)}, **hp)
    return opt.kernel_args({h.name: getattr(opt, h.name) for h in cls.hyper}, opt.lr, 1)


@dataclass(frozen=True)
class Case:
    """One benchmark case: row ``optimizer`` (a key of :data:`ROWS`), model
    ``size`` (a key of :data:`SIZES`) and ``dtype`` (a key of :data:`DTYPES`)."""

    optimizer: str
    size: str
    dtype: str
    state: str = "float32"

    @property
    def cls(self):
        """The optimizer class of the row."""
        return ROWS[self.optimizer]

    @property
    def hyperparameters(self):
        hp = hyperparameters(self.cls)
        if self.state != "float32":
            hp["state_dtype"] = self.state
        return hp

    @property
    def shapes(self):
        return SIZES[self.size]

    @property
    def elements(self):
        return size_elements(self.size)

    @property
    def read_write(self):
        """Arrays the step reads and writes: the parameter and each active
        state slot (the gradient is only read)."""
        fam = self.cls.family
        return 1 + sum(fam.active_slots(_kernel_args(self.optimizer)))

    @property
    def arrays_moved(self):
        """Arrays the step reads and writes per element (``Family.arrays_moved``)."""
        return self.cls.family.arrays_moved(_kernel_args(self.optimizer))

    @property
    def bytes_moved(self):
        """Bytes one step must move at the least: each array read once,
        each written array written once."""
        if self.state != "float32":
            from ..._lowp import bytes_moved
            return bytes_moved(self.shapes, self.state, self.read_write - 1)
        return self.elements * np.dtype(DTYPES[self.dtype]).itemsize * self.arrays_moved

    @property
    def name(self):
        state = "" if self.state == "float32" else f"-{self.state}"
        return f"{self.optimizer}-{self.size}-{self.dtype}{state}"

    def unmeasurable(self, impl):
        """Why ``impl`` has no step for this case, or ``None``."""
        if impl == "torch" and self.cls.__name__ not in COUNTERPARTS:
            return f"{self.cls.__name__} has no torch counterpart"
        if impl == "torch" and self.state != "float32":
            return f"torch.optim has no {self.state} optimizer state"
        if impl in peers.PEERS:
            return peers.unmeasurable(impl, self)
        if impl == "copy" and self.read_write > YARDSTICK_MAX_READ_WRITE:
            return (f"{self.cls.__name__} reads and writes {self.read_write} arrays; the "
                    f"copy yardstick moves at most {YARDSTICK_MAX_READ_WRITE}: no % of limit")
        return None


def _no_state_step(row, dtype, state):
    """``(what, why)`` when ``row`` has no step with ``state`` at ``dtype``."""
    if state != "float32" and row not in STATE_ROWS:
        return (f"{row} --state {state}", f"{ROWS[row].__name__} takes no state_dtype (--state "
                                          f"is for the {', '.join(STATE_ROWS)} rows)")
    if state != "float32" and dtype != "float32":
        return f"{row} {dtype} --state {state}", "a reduced state needs float32 parameters"
    return None


def cases(optimizers=OPTIMIZERS, sizes=tuple(SIZES), dtypes=("float32",),
          states=("float32",), skipped=None) -> "list[Case]":
    """Every case, size by size; a reduced-precision state only for
    :data:`STATE_ROWS` and float32 parameters (``skipped``, a dict, gets
    why the others are left out)."""
    out = []
    for s, o, d, st in itertools.product(sizes, optimizers, dtypes, states):
        no = _no_state_step(o, d, st)
        if no is None:
            out.append(Case(o, s, d, st))
        elif skipped is not None:
            skipped.setdefault(*no)
    return out


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
    """``(parameters, grads)`` for ``case``: keys ``W1``, ``b1``, ``W2``, ...
    in both, random normal values (fresh, writable arrays; the same values
    on every call)."""
    params, grads = {}, {}
    for i, (p, g) in enumerate(_pristine_model(tuple(case.shapes), case.dtype, seed)):
        name = f"{'Wb'[i % 2]}{i // 2 + 1}"
        params[name] = p.copy()
        grads[name] = g.copy()
    return params, grads


def _torch_step(case, params, grads, threads):
    import torch

    ps = torch_params(params, grads, threads)
    return COUNTERPARTS[case.cls.__name__](torch.optim, ps, case.hyperparameters).step


def yardstick():
    """The copy kernel, ``copy_like(rw, ro)`` of the compiled extension;
    ``ImportError`` without it."""
    from ..._ext._yardstick import copy_like
    return copy_like


def _copy_step(case):
    from ..._alloc import zeros_like_state

    copy_like = yardstick()
    dtype = DTYPES[case.dtype]
    n = case.elements
    # The first read-write array stands for the parameter, the others for
    # states, placed in memory as the library places its states (_alloc), so
    # that the yardstick moves its bytes under the same conditions.
    rw = [np.zeros(n, dtype=dtype)]
    rw += [zeros_like_state(rw[0], k) for k in range(case.read_write - 1)]
    # The read-only operand: the case's gradients (already drawn for the
    # other implementations), scaled so that repeated adds stay small.
    g = np.concatenate([g.ravel() for _, g in _pristine_model(tuple(case.shapes), case.dtype, 0)])
    ro = [g * dtype(1e-6)]
    again = case.cls.family.second_pass
    if not again:
        return lambda: copy_like(rw, ro)
    # A two-pass family (LAMB): the first pass reads the parameter and the
    # gradient and writes the states, the second reads the parameter and the
    # states it names again and writes the parameter; two passes of the
    # copy, so that the yardstick moves the same reads and writes.
    fam = case.cls.family
    active = fam.active_slots(_kernel_args(case.optimizer))
    states = dict(zip([s for s, on in zip(fam.slots, active) if on], rw[1:]))
    p, reread = rw[0], [states[s] for s in again]

    def two_passes():
        copy_like(rw[1:], [p, ro[0]])
        copy_like([p], reread)

    return two_passes


def make_step(case, impl, threads=None, seed=0):
    """A zero-argument callable that runs one step of ``case`` on ``impl``.

    Backends step an instance of the row's class (``opt.step(grads)``, what
    a user calls); call it inside ``use_backend(impl)`` (``measure`` does).
    Raises ``ImportError`` when ``impl`` is not available here and
    :class:`NotMeasurable` when it has no step for ``case``.
    """
    from ...backend import _load, get_num_threads

    why = case.unmeasurable(impl)
    if why:
        raise NotMeasurable(why)
    if impl == "copy":
        return _copy_step(case)
    params, grads = make_model(case, seed)
    if impl == "torch":
        return _torch_step(case, params, grads, threads or get_num_threads())
    if impl in peers.PEERS:
        return peers.make_step(impl, case, params, grads, threads or get_num_threads())
    _load(impl)
    opt = case.cls(params, **case.hyperparameters)
    return functools.partial(opt.step, grads)


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


def _context(impl):
    from contextlib import nullcontext

    return use_backend(impl) if impl in BACKENDS else nullcontext()


def warm_up(fn: "Callable[[], object]", impl: "str | None" = None, warmup: int = 1,
            number: "int | None" = None) -> int:
    """Call ``fn`` ``warmup`` times (inside ``use_backend(impl)`` when
    ``impl`` names a fusedoptim backend); return the calls per timed batch:
    ``number``, or, when ``None``, as many as last about 2 ms."""
    with _context(impl):
        for _ in range(warmup):
            fn()
        return _batch_size(fn) if number is None else number


def time_batch(fn: "Callable[[], object]", impl: "str | None", number: int,
               warmup: int = 0) -> float:
    """Seconds per call of one timed batch of ``number`` calls of ``fn``,
    after ``warmup`` untimed calls."""
    with _context(impl):
        for _ in range(warmup):
            fn()
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        return (time.perf_counter() - t0) / number


#: ``settle``: the slice of sleep, the share of a CPU that counts as a
#: thread still spinning, and the longest wait.
SETTLE_SLICE_S, SETTLE_BUSY, SETTLE_MAX_S = 0.002, 0.25, 0.05


def settle() -> float:
    """Sleep until this process's threads stop spinning; returns the
    seconds waited.

    PyTorch's OpenMP workers keep spinning after a step before they sleep
    (measured: 4-9 ms of CPU after a 2^24-element fused Adam): on 2 cores
    the next implementation timed loses a core to them meanwhile (with
    torch in the rounds, the copy's median was 35.6 ms against 10.8 ms
    without it; 10.2 ms with this wait).  Sleeps in
    slices of ``SETTLE_SLICE_S`` while the process used more than
    ``SETTLE_BUSY`` of a CPU in the last one, at most ``SETTLE_MAX_S``.
    """
    t0 = time.perf_counter()
    while True:
        c0 = time.process_time()
        time.sleep(SETTLE_SLICE_S)
        waited = time.perf_counter() - t0
        if time.process_time() - c0 <= SETTLE_BUSY * SETTLE_SLICE_S or waited >= SETTLE_MAX_S:
            return waited


def interleave(steps: "dict[str, Callable[[], object]]", rounds: int, warmup: int = 1,
               number: "dict[str, int] | None" = None, every: "dict[str, int] | None" = None,
               errors: "dict[str, Exception] | None" = None,
               on_round: "Callable[[int], None] | None" = None,
               rewarm: "dict[str, int] | None" = None) -> "dict[str, dict[int, float]]":
    """Time the implementations of one case interleaved, round by round.

    ``steps`` maps an implementation to its step.  Each is first warmed up
    (``warm_up``: ``warmup`` calls, then its batch is sized unless
    ``number[impl]`` gives it); then each of ``rounds`` rounds runs one timed
    batch of every implementation in turn, in the order of ``steps`` in even
    rounds and in the reverse order in odd ones (so that neither the
    position in a round nor a drift within one favours an implementation:
    the one timed after a plain-NumPy step, or first after a pause, is not
    always the same).  An
    implementation with ``every[impl] = k`` joins rounds 0, k, 2k, ... only
    (a slow step that would take too long in every round).  A drift of the
    machine's speed (the memory bandwidth of a shared VM swings by tens of
    percent from minute to minute) then hits every implementation of a
    round alike, and cancels out of :func:`round_ratios`.

    Each batch is preceded by ``rewarm[impl]`` untimed calls (default 1),
    and followed by :func:`settle`: an implementation's first call after
    another's batch finds its worker threads asleep and its arrays out of
    the caches, so the batch starts after one call, in the steady state
    that back-to-back batches measured; and its spinning workers must not
    slow the next implementation's batch.

    Returns ``{impl: {round: seconds per call}}``.  With ``errors`` (a
    dict), an implementation that raises is recorded there and leaves the
    rounds; without it the exception propagates.  ``on_round(r)`` is called
    before round ``r``.
    """
    number = dict(number or {})
    every = every or {}
    rewarm = rewarm or {}
    live = {}
    for impl, fn in steps.items():
        try:
            number[impl] = warm_up(fn, impl, warmup, number.get(impl))
        except Exception as exc:
            if errors is None:
                raise
            errors[impl] = exc
        else:
            live[impl] = fn
    out: dict[str, dict[int, float]] = {impl: {} for impl in steps}
    for r in range(rounds):
        if on_round is not None:
            on_round(r)
        order = list(live.items())
        for impl, fn in (order if r % 2 == 0 else order[::-1]):
            if r % every.get(impl, 1):
                continue
            try:
                out[impl][r] = time_batch(fn, impl, number[impl], rewarm.get(impl, 1))
                if len(live) > 1:
                    settle()
            except Exception as exc:
                if errors is None:
                    raise
                errors[impl] = exc
                del live[impl]
    return out


def round_ratios(num: "dict[int, float]", den: "dict[int, float]") -> "list[float]":
    """``num[r] / den[r]`` for every round ``r`` timed in both (in round
    order): the ratio of two implementations' times, each pair measured
    moments apart, so that a drift of the machine's speed between rounds
    cancels out.  Take the median."""
    return [num[r] / den[r] for r in sorted(num.keys() & den.keys()) if den[r] > 0]


def measure(fn, impl=None, warmup=3, repeat=15, number=None):
    """Seconds per call of ``fn``: one float per timed batch, after warm-up.

    ``impl``, if it names a fusedoptim backend, is made active while timing.
    ``number`` calls per batch, or ``None`` to size batches to about 2 ms.
    Take the median of the result.  One implementation alone: to compare
    implementations, time them together with :func:`interleave`.
    """
    number = warm_up(fn, impl, warmup, number)
    return [time_batch(fn, impl, number) for _ in range(repeat)]
