"""flowsim._model._network: the bias-free MLP, its validation, forward pass and VJP against numpy references."""

import jax.numpy as jnp
import numpy as np
import pytest

import flowsim as fs
from helpers import assert_input_error
from reference import numpy_forward, random_directions


# Merged from the two former copies of this test: every bad architecture, the value and the expectation.
@pytest.mark.parametrize(
    "widths, activation, argument, got, expected",
    [
        ((2, 3, 2), "relu", "widths", "(2, 3, 2)", "output width"),
        ((4, 3, 2), "relu", "widths", "(4, 3, 2)", "output width"),
        ((2, 0, 1), "relu", "widths", "(2, 0, 1)", ">= 1"),
        ((2,), "relu", "widths", "(2,)", "at least two"),
        ((), "relu", "widths", "()", "at least two"),
        ((2, -1, 1), "relu", "widths", None, ">= 1"),
        ((2, 2.5, 1), "relu", "widths", None, "integer"),
        ("21", "relu", "widths", None, "sequence"),
        ((2, 3, 1), "tanh", "activation", "'tanh'", "one of"),
    ],
)
def test_network_rejects_bad_widths_and_activation(widths, activation, argument, got, expected):
    with pytest.raises(fs.FlowsimError) as excinfo:
        fs.Network(widths, activation=activation)
    assert_input_error(excinfo, argument, got, expected)


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
