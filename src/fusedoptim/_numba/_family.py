"""The Python-level ``step`` and ``step_groups`` of a one-pass Numba family.

Every one-pass family's module defines its jitted ``span``, ``unpack``,
``serial`` and ``parallel`` at module level (Numba caches only module-level
functions, see ``_step``) and its ``_args`` (one group's keywords to the
span's scalars and flags); the two entry points around them are the same
for every such family, so they are made here.  LAMB's two-pass step has its
own.

Why the three jitted wrappers are not made here too: a factory's wrapper is
a closure over the family's span, and Numba keys a closure's cache entry on
its pickled cell contents, in which a dispatcher carries a per-process
UUID, so it never loads from the cache (measured with Numba 0.68.1: a
closure wrapper compiled again in every process, adding one ``.nbc`` file
each, while the module-level one loaded).  A wrapper built from a shared
code object with the family's globals would cache, but under the shared
file's timestamp, so an edited span would run stale code from the cache.
"""

from typing import Callable

from .._validate import gather
from ..families import Family, check_call, check_groups
from ._step import group_of, run_groups

__all__ = ["family_steps"]


def family_steps(family: Family, title: str, args: Callable, drivers: tuple) -> tuple:
    """The ``(step, step_groups)`` of ``family`` (named ``title`` in the
    docstrings), given its ``args(kw, gscale) -> (scalars, flags)`` and its
    ``(serial, parallel)`` group drivers."""
    name = family.name

    def step(params: dict, grads: dict, states: tuple, mode: int, **kw) -> None:
        check_call(family, states, kw)
        groups = gather(params, grads, states, mode)
        if not groups:
            return
        s, f = args(kw, kw["gscale"])
        run_groups(drivers, groups, s, f)

    def step_groups(params: dict, grads: dict, states: tuple, mode: int, groups: tuple,
                    sizes: tuple, *, gscale: float) -> None:
        check_groups(family, states, groups, sizes)
        gathered = gather(params, grads, states, mode)
        where = group_of(sizes, len(gathered))
        if not gathered:
            return
        group_args = [args(kw, gscale) for kw in groups]
        run_groups(drivers, gathered, [a[0] for a in group_args], [a[1] for a in group_args],
                   where)

    step.__doc__ = (f"Multi-tensor {title} step, keyword-only (see "
                    f"``fusedoptim.families.{name}``).")
    step_groups.__doc__ = ("``step`` over several parameter groups in one call (see\n"
                           "    ``fusedoptim._reference``): group ``k``'s keywords on its "
                           "``sizes[k]``\n    tensors.")
    # Tracebacks and help() name the family's module, not this one.
    for fn in (step, step_groups):
        fn.__module__ = drivers[0].__module__
        fn.__qualname__ = fn.__name__
    return step, step_groups
