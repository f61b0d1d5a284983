"""Parity with PyTorch (CI installs torch==2.13.0, the CPU build).

The torch counterpart of each optimizer class (the ``torch.optim`` class and
how our hyperparameters map to its keyword arguments) is declared in the
registry, ``fusedoptim.OPTIMIZERS[name].torch`` (``fusedoptim.families.Torch``),
and ``TABLE`` is derived from it; ``CASES_BY_CLASS`` holds the cases, in
torch's keyword arguments.  A class without a counterpart computing its steps
is in ``NO_COUNTERPART`` with the registry's reason;
``test_every_optimizer_is_in_the_table`` keeps the two complete.

Each case runs 500 steps of one of our optimizers and of the torch optimizer
with the same settings, from the same random parameters and gradients, over
tensors of several shapes (0-d and Fortran-ordered included), and compares
the final parameters.  The reference is torch's single-tensor
implementation (``foreach=False``), and its ``fused=True`` implementation
where torch has one (Adam, AdamW, SGD, Adagrad).

Error measure: for each tensor, ``max |ours - torch| / max |torch|``.
Elementwise relative error is not used: entries that cross zero during
training have no meaningful relative error (the two libraries round a few
operations differently, e.g. torch's ``lerp`` and ``addcdiv`` against the
reference's ``beta * m + (1 - beta) * g`` and ``(lr * m) / d``).
Tolerances: 1e-10 for float64, 1e-5 for float32.
"""

import inspect

import numpy as np
import pytest

import fusedoptim as fo
from helpers import ours_for_torch, torch_defaults

try:
    import torch
except ImportError:  # pragma: no cover - CI installs it
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")

STEPS = 500
SHAPES = [(3, 4), (17,), (5, 6, 7), (), (64, 33), "F"]
TOL = {np.float64: 1e-10, np.float32: 1e-5}


#: The cases of every class whose registry entry declares a torch counterpart
#: that can compute its steps (``fo.OPTIMIZERS[cls].torch``): case id ->
#: torch's keyword arguments.  Our arguments are derived from them through
#: the registry's mapping (:func:`_our_kwargs`).
CASES_BY_CLASS = {
    "GD": {
        "gd": dict(lr=1e-2),
    },
    "SGD": {
        "sgd": dict(lr=1e-2),
        "sgd-momentum": dict(lr=1e-2, momentum=0.9),
        "sgd-dampening": dict(lr=1e-2, momentum=0.9, dampening=0.5),
        "sgd-nesterov": dict(lr=1e-2, momentum=0.9, nesterov=True),
        "sgd-wd": dict(lr=1e-2, momentum=0.9, weight_decay=0.01),
        "sgd-maximize": dict(lr=1e-2, momentum=0.5, maximize=True),
    },
    "RMSProp": {
        "rmsprop": dict(lr=1e-3),
        "rmsprop-centered": dict(lr=1e-3, centered=True),
        "rmsprop-momentum": dict(lr=1e-3, momentum=0.9),
        "rmsprop-wd": dict(lr=1e-3, weight_decay=0.01),
        "rmsprop-all": dict(lr=1e-3, alpha=0.9, eps=1e-6, centered=True, momentum=0.9,
                            weight_decay=0.01, maximize=True),
    },
    "Adam": {
        "adam": dict(lr=1e-3),
        "adam-wd": dict(lr=1e-3, weight_decay=0.1),
        "adam-amsgrad": dict(lr=1e-3, amsgrad=True),
        "adam-maximize": dict(lr=1e-3, maximize=True),
        "adam-all": dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05,
                         amsgrad=True, maximize=True),
    },
    "AdamW": {
        "adamw": dict(lr=1e-3),
        "adamw-amsgrad": dict(lr=1e-2, weight_decay=0.1, amsgrad=True),
    },
    "Adagrad": {
        "adagrad": dict(lr=1e-2),
        "adagrad-lr_decay": dict(lr=1e-1, lr_decay=1e-2),
        "adagrad-wd": dict(lr=1e-2, weight_decay=0.01),
        "adagrad-initial": dict(lr=1e-2, initial_accumulator_value=0.1),
        "adagrad-eps": dict(lr=1e-2, eps=1e-3),
        "adagrad-maximize": dict(lr=1e-2, maximize=True),
        "adagrad-all": dict(lr=5e-2, lr_decay=1e-3, weight_decay=0.05,
                            initial_accumulator_value=0.5, eps=1e-6, maximize=True),
    },
    "Adamax": {
        "adamax": dict(lr=2e-3),
        "adamax-wd": dict(lr=2e-3, weight_decay=0.05),
        "adamax-maximize": dict(lr=2e-3, maximize=True),
        "adamax-all": dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05,
                           maximize=True),
    },
    "NAdam": {
        "nadam": dict(lr=2e-3),
        "nadam-wd": dict(lr=2e-3, weight_decay=0.05),
        "nadam-decoupled": dict(lr=2e-3, weight_decay=0.1, decoupled_weight_decay=True),
        "nadam-momentum_decay": dict(lr=2e-3, momentum_decay=0.02),
        "nadam-maximize": dict(lr=2e-3, maximize=True),
        "nadam-all": dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05,
                          momentum_decay=1e-3, decoupled_weight_decay=True, maximize=True),
    },
    "RAdam": {
        "radam": dict(lr=1e-3),
        "radam-wd": dict(lr=1e-3, weight_decay=0.05),
        "radam-decoupled": dict(lr=1e-3, weight_decay=0.1, decoupled_weight_decay=True),
        "radam-maximize": dict(lr=1e-3, maximize=True),
        # beta2 0.9: rho_inf = 19, rectified from step 3 on (default 0.999: step 6)
        "radam-all": dict(lr=1e-2, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.05,
                          decoupled_weight_decay=True, maximize=True),
    },
    "Adadelta": {
        "adadelta": dict(),
        "adadelta-rho": dict(lr=0.5, rho=0.5),
        "adadelta-wd": dict(lr=1.0, weight_decay=0.05),
        "adadelta-eps": dict(lr=1.0, eps=1e-3),
        "adadelta-maximize": dict(lr=1.0, maximize=True),
        "adadelta-all": dict(lr=0.1, rho=0.95, eps=1e-4, weight_decay=0.05, maximize=True),
    },
}

