"""Plain NumPy implementations: the oracle, and the ``numpy`` backend.

A step computes every tensor's new values into fresh arrays before it
writes any (see ``_multi_tensor``), so running out of memory midway changes
nothing.  Every faster backend (``cython``, ``numba``) must reproduce these
steps bit for bit, for float32 and float64, at every thread count.  Each family's
per-tensor update lives beside its declaration in
:mod:`fusedoptim.families` and states the exact operation order in code;
this module turns each into the family's multi-tensor step, one function per
registered family, with the keyword-only signature every backend shares::

    adam(params, grads, states, mode, *, lr, beta1, ..., gscale)

and its step over several parameter groups, one call for all of them::

    adam_groups(params, grads, states, mode, groups, sizes, *, gscale)

where ``groups[k]`` holds group ``k``'s keywords (all but ``gscale``) and
``sizes[k]`` its number of tensors, which follow group ``k - 1``'s in
``params`` order (``families._spec.check_groups``).

Scalar rules
------------
Hyperparameters arrive as Python floats (already checked by ``_validate``).
Anything derived from them (``1 - beta``, the Adam bias corrections
``1 - beta ** t`` and, in PyTorch's order, ``sqrt(1 - beta2 ** t)``, the
decoupled decay factor ``1 - lr * weight_decay``) is
computed in double precision, then rounded once to the arrays' dtype, which is
what NumPy 2 does with a Python float next to a float32 array (NEP 50).  All
array arithmetic then happens in the arrays' dtype, one IEEE operation at a
time: no fused multiply-add, no reassociation, ``x ** 2`` is ``x * x``, and a
division is a division (never a multiplication by a reciprocal).
"""

import numpy as np

from ._norm import SUMSQ_BLOCK, SUMSQ_LANES, grad_sumsq, sumsq_blocks
from ._validate import gather

#: A step here is Python code: Ctrl-C lands inside it (mostly while it
#: computes, before it writes anything), not after it as after a compiled
#: kernel; ``Optimizer`` then does not count the step.
INTERRUPTIBLE = True
from .families import FAMILIES, check_call, check_groups

__all__ = ["grad_sumsq", "set_num_threads", "sumsq_blocks", "SUMSQ_BLOCK",
           "SUMSQ_LANES", *FAMILIES, *(f"{_n}_groups" for _n in FAMILIES)]


def _scratch(a):
    """A private copy of written array ``a`` (same layout) to compute into."""
    return a.copy(order="K")


def _group_of(sizes, count):
    """The group index of each of ``count`` tensors (``sizes`` per group)."""
    out = [k for k, m in enumerate(sizes) for _ in range(m)]
    if len(out) != count:
        raise ValueError(f"sizes must add up to the {count} parameters, got {len(out)}")
    return out


def _multi_tensor(family):
    update = family.update

    def step(params, grads, states, mode, **kw):
        check_call(family, states, kw)
        groups = gather(params, grads, states, mode)
        _apply(groups, [kw] * len(groups))

    def step_groups(params, grads, states, mode, groups, sizes, *, gscale):
        check_groups(family, states, groups, sizes)
        gathered = gather(params, grads, states, mode)
        kws = [{**kw, "gscale": gscale} for kw in groups]
        _apply(gathered, [kws[k] for k in _group_of(sizes, len(gathered))])

    def _apply(groups, kws):
        # Every tensor's new values are computed into fresh arrays first and
        # copied into the caller's only when all exist: an allocation that
        # fails (MemoryError) anywhere in the step leaves everything as it
        # was.  The copies are same-dtype, same-layout np.copyto calls, which
        # allocate nothing.
        fresh = []
        # The compiled backends compute NaN and infinity silently: so does
        # this one (under warnings-as-errors a RuntimeWarning would make it
        # alone refuse a step the others take).
        with np.errstate(all="ignore"):
            for (p, g, *st), kw in zip(groups, kws):
                new = [_scratch(p)] + [None if a is None else _scratch(a) for a in st]
                update(new[0], g, *new[1:], **kw)
                fresh.append(new)
        for group, new in zip(groups, fresh):
            for a, b in zip(group[:1] + group[2:], new):
                if a is not None:
                    np.copyto(a, b)

    step.__name__ = step.__qualname__ = family.name
    step.__doc__ = (f"Multi-tensor {family.name} step: ``{update.__name__}`` on every "
                    f"tensor; state slots {family.slots}.")
    step_groups.__name__ = step_groups.__qualname__ = family.name + "_groups"
    step_groups.__doc__ = (f"``{family.name}`` over several parameter groups: group "
                           f"``k``'s keywords on its ``sizes[k]`` tensors.")
    return step, step_groups


for _fam in FAMILIES.values():
    globals()[_fam.name], globals()[_fam.name + "_groups"] = _multi_tensor(_fam)
del _fam


def set_num_threads(n):
    """The reference runs on one thread; accepted for a uniform interface."""
