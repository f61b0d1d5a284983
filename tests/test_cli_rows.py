"""``bench``'s sizes (real models' shapes), its rows (derived from the
registry, torch counterparts included), its JSON and progress output, and the
numbers that stay true (``--markdown``, the busy flag, ``docs/update_readme.py``)."""

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fusedoptim
from fusedoptim.cli import main
from fusedoptim.cli._output import Progress
from fusedoptim.cli.bench import command as bench_command
from fusedoptim.cli.bench import report, runner
from fusedoptim.cli.bench import shapes as shapes_module
from fusedoptim.cli.bench import workloads as B
from cli_common import HAVE_TORCH, PNG, SRC, torch, yardstick  # noqa: F401 - yardstick: fixture


# --- bench sizes: real models' shapes ------------------------------------------

def _elements(shapes):
    return sum(int(np.prod(s)) for s in shapes)


def test_gpt2_shapes():
    shapes = B.SIZES["gpt2"]
    assert len(shapes) == 148 and B.size_elements("gpt2") == 124_439_808
    assert shapes[:2] == [(50257, 768), (1024, 768)]      # wte, wpe; lm_head is tied
    assert sum(len(s) == 2 for s in shapes) == 2 + 12 * 4
    assert sorted({s for s in shapes if len(s) == 1}) == [(768,), (2304,), (3072,)]


def test_resnet50_shapes():
    """torchvision's resnet50(): 53 convolutions without bias, 53
    BatchNorms (weight and bias), the 2048 -> 1000 classifier."""
    shapes = B.SIZES["resnet50"]
    assert len(shapes) == 161 and B.size_elements("resnet50") == 25_557_032
    convs = [s for s in shapes if len(s) == 4]
    assert len(convs) == 53 and convs[0] == (64, 3, 7, 7)
    assert sum(len(s) == 1 for s in shapes) == 2 * 53 + 1
    assert shapes[-2:] == [(1000, 2048), (1000,)]
    # Each convolution is followed by its BatchNorm's weight and bias.
    for i, s in enumerate(shapes[:-2]):
        if len(s) == 4:
            assert shapes[i + 1] == shapes[i + 2] == (s[0],)
    # 3x3 convolutions: one per bottleneck block, 3 + 4 + 6 + 3.
    assert sum(s[2:] == (3, 3) for s in convs) == 16


def test_tiny_shapes():
    shapes = B.SIZES["tiny"]
    sizes = [int(np.prod(s)) for s in shapes]
    assert len(shapes) == 2000 and min(sizes) == 1 and max(sizes) == 4096
    assert B.SIZES["tiny"] == shapes_module.tiny_shapes()      # deterministic
    # Spread over the range, mostly small, and not sorted.
    assert sum(n <= 64 for n in sizes) > 500 and sum(n > 1024 for n in sizes) > 200
    assert sizes != sorted(sizes)
    params, grads = B.make_model(B.Case("adam", "tiny", "float32"))
    assert len(params) == len(grads) == 2000
    assert [a.shape for a in params.values()] == shapes


def _sizes_run(monkeypatch, argv):
    """The sizes ``bench`` would run for ``argv`` (nothing is measured)."""
    seen = {}

    class Stop(Exception):
        pass

    def fake_run(**kw):
        seen.update(kw)
        raise Stop

    monkeypatch.setattr(bench_command, "run", fake_run)
    with pytest.raises(Stop):
        main(["bench", "-q"] + argv)
    return seen["sizes"]


def test_model_sizes_selectable(monkeypatch, capsys):
    assert set(B.MODEL_SIZES) == {"gpt2", "resnet50"}
    # --quick leaves the model sizes out unless --size names them; a full
    # run has every size.
    quick = _sizes_run(monkeypatch, ["--quick"])
    assert quick == [s for s in B.SIZES if s not in B.MODEL_SIZES] and "tiny" in quick
    assert "leaves out the gpt2 and resnet50" in capsys.readouterr().err
    assert _sizes_run(monkeypatch, ["--quick", "--size", "gpt2,tiny", "--size", "resnet50"]) \
        == ["gpt2", "tiny", "resnet50"]
    assert _sizes_run(monkeypatch, []) == list(B.SIZES)
    assert _sizes_run(monkeypatch, ["--quick", "--size", "course,mlp"]) == ["course", "mlp"]
    for size in ("gpt2", "resnet50", "tiny"):
        case = B.Case("adam", size, "float32")
        assert case.elements == _elements(B.SIZES[size])
        assert case.bytes_moved == 7 * 4 * case.elements


