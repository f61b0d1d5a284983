"""The command line: ``python -m fusedoptim bench`` end to end, its arguments,
threads and dtypes, and its table.  Its sizes and rows: ``test_cli_rows.py``;
``train``: ``test_cli_train.py``."""

import json
import os
import statistics
import subprocess
import sys

import pytest

import fusedoptim
from fusedoptim.cli import CLIError, main
from fusedoptim.cli.bench import command as bench_command
from fusedoptim.cli.bench import machine, report, runner
from fusedoptim.cli.bench import workloads as B
from cli_common import (  # noqa: F401 - yardstick: fixture
    HAVE_COPY, HAVE_TORCH, PNG, SRC, _one_line_error, yardstick)


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
        # A course-size step is far below the slow-call cut: a batch in
        # each of the 5 rounds.
        assert len(r["times_s"]) == bench_command.QUICK[1] and r["every"] == 1
        assert r["rounds"] == list(range(bench_command.QUICK[1]))
        assert all(t > 0 for t in r["times_s"]) and r["first_call_s"] > 0
        assert r["median_s"] == statistics.median(r["times_s"])
        assert r["bandwidth_gb_s"] == pytest.approx(case.bytes_moved / r["median_s"] / 1e9)
        # The ratios are medians of the per-round ratios, and the ratios of
        # the medians are kept beside them.
        per_round = [c / t for c, t in zip(by_impl["copy"]["times_s"], r["times_s"])]
        assert r["round_ratios"]["copy"] == pytest.approx(per_round)
        assert r["percent_of_limit"] == pytest.approx(100 * statistics.median(per_round))
        assert r["of_medians"]["percent_of_limit"] == pytest.approx(
            100 * by_impl["copy"]["median_s"] / r["median_s"])
        if impl == "copy":
            assert r["speedup_vs_numpy"] is None and r["speedup_vs_torch"] is None
            assert r["percent_of_limit"] == pytest.approx(100.0)
        else:
            assert r["speedup_vs_numpy"] == pytest.approx(statistics.median(
                [b / t for b, t in zip(by_impl["numpy"]["times_s"], r["times_s"])]))
            assert r["of_medians"]["speedup_vs_numpy"] == pytest.approx(base / r["median_s"])
            if HAVE_TORCH:
                assert r["speedup_vs_torch"] == pytest.approx(statistics.median(
                    [b / t for b, t in zip(by_impl["torch"]["times_s"], r["times_s"])]))
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


@pytest.mark.parametrize("command", [
    ["bench", "--size", "course", "--optimizer", "gd", "--backend", "numpy", "--repeat", "1",
     "--warmup", "1", "-q"],
    ["train", "--epochs", "1", "--optimizer", "gd", "--decay", "none", "-q"]])
def test_plot_format_is_checked_before_the_run(monkeypatch, tmp_path, capsys, command):
    pytest.importorskip("matplotlib")
    from fusedoptim.cli.bench import runner as bench_runner
    from fusedoptim.cli.train import command as train_command

    def never(*args, **kwargs):
        raise AssertionError("ran before checking --plot")

    monkeypatch.setattr(bench_runner, "_resolve", never)
    monkeypatch.setattr(train_command, "_train_all", never)
    out = tmp_path / "x.txt"
    line = _one_line_error(capsys, command + ["--plot", str(out)], f"--plot {out}:")
    assert "'txt'" in line and "png" in line and "svg" in line
    assert not out.exists()


def test_plot_format_follows_savefig():
    pytest.importorskip("matplotlib")
    from fusedoptim.cli._output import check_plot_format, require_matplotlib

    require_matplotlib()
    for ok in ("x.png", "x.PDF", "dir.d/x.svg", "x"):  # no extension: matplotlib's png
        check_plot_format(ok)
    with pytest.raises(CLIError, match="--plot x.tx: .*'tx'"):
        check_plot_format("x.tx")


def test_bench_plot_without_extension_writes_that_path(tmp_path, capsys):
    """As train's: PNG at the very path checked and reported, not '<path>.png'."""
    pytest.importorskip("matplotlib")
    path = tmp_path / "speed"
    assert main(["bench", "--size", "course", "--optimizer", "gd", "--backend", "numpy",
                 "--threads", "1", "--repeat", "1", "--warmup", "1", "-q",
                 "--plot", str(path)]) == 0
    assert path.read_bytes()[:8] == PNG and not (tmp_path / "speed.png").exists()


