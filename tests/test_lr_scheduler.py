"""PyTorch-shaped schedules (fusedoptim.lr_scheduler): closed forms, torch's
values step by step, the step-count convention, ReduceLROnPlateau."""

import math
import warnings

import numpy as np
import pytest

import fusedoptim as fo
from fusedoptim import lr_scheduler as L
from helpers import Grouped

torch = pytest.importorskip("torch")
TL = torch.optim.lr_scheduler

N = 120  # steps compared with torch


def _torch_opt(lr, groups=1, momentum=0.0):
    ps = [torch.nn.Parameter(torch.zeros(2, dtype=torch.float64)) for _ in range(groups)]
    return torch.optim.SGD([{"params": [p], "lr": lr * (i + 1)} for i, p in enumerate(ps)],
                           lr=lr, momentum=momentum)


def _torch_rates(make, lr, steps, momentum=0.0):
    """Torch's lr at last_epoch = 0 .. steps-1 (the rate of optimizer step
    t + 1), stepping as a training loop does; and the scheduler."""
    opt = _torch_opt(lr, momentum=momentum)
    sched = make(opt)
    out = []
    for t in range(steps):
        out.append(opt.param_groups[0]["lr"])
        if t < steps - 1:
            opt.step()
            sched.step()
    return out, sched


def _closed_form(sched, t):
    sched.last_epoch = t
    return sched._get_closed_form_lr()[0]


CASES = [
    ("StepLR", lambda: L.StepLR(0.1, 7, gamma=0.5), lambda o: TL.StepLR(o, 7, gamma=0.5)),
    ("StepLR-default", lambda: L.StepLR(0.3, 10), lambda o: TL.StepLR(o, 10)),
    ("MultiStepLR", lambda: L.MultiStepLR(0.1, [30, 10, 80, 80], 0.3),
     lambda o: TL.MultiStepLR(o, [30, 10, 80, 80], 0.3)),
    ("ExponentialLR", lambda: L.ExponentialLR(0.1, 0.97), lambda o: TL.ExponentialLR(o, 0.97)),
    ("LinearLR", lambda: L.LinearLR(0.1, start_factor=0.05, end_factor=0.9, total_iters=37),
     lambda o: TL.LinearLR(o, start_factor=0.05, end_factor=0.9, total_iters=37)),
    ("LinearLR-default", lambda: L.LinearLR(0.2), lambda o: TL.LinearLR(o)),
    ("CosineAnnealingLR", lambda: L.CosineAnnealingLR(0.1, 50, eta_min=0.001),
     lambda o: TL.CosineAnnealingLR(o, 50, eta_min=0.001)),
    ("ConstantLR", lambda: L.ConstantLR(0.1, factor=0.25, total_iters=17),
     lambda o: TL.ConstantLR(o, factor=0.25, total_iters=17)),
    ("ConstantLR-default", lambda: L.ConstantLR(0.3), lambda o: TL.ConstantLR(o)),
    ("PolynomialLR", lambda: L.PolynomialLR(0.1, total_iters=90, power=2.5),
     lambda o: TL.PolynomialLR(o, total_iters=90, power=2.5)),
    ("PolynomialLR-default", lambda: L.PolynomialLR(0.2), lambda o: TL.PolynomialLR(o)),
]


@pytest.mark.parametrize("name, ours, theirs", CASES, ids=[c[0] for c in CASES])
def test_matches_torch_step_by_step_and_closed_form(name, ours, theirs):
    s = ours()
    lr = s.lr
    rates, sched = _torch_rates(theirs, lr, N)
    for t, want in enumerate(rates):
        # torch's chained updates accumulate rounding error (about 1 ulp
        # per step): compare its stepped values within a relative 1e-12 ...
        assert s(t) == pytest.approx(want, rel=1e-12, abs=1e-300), t
        # ... and its closed form bit for bit.
        assert s(t) == _closed_form(sched, t), t
    assert isinstance(s(3), float)