#: Class name -> its torch counterpart (``fusedoptim.families.Torch``: the
#: ``torch.optim`` class, the keyword mapping, ``fused``), from the registry.
TABLE = {cls: fo.OPTIMIZERS[cls].torch for cls in CASES_BY_CLASS}

#: Classes with no torch counterpart computing their steps, and why (the
#: registry's ``Torch.differs``; Lion and LAMB are tested against their
#: formulas and optax's in tests/test_lion_lamb.py).
NO_COUNTERPART = {name: (c.torch.differs if c.torch is not None else f"torch.optim has no {name}")
                  for name, c in fo.OPTIMIZERS.items()
                  if c.torch is None or c.torch.same_when is None}

#: The classes whose registry entry names a torch counterpart (the bench's
#: torch rows), exact or not.
WITH_COUNTERPART = [name for name, c in fo.OPTIMIZERS.items() if c.torch is not None]

CASES = {case: (cls, kw) for cls, cases in CASES_BY_CLASS.items() for case, kw in cases.items()}
IMPLS = [(case, impl) for case, (cls, _kw) in CASES.items()
         for impl in (["single", "fused"] if TABLE[cls].fused else ["single"])]


def _our_kwargs(cls, kw):
    """Our arguments for a case (``helpers.ours_for_torch``)."""
    return ours_for_torch(fo.OPTIMIZERS[cls], kw)


def test_every_optimizer_is_in_the_table():
    """A class whose registry entry declares a torch counterpart computing
    its steps needs cases here; every other class says why in the registry.
    Each class declares its own ``torch`` (never inherited by mistake)."""
    assert not set(TABLE) & set(NO_COUNTERPART)
    assert set(TABLE) | set(NO_COUNTERPART) == set(fo.OPTIMIZERS)
    for cls, cases in CASES_BY_CLASS.items():
        assert cases, cls
        assert TABLE[cls] is not None and TABLE[cls].same_when is not None, cls
    for cls, why in NO_COUNTERPART.items():
        assert why, cls
    for name, c in fo.OPTIMIZERS.items():
        assert "torch" in vars(c), name
    assert len(CASES) == sum(len(r) for r in CASES_BY_CLASS.values())  # case ids are unique


#: Classes whose positional order is not torch's counterpart's, and why.
OWN_POSITIONAL_ORDER = {"RMSProp": "the course's order: eps_inside_sqrt fourth"}


@needs_torch
@pytest.mark.parametrize("cls", sorted(c for c in WITH_COUNTERPART if c not in OWN_POSITIONAL_ORDER
                                        and fo.OPTIMIZERS[c].torch.same_when is not None))
