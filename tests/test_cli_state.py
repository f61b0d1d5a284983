"""``fusedoptim bench --state``: the reduced-precision rows of every class
that takes ``state_dtype`` (Adam's two moments and the one-state families'
one slot), with the bytes their state arrays really take."""

import json

import numpy as np
import pytest

from fusedoptim.cli import main
from fusedoptim.cli.bench import workloads as B
from fusedoptim.families import adam_lowp as L
from cli_common import yardstick  # noqa: F401 - fixture


@pytest.mark.parametrize("state", ["bfloat16", "int8"])
@pytest.mark.parametrize("row", B.STATE_ROWS)
def test_state_rows_move_their_state_arrays(monkeypatch, row, state):
    # a tensor with int8 blocks (a partial last one) and one under
    # QMIN_ELEMENTS (float32 state in int8 mode)
    monkeypatch.setitem(B.SIZES, "lowp-test", [(L.QMIN_ELEMENTS + 300,), (17,)])
    case = B.Case(row, "lowp-test", "float32", state)
    params, grads = B.make_model(case)
    opt = case.cls(params, **case.hyperparameters)
    opt.step(grads)
    state_bytes = sum(a.nbytes for d in opt.state.values() for a in d.values())
    # p read and written, g read: 3 float32 arrays; each state array read and written
    assert case.bytes_moved == 3 * 4 * case.elements + 2 * state_bytes
    slots = 2 if row in ("adam", "adamw") else 1
    assert case.read_write == 1 + slots


def test_every_state_row_takes_a_reduced_state():
    for row in B.STATE_ROWS:
        cls = B.ROWS[row]
        for state in ("bfloat16", "int8"):
            cls({"w": np.zeros(8, np.float32)}, **B.hyperparameters(cls), state_dtype=state)
    rows = {c.optimizer for c in B.cases(states=("int8",), sizes=("course",))}
    assert rows == set(B.STATE_ROWS)


def test_bench_runs_one_state_rows(tmp_path):
    out = tmp_path / "b.json"
    assert main(["bench", "--size", "course", "--optimizer", "momentum,lion,adam",
                 "--state", "float32,bfloat16", "--backend", "numpy", "--threads", "1",
                 "--repeat", "1", "--warmup", "1", "--json", str(out), "-q"]) == 0
    doc = json.loads(out.read_text())
    got = {(r["optimizer"], r["state"]): r["bytes_moved"] for r in doc["results"]
           if r["impl"] == "numpy"}
    assert set(got) == {(o, s) for o in ("momentum", "lion", "adam")
                        for s in ("float32", "bfloat16")}
    n = B.size_elements("course")
    for o, slots in (("momentum", 1), ("lion", 1), ("adam", 2)):
        assert got[o, "bfloat16"] == 3 * 4 * n + 2 * slots * 2 * n
        assert got[o, "float32"] == 3 * 4 * n + 2 * slots * 4 * n


@pytest.mark.parametrize("argv, needle", [
    (["--optimizer", "gd", "--state", "int8"], "not --optimizer gd"),
    (["--optimizer", "gd,lamb", "--state", "int8,bfloat16"], "not --optimizer gd,lamb"),
    (["--optimizer", "adam", "--state", "int8", "--dtype", "float64"], "not --dtype float64"),
])
def test_bench_without_any_case_is_a_usage_error(monkeypatch, capsys, argv, needle):
    from cli_common import _one_line_error
    from fusedoptim.cli.bench import runner

    monkeypatch.setattr(runner, "_resolve", lambda *a: pytest.fail("loaded the backends"))
    line = _one_line_error(capsys, ["bench", "--size", "course", "--backend", "numpy",
                                    "--repeat", "1", "--warmup", "1", "-q"] + argv,
                           "nothing to measure")
    assert "--state" in line and needle in line


def test_bench_says_which_state_cases_it_leaves_out(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", "--size", "course", "--optimizer", "gd,adam", "--state", "int8",
                 "--dtype", "float32,float64", "--backend", "numpy", "--threads", "1",
                 "--repeat", "1", "--warmup", "1", "--json", str(out), "-q"]) == 0
    doc = json.loads(out.read_text())
    assert {(r["optimizer"], r["dtype"], r["state"]) for r in doc["results"]} == {
        ("adam", "float32", "int8")}
    assert "GD takes no state_dtype" in doc["skipped"]["gd --state int8"]
    assert "float32 parameters" in doc["skipped"]["adam float64 --state int8"]
    table = capsys.readouterr().out
    assert "not measured: gd --state int8: GD takes no state_dtype" in table
    assert "not measured: adam float64 --state int8: " in table


@pytest.mark.parametrize("state", ["bfloat16", "int8"])
def test_copy_rows_count_the_bytes_the_copy_moves(monkeypatch, tmp_path, yardstick, state):
    # A state case's copy is the float32-state step's (B.STATES): its GB/s
    # must count the float32 states it moves, not the reduced ones.
    monkeypatch.setitem(B.SIZES, "lowp-test", [(L.QMIN_ELEMENTS + 300,), (17,)])
    real, moved = B.yardstick(), []

    def spy(rw, ro):  # what one call of the copy reads and writes
        moved.append(sum(2 * a.nbytes for a in rw) + sum(a.nbytes for a in ro))
        return real(rw, ro)

    monkeypatch.setattr(B, "yardstick", lambda: spy)
    out = tmp_path / "b.json"
    assert main(["bench", "--size", "lowp-test", "--optimizer", "momentum,adam", "--state",
                 f"float32,{state}", "--backend", "numpy", "--threads", "1", "--repeat", "1",
                 "--warmup", "1", "--json", str(out), "-q"]) == 0
    doc = json.loads(out.read_text())
    recs = {(r["optimizer"], r["state"], r["impl"]): r for r in doc["results"]}
    for row in ("momentum", "adam"):
        case = B.Case(row, "lowp-test", "float32", state)
        moved.clear()
        B.make_step(case, "copy")()
        copy = recs[row, state, "copy"]
        assert copy["bytes_moved"] == sum(moved) == recs[row, "float32", "copy"]["bytes_moved"]
        assert copy["bandwidth_gb_s"] == pytest.approx(
            copy["bytes_moved"] / copy["median_s"] / 1e9)
        # The step's own record still counts its reduced state.
        assert recs[row, state, "numpy"]["bytes_moved"] == case.bytes_moved < sum(moved)


def test_skip_notes_name_the_state_asked_for():
    from fusedoptim.cli.bench import runner

    skipped: dict = {}
    for state in B.STATES:
        for row in ("adam", "lion"):
            case = B.Case(row, "course", "float32", state)
            runner._case_impls(case, ["numpy", "torch", "bitsandbytes"], skipped)
    for state in ("bfloat16", "int8"):
        assert skipped[f"torch for adam --state {state}"] == (
            f"torch.optim has no {state} optimizer state")
    assert "torch for adam" not in skipped  # float32 Adam has its torch row
    assert "not float32" in skipped["bitsandbytes for adam"]
    assert "not bfloat16" in skipped["bitsandbytes for adam --state bfloat16"]
    assert "bitsandbytes for adam --state int8" not in skipped  # its own rows
    # A reason that does not depend on the state is given once per row.
    assert "not Lion" in skipped["bitsandbytes for lion"]
    assert skipped["torch for lion"] == "Lion has no torch counterpart"
    assert not [k for k in skipped if k.startswith(("bitsandbytes for lion --state",
                                                    "torch for lion --state"))]
    for key, why in skipped.items():
        if " --state " in key:
            assert key.split(" --state ")[1] in why, (key, why)
