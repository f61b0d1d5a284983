"""``ReduceLROnPlateau.state_dict`` / ``load_state_dict``: a scheduler resumed
from a checkpoint (through JSON, or torch's own state dict) takes the steps an
uninterrupted torch ``ReduceLROnPlateau`` takes; a bad state dict is refused
before anything changes."""

import json
import math
import types

import numpy as np
import pytest

import fusedoptim as fo
from fusedoptim import lr_scheduler as L
from helpers import Grouped

torch = pytest.importorskip("torch")
TL = torch.optim.lr_scheduler

# Improvements, plateaus (with cooldowns and reductions in them) and a NaN.
METRICS = [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.8999, 0.7, 0.71, 0.72, 0.73, float("nan"),
           0.74, 0.75, 0.76, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5] * 2

PLATEAU_KW = [dict(patience=2), dict(patience=1, cooldown=2, factor=0.5),
              dict(mode="max", patience=0, threshold=0.01, threshold_mode="abs"),
              dict(patience=1, min_lr=[0.02, 0.001], factor=0.3),
              dict(patience=0, eps=0.05, cooldown=1)]
KW_IDS = ["patience", "cooldown", "max-abs", "min_lrs", "eps"]
# Where the run is interrupted: before the first step, in a cooldown, mid-plateau.
SPLITS = [0, 5, 9, 17]


def _torch_opt():
    ps = [torch.nn.Parameter(torch.zeros(2, dtype=torch.float64)) for _ in range(2)]
    return torch.optim.SGD([{"params": [p], "lr": 0.1 * (i + 1)} for i, p in enumerate(ps)],
                           lr=0.1)


def _metrics(kw):
    return [-m for m in METRICS] if kw.get("mode") == "max" else METRICS


def _lrs(opt):
    return [g["lr"] for g in opt.param_groups]


def _same_state(ours, theirs):
    """Our state dict equals torch's, key for key (NaN equal to NaN)."""
    assert ours.keys() == theirs.keys()
    for k, v in theirs.items():
        if isinstance(v, float) and math.isnan(v):
            assert math.isnan(ours[k]), k
        else:
            assert ours[k] == v, (k, ours[k], v)


@pytest.mark.parametrize("kw", PLATEAU_KW, ids=KW_IDS)
def test_state_dict_is_torchs_at_every_step(kw):
    topt = _torch_opt()
    tsched = TL.ReduceLROnPlateau(topt, **kw)
    opt = Grouped([0.1, 0.2])
    sched = L.ReduceLROnPlateau(opt, **kw)
    _same_state(sched.state_dict(), tsched.state_dict())
    for m in _metrics(kw):
        tsched.step(m)
        sched.step(m)
        _same_state(sched.state_dict(), tsched.state_dict())


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("kw", PLATEAU_KW, ids=KW_IDS)
def test_resume_through_json_matches_uninterrupted_torch(kw, split):
    metrics = _metrics(kw)
    topt = _torch_opt()
    tsched = TL.ReduceLROnPlateau(topt, **kw)
    opt = Grouped([0.1, 0.2])
    sched = L.ReduceLROnPlateau(opt, **kw)
    for m in metrics[:split]:
        tsched.step(m)
        sched.step(m)
    saved = json.loads(json.dumps(sched.state_dict()))  # plain numbers only
    # A fresh optimizer (its rates restored by its own checkpoint) and a
    # scheduler built with other arguments: the saved ones replace them.
    opt = Grouped(_lrs(opt))
    sched = L.ReduceLROnPlateau(opt, mode="min", factor=0.9, patience=50, cooldown=7)
    sched.load_state_dict(saved)
    _same_state(sched.state_dict(), tsched.state_dict())
    for m in metrics[split:]:
        tsched.step(m)
        sched.step(m)
        assert _lrs(opt) == _lrs(topt)
        assert sched.get_last_lr() == tsched.get_last_lr()
        _same_state(sched.state_dict(), tsched.state_dict())
    assert min(_lrs(opt)) < 0.1  # the run did reduce