def test_tiny_reports_per_tensor(tmp_path, capsys, yardstick):
    out = tmp_path / "b.json"
    assert main(["bench", "--size", "tiny", "--optimizer", "gd", "--backend", "numpy",
                 "--repeat", "1", "--json", str(out), "-q"]) == 0
    table = capsys.readouterr().out
    doc = json.loads(out.read_text())
    by_impl = {r["impl"]: r for r in doc["results"]}
    r = by_impl["numpy"]
    assert r["tensors"] == 2000
    assert r["per_tensor_ns"] == pytest.approx(1e9 * r["median_s"] / 2000)
    copy = by_impl["copy"]["median_s"]
    assert r["per_tensor_above_limit_ns"] == pytest.approx(1e9 * (r["median_s"] - copy) / 2000)
    assert by_impl["copy"]["per_tensor_above_limit_ns"] is None
    line = next(x for x in table.splitlines() if x.startswith("per tensor"))
    assert "gd tiny float32" in line and "2000 tensors" in line and "numpy" in line
    assert "above copy" in line or "below copy" in line


@pytest.mark.skipif(not HAVE_TORCH, reason="needs torch")
def test_torch_counterpart_on_tiny():
    """The torch row steps the 2000 tensors (a few milliseconds)."""
    case = B.Case("adam", "tiny", "float32")
    step = B.make_step(case, "torch", threads=1)
    step()


def test_slow_step_budget(monkeypatch):
    """A step slower than the slow-call cut runs once per batch and joins
    every k-th round: as many rounds as fit in the budget, at least
    SLOW_MIN_REPEAT, after one warm-up call besides the first."""
    calls = []

    def slow():
        calls.append(1)
        time.sleep(runner.QUICK_SLOW_CALL * 1.5)

    monkeypatch.setattr(B, "make_step", lambda case, impl, threads=None: slow)
    case = B.Case("gd", "course", "float32")
    fn, first, warmup, number, every, rewarm = runner._prepare(case, "numpy", 1, 3, 15,
                                                               budget=0.1)
    assert first >= runner.QUICK_SLOW_CALL and warmup == 2 and number == 1 and rewarm == 0
    assert len(calls) == 2 and every == 15 // runner.SLOW_MIN_REPEAT
    assert len(range(0, 15, every)) == runner.SLOW_MIN_REPEAT
    # --quick: about the slow repeat count of the rounds; the warm-up is the
    # first call and the one that judges the step's speed.
    calls.clear()
    fn, first, warmup, number, every, rewarm = runner._prepare(case, "numpy", 1, 1, 5,
                                                               slow_repeat=3)
    assert warmup == 2 and number == 1 and len(range(0, 5, every)) == 3 and len(calls) == 2
    # A fast step: a batch in every round, sized to about 2 ms, each after
    # an untimed call.
    assert runner._schedule(1e-4, 3, 15, budget=10.0) == (3, None, 1, 1)


@pytest.mark.parametrize("first, every", [(0.25, 1), (0.5, 1), (1.0, 2), (3.0, 3), (0.7, 2)])
def test_schedule_fits_the_budget(first, every):
    """15 rounds, 10 s: the calls of a slow step (its warm-up, its batches
    and the untimed call before each when it joins every round) fit in the
    budget (at least SLOW_MIN_REPEAT batches whatever the budget)."""
    warmup, number, k, rewarm = runner._schedule(first, 3, 15, budget=10.0)
    assert number == 1 and k == every and rewarm == int(first * 33 <= 10.0)
    joined = len(range(0, 15, k))
    assert joined >= runner.SLOW_MIN_REPEAT
    calls = warmup + joined * (1 + rewarm)
    assert first * calls <= 10.0 or joined == runner.SLOW_MIN_REPEAT


