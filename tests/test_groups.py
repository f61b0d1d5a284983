"""Parameter groups of the optimizer classes: PyTorch parity (two groups, a
per-group schedule, clipping over all groups, hyperparameters changed between
steps, a group added mid-run), one fused backend call per step, the
``param_groups`` API, weight-decay exclusion and checkpoints."""

import io

import numpy as np
import pytest

import fusedoptim as fo
from fusedoptim import optimizer as _optimizer
from helpers import assert_unchanged, snapshot

try:
    import torch
except ImportError:  # pragma: no cover - CI installs it
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")

TOL = {np.float64: 1e-10, np.float32: 1e-5}
SHAPES = {"W1": (6, 5), "b1": (6,), "W2": (3, 6), "b2": (3,), "s": ()}


def _data(dtype, steps, seed=7):
    rng = np.random.default_rng(seed)
    params = {k: np.asarray(rng.standard_normal(s), dtype=dtype) for k, s in SHAPES.items()}
    grads = [{k: np.asarray(rng.standard_normal(s), dtype=dtype) for k, s in SHAPES.items()}
             for _ in range(steps)]
    return params, grads


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


# (class, our group settings, torch class, torch group settings, defaults)
TWO_GROUPS = {
    "SGD": (dict(momentum=0.9, nesterov=True, dampening=0.0), dict(lr=0.05, weight_decay=0.01),
            dict(lr=0.02, momentum=0.5, dampening=0.1)),
    "Adam": (dict(amsgrad=True, betas=(0.8, 0.99)), dict(lr=0.003, weight_decay=0.02),
             dict(lr=0.01, eps=1e-6)),
    "RMSprop": (dict(centered=True, momentum=0.5), dict(alpha=0.9, weight_decay=0.01),
                dict(lr=0.005, eps=1e-6, alpha=0.99)),
    # torch fills every group's sum with the constructor's initial_accumulator_value
    # (ours takes each group's own), so it is not set per group here.
    "Adagrad": (dict(lr_decay=0.01), dict(lr=0.05, weight_decay=0.01, eps=1e-8),
                dict(lr=0.02, initial_accumulator_value=0.3)),
}


def _ours_kw(cls, kw):
    kw = dict(kw)
    if cls == "RMSprop" and "alpha" in kw:
        kw["beta"] = kw.pop("alpha")
    return kw


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
    extra = {"eps_inside_sqrt": False} if cls == "RMSprop" else {}
    ours = "RMSProp" if cls == "RMSprop" else cls
    opt = getattr(fo, ours)([{"params": {k: params[k] for k in ("W1", "b1")},
                             **_ours_kw(cls, g0)},
                            {"params": {k: params[k] for k in ("W2", "b2", "s")},
                             **_ours_kw(cls, g1)}], **_ours_kw(cls, defaults), **extra)
    topt = getattr(torch.optim, cls)([{"params": [tp["W1"], tp["b1"]], **g0},
                                      {"params": [tp["W2"], tp["b2"], tp["s"]], **g1}],
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
# by two groups at different step counts), defaults); same names as torch.
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
    opt = getattr(fo, cls)([{"params": {k: params[k] for k in ("W1", "b1")}, **g0},
                            {"params": {"W2": params["W2"]}, **g1}], **defaults)
    # torch keeps NAdam's mu_product in the default dtype: that of the run.
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if dtype == np.float64 else torch.float32)
    try:
        topt = getattr(torch.optim, cls)([{"params": [tp["W1"], tp["b1"]], **g0},
                                          {"params": [tp["W2"]], **g1}],
                                         **defaults, foreach=False)
        for i, g in enumerate(grads):
            if i == 40:
                opt.add_param_group({"params": {"b2": params["b2"], "s": params["s"]}, **g2})
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


# --- one fused call ---------------------------------------------------------------------


class _Counting:
    """A backend proxy that counts the calls of each family step."""

    def __init__(self, mod):
        self.mod = mod
        self.calls = []

    def __getattr__(self, name):
        fn = getattr(self.mod, name)
        if name == "grad_sumsq":
            return fn

        def counted(*args, **kwargs):
            self.calls.append(name)
            return fn(*args, **kwargs)

        return counted


@pytest.mark.parametrize("cls", ["SGD", "Adam", "AdamW", "RMSProp", "Adagrad", "Adamax", "NAdam",
                                 "RAdam", "Adadelta", "Lion", "LAMB"])
