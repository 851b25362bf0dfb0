"""flowsim._discrete._batchnorm: the real batch-normalized network fs.sgd trains with batchnorm=True."""

import jax.numpy as jnp
import numpy as np
import pytest

import flowsim as fs
from flowsim._discrete import _batchnorm, _sgd


@pytest.fixture(scope="module")
def bn_problem():
    data = fs.datasets.gaussian_clusters(n=32, dim=8, seed=0)
    net = fs.Network((8, 16, 16, 1))
    return data, net


def test_batchnorm_training_keeps_rho_finite_and_learns(bn_problem):
    data, net = bn_problem
    model = fs.load_model("normalized", lam=1e-2)
    s0 = model.init(net, seed=0)
    run = fs.sgd(model, net, data, s0, lr=2e-3, steps=3000, batch_size=16, record_every=30, batchnorm=True)
    rho = np.asarray(run.rho)
    assert np.all(np.isfinite(rho)) and rho.max() < 2 * rho[0] and rho[-1] > 0
    assert float(run.loss[-1]) < 0.05 * float(run.loss[0])
    assert float(np.mean(np.asarray(run.margins[-1]) > 0)) == 1.0
    assert run.rho_k.shape == (len(run), 3)
    np.testing.assert_allclose(np.prod(np.asarray(run.rho_k), axis=1), rho, rtol=1e-12)
    assert run.stats["method"] == "sgd+batchnorm"


def test_batchnorm_forward_is_row_scale_invariant(bn_problem):
    data, net = bn_problem
    model = fs.load_model("normalized")
    s0 = model.init(net, seed=1)
    spec = _sgd._Spec(net, model.regime, "square", data.n, None, False, 1, False, None, affine=False, bn_eps=0.0)
    raw = _batchnorm.bn_raw(s0, False, net.widths)
    x = jnp.asarray(data.x)
    u, _ = _batchnorm.bn_forward(spec, raw, x)
    scaled = dict(raw, W=(raw["W"][0] * jnp.linspace(0.5, 3.0, 16)[:, None], raw["W"][1] * 7.0, raw["W"][2]))
    u2, _ = _batchnorm.bn_forward(spec, scaled, x)
    np.testing.assert_allclose(np.asarray(u2), np.asarray(u), rtol=1e-10, atol=1e-12)


def test_batchnorm_affine_option(bn_problem):
    data, net = bn_problem
    model = fs.load_model("normalized", lam=1e-2)
    s0 = model.init(net, seed=0)
    run = fs.sgd(model, net, data, s0, lr=2e-3, steps=600, record_every=100, batchnorm=True, bn_affine=True)
    assert run.stats["bn_affine"] is True
    # weight decay on the gains γ = 1 (32 of them) is part of the loss
    plain = fs.sgd(model, net, data, s0, lr=2e-3, steps=1, batchnorm=True)
    assert float(run.loss[0]) == pytest.approx(float(plain.loss[0]) + 1e-2 * 32)
    assert float(run.loss[-1]) < float(run.loss[0])
