# Type stub of the compiled (``cython``) backend: the surface Python code uses.
# Each registered family's step is exposed under the family's name with one
# keyword-only signature shared by every backend (see fusedoptim.families),
# and its step over several parameter groups under ``<name>_groups``.
# Families registered after this stub was written are found at run time
# (``__getattr__`` below) and typed as ``Any``.
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

Arrays = Mapping[str, npt.NDArray[np.floating[Any]]]
#: ``(label, dict of state arrays)``, or ``("", None)`` for a slot that is off.
States = Sequence[tuple[str, Arrays | None]]
#: ``<family>_groups``: group ``k``'s keywords (the step's, but ``gscale``), and
#: its number of tensors (consecutive in ``params`` order).
Groups = tuple[dict[str, float | bool], ...]
Sizes = tuple[int, ...]

DEBUG_BUILD: bool
HAVE_THREADS: bool

def gather(
    params: Arrays, grads: Arrays, states: States, mode: int
) -> list[tuple[npt.NDArray[np.floating[Any]], ...]]: ...
def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def simd() -> str: ...
def grad_sumsq(params: Arrays, grads: Arrays, mode: int) -> float: ...
def _set_simd(on: bool) -> bool: ...
def _set_simd_isa(name: str) -> str: ...
def _set_parallel_min(n: int) -> int: ...
def sgd(
    params: Arrays, grads: Arrays, states: States, mode: int, *, lr: float, momentum: float,
    dampening: float, weight_decay: float, nesterov: bool, first: bool, maximize: bool,
    has_buf: bool, gscale: float,
) -> None: ...
def rmsprop(
    params: Arrays, grads: Arrays, states: States, mode: int, *, lr: float, alpha: float,
    eps: float, momentum: float, weight_decay: float, eps_inside: bool, maximize: bool,
    centered: bool, has_buf: bool, gscale: float,
) -> None: ...
def adam(
    params: Arrays, grads: Arrays, states: States, mode: int, *, lr: float, beta1: float,
    beta2: float, eps: float, bc1: float, bc2: float, weight_decay: float, decoupled: bool,
    maximize: bool, amsgrad: bool, torch_order: bool, gscale: float,
) -> None: ...
def adagrad(
    params: Arrays, grads: Arrays, states: States, mode: int, *, lr: float, eps: float,
    weight_decay: float, maximize: bool, gscale: float,
) -> None: ...
def adamax(
    params: Arrays, grads: Arrays, states: States, mode: int, *, lr: float, beta1: float,
    beta2: float, eps: float, bc1: float, weight_decay: float, maximize: bool, gscale: float,
) -> None: ...
def nadam(
    params: Arrays, grads: Arrays, states: States, mode: int, *, lr: float, beta1: float,
    beta2: float, eps: float, bc2: float, lr_g: float, lr_m: float, weight_decay: float,
    decoupled: bool, maximize: bool, gscale: float,
) -> None: ...
def radam(
    params: Arrays, grads: Arrays, states: States, mode: int, *, lr: float, beta1: float,
    beta2: float, eps: float, bc1: float, bc2_sqrt: float, rect: float, weight_decay: float,
    decoupled: bool, maximize: bool, rectified: bool, gscale: float,
) -> None: ...
def adadelta(
    params: Arrays, grads: Arrays, states: States, mode: int, *, lr: float, rho: float,
    eps: float, weight_decay: float, maximize: bool, gscale: float,
) -> None: ...
def lion(
    params: Arrays, grads: Arrays, states: States, mode: int, *, lr: float, beta1: float,
    beta2: float, weight_decay: float, maximize: bool, gscale: float,
) -> None: ...
def lamb(
    params: Arrays, grads: Arrays, states: States, mode: int, *, lr: float, beta1: float,
    beta2: float, eps: float, bc1: float, bc2: float, weight_decay: float, maximize: bool,
    gscale: float,
) -> None: ...
def sgd_groups(
    params: Arrays, grads: Arrays, states: States, mode: int, groups: Groups,
    sizes: Sizes, *, gscale: float,
) -> None: ...
def rmsprop_groups(
    params: Arrays, grads: Arrays, states: States, mode: int, groups: Groups,
    sizes: Sizes, *, gscale: float,
) -> None: ...
def adam_groups(
    params: Arrays, grads: Arrays, states: States, mode: int, groups: Groups,
    sizes: Sizes, *, gscale: float,
) -> None: ...
def adagrad_groups(
    params: Arrays, grads: Arrays, states: States, mode: int, groups: Groups,
    sizes: Sizes, *, gscale: float,
) -> None: ...
def adamax_groups(
    params: Arrays, grads: Arrays, states: States, mode: int, groups: Groups,
    sizes: Sizes, *, gscale: float,
) -> None: ...
def nadam_groups(
    params: Arrays, grads: Arrays, states: States, mode: int, groups: Groups,
    sizes: Sizes, *, gscale: float,
) -> None: ...
def radam_groups(
    params: Arrays, grads: Arrays, states: States, mode: int, groups: Groups,
    sizes: Sizes, *, gscale: float,
) -> None: ...
def adadelta_groups(
    params: Arrays, grads: Arrays, states: States, mode: int, groups: Groups,
    sizes: Sizes, *, gscale: float,
) -> None: ...
def lion_groups(
    params: Arrays, grads: Arrays, states: States, mode: int, groups: Groups,
    sizes: Sizes, *, gscale: float,
) -> None: ...
def lamb_groups(
    params: Arrays, grads: Arrays, states: States, mode: int, groups: Groups,
    sizes: Sizes, *, gscale: float,
) -> None: ...
def __getattr__(name: str) -> Any: ...
