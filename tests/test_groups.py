"""Parameter groups of the optimizer classes: one fused backend call per step,
the ``param_groups`` API, weight-decay exclusion and checkpoints.  PyTorch
parity: ``test_groups_torch.py``."""

import io

import numpy as np
import pytest

import fusedoptim as fo
from fusedoptim import optimizer as _optimizer
from helpers import assert_unchanged, snapshot
from groups_common import _data


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


@pytest.mark.parametrize("cls", sorted(fo.OPTIMIZERS))
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
    with pytest.raises(TypeError, match=r"parameters is a parameter group, not a dict of "
                                        r"arrays; pass a list of groups"):
        fo.Adam({"params": {"W1": params["W1"]}, "lr": 0.1})
    with pytest.raises(ValueError, match=r"betas\[0\] must be in \[0, 1\)"):
        fo.Adam([{"params": {"W1": params["W1"]}, "betas": (1.0, 0.9)}])
    with pytest.raises(ValueError, match="nesterov needs momentum"):
        fo.SGD([{"params": {"W1": params["W1"]}, "nesterov": True}], lr=0.1)


def test_parameters_sharing_memory_are_refused_when_given():
    """One array under two names (or overlapping views) would be written
    twice per step: refused by the constructor and add_param_group, as
    torch refuses a tensor in two groups, not at every step."""
    w = np.ones(8)
    with pytest.raises(ValueError, match=r"parameters\['b'\] shares memory with "
                                         r"parameters\['a'\]"):
        fo.SGD({"a": w, "b": w}, lr=0.1)
    with pytest.raises(ValueError, match="shares memory"):
        fo.Adam([{"params": {"a": w[:5]}}, {"params": {"b": w[4:]}}])
    opt = fo.SGD({"a": w}, lr=0.1)
    with pytest.raises(ValueError, match="shares memory"):
        opt.add_param_group({"params": {"b": w[2:6]}})
    assert len(opt.param_groups) == 1 and list(opt.parameters) == ["a"]
    fo.SGD({"a": w[:4], "b": w[4:]}, lr=0.1).step({"a": np.ones(4), "b": np.ones(4)})


def test_the_first_group_is_not_a_view_of_the_callers_dict():
    """A layer added to the model dict for add_param_group is in one group,
    and a key removed from it stays in the optimizer (the group was a view
    of the caller's dict: every later step raised, and the checkpoint named
    the layer twice)."""
    model = {"W": np.ones((2, 2))}
    opt = fo.Adam(model, lr=0.1)
    opt.step({"W": np.ones((2, 2))})
    model["head"] = np.zeros(3)
    assert list(opt.param_groups[0]["params"]) == ["W"]
    opt.add_param_group({"params": {"head": model["head"]}, "lr": 0.01})
    assert opt.step({"W": np.ones((2, 2)), "head": np.ones(3)}) and opt.t == 2
    sd = opt.state_dict()
    assert list(sd["group/0/params"]) == ["W"] and list(sd["group/1/params"]) == ["head"]
    del model["W"]
    assert list(opt.param_groups[0]["params"]) == ["W"] == list(opt.parameters)[:1]


def test_copies_of_groups_are_plain_dicts():
    """copy, deepcopy and pickle of a group give plain dicts detached from
    the optimizer (copy.copy said "'params' cannot be replaced", deepcopy
    tried to pickle the optimizer)."""
    import copy
    import pickle
    p = {"W": np.ones((3, 2)), "b": np.zeros(2)}
    opt = fo.AdamW(fo.exclude_from_weight_decay(p), lr=0.1, weight_decay=0.01)
    shallow = copy.copy(opt.param_groups[0])
    assert type(shallow) is dict and shallow == opt.param_groups[0]
    for snap in (copy.deepcopy(opt.param_groups),
                 pickle.loads(pickle.dumps(opt.param_groups))):
        assert [type(g) for g in snap] == [dict, dict]
        assert [list(g["params"]) for g in snap] == [["W"], ["b"]]
        assert snap[0]["params"]["W"] is not p["W"]
        snap[0]["lr"] = 5.0
        snap[0]["params"]["W"][:] = 7.0
    assert opt.param_groups[0]["lr"] == 0.1 and (p["W"] == 1.0).all()


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
    group = pg[1]
    with pytest.raises(KeyError, match="no hyperparameter 'betas'"):
        group |= {"momentum": 0.5, "betas": (0.9, 0.9)}  # dict's |= would skip the checks
    assert group is pg[1] and "betas" not in group
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


def test_a_schedule_class_as_lr_is_refused_everywhere_and_changes_nothing():
    """Classes are callable, so fo.StepLR given for fo.StepLR(...) would fail
    only at the first step, with an error about StepLR's own arguments."""
    params, grads = _data(np.float64, 1)
    msg = r"lr is the class StepLR; pass an instance, e.g. StepLR\(\.\.\.\)"
    with pytest.raises(TypeError, match=msg):
        fo.SGD(params, lr=fo.StepLR)
    with pytest.raises(TypeError, match=msg):
        fo.SGD([{"params": {"W1": params["W1"]}, "lr": fo.StepLR}], lr=0.1)
    opt = fo.SGD([{"params": {"W1": params["W1"]}}], lr=0.1, momentum=0.5)
    pg = opt.param_groups
    with pytest.raises(TypeError, match=msg):
        opt.lr = fo.StepLR
    with pytest.raises(TypeError, match=msg):
        pg[0]["lr"] = fo.StepLR
    with pytest.raises(TypeError, match=msg):
        pg[0].update(momentum=0.9, lr=fo.StepLR)
    with pytest.raises(TypeError, match="lr is the class CosineDecay"):
        opt.add_param_group({"params": {"b1": params["b1"]}, "lr": fo.CosineDecay})
    assert len(opt.param_groups) == 1 and all("b1" not in st for st in opt.state.values())
    assert opt.lr == 0.1 and pg[0]["momentum"] == 0.5
    opt.lr = fo.StepLR(0.2, 1, 0.5)  # an instance is a schedule
    opt.step({"W1": grads[0]["W1"]})
    assert opt.last_lr == 0.2 and opt.current_lr == 0.1


def test_an_added_groups_schedule_gets_the_optimizers_step_count():
    """Its bias corrections count its own steps, its lr schedule opt.t; the
    docstring's lambda counts the schedule from the group's first step."""
    params, grads = _data(np.float64, 5)
    opt = fo.Adam({"W1": params["W1"]}, lr=0.1)
    for g in grads[:3]:
        opt.step({"W1": g["W1"]})
    s = fo.StepLR(1.0, 1, 0.5)
    opt.add_param_group({"params": {"b1": params["b1"]}, "lr": s})
    opt.add_param_group({"params": {"b2": params["b2"]},
                         "lr": lambda t, i=len(opt.param_groups): s(t - opt.group_starts[i])})
    assert opt.current_lrs == [0.1, s(3), s(0)] and opt.group_starts == [0, 3, 3]
    opt.step({k: grads[3][k] for k in ("W1", "b1", "b2")})
    assert opt.last_lrs == [0.1, 0.125, 1.0] and opt.current_lrs == [0.1, s(4), s(1)]
    doc = fo.Adam.add_param_group.__doc__
    assert "opt.t" in doc and "s(t - opt.group_starts[i])" in doc


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
