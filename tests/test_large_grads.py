"""Large gradients: the classes with PyTorch's semantics stay finite wherever
``torch.optim`` does, and match it; every backend stays bitwise equal to the
reference in both rounding orders (PyTorch's and the course's).

The magnitudes are those where the two orders part: in float32 ``g*g``
overflows from ``|g| = 1.8e19`` and ``((1 - beta2) * g) * g`` only from
about 5.8e20 (Adam, ``beta2 = 0.999``), so at 3e19 PyTorch's Adam moves the
parameter where the course's order would make ``exp_avg_sq`` infinite and
leave it; in float64 the same happens at 2e154.  At 1e30 (float32) and 1e160
(float64) every order overflows the squares; centered RMSprop then
subtracts ``grad_avg**2`` from an infinite ``square_avg``: PyTorch's fused
multiply-add keeps it infinite (the parameter stays put), while
``inf - inf`` would turn every parameter to NaN.

Error measure and tolerances as in ``test_torch_parity``: for each tensor,
``max |ours - torch| / max |torch|`` over the elements where torch is
finite, 1e-5 for float32 and 1e-10 for float64.
"""

import numpy as np
import pytest

import fusedoptim as fo
from fusedoptim import _reference as R
from fusedoptim import _validate as V
from fusedoptim.backend import active
from fusedoptim.families import FAMILIES
from helpers import assert_same_or_both_nan, keywords, ours_for_torch

try:
    import torch
except ImportError:  # pragma: no cover - CI installs it
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")

TOL = {np.float32: 1e-5, np.float64: 1e-10}
STEPS = 5
SHAPES = [(), (7,), (33, 5), (300,)]

#: (dtype, gradient magnitude): the orders part (3e19, 2e154), every square
#: overflows (1e30, 1e160), and a float64 magnitude with no overflow at all.
MAGNITUDES = [(np.float32, 3e19), (np.float64, 2e154), (np.float32, 1e30),
              (np.float64, 1e160), (np.float64, 1e30)]
MAG_IDS = [f"{np.dtype(d).name}-{g:g}" for d, g in MAGNITUDES]

#: Our class and torch's arguments (its counterpart, ours and whether it has
#: a fused CPU implementation: the registry's ``cls.torch``).
CASES = {
    "sgd-momentum": ("SGD", dict(lr=1e-2, momentum=0.9)),
    "sgd-nesterov-wd": ("SGD", dict(lr=1e-2, momentum=0.9, nesterov=True, weight_decay=0.01)),
    "sgd-dampening-maximize": ("SGD", dict(lr=1e-2, momentum=0.5, dampening=0.3,
                                           maximize=True)),
    "adam": ("Adam", dict(lr=1e-3)),
    "adam-amsgrad-wd-maximize": ("Adam", dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=0.05,
                                              amsgrad=True, maximize=True)),
    "adamw": ("AdamW", dict(lr=1e-3)),
    "adamw-amsgrad": ("AdamW", dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
    "rmsprop": ("RMSProp", dict(lr=1e-3)),
    "rmsprop-centered": ("RMSProp", dict(lr=1e-3, centered=True)),
    "rmsprop-momentum": ("RMSProp", dict(lr=1e-3, momentum=0.9)),
    "rmsprop-centered-momentum": ("RMSProp", dict(lr=1e-3, centered=True, momentum=0.9)),
    "rmsprop-all": ("RMSProp", dict(lr=1e-3, alpha=0.9, eps=1e-6, centered=True,
                                    momentum=0.9, weight_decay=0.01, maximize=True)),
    "adagrad": ("Adagrad", dict(lr=1e-2)),
    "adagrad-all": ("Adagrad", dict(lr=5e-2, lr_decay=1e-3, weight_decay=0.05,
                                    initial_accumulator_value=0.5, maximize=True)),
}
IMPLS = [(case, impl) for case, (cls, _kw) in CASES.items()
         for impl in (["single", "fused"] if fo.OPTIMIZERS[cls].torch.fused else ["single"])]