@pytest.mark.parametrize("kw", PLATEAU_KW, ids=KW_IDS)
def test_state_dicts_load_across_torch_and_fusedoptim(kw):
    """Torch's state dict resumes ours, and ours resumes torch's: the two
    continue in step."""
    metrics = _metrics(kw)
    split = len(metrics) // 3
    topt, opt = _torch_opt(), Grouped([0.1, 0.2])
    tsched, sched = TL.ReduceLROnPlateau(topt, **kw), L.ReduceLROnPlateau(opt, **kw)
    for m in metrics[:split]:
        tsched.step(m)
        sched.step(m)
    from_torch = L.ReduceLROnPlateau(Grouped(_lrs(topt)))
    from_torch.load_state_dict(tsched.state_dict())
    topt2 = _torch_opt()
    for g, lr in zip(topt2.param_groups, _lrs(opt)):
        g["lr"] = lr
    from_ours = TL.ReduceLROnPlateau(topt2)
    from_ours.load_state_dict(sched.state_dict())
    for m in metrics[split:]:
        for s in (tsched, sched, from_torch, from_ours):
            s.step(m)
        assert _lrs(from_torch.optimizer) == _lrs(topt) == _lrs(topt2)
        _same_state(from_torch.state_dict(), tsched.state_dict())
        _same_state(sched.state_dict(), from_ours.state_dict())


def test_resume_a_real_optimizer_with_its_checkpoint(backend):
    """fo.SGD over two groups: the optimizer's checkpoint restores the rates
    the scheduler lowered, the scheduler's its counters; the resumed run's
    rates and parameters are the uninterrupted run's."""
    def make():
        a, b = np.zeros(2), np.zeros(2)
        opt = fo.SGD([{"params": {"a": a}, "lr": 0.1}, {"params": {"b": b}, "lr": 0.2}],
                     lr=0.1, momentum=0.5)
        return opt, L.ReduceLROnPlateau(opt, patience=1, cooldown=1, factor=0.5), (a, b)

    def train(opt, sched, metrics):
        for m in metrics:
            opt.step({"a": np.full(2, m), "b": np.full(2, -m)})
            sched.step(m)

    opt, sched, (a, b) = make()
    train(opt, sched, METRICS)
    opt1, sched1, (a1, b1) = make()
    train(opt1, sched1, METRICS[:13])
    osd, ssd = opt1.state_dict(), json.loads(json.dumps(sched1.state_dict()))
    opt2, sched2, (a2, b2) = make()
    opt2.load_state_dict(osd)
    sched2.load_state_dict(ssd)
    train(opt2, sched2, METRICS[13:])
    assert _lrs(opt2) == _lrs(opt) and min(_lrs(opt)) < 0.1
    assert sched2.state_dict() == sched.state_dict()
    np.testing.assert_array_equal(a2, a)
    np.testing.assert_array_equal(b2, b)


def test_a_schedule_rate_is_saved_as_none_and_read_back():
    sched_lr = L.StepLR(0.1, 5)
    s = L.ReduceLROnPlateau(Grouped([0.1, sched_lr]), patience=3)
    s.step(1.0)
    sd = s.state_dict()
    assert sd["_last_lr"] == [0.1, None]
    json.dumps(sd)
    other = Grouped([0.1, sched_lr])
    s2 = L.ReduceLROnPlateau(other)
    s2.load_state_dict(sd)
    assert s2.get_last_lr() == [0.1, sched_lr]
    assert s2.state_dict() == sd


def _bad(sd, key, value):
    sd = dict(sd)
    if value is KeyError:
        del sd[key]
    else:
        sd[key] = value
    return sd


