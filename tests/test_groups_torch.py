"""Parameter groups against PyTorch: two groups, a per-group schedule,
clipping over all groups, hyperparameters changed between steps, a group
added mid-run; and Lion and LAMB groups against one optimizer per group, bit
for bit."""

import numpy as np
import pytest

import fusedoptim as fo
from helpers import from_torch
from groups_common import _data


try:
    import torch
except ImportError:  # pragma: no cover - CI installs it
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")

TOL = {np.float64: 1e-10, np.float32: 1e-5}


def _error(ours, ref):
    """Largest ``max |ours - torch| / max |torch|`` over the tensors."""
    worst = 0.0
    for k, b in ref.items():
        scale = max(float(np.max(np.abs(b))), 1e-300)
        worst = max(worst, float(np.max(np.abs(ours[k].astype(np.float64) - b))) / scale)
    return worst


def _torch_params(params):
    return {k: torch.tensor(a.copy(), requires_grad=True) for k, a in params.items()}


def _set_grads(tp, g):
    for k, x in tp.items():
        x.grad = torch.tensor(g[k].copy())


def _schedule(t):
    return 1e-2 * 0.995 ** t


# --- PyTorch parity -------------------------------------------------------------------


@needs_torch
@pytest.mark.parametrize("beta1, psi", [(0.9, 0.004), (0.0, 0.004), (0.5, 0.0), (0.99, 0.1)])
def test_nadam_mu_product_stops_at_its_fixed_point(beta1, psi):
    """The product stops multiplying where it no longer changes (0, or a
    subnormal k * 2**-1074 once every factor exceeds 1 - 0.5 / k): the in-order product
    bit for bit at every t, and a resume at a huge t costs no t factors."""
    from fusedoptim.families import nadam
    want = 1.0
    n = 80_000 if beta1 > 0.9 else 3000  # past the fixed point (745 / -ln(beta1))
    for t in range(1, n + 1):
        want *= nadam._mu(beta1, psi, t)
        if t % (n // 8) == 0 or t < 5:
            assert fo.NAdam({"w": np.zeros(3)})._mu_product(beta1, psi, t) == want, t
    assert want * nadam._mu(beta1, psi, n + 1) == want < 1e-300  # at the fixed point
    params = {"w": np.ones(3)}
    opt = fo.NAdam(params, betas=(beta1, 0.999), momentum_decay=psi)
    sd = opt.state_dict()
    sd["t"] = 2**62
    opt.load_state_dict(sd)
    opt.step({"w": np.ones(3)})  # was 2**62 Python multiplications
    assert opt._mu_product(beta1, psi, 2**62 + 1) == want


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_adamw_two_groups_schedule_and_clipping_match_torch(backend, dtype):
    """Biases without weight decay, weights on their own schedule, clipping by
    the norm of every gradient: torch.optim.AdamW with the same two groups,
    LambdaLR and clip_grad_norm_ over all parameters, 500 steps."""
    params, grads = _data(dtype, 500)
    tp = _torch_params(params)
    groups = fo.exclude_from_weight_decay(params)
    assert [sorted(g["params"]) for g in groups] == [["W1", "W2"], ["b1", "b2", "s"]]
    groups[0]["lr"] = _schedule
    opt = fo.AdamW(groups, lr=3e-3, weight_decay=0.05, max_grad_norm=1.0)
    topt = torch.optim.AdamW(
        [{"params": [tp["W1"], tp["W2"]], "lr": 1e-2},
         {"params": [tp["b1"], tp["b2"], tp["s"]], "weight_decay": 0.0}],
        lr=3e-3, weight_decay=0.05, foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(topt, [lambda e: 0.995 ** e, lambda e: 1.0])
    clipped = 0
    for g in grads:
        assert opt.current_lrs == pytest.approx([pg["lr"] for pg in topt.param_groups],
                                                rel=1e-15)
        opt.step(g)
        _set_grads(tp, g)
        norm = float(torch.nn.utils.clip_grad_norm_(list(tp.values()), 1.0, foreach=False))
        clipped += norm > 1.0
        assert opt.last_grad_norm == pytest.approx(norm, rel=TOL[dtype])
        topt.step()
        sched.step()
    assert clipped > 400  # clipping is exercised on most steps
    assert opt.last_lrs == [_schedule(499), 3e-3]
    err = _error(params, {k: x.detach().numpy() for k, x in tp.items()})
    assert err <= TOL[dtype], err
    assert _error(params, _data(dtype, 0)[0]) > 1e3 * max(err, 1e-12)  # it moved


# our class -> (torch's settings of group 0, of group 1, its defaults): the
# counterpart and our arguments come from the registry (``cls.torch``).
TWO_GROUPS = {
    "SGD": (dict(momentum=0.9, nesterov=True, dampening=0.0), dict(lr=0.05, weight_decay=0.01),
            dict(lr=0.02, momentum=0.5, dampening=0.1)),
    "Adam": (dict(amsgrad=True, betas=(0.8, 0.99)), dict(lr=0.003, weight_decay=0.02),
             dict(lr=0.01, eps=1e-6)),
    "RMSProp": (dict(centered=True, momentum=0.5), dict(alpha=0.9, weight_decay=0.01),
                dict(lr=0.005, eps=1e-6, alpha=0.99)),
    # torch fills every group's sum with the constructor's initial_accumulator_value
    # (ours takes each group's own), so it is not set per group here.
    "Adagrad": (dict(lr_decay=0.01), dict(lr=0.05, weight_decay=0.01, eps=1e-8),
                dict(lr=0.02, initial_accumulator_value=0.3)),
}


@needs_torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("cls", list(TWO_GROUPS))
def test_two_groups_match_torch(backend, cls, dtype):
    """Two groups whose settings differ, slot-switching flags included
    (Nesterov momentum, AMSGrad, centered RMSprop with momentum in one group
    only), 150 steps against torch with the same param groups."""
    g0, g1, defaults = TWO_GROUPS[cls]
    params, grads = _data(dtype, 150, seed=11)
    tp = _torch_params(params)
    ours = fo.OPTIMIZERS[cls]
    opt = ours([{"params": {k: params[k] for k in ("W1", "b1")}, **from_torch(ours, g0)},
                {"params": {k: params[k] for k in ("W2", "b2", "s")}, **from_torch(ours, g1)}],
               **from_torch(ours, defaults), **ours.torch.same_when)
    topt = getattr(torch.optim, ours.torch.name)(
        [{"params": [tp["W1"], tp["b1"]], **g0}, {"params": [tp["W2"], tp["b2"], tp["s"]], **g1}],
        **defaults, foreach=False)
    for g in grads:
        opt.step(g)
        _set_grads(tp, g)
        topt.step()
    err = _error(params, {k: x.detach().numpy() for k, x in tp.items()})
    assert err <= TOL[dtype], err


@needs_torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_changing_group_settings_between_steps_matches_torch(backend, dtype):
    """lr, weight_decay, betas and amsgrad changed in one group mid-run, and a
    group added mid-run (its bias corrections count its own steps)."""
    params, grads = _data(dtype, 120, seed=3)
    tp = _torch_params(params)
    opt = fo.Adam([{"params": {"W1": params["W1"], "b1": params["b1"]}},
                   {"params": {"W2": params["W2"]}, "lr": 0.002}], lr=0.01)
    topt = torch.optim.Adam([{"params": [tp["W1"], tp["b1"]]},
                             {"params": [tp["W2"]], "lr": 0.002}], lr=0.01, foreach=False)
    for i, g in enumerate(grads):
        if i == 30:
            for groups in (opt.param_groups, topt.param_groups):
                groups[0]["lr"] = 0.004
                groups[1]["weight_decay"] = 0.1
                groups[1]["betas"] = (0.5, 0.9)
        if i == 60:
            opt.add_param_group({"params": {"b2": params["b2"], "s": params["s"]},
                                 "lr": 0.03, "amsgrad": True})
            topt.add_param_group({"params": [tp["b2"], tp["s"]], "lr": 0.03,
                                  "amsgrad": True})
        opt.step({k: v for k, v in g.items() if k in opt.parameters})
        _set_grads(tp, g)
        if i < 60:
            tp["b2"].grad = tp["s"].grad = None
        topt.step()
    assert opt.param_groups[2]["amsgrad"] and len(opt.param_groups) == 3
    err = _error(params, {k: x.detach().numpy() for k, x in tp.items()})
    assert err <= TOL[dtype], err


# The families of #13: (our group 0, group 1, a group added at step 40 (its
# settings are group 1's but lr, so that NAdam's cached mu products are shared
# by two groups at different step counts), defaults), in torch's keywords.
NEW_TWO_GROUPS = {
    "Adamax": (dict(betas=(0.8, 0.99), weight_decay=0.01), dict(lr=0.01, maximize=True),
               dict(lr=0.004, maximize=True), dict(lr=0.002, eps=1e-6)),
    "NAdam": (dict(momentum_decay=0.02, weight_decay=0.05, decoupled_weight_decay=True),
              dict(lr=0.01, weight_decay=0.01), dict(lr=0.004, weight_decay=0.01),
              dict(lr=0.002)),
    # beta2 0.9 in group 0: rectified from step 3 on, group 1 from step 6.
    "RAdam": (dict(betas=(0.8, 0.9), weight_decay=0.05, decoupled_weight_decay=True),
              dict(lr=0.003, weight_decay=0.01), dict(lr=0.02), dict(lr=0.001)),
    "Adadelta": (dict(rho=0.5, weight_decay=0.05), dict(lr=0.5, eps=1e-4),
                 dict(lr=0.2, eps=1e-4), dict(lr=1.0)),
}


@needs_torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("cls", list(NEW_TWO_GROUPS))
def test_new_families_two_groups_and_a_late_group_match_torch(backend, cls, dtype):
    """Adamax, NAdam, RAdam, Adadelta: two groups whose settings differ and a
    third group added at step 40 (its step count starts there), 100 steps
    against torch with the same param groups."""
    g0, g1, g2, defaults = NEW_TWO_GROUPS[cls]
    params, grads = _data(dtype, 100, seed=5)
    tp = _torch_params(params)
    ours = fo.OPTIMIZERS[cls]
    opt = ours([{"params": {k: params[k] for k in ("W1", "b1")}, **from_torch(ours, g0)},
                {"params": {"W2": params["W2"]}, **from_torch(ours, g1)}],
               **from_torch(ours, defaults))
    # torch keeps NAdam's mu_product in the default dtype: that of the run.
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if dtype == np.float64 else torch.float32)
    try:
        topt = getattr(torch.optim, ours.torch.name)([{"params": [tp["W1"], tp["b1"]], **g0},
                                                      {"params": [tp["W2"]], **g1}],
                                                     **defaults, foreach=False)
        for i, g in enumerate(grads):
            if i == 40:
                opt.add_param_group({"params": {"b2": params["b2"], "s": params["s"]},
                                     **from_torch(ours, g2)})
                topt.add_param_group({"params": [tp["b2"], tp["s"]], **g2})
            opt.step({k: v for k, v in g.items() if k in opt.parameters})
            _set_grads(tp, g)
            if i < 40:
                tp["b2"].grad = tp["s"].grad = None
            topt.step()
    finally:
        torch.set_default_dtype(default)
    err = _error(params, {k: x.detach().numpy() for k, x in tp.items()})
    assert err <= TOL[dtype], err
    assert _error(params, _data(dtype, 0, seed=5)[0]) > 1e3 * max(err, 1e-12)  # it moved


def test_nadam_mu_products_of_groups_at_different_steps(monkeypatch):
    """Two groups with the same (beta1, momentum_decay) at different step
    counts: each step's product is the in-order product from 1 (bit for bit)
    and costs one factor per group, not a restart from t = 1."""
    from fusedoptim.families import nadam
    opt = fo.NAdam({"w": np.zeros(3)})
    calls = []
    mu = nadam._mu
    monkeypatch.setattr(nadam, "_mu", lambda *a: calls.append(a) or mu(*a))
    for t in range(1, 60):
        calls.clear()
        for tg in (t + 40, t):
            want = 1.0
            for i in range(1, tg + 1):
                want *= mu(0.9, 0.004, i)
            assert opt._mu_product(0.9, 0.004, tg) == want
        assert t == 1 or len(calls) == 2, t
    assert len(opt._mu_products[(0.9, 0.004)]) == 2


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("cls,g0,g1", [
    ("Lion", dict(betas=(0.8, 0.95), weight_decay=0.1), dict(lr=3e-4, maximize=True)),
    ("LAMB", dict(betas=(0.8, 0.99), weight_decay=0.01), dict(lr=3e-3, eps=1e-4)),
])
def test_lion_lamb_groups_equal_one_optimizer_per_group_bitwise(backend, cls, g0, g1, dtype):
    """Lion and LAMB (no torch counterpart): one optimizer over two groups
    steps bit for bit as two optimizers with one group each (LAMB's trust
    ratio is per tensor, so its first pass must use each tensor's group)."""
    params, grads = _data(dtype, 30, seed=9)
    a = {k: v.copy() for k, v in params.items()}
    first, second = ("W1", "b1", "s"), ("W2", "b2")
    sep = [getattr(fo, cls)({k: a[k] for k in first}, lr=1e-3, **g0),
           getattr(fo, cls)({k: a[k] for k in second}, **{"lr": 1e-3, **g1})]
    opt = getattr(fo, cls)([{"params": {k: params[k] for k in first}, **g0},
                            {"params": {k: params[k] for k in second}, **g1}], lr=1e-3)
    for g in grads:
        opt.step(g)
        for o in sep:
            o.step({k: g[k] for k in o.parameters})
    for k in params:
        assert params[k].tobytes() == a[k].tobytes(), k
    for label, d in opt.state.items():
        for k, x in d.items():
            assert x.tobytes() == next(o.state[label][k] for o in sep
                                       if k in o.parameters).tobytes(), (label, k)
    assert not np.array_equal(params["W1"], _data(dtype, 0, seed=9)[0]["W1"])