def test_threads_bounded_by_the_library_maximum(monkeypatch, capsys):
    from fusedoptim.backend import MAX_THREADS

    monkeypatch.setattr(runner, "_resolve", lambda *a: pytest.fail("ran the bench"))
    for bad in (str(MAX_THREADS + 1), f"1,{MAX_THREADS * 25}"):
        _one_line_error(capsys, ["bench", "--size", "course", "--optimizer", "gd",
                                 "--backend", "numpy", "--threads", bad],
                        f"argument --threads: must be <= {MAX_THREADS}")
    assert bench_command._thread_counts(f"1,{MAX_THREADS}") == [1, MAX_THREADS]


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


def _fake_doc(times, rounds=None):
    """Records of one big Adam case: ``times`` = {impl: seconds per batch,
    one per round}; ``rounds`` = {impl: the rounds they were timed in}."""
    case = B.Case("adam", "big", "float32")
    recs = []
    for impl, ts in times.items():
        rs = (rounds or {}).get(impl, list(range(len(ts))))
        recs.append({"case": case.name, "optimizer": "adam", "size": "big", "dtype": "float32",
                     "tensors": 1, "elements": case.elements, "bytes_moved": case.bytes_moved,
                     "threads": 2, "impl": impl, "warmup_calls": 1, "first_call_s": ts[0],
                     "rounds": rs, "times_s": ts, "median_s": statistics.median(ts),
                     "error": None})
    return recs


def test_derived_columns():
    # The machine halves its speed after round 0: the per-round ratios see
    # through it (cython is always 0.8 of the copy's speed, 4x numpy's).
    recs = _fake_doc({"copy": [0.05, 0.1, 0.1], "cython": [0.0625, 0.125, 0.125],
                      "numpy": [0.25, 0.5, 0.5], "torch": [0.125, 0.25, 0.25]})
    runner._derive(recs)
    r = {x["impl"]: x for x in recs}
    assert r["cython"]["speedup_vs_numpy"] == pytest.approx(4.0)
    assert r["cython"]["speedup_vs_torch"] == pytest.approx(2.0)
    assert r["cython"]["percent_of_limit"] == pytest.approx(80.0)
    assert r["cython"]["round_ratios"]["copy"] == pytest.approx([0.8] * 3)
    assert r["numpy"]["speedup_vs_numpy"] == pytest.approx(1.0)
    assert r["numpy"]["percent_of_limit"] == pytest.approx(20.0)
    assert r["torch"]["speedup_vs_torch"] == pytest.approx(1.0)
    assert r["copy"]["percent_of_limit"] == pytest.approx(100.0)
    assert r["copy"]["speedup_vs_numpy"] is None and r["copy"]["speedup_vs_torch"] is None
    assert r["cython"]["bandwidth_gb_s"] == pytest.approx(7 * 4 * 2 ** 24 / 0.125 / 1e9)
    assert r["cython"]["per_tensor_above_limit_ns"] == pytest.approx(1e9 * 0.025)

    # Times taken at different moments do not pair: numpy timed in rounds
    # 0 and 2 only is compared with cython's batches of those rounds.
    recs = _fake_doc({"copy": [0.1, 0.05, 0.1], "cython": [0.1, 0.05, 0.2],
                      "numpy": [1.0, 0.4]}, rounds={"numpy": [0, 2]})
    runner._derive(recs)
    r = {x["impl"]: x for x in recs}
    assert r["cython"]["round_ratios"]["numpy"] == pytest.approx([10.0, 2.0])
    assert r["cython"]["speedup_vs_numpy"] == pytest.approx(6.0)
    assert r["cython"]["of_medians"]["speedup_vs_numpy"] == pytest.approx(0.7 / 0.1)
    assert r["cython"]["percent_of_limit"] == pytest.approx(100.0)
    assert r["numpy"]["round_ratios"]["copy"] == pytest.approx([0.1, 0.25])
    assert "torch" not in r["cython"]["round_ratios"] and r["cython"]["speedup_vs_torch"] is None
    # Without a yardstick there is no percentage, and the table says so.
    recs = _fake_doc({"cython": [0.0625], "numpy": [0.25]})
    runner._derive(recs)
    assert all(x["percent_of_limit"] is None for x in recs)


