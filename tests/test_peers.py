"""The bench's peers of the Adam rows (``fusedoptim.cli.bench.peers``):
that DeepSpeed's CPU Adam computes what fusedoptim's Adam and AdamW compute
(so that the bench compares like with like), and how the bench measures and
reports the peers (DeepSpeed on the float32 rows, bitsandbytes' and
torchao's 8-bit AdamW on the ``--state int8`` rows).

CI installs all three (the ``compare`` extra); DeepSpeed's kernel is
compiled at its first use in a run (about a minute, then cached), torchao's
step at its first call.  Without them the tests that need them skip; those
of the bench's handling run anyway.
"""

import importlib.util
import json
import sys

import numpy as np
import pytest

import fusedoptim as fo
from cli_common import _one_line_error, yardstick  # noqa: F401 - yardstick: fixture
from fusedoptim.cli import main
from fusedoptim.cli.bench import peers
from fusedoptim.cli.bench import workloads as B

def _installed(name):
    # Not imported here: collecting the suite would pay for their imports.
    return importlib.util.find_spec(name) is not None


needs_deepspeed = pytest.mark.skipif(not _installed("deepspeed"),
                                     reason="deepspeed not installed")
needs_8bit_peers = pytest.mark.skipif(
    not (_installed("bitsandbytes") and _installed("torchao")),
    reason="bitsandbytes or torchao not installed")

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
    ds = peers.load("deepspeed")(list(theirs.values()), bias_correction=True, amsgrad=False,
                                 adamw_mode=name == "AdamW", **kw)
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


def _bench(tmp_path, capsys, *args):
    """``(stdout, JSON document)`` of a short ``bench`` run at the course
    size with ``args``."""
    out = tmp_path / "b.json"
    assert main(["bench", "--size", "course", *args, "--warmup", "1", "--json", str(out),
                 "-q"]) == 0
    return capsys.readouterr().out, json.loads(out.read_text())


@needs_deepspeed
def test_bench_measures_deepspeed_beside_the_others(tmp_path, capsys, yardstick):
    text, doc = _bench(tmp_path, capsys, "--optimizer", "adam,adamw,gd", "--dtype",
                       "float32,float64", "--backend", "numpy,deepspeed", "--repeat", "2")
    measured = {(r["optimizer"], r["dtype"]) for r in doc["results"] if r["impl"] == "deepspeed"}
    assert measured == {("adam", "float32"), ("adamw", "float32")}
    assert doc["failures"] == 0 and doc["machine"]["deepspeed"]
    r = next(r for r in doc["results"]
             if (r["optimizer"], r["dtype"], r["impl"]) == ("adam", "float32", "numpy"))
    assert r["speedup_vs_deepspeed"] > 0 and len(r["round_ratios"]["deepspeed"]) == 2
    assert "vs deepspeed" in text.splitlines()[3]
    assert "not measured: deepspeed for gd: DeepSpeed's CPU Adam is Adam or AdamW" in text
    assert "DeepSpeed's CPU Adam has no float64 step" in doc["skipped"]["deepspeed for adam"]


@needs_8bit_peers
def test_bench_measures_the_8bit_peers_on_int8_rows(tmp_path, capsys, yardstick):
    text, doc = _bench(tmp_path, capsys, "--optimizer", "adamw", "--state", "float32,int8",
                       "--backend", "numpy,bitsandbytes,torchao", "--repeat", "2")
    measured = {(r["state"], r["impl"]) for r in doc["results"] if r["impl"] in peers.PEERS}
    assert measured == {("int8", "bitsandbytes"), ("int8", "torchao")}
    assert doc["failures"] == 0 and doc["machine"]["bitsandbytes"] and doc["machine"]["torchao"]
    r = next(r for r in doc["results"] if (r["state"], r["impl"]) == ("int8", "numpy"))
    assert r["speedup_vs_bitsandbytes"] > 0 and r["speedup_vs_torchao"] > 0
    assert "vs bitsandbytes" in text and "vs torchao" in text
    assert "keeps int8 state for float32 parameters, not float32" in text


def test_peers_are_measured_only_when_named(tmp_path, capsys, yardstick):
    text, doc = _bench(tmp_path, capsys, "--optimizer", "adam", "--repeat", "1")
    assert not set(peers.PEERS) & set(doc["settings"]["implementations"])
    assert "vs deepspeed" not in text


@pytest.mark.parametrize("name,module", [("deepspeed", "deepspeed.ops.adam"),
                                         ("bitsandbytes", "bitsandbytes"),
                                         ("torchao", "torchao.optim")])
def test_a_missing_peer_is_a_one_line_error(monkeypatch, capsys, name, module):
    monkeypatch.setattr(peers, "_loaded", {})
    monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, module, None)
    _one_line_error(capsys, ["bench", "--backend", name], f"{name} is not installed")


@pytest.mark.parametrize("peer,row,dtype,state,hp,why", [
    ("deepspeed", "sgd", "float32", "float32", {}, "Adam or AdamW, not SGD"),
    ("deepspeed", "adam", "float64", "float32", {}, "no float64 step"),
    ("deepspeed", "adam", "float32", "bfloat16", {}, "keeps float32 state"),
    ("deepspeed", "adam", "float32", "float32", {"amsgrad": True}, "no amsgrad"),
    ("deepspeed", "adamw", "float32", "float32", {"maximize": True}, "no maximize"),
    ("deepspeed", "adam", "float32", "float32", {"weight_decay": 0.1}, None),
    ("deepspeed", "adamw", "float32", "float32", {}, None),
    ("bitsandbytes", "adamw", "float32", "float32", {}, "keeps int8 state"),
    ("bitsandbytes", "adam", "float32", "int8", {"weight_decay": 0.1}, "no L2 weight decay"),
    ("bitsandbytes", "adam", "float32", "int8", {}, None),
    ("torchao", "lion", "float32", "int8", {}, "Adam or AdamW, not Lion"),
    ("torchao", "adamw", "float32", "int8", {}, None),
])
def test_what_a_peer_cannot_step(monkeypatch, peer, row, dtype, state, hp, why):
    cls = B.ROWS[row].__name__
    monkeypatch.setitem(B.STATEFUL, cls, hp)
    got = B.Case(row, "course", dtype, state).unmeasurable(peer)
    assert got is None if why is None else why in got