def test_a_grouped_step_is_one_backend_call(backend, monkeypatch, cls):
    """Every group, one call of ``<family>_groups``, whatever the number of
    groups; one group keeps the one-group ``<family>`` step."""
    counting = _Counting(fo.backend.active())
    monkeypatch.setattr(_optimizer, "_backend", lambda: counting)
    params, grads = _data(np.float32, 3)
    family = fo.OPTIMIZERS[cls].family.name
    groups = [{"params": {k: params[k]}, "lr": 0.01 * (i + 1)} for i, k in enumerate(params)]
    opt = fo.OPTIMIZERS[cls](groups, lr=0.1, max_grad_norm=1.0)
    for g in grads:
        opt.step(g)
    assert counting.calls == [family + "_groups"] * 3
    counting.calls.clear()
    single = fo.OPTIMIZERS[cls](_data(np.float32, 0)[0], lr=0.1)
    single.step(grads[0])
    assert counting.calls == [family]


def test_grouped_step_on_a_family_without_group_step_says_so(monkeypatch):
    class NoGroups:
        def __getattr__(self, name):
            if name.endswith("_groups"):
                raise AttributeError(name)
            return getattr(fo.backend.active(), name)

    monkeypatch.setattr(_optimizer, "_backend", lambda: NoGroups())
    params, grads = _data(np.float64, 1)
    opt = fo.Adam([{"params": {"W1": params["W1"]}}, {"params": {"b1": params["b1"]}}])
    before = snapshot(params)
    with pytest.raises(NotImplementedError, match="several parameter groups"):
        opt.step(grads[0])
    assert_unchanged(before, params)
    assert opt.t == 0


# --- the API ----------------------------------------------------------------------------


def test_groups_equal_separate_optimizers_bitwise(backend):
    """Without clipping, two groups step exactly as two optimizers would."""
    params, grads = _data(np.float32, 20)
    a = {k: v.copy() for k, v in params.items()}
    w, b = {k: a[k] for k in ("W1", "W2")}, {k: a[k] for k in ("b1", "b2", "s")}
    sep = [fo.RMSProp(w, lr=0.01, momentum=0.9), fo.RMSProp(b, lr=0.03, centered=True)]
    opt = fo.RMSProp([{"params": {k: params[k] for k in w}, "momentum": 0.9},
                      {"params": {k: params[k] for k in b}, "lr": 0.03, "centered": True}],
                     lr=0.01)
    for g in grads:
        opt.step(g)
        for o in sep:
            o.step(g)
    for k in params:
        assert params[k].tobytes() == a[k].tobytes(), k


def test_constructor_checks_groups():
    params, _ = _data(np.float64, 0)
    with pytest.raises(ValueError, match="'W1' is in two parameter groups"):
        fo.Adam([{"params": {"W1": params["W1"]}}, {"params": {"W1": params["W1"]}}])
    with pytest.raises(KeyError, match="no hyperparameter 'momentum'"):
        fo.Adam([{"params": {"W1": params["W1"]}, "momentum": 0.9}])
    with pytest.raises(KeyError, match="has no 'params'"):
        fo.Adam([{"lr": 0.1}])
    with pytest.raises(ValueError, match=r"parameters\[0\]\['params'\] is empty"):
        fo.Adam([{"params": {}}])
    with pytest.raises(ValueError, match="empty list of groups"):
        fo.Adam([])
    with pytest.raises(ValueError, match=r"betas\[0\] must be in \[0, 1\)"):
        fo.Adam([{"params": {"W1": params["W1"]}, "betas": (1.0, 0.9)}])
    with pytest.raises(ValueError, match="nesterov needs momentum"):
        fo.SGD([{"params": {"W1": params["W1"]}, "nesterov": True}], lr=0.1)


