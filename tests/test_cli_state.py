"""``fusedoptim bench --state``: the reduced-precision rows of every class
that takes ``state_dtype`` (Adam's two moments and the one-state families'
one slot), with the bytes their state arrays really take."""

import json

import numpy as np
import pytest

from fusedoptim.cli import main
from fusedoptim.cli.bench import workloads as B
from fusedoptim.families import adam_lowp as L


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