def test_lambda_lr_matches_torch():
    f = lambda e: 0.95 ** e if e < 40 else 0.01  # noqa: E731
    s = L.LambdaLR(0.2, f)
    rates, _ = _torch_rates(lambda o: TL.LambdaLR(o, f), 0.2, N)
    assert [s(t) for t in range(N)] == rates


def test_multiplicative_lr_matches_torch_bit_for_bit():
    f = lambda e: 0.97 if e % 3 else 1.01  # noqa: E731
    s = L.MultiplicativeLR(0.2, f)
    rates, _ = _torch_rates(lambda o: TL.MultiplicativeLR(o, f), 0.2, N)
    assert [s(t) for t in range(N)] == rates
    # Any order of calls (a resume, a plot): the same values.
    assert [s(t) for t in (50, 3, 3, 119, 0)] == [rates[t] for t in (50, 3, 3, 119, 0)]
    s.lr = 0.4  # the kept product is of the old rate: computed again
    assert s(3) == ((0.4 * f(1)) * f(2)) * f(3)


@pytest.mark.parametrize("T_0, T_mult", [(10, 1), (7, 2), (1, 3), (5, 5)])
def test_cosine_warm_restarts_matches_torch_stepping(T_0, T_mult):
    """Torch's stepped values (its T_cur counts whole steps), bit for bit,
    across restarts; at T_mult > 1 torch's step(epoch) takes a log, which
    the stepped values do not."""
    s = L.CosineAnnealingWarmRestarts(0.1, T_0, T_mult=T_mult, eta_min=0.002)
    rates, _ = _torch_rates(lambda o: TL.CosineAnnealingWarmRestarts(
        o, T_0, T_mult=T_mult, eta_min=0.002), 0.1, 400)
    assert [s(t) for t in range(400)] == rates