def test_positional_arguments_are_in_torchs_order(cls):
    """A torch call with positional hyperparameters binds them to ours
    (classes that can compute torch's steps): torch's positional arguments,
    up to the first one we do not take (``foreach``), are ours in the same
    places."""
    spec = fo.OPTIMIZERS[cls].torch

    def positional(f):
        return [p.name for p in inspect.signature(f).parameters.values()
                if p.kind == p.POSITIONAL_OR_KEYWORD][1:]

    ours = positional(fo.OPTIMIZERS[cls])
    theirs = []
    for name in positional(getattr(torch.optim, spec.name)):
        if name not in spec.keywords:
            break
        theirs.append(spec.keywords[name])
    assert ours[:len(theirs)] == theirs
    # and nothing after them: torch's next positional argument (foreach)
    # must not bind to one of ours (it did to maximize: an ascent)
    assert ours == theirs or cls == "RMSProp", ours[len(theirs):]
    ours_all = inspect.signature(fo.OPTIMIZERS[cls]).parameters
    assert "maximize" not in ours_all \
        or ours_all["maximize"].kind == inspect.Parameter.KEYWORD_ONLY


@needs_torch
@pytest.mark.parametrize("cls", WITH_COUNTERPART)
def test_table_rows_name_torch_optimizers_and_map_to_our_arguments(cls):
    """The registry's counterpart names a torch.optim class and keywords
    that it and ours take; every case maps to our arguments and back (the
    bench builds its torch rows with ``Torch.kwargs``)."""
    spec = fo.OPTIMIZERS[cls].torch
    assert isinstance(getattr(torch.optim, spec.name), type)
    theirs = inspect.signature(getattr(torch.optim, spec.name)).parameters
    ours = inspect.signature(fo.OPTIMIZERS[cls]).parameters
    assert set(spec.keywords) <= set(theirs)
    assert set(spec.keywords.values()) | set(spec.same_when or {}) <= set(ours)
    assert ("fused" in theirs) >= spec.fused
    assert bool(spec.differs) == (spec.same_when != {})
    for case, kw in CASES_BY_CLASS.get(cls, {}).items():
        hp = _our_kwargs(cls, kw)
        fo.OPTIMIZERS[cls]({"w": np.zeros(3)}, **hp)  # accepted by ours
        assert spec.kwargs(hp) == {**torch_defaults(fo.OPTIMIZERS[cls]), **kw}, case
        assert spec.difference(hp) == "", case


def _ours(case, params):
    cls, kw = CASES[case]
    return fo.OPTIMIZERS[cls](params, **_our_kwargs(cls, kw))


_data_cache = {}


def _data(dtype):
    """Fresh copies of the initial parameters, and the (shared, read-only)
    gradients of every step."""
    if dtype not in _data_cache:
        _data_cache[dtype] = _make_data(dtype)
    params, grads = _data_cache[dtype]
    return {k: a.copy(order="K") for k, a in params.items()}, grads


def _make_data(dtype):
    rng = np.random.default_rng(2024)
    params = {}
    for i, shape in enumerate(SHAPES):
        if shape == "F":
            params[f"p{i}"] = np.asfortranarray(rng.standard_normal((7, 9)).astype(dtype))
        else:
            params[f"p{i}"] = np.asarray(rng.standard_normal(shape).astype(dtype))
    grads = [{k: rng.standard_normal(a.shape).astype(dtype) for k, a in params.items()}
             for _ in range(STEPS)]
    return params, grads


_torch_cache = {}


def _grad_like(x, g):
    """``g`` as a tensor with the strides of parameter ``x``.  Autograd
    always gives a gradient its parameter's layout, and torch's fused CPU
    kernels rely on it: handed a C-ordered gradient for a Fortran-ordered
    parameter, fused SGD/Adam 2.13 silently apply it to the wrong elements
    (fusedoptim copies such a gradient into the parameter's layout)."""
    out = torch.empty_like(x)
    out.copy_(torch.from_numpy(g))
    return out


