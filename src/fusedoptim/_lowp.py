"""Reduced-precision optimizer state (``state_dtype``): the optimizer's side.

:class:`fusedoptim.Optimizer` takes three keyword-only arguments, declared
here (``SIGNATURE``) and used only through these hooks of the base class
(``configure``, ``LowpState.init_state``, ``LowpState.step``,
``state_nbytes``, and for checkpoints ``LowpState.records`` and
``LowpState.check_records``):

``state_dtype``
    ``None`` (the parameter's dtype), ``"bfloat16"`` or ``"int8"`` (8-bit
    blockwise).  Adam and AdamW (no AMSGrad), and the one-state families of
    ``_lowp_onestate`` (Momentum, SGD with momentum, RMSProp without
    centering or momentum, Adagrad, Lion); float32 parameters.  Several
    parameter groups step in one kernel call each (``step_groups``).
``state_rounding``
    ``"nearest"`` (round to nearest even) or ``"stochastic"``; the default
    is ``"nearest"`` for bfloat16 and ``"stochastic"`` for int8 (whose
    4-mantissa-bit code of ``sqrt(v)`` would otherwise stagnate), and
    ``"stochastic"`` for both with Adagrad (its growing sum stagnates in
    bfloat16 too).
``state_seed``
    The seed of stochastic rounding (an int); the rounding of step ``t``
    depends only on it, ``t`` and the element's position, so a resumed
    run with the same seed continues bit for bit.

State arrays (``opt.state``; checkpoints store them as they are, with what
ties them to the parameters: ``LowpState.records``):
bfloat16: ``exp_avg``, ``exp_avg_sq`` as uint16 words, one per element in the
parameter's memory order.  int8: ``exp_avg``, ``exp_avg_sq`` as uint8 codes
and ``exp_avg_scale``, ``exp_avg_sq_scale`` as float32 (one per 256-element
block); tensors under ``QMIN_ELEMENTS`` elements keep float32 ``exp_avg``,
``exp_avg_sq`` (flat) and have no scales.
"""

import importlib
import inspect
import numbers

import numpy as np

from . import _validate as _v
from ._alloc import zeros_beside
from .families import adam_lowp as _spec

__all__ = ["SIGNATURE", "STATE_DTYPES", "configure", "LowpState", "bytes_moved", "state_nbytes",
           "order_of"]

STATE_DTYPES = (None, "bfloat16", "int8")
_ROUNDINGS = ("nearest", "stochastic")

_P = inspect.Parameter
#: The keyword-only arguments every optimizer class gets.
SIGNATURE = [_P("state_dtype", _P.KEYWORD_ONLY, default=None),
             _P("state_rounding", _P.KEYWORD_ONLY, default=None),
             _P("state_seed", _P.KEYWORD_ONLY, default=0)]

_M_LABEL, _V_LABEL = "exp_avg", "exp_avg_sq"
#: Families whose one state slot can be reduced (families/lowp_onestate.py).
_ONESTATE = ("sgd", "rmsprop", "adagrad", "lion")
_SCALE = "_scale"


def order_of(p) -> str:
    """``"F"`` for a Fortran-ordered array that is not also C-ordered, else
    ``"C"``: the order in which flat state follows ``p``'s elements (an
    array with at most one axis longer than 1 is both, and says ``"C"``)."""
    return "F" if p.flags.f_contiguous and not p.flags.c_contiguous else "C"


def _axes(p) -> int:
    """Axes of ``p`` longer than 1: with two or more, its memory order and
    shape decide which element each flat state entry belongs to."""
    return sum(n > 1 for n in p.shape)


