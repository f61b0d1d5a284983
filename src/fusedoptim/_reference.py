"""Plain NumPy implementations: the oracle, and the ``numpy`` backend.

Every faster backend (``cython``, ``numba``) must reproduce these steps bit
for bit, for float32 and float64, at every thread count.  Each family's
per-tensor update lives beside its declaration in
:mod:`fusedoptim.families` and states the exact operation order in code;
this module turns each into the family's multi-tensor step, one function per
registered family, with the keyword-only signature every backend shares::

    adam(params, grads, states, mode, *, lr, beta1, ..., gscale)

Scalar rules
------------
Hyperparameters arrive as Python floats (already checked by ``_validate``).
Anything derived from them (``1 - beta``, the Adam bias corrections
``1 - beta ** t``, the decoupled decay factor ``1 - lr * weight_decay``) is
computed in double precision, then rounded once to the arrays' dtype, which is
what NumPy 2 does with a Python float next to a float32 array (NEP 50).  All
array arithmetic then happens in the arrays' dtype, one IEEE operation at a
time: no fused multiply-add, no reassociation, ``x ** 2`` is ``x * x``, and a
division is a division (never a multiplication by a reciprocal).
"""

from ._norm import SUMSQ_BLOCK, SUMSQ_LANES, grad_sumsq, sumsq_blocks
from ._validate import gather
from .families import FAMILIES, check_call

__all__ = ["grad_sumsq", "set_num_threads", "sumsq_blocks", "SUMSQ_BLOCK",
           "SUMSQ_LANES", *FAMILIES]


def _multi_tensor(family):
    update = family.update

    def step(params, grads, states, mode, **kw):
        check_call(family, states, kw)
        for arrays in gather(params, grads, states, mode):
            update(*arrays, **kw)

    step.__name__ = step.__qualname__ = family.name
    step.__doc__ = (f"Multi-tensor {family.name} step: ``{update.__name__}`` on every "
                    f"tensor; state slots {family.slots}.")
    return step


for _fam in FAMILIES.values():
    globals()[_fam.name] = _multi_tensor(_fam)
del _fam


def set_num_threads(n):
    """The reference runs on one thread; accepted for a uniform interface."""