def test_param_groups_assignment_is_checked_and_changes_nothing_on_error():
    params, grads = _data(np.float64, 2)
    opt = fo.SGD([{"params": {"W1": params["W1"]}}, {"params": {"b1": params["b1"]}}],
                 lr=0.1, momentum=0.9, nesterov=True)
    pg = opt.param_groups
    with pytest.raises(ValueError, match="lr must be >= 0"):
        pg[0]["lr"] = -1.0
    with pytest.raises(KeyError, match="no hyperparameter 'betas'"):
        pg[0]["betas"] = (0.9, 0.9)
    with pytest.raises(TypeError, match="'params' cannot be replaced"):
        pg[0]["params"] = {}
    with pytest.raises(TypeError, match="cannot be removed"):
        del pg[0]["lr"]
    with pytest.raises(ValueError, match="lr must be >= 0"):
        pg[1].update(momentum=0.5, lr=-2.0)
    assert pg[0]["lr"] == 0.1 and pg[1]["momentum"] == 0.9
    # A setting that conflicts with another raises at the next step, which writes nothing.
    pg[1]["momentum"] = 0.0
    before = snapshot(params)
    with pytest.raises(ValueError, match="nesterov needs momentum"):
        opt.step(grads[0])
    assert_unchanged(before, params)
    assert opt.t == 0 and opt.last_lrs is None
    pg[1]["nesterov"] = False
    assert opt.step(grads[0]) and opt.t == 1


def test_attributes_with_several_groups():
    params, grads = _data(np.float64, 2)
    opt = fo.Adam([{"params": {"W1": params["W1"]}},
                   {"params": {"b1": params["b1"]}, "weight_decay": 0.1}],
                  lr=0.01, betas=(0.8, 0.9))
    assert opt.betas == (0.8, 0.9) and opt.lr == 0.01 and opt.current_lr == 0.01
    with pytest.raises(ValueError, match=r"param_groups\[i\]\['weight_decay'\]"):
        opt.weight_decay
    assert opt.defaults["weight_decay"] == 0.0
    opt.lr = 0.5  # sets every group's
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.5]
    opt.param_groups[1]["lr"] = lambda t: 0.25 / (t + 1)
    assert opt.current_lrs == [0.5, 0.25]
    with pytest.raises(ValueError, match="current_lrs"):
        opt.current_lr
    assert opt.last_lr is None
    opt.step(grads[0])
    assert opt.last_lrs == [0.5, 0.25] and opt.current_lrs == [0.5, 0.125]
    with pytest.raises(ValueError, match="last_lrs"):
        opt.last_lr
    assert "2 groups" in repr(opt)


def test_single_group_attributes_unchanged():
    params, grads = _data(np.float64, 1)
    opt = fo.Adam(params, lr=lambda t: 0.1 / (t + 1), weight_decay=0.01)
    assert opt.weight_decay == 0.01 and len(opt.param_groups) == 1
    assert opt.param_groups[0]["params"]["W1"] is params["W1"]
    assert opt.current_lr == 0.1 and opt.last_lr is None
    opt.step(grads[0])
    assert opt.last_lr == 0.1 and opt.current_lr == 0.05
    opt.param_groups[0]["weight_decay"] = 0.2
    assert opt.weight_decay == 0.2


def test_a_flag_switched_on_later_allocates_its_slot():
    params, grads = _data(np.float64, 3)
    opt = fo.Adam([{"params": {"W1": params["W1"]}}, {"params": {"b1": params["b1"]}}])
    assert "max_exp_avg_sq" not in opt.state
    opt.step(grads[0])
    opt.param_groups[1]["amsgrad"] = True
    bad = dict(grads[1])
    del bad["b1"]
    with pytest.raises(KeyError):
        opt.step(bad)
    assert "max_exp_avg_sq" not in opt.state  # the failing step kept nothing
    opt.step(grads[1])
    vmax = opt.state["max_exp_avg_sq"]
    assert set(vmax) == {"W1", "b1"}
    assert not vmax["W1"].any() and vmax["b1"].any()  # only the AMSGrad group uses it


def test_exclude_from_weight_decay():
    params, _ = _data(np.float64, 0)
    default = fo.exclude_from_weight_decay(params)
    assert list(default[0]["params"]) == ["W1", "W2"] and default[1]["weight_decay"] == 0.0
    assert list(default[1]["params"]) == ["b1", "b2", "s"]
    by_name = fo.exclude_from_weight_decay(params, var_names=[r"^b\d$"])
    assert list(by_name[1]["params"]) == ["b1", "b2"]
    by_pred = fo.exclude_from_weight_decay(params, lambda name, p: p.size > 20)
    assert list(by_pred[1]["params"]) == ["W1"]
    only = fo.exclude_from_weight_decay({"W": params["W1"]})
    assert only == [{"params": {"W": params["W1"]}}]
    with pytest.raises(TypeError, match="not a str"):
        fo.exclude_from_weight_decay(params, var_names="b")
    with pytest.raises(ValueError, match=r"var_names\[0\] is not a regular expression"):
        fo.exclude_from_weight_decay(params, var_names=["("])
    opt = fo.AdamW(by_name, weight_decay=0.1)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]


