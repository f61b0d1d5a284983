"""DeepSpeed's CPU Adam, the bench's ``deepspeed`` implementation
(``fusedoptim.cli.bench.peers``): that it computes what fusedoptim's Adam
and AdamW compute (so that the bench compares like with like), and how the
bench measures and reports it.

CI installs DeepSpeed (the ``compare`` extra); its kernel is compiled at
the first use in a run (about a minute, then cached).  Without DeepSpeed
the tests that need it skip; those of the bench's handling run anyway.
"""

import json
import sys

import numpy as np
import pytest

import fusedoptim as fo
from cli_common import _one_line_error, yardstick  # noqa: F401 - yardstick: fixture
from fusedoptim.cli import main
from fusedoptim.cli.bench import peers
from fusedoptim.cli.bench import workloads as B

try:
    import deepspeed  # noqa: F401
    HAVE_DEEPSPEED = True
except ImportError:
    HAVE_DEEPSPEED = False

needs_deepspeed = pytest.mark.skipif(not HAVE_DEEPSPEED, reason="deepspeed not installed")

STEPS = 500
SHAPES = [(3, 4), (17,), (5, 6, 7), (64, 33), (1000,)]

CASES = {
    "adam": ("Adam", dict(lr=1e-3)),
    "adam-l2": ("Adam", dict(lr=1e-3, weight_decay=0.1)),
    "adam-betas": ("Adam", dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6)),
    "adamw": ("AdamW", dict(lr=1e-3, weight_decay=0.01)),
    "adamw-all": ("AdamW", dict(lr=1e-2, betas=(0.85, 0.995), eps=1e-7, weight_decay=0.1)),
}


def _error(x, ref):
    """max |x - ref| / max |ref| of one tensor, as tests/test_torch_parity.py
    measures parity."""
    return float(np.max(np.abs(x - ref)) / np.max(np.abs(ref)))


@needs_deepspeed
@pytest.mark.parametrize("case", list(CASES))
def test_deepspeed_cpu_adam_matches_ours(case):
    """DeepSpeed's float32 steps end as close to our float64 run as our own
    float32 run does (each within 2e-5 after 500 steps; AdamW's shrink of
    the parameter, rounded every step, drifts most).  Compared with each
    other directly, the two float32 runs differ by up to that much."""
    import torch

    name, kw = CASES[case]
    rng = np.random.default_rng(3)
    params = {f"w{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(SHAPES)}
    exact = {k: v.astype(np.float64) for k, v in params.items()}
    theirs = {k: torch.from_numpy(v.copy()) for k, v in params.items()}
    ours, ours64 = getattr(fo, name)(params, **kw), getattr(fo, name)(exact, **kw)
    ds = peers.load()(list(theirs.values()), bias_correction=True, amsgrad=False,
                      adamw_mode=peers.ADAMW_MODE[name], **kw)
    for _ in range(STEPS):
        grads = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
        for k, t in theirs.items():
            t.grad = torch.from_numpy(grads[k])
        ours.step(grads)
        ours64.step({k: g.astype(np.float64) for k, g in grads.items()})
        ds.step()
    for k, t in theirs.items():
        e_ours, e_ds = _error(params[k], exact[k]), _error(t.numpy(), exact[k])
        assert e_ours <= 2e-5 and e_ds <= 2e-5, (k, e_ours, e_ds)


@needs_deepspeed
def test_bench_measures_deepspeed_beside_the_others(tmp_path, capsys, yardstick):
    out = tmp_path / "b.json"
    assert main(["bench", "--size", "course", "--optimizer", "adam,adamw,gd", "--dtype",
                 "float32,float64", "--backend", "numpy,deepspeed", "--repeat", "2",
                 "--warmup", "1", "--json", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    doc = json.loads(out.read_text())
    measured = {(r["optimizer"], r["dtype"]) for r in doc["results"] if r["impl"] == "deepspeed"}
    assert measured == {("adam", "float32"), ("adamw", "float32")}
    assert doc["failures"] == 0 and doc["machine"]["deepspeed"]
    r = next(r for r in doc["results"]
             if (r["optimizer"], r["dtype"], r["impl"]) == ("adam", "float32", "numpy"))
    assert r["speedup_vs_deepspeed"] > 0 and len(r["round_ratios"]["deepspeed"]) == 2
    assert "vs deepspeed" in text.splitlines()[3]
    assert "not measured: deepspeed for gd: DeepSpeed's CPU optimizer is Adam or AdamW" in text
    assert "DeepSpeed's CPU Adam has no float64 step" in doc["skipped"]["deepspeed for adam"]


def test_deepspeed_is_measured_only_when_named(tmp_path, capsys, yardstick):
    out = tmp_path / "b.json"
    assert main(["bench", "--size", "course", "--optimizer", "adam", "--repeat", "1",
                 "--warmup", "1", "--json", str(out), "-q"]) == 0
    doc = json.loads(out.read_text())
    assert "deepspeed" not in doc["settings"]["implementations"]
    assert "vs deepspeed" not in capsys.readouterr().out


def test_deepspeed_missing_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "deepspeed", None)
    monkeypatch.setitem(sys.modules, "deepspeed.ops.adam", None)
    _one_line_error(capsys, ["bench", "--backend", "deepspeed"], "deepspeed is not installed")


@pytest.mark.parametrize("row,dtype,state,hp,why", [
    ("sgd", "float32", "float32", {}, "Adam or AdamW, not SGD"),
    ("adam", "float64", "float32", {}, "no float64 step"),
    ("adam", "float32", "bfloat16", {}, "no bfloat16 state"),
    ("adam", "float32", "float32", {"amsgrad": True}, "no amsgrad"),
    ("adamw", "float32", "float32", {"maximize": True}, "no maximize"),
    ("adamw", "float32", "float32", {}, None),
])
def test_what_deepspeed_cannot_step(monkeypatch, row, dtype, state, hp, why):
    cls = B.ROWS[row].__name__
    monkeypatch.setitem(B.STATEFUL, cls, hp)
    got = B.Case(row, "course", dtype, state).unmeasurable("deepspeed")
    assert got is None if why is None else why in got
