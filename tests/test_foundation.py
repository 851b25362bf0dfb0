import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

import flowsim as fs
from reference import numpy_forward, random_directions


# ---- Dataset ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "x, y, argument, words",
    [
        ([[0.0, np.nan]], [1], "x", "finite"),
        ([[0.0, np.inf]], [1], "x", "finite"),
        ([[0.0, 1.0]], [0.5], "y", "-1 or +1"),
        ([[0.0, 1.0]], [0], "y", "-1 or +1"),
        ([[0.0, 1.0], [1.0, 0.0]], [1], "y", "one label per row"),
        (np.zeros((0, 3)), [], "x", "non-empty"),
        ([1.0, 2.0], [1, -1], "x", "2-D"),
        ([[1.0, 2.0]], [[1]], "y", "1-D"),
        ([["a", "b"]], [1], "x", "real numbers"),
    ],
)
def test_dataset_rejects_bad_input(x, y, argument, words):
    with pytest.raises((ValueError, TypeError)) as err:
        fs.Dataset(x, y)
    assert f"`{argument}`" in str(err.value) and words in str(err.value)
    assert isinstance(err.value, fs.FlowsimError)


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
    assert tr1.n + te1.n == d.n and te1.n == 20
    assert np.sum(te1.y > 0) == 10
    rows = {tuple(r) for r in tr1.x} | {tuple(r) for r in te1.x}
    assert len(rows) == d.n
    with pytest.raises(ValueError, match="test_fraction"):
        d.split(1.5)


# ---- Network ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "widths, activation, words",
    [
        ((4, 3, 2), "relu", "output width"),
        ((4, 0, 1), "relu", ">= 1"),
        ((4,), "relu", "at least two"),
        ((4, 3, 1), "tanh", "one of"),
        ((4, 2.5, 1), "relu", "integer"),
        ("41", "relu", "sequence"),
    ],
)
def test_network_rejects_bad_input(widths, activation, words):
    with pytest.raises((ValueError, TypeError)) as err:
        fs.Network(widths, activation)
    assert words in str(err.value)
    assert ("`widths`" in str(err.value)) or ("`activation`" in str(err.value))


@pytest.mark.parametrize("activation", ["relu", "linear"])
def test_forward_matches_numpy(activation):
    widths = (5, 7, 4, 1)
    net = fs.Network(widths, activation)
    data = fs.datasets.gaussian_clusters(n=30, dim=5, seed=2)
    V = random_directions(widths, 0)
    got = np.asarray(net.forward([jnp.asarray(v) for v in V], jnp.asarray(data.x)))
    np.testing.assert_allclose(got, numpy_forward(V, data.x, activation), rtol=1e-13, atol=1e-15)
    assert net.depth == 3 and net.shapes == ((7, 5), (4, 7), (1, 4)) and net.n_params == 35 + 28 + 4


@pytest.mark.parametrize("activation", ["relu", "linear"])
def test_vjp_matches_finite_differences(activation):
    widths = (3, 6, 5, 1)
    net = fs.Network(widths, activation)
    data = fs.datasets.gaussian_clusters(n=12, dim=3, seed=5)
    V = random_directions(widths, 1)
    w = np.random.default_rng(0).standard_normal(12)
    f, grads = net.vjp([jnp.asarray(v) for v in V], jnp.asarray(data.x), jnp.asarray(w))
    np.testing.assert_allclose(np.asarray(f), numpy_forward(V, data.x, activation), rtol=1e-13)
    h = 1e-6
    for k, Vk in enumerate(V):
        for idx in [(0, 0), (Vk.shape[0] - 1, Vk.shape[1] - 1), (Vk.shape[0] // 2, 1)]:
            Vp = [v.copy() for v in V]
            Vm = [v.copy() for v in V]
            Vp[k][idx] += h
            Vm[k][idx] -= h
            fd = (w @ numpy_forward(Vp, data.x, activation) - w @ numpy_forward(Vm, data.x, activation)) / (2 * h)
            assert float(grads[k][idx]) == pytest.approx(fd, rel=1e-6, abs=1e-8)
