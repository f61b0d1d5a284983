"""Issue #18, continued (``test_hardening.py`` has mappings that lie and array
subclasses): running out of memory midway, signed zeros and NaN bits, unclear
errors and state left behind, and smaller cases (``d``-prefixed names, NUL in
names, overlapping arrays).  A failing call raises a short error naming the
argument or key and changes nothing."""

import math
import os
import subprocess
import sys
import textwrap
from fractions import Fraction

import numpy as np
import numpy.ma  # noqa: F401 - registers the subclasses NumPy ships
import numpy.rec  # noqa: F401
import numpy.char  # noqa: F401
import pytest

import fusedoptim as fo
from fusedoptim import _validate as V
from fusedoptim.backend import use_backend
from conftest import AVAILABLE
from helpers import assert_same_or_both_nan, assert_unchanged, snapshot
from hardening_common import same_everywhere


pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix


# --- 3. running out of memory midway --------------------------------------------


def test_numpy_backend_writes_nothing_when_an_allocation_fails(monkeypatch):
    from fusedoptim import _reference
    real_scratch = _reference._scratch
    rng = np.random.default_rng(2)
    p = {"a": rng.standard_normal(10), "b": rng.standard_normal(50)}
    g = {"d" + k: rng.standard_normal(a.shape) for k, a in p.items()}
    v, s = fo.initialize_adam(p)
    # Fail at each allocation in turn: 3 per tensor (p, v, s) for two tensors.
    for fail_at in range(6):
        calls = []

        def scratch(a, fail_at=fail_at, calls=calls):
            calls.append(1)
            if len(calls) > fail_at:
                raise MemoryError("simulated")
            return real_scratch(a)

        monkeypatch.setattr(_reference, "_scratch", scratch)
        before = snapshot(p, v, s)
        with use_backend("numpy"), pytest.raises(MemoryError):
            fo.update_parameters_with_adam(p, g, v, s, 1)
        assert_unchanged(before, p, v, s)
    monkeypatch.setattr(_reference, "_scratch", real_scratch)
    with use_backend("numpy"):
        fo.update_parameters_with_adam(p, g, v, s, 1)


@pytest.mark.skipif(not sys.platform.startswith("linux") or "numpy" not in AVAILABLE,
                    reason="address-space limits (RLIMIT_AS) on Linux, numpy backend")
def test_numpy_backend_out_of_address_space_changes_nothing():
    """The issue's case, smaller: Adam over a 10-element and a large tensor
    under an address-space limit that the step's allocations exceed."""
    code = textwrap.dedent("""
        import resource, numpy as np, fusedoptim as fo
        n = 5_000_000
        p = {"a": np.ones(10), "b": np.ones(n)}
        g = {"da": np.ones(10), "db": np.ones(n)}
        v, s = fo.initialize_adam(p)
        with open("/proc/self/status") as f:
            vm = [int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize")][0]
        resource.setrlimit(resource.RLIMIT_AS, (vm + 6 * 1024 * 1024,) * 2)
        try:
            fo.update_parameters_with_adam(p, g, v, s, 1)
        except MemoryError:
            pass
        else:
            raise SystemExit("no MemoryError: the limit is too loose")
        assert (p["a"] == 1).all() and (v["da"] == 0).all() and (s["da"] == 0).all()
        assert (p["b"] == 1).all() and (v["db"] == 0).all()
        print("unchanged")
    """)
    env = dict(os.environ, FUSEDOPTIM_BACKEND="numpy", FUSEDOPTIM_NUM_THREADS="1")
    env.pop("LD_PRELOAD", None)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "unchanged" in r.stdout, r.stderr[-2000:]


# --- 4. bits: signed zeros, eps = -0.0, NaN ---------------------------------------


def _bits_on(backend, fn):
    with use_backend(backend.split("-")[0]):
        return fn()


def test_amsgrad_keeps_the_old_zero(backend):
    """vmax = -0.0 against v = +0.0: the old vmax (-0.0) is kept, on every
    backend and in the reference (``vmax >= v`` holds for equal zeros)."""
    def run():
        p = {"w": np.ones(4, np.float32)}
        opt = fo.Adam(p, lr=0.1, amsgrad=True)
        opt._state["max_exp_avg_sq"]["w"][...] = np.array([-0.0, 0.0, -0.0, 1.0], np.float32)
        opt.step({"w": np.array([0.0, 0.0, np.nan, 0.0], np.float32)})
        return p["w"], opt._state["max_exp_avg_sq"]["w"]
    got, want = run(), _bits_on("numpy", run)
    assert np.signbit(got[1]).tolist() == [True, False, False, False]
    for a, b in zip(got, want):
        assert_same_or_both_nan(a, b)