def test_table_layout():
    recs = _fake_doc({"copy": [0.05] * 3, "cython": [0.06, 0.0625, 0.065],
                      "numpy": [0.25] * 3, "torch": [0.125] * 3})
    runner._derive(recs)
    doc = {"machine": machine.machine_info([2]), "results": recs, "skipped": {},
           "load_s": {}, "numba_jit_s": None, "elapsed_s": 1.5,
           "load_average": {"start": 0.5, "end": 0.75},
           "settings": {"timed_batches": 5, "timed_batches_slow": 3, "slow_call_s": 0.1,
                        "warmup_calls": 1, "threads": [2]}}
    text = report.format_table(doc)
    lines = text.splitlines()
    row = next(line for line in lines if " cython " in line)
    assert "62.50 ms" in row and "4.00x" in row and "2.00x" in row and "80%" in row
    assert "vs torch" in lines[3] and "interleaved rounds" in lines[1]
    assert "(limit)" in next(line for line in lines if " copy " in line and "GB/s" not in line)
    assert "cython: speedup vs numpy" in text and "big 4.00x (median 80% of limit)" in text
    assert "took 1.5 s" in text and "load average 0.50" in text
    assert "busy" not in text
    cpus = doc["machine"]["usable_cpus"]
    doc["load_average"]["end"] = cpus * 1.5
    assert "warning: the machine was busy" in report.format_table(doc)


def test_summary_says_its_percent_is_a_median():
    # Three optimizers at 50, 80 and 100% of their limit: the median is 80,
    # the geometric mean 73.7; the line must say which it quotes.
    recs = [{"impl": "cython", "size": "big", "speedup_vs_numpy": x, "percent_of_limit": p}
            for x, p in ((2.0, 50.0), (4.0, 80.0), (8.0, 100.0))]
    line, = report._summary({"results": recs})
    assert "(geometric mean over optimizers)" in line
    assert "big 4.00x (median 80% of limit)" in line


# --- the peers' loading ---------------------------------------------------------------

def test_stale_torch_extension_lock_is_found(monkeypatch, tmp_path):
    # Torch's own lookup of the build directory, pointed at a temporary one
    # (nothing is built: DeepSpeed's kernel takes a minute to compile).
    pytest.importorskip("torch")
    from fusedoptim.cli.bench import peers

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert peers.build_lock("cpu_adam") is None
    lock = tmp_path / "cpu_adam" / "lock"
    lock.touch()
    assert peers.build_lock("cpu_adam") == str(lock)
    assert peers.build_lock("other") is None


def test_captured_loader_can_still_say_a_line(capfd):
    from fusedoptim.cli.bench import peers

    with peers._captured_output() as (text, say):
        os.write(1, b"compiler noise\n")
        say("note: waiting")
        captured = text()
    out, err = capfd.readouterr()
    assert "compiler noise" in captured and "compiler noise" not in out + err
    assert err == "note: waiting\n"


def test_deepspeed_loader_notes_a_stale_lock(monkeypatch, capfd):
    # The loader's note goes out before the build that waits on the lock
    # (DeepSpeed replaced by stand-ins: its build takes a minute).
    import types
    from fusedoptim.cli.bench import peers

    built = []
    fake = types.SimpleNamespace(name="cpu_adam", load=lambda: built.append(True))
    modules = {"deepspeed": types.ModuleType("deepspeed"),
               "deepspeed.ops": types.ModuleType("deepspeed.ops"),
               "deepspeed.ops.adam": types.SimpleNamespace(DeepSpeedCPUAdam="cls"),
               "deepspeed.ops.op_builder": types.SimpleNamespace(CPUAdamBuilder=lambda: fake),
               "deepspeed.utils": types.SimpleNamespace(logger=types.SimpleNamespace(
                   setLevel=lambda level: None))}
    for name, mod in modules.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(peers, "build_lock", lambda name: f"/cache/{name}/lock")
    monkeypatch.setattr(peers, "_loaded", {})
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    assert peers.load("deepspeed") == "cls" and built == [True]
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "/cache/cpu_adam/lock" in err and "delete it" in err
