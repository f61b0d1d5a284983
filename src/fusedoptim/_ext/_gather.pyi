# Type stub of the compiled validation.
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

def gather(
    params: Mapping[str, npt.NDArray[np.floating[Any]]],
    grads: Mapping[str, npt.NDArray[np.floating[Any]]],
    states: Sequence[tuple[str, Mapping[str, npt.NDArray[np.floating[Any]]] | None]],
    mode: int,
) -> list[tuple[npt.NDArray[np.floating[Any]], ...]]: ...
