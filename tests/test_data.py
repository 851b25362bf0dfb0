"""flowsim._data: Dataset validation and immutability, the generators (Gaussian clusters, digits), splits."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

import flowsim as fs
from helpers import assert_input_error

X_OK = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
Y_OK = np.array([1.0, -1.0, 1.0])


# Merged from the two former copies of this test: every bad input, the value it names and what it expects.
@pytest.mark.parametrize(
    "x, y, argument, got, expected",
    [
        (np.array([[1.0, np.nan], [0.0, 1.0], [1.0, 1.0]]), Y_OK, "x", "NaN or Inf", "finite"),
        (np.array([[1.0, np.inf], [0.0, 1.0], [1.0, 1.0]]), Y_OK, "x", "NaN or Inf", "finite"),
        (X_OK, np.array([1.0, 0.0, 1.0]), "y", "[0.0]", "-1 or +1"),
        (X_OK, np.array([1.0, -1.0, 2.0]), "y", "[2.0]", "-1 or +1"),
        (X_OK, np.array([1.0, 0.5, 1.0]), "y", "[0.5]", "-1 or +1"),
        (X_OK, np.array([1.0, -1.0, np.nan]), "y", None, "-1 or +1"),
        (X_OK, np.array([1.0, -1.0]), "y", "2 labels", "one label per row"),
        (np.zeros((0, 2)), np.zeros((0,)), "x", "(0, 2)", "non-empty"),
        (np.zeros((3, 0)), Y_OK, "x", "(3, 0)", "non-empty"),
        (np.array([1.0, 2.0, 3.0]), Y_OK, "x", "(3,)", "2-D"),
        (X_OK, Y_OK[:, None], "y", "(3, 1)", "1-D"),
        ("abc", Y_OK, "x", None, None),
        ([["a", "b"]], [1], "x", None, "real numbers"),
    ],
)
def test_dataset_rejects_bad_data(x, y, argument, got, expected):
    with pytest.raises(fs.FlowsimError) as excinfo:
        fs.Dataset(x, y)
    assert_input_error(excinfo, argument, got, expected)


def test_dataset_is_float64_immutable_copy():
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    d = fs.Dataset(x, [1, -1, 1])
    x[0, 0] = 99
    assert d.x.dtype == np.float64 and d.y.dtype == np.float64 and d.x[0, 0] == 0
    with pytest.raises(ValueError):
        d.x[0, 0] = 1.0
    with pytest.raises(AttributeError):
        d.x = np.zeros((3, 2))


def test_gaussian_clusters_deterministic_unit_norm_and_noise():
    a = fs.datasets.gaussian_clusters(n=50, dim=6, seed=3)
    b = fs.datasets.gaussian_clusters(n=50, dim=6, seed=3)
    c = fs.datasets.gaussian_clusters(n=50, dim=6, seed=4)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.allclose(a.x, c.x)
    assert a.x.tobytes() == b.x.tobytes() and a.y.tobytes() == b.y.tobytes()  # bit-identical
    np.testing.assert_allclose(np.linalg.norm(a.x, axis=1), 1.0, rtol=1e-14)
    assert a.x.shape == (50, 6) and sorted(set(a.y)) == [-1.0, 1.0] and np.sum(a.y > 0) == 25
    # well separated clusters are linearly separable by the class-mean difference
    far = fs.datasets.gaussian_clusters(n=200, dim=6, seed=0, separation=8.0, noise=0.5)
    w = far.x[far.y > 0].mean(0) - far.x[far.y < 0].mean(0)
    assert np.all(far.y * (far.x @ w) > 0)
    noisy = fs.datasets.gaussian_clusters(n=200, dim=6, seed=0, separation=8.0, noise=0.5, label_noise=0.1)
    assert np.mean(noisy.y * (noisy.x @ w) < 0) == pytest.approx(0.1, abs=0.02)


def test_digits_match_sklearn_bundle():
    d = fs.datasets.digits(3, 8)
    bunch = load_digits()
    assert d.n == np.sum(bunch.target == 3) + np.sum(bunch.target == 8)
    assert np.sum(d.y > 0) == np.sum(bunch.target == 3)
    assert d.dim == 64
    np.testing.assert_allclose(np.linalg.norm(d.x, axis=1), 1.0, rtol=1e-14)
    raw = bunch.data[bunch.target == 3][0]
    np.testing.assert_allclose(d.x[0], raw / np.linalg.norm(raw), rtol=1e-14)
    with pytest.raises(ValueError, match="`b`"):
        fs.datasets.digits(3, 3)


def test_split_reproducible_stratified_disjoint():
    d = fs.datasets.gaussian_clusters(n=80, dim=4, seed=1)
    tr1, te1 = d.split(0.25, seed=7)
    tr2, te2 = d.split(0.25, seed=7)
    np.testing.assert_array_equal(te1.x, te2.x)
    assert tr1.x.tobytes() == tr2.x.tobytes() and te1.y.tobytes() == te2.y.tobytes()
    assert tr1.n + te1.n == d.n and te1.n == 20
    assert np.sum(te1.y > 0) == 10
    rows = {tuple(r) for r in tr1.x} | {tuple(r) for r in te1.x}
    assert len(rows) == d.n
    with pytest.raises(ValueError, match="test_fraction"):
        d.split(1.5)