def test_interleave_pairs_the_rounds():
    """Each round times one batch of every implementation in turn, in the
    order given and reversed in odd rounds; every = k joins rounds 0, k,
    2k, ...; a failing step
    leaves the rounds and is reported."""
    order = []

    def step(name):
        return lambda: order.append(name)

    def broken():
        order.append("bad")
        if order.count("bad") > 2:
            raise RuntimeError("boom")

    errors = {}
    steps = {"a": step("a"), "b": step("b"), "bad": broken}
    out = B.interleave(steps, 4, warmup=1, number={"a": 1, "b": 1, "bad": 1},
                       every={"b": 2}, errors=errors, rewarm={"a": 0, "b": 0, "bad": 0})
    assert order[:3] == ["a", "b", "bad"]           # the warm-ups
    # Rounds alternate the order (even: as given, odd: reversed).
    assert order[3:] == ["a", "b", "bad", "bad", "a", "a", "b", "a"]
    # By default each batch follows one untimed call.
    order.clear()
    B.interleave({"a": step("a"), "b": step("b")}, 2, warmup=0, number={"a": 2, "b": 1})
    assert order == ["a", "a", "a", "b", "b", "b", "b", "a", "a", "a"]
    assert sorted(out["a"]) == [0, 1, 2, 3] and sorted(out["b"]) == [0, 2]
    assert sorted(out["bad"]) == [0] and str(errors["bad"]) == "boom"
    assert B.round_ratios({0: 2.0, 1: 4.0, 2: 6.0}, {0: 1.0, 2: 2.0}) == [2.0, 3.0]
    with pytest.raises(RuntimeError):
        B.interleave({"bad": broken}, 2)


def test_rows_are_the_registered_classes():
    names = tuple(cls.__name__.lower() for cls in fusedoptim.OPTIMIZERS.values())
    assert B.OPTIMIZERS == names
    assert set(names) >= {"gd", "momentum", "sgd", "rmsprop", "adam", "adamw", "adagrad"}
    for name in names:
        cls = fusedoptim.OPTIMIZERS[B.ROWS[name].__name__]
        assert B.ROWS[name] is cls
        hp = B.hyperparameters(cls)
        assert hp["lr"] == B.LR == 1e-4
        for h in cls.hyper:
            assert hp[h.name] == B.STATEFUL.get(cls.__name__, {}).get(h.name, h.default)
    # Momentum and SGD have a momentum buffer to move.
    assert B.hyperparameters(fusedoptim.SGD)["momentum"] == 0.9
    assert B.hyperparameters(fusedoptim.Momentum)["beta"] == 0.9