def _torch_run(case, impl, dtype):
    key = (case, impl, dtype)
    if key not in _torch_cache:
        cls, kw = CASES[case]
        params, grads = _data(dtype)
        tensors = [torch.tensor(a) for a in params.values()]
        for x in tensors:
            x.requires_grad_(True)
        flags = {"fused": True} if impl == "fused" else {"foreach": False}
        # torch keeps its scalar state (NAdam's mu_product) in the default
        # dtype, float32 unless set: in float64 for a float64 run, as ours is.
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64 if dtype == np.float64 else torch.float32)
        try:
            opt = getattr(torch.optim, TABLE[cls].name)(tensors, **kw, **flags)
            for g in grads:
                for x, gk in zip(tensors, g.values()):
                    x.grad = _grad_like(x, gk)
                opt.step()
        finally:
            torch.set_default_dtype(default)
        _torch_cache[key] = {k: x.detach().numpy() for k, x in zip(params, tensors)}
    return _torch_cache[key]


def max_scaled_error(ours, ref):
    worst = 0.0
    for k, b in ref.items():
        scale = float(np.max(np.abs(b)))
        worst = max(worst, float(np.max(np.abs(ours[k].astype(np.float64) - b))) / scale)
    return worst


_ours_cache = {}


def _ours_run(backend, case, dtype):
    """Our final parameters, computed once for every torch implementation
    compared with them (small: the model holds a few thousand elements)."""
    key = (backend, case, dtype)
    if key not in _ours_cache:
        params, grads = _data(dtype)
        opt = _ours(case, params)
        for g in grads:
            opt.step(g)
        _ours_cache[key] = params
    return _ours_cache[key]


@needs_torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case,impl", IMPLS, ids=[f"{c}-{i}" for c, i in IMPLS])
def test_matches_torch(backend, case, impl, dtype):
    params = _ours_run(backend, case, dtype)
    ref = _torch_run(case, impl, dtype)
    err = max_scaled_error(params, ref)
    assert err <= TOL[dtype], f"{case} {impl} {dtype.__name__}: {err:.3g}"
    # not trivially equal: the parameters moved by much more than the error
    moved = max_scaled_error(params, _data(dtype)[0])
    assert moved > 100 * max(err, TOL[dtype] / 1000)


@needs_torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("max_norm", [0.5, 5.0])
def test_clipping_matches_torch_clip_grad_norm(backend, dtype, max_norm):
    params, grads = _data(dtype)
    grads = grads[:50]
    opt = fo.Adam(params, lr=1e-2, max_grad_norm=max_norm)
    tensors = [torch.tensor(a) for a in _data(dtype)[0].values()]
    topt = torch.optim.Adam(tensors, lr=1e-2, foreach=False)
    norms = []
    for g in grads:
        opt.step(g)
        for x, gk in zip(tensors, g.values()):
            x.grad = _grad_like(x, gk)
        norms.append(float(torch.nn.utils.clip_grad_norm_(tensors, max_norm, foreach=False)))
        topt.step()
        assert opt.last_grad_norm == pytest.approx(norms[-1], rel=TOL[dtype])
    err = max_scaled_error(params, {k: x.detach().numpy() for k, x in zip(params, tensors)})
    assert err <= TOL[dtype]
    assert min(norms) > max_norm  # every step was clipped


# torch's addcmul_(g, g, value=1-beta) rounds (1-beta)*g first: squares that
# overflow float32 as g*g stay finite there, and must stay finite here.
LARGE_GRADIENT = {
    "NAdam": (1e20, "exp_avg_sq", {}),
    "RAdam": (1e20, "exp_avg_sq", {}),
    "Adadelta": (3e19, "square_avg", {"lr": 1e-3}),
}


@needs_torch
@pytest.mark.parametrize("cls", list(LARGE_GRADIENT))
def test_large_gradient_squares_stay_finite_as_in_torch(backend, cls):
    size, slot, kw = LARGE_GRADIENT[cls]
    g = np.array([size, -size, 1.0], dtype=np.float32)
    with np.errstate(over="ignore"):
        assert not np.isfinite(g * g).all()
    p = {"w": np.array([0.5, -0.5, 0.25], dtype=np.float32)}
    opt = fo.OPTIMIZERS[cls](p, **kw)
    x = torch.tensor(p["w"], requires_grad=True)
    topt = getattr(torch.optim, TABLE[cls].name)([x], foreach=False, **kw)
    for _ in range(3):
        with np.errstate(all="ignore"):
            opt.step({"w": g})
        x.grad = torch.tensor(g)
        topt.step()
    theirs = topt.state[x][slot].numpy()
    ours = opt.state[slot]["w"]
    assert np.isfinite(theirs).all() and np.isfinite(ours).all()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    np.testing.assert_allclose(p["w"], x.detach().numpy(), rtol=1e-5, atol=1e-6)
