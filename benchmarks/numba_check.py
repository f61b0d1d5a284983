"""Bitwise check of the Numba backend against the reference, every flag.

For every registered family, every combination of its flags (plus
``gscale != 1`` and ``weight_decay != 0``), float32 and float64, C and
Fortran parameters, and the serial and the 2-thread parallel driver (forced
by lowering ``_tuning.PARALLEL_MIN_ELEMENTS``), three steps of
``fusedoptim._numba`` must equal ``fusedoptim._reference`` bit for bit
(parameters and every state).  Also checks ``grad_sumsq`` and the jitted
split against ``_tuning.split_start``.  Run::

    PYTHONPATH=src python benchmarks/numba_check.py

Prints a summary and exits 1 on any mismatch.
"""

import copy
import itertools
import sys

import numpy as np

from fusedoptim import _numba as nb
from fusedoptim import _reference, _tuning, _validate
from fusedoptim._numba import _step
from fusedoptim.families import FAMILIES

SHAPES = [(37, 5), (3,), (64, 17), (1, 1), (0, 3), (129, 9)]

SCALARS = {
    "lr": 0.0123, "momentum": 0.87, "dampening": 0.1, "alpha": 0.93, "eps": 1e-3,
    "beta1": 0.9, "beta2": 0.999, "bc1": 1.0 - 0.9 ** 3, "bc2": 1.0 - 0.999 ** 3,
}


def _model(rng, dtype, order, family):
    params, grads, states = {}, {}, {s: {} for s in family.slots}
    for i, shape in enumerate(SHAPES):
        name = f"w{i}"
        params[name] = np.asarray(rng.standard_normal(shape), dtype=dtype, order=order)
        # Gradients in C order: a Fortran parameter's gradient is relaid by gather.
        grads["d" + name] = rng.standard_normal(shape).astype(dtype)
        for s in family.slots:
            init = rng.standard_normal(shape)
            if s in ("sq", "v", "vmax", "sum"):
                init = np.abs(init)
            elif s == "gavg":  # small, so that centered RMSProp's s - gavg**2 is mostly > 0
                init = 0.1 * init
            states[s]["d" + name] = np.asarray(init, dtype=dtype, order=order)
    return params, grads, states


def _combos(family):
    """Every keyword combination: each flag, plus gscale and weight decay on/off."""
    for bits in itertools.product((False, True), repeat=len(family.flags) + 2):
        kw = {k: SCALARS[k] for k in family.scalars if k in SCALARS}
        kw.update(zip(family.flags, bits))
        kw["gscale"] = 0.77 if bits[-2] else 1.0
        kw["weight_decay"] = 0.031 if bits[-1] else 0.0
        yield kw


def _same(a, b):
    return a.shape == b.shape and a.tobytes() == b.tobytes()


def _check_family(family, rng):
    bad = runs = 0
    for dtype, order, threads in itertools.product((np.float32, np.float64), "CF", (1, 2)):
        nb.set_num_threads(threads)
        for kw in _combos(family):
            params, grads, states = _model(rng, dtype, order, family)
            on = family.active_slots(kw)
            mine = (params, grads, states)
            ref = copy.deepcopy(mine)
            nb._last_parallel_threads = 0
            for (p, g, st), backend in ((mine, nb), (ref, _reference)):
                slots = tuple((s, st[s]) if a else _validate.ABSENT
                              for s, a in zip(family.slots, on))
                with np.errstate(invalid="ignore", divide="ignore"):
                    for _ in range(3):
                        getattr(backend, family.name)(p, g, slots, _validate.COURSE, **kw)
            runs += 1
            if nb._last_parallel_threads != (threads if threads > 1 else 0):
                bad += 1
                print(f"WRONG DRIVER {family.name} threads={threads}: "
                      f"{nb._last_parallel_threads}")
            arrays = [("param", mine[0], ref[0])] + [
                (s, mine[2][s], ref[2][s]) for s in family.slots]
            for label, x, y in arrays:
                for k in x:
                    if not _same(x[k], y[k]):
                        bad += 1
                        print(f"MISMATCH {family.name} {np.dtype(dtype)} {order} "
                              f"threads={threads} {label}[{k}] {kw}")
    return bad, runs


def _check_sumsq(rng):
    bad = 0
    for dtype, threads in itertools.product((np.float32, np.float64), (1, 2)):
        nb.set_num_threads(threads)
        params = {f"w{i}": np.zeros(n, dtype) for i, n in enumerate((5000, 3, 9000, 0, 8192))}
        grads = {"d" + k: rng.standard_normal(v.size).astype(dtype) for k, v in params.items()}
        a = nb.grad_sumsq(params, grads, _validate.COURSE)
        b = _reference.grad_sumsq(params, grads, _validate.COURSE)
        if a != b:
            bad += 1
            print(f"MISMATCH grad_sumsq {np.dtype(dtype)} threads={threads}: {a!r} != {b!r}")
    return bad


def _check_split():
    bad = 0
    for total in list(range(0, 400)) + [2**22 + 13, 2**31 + 7, 10**12 + 3]:
        for parts in range(1, 6):
            for k in range(parts + 2):
                if _step._split_start(total, parts, k) != _tuning.split_start(total, parts, k):
                    bad += 1
    if bad:
        print(f"MISMATCH split_start: {bad} cases")
    return bad


def main():
    if nb._step.numba.config.NUMBA_NUM_THREADS < 2:
        print("numba's pool has one thread: the parallel driver is not exercised")
    _tuning.PARALLEL_MIN_ELEMENTS = 1
    rng = np.random.default_rng(0)
    bad = _check_split() + _check_sumsq(rng)
    for family in FAMILIES.values():
        fbad, runs = _check_family(family, rng)
        print(f"{family.name}: {runs} runs, {fbad} mismatching arrays")
        bad += fbad
    print("OK" if bad == 0 else f"FAILED: {bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
