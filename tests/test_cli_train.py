"""The command line's ``train`` demo, its errors (bad subcommands, a bad
``FUSEDOPTIM_BACKEND``), and how ``bench`` reports a failed measurement and
warms the JIT before timing."""

import json
import os
import subprocess
import sys

import pytest

import fusedoptim
from fusedoptim.cli import main
from fusedoptim.cli.bench import workloads as B
from cli_common import PNG, _one_line_error, yardstick  # noqa: F401 - yardstick: fixture


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


def test_train_plot_without_extension_writes_that_path(tmp_path, capsys):
    """A --plot path without an extension is written as PNG to that very
    path (the one checked and reported), not to '<path>.png'."""
    pytest.importorskip("matplotlib")
    path = tmp_path / "moons"
    assert main(["train", "--epochs", "1", "--optimizer", "gd", "--decay", "none", "-q",
                 "--plot", str(path)]) == 0
    assert f"wrote {path}" in capsys.readouterr().err
    assert path.read_bytes()[:8] == PNG
    assert not (tmp_path / "moons.png").exists()


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


# --- train's argument checks ------------------------------------------------------

# A short run, so that an option that slipped through fails fast.
_SHORT = ["train", "--epochs", "1", "--optimizer", "gd", "--decay", "none", "-q"]


@pytest.mark.parametrize("option, value", [
    ("--lr", "inf"), ("--lr", "nan"), ("--decay-rate", "inf"), ("--decay-rate", "1e309"),
    ("--epsilon", "inf"), ("--noise", "inf"), ("--noise=-inf", None), ("--beta", "nan"),
])
def test_train_float_options_refuse_non_finite(capsys, option, value):
    argv = _SHORT + ([option] if value is None else [option, value])
    line = _one_line_error(capsys, argv, f"argument {option.split('=')[0]}:")
    assert "must be a finite number" in line


@pytest.mark.parametrize("value", ["0", "-0.0", "-1e-8"])
def test_train_epsilon_must_be_positive(capsys, value):
    """With epsilon 0 a dead ReLU unit's 0 / (sqrt(0) + 0) turned RMSProp
    and Adam into NaN on the first step."""
    _one_line_error(capsys, _SHORT + [f"--epsilon={value}"], "argument --epsilon: epsilon must be > 0.0")


def test_train_out_of_memory_names_its_own_option(monkeypatch, capsys):
    from fusedoptim.cli.train import command

    def exhausted(args):
        raise MemoryError

    monkeypatch.setattr(command, "_train_all", exhausted)
    assert main(_SHORT) == 1
    assert capsys.readouterr().err.strip() == \
        "fusedoptim train: error: out of memory (try fewer --samples)"


@pytest.mark.parametrize("seed", ["-1", "4294967296", "99999999999"])
def test_train_seed_out_of_range_is_a_usage_error(capsys, seed):
    _one_line_error(capsys, _SHORT + ["--seed", seed], "argument --seed: must be in [0, 2**32 - 1]")


def test_train_largest_seed_runs(capsys):
    assert main(_SHORT + ["--seed", str(2**32 - 1)]) == 0


@pytest.mark.parametrize("decay", ["none", "inverse-time"])
@pytest.mark.parametrize("option", ["--decay-interval", "--time-interval"])
def test_train_decay_interval_only_with_staircase(capsys, decay, option):
    argv = ["train", "--epochs", "1", "--optimizer", "gd", "-q", "--decay", decay, option, "5"]
    _one_line_error(capsys, argv, f"--decay-interval is for --decay staircase, not --decay {decay}")


def test_train_help_does_not_hardcode_the_samples(capsys):
    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "'train acc' is measured on the --samples training points" in text
