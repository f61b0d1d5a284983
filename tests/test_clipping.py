"""fusedoptim.clip_grad_norm_, clip_grad_value_ and global_norm:
torch.nn.utils.clip_grad_norm_'s and clip_grad_value_'s semantics, the
optimizers' norm, every backend and thread count."""

import math

import numpy as np
import pytest

import fusedoptim as fo
from fusedoptim._norm import grad_sumsq as reference_sumsq
from helpers import assert_bitwise, snapshot, assert_unchanged

torch = pytest.importorskip("torch")


def _grads(dtype, rng, scale=1.0, big=False):
    n = 40000 if big else 7
    return {"dW1": (rng.standard_normal((n, 3)) * scale).astype(dtype),
            "db1": (rng.standard_normal((5, 1)) * scale).astype(dtype),
            "W2": np.asfortranarray(rng.standard_normal((4, 6)) * scale).astype(dtype),
            "e": np.zeros((0, 3), dtype)}


def _plain_norm(grads):
    """The norm by NumPy's own (pairwise) float64 sums, another order."""
    return math.sqrt(sum(float(np.sum(np.asarray(g, np.float64) ** 2))
                         for g in grads.values()))


def _torch_grads(grads):
    ps = []
    for g in grads.values():
        p = torch.zeros(g.shape, dtype=torch.from_numpy(g).dtype, requires_grad=True)
        p.grad = torch.from_numpy(g.copy())
        ps.append(p)
    return ps


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0])
def test_matches_torch(backend, dtype, scale):
    rng = np.random.default_rng(1)
    grads = _grads(dtype, rng, scale)
    ps = _torch_grads(grads)
    want = torch.nn.utils.clip_grad_norm_(ps, max_norm=2.0)
    norm = fo.clip_grad_norm_(grads, 2.0)
    assert isinstance(norm, float)
    # torch sums float32 gradients in float32; fusedoptim always in float64.
    assert norm == pytest.approx(float(want), rel=1e-6 if dtype == np.float32 else 1e-14)
    for g, p in zip(grads.values(), ps):
        np.testing.assert_allclose(g, p.grad.numpy(),
                                   rtol=2e-6 if dtype == np.float32 else 1e-14, atol=0)
    # Given the same (float64) norm and a power-of-two max_norm, the scaling
    # is torch's bit for bit: torch's max_norm * (1 / (norm + 1e-6)) is then
    # max_norm / (norm + 1e-6) exactly, rounded once to the dtype, one
    # multiply per element.  Another max_norm: see test_within_documented_ulp.
    grads = _grads(dtype, rng, scale)
    ps = _torch_grads(grads)
    norm = fo.clip_grad_norm_(grads, 2.0)
    torch.nn.utils.clip_grads_with_norm_(ps, 2.0, torch.tensor(norm, dtype=torch.float64))
    for g, p in zip(grads.values(), ps):
        assert_bitwise(g, p.grad.numpy())