@pytest.mark.parametrize("make, exc, match", [
    (lambda: L.ConstantLR(0.1, factor=1.5), ValueError, r"factor must be in \[0, 1\]"),
    (lambda: L.ConstantLR(0.1, total_iters=-1), ValueError, "total_iters must be >= 0"),
    (lambda: L.PolynomialLR(0.1, total_iters=0), ValueError, "total_iters must be >= 1"),
    (lambda: L.PolynomialLR(0.1, power=-1.0), ValueError, "power must be >= 0"),
    (lambda: L.CosineAnnealingWarmRestarts(0.1, 0), ValueError, "T_0 must be >= 1"),
    (lambda: L.CosineAnnealingWarmRestarts(0.1, 5, T_mult=1.5), TypeError, "T_mult must be an int"),
    (lambda: L.MultiplicativeLR(0.1, 0.9), TypeError, "lr_lambda must be callable"),
])
def test_new_schedulers_check_their_arguments(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


@pytest.mark.parametrize("kw", [dict(), dict(anneal_strategy="linear"),
                                dict(three_phase=True, pct_start=0.25),
                                dict(div_factor=10.0, final_div_factor=100.0)])
def test_one_cycle_matches_torch(kw):
    total = 100
    s = L.OneCycleLR(0.5, total, **kw)
    rates, _ = _torch_rates(lambda o: TL.OneCycleLR(o, 0.5, total, **kw), 0.5, total + 1,
                            momentum=0.9)
    assert [s(t) for t in range(total + 1)] == rates  # not chained: same bits
    with pytest.raises(ValueError, match="step 101 of a cycle of 100"):
        s(total + 1)
    assert L.OneCycleLR(0.5, epochs=10, steps_per_epoch=10, **kw)(37) == s(37)


def test_sequential_matches_torch():
    """Warmup, then a decay that starts counting at the milestone."""
    ours = L.SequentialLR([L.LinearLR(0.1, 0.01, 1.0, 10), L.ExponentialLR(0.1, 0.95),
                           L.CosineAnnealingLR(0.1, 30)], milestones=[10, 60])

    def theirs(o):
        return TL.SequentialLR(o, [TL.LinearLR(o, 0.01, 1.0, 10), TL.ExponentialLR(o, 0.95),
                                   TL.CosineAnnealingLR(o, 30)], milestones=[10, 60])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own deprecation chatter
        rates, _ = _torch_rates(theirs, 0.1, N)
    for t, want in enumerate(rates):
        assert ours(t) == pytest.approx(want, rel=1e-12), t
    assert ours(10) == 0.1 and ours(60) == 0.1


def test_optimizer_steps_with_torchs_rates(backend):
    """The convention end to end: fo.SGD with a schedule takes the steps
    torch.optim.SGD takes with the scheduler stepped after each step."""
    rng = np.random.default_rng(0)
    p = {"w": rng.standard_normal(5)}
    tp = torch.nn.Parameter(torch.from_numpy(p["w"].copy()))
    topt = torch.optim.SGD([tp], lr=0.2)
    tsched = TL.StepLR(topt, 4, gamma=0.5)
    opt = fo.SGD(p, lr=L.StepLR(0.2, 4, gamma=0.5))
    for _ in range(20):
        g = rng.standard_normal(5)
        tp.grad = torch.from_numpy(g.copy())
        topt.step()
        tsched.step()
        opt.step({"w": g})
    np.testing.assert_allclose(p["w"], tp.detach().numpy(), rtol=1e-14, atol=0)


def test_formulas_by_hand():
    assert [L.StepLR(1.0, 2, 0.5)(t) for t in range(6)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    assert [L.MultiStepLR(1.0, [1, 3, 3], 0.5)(t) for t in range(5)] == [1, .5, .5, .125, .125]
    s = L.LinearLR(1.0, 0.25, 1.0, 3)
    assert [s(t) for t in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    c = L.CosineAnnealingLR(2.0, 10)
    assert c(0) == 2.0 and c(10) == 0.0 and c(5) == pytest.approx(1.0, rel=1e-15)
    assert c(20) == 2.0  # torch's cosine goes back up past T_max
    seq = L.SequentialLR([0.5, L.ExponentialLR(1.0, 0.5)], [2])
    assert [seq(t) for t in range(5)] == [0.5, 0.5, 1.0, 0.5, 0.25]
    assert L.ExponentialLR(1.0, 2.0)(10**6) == math.inf


@pytest.mark.parametrize("make, exc, match", [
    (lambda: L.StepLR(0.1, 0), ValueError, "step_size must be >= 1"),
    (lambda: L.StepLR(0.1, 2.0), TypeError, "step_size must be an int"),
    (lambda: L.StepLR(-0.1, 2), ValueError, "lr must be >= 0"),
    (lambda: L.MultiStepLR(0.1, 5), TypeError, "milestones must be a sequence"),
    (lambda: L.MultiStepLR(0.1, [1, -2]), ValueError, r"milestones\[1\] must be >= 0"),
    (lambda: L.ExponentialLR(0.1, -0.5), ValueError, "gamma must be >= 0"),
    (lambda: L.LinearLR(0.1, start_factor=0.0), ValueError, r"start_factor must be in \(0, 1\]"),
    (lambda: L.LinearLR(0.1, end_factor=1.5), ValueError, r"end_factor must be in \[0, 1\]"),
    (lambda: L.LinearLR(0.1, total_iters=0), ValueError, "total_iters must be >= 1"),
    (lambda: L.CosineAnnealingLR(0.1, 0), ValueError, "T_max must be >= 1"),
    (lambda: L.LambdaLR(0.1, 3), TypeError, "lr_lambda must be callable"),
    (lambda: L.OneCycleLR(0.1), ValueError, "needs total_steps"),
    (lambda: L.OneCycleLR(0.1, 10, pct_start=1.5), ValueError, "pct_start"),
    (lambda: L.OneCycleLR(0.1, 10, anneal_strategy="exp"), ValueError, "anneal_strategy"),
    (lambda: L.OneCycleLR(0.1, 10, div_factor=0), ValueError, "div_factor must be > 0"),
    (lambda: L.SequentialLR([L.StepLR(0.1, 2)], [3]), ValueError, "one entry fewer"),
    (lambda: L.SequentialLR([], []), ValueError, "schedules is empty"),
    (lambda: L.SequentialLR([0.1, 0.2, 0.3], [5, 5]), ValueError, "increasing"),
    (lambda: L.SequentialLR([0.1, -0.2], [5]), ValueError, r"schedules\[1\] must be >= 0"),
    (lambda: L.SequentialLR([0.1, L.StepLR], [5]), TypeError,
     r"schedules\[1\] is the class StepLR; pass an instance, e.g. StepLR\(\.\.\.\)"),
])
def test_bad_arguments(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_degenerate_one_cycle_phase():
    # A warmup of zero length: torch divides by zero at construction; refused there.
    for kw in (dict(pct_start=0.1), dict(pct_start=0.25, total_steps=4, three_phase=True),
               dict(pct_start=0.5, total_steps=None, epochs=2, steps_per_epoch=1)):
        kw = {"total_steps": 10, **kw}
        with pytest.raises(ValueError, match=r"pct_start \* total_steps must not be 1"):
            L.OneCycleLR(0.1, **kw)
    # An empty last phase is reached only at step total_steps (torch too divides
    # by zero there): the steps before it work.
    for kw in (dict(pct_start=1.0), dict(pct_start=0.55, three_phase=True)):
        s = L.OneCycleLR(0.1, 10, **kw)
        assert all(0.0 < s(t) <= 0.1 for t in range(10))
        with pytest.raises(ValueError, match="phase of zero length"):
            s(10)


def test_growing_rates_overflow_to_inf_which_the_optimizer_refuses():
    for make in (lambda lr: L.StepLR(lr, 1, 1e200), lambda lr: L.MultiStepLR(lr, [1, 2], 1e200),
                 lambda lr: L.ExponentialLR(lr, 1e200)):
        s = make(1.0)
        assert [s(t) for t in range(3)] == [1.0, 1e200, math.inf], s
        assert make(0.0)(3) == 0.0
        opt = fo.SGD({"w": np.zeros(1)}, lr=s)
        opt.step({"w": np.ones(1)})
        opt.step({"w": np.ones(1)})
        with pytest.raises(ValueError, match="lr schedule value at step 2 must be finite"):
            opt.step({"w": np.ones(1)})


def _described(doc):
    """The numpydoc Parameters entries of ``doc`` without a description."""
    lines = doc.expandtabs().splitlines()
    start = lines.index("    Parameters") + 2
    out = []
    for k in range(start, len(lines)):
        line = lines[k]
        if not line.strip() or not line.startswith("    ") or line.strip().startswith("---"):
            break
        if not line.startswith("     ") and ":" in line:  # an entry "name : type"
            nxt = lines[k + 1] if k + 1 < len(lines) else ""
            if not nxt.startswith("        "):
                out.append(line.strip())
    return out


@pytest.mark.parametrize("name", L.__all__)
def test_every_parameter_is_described(name):
    assert _described(getattr(L, name).__doc__) == []


def test_one_cycle_doc_names_torchs_momentum_default():
    doc = " ".join(L.OneCycleLR.__doc__.split())
    assert "cycle_momentum=True" in doc and "cycle_momentum=False" in doc
    assert "0.95" in doc and "0.85" in doc


@pytest.mark.parametrize("s", [L.StepLR(0.1, 2), L.LinearLR(0.1), L.OneCycleLR(0.1, 10),
                               L.SequentialLR([0.1, 0.2], [3]), L.LambdaLR(0.1, abs)])
def test_bad_step(s):
    with pytest.raises(ValueError, match="step must be >= 0"):
        s(-1)
    with pytest.raises(TypeError, match="step must be a real number"):
        s("3")
    assert type(s).__name__ in repr(s)


# --- ReduceLROnPlateau ----------------------------------------------------------

METRICS = [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.8999, 0.7, 0.71, 0.72, 0.73, float("nan"),
           0.74, 0.75, 0.76, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5] * 3

PLATEAU_KW = [dict(patience=2), dict(patience=1, cooldown=2, factor=0.5),
              dict(mode="max", patience=0, threshold=0.01, threshold_mode="abs"),
              dict(patience=1, min_lr=0.02, factor=0.3), dict(patience=0, eps=0.05)]


@pytest.mark.parametrize("kw", PLATEAU_KW)
def test_plateau_matches_torch(kw):
    metrics = [-m for m in METRICS] if kw.get("mode") == "max" else METRICS
    topt = _torch_opt(0.1, groups=2)
    tsched = TL.ReduceLROnPlateau(topt, **kw)
    # One-group API (opt.lr) and the param_groups API.
    single = fo.SGD({"w": np.zeros(2)}, lr=0.1)
    grouped = Grouped([0.1, 0.2])
    ours = [L.ReduceLROnPlateau(single, **kw), L.ReduceLROnPlateau(grouped, **kw)]
    for m in metrics:
        tsched.step(m)
        for s in ours:
            s.step(m)
        want = [g["lr"] for g in topt.param_groups]
        assert single.lr == want[0]
        assert [g["lr"] for g in grouped.param_groups] == want
        assert ours[1].get_last_lr() == want
        assert ours[1].num_bad_epochs == tsched.num_bad_epochs
        assert ours[1].best == tsched.best or (math.isnan(ours[1].best) and math.isnan(tsched.best))
    assert single.lr < 0.1


def test_plateau_per_group_min_lr_and_errors():
    grouped = Grouped([0.1, 0.2])
    s = L.ReduceLROnPlateau(grouped, patience=0, min_lr=[0.05, 0.0], factor=0.5)
    for m in (1.0, 2.0, 3.0, 4.0):
        s.step(m)
    assert [g["lr"] for g in grouped.param_groups] == [0.05, 0.2 * 0.5 ** 3]
    with pytest.raises(ValueError, match="min_lr has 1 entries for 2 parameter groups"):
        L.ReduceLROnPlateau(grouped, min_lr=[0.1])
    with pytest.raises(ValueError, match="factor must be < 1"):
        L.ReduceLROnPlateau(grouped, factor=1.0)
    with pytest.raises(ValueError, match="mode must be one of"):
        L.ReduceLROnPlateau(grouped, mode="lowest")
    with pytest.raises(TypeError, match="optimizer must have param_groups or lr"):
        L.ReduceLROnPlateau(object())
    with pytest.raises(TypeError, match="metrics must be a real number"):
        s.step("0.5")
    with pytest.raises(TypeError, match="metrics must be a real number, got ndarray"):
        s.step(np.array([0.5, 0.4]))
    # A one-element array is its value, as torch takes a one-element tensor.
    epoch = s.last_epoch
    s.step(np.array([0.5]))
    assert s.last_epoch == epoch + 1


def test_plateau_refuses_a_schedule_and_changes_nothing():
    sched = L.StepLR(0.1, 5)
    grouped = Grouped([0.1, sched])
    s = L.ReduceLROnPlateau(grouped, patience=0)
    s.step(1.0)
    with pytest.raises(TypeError, match="group 1's lr is StepLR"):
        s.step(2.0)
    assert grouped.param_groups[0]["lr"] == 0.1 and grouped.param_groups[1]["lr"] is sched
    assert s.num_bad_epochs == 0 and s.best == 1.0 and s.last_epoch == 1


def _grouped_sgd(a, b):
    """fo.SGD over two parameter groups (rates 0.1 and 0.2)."""
    return fo.SGD([{"params": {"a": a}, "lr": 0.1}, {"params": {"b": b}, "lr": 0.2}], lr=0.1)


def test_plateau_lowers_each_group_of_a_real_optimizer(backend):
    a, b = np.zeros(2), np.zeros(2)
    opt = _grouped_sgd(a, b)
    s = L.ReduceLROnPlateau(opt, patience=0, factor=0.5)
    s.step(1.0)
    s.step(2.0)  # no improvement: both groups halve
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.1]
    opt.step({"a": np.ones(2), "b": np.ones(2)})
    assert a.tolist() == [-0.05, -0.05] and b.tolist() == [-0.1, -0.1]
