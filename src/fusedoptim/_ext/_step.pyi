# Type stub of the compiled module shared by every family's step.
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from ._pool import (  # the pool's hooks, re-exported
    _pool_judge as _pool_judge,
    _pool_policy as _pool_policy,
    _pool_workers as _pool_workers,
    _set_ftz_daz as _set_ftz_daz,
    _set_spin_ns as _set_spin_ns,
)

DEBUG_BUILD: bool
HAVE_THREADS: bool

def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def simd() -> str: ...
def _set_simd(on: bool) -> bool: ...
def _set_simd_isa(name: str) -> str: ...
def _set_parallel_min(n: int) -> int: ...
def _split_start(total: int, parts: int, k: int) -> int: ...
def grad_sumsq(
    params: Mapping[str, npt.NDArray[np.floating[Any]]],
    grads: Mapping[str, npt.NDArray[np.floating[Any]]],
    mode: int,
) -> float: ...
