"""The command line: ``python -m fusedoptim bench`` and ``train``."""

import io
import json
import os
import statistics
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
from fusedoptim.cli.bench import machine, report, runner
from fusedoptim.cli.bench import shapes as shapes_module
from fusedoptim.cli.bench import workloads as B

SRC = str(Path(fusedoptim.__file__).resolve().parent.parent)
PNG = b"\x89PNG\r\n\x1a\n"

try:
    import torch  # noqa: F401
    HAVE_TORCH = True
except ImportError:
    HAVE_TORCH = False
try:
    B.yardstick()
    HAVE_COPY = True
except ImportError:
    HAVE_COPY = False


def _numpy_copy_like(rw, ro):
    """The yardstick's arithmetic in NumPy: each read-write array += ro[0]
    (+ ro[1])."""
    assert 1 <= len(rw) <= B.YARDSTICK_MAX_READ_WRITE and 1 <= len(ro) <= 2
    for a in rw:
        np.add(a, ro[0] if len(ro) == 1 else ro[0] + ro[1], out=a)


@pytest.fixture
def yardstick(monkeypatch):
    """The compiled copy yardstick, or a NumPy stand-in where the extension
    is not built, so that the bench's copy path runs either way."""
    if not HAVE_COPY:
        monkeypatch.setattr(B, "yardstick", lambda: _numpy_copy_like)


def _one_line_error(capsys, argv, needle=None):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "error" in lines[0]
    if needle:
        assert needle in lines[0]
    return lines[0]


# --- bench ---------------------------------------------------------------------

def test_bench_quick_end_to_end(tmp_path, capsys, yardstick):
    out_json = tmp_path / "bench.json"
    out_png = tmp_path / "bench.png"
    argv = ["bench", "--quick", "--size", "course", "--optimizer", "adam",
            "--json", str(out_json), "-q"]
    have_mpl = True
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        have_mpl = False
    if have_mpl:
        argv += ["--plot", str(out_png)]
    assert main(argv) == 0
    table = capsys.readouterr().out

    doc = json.loads(out_json.read_text())
    assert doc["schema"] == runner.SCHEMA
    assert doc["command"] == ["fusedoptim"] + argv
    m = doc["machine"]
    for key in ("cpu", "physical_cores", "logical_cpus", "usable_cpus", "threads", "os",
                "python", "fusedoptim", "numpy", "numba", "torch", "default_backend"):
        assert key in m
    assert m["fusedoptim"] == fusedoptim.__version__
    assert m["threads"] == [fusedoptim.get_num_threads()]
    s = doc["settings"]
    assert s["quick"] is True and s["optimizers"] == ["adam"] and s["sizes"] == ["course"]
    assert s["dtypes"] == ["float32"]

    # Every available backend, the baseline, torch where installed, the
    # yardstick; --quick leaves out numba when the compiled backend is there.
    expected = set(fusedoptim.available_backends())
    if "cython" in expected:
        expected.discard("numba")
    if HAVE_TORCH:
        expected.add("torch")
    expected.add("copy")
    assert set(s["implementations"]) == expected
    assert {r["impl"] for r in doc["results"]} == expected
    assert doc["failures"] == 0

    case = B.Case("adam", "course", "float32")
    by_impl = {r["impl"]: r for r in doc["results"]}
    base = by_impl["numpy"]["median_s"]
    for impl, r in by_impl.items():
        assert r["case"] == case.name and r["bytes_moved"] == case.bytes_moved
        assert r["elements"] == case.elements and r["threads"] == m["threads"][0]
        assert r["error"] is None
        # A course-size step is far below the slow-call cut: all 5 batches.
        assert len(r["times_s"]) == bench_command.QUICK[1]
        assert all(t > 0 for t in r["times_s"]) and r["first_call_s"] > 0
        assert r["median_s"] == statistics.median(r["times_s"])
        assert r["bandwidth_gb_s"] == pytest.approx(case.bytes_moved / r["median_s"] / 1e9)
        if impl == "copy":
            assert r["speedup_vs_numpy"] is None
            assert r["percent_of_limit"] == pytest.approx(100.0)
        else:
            assert r["speedup_vs_numpy"] == pytest.approx(base / r["median_s"])
            assert r["percent_of_limit"] == pytest.approx(
                100 * by_impl["copy"]["median_s"] / r["median_s"])
        row = [line.split() for line in table.splitlines() if impl in line.split()
               and ("(limit)" in line or line.rstrip().endswith("%"))]
        assert len(row) == 1, (impl, table)
    assert "% of limit" in table and "adam" in table and "took" in table
    if have_mpl:
        assert out_png.read_bytes()[:8] == PNG


