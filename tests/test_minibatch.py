"""random_mini_batches against the course notes' shuffling."""

import numpy as np
import pytest

import fusedoptim as fo


def notes_random_mini_batches(X, Y, mini_batch_size=64, seed=0):
    """The notes' code with only its two bugs fixed: ``range`` of a float,
    and ``k`` undefined when there is no complete batch."""
    np.random.seed(seed)
    m = X.shape[1]
    mini_batches = []
    permutation = list(np.random.permutation(m))
    shuffled_X = X[:, permutation]
    shuffled_Y = Y[:, permutation].reshape((1, m))
    num_complete_minibatches = int(np.floor(m / mini_batch_size))
    for k in range(0, num_complete_minibatches):
        mini_batch_X = shuffled_X[:, k * mini_batch_size:(k + 1) * mini_batch_size]
        mini_batch_Y = shuffled_Y[:, k * mini_batch_size:(k + 1) * mini_batch_size]
        mini_batches.append((mini_batch_X, mini_batch_Y))
    if m % mini_batch_size != 0:
        start = num_complete_minibatches * mini_batch_size
        mini_batches.append((shuffled_X[:, start:], shuffled_Y[:, start:]))
    return mini_batches


@pytest.mark.parametrize("seed", [0, 1, 3, 10, 2**31 - 1])
@pytest.mark.parametrize("m, size", [(128, 64), (148, 64), (20, 64), (7, 1), (300, 64), (64, 64)])
def test_same_batches_as_notes(seed, m, size):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((3, m))
    Y = (rng.random((1, m)) > 0.5).astype(float)
    ours = fo.random_mini_batches(X, Y, size, seed)
    theirs = notes_random_mini_batches(X, Y, size, seed)
    assert len(ours) == len(theirs) == -(-m // size)
    for (x1, y1), (x2, y2) in zip(ours, theirs):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert all(x.shape[1] == size for x, _ in ours[:-1])
    assert ours[-1][0].shape[1] == (m % size or size)


def test_global_random_state_untouched():
    np.random.seed(123)
    expected = np.random.random(3)
    np.random.seed(123)
    fo.random_mini_batches(np.ones((2, 50)), np.ones((1, 50)), 8, seed=7)
    np.testing.assert_array_equal(np.random.random(3), expected)


def test_label_layouts_kept():
    X = np.arange(20.0).reshape(2, 10)
    for Y in (np.arange(10), np.arange(30).reshape(3, 10)):
        batches = fo.random_mini_batches(X, Y, 4, seed=2)
        perm = np.random.RandomState(2).permutation(10)
        for k, (xb, yb) in enumerate(batches):
            idx = perm[4 * k:4 * k + 4]
            assert yb.shape == Y.shape[:-1] + (len(idx),)
            np.testing.assert_array_equal(yb, Y[..., idx])
            np.testing.assert_array_equal(xb, X[:, idx])


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(mini_batch_size=0), ValueError, "mini_batch_size"),
    (dict(mini_batch_size=-3), ValueError, "mini_batch_size"),
    (dict(mini_batch_size=2.5), TypeError, "mini_batch_size"),
    (dict(mini_batch_size=True), TypeError, "mini_batch_size"),
    (dict(Y=np.ones((1, 9))), ValueError, "examples"),
    (dict(X=np.ones((2, 2, 10))), ValueError, "X must be"),
])
def test_bad_arguments(kwargs, exc, match):
    args = dict(X=np.ones((2, 10)), Y=np.ones((1, 10)), mini_batch_size=4, seed=0) | kwargs
    with pytest.raises(exc, match=match):
        fo.random_mini_batches(**args)


def test_numpy_integer_size_accepted():
    assert len(fo.random_mini_batches(np.ones((1, 10)), np.ones(10), np.int64(5))) == 2
