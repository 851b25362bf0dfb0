"""flowsim._analysis._compare and _convergence: distances between trajectories at matched times, and the order
of convergence of GD to the flow."""

import numpy as np
import pytest

import flowsim as fs
from helpers import with_times


@pytest.fixture(scope="module")
def basic():
    data = fs.datasets.gaussian_clusters(n=16, dim=4, seed=0)
    net = fs.Network((4, 5, 1))
    model = fs.load_model("unnormalized", lam=1e-2)
    return model, net, data, model.init(net, seed=0)


def test_compare_identical_and_interpolated(basic):
    model, net, data, s0 = basic
    run = fs.sgd(model, net, data, s0, lr=1e-2, steps=40, record_every=4)
    same = fs.compare(run, run)
    assert not same.interpolated and all(v == 0.0 for v in same.max().values())
    coarse = fs.sgd(model, net, data, s0, lr=1e-2, steps=40, record_every=8)
    fine = fs.sgd(model, net, data, s0, lr=1e-2, steps=40, record_every=1)
    c = fs.compare(coarse, fine)
    assert c.interpolated and c.ts.size == 41
    assert np.all(c.weights[::8] == 0.0) and np.all(c.weights[1::8] > 0.0)  # exact at the saves only
    assert c.max()["weights"] < 0.1 * float(np.max(fine.rho))  # linear interpolation over 8 steps
    exact = fs.compare(fine, coarse)
    assert not exact.interpolated and exact.max()["weights"] == 0.0
    assert "Comparison(" in repr(c)
    with pytest.raises(fs.InputError, match="`run`"):
        fs.compare(run, with_times(run, run.ts + 10.0))
    with pytest.raises(fs.InputError, match="`flow`"):
        fs.compare("flow", run)


def test_compare_normalized_run_with_batchnorm_run_shapes():
    data = fs.datasets.gaussian_clusters(n=32, dim=8, seed=0)
    net = fs.Network((8, 16, 16, 1))
    model = fs.load_model("normalized", lam=1e-2)
    s0 = model.init(net, seed=0)
    flow_like = fs.sgd(model, net, data, s0, lr=2e-3, steps=20, record_every=10)
    bn = fs.sgd(model, net, data, s0, lr=2e-3, steps=20, record_every=10, batchnorm=True)
    c = fs.compare(flow_like, bn)
    assert c.rho_k is None and c.ts.size == 3 and np.all(np.isfinite(c.weights))


def test_convergence_order_recovers_a_known_power(basic):
    model, net, data, s0 = basic
    flow = fs.sgd(model, net, data, s0, lr=1e-2, steps=10, record_every=5)
    lrs = [0.1, 0.05, 0.025]
    runs = {
        lr: with_times(
            fs.Trajectory(
                ts=flow.ts,
                rho=flow.rho * (1 + lr**2),
                rho_k=flow.rho_k,
                V=flow.V,
                margins=flow.margins,
                loss=flow.loss,
                rho_eq=flow.rho_eq,
            ),
            flow.ts,
        )
        for lr in lrs
    }
    res = fs.convergence_order(flow, runs, metric="rho")
    assert res.order == pytest.approx(2.0, abs=1e-9)
    np.testing.assert_allclose(res.lrs, sorted(lrs))
    with pytest.raises(fs.InputError, match="`metric`"):
        fs.convergence_order(flow, runs, metric="nope")
    with pytest.raises(fs.InputError, match="`runs`"):
        fs.convergence_order(flow, [flow])
    with pytest.raises(fs.InputError, match=r"`runs\[0\]`"):
        fs.convergence_order(flow, list(runs.values()))  # no stats["lr"]