def test_bench_subprocess_plain_progress(tmp_path):
    """``python -m fusedoptim`` as a user runs it; stderr is a pipe, so the
    progress comes as plain lines, without carriage returns."""
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = tmp_path / "b.json"
    p = subprocess.run([sys.executable, "-m", "fusedoptim", "bench", "--quick", "--size",
                        "course", "--optimizer", "gd", "--backend", "numpy", "--json", str(out)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr and "\r" not in p.stderr
    assert "[1/" in p.stderr and f"wrote {out}" in p.stderr
    assert "gd" in p.stdout and "numpy" in p.stdout and "1.00x" in p.stdout
    doc = json.loads(out.read_text())
    assert {r["impl"] for r in doc["results"]} == {"numpy"} | ({"copy"} if HAVE_COPY else set())


def test_subprocess_bad_argument_one_line():
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-m", "fusedoptim", "bench", "--size", "huge"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2
    assert p.stdout == ""
    assert p.stderr.count("\n") == 1 and "Traceback" not in p.stderr
    assert "huge" in p.stderr


@pytest.mark.parametrize("argv, needle", [
    ([], "choose a command"),
    (["frobnicate"], "frobnicate"),
    (["bench", "--size", "huge"], "huge"),
    (["bench", "--optimizer", "adam,lars"], "lars"),
    (["bench", "--optimizer", ","], "empty"),
    (["bench", "--dtype", "float16"], "float16"),
    (["bench", "--backend", "jax"], "jax"),
    (["bench", "--threads", "0"], ">= 1"),
    (["bench", "--threads", "two"], "two"),
    (["bench", "--repeat", "-3"], ">= 1"),
    (["bench", "--bogus"], "--bogus"),
    (["bench", "--json"], "--json"),
    (["train", "--epochs", "0"], ">= 1"),
    (["train", "--beta", "1.0"], "beta"),
    (["train", "--lr", "-1"], "learning rate"),
    (["train", "--decay", "cosine"], "cosine"),
    (["train", "--optimizer", "lion"], "lion"),
    (["train", "--samples", "1"], ">= 2"),
])
def test_bad_arguments(capsys, argv, needle):
    _one_line_error(capsys, argv, needle)


def test_unwritable_output_paths(tmp_path, capsys):
    missing = tmp_path / "no" / "such" / "dir" / "out.json"
    line = _one_line_error(capsys, ["bench", "--json", str(missing)], "--json")
    assert "cannot write" in line
    _one_line_error(capsys, ["bench", "--json", str(tmp_path)], "is a directory")
    _one_line_error(capsys, ["train", "--plot", str(missing.with_suffix(".png"))], "--plot")
    # Nothing was run and nothing was left behind.
    assert not missing.parent.exists()


@pytest.mark.parametrize("command", ["bench", "train"])
def test_plot_without_matplotlib(monkeypatch, tmp_path, capsys, command):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    line = _one_line_error(capsys, [command, "--plot", str(tmp_path / "x.png")], "matplotlib")
    assert "pip install" in line
    assert not (tmp_path / "x.png").exists()


def test_quick_leaves_out_numba_unless_asked(tmp_path, capsys):
    pytest.importorskip("numba")
    if "cython" not in fusedoptim.available_backends():
        pytest.skip("without the compiled backend --quick keeps numba")
    out = tmp_path / "q.json"
    assert main(["bench", "--quick", "--size", "course", "--optimizer", "gd",
                 "--backend", "numba", "--json", str(out), "-q"]) == 0
    assert "numba" in json.loads(out.read_text())["settings"]["implementations"]
    assert main(["bench", "--quick", "--size", "course", "--optimizer", "gd",
                 "--json", str(out)]) == 0
    assert "numba" not in json.loads(out.read_text())["settings"]["implementations"]
    assert "leaves out the numba fallback" in capsys.readouterr().err


def test_unavailable_backend(monkeypatch, capsys, tmp_path):
    from fusedoptim import backend
    real = backend._load

    def fake_load(name):
        if name == "numba":
            raise backend.BackendUnavailable("numba is broken here")
        return real(name)

    monkeypatch.setattr(backend, "_load", fake_load)
    monkeypatch.setitem(sys.modules, "torch", None)
    # Asked for by name: an error.
    _one_line_error(capsys, ["bench", "--backend", "numba"], "numba is broken here")
    _one_line_error(capsys, ["bench", "--backend", "torch"], "torch")
    # By default: skipped with a note, recorded in the JSON (not --quick,
    # which leaves numba out without trying it).
    out = tmp_path / "b.json"
    assert main(["bench", "--repeat", "2", "--warmup", "1", "--size", "course",
                 "--optimizer", "gd", "--json", str(out), "-q"]) == 0
    err = capsys.readouterr().err
    assert "skipping numba" in err and "skipping torch" in err and "Traceback" not in err
    doc = json.loads(out.read_text())
    assert set(doc["skipped"]) >= {"numba", "torch"}
    assert not {"numba", "torch"} & {r["impl"] for r in doc["results"]}


def test_bench_threads_and_dtypes(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", "--size", "course", "--optimizer", "momentum", "--optimizer", "gd",
                 "--dtype", "float32,float64", "--threads", "1,2", "--backend", "numpy",
                 "--repeat", "2", "--warmup", "1", "--json", str(out), "-q"]) == 0
    doc = json.loads(out.read_text())
    keys = {(r["optimizer"], r["dtype"], r["threads"]) for r in doc["results"]}
    assert keys == {(o, d, t) for o in ("momentum", "gd") for d in ("float32", "float64")
                    for t in (1, 2)}
    assert all(len(r["times_s"]) == 2 for r in doc["results"])
    # float64 moves twice the bytes of float32.
    b = {(r["dtype"], r["optimizer"]): r["bytes_moved"] for r in doc["results"]}
    assert b["float64", "gd"] == 2 * b["float32", "gd"]
    table = capsys.readouterr().out
    assert "float64" in table


def test_bench_restores_threads(capsys):
    before = fusedoptim.get_num_threads()
    assert main(["bench", "--size", "course", "--optimizer", "gd", "--backend", "numpy",
                 "--threads", "1", "--repeat", "1", "-q"]) == 0
    assert fusedoptim.get_num_threads() == before


def _fake_doc(medians):
    case = B.Case("adam", "big", "float32")
    recs = []
    for impl, med in medians.items():
        recs.append({"case": case.name, "optimizer": "adam", "size": "big", "dtype": "float32",
                     "tensors": 1, "elements": case.elements, "bytes_moved": case.bytes_moved,
                     "threads": 2, "impl": impl, "warmup_calls": 1, "first_call_s": med,
                     "times_s": [med * 0.9, med, med * 1.1], "median_s": med, "error": None})
    return recs


def test_derived_columns():
    recs = _fake_doc({"copy": 0.05, "cython": 0.0625, "numpy": 0.25})
    runner._derive(recs)
    r = {x["impl"]: x for x in recs}
    assert r["cython"]["speedup_vs_numpy"] == pytest.approx(4.0)
    assert r["cython"]["percent_of_limit"] == pytest.approx(80.0)
    assert r["numpy"]["speedup_vs_numpy"] == pytest.approx(1.0)
    assert r["numpy"]["percent_of_limit"] == pytest.approx(20.0)
    assert r["copy"]["percent_of_limit"] == pytest.approx(100.0)
    assert r["cython"]["bandwidth_gb_s"] == pytest.approx(7 * 4 * 2 ** 24 / 0.0625 / 1e9)
    # Without a yardstick there is no percentage, and the table says so.
    recs = _fake_doc({"cython": 0.0625, "numpy": 0.25})
    runner._derive(recs)
    assert all(x["percent_of_limit"] is None for x in recs)


def test_table_layout():
    recs = _fake_doc({"copy": 0.05, "cython": 0.0625, "numpy": 0.25})
    runner._derive(recs)
    doc = {"machine": machine.machine_info([2]), "results": recs, "skipped": {},
           "load_s": {}, "numba_jit_s": None, "elapsed_s": 1.5,
           "load_average": {"start": 0.5, "end": 0.75},
           "settings": {"timed_batches": 5, "timed_batches_slow": 3, "slow_call_s": 0.1,
                        "warmup_calls": 1, "threads": [2]}}
    text = report.format_table(doc)
    lines = text.splitlines()
    row = next(line for line in lines if " cython " in line)
    assert "62.50 ms" in row and "4.00x" in row and "80%" in row
    assert "(limit)" in next(line for line in lines if " copy " in line and "GB/s" not in line)
    assert "cython: speedup vs numpy" in text and "big 4.00x (80% of limit)" in text
    assert "took 1.5 s" in text and "load average 0.50" in text
    assert "busy" not in text
    cpus = doc["machine"]["usable_cpus"]
    doc["load_average"]["end"] = cpus * 1.5
    assert "warning: the machine was busy" in report.format_table(doc)


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
    """A step slower than the slow-call cut gets the batches that fit in
    the budget, at least SLOW_MIN_REPEAT, and one warm-up call after the
    first."""
    calls = []

    def slow():
        calls.append(1)
        time.sleep(runner.QUICK_SLOW_CALL * 1.5)

    monkeypatch.setattr(B, "make_step", lambda case, impl, threads=None: slow)
    case = B.Case("gd", "course", "float32")
    first, warmup, times = runner._time_one(case, "numpy", 1, 3, 15, budget=0.1)
    assert first >= runner.QUICK_SLOW_CALL and warmup == 2
    assert len(times) == runner.SLOW_MIN_REPEAT and len(calls) == 2 + runner.SLOW_MIN_REPEAT
    # --quick: the slow repeat count, the warm-up as asked.
    calls.clear()
    first, warmup, times = runner._time_one(case, "numpy", 1, 1, 5, slow_repeat=3)
    assert warmup == 1 and len(times) == 3 and len(calls) == 4


# --- bench rows: derived from the registry -------------------------------------

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


# --- train -----------------------------------------------------------------------

def test_train_few_epochs(tmp_path, capsys):
    png = tmp_path / "moons.png"
    argv = ["train", "--epochs", "3", "--print-every", "1", "--optimizer", "adam,gd",
            "--decay", "inverse-time"]
    try:
        import matplotlib  # noqa: F401
        argv += ["--plot", str(png)]
    except ImportError:
        png = None
    assert main(argv) == 0
    out = capsys.readouterr().out
    for label in ("adam", "gd", "adam + inverse-time", "gd + inverse-time"):
        for epoch in range(3):
            assert f"{label:<26} cost after epoch {epoch:>6}:" in out
    table = out[out.index("optimizer "):].splitlines()
    rows = [line.split() for line in table[2:6]]
    assert [(r[0], r[1]) for r in rows] == [("adam", "none"), ("gd", "none"),
                                           ("adam", "inverse-time"), ("gd", "inverse-time")]
    # The decayed rate after epoch 2 is update_lr(0.0007, 2, 1).
    assert rows[2][2] == f"{fusedoptim.update_lr(0.0007, 2, 1.0):.3g}"
    for r in rows:
        assert r[4].endswith("%") and 0 <= float(r[4][:-1]) <= 100
    if png is not None:
        assert png.read_bytes()[:8] == PNG


def test_train_quiet_prints_no_cost_lines(capsys):
    assert main(["train", "--epochs", "3", "--print-every", "1", "--optimizer", "gd",
                 "--decay", "none", "-q"]) == 0
    out = capsys.readouterr().out
    assert "cost after epoch" not in out
    assert "optimizer " in out and out.count("\ngd ") == 1


def test_train_decay_interval_default_scales_with_short_runs():
    from fusedoptim.cli.train.command import decay_interval
    assert decay_interval(5000) == 1000          # the course's interval
    assert decay_interval(1001) == 1000
    assert decay_interval(1000) == 200           # 1000 would never fire in epochs 0..999
    assert decay_interval(3) == 1
    assert decay_interval(1000, 1000) == 1000    # asked for: kept


def _final_costs(out):
    table = out[out.index("optimizer "):].splitlines()[2:]
    return {(r.split()[0], r.split()[1]): r.split()[3] for r in table if r.strip()
            and not r.startswith("final")}


def test_train_short_staircase_run_decays(capsys):
    argv = ["train", "--epochs", "20", "--optimizer", "adam", "-q"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "staircase decay every 4 epochs" in out
    costs = _final_costs(out)
    assert costs[("adam", "none")] != costs[("adam", "staircase")]
    # With the course's interval stated explicitly, 20 epochs never decay.
    assert main(argv + ["--decay-interval", "1000"]) == 0
    costs = _final_costs(capsys.readouterr().out)
    assert costs[("adam", "none")] == costs[("adam", "staircase")]


def test_subcommand_errors_name_the_subcommand(capsys):
    _one_line_error(capsys, ["bench", "--quick", "extra"], "fusedoptim bench: error:")
    _one_line_error(capsys, ["train", "--epochs", "0"], "fusedoptim train: error:")
    _one_line_error(capsys, ["train", "stray"], "fusedoptim train: error: unrecognized")


def _run_cli(args, env_extra):
    env = dict(os.environ, **env_extra)
    return subprocess.run([sys.executable, "-m", "fusedoptim", *args], capture_output=True,
                          text=True, env=env, timeout=120)


@pytest.mark.parametrize("env", [{"FUSEDOPTIM_BACKEND": "bogus"},
                                 {"FUSEDOPTIM_NUM_THREADS": "0"}])
def test_bad_backend_environment_help_works_and_commands_fail_in_one_line(env):
    for args in (["--help"], ["bench", "--help"], ["train", "--help"], ["--version"]):
        p = _run_cli(args, env)
        assert p.returncode == 0 and "Traceback" not in p.stderr, (args, p.stderr)
    for cmd in ("bench", "train"):
        p = _run_cli([cmd, "-q"], env)
        assert p.returncode == 2 and "Traceback" not in p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"fusedoptim {cmd}: error: FUSEDOPTIM_")


def test_bad_backend_environment_still_raises_for_library_import():
    env = dict(os.environ, FUSEDOPTIM_BACKEND="bogus")
    p = subprocess.run([sys.executable, "-c", "import fusedoptim"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert p.returncode != 0 and "ValueError: FUSEDOPTIM_BACKEND='bogus'" in p.stderr


def test_train_without_decay_runs(capsys):
    before = fusedoptim.get_backend()
    assert main(["train", "--epochs", "2", "--decay", "none", "--optimizer", "momentum",
                 "--backend", "numpy", "-q"]) == 0
    out = capsys.readouterr().out
    assert "momentum + " not in out and "backend numpy" in out
    assert fusedoptim.get_backend() == before


def test_failed_measurement_is_reported(monkeypatch, capsys, tmp_path):
    real = B.make_step

    def make_step(case, impl, threads=None, seed=0):
        if impl == "numpy":
            raise RuntimeError("kernel exploded")
        return real(case, impl, threads=threads, seed=seed)

    monkeypatch.setattr(B, "make_step", make_step)
    out = tmp_path / "b.json"
    assert main(["bench", "--size", "course", "--optimizer", "gd", "--backend", "numpy",
                 "--repeat", "1", "--json", str(out)]) == 1
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err and "kernel exploded" in cap.err
    assert "FAILED" in cap.out
    doc = json.loads(out.read_text())
    assert doc["failures"] == 1
    r = next(r for r in doc["results"] if r["impl"] == "numpy")
    assert r["error"] == "RuntimeError: kernel exploded" and r["median_s"] is None


def test_jit_warmup_before_timing(monkeypatch, tmp_path, capsys, yardstick):
    """The numba path (warm-up, then timing), with the reference kernels
    standing in for numba where it is not installed."""
    from fusedoptim import backend
    if "numba" not in fusedoptim.available_backends():
        monkeypatch.setitem(backend._loaded, "numba", backend._load("numpy"))
    calls = []
    real = B.make_step

    def make_step(case, impl, threads=None, seed=0):
        calls.append((case.size, impl))
        return real(case, impl, threads=threads, seed=seed)

    monkeypatch.setattr(B, "make_step", make_step)
    out = tmp_path / "b.json"
    assert main(["bench", "--size", "course,mlp", "--optimizer", "gd,adam", "--backend",
                 "numba", "--repeat", "1", "--json", str(out), "-q"]) == 0
    doc = json.loads(out.read_text())
    assert doc["numba_jit_s"] > 0 and doc["numba_jit_cpu_s"] >= 0
    # Serial (course) and parallel (mlp) variants of each optimizer were
    # compiled before the first timed case.
    first_timed = calls.index(("course", "copy"))
    assert sorted(calls[:first_timed]) == sorted(
        (s, "numba") for s in ("course", "mlp") for _ in ("gd", "adam"))
    assert {r["impl"] for r in doc["results"]} >= {"numba", "numpy"}


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
    assert up.main(["--readme", str(readme), "--charts", str(tmp_path), "--only", "train",
                    "--train-args", "--epochs 3 --optimizer gd --decay none"]) == 0
    text = readme.read_text()
    assert "```text\nold\n```\n## Train" in text          # bench block untouched
    assert "\noptimizer  decay" in text and "\ngd         none" in text
    if (tmp_path / "train.png").exists():
        assert (tmp_path / "train.png").read_bytes()[:8] == PNG