@pytest.mark.parametrize("check", [V.real, V.nonneg, V.beta])
def test_negative_zero_hyperparameter_becomes_positive(check):
    for x in (-0.0, np.float64(-0.0), np.float32(-0.0)):
        assert math.copysign(1.0, check(x, "x")) == 1.0


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eps_negative_zero_same_everywhere(backend, dtype):
    """The issue's case: eps=-0.0 with zero gradients."""
    def run():
        p = {"W": np.ones(3, dtype)}
        g = {"dW": np.zeros(3, dtype)}
        v, s = fo.initialize_adam(p)
        fo.update_parameters_with_adam(p, g, v, s, 1, epsilon=-0.0)
        q = {"W": np.ones(3, dtype)}
        opt = fo.Adam(q, eps=-0.0, amsgrad=True)
        opt.step({"W": np.zeros(3, dtype)})
        return p["W"], q["W"]
    for a, b in zip(run(), _bits_on("numpy", run)):
        assert_same_or_both_nan(a, b)


NAN_INPUTS = [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e308, 5e-324]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("name", sorted(fo.OPTIMIZERS))
def test_nan_rule_bitwise_except_nan_payload(backend, name):
    """The bitwise promise with NaN and infinity everywhere: every non-NaN
    bit agrees with the reference and every NaN sits where the reference
    has one (payload and sign of a NaN are not promised)."""
    vals = np.array(NAN_INPUTS)
    grid_p, grid_g = np.meshgrid(vals, vals)

    def run():
        p = {"w": grid_p.copy(), "x": grid_p.astype(np.float32)}
        opt = fo.OPTIMIZERS[name](p, lr=0.5)
        for _ in range(2):
            opt.step({"w": grid_g.copy(), "x": grid_g.astype(np.float32)})
        return [p["w"], p["x"]] + [a for d in opt._state.values() for a in d.values()]
    got, want = run(), _bits_on("numpy", run)
    assert any(np.isnan(a).any() for a in want)
    for a, b in zip(got, want):
        assert_same_or_both_nan(a, b, name)


# --- 5. unclear errors, state left behind ---------------------------------------


def test_set_num_threads_out_of_range_stores_nothing():
    from fusedoptim.backend import _loaded
    before = fo.get_num_threads()
    mods = {name: getattr(mod, "get_num_threads", lambda: None)() for name, mod in _loaded.items()}
    for n in (2 ** 31, 2 ** 64, fo.backend.MAX_THREADS + 1):
        with pytest.raises(ValueError, match=r"^n must be at most"):
            fo.set_num_threads(n)
    assert fo.get_num_threads() == before
    assert mods == {name: getattr(mod, "get_num_threads", lambda: None)()
                    for name, mod in _loaded.items()}


@pytest.mark.parametrize("lr", [10 ** 400, Fraction(10 ** 400), -10 ** 400],
                         ids=["int", "fraction", "negative"])
def test_huge_learning_rate_named(backend, lr):
    p = {"W": np.ones(3)}
    with pytest.raises(ValueError, match="^learning_rate must be finite"):
        fo.update_parameters_with_gd(p, {"dW": np.ones(3)}, lr)
    with pytest.raises(ValueError, match="^lr must be finite"):
        fo.SGD(p, lr=lr)
    assert p["W"].tolist() == [1.0] * 3


def test_growing_exponential_decay_errors_clearly(backend):
    sched = fo.schedules.ExponentialDecay(1e-5, 1, 1.1)
    assert sched(7447) > 0 and sched(7448) == math.inf
    assert fo.schedules.ExponentialDecay(0.0, 1, 1.1)(10 ** 6) == 0.0
    p = {"w": np.ones(2)}
    opt = fo.SGD(p, lr=sched)
    sd = opt.state_dict()
    sd["t"] = 7448
    opt.load_state_dict(sd)
    with pytest.raises(ValueError, match="lr schedule value at step 7448 must be finite"):
        opt.step({"w": np.ones(2)})
    assert opt.t == 7448 and p["w"].tolist() == [1.0, 1.0]


def test_npz_with_object_array_names_the_key(tmp_path):
    p = {"w": np.ones(2)}
    opt = fo.Adam(p)
    sd = opt.state_dict()
    sd["state/exp_avg/w"] = np.array([None, None], dtype=object)
    np.savez(tmp_path / "ck.npz", **sd)
    with np.load(tmp_path / "ck.npz", allow_pickle=False) as f:
        with pytest.raises(ValueError, match=r"^state_dict\['state/exp_avg/w'\] cannot be read"):
            opt.load_state_dict(f)
    assert opt.t == 0