BAD = [
    ("best", KeyError, KeyError, "no 'best'"),
    ("num_bad_epochs", KeyError, KeyError, "no 'num_bad_epochs'"),
    ("extra", 1, KeyError, "unexpected key 'extra'"),
    ("mode", "lowest", ValueError, "mode must be one of"),
    ("threshold_mode", "relative", ValueError, "threshold_mode must be one of"),
    ("factor", 1.0, ValueError, "factor must be < 1"),
    ("factor", -0.5, ValueError, "factor must be >= 0"),
    ("patience", 1.5, TypeError, "patience must be an int"),
    ("cooldown_counter", -1, ValueError, "cooldown_counter must be >= 0"),
    ("last_epoch", True, TypeError, "last_epoch must be an int"),
    ("best", "0.5", TypeError, "best must be a real number"),
    ("min_lrs", 0.1, TypeError, "min_lrs must be a list"),
    ("min_lrs", [0.1, -1.0], ValueError, r"min_lrs\[1\] must be >= 0"),
    ("_last_lr", [0.1, "x"], TypeError, r"_last_lr\[1\] must be a real number"),
    ("default_min_lr", -1.0, ValueError, "default_min_lr must be >= 0"),
    ("eps", None, TypeError, "eps"),
]


@pytest.mark.parametrize("key,value,exc,match", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_state_dict_is_refused_and_changes_nothing(key, value, exc, match):
    s = L.ReduceLROnPlateau(Grouped([0.1, 0.2]), patience=1, cooldown=2)
    for m in (1.0, 2.0, 3.0, 4.0):
        s.step(m)
    good = s.state_dict()
    other = L.ReduceLROnPlateau(Grouped([0.1, 0.2]), mode="max", patience=4)
    before = other.state_dict()
    bad = _bad(good, key, value)
    with pytest.raises(exc, match=match):
        other.load_state_dict(bad)
    assert other.state_dict() == before
    other.load_state_dict(good)  # the good one loads
    assert other.state_dict() == good


def test_state_dict_must_be_a_mapping():
    s = L.ReduceLROnPlateau(Grouped([0.1]), patience=0)
    before = s.state_dict()
    with pytest.raises(TypeError, match="state_dict must be a mapping"):
        s.load_state_dict(list(before.items()))
    assert s.state_dict() == before
    s.step(1.0)
    s.step(2.0)
    saved = s.state_dict()
    other = L.ReduceLROnPlateau(Grouped([0.1]))
    other.load_state_dict(types.MappingProxyType(saved))  # any mapping
    assert other.state_dict() == saved


def test_per_group_min_lrs_of_another_group_count_are_refused_at_load():
    """Refused when loaded, not at the first reduction epochs later; with
    one ``min_lr`` for all groups the count may differ (it follows the
    optimizer's groups)."""
    two = L.ReduceLROnPlateau(Grouped([0.1, 0.2]), min_lr=[1e-4, 1e-5])
    two.step(1.0)
    s = L.ReduceLROnPlateau(fo.AdamW({"w": np.zeros(3, np.float32)}, lr=0.01))
    before = s.state_dict()
    with pytest.raises(ValueError, match=r"^state_dict\['min_lrs'\] has 2 entries but the "
                                         r"optimizer has 1 parameter group$"):
        s.load_state_dict(two.state_dict())
    assert s.state_dict() == before
    shared = L.ReduceLROnPlateau(Grouped([0.1, 0.2]), min_lr=1e-4, patience=0)
    shared.step(1.0)
    s.load_state_dict(shared.state_dict())
    s.step(2.0)  # a reduction: the shared floor serves one group
    assert s.optimizer.lr == pytest.approx(0.001)


def test_state_dict_goes_through_json_but_not_strict_json():
    s = L.ReduceLROnPlateau(Grouped([0.1]))
    sd = s.state_dict()
    assert math.isinf(sd["best"]) and math.isinf(sd["mode_worse"])
    assert json.loads(json.dumps(sd)) == sd
    with pytest.raises(ValueError):
        json.dumps(sd, allow_nan=False)
    assert "safetensors" not in L.ReduceLROnPlateau.state_dict.__doc__