def _check_layout(sd, name: str, p) -> set:
    """Raise unless checkpoint ``sd`` saved the flat state of parameter
    ``name`` over an array of ``p``'s shape and memory order; the keys read."""
    skey, okey = "shape/" + name, "order/" + name
    if skey not in sd and okey not in sd:
        if _axes(p) > 1:
            raise KeyError(f"state_dict has no {skey!r} (an older checkpoint?): the flat "
                           f"reduced-precision state of a matrix needs its saved shape")
        return set()  # a vector's flat state fits any array of its size
    for key in (skey, okey):
        if key not in sd:
            raise KeyError(f"state_dict has no {key!r}")
    saved = np.asarray(sd[skey])
    if saved.ndim != 1 or saved.dtype.kind not in "iu":
        raise TypeError(f"state_dict[{skey!r}] must be a 1-d integer array")
    shape = tuple(int(n) for n in saved.tolist())
    if shape != p.shape:
        raise ValueError(f"state_dict[{skey!r}] is {shape} but parameters[{name!r}] has "
                         f"shape {p.shape}; its reduced-precision state is flat and fits "
                         f"the saved shape only")
    order = sd[okey]
    if isinstance(order, (np.ndarray, np.generic)) and order.ndim == 0:
        order = order.item()
    if not isinstance(order, str) or order not in ("C", "F"):
        raise ValueError(f"state_dict[{okey!r}] must be 'C' or 'F', got {order!r}")
    mine = order_of(p)
    if _axes(p) > 1 and order != mine:
        fix = "np.asfortranarray" if order == "F" else "np.ascontiguousarray"
        raise ValueError(f"state_dict[{okey!r}] is {order!r} but parameters[{name!r}] is in "
                         f"{mine} order; its reduced-precision state follows the saved memory "
                         f"order: rebuild it with {fix}")
    return {skey, okey}


def configure(opt, args: dict) -> "LowpState | None":
    """Check the state arguments of optimizer ``opt`` (bound ``args``);
    ``None`` for full-precision state, else a :class:`LowpState`."""
    dtype, rounding, seed = args["state_dtype"], args["state_rounding"], args["state_seed"]
    if dtype not in STATE_DTYPES:
        raise ValueError(f"state_dtype must be None, 'bfloat16' or 'int8', got {dtype!r}")
    if rounding is not None and rounding not in _ROUNDINGS:
        raise ValueError(f"state_rounding must be 'nearest' or 'stochastic', got {rounding!r}")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"state_seed must be an integer, got {type(seed).__name__}")
    if dtype is None:
        if rounding is not None:
            raise ValueError("state_rounding needs state_dtype='bfloat16' or 'int8'")
        return None
    fam = opt.family.name
    if fam != "adam" and fam not in _ONESTATE:
        raise ValueError(f"state_dtype={dtype!r} is supported by Adam, AdamW, Momentum, SGD, "
                         f"RMSProp, Adagrad and Lion, not {type(opt).__name__}")
    state: LowpState
    if fam != "adam":  # one state slot (_lowp_onestate: imported here, after the families)
        state = importlib.import_module("fusedoptim._lowp_onestate").make(
            opt, dtype, rounding, int(seed))
    else:
        if rounding is None:
            rounding = "nearest" if dtype == "bfloat16" else "stochastic"
        state = LowpState(dtype, rounding, int(seed))
    for group in opt._groups:
        state.check_group(opt, group)
    return state