@pytest.mark.parametrize("row", B.OPTIMIZERS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bytes_moved_are_the_arrays_the_step_uses(row, dtype):
    """p and g, and each state the optimizer allocates, read and written;
    a two-pass family (LAMB) reads p and its second-pass states again."""
    case = B.Case(row, "mlp", dtype)
    params, grads = B.make_model(case)
    opt = case.cls(params, **case.hyperparameters)
    states = len(opt.state)
    again = case.cls.family.second_pass
    arrays = 3 + 2 * states + (1 + len(again) if again else 0)
    assert case.read_write == 1 + states
    assert case.arrays_moved == arrays
    assert case.bytes_moved == case.elements * np.dtype(dtype).itemsize * arrays
    if row != "gd":
        assert states >= 1
    # The row's step is the class's step: it updates the parameters in place.
    before = {k: a.copy() for k, a in params.items()}
    step = B.make_step(case, "numpy")
    with fusedoptim.use_backend("numpy"):
        step()
    params2, _ = B.make_model(case)
    assert all(np.array_equal(before[k], params2[k]) for k in params2)


@pytest.mark.skipif(not HAVE_TORCH, reason="needs torch")
@pytest.mark.parametrize("row", B.OPTIMIZERS)
def test_torch_counterparts_match(row):
    """The torch row runs PyTorch's optimizer with the same hyperparameters:
    the same updates, up to rounding, but for the documented exceptions."""
    from fusedoptim.cli.bench.counterparts import COUNTERPARTS, difference

    case = B.Case(row, "course", "float64")
    name = case.cls.__name__
    if name not in COUNTERPARTS:
        with pytest.raises(B.NotMeasurable, match="no torch counterpart"):
            B.make_step(case, "torch")
        return
    params, grads = B.make_model(case)
    start = {k: a.copy() for k, a in params.items()}
    opt = case.cls(params, **case.hyperparameters)
    tparams, tgrads = B.make_model(case)
    ts = []
    for k, a in tparams.items():
        t = torch.from_numpy(a)
        t.grad = torch.from_numpy(tgrads[k])
        ts.append(t)
    topt = COUNTERPARTS[name](torch.optim, ts, case.hyperparameters)
    for _ in range(3):
        opt.step(grads)
        topt.step()
    for k in params:
        ours, theirs = params[k] - start[k], tparams[k] - start[k]
        close = np.allclose(ours, theirs, rtol=1e-8, atol=1e-12)
        assert close != bool(difference(name, case.hyperparameters)), (name, k)


def test_too_many_arrays_for_the_yardstick(monkeypatch, tmp_path, capsys, yardstick):
    """A row with more read-write arrays than the copy kernel takes gets no
    '% of limit', and the output says so."""
    monkeypatch.setitem(B.STATEFUL, "RMSProp", {"centered": True, "momentum": 0.9})
    case = B.Case("rmsprop", "course", "float32")
    assert case.read_write == 4 > B.YARDSTICK_MAX_READ_WRITE
    assert case.arrays_moved == 9
    with pytest.raises(B.NotMeasurable, match="at most 3"):
        B.make_step(case, "copy")
    out = tmp_path / "b.json"
    assert main(["bench", "--size", "course", "--optimizer", "rmsprop,adam", "--backend",
                 "numpy", "--repeat", "1", "--json", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    doc = json.loads(out.read_text())
    impls = {(r["optimizer"], r["impl"]) for r in doc["results"]}
    assert impls == {("rmsprop", "numpy"), ("adam", "numpy"), ("adam", "copy")}
    assert doc["failures"] == 0
    assert "at most 3" in doc["skipped"]["copy for rmsprop"]
    assert "not measured: copy for rmsprop: RMSProp reads and writes 4 arrays" in text
    r = next(r for r in doc["results"] if r["optimizer"] == "rmsprop")
    assert r["percent_of_limit"] is None and r["bytes_moved"] == case.bytes_moved
    assert doc["settings"]["rows"]["rmsprop"]["hyperparameters"]["centered"] is True


def test_json_names_each_row():
    progress = Progress(io.StringIO(), enabled=False)
    doc = runner.run(["adamw", "gd"], ["course"], ["float32"], [1], ["numpy"], True, 1, 1,
                     progress)
    doc_rows = doc["settings"]["rows"]
    assert doc_rows["adamw"] == {"class": "AdamW", "family": "adam",
                                 "hyperparameters": B.hyperparameters(fusedoptim.AdamW)}
    assert doc_rows["gd"]["family"] == "sgd"
    assert {r["class"] for r in doc["results"]} == {"AdamW", "GD"}
    assert json.loads(json.dumps(doc))["settings"]["rows"]["adamw"]["class"] == "AdamW"


def test_library_does_not_import_the_command_line():
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = ("import sys, fusedoptim, fusedoptim.functional, fusedoptim.optimizer; "
            "print(sorted(m for m in sys.modules if m == 'fusedoptim.cli' "
            "or m.startswith('fusedoptim.cli.')))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def test_console_script_is_the_cli_main():
    pyproject = Path(SRC).parent / "pyproject.toml"
    if not pyproject.exists():
        pytest.skip("not a source checkout")
    tomllib = pytest.importorskip("tomllib")
    target = tomllib.loads(pyproject.read_text())["project"]["scripts"]["fusedoptim"]
    module, func = target.split(":")
    import importlib
    assert getattr(importlib.import_module(module), func) is main
    import fusedoptim.__main__ as shim
    assert shim.main is main


def test_help_explains_percent_of_limit(capsys):
    assert main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    assert "% of limit" in out and "copy" in out and "bandwidth" in out
    # The copy of a --state row, the 8-bit peers' classes, LAMB's second pass.
    assert "float32-state step's" in out and "Adam8bit on Adam rows" in out
    assert "second pass too" in out and "their 8-bit AdamW" not in out
    assert main(["--version"]) == 0
    assert fusedoptim.__version__ in capsys.readouterr().out


class _Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self._tty = tty

    def isatty(self):
        return self._tty


def test_progress_terminal_and_pipe():
    tty = _Stream(True)
    p = Progress(tty)
    p.status("working 1")
    p.status("working 2")
    p.line("note")
    p.status("working 3")
    p.clear()
    text = tty.getvalue()
    assert text.count("\r\x1b[K") == 5 and "note\n" in text and "\n" not in text.replace(
        "note\n", "")

    pipe = _Stream(False)
    p = Progress(pipe)
    p.status("invisible")
    p.line("visible")
    assert pipe.getvalue() == "visible\n"

    quiet = _Stream(False)
    p = Progress(quiet, enabled=False)
    p.line("progress")
    p.line("warning", always=True)
    assert quiet.getvalue() == "warning\n"


# --- numbers that stay true: --markdown, the busy flag, docs/update_readme.py ----

def test_bench_markdown_has_machine_date_and_table(capsys, yardstick):
    assert main(["bench", "--quick", "--size", "course", "--optimizer", "gd", "--backend",
                 "numpy", "--repeat", "1", "--markdown", "-q"]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith("Measured on 20") and " UTC with `fusedoptim bench " in first
    assert "load average" in first or "not available" in first
    assert "| optimizer | size | dtype | thr | impl | time/step |" in out
    rows = [line for line in out.splitlines() if line.startswith("| gd ")]
    assert len(rows) == 1 and "| course | float32 |" in rows[0]
    assert any(line.startswith("|  |  |  |  | numpy |") or "| numpy |" in rows[0]
               for line in out.splitlines())


def _doc(start, end, cpus=2):
    return {"machine": {"usable_cpus": cpus, "logical_cpus": cpus},
            "load_average": {"start": start, "end": end}}


def test_busy_machine_is_flagged_above_the_threshold():
    assert report.busy(_doc(0.2, 0.9)) is None                # <= 0.5 per CPU
    assert report.busy(_doc(0.2, 1.2)) == (1.2, 2)           # at the end
    assert report.busy(_doc(3.0, 0.1)) == (3.0, 2)           # at the start
    assert report.busy(_doc(None, None)) is None             # no load average here


def _update_readme():
    import importlib.util
    path = Path(__file__).resolve().parent.parent / "docs" / "update_readme.py"
    if not path.exists():
        pytest.skip("docs/update_readme.py is not in this tree")
    spec = importlib.util.spec_from_file_location("update_readme", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_update_readme_replaces_the_quoted_blocks(tmp_path):
    up = _update_readme()
    text = "intro\n## What `bench` shows\nx\n```text\nold bench\n```\n" \
           "## Train the course network\n```text\nold train\n```\nend\n"
    text = up.replace_block(text, up.BENCH_HEADING, "new bench")
    text = up.replace_block(text, up.TRAIN_HEADING, "new train\n")
    assert text == ("intro\n## What `bench` shows\nx\n```text\nnew bench\n```\n"
                    "## Train the course network\n```text\nnew train\n```\nend\n")
    with pytest.raises(ValueError, match="no heading"):
        up.replace_block("nothing", up.BENCH_HEADING, "x")


def test_update_readme_runs_the_commands(tmp_path):
    up = _update_readme()
    readme = tmp_path / "README.md"
    readme.write_text("## What `bench` shows\n```text\nold\n```\n"
                      "## Train the course network\n```text\nold\n```\n")
    assert up.main(["--readme", str(readme), "--charts", str(tmp_path), "--dry-run",
                    "--bench-args", "--quick --size course --optimizer gd --backend numpy "
                                    "--repeat 1",
                    "--train-args", "--epochs 3 --optimizer gd --decay none"]) == 0
    assert "old" in readme.read_text()      # --dry-run writes nothing
    try:    # the test extra has no matplotlib: then the tables only
        import matplotlib  # noqa: F401
        charts = []
    except ImportError:
        charts = ["--no-charts"]
    assert up.main(["--readme", str(readme), "--charts", str(tmp_path), "--only", "train",
                    "--train-args", "--epochs 3 --optimizer gd --decay none", *charts]) == 0
    text = readme.read_text()
    assert "```text\nold\n```\n## Train" in text          # bench block untouched
    assert "\noptimizer  decay" in text and "\ngd         none" in text
    assert (tmp_path / "train.png").exists() == (not charts)
    if not charts:
        assert (tmp_path / "train.png").read_bytes()[:8] == PNG