@pytest.mark.parametrize("key", ["t", "skipped_steps"])
def test_step_count_beyond_int64_refused(key):
    opt = fo.Adam({"w": np.ones(2)})
    sd = opt.state_dict()
    sd[key] = 2 ** 70
    with pytest.raises(ValueError, match=rf"^state_dict\['{key}'\] must be < 2\*\*63"):
        opt.load_state_dict(sd)
    assert opt.t == 0 and opt.skipped_steps == 0


# --- 6. smaller -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(fo.OPTIMIZERS))
def test_parameter_named_d_plus_another(backend, name):
    """Parameters ``ecoder`` and ``decoder``: ``grads['decoder']`` is
    decoder's gradient, never ecoder's; plain keys step every optimizer."""
    def run():
        p = {"ecoder": np.ones(3), "decoder": np.full(3, 2.0)}
        opt = fo.OPTIMIZERS[name](p, lr=0.1)
        opt.step({"ecoder": np.full(3, 0.5), "decoder": np.full(3, -1.0)})
        return p
    p = run()
    q = {"ecoder": np.ones(3), "decoder": np.full(3, 2.0)}
    fo.OPTIMIZERS[name]({"w": q["ecoder"]}, lr=0.1).step({"w": np.full(3, 0.5)})
    fo.OPTIMIZERS[name]({"w": q["decoder"]}, lr=0.1).step({"w": np.full(3, -1.0)})
    assert p["ecoder"].tobytes() == q["ecoder"].tobytes()
    assert p["decoder"].tobytes() == q["decoder"].tobytes()


def test_d_plus_name_key_of_another_parameter_is_not_borrowed(backend):
    p = {"ecoder": np.ones(3), "decoder": np.ones(3)}
    opt = fo.SGD(p, lr=0.1)
    with pytest.raises(KeyError, match="grads has no 'ecoder' or 'decoder'"):
        opt.step({"decoder": np.ones(3)})
    with pytest.raises(ValueError, match="grads has both 'decoder' and 'ddecoder'"):
        opt.step({"decoder": np.ones(3), "ddecoder": np.ones(3), "ecoder": np.ones(3)})
    assert opt.t == 0 and p["ecoder"].tolist() == [1.0] * 3


def test_nul_in_parameter_name_refused():
    with pytest.raises(ValueError, match="contains a NUL character"):
        fo.Adam({"a\0b": np.ones(2)})


def test_npz_round_trip_of_awkward_names(tmp_path):
    names = ["W1", "décodeur", "a/b", "d", "x y", "ü" * 40]
    p = {n: np.arange(3.0) + i for i, n in enumerate(names)}
    opt = fo.Adam(p)
    opt.step({n: np.ones(3) for n in names})
    np.savez(tmp_path / "ck.npz", **opt.state_dict())
    other = fo.Adam({n: a.copy() for n, a in p.items()})
    with np.load(tmp_path / "ck.npz", allow_pickle=False) as f:
        other.load_state_dict(f)
    for label, d in opt._state.items():
        for n, a in d.items():
            assert a.tobytes() == other._state[label][n].tobytes()


def _first_pair_brute(items):
    spans = [(V._bounds(a), w) for _l, a, w in items]
    for j in range(len(items)):
        for i in range(j):
            (bi, wi), (bj, wj) = spans[i], spans[j]
            if bi and bj and (wi or wj) and bi[0] < bj[1] and bj[0] < bi[1]:
                return items[j][0], items[i][0]
    return None


@pytest.mark.parametrize("seed", range(30))
def test_first_overlapping_pair_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    buf = np.zeros(200)
    items = []
    for k in range(int(rng.integers(2, 40))):
        lo = int(rng.integers(0, 190))
        n = int(rng.integers(0, 12))
        step = int(rng.choice([1, 1, 2, -1]))
        a = buf[lo:lo + n * abs(step):abs(step)][::1 if step > 0 else -1]
        items.append((f"x{k}", a, bool(rng.random() < 0.5)))
    assert V._find_overlap(items) == _first_pair_brute(items)


def test_overlap_named_among_many_arrays_with_foreign_buffer(backend):
    """One foreign buffer sends every array to the address check; the first
    overlapping pair is named the same way on every backend, quickly."""
    def make():
        n = 3000
        p = {f"w{i}": np.zeros(2) for i in range(n)}
        raw = np.frombuffer(bytearray(8 * 8), dtype=np.float64)
        p["w1500"] = raw[:4]
        p["w2999"] = raw[2:6]
        p["w2000"] = raw[4:8]
        g = {"d" + k: np.ones(a.shape) for k, a in p.items()}
        return (lambda: fo.update_parameters_with_gd(p, g, 0.1)), (p,)
    got = same_everywhere(make, backend)
    assert got[0] == "raise" and got[2] == \
        "parameters['w2999'] shares memory with parameters['w1500']", got
