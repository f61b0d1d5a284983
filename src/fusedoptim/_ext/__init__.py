"""The ``cython`` backend: compiled steps, one extension module per family.

``_step`` holds what every family shares (the thread split, the threads, the
SIMD switch, the gradient norm), ``_gather`` the compiled validation, and
``<family>.pyx`` the family's element loops and its keyword-only ``step``.
This package exposes each registered family's ``step`` under the family's
name (``fusedoptim._ext.adam(params, grads, states, mode, *, lr, ...)``) and
its step over several parameter groups as ``<name>_groups(params, grads,
states, mode, groups, sizes, *, gscale)``, the interface every backend shares; a family added to the registry needs its
``<family>.pyx`` and nothing here.
"""

import importlib

from fusedoptim.families import FAMILIES

try:
    from ._gather import gather
    from ._step import (
        DEBUG_BUILD,
        HAVE_THREADS,
        _set_parallel_min,
        _set_simd,
        _set_simd_isa,
        get_num_threads,
        grad_sumsq,
        set_num_threads,
        simd,
    )
    for _name in FAMILIES:
        _mod = importlib.import_module(f"{__name__}.{_name}")
        globals()[_name] = _mod.step
        # The step over several parameter groups (absent from a family not
        # ported to groups yet: its optimizers then take one group only).
        if hasattr(_mod, "step_groups"):
            globals()[_name + "_groups"] = _mod.step_groups
    del _name, _mod
except ImportError as exc:
    raise ImportError(f"a compiled module of the build is missing or broken: {exc}") from exc

__all__ = ["DEBUG_BUILD", "HAVE_THREADS", "gather", "get_num_threads", "grad_sumsq",
           "set_num_threads", "simd", "_set_parallel_min", "_set_simd", "_set_simd_isa",
           *FAMILIES,
           *[_n + "_groups" for _n in FAMILIES if _n + "_groups" in globals()]]
