"""What the parameter-group tests share."""

import numpy as np


SHAPES = {"W1": (6, 5), "b1": (6,), "W2": (3, 6), "b2": (3,), "s": ()}


def _data(dtype, steps, seed=7):
    rng = np.random.default_rng(seed)
    params = {k: np.asarray(rng.standard_normal(s), dtype=dtype) for k, s in SHAPES.items()}
    grads = [{k: np.asarray(rng.standard_normal(s), dtype=dtype) for k, s in SHAPES.items()}
             for _ in range(steps)]
    return params, grads
