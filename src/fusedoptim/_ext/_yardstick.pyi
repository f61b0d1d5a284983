# Type stub of the benchmark's copy kernel (outside the production path).
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

def copy_like(
    rw: Sequence[npt.NDArray[np.floating[Any]]], ro: Sequence[npt.NDArray[np.floating[Any]]]
) -> None: ...