def _data(dtype, mag):
    """Parameters of order 1 and gradients of magnitude ``mag`` whose
    elements spread over a factor 4 on both sides of it, signs mixed (so
    some squares overflow in one order and not in the other)."""
    rng = np.random.default_rng([int(np.log10(mag)), np.dtype(dtype).itemsize])
    params = {f"p{i}": rng.standard_normal(s).astype(dtype) for i, s in enumerate(SHAPES)}
    grads = []
    for _ in range(STEPS):
        g = {}
        for k, a in params.items():
            u = rng.uniform(-2.0, 2.0, a.shape)
            sign = np.where(rng.random(a.shape) < 0.5, -1.0, 1.0)
            g[k] = np.asarray(sign * mag * 2.0 ** u, dtype=dtype)
        grads.append(g)
    return params, grads


def _run_torch(case, impl, dtype, mag):
    cls, kw = CASES[case]
    params, grads = _data(dtype, mag)
    tensors = [torch.tensor(a) for a in params.values()]
    for x in tensors:
        x.requires_grad_(True)
    extra = {"fused": True} if impl == "fused" else {"foreach": False}
    opt = getattr(torch.optim, fo.OPTIMIZERS[cls].torch.name)(tensors, **kw, **extra)
    for g in grads:
        for x, gk in zip(tensors, g.values()):
            x.grad = torch.tensor(gk)
        opt.step()
    return [x.detach().numpy() for x in tensors]


def _run_ours(case, dtype, mag):
    cls, kw = CASES[case]
    params, grads = _data(dtype, mag)
    opt = fo.OPTIMIZERS[cls](params, **ours_for_torch(fo.OPTIMIZERS[cls], kw))
    with np.errstate(all="ignore"):  # the numpy backend overflows the squares
        for g in grads:
            opt.step(g)
    return list(params.values())


@needs_torch
@pytest.mark.parametrize("dtype,mag", MAGNITUDES, ids=MAG_IDS)
@pytest.mark.parametrize("case,impl", IMPLS, ids=[f"{c}-{i}" for c, i in IMPLS])
def test_finite_where_torch_is_and_close(backend, case, impl, dtype, mag):
    want = _run_torch(case, impl, dtype, mag)
    got = _run_ours(case, dtype, mag)
    for i, (a, b) in enumerate(zip(got, want)):
        fin = np.isfinite(b)
        assert np.isfinite(a[fin]).all(), \
            f"p{i}: {np.sum(~np.isfinite(a[fin]))} non-finite where torch is finite"
        if not fin.any():
            continue
        scale = np.max(np.abs(b[fin]))
        err = np.max(np.abs(a[fin] - b[fin])) / scale if scale else np.max(np.abs(a[fin]))
        assert err <= TOL[dtype], f"p{i}: relative error {err:.3g}"


@needs_torch
def test_the_issues_cases_are_finite_in_torch():
    """The magnitudes above are those where torch is finite (else the test
    above would check nothing): Adam at 3e19 / 2e154 moves every parameter,
    centered RMSprop with momentum at 1e30 (float32) leaves them finite."""
    for dtype, mag in [(np.float32, 3e19), (np.float64, 2e154)]:
        params, _ = _data(dtype, mag)
        moved = _run_torch("adam", "fused", dtype, mag)
        for a, b in zip(moved, params.values()):
            assert np.isfinite(a).all() and (a != b).all()
    for case in ("rmsprop-centered-momentum", "rmsprop-all"):
        assert all(np.isfinite(a).all()
                   for a in _run_torch(case, "single", np.float32, 1e30))


@pytest.mark.parametrize("dtype,mag", [(np.float32, 3e19), (np.float64, 2e154)],
                         ids=["float32", "float64"])
