"""Reduced-precision state for the one-state families: the optimizer's side.

The same hooks, arguments and checks as Adam's (:mod:`fusedoptim._lowp`,
whose ``configure`` hands a family with a
:data:`~fusedoptim.families.lowp_onestate.DECLS` entry to :func:`make`);
only the state layout and the kernel differ.  State arrays (``opt.state``;
checkpoints store them as they are), under the class's own slot label
(e.g. ``"velocity"`` for Momentum, ``"square_avg"`` for RMSProp):
bfloat16: uint16 words, one per element in the parameter's memory order;
int8: uint8 codes and ``<label>_scale`` (float32, one per 256-element
block); tensors under ``QMIN_ELEMENTS`` elements keep a float32 slot
(flat) and have no scale.
"""

import numpy as np

from . import _validate as _v
from ._lowp import _SCALE, LowpState
from .families import adam_lowp as _c
from .families import lowp_onestate as _spec

__all__ = ["OneStateLowp", "make"]


def make(opt, dtype: str, rounding: "str | None", seed: int) -> "OneStateLowp":
    """The state format of optimizer ``opt`` (a one-state family, already
    checked by ``_lowp.configure``, which then checks each group:
    ``OneStateLowp.check_group``); ``rounding`` ``None`` takes the family's
    default for ``dtype``."""
    decl = _spec.DECLS[opt.family.name]
    if rounding is None:
        rounding = decl.bf16_rounding if dtype == "bfloat16" else "stochastic"
    return OneStateLowp(dtype, rounding, seed, decl)


def _label(opt, decl):
    """The class's label of the declared slot."""
    return opt.state_names[decl.family.slots.index(decl.slot)]


class OneStateLowp(LowpState):
    """The reduced-precision format of a one-state family's slot."""

    def __init__(self, dtype: str, rounding: str, seed: int, decl: "_spec.LowpDecl") -> None:
        super().__init__(dtype, rounding, seed)
        self.decl = decl

    def check_group(self, opt, group) -> None:
        """Raise unless ``group`` can keep this state: float32 parameters,
        settings the family's reduced form supports."""
        super().check_group(opt, group)
        why = _spec.refusal(self.decl, opt.kernel_args(dict(group), 0.0, 1))
        if why is not None:
            raise ValueError(f"{type(opt).__name__}: {why}")

    def labels(self, opt) -> tuple:
        """The class's label of the slot."""
        return (_label(opt, self.decl),)

    def add_group(self, opt, group) -> None:
        """Allocate the slot of ``group``'s parameters in ``opt._state``:
        the group's initial value of the slot (0 except Adagrad's
        ``initial_accumulator_value``) encoded with round to nearest."""
        label = _label(opt, self.decl)
        state = opt._state
        x0 = np.float32(opt.initial_value(label, group))
        for name, p in group["params"].items():
            n = p.size
            a, sc = self.new_slot(name, p, 0)
            if x0 != 0:
                _spec.encode(self.decl, np.full(n, x0, np.float32), a, sc)
            state[label][name] = a
            if sc is not None:
                state[label + _SCALE][name] = sc

    def arrays(self, opt, names: list) -> list:
        """``(state, scale)`` of each parameter in ``names``, checked (the
        one validation of them for every backend)."""
        label = _label(opt, self.decl)
        st = opt._state
        q8 = self.dtype == "int8"
        out = []
        for name in names:
            if name not in st[label]:
                raise _v.missing_state(label, name, name)
            n = opt._params[name].size
            small = q8 and self.small(name, n)
            a = st[label][name]
            sc = st[label + _SCALE].get(name) if q8 and not small else None
            want = [(a, np.float32 if small else (np.uint8 if q8 else np.uint16), n)]
            if q8 and not small:
                want.append((sc, np.float32, -(-n // _c.QBLOCK)))
            for arr, dt, size in want:
                self.check_fits(name, arr, dt, size)
            out.append((a, sc))
        return out

    def kwargs(self, kw: dict, t: int, gscale: float) -> dict:
        """The kernel's keywords: the family's ``kw``, checked, with the
        clipping scale and the rounding's."""
        why = _spec.refusal(self.decl, kw)
        if why is not None:
            raise ValueError(why)
        return self.rounding_kw(dict(kw), t, gscale)

    def step(self, opt, backend, grads: dict, kw: dict, gscale: float, t: int) -> tuple:
        """One fused step on ``backend``, as ``(kernel, arguments)``; ``kw``:
        the family's keywords, ``t`` the step's count."""
        kw = self.kwargs(kw, t, gscale)
        params = opt._params
        arrays = self.arrays(opt, _v.keys_of(params))
        return (self.impl(backend).onestate_step,
                (self.decl, params, grads, arrays, _v.NAMED, kw))

    def group_call(self, backend, params: dict, grads: dict, arrays: list, kw: dict) -> tuple:
        """``(kernel, arguments)`` of one group's call (``step_groups``)."""
        return (self.impl(backend).onestate_step,
                (self.decl, params, grads, arrays, _v.NAMED, kw))

    _modules = {"_ext": "fusedoptim._ext.lowp_onestate",
                "_numba": "fusedoptim._numba.lowp_onestate"}


class _Reference:
    """The ``numpy`` backend: ``_validate.gather``, then the reference."""

    @staticmethod
    def onestate_step(decl: "_spec.LowpDecl", params: dict, grads: dict, arrays: list,
                      mode: int, kw: dict) -> None:
        groups = _v.gather(params, grads, (), mode)
        with np.errstate(all="ignore"):  # silent as the compiled backends (_reference)
            _spec.onestate_step(decl, [(p, g, *a) for (p, g), a in zip(groups, arrays)], kw)


OneStateLowp._reference = _Reference
