"""The registry: every optimizer family and every optimizer class.

One module per family holds, in this order, the family's reference update
in plain NumPy (the specification every backend reproduces bit for bit), its
declaration (:class:`Family`: state slots, step keywords, flags) and the
optimizer classes that run it (hyperparameters with defaults and checks,
state names, and the mapping to the step's keywords).

To add an optimizer ``foo``:

1. ``families/foo.py``: its reference update, ``FAMILY = Family(name="foo",
   ...)`` and its class (see ``lion.py``, the shortest), with its PyTorch
   counterpart ``torch = Torch(...)`` (:class:`Torch`) or ``torch = None``;
2. ``_ext/foo.pyx``: its compiled element loop, with a ``step`` function of
   the family's keyword-only signature and ``step_groups`` (several
   parameter groups in one call; see ``adagrad.pyx``);
3. ``_numba/foo.py``: its Numba element loop, ``step`` and ``step_groups``;
4. ``"foo"`` in ``MODULES`` below (the README's "Where things are, and
   adding an optimizer" lists the rest: type-checker lines, torch cases).

The backends, the class's constructor and attributes, ``fusedoptim.OPTIMIZERS``,
the bitwise tests against the reference, the torch-parity table (where a
counterpart exists) and the benchmark rows are all derived from here.
"""

import importlib
from typing import TYPE_CHECKING

from ._spec import Family, Hyper, Torch, check_call, check_groups, prelude

if TYPE_CHECKING:
    from ..optimizer import Optimizer

__all__ = ["MODULES", "FAMILIES", "OPTIMIZERS", "Family", "Hyper", "Torch", "check_call", "check_groups",
           "prelude", "family_of"]

#: The family modules, in the order of the documentation and the benchmark.
MODULES = ("sgd", "rmsprop", "adam", "adagrad", "adamax", "nadam", "radam", "adadelta",
           "lion", "lamb")

#: Family name -> :class:`Family`.
FAMILIES: dict[str, Family] = {}
#: Optimizer class name -> class.
OPTIMIZERS: "dict[str, type[Optimizer]]" = {}


def _register():
    from ..optimizer import Optimizer
    for module_name in MODULES:
        mod = importlib.import_module(f".{module_name}", __name__)
        fam = mod.FAMILY
        if fam.name != module_name:  # the backends find a family's loops by its name
            raise ImportError(f"family {fam.name!r} must live in families/{fam.name}.py, "
                              f"not {module_name}.py")
        FAMILIES[fam.name] = fam
        for name in mod.__all__:
            obj = getattr(mod, name)
            if isinstance(obj, type) and issubclass(obj, Optimizer):
                OPTIMIZERS[name] = obj


def family_of(name):
    """The :class:`Family` called ``name``."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise KeyError(f"no optimizer family {name!r}; families: {', '.join(FAMILIES)}") \
            from None


_register()