class LowpState:
    """The reduced-precision format of one optimizer's state."""

    #: The ``numpy`` backend's kernels (set below, after their class).
    _reference: type

    def __init__(self, dtype: str, rounding: str, seed: int) -> None:
        self.dtype = dtype
        self.rounding = rounding
        self.seed = seed
        # A ZeRO shard (distributed.ShardedOptimizer, through ``as_shard``)
        # steps pieces of the whole step's tensors: rounding counts from the
        # slice's index in the whole step, and int8 keeps float32 state by
        # the whole tensor's size, so every world size gives the same bits.
        self.index_base = 0
        self.full_sizes: dict = {}
        # A shard's checkpoint records the whole step's parameters (records).
        self.whole: "dict | None" = None

    def as_shard(self, opt, index_base: int, full_sizes: dict,
                 whole: "dict | None" = None) -> None:
        """Make optimizer ``opt`` (this state's, not yet stepped) the shard
        of a larger step: its first element is element ``index_base`` of
        the step and parameter ``name`` is a piece of a tensor of
        ``full_sizes[name]`` elements (whose pieces start at multiples of
        ``QBLOCK``).  ``whole``: the whole step's parameters, in order,
        which its checkpoints then record and check (:meth:`records`)
        instead of its pieces.  Reallocates the state."""
        self.index_base = int(index_base)
        self.full_sizes = dict(full_sizes)
        self.whole = None if whole is None else dict(whole)
        self.init_state(opt)

    def small(self, name: str, n: int) -> bool:
        """Whether parameter ``name`` (``n`` elements here) keeps float32
        state in int8 mode: by the size of the whole tensor."""
        return self.full_sizes.get(name, n) < _spec.QMIN_ELEMENTS

    def check_group(self, opt, group) -> None:
        """Raise unless parameter group ``group`` of optimizer ``opt`` can
        keep this state (before it is added: nothing is allocated)."""
        if group.get("amsgrad"):
            raise ValueError(f"state_dtype={self.dtype!r} does not support amsgrad=True")
        for name, p in group["params"].items():
            if p.dtype != np.float32:
                raise TypeError(f"state_dtype={self.dtype!r} needs float32 parameters; "
                                f"parameters[{name!r}] is {p.dtype}")

    def __repr__(self):
        return (f"state_dtype={self.dtype!r}, state_rounding={self.rounding!r}, "
                f"state_seed={self.seed}")

    def init_state(self, opt) -> None:
        """Allocate ``opt._state`` for every group and set ``opt._states``."""
        labels = self.labels(opt)
        opt._state = {label: {} for label in labels}
        if self.dtype == "int8":
            opt._state.update((label + _SCALE, {}) for label in labels)
        for group in opt._groups:
            self.add_group(opt, group)
        opt._states = ()

    def labels(self, opt) -> tuple:
        """The labels of the slots kept in this format."""
        return (_M_LABEL, _V_LABEL)

    def add_group(self, opt, group) -> None:
        """Allocate the state of ``group``'s parameters in ``opt._state``
        (zeros: every code and scale 0 decodes to 0)."""
        state = opt._state
        for name, p in group["params"].items():
            for slot, label in enumerate((_M_LABEL, _V_LABEL)):
                a, sc = self.new_slot(name, p, slot)
                state[label][name] = a
                if sc is not None:
                    state[label + _SCALE][name] = sc

    def records(self, opt) -> dict:
        """Checkpoint entries that tie the flat state to the parameters:
        ``"params"`` (their names in order, every group's in group order,
        which stochastic rounding counts elements in) and per parameter
        ``"shape/<name>"`` (int64) and ``"order/<name>"`` (``"C"`` or
        ``"F"``, :func:`order_of`: the memory order its flat state
        follows)."""
        params = opt._params if self.whole is None else self.whole
        out: dict = {"params": np.array(list(params), dtype=str)}
        for name, p in params.items():
            out["shape/" + name] = np.array(p.shape, dtype=np.int64)
            out["order/" + name] = order_of(p)
        return out

    def check_records(self, opt, sd) -> set:
        """Raise unless checkpoint ``sd`` (a dict) saved this state over
        parameters of the same shapes and memory orders, and, where
        stochastic rounding counts on it, in the same order; the keys read.
        A checkpoint without the records (older) is taken where they cannot
        matter: no matrix, nearest rounding or a single parameter."""
        params = opt._params if self.whole is None else self.whole
        keys = set()
        if "params" in sd:
            names = np.asarray(sd["params"])
            if names.ndim != 1 or names.dtype.kind != "U" or \
                    sorted(names.tolist()) != sorted(params):
                raise ValueError("state_dict['params'] does not name this optimizer's "
                                 "parameters")
            if self.rounding == "stochastic" and names.tolist() != list(params):
                raise ValueError(f"state_dict['params'] is {names.tolist()}: stochastic "
                                 f"rounding counts elements in that order; build the "
                                 f"optimizer over the parameters in it")
            keys.add("params")
        elif self.rounding == "stochastic" and len(params) > 1:
            raise KeyError("state_dict has no 'params' (an older checkpoint?): stochastic "
                           "rounding needs the saved order of the parameters")
        for name, p in params.items():
            keys |= _check_layout(sd, name, p)
        return keys

    def arrays(self, opt, names: list) -> list:
        """The state arrays of each parameter in ``names``, checked: the one
        validation of them for every backend (they are the optimizer's own,
        so only a parameter added to the dict after construction, or a
        state array replaced through ``opt._state``, can fail)."""
        st = opt._state
        q8 = self.dtype == "int8"
        out = []
        for name in names:
            if name not in st[_M_LABEL]:
                raise _v.missing_state(_M_LABEL, name, name)
            p = opt._params[name]
            n = p.size
            row = [st[_M_LABEL][name], st[_V_LABEL][name]]
            if q8:
                small = self.small(name, n)
                row += [None, None] if small else [st[_M_LABEL + _SCALE][name],
                                                   st[_V_LABEL + _SCALE][name]]
                want: tuple = (np.float32 if small else np.uint8,) * 2 + (np.float32,) * 2
                sizes: tuple = (n, n) + ((-(-n // _spec.QBLOCK),) * 2)
            else:
                want, sizes = (np.uint16,) * 2, (n, n)
            for a, dt, size in zip(row, want, sizes):
                if a is not None:
                    self.check_fits(name, a, dt, size)
            out.append(tuple(row))
        return out

    def kwargs(self, kw: dict, t: int, gscale: float) -> dict:
        """The reduced-precision kernel's keywords from the family's ``kw``."""
        kw = dict(kw)
        if kw.pop("amsgrad"):
            raise ValueError(f"state_dtype={self.dtype!r} does not support amsgrad=True")
        kw.pop("torch_order", None)
        return self.rounding_kw(kw, t, gscale)

    def rounding_kw(self, kw: dict, t: int, gscale: float) -> dict:
        """``kw`` (a copy, changed) with the clipping scale and the keywords
        of step ``t``'s rounding (``stochastic``, ``key``, ``index_base``)."""
        kw["gscale"] = gscale
        kw["stochastic"] = self.rounding == "stochastic"
        kw["key"] = _spec.step_key(self.seed, t) if kw["stochastic"] else 0
        kw["index_base"] = self.index_base
        return kw

    def new_slot(self, name: str, p, slot: int) -> tuple:
        """Zeroed ``(codes, scale)`` of state slot ``slot`` (0 or 1) of
        parameter ``name``, array ``p``: bfloat16 words, or int8 codes and
        block scales, or a float32 slot (int8 mode, :meth:`small`);
        ``scale`` ``None`` but for codes.  Every code and scale 0 decodes to
        0.  Large slots are placed apart from ``p`` and from each other in
        memory (``_alloc.zeros_beside``)."""
        n = p.size
        if self.dtype == "bfloat16":
            return zeros_beside(p, slot, n, np.uint16), None
        if self.small(name, n):
            return zeros_beside(p, slot, n, np.float32), None
        return (zeros_beside(p, slot, n, np.uint8),
                np.zeros(-(-n // _spec.QBLOCK), np.float32))

    def check_fits(self, name: str, a, dtype, size: int) -> None:
        """Raise ``ValueError`` unless state array ``a`` of parameter
        ``name`` is still a writeable C-contiguous ``dtype`` array of
        ``size`` elements."""
        if (type(a) is not np.ndarray or a.dtype != dtype or a.shape != (size,)
                or not a.flags.c_contiguous or not a.flags.writeable):
            raise ValueError(f"the {self.dtype} state of parameter {name!r} was "
                             f"replaced by an array that does not fit it")

    #: The compiled modules of the kernels, by backend module name; any other
    #: backend runs ``_reference`` (``impl``).
    _modules = {"_ext": "fusedoptim._ext.adam_lowp", "_numba": "fusedoptim._numba.adam_lowp"}

    def impl(self, backend):
        """The kernels' module (or the reference class) for ``backend``."""
        mod = self._modules.get(backend.__name__.rsplit(".", 1)[-1])
        if mod is None:
            return self._reference
        impl = _IMPLS.get(mod)
        if impl is None:
            impl = _IMPLS[mod] = importlib.import_module(mod)
        return impl

    def step(self, opt, backend, grads: dict, kw: dict, gscale: float, t: int) -> tuple:
        """One fused step on ``backend`` (a backend module), as ``(kernel,
        arguments)`` for the optimizer to call; ``kw``: the family's keywords
        for this step (``opt.kernel_args``), ``t`` its count."""
        kw = self.kwargs(kw, t, gscale)
        params = opt._params
        names = _v.keys_of(params)
        arrays = self.arrays(opt, names)
        kernel = getattr(self.impl(backend), "adam_q8" if self.dtype == "int8" else "adam_bf16")
        return kernel, (params, grads, arrays, _v.NAMED, kw)

    def group_call(self, backend, params: dict, grads: dict, arrays: list, kw: dict) -> tuple:
        """``(kernel, arguments)`` of one group's call (:meth:`step_groups`)."""
        kernel = getattr(self.impl(backend), "adam_q8" if self.dtype == "int8" else "adam_bf16")
        return kernel, (params, grads, arrays, _v.NAMED, kw)

    def step_groups(self, opt, backend, grads: dict, kws: tuple, gscale: float,
                    t: int) -> tuple:
        """A step over several parameter groups (``kws``: each group's
        keywords at its own step count), as ``(callable, ())``: one kernel
        call per group, whose elements are counted from the total of the
        groups before it, so that groups of equal settings round as one
        group over the same parameters would."""
        kws = tuple([self.kwargs(kw, t, gscale) for kw in kws])
        params = opt._params
        # The whole step checked before the first call writes (each call
        # checks its own group only), with each gradient looked up among
        # every parameter's names: grads["decoder"] is never ecoder's.
        pairs = dict(zip(_v.keys_of(params), _v.gather(params, grads, (), _v.NAMED)))
        writes: "list | None" = [] if getattr(backend, "INTERRUPTIBLE", False) else None
        calls, base = [], self.index_base
        for group, kw in zip(opt._groups, kws):
            names = list(group["params"])
            gp = {n: params[n] for n in names}
            arrays = self.arrays(opt, names)
            if writes is not None:
                # Ctrl-C lands inside an interpreted step: every group is
                # computed into copies first, so that it finds nothing written.
                live = gp
                gp = {n: np.array(a, copy=True, order="K") for n, a in live.items()}
                writes += [(live[n], gp[n]) for n in names]
                new = [tuple(None if a is None else a.copy() for a in row) for row in arrays]
                writes += [(a, b) for row, crow in zip(arrays, new)
                           for a, b in zip(row, crow) if a is not None]
                arrays = new
            kw["index_base"] = base
            calls.append(self.group_call(backend, gp, {n: pairs[n][1] for n in names},
                                         arrays, kw))
            base += sum(a.size for a in gp.values())
        return _GroupSteps(calls, writes), ()


class _GroupSteps:
    """The kernel calls of a step over several groups, as one call.

    A compiled kernel's Ctrl-C lands after it, as the call returns, and an
    interrupt may also land in this interpreted loop before or between the
    calls: the optimizer, which has counted the step, then calls
    :meth:`finish`, which runs the calls not yet made, so that the step is
    whole, as one call's (``done`` advances just before each call: no check
    for signals lies between the two).  An Exception would leave the groups
    before it stepped, but ``step_groups`` has checked everything a kernel
    checks.  An interpreted step (``writes``: its groups computed into
    copies) writes them back once every group is done."""

    __slots__ = ("calls", "writes", "done")

    def __init__(self, calls: list, writes: "list | None") -> None:
        self.calls = calls
        self.writes = writes
        self.done = 0

    def __call__(self) -> None:
        if self.writes is not None:
            for kernel, args in self.calls:
                kernel(*args)
            for live, new in self.writes:
                np.copyto(live, new)
            return
        self._run(False)

    def finish(self) -> None:
        """The calls not yet made, after an interrupt (a further one waits)."""
        self._run(True)

    def _run(self, interrupted: bool) -> None:
        calls = self.calls
        while self.done < len(calls):
            kernel, args = calls[self.done]
            self.done += 1
            try:
                kernel(*args)
            except Exception:
                raise
            except BaseException:  # already interrupting: the step first
                if not interrupted:
                    raise


class _Reference:
    """The ``numpy`` backend: ``_validate.gather``, then the reference."""

    @staticmethod
    def adam_bf16(params, grads, arrays, mode, kw):
        groups = _v.gather(params, grads, (), mode)
        with np.errstate(all="ignore"):  # silent as the compiled backends (_reference)
            _spec.adam_bf16([(p, g, *a) for (p, g), a in zip(groups, arrays)], kw)

    @staticmethod
    def adam_q8(params, grads, arrays, mode, kw):
        groups = _v.gather(params, grads, (), mode)
        with np.errstate(all="ignore"):
            _spec.adam_q8([(p, g, *a) for (p, g), a in zip(groups, arrays)], kw)


LowpState._reference = _Reference

_IMPLS: dict = {}


def bytes_moved(shapes, state_dtype: str, slots: int = 2) -> int:
    """Bytes a step with float32 parameters and ``slots`` state slots in
    ``state_dtype`` (Adam's two moments by default; one for the one-state
    families) must move at the least: p read and written, g read, every
    state array (codes and scales) read and written."""
    total = 0
    for s in shapes:
        n = int(np.prod(s))
        if state_dtype == "bfloat16":
            st = 2 * n
        elif n < _spec.QMIN_ELEMENTS:
            st = 4 * n
        else:
            st = n + 4 * -(-n // _spec.QBLOCK)
        total += 3 * 4 * n + 2 * slots * st
    return total


def state_nbytes(opt) -> int:
    """Bytes of every state array of optimizer ``opt``."""
    return sum(a.nbytes for d in opt._state.values() for a in d.values())