def test_course_order_kept_by_the_course_functions(dtype, mag):
    """The course's Adam keeps the course's order (and so its overflow),
    bit for bit: ``update_parameters_with_adam`` is the reference with
    ``torch_order=False``, the class the same with ``torch_order=True``."""
    params, grads = _data(dtype, mag)
    p_course = {k: a.copy() for k, a in params.items()}
    v, s = fo.initialize_adam(p_course)
    p_class = {k: a.copy() for k, a in params.items()}
    opt = fo.Adam(p_class, lr=0.01)
    p_ref = {True: {k: a.copy() for k, a in params.items()},
             False: {k: a.copy() for k, a in params.items()}}
    states = {o: (("m", {k: np.zeros_like(a) for k, a in params.items()}),
                  ("v", {k: np.zeros_like(a) for k, a in params.items()}), V.ABSENT)
              for o in p_ref}
    with np.errstate(all="ignore"):
        for t, g in enumerate(grads, start=1):
            fo.update_parameters_with_adam(p_course, {"d" + k: a for k, a in g.items()}, v, s,
                                           t, learning_rate=0.01)
            opt.step(g)
            for order, p in p_ref.items():
                R.adam(p, g, states[order], V.NAMED, lr=0.01, beta1=0.9,
                       beta2=0.999, eps=1e-8, bc1=1 - 0.9 ** t, bc2=1 - 0.999 ** t,
                       weight_decay=0.0, decoupled=False, maximize=False, amsgrad=False,
                       torch_order=order, gscale=1.0)
    for k in params:
        assert_same_or_both_nan(p_course[k], p_ref[False][k], k)
        assert_same_or_both_nan(p_class[k], p_ref[True][k], k)
    # The orders part here: the course's overflows, PyTorch's does not.
    assert any(np.isinf(a).any() for a in s.values())
    assert all(np.isfinite(a).all() for a in opt.state["exp_avg_sq"].values())
    assert all(np.isfinite(a).all() for a in p_class.values())


# --- every backend against the reference, both orders, large gradients --------------

#: Every registered family and flag combination (both rounding orders: adam's
#: ``torch_order``, rmsprop's ``eps_inside``), with the gradient scale and L2
#: decay on and off.
FLAG_CASES = [(name, dict(zip(fam.flags, values)))
              for name, fam in FAMILIES.items()
              for values in np.ndindex(*([2] * len(fam.flags)))]
FLAG_IDS = [f"{n}-" + ("+".join(k for k, v in f.items() if v) or "plain")
            for n, f in FLAG_CASES]
#: The fast path (no gradient prelude) and the general one.
SCALARS = [dict(gscale=1.0, weight_decay=0.0), dict(gscale=0.37, weight_decay=0.0125)]


def _family_run(fn, family, flags, scalars, dtype, mag):
    params, grads = _data(dtype, mag)
    rng = np.random.default_rng(7)
    on = family.active_slots(keywords(family, flags, scalars, 1))
    states = []
    for slot, used in zip(family.slots, on):
        if not used:
            states.append(V.ABSENT)
            continue
        st = {}
        for k, a in params.items():
            x = rng.standard_normal(a.shape)
            st[k] = np.asarray(np.abs(x) + 0.5 if slot in ("sq", "v", "vmax", "sum") else x,
                               dtype=dtype)
        states.append((slot, st))
    states = tuple(states)
    with np.errstate(all="ignore"):
        for t in range(1, STEPS + 1):
            fn(params, grads[t - 1], states, V.NAMED,
               **keywords(family, {k: bool(v) for k, v in flags.items()}, scalars, t))
    out = [(f"params[{k!r}]", a) for k, a in params.items()]
    out += [(f"{slot}[{k!r}]", a) for slot, d in states if d is not None for k, a in d.items()]
    return out


@pytest.mark.parametrize("dtype,mag", MAGNITUDES[:4], ids=MAG_IDS[:4])
@pytest.mark.parametrize("scalars", SCALARS, ids=[f"gs{s['gscale']}-wd{s['weight_decay']}"
                                                  for s in SCALARS])
@pytest.mark.parametrize("name,flags", FLAG_CASES, ids=FLAG_IDS)
def test_backends_match_reference_at_large_gradients(backend, threads, low_threshold, name,
                                                     flags, scalars, dtype, mag):
    family = FAMILIES[name]
    got = _family_run(getattr(active(), name), family, flags, scalars, dtype, mag)
    want = _family_run(getattr(R, name), family, flags, scalars, dtype, mag)
    for (what, a), (_, b) in zip(got, want):
        assert_same_or_both_nan(a, b, what)