# --- checkpoints ------------------------------------------------------------------------


def _grouped(params):
    return fo.Adam([{"params": {"W1": params["W1"], "b1": params["b1"]}, "lr": 0.02},
                    {"params": {"W2": params["W2"]}, "amsgrad": True, "betas": (0.8, 0.9)}],
                   lr=0.01, max_grad_norm=2.0)


def test_grouped_checkpoint_resumes_bit_identically_through_savez(backend):
    params, grads = _data(np.float32, 20)
    run = {k: v.copy() for k, v in params.items()}
    opt = _grouped(run)
    for g in grads[:8]:
        opt.step(g)
    opt.add_param_group({"params": {"b2": run["b2"]}, "lr": 0.05})
    for g in grads[8:12]:
        opt.step(g)
    buf = io.BytesIO()
    np.savez(buf, **opt.state_dict())
    saved = {k: v.copy() for k, v in run.items()}
    for g in grads[12:]:
        opt.step(g)
    resumed = {k: saved[k].copy() for k in saved}
    again = _grouped(resumed)
    again.add_param_group({"params": {"b2": resumed["b2"]}, "lr": 0.05})
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as f:
        sd = dict(f)
    assert sd["groups"] == 3 and sd["group/1/hp/amsgrad"] and sd["group/2/t0"] == 8
    assert sd["group/0/params"].tolist() == ["W1", "b1"] and sd["group/2/lr"] == 0.05
    again.param_groups[0]["lr"] = 1.0  # restored from the checkpoint
    again.load_state_dict(sd)
    assert again.param_groups[0]["lr"] == 0.02 and again.t == 12
    for g in grads[12:]:
        again.step(g)
    for k in run:
        assert resumed[k].tobytes() == run[k].tobytes(), k


def test_grouped_checkpoint_mismatch_raises_and_changes_nothing():
    params, grads = _data(np.float64, 2)
    opt = _grouped(params)
    opt.step(grads[0])
    sd = opt.state_dict()
    target = _grouped(_data(np.float64, 0)[0])
    before = snapshot(target.state["exp_avg"])
    cases = [
        ("groups", 3, ValueError, "3 parameter groups"),
        ("group/1/params", np.array(["W3"]), ValueError, "does not name the parameters"),
        ("group/1/hp/beta1", 0.7, ValueError, "group/1/hp/beta1 is 0.7"),
        ("group/0/t0", 5, ValueError, "added after"),
    ]
    for key, value, exc, match in cases:
        with pytest.raises(exc, match=match):
            target.load_state_dict({**sd, key: value})
    with pytest.raises(KeyError, match="group/1/t0"):
        target.load_state_dict({k: v for k, v in sd.items() if k != "group/1/t0"})
    with pytest.raises(ValueError, match="parameter groups but this optimizer has 1"):
        fo.Adam(_data(np.float64, 0)[0]).load_state_dict(sd)
    assert_unchanged(before, target.state["exp_avg"])
    assert target.t == 0


def test_numba_compiles_once_for_any_number_of_groups(backend):
    """The Numba drivers take the groups' settings as matrices: stepping with
    one, two and five groups adds no compilation after the first."""
    if backend != "numba":
        pytest.skip("numba backend only")
    import importlib
    mod = importlib.import_module("fusedoptim._numba.adagrad")
    params, grads = _data(np.float32, 1)
    names = list(params)
    fo.Adagrad({k: v.copy() for k, v in params.items()}).step(grads[0])
    count = len(mod.serial.signatures)
    for split in ([2], [1, 2, 3, 4]):
        cuts = [0, *split, len(names)]
        groups = [{"params": {k: params[k].copy() for k in names[a:b]}, "lr": 0.1 * (i + 1)}
                  for i, (a, b) in enumerate(zip(cuts, cuts[1:]))]
        fo.Adagrad(groups).step(grads[0])
    assert len(mod.serial.signatures) == count
