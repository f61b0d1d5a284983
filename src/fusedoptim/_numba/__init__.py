"""The ``numba`` backend: the JIT fallback for installations without the
compiled extension.

Same interface as ``fusedoptim._reference`` (one keyword-only step per
registered family, ``grad_sumsq``, ``set_num_threads``) and bit-for-bit the
same results, for float32 and float64, at every thread count.  The layout
mirrors the compiled backend ``fusedoptim._ext``: ``_step`` holds the shared
machinery (work list, thread split, drivers, and the explanations of how a
step runs, why it is exact, how threads and compilation work), ``_norm`` the
gradient norm, and one module per family its element span and ``step``.

This facade exposes each family's ``step`` under the family's name, found
through the registry (``fusedoptim.families.FAMILIES``): adding a family
means adding ``_numba/<name>.py`` and nothing here.  The attribute
``<name>`` is therefore the step function, not the submodule; reach the
submodule with ``importlib.import_module("fusedoptim._numba.<name>")``.
"""

import importlib

try:
    from . import _step  # noqa: F401 (numba imports here: its errors become ImportError)
except ImportError:
    raise
except Exception as exc:  # e.g. an OSError from a broken llvmlite
    raise ImportError(f"{type(exc).__name__}: {exc}") from exc

from ..families import FAMILIES
from ._norm import grad_sumsq
from ._step import _CACHE, set_num_threads  # noqa: F401 (_CACHE: for the tests)

__all__ = ["grad_sumsq", "set_num_threads", *FAMILIES]

for _name in FAMILIES:
    _mod = importlib.import_module(f".{_name}", __name__)
    globals()[_name] = _mod.step
    if hasattr(_mod, "step_groups"):  # a family ported to parameter groups
        globals()[_name + "_groups"] = _mod.step_groups
del _name, _mod

