"""Mini-batching, as in the course notes, with its bugs fixed."""

from typing import Any

import numpy as np
import numpy.typing as npt

from . import _validate as _v

__all__ = ["random_mini_batches"]


def _examples_last(a: npt.ArrayLike, name: str) -> npt.NDArray[Any]:
    a = np.asarray(a)
    if a.ndim not in (1, 2):
        raise ValueError(f"{name} must be 1-D (m,) or 2-D (features, m) with examples "
                         f"as columns, got shape {a.shape}")
    return a


def random_mini_batches(X: npt.ArrayLike, Y: npt.ArrayLike, mini_batch_size: int = 64,
                        seed: int | None = 0
                        ) -> list[tuple[npt.NDArray[Any], npt.NDArray[Any]]]:
    """Shuffle the examples (columns) of ``X`` and ``Y`` together and cut
    them into mini-batches.

    Returns exactly the batches of the course notes' code for the same
    ``seed`` (which seeds NumPy's legacy generator and shuffles with
    ``permutation``), without touching NumPy's global random state.

    Parameters
    ----------
    X : array_like, shape (n_x, m) or (m,)
        Inputs, one example per column.
    Y : array_like, shape (n_y, m) or (m,)
        Labels; each batch keeps ``Y``'s layout.
    mini_batch_size : int
        Examples per batch, ``>= 1``; the last batch holds the remainder.
    seed : int or None
        Seed of the legacy ``RandomState`` (``None`` draws fresh entropy).

    Returns
    -------
    list of (X_batch, Y_batch)
        ``ceil(m / mini_batch_size)`` batches, none of them empty.
    """
    size = _v.positive_int(mini_batch_size, "mini_batch_size")
    X = _examples_last(X, "X")
    Y = _examples_last(Y, "Y")
    m = X.shape[-1]
    if Y.shape[-1] != m:
        raise ValueError(f"X has {m} examples (columns) but Y has {Y.shape[-1]}")
    # A private RandomState seeded like np.random.seed(seed) draws the same
    # permutation as the notes' global generator, leaving the global one alone.
    permutation = np.random.RandomState(seed).permutation(m)
    shuffled_X = X[..., permutation]
    shuffled_Y = Y[..., permutation]
    return [(shuffled_X[..., k:k + size], shuffled_Y[..., k:k + size])
            for k in range(0, m, size)]