def _ulps(a, b):
    """Largest distance between float arrays ``a`` and ``b``, in units in the
    last place."""
    it = np.int32 if a.dtype == np.float32 else np.int64

    def line(x):  # the floats, in order, onto the integers
        i = np.ravel(x).view(it).astype(np.int64)
        return np.where(i < 0, np.iinfo(it).min - i, i)
    return int(np.max(np.abs(line(a) - line(b)), initial=0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_within_documented_ulp_of_torch(dtype):
    """The Notes of clip_grad_norm_: each element within 2 k + 7 ulp of
    torch's, k the norms' relative difference in machine epsilons; from the
    same float64 norm (torch computing coef as max_norm * (1 / (norm +
    1e-6))) within 2 ulp, though not always the same bits."""
    rng = np.random.default_rng(7)
    eps = float(np.finfo(dtype).eps)
    worst_same, differ = 0, 0
    for _ in range(150):
        grads = {f"g{i}": (rng.standard_normal(int(rng.integers(1, 300)))
                           * 10 ** rng.uniform(-3, 3)).astype(dtype) for i in range(3)}
        max_norm = fo.global_norm(grads) * 10 ** rng.uniform(-3, -0.01)
        ps = _torch_grads(grads)
        same = _torch_grads(grads)
        want = float(torch.nn.utils.clip_grad_norm_(ps, max_norm))
        norm = fo.clip_grad_norm_(grads, max_norm)
        k = abs(norm - want) / norm / eps
        for g, p in zip(grads.values(), ps):
            assert _ulps(g, p.grad.numpy()) <= 2 * k + 7
        if dtype == np.float64:
            torch.nn.utils.clip_grads_with_norm_(same, max_norm,
                                                 torch.tensor(norm, dtype=torch.float64))
            ulps = max(_ulps(g, p.grad.numpy()) for g, p in zip(grads.values(), same))
            worst_same = max(worst_same, ulps)
            differ += ulps > 0
    assert worst_same <= 2
    if dtype == np.float64:
        assert differ > 0  # not torch's bits: the old docstring's claim


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inf_norm_matches_torch(dtype):
    rng = np.random.default_rng(2)
    grads = _grads(dtype, rng, 10.0)
    del grads["e"]  # torch refuses the inf norm of an empty tensor
    ps = _torch_grads(grads)
    want = torch.nn.utils.clip_grad_norm_(ps, max_norm=1.5, norm_type=math.inf)
    assert fo.clip_grad_norm_(grads, 1.5, norm_type=math.inf) == float(want)
    for g, p in zip(grads.values(), ps):
        assert_bitwise(g, p.grad.numpy())


def test_no_scaling_below_max_norm(backend):
    grads = _grads(np.float64, np.random.default_rng(3), 1e-3)
    before = snapshot(grads)
    norm = fo.clip_grad_norm_(grads, 1e3)
    assert norm < 1e3
    assert_unchanged(before, grads)
    assert norm == fo.global_norm(grads)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_global_norm_is_the_fixed_order_norm(backend, threads, low_threshold, dtype):
    """Every backend, at 1 and 2 threads, gives the reference's bits."""
    grads = _grads(dtype, np.random.default_rng(4), 3.0, big=True)
    params = {k: np.zeros_like(g) for k, g in grads.items()}
    with fo.use_backend("numpy"):
        ref = math.sqrt(reference_sumsq(params, grads, 1))
    assert fo.global_norm(grads) == ref
    assert ref == pytest.approx(_plain_norm(grads), rel=1e-13)
    assert fo.global_norm({}) == 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_bits_as_the_optimizers_clipping(backend, dtype):
    """clip_grad_norm_ then an unclipped step == a step with max_grad_norm."""
    rng = np.random.default_rng(5)
    p1 = {"W": rng.standard_normal((6, 5)).astype(dtype), "b": np.zeros(5, dtype)}
    p2 = snapshot(p1)[0]
    a = fo.AdamW(p1, lr=0.01, max_grad_norm=0.5)
    b = fo.AdamW(p2, lr=0.01)
    for _ in range(5):
        grads = {"W": rng.standard_normal((6, 5)).astype(dtype) * 4,
                 "b": rng.standard_normal(5).astype(dtype)}
        a.step({k: g.copy() for k, g in grads.items()})
        norm = fo.clip_grad_norm_(grads, 0.5)
        assert norm == a.last_grad_norm
        b.step(grads)
    for k in p1:
        assert_bitwise(p1[k], p2[k])


def test_overflowing_sum_of_squares():
    """float64 gradients near 1e200: the sum of squares overflows, the norm
    does not (torch's own norm is inf here and zeros the gradients)."""
    g = {"a": np.full(4, 1e200), "b": np.array([3e200, -4e200])}
    norm = fo.global_norm(g)
    assert norm == pytest.approx(math.sqrt(4 + 9 + 16) * 1e200, rel=1e-15)
    fo.clip_grad_norm_(g, 1.0)
    assert fo.global_norm(g) == pytest.approx(1.0, rel=1e-12)
    # The norm beyond float64's range: still scaled to max_norm.
    g = {"a": np.full(9, 1e308)}
    assert fo.global_norm(g) == math.inf
    fo.clip_grad_norm_(g, 3.0)
    np.testing.assert_allclose(g["a"], 1.0, rtol=1e-15)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite(backend, bad):
    grads = {"a": np.array([1.0, bad, 2.0]), "b": np.ones(2, np.float32)}
    ps = _torch_grads(grads)
    before = snapshot(grads)
    with pytest.raises(RuntimeError, match="non-finite"):
        fo.clip_grad_norm_(grads, 1.0, error_if_nonfinite=True)
    assert_unchanged(before, grads)
    norm = fo.clip_grad_norm_(grads, 1.0)
    want = torch.nn.utils.clip_grad_norm_(ps, 1.0)
    assert (math.isnan(norm) and math.isnan(want)) or norm == float(want) == math.inf
    for g, p in zip(grads.values(), ps):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(p.grad.numpy()))
        np.testing.assert_array_equal(g, p.grad.numpy())


def test_any_keys_and_layouts(backend):
    rng = np.random.default_rng(6)
    base = rng.standard_normal((8, 6))
    grads = {"strided": base[::2, ::3], "t": rng.standard_normal((3, 4, 5)).transpose(1, 0, 2),
             "x": rng.standard_normal(3)}
    want = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
    copy = {k: g.copy() for k, g in grads.items()}
    norm = fo.clip_grad_norm_(grads, 0.1)
    assert norm == pytest.approx(want, rel=1e-14)
    coef = 0.1 / (norm + 1e-6)
    for k in grads:
        assert_bitwise(grads[k], copy[k] * coef)
    assert np.shares_memory(grads["strided"], base)


@pytest.mark.parametrize("call, exc, match", [
    (lambda g: fo.clip_grad_norm_(g, -1.0), ValueError, "max_norm must be >= 0"),
    (lambda g: fo.clip_grad_norm_(g, math.inf), ValueError, "max_norm must be finite"),
    (lambda g: fo.clip_grad_value_(g, -1.0), ValueError, "clip_value must be >= 0"),
    (lambda g: fo.clip_grad_value_(g, math.nan), ValueError, "clip_value must be finite"),
    (lambda g: fo.clip_grad_value_(g, math.inf), ValueError, "clip_value must be finite"),
    (lambda g: fo.clip_grad_value_(g, "1"), TypeError, "clip_value must be a real number"),
    (lambda g: fo.clip_grad_value_(g, True), TypeError, "clip_value must be a real number"),
    (lambda g: fo.clip_grad_value_([g["a"]], 1.0), TypeError, "grads must be a dict"),
    (lambda g: fo.clip_grad_value_(dict(g, c=np.ones(3, np.int64)), 1.0), TypeError,
     r"grads\['c'\] has dtype int64"),
    (lambda g: fo.clip_grad_value_(dict(g, c=g["a"][:2]), 1.0), ValueError,
     r"grads\['c'\] shares memory with grads\['a'\]"),
    (lambda g: fo.clip_grad_norm_(g, "1"), TypeError, "max_norm"),
    (lambda g: fo.clip_grad_norm_(g, 1.0, norm_type=1.0), ValueError, "norm_type"),
    (lambda g: fo.clip_grad_norm_(g, 1.0, error_if_nonfinite=1), TypeError,
     "error_if_nonfinite"),
    (lambda g: fo.clip_grad_norm_([g["a"]], 1.0), TypeError, "grads must be a dict"),
    (lambda g: fo.clip_grad_norm_(dict(g, c=np.ones(3, np.int64)), 1.0), TypeError,
     r"grads\['c'\] has dtype int64"),
    (lambda g: fo.clip_grad_norm_(dict(g, c=g["a"][:2]), 1.0), ValueError,
     r"grads\['c'\] shares memory with grads\['a'\]"),
    (lambda g: fo.global_norm({"a": [1.0]}), TypeError, r"grads\['a'\] must be a numpy"),
])
def test_errors_change_nothing(call, exc, match):
    grads = {"a": np.full(4, 10.0), "b": np.full(2, 10.0)}
    before = snapshot(grads)
    with pytest.raises(exc, match=match):
        call(grads)
    assert_unchanged(before, grads)


def test_read_only_gradients():
    g = np.full(3, 5.0)
    g.flags.writeable = False
    assert fo.global_norm({"g": g}) == pytest.approx(math.sqrt(75))
    with pytest.raises(ValueError, match=r"grads\['g'\] is read-only"):
        fo.clip_grad_norm_({"g": g}, 1.0)
    with pytest.raises(ValueError, match=r"grads\['g'\] is read-only"):
        fo.clip_grad_value_({"h": np.full(2, 9.0), "g": g}, 1.0)


# --- max_norm=0, as torch: every finite gradient zeroed -----------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [None, np.nan, np.inf])
def test_max_norm_zero_matches_torch(dtype, bad):
    rng = np.random.default_rng(8)
    grads = _grads(dtype, rng, 3.0)
    grads["db1"][0, 0] = -0.0
    if bad is not None:
        grads["W2"][1, 2] = bad
    ps = _torch_grads(grads)
    want = float(torch.nn.utils.clip_grad_norm_(ps, 0.0))
    norm = fo.clip_grad_norm_(grads, 0)
    if bad is None:
        assert norm == pytest.approx(want, rel=1e-6)
    else:
        assert (math.isnan(norm) and math.isnan(want)) or norm == want == math.inf
    for g, p in zip(grads.values(), ps):
        assert_bitwise(g, p.grad.numpy())  # signed zeros, NaN where torch has one
    if bad is None:
        assert not any(np.any(g) for g in grads.values())


@pytest.mark.parametrize("cls_name", sorted(fo.OPTIMIZERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_grad_norm_zero_is_clip_grad_norm_zero(backend, cls_name, dtype):
    """max_grad_norm=0 is accepted as clip_grad_norm_'s max_norm=0 is, and
    stays the same bits as clipping first: the step sees zero gradients."""
    cls = fo.OPTIMIZERS[cls_name]
    rng = np.random.default_rng(9)
    p1 = {"W": rng.standard_normal((6, 5)).astype(dtype),
          "b": rng.standard_normal(5).astype(dtype)}
    p2 = snapshot(p1)[0]
    a = cls(p1, lr=0.01, max_grad_norm=0.0)
    b = cls(p2, lr=0.01)
    assert a.max_grad_norm == 0.0
    for _ in range(3):
        grads = {"W": rng.standard_normal((6, 5)).astype(dtype) * 4,
                 "b": rng.standard_normal(5).astype(dtype)}
        a.step({k: g.copy() for k, g in grads.items()})
        assert fo.clip_grad_norm_(grads, 0.0) == a.last_grad_norm
        b.step(grads)
    for k in p1:
        assert_bitwise(p1[k], p2[k])
    sd = a.state_dict()
    assert sd["hp/max_grad_norm"] == 0.0
    cls({k: v.copy() for k, v in p1.items()}, lr=0.01, max_grad_norm=0).load_state_dict(sd)


@pytest.mark.parametrize("cls_name, state_dtype",
                         [(c, None) for c in sorted(fo.OPTIMIZERS)]
                         + [("Adam", "bfloat16"), ("Adam", "int8")])
@pytest.mark.parametrize("bad", [np.inf, np.nan])
def test_nonfinite_gradient_is_clipped_as_clip_grad_norm_does(backend, cls_name, state_dtype,
                                                              bad):
    """Without skip_nonfinite, max_grad_norm scales a non-finite gradient as
    clip_grad_norm_ (and torch) do, by 0 for an infinite norm and NaN for a
    NaN one, with the same bits as clipping first (it used to step the
    finite gradients unclipped)."""
    cls = fo.OPTIMIZERS[cls_name]
    rng = np.random.default_rng(17)
    p1 = {"W": rng.standard_normal((6, 5)).astype(np.float32),
          "b": rng.standard_normal(5).astype(np.float32)}
    p2 = snapshot(p1)[0]
    kw = dict(lr=0.01) if state_dtype is None else dict(lr=0.01, state_dtype=state_dtype)
    a, b = cls(p1, max_grad_norm=1.0, **kw), cls(p2, **kw)
    for step in range(3):
        grads = {"W": rng.standard_normal((6, 5)).astype(np.float32) * 4,
                 "b": rng.standard_normal(5).astype(np.float32)}
        if step == 1:
            grads["W"][2, 3] = bad
        with np.errstate(invalid="ignore"):
            assert a.step({k: g.copy() for k, g in grads.items()})
            norm = fo.clip_grad_norm_(grads, 1.0)
            b.step(grads)
        assert np.isnan(norm) == np.isnan(a.last_grad_norm) and (np.isnan(norm) or
                                                                  norm == a.last_grad_norm)
    for k in p1:
        assert_bitwise(p1[k], p2[k])


@pytest.mark.parametrize("state_dtype", ["bfloat16", "int8"])
def test_max_grad_norm_zero_with_reduced_precision_state(backend, state_dtype):
    rng = np.random.default_rng(13)
    p1 = {"W": rng.standard_normal((6, 5)).astype(np.float32)}
    p2 = snapshot(p1)[0]
    kw = dict(lr=0.01, state_dtype=state_dtype, state_seed=3)
    a, b = fo.Adam(p1, max_grad_norm=0.0, **kw), fo.Adam(p2, **kw)
    for _ in range(3):
        grads = {"W": rng.standard_normal((6, 5)).astype(np.float32)}
        a.step({k: g.copy() for k, g in grads.items()})
        fo.clip_grad_norm_(grads, 0.0)
        b.step(grads)
    assert_bitwise(p1["W"], p2["W"])


# --- clip_grad_value_ -------------------------------------------------------

SPECIAL = [-np.inf, -7.5, -1.0, -0.25, -0.0, 0.0, 1e-30, 0.25, 1.0, 7.5, np.inf, np.nan]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("clip_value", [0.0, 0.25, 1.0, 1.5, 1e-3, 1e30, 1 + 2**-30, 1 + 2**-24])
def test_clip_grad_value_matches_torch(dtype, clip_value):
    """torch.nn.utils.clip_grad_value_'s bits, foreach or not: signed zeros,
    NaN kept, infinities clamped, clip_value rounded to the dtype."""
    rng = np.random.default_rng(10)
    grads = _grads(dtype, rng, 2.0)
    base = rng.standard_normal((6, 9)).astype(dtype)
    grads["strided"] = base[::2, ::3]  # written in place, through the view
    grads["special"] = np.array(SPECIAL * 3, dtype).reshape(4, 9)
    grads["one"] = np.array(np.nextafter(dtype(1), dtype(2)) * rng.choice([-1, 1]), dtype)
    want = {}
    for foreach in (False, True):
        ps = _torch_grads(grads)
        assert torch.nn.utils.clip_grad_value_(ps, clip_value, foreach=foreach) is None
        want[foreach] = [p.grad.numpy() for p in ps]
    assert fo.clip_grad_value_(grads, clip_value) is None
    for g, w, wf in zip(grads.values(), want[False], want[True]):
        assert_bitwise(g, w)
        assert_bitwise(g, wf)
    assert np.shares_memory(grads["strided"], base)
    np.testing.assert_array_equal(base[::2, ::3], grads["strided"])


def test_clip_grad_value_beyond_float32():
    """A bound beyond float32's range clamps nothing there (torch raises)."""
    g = {"a": np.array([3e38, -3e38, np.inf, -np.inf, np.nan], np.float32),
         "b": np.array([1e301, -1e301])}
    before = snapshot(g)[0]
    fo.clip_grad_value_(g, 1e300)
    assert_bitwise(g["a"], before["a"])
    assert g["b"].tolist() == [1e300, -1e300]


def test_clip_grad_value_empty_and_example():
    import doctest

    from fusedoptim import clipping
    assert fo.clip_grad_value_({}, 1.0) is None
    fo.clip_grad_value_({"e": np.zeros((0, 3))}, 0)
    test = doctest.DocTestFinder().find(clipping.clip_grad_value_, "clip_grad_value_")[0]
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.failures == 0
