"""What the optimizer-class tests share: the configurations every stepping
test runs (one per class and option), and making, copying and running models."""

import numpy as np

import fusedoptim as fo
from helpers import assert_bitwise


DTYPES = [np.float32, np.float64]

CONFIGS = [
    (fo.GD, dict(lr=0.1)),
    (fo.Momentum, dict(lr=0.1, beta=0.8)),
    (fo.SGD, dict(lr=0.05)),
    (fo.SGD, dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    (fo.SGD, dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True)),
    (fo.RMSProp, dict()),
    (fo.RMSProp, dict(lr=0.01, beta=0.99, eps_inside_sqrt=False, centered=True,
                      momentum=0.9, weight_decay=0.01, maximize=True)),
    (fo.Adam, dict(lr=0.01)),
    (fo.Adam, dict(lr=0.01, weight_decay=0.1, amsgrad=True, maximize=True)),
    (fo.AdamW, dict(lr=0.01, amsgrad=True)),
    (fo.Adagrad, dict(lr=0.1)),
    (fo.Adagrad, dict(lr=0.1, lr_decay=0.05, weight_decay=0.01, initial_accumulator_value=0.2,
                      eps=1e-6, maximize=True)),
    (fo.Adamax, dict(lr=0.01)),
    (fo.Adamax, dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.05, maximize=True)),
    (fo.NAdam, dict(lr=0.01)),
    (fo.NAdam, dict(lr=0.01, weight_decay=0.1, momentum_decay=0.01,
                    decoupled_weight_decay=True, maximize=True)),
    (fo.RAdam, dict(lr=0.01)),  # rectified from step 6 on: resumed across the switch
    (fo.RAdam, dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.1,
                    decoupled_weight_decay=True, maximize=True)),
    (fo.Adadelta, dict()),
    (fo.Adadelta, dict(lr=0.5, rho=0.8, eps=1e-4, weight_decay=0.01, maximize=True)),
]
# every other class (one added later, Lion, LAMB) with its defaults and lr
CONFIGS += [(cls, dict(lr=0.01)) for cls in fo.OPTIMIZERS.values()
            if cls not in {c for c, _kw in CONFIGS}]
CONFIG_IDS = [f"{cls.__name__}-{i}" for i, (cls, _kw) in enumerate(CONFIGS)]


def make_params(rng, dtype=np.float64, big=False):
    p = {
        "W1": rng.standard_normal((4, 3)).astype(dtype),
        "b1": rng.standard_normal((4, 1)).astype(dtype),
        "F": np.asfortranarray(rng.standard_normal((3, 5)).astype(dtype)),
        "s": np.array(rng.standard_normal(), dtype=dtype),
        "empty": np.zeros((0, 2), dtype=dtype),
    }
    if big:
        p["big"] = rng.standard_normal((300, 301)).astype(dtype)
    return p


def make_grads(params, rng, prefix="d"):
    return {prefix + k: rng.standard_normal(a.shape).astype(a.dtype)
            for k, a in params.items()}


def copy_params(params):
    return {k: a.copy(order="K") for k, a in params.items()}


def run(cls, kw, params, grad_list, **extra):
    opt = cls(params, **kw, **extra)
    for g in grad_list:
        opt.step(g)
    return opt


def assert_same_run(a_params, a_opt, b_params, b_opt):
    for k in a_params:
        assert_bitwise(a_params[k], b_params[k])
    assert a_opt.state.keys() == b_opt.state.keys()
    for label, d in a_opt.state.items():
        for k in d:
            assert_bitwise(d[k], b_opt.state[label][k])
    assert a_opt.t == b_opt.t
