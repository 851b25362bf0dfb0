"""fs.sgd, fs.compare, fs.convergence_order: discrete GD/SGD against independent flow references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from scipy.integrate import solve_ivp

import flowsim as fs
from flowsim._discrete import _batchnorm, _sgd
from flowsim._solver import Trajectory, observe

MODELS = ("unnormalized", "weightnorm", "normalized")


def stack(states):
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *states)


def scipy_flow(model, net, data, s0, ts):
    """The flow by scipy DOP853 (rtol 1e-11) on the flattened jitted field: an independent reference."""
    field = model.vector_field(net, data)
    z0, unravel = ravel_pytree(s0)
    F = jax.jit(lambda z: ravel_pytree(field(0.0, unravel(z)))[0])
    sol = solve_ivp(
        lambda t, z: np.asarray(F(jnp.asarray(z))),
        (0.0, float(ts[-1])),
        np.asarray(z0),
        method="DOP853",
        rtol=1e-11,
        atol=1e-12,
        t_eval=ts,
    )
    assert sol.success
    return observe(model, net, data, ts, stack([unravel(jnp.asarray(sol.y[:, i])) for i in range(len(ts))]))


def gd_runs(model, net, data, s0, t1, lrs, every=0.05):
    runs = []
    for lr in lrs:
        steps, rec = round(t1 / lr), round(every / lr)
        assert abs(steps * lr - t1) < 1e-12 and abs(rec * lr - every) < 1e-12
        runs.append(fs.sgd(model, net, data, s0, lr=lr, steps=steps, record_every=rec))
    return runs


def with_times(traj, ts):
    return Trajectory(
        ts=ts, rho=traj.rho, rho_k=traj.rho_k, V=traj.V, margins=traj.margins, loss=traj.loss,
        rho_eq=traj.rho_eq, stats=traj.stats,
    )


@pytest.fixture(scope="module")
def small():
    return fs.datasets.gaussian_clusters(n=16, dim=4, seed=0)


# ---- order of convergence GD -> flow ----------------------------------------------------------------
LRS = (5e-3, 2.5e-3, 1.25e-3)


@pytest.mark.parametrize("name", MODELS)
def test_gd_converges_to_flow_at_first_order_linear(name, small):
    net = fs.Network((4, 5, 1), activation="linear")
    model = fs.load_model(name, lam=0.1)
    s0 = model.init(net, seed=1, scale=1.0)
    ts = np.linspace(0.0, 0.5, 11)
    flow = scipy_flow(model, net, small, s0, ts)
    runs = gd_runs(model, net, small, s0, 0.5, LRS)
    for metric in ("weights", "margins"):
        res = fs.convergence_order(flow, runs, metric=metric)
        assert abs(res.order - 1.0) < 0.2, res
        assert np.all(np.abs(res.slopes - 1.0) < 0.2), res.slopes
    assert not fs.compare(flow, runs[0]).interpolated
    # the error is the Euler error, small at these rates
    assert res.errors[0] < 0.02


@pytest.mark.parametrize("name", MODELS)
def test_gd_converges_to_flow_at_first_order_relu_without_switches(name):
    # 8 points, 3 ReLUs, t <= 0.5: no pre-activation changes sign along the flow (checked), so the
    # field is smooth there and DOP853 is a trustworthy reference.
    data = fs.datasets.gaussian_clusters(n=8, dim=4, seed=3)
    net = fs.Network((4, 3, 1))
    model = fs.load_model(name, lam=0.1)
    s0 = model.init(net, seed=5, scale=1.0)
    ts = np.linspace(0.0, 0.5, 11)
    flow = scipy_flow(model, net, data, s0, ts)
    z = jax.vmap(lambda *V: net.preactivations(V, jnp.asarray(data.x))[0])(*flow.V)
    assert np.all(np.sign(z) == np.sign(z[0])) and float(jnp.min(jnp.abs(z))) > 0.02
    res = fs.convergence_order(flow, gd_runs(model, net, data, s0, 0.5, LRS))
    assert abs(res.order - 1.0) < 0.2, res


def test_gd_converges_to_fs_simulate(small):
    net = fs.Network((4, 5, 1), activation="linear")
    model = fs.load_model("normalized", lam=0.1)
    s0 = model.init(net, seed=0)  # on average separable, so fs.simulate does not warn
    ts = np.linspace(0.0, 0.5, 11)
    flow = fs.simulate(model, net, small, s0, t1=0.5, ts=ts, rtol=1e-10, atol=1e-12)
    ref = scipy_flow(model, net, small, s0, ts)
    assert fs.compare(ref, flow).max()["weights"] < 1e-6
    res = fs.convergence_order(flow, gd_runs(model, net, small, s0, 0.5, LRS))
    assert abs(res.order - 1.0) < 0.2, res


def test_minibatch_scaling_and_momentum_keep_flow_time(small):
    """SGD (batch sum × N/|B|) tracks the flow at t = lr·step; heavy-ball with lr(1−μ) too."""
    net = fs.Network((4, 5, 1), activation="linear")
    model = fs.load_model("unnormalized", lam=0.1)
    s0 = model.init(net, seed=1)
    ts = np.linspace(0.0, 0.5, 11)
    flow = scipy_flow(model, net, small, s0, ts)
    lr = 2.5e-4
    gd_err = fs.compare(flow, gd_runs(model, net, small, s0, 0.5, [lr])[0]).max()["weights"]
    sgd = fs.sgd(model, net, small, s0, lr=lr, steps=2000, batch_size=4, record_every=200, seed=3)
    sgd_err = fs.compare(flow, sgd).max()["weights"]
    mu = 0.5
    hb = fs.sgd(model, net, small, s0, lr=lr * (1 - mu), steps=2000, momentum=mu, record_every=200)
    hb_err = fs.compare(flow, with_times(hb, hb.ts / (1 - mu))).max()["weights"]
    scale = float(np.max(np.sqrt(sum(np.sum(np.asarray(v) ** 2, axis=(1, 2)) for v in flow.V))))
    assert gd_err < 2e-3 * scale
    assert sgd_err < 0.1 * scale  # minibatch noise, O(sqrt(lr))
    assert hb_err < 5 * gd_err
    unscaled = fs.compare(flow, with_times(sgd, sgd.ts / 4)).max()["weights"]  # as if the factor were 1
    assert unscaled > 4 * sgd_err


# ---- SGD noise floor and low-rank bias -------------------------------------------------------------
@pytest.fixture(scope="module")
def wd_runs():
    data = fs.datasets.gaussian_clusters(n=32, dim=8, seed=0)
    net = fs.Network((8, 16, 1))
    model = fs.load_model("unnormalized", lam=0.5)
    s0 = model.init(net, seed=0)
    kw = dict(lr=0.02, steps=8000, record_every=50)
    gd = fs.sgd(model, net, data, s0, **kw)
    sgds = [fs.sgd(model, net, data, s0, batch_size=4, seed=seed, **kw) for seed in (0, 1)]
    return gd, sgds


def test_full_batch_gd_settles_sgd_keeps_fluctuating(wd_runs):
    gd, sgds = wd_runs
    q = len(gd) * 3 // 4
    spread_gd = float(np.ptp(np.asarray(gd.rho[q:])))
    for run in sgds:
        assert float(np.ptp(np.asarray(run.rho[q:]))) >= 10 * spread_gd
        assert np.all(np.isfinite(np.asarray(run.rho)))
        assert float(np.mean(np.asarray(run.margins[-1]) > 0)) == 1.0  # both fit the data
    assert float(np.mean(np.asarray(gd.margins[-1]) > 0)) == 1.0


def test_sgd_with_weight_decay_has_lower_stable_rank(wd_runs):
    gd, sgds = wd_runs

    def late_stable_rank(run):
        q = len(run) * 3 // 4
        W = run.rho_k[q:, 0, None, None] * run.V[0][q:]
        return float(jnp.mean(fs._discrete.stable_rank(W)))

    r_gd = late_stable_rank(gd)
    r_sgd = np.mean([late_stable_rank(run) for run in sgds])
    assert r_sgd < 0.9 * r_gd, (r_sgd, r_gd)


def test_stable_rank_closed_form():
    W = jnp.diag(jnp.array([3.0, 1.0, 0.0]))
    assert float(fs._discrete.stable_rank(W)) == pytest.approx(10.0 / 9.0)


# ---- batch normalization ---------------------------------------------------------------------------
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


# ---- run mechanics ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def basic(small):
    net = fs.Network((4, 5, 1))
    model = fs.load_model("unnormalized", lam=1e-2)
    return model, net, small, model.init(net, seed=0)


def test_record_every_thins_and_keeps_the_last_step(basic):
    model, net, data, s0 = basic
    every = fs.sgd(model, net, data, s0, lr=1e-2, steps=20, batch_size=4, seed=7)
    thin = fs.sgd(model, net, data, s0, lr=1e-2, steps=20, batch_size=4, seed=7, record_every=7)
    np.testing.assert_allclose(np.asarray(thin.ts), [0.0, 0.07, 0.14, 0.2], rtol=1e-12)
    assert len(every) == 21
    for a, b in zip(thin.V, every.V):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b)[np.array([0, 7, 14, 20])], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(thin.loss), np.asarray(every.loss)[np.array([0, 7, 14, 20])], rtol=1e-12)
    # the first record is the initial state
    np.testing.assert_allclose(np.asarray(every.rho_k[0]), np.asarray(s0.rho_k), rtol=1e-14)
    assert every.stats["lr"] == 1e-2 and every.stats["batch_size"] == 4 and every.stats["method"] == "sgd"


def test_minibatches_are_reproducible(basic):
    model, net, data, s0 = basic
    a = fs.sgd(model, net, data, s0, lr=1e-2, steps=50, batch_size=4, seed=1, record_every=10)
    b = fs.sgd(model, net, data, s0, lr=1e-2, steps=50, batch_size=4, seed=1, record_every=10)
    c = fs.sgd(model, net, data, s0, lr=1e-2, steps=50, batch_size=4, seed=2, record_every=10)
    np.testing.assert_array_equal(np.asarray(a.V[0]), np.asarray(b.V[0]))
    assert not np.allclose(np.asarray(a.V[0][-1]), np.asarray(c.V[0][-1]))


def test_full_batch_is_gd_on_L(basic):
    model, net, data, s0 = basic
    a = fs.sgd(model, net, data, s0, lr=1e-2, steps=30, record_every=10)
    b = fs.sgd(model, net, data, s0, lr=1e-2, steps=30, record_every=10, batch_size=data.n, seed=5)
    np.testing.assert_array_equal(np.asarray(a.V[1]), np.asarray(b.V[1]))
    assert b.stats["method"] == "gd"
    # one step by hand: W ← W − lr ∇L(W), L = Σ (y − f)² + λ Σ ‖W_k‖²
    x, y = jnp.asarray(data.x), jnp.asarray(data.y)
    W = s0.weights()

    def L(W):
        return jnp.sum((y - net._forward(W, x)) ** 2) + model.lam * sum(jnp.sum(w**2) for w in W)

    W1 = tuple(w - 1e-2 * g for w, g in zip(W, jax.grad(L)(W)))
    one = fs.sgd(model, net, data, s0, lr=1e-2, steps=1)
    for k in range(2):
        np.testing.assert_allclose(np.asarray(one.rho_k[-1, k] * one.V[k][-1]), np.asarray(W1[k]), rtol=1e-12)
    assert float(one.loss[-1]) == pytest.approx(float(L(W1)), rel=1e-12)


def test_normalized_and_weightnorm_steps(small):
    net = fs.Network((4, 5, 1))
    x, y = jnp.asarray(small.x), jnp.asarray(small.y)
    # normalized: GD on (ρ, V) of ρ f(V/‖V‖) + λρ², then V ← V/‖V‖
    model = fs.load_model("normalized", lam=0.1)
    s0 = model.init(net, seed=3)

    def Ln(rho, V):
        Vh = tuple(v / jnp.linalg.norm(v) for v in V)
        return jnp.sum((y - rho * net._forward(Vh, x)) ** 2) + 0.1 * rho**2

    grho, gV = jax.grad(Ln, argnums=(0, 1))(s0.rho, s0.V)
    one = fs.sgd(model, net, small, s0, lr=1e-2, steps=1)
    assert float(one.rho[-1]) == pytest.approx(float(s0.rho - 1e-2 * grho), rel=1e-12)
    for k in range(2):
        v = s0.V[k] - 1e-2 * gV[k]
        np.testing.assert_allclose(np.asarray(one.V[k][-1]), np.asarray(v / jnp.linalg.norm(v)), rtol=1e-12)
    assert one.rho_k is None
    # weightnorm: GD on (g, v), W_k = g_k v_k/‖v_k‖, weight decay λ Σ g_k²
    model = fs.load_model("weightnorm", lam=0.1)
    s0 = model.init(net, seed=3)

    def Lw(g, v):
        W = tuple(gk * vk / jnp.linalg.norm(vk) for gk, vk in zip(g, v))
        return jnp.sum((y - net._forward(W, x)) ** 2) + 0.1 * jnp.sum(g**2)

    gg, gv = jax.grad(Lw, argnums=(0, 1))(s0.rho_k, s0.V)
    one = fs.sgd(model, net, small, s0, lr=1e-2, steps=1)
    np.testing.assert_allclose(np.asarray(one.rho_k[-1]), np.asarray(s0.rho_k - 1e-2 * gg), rtol=1e-12)
    for k in range(2):
        v = s0.V[k] - 1e-2 * gv[k]
        np.testing.assert_allclose(np.asarray(one.V[k][-1]), np.asarray(v / jnp.linalg.norm(v)), rtol=1e-12)


def test_divergence_raises_solve_error_with_partial(basic):
    model, net, data, s0 = basic
    with pytest.raises(fs.SolveError, match=r"diverged at step \d+") as info:
        fs.sgd(model, net, data, s0, lr=1.0, steps=500, record_every=2)
    partial = info.value.partial
    assert isinstance(partial, fs.Trajectory) and len(partial) >= 1
    step = int(str(info.value).split("step ")[1].split(" ")[0])
    assert float(partial.ts[-1]) < step * 1.0
    assert np.all(np.isfinite(np.asarray(partial.loss))) and np.all(np.isfinite(np.asarray(partial.V[0])))
    assert partial.stats["stopped"] == "diverged"


BAD = [
    (dict(lr=0.0), "lr"),
    (dict(lr=-1e-3), "lr"),
    (dict(lr=float("nan")), "lr"),
    (dict(lr="0.1"), "lr"),
    (dict(steps=0), "steps"),
    (dict(steps=2.5), "steps"),
    (dict(batch_size=17), "batch_size"),
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=1, batchnorm=True), "batch_size"),
    (dict(momentum=1.0), "momentum"),
    (dict(momentum=-0.5), "momentum"),
    (dict(record_every=0), "record_every"),
    (dict(seed=1.5), "seed"),
    (dict(batchnorm="yes"), "batchnorm"),
    (dict(bn_eps=0.0), "bn_eps"),
    (dict(bn_momentum=0.0), "bn_momentum"),
]


@pytest.mark.parametrize("kwargs, argument", BAD)
def test_bad_arguments_raise_before_tracing(basic, monkeypatch, kwargs, argument):
    model, net, data, s0 = basic

    def traced(*a, **k):
        raise AssertionError("compiled before validating")

    monkeypatch.setattr(_sgd, "_run_jit", traced)
    args = dict(lr=1e-2, steps=10) | kwargs
    with pytest.raises(ValueError, match=f"`{argument}`") as info:
        fs.sgd(model, net, data, s0, **args)
    assert isinstance(info.value, fs.InputError)


def test_bad_problem_arguments(basic):
    model, net, data, s0 = basic
    with pytest.raises(fs.InputError, match="`model`"):
        fs.sgd("unnormalized", net, data, s0, lr=1e-2, steps=1)
    with pytest.raises(fs.InputError, match="`state`"):
        fs.sgd(fs.load_model("normalized"), net, data, s0, lr=1e-2, steps=1)
    with pytest.raises(fs.InputError, match="`data`"):
        fs.sgd(model, net, fs.datasets.gaussian_clusters(n=8, dim=3), s0, lr=1e-2, steps=1)
    with pytest.raises(fs.InputError, match="`batchnorm`"):
        one = fs.Network((4, 1))
        m = fs.load_model("normalized")
        fs.sgd(m, one, data, m.init(one), lr=1e-2, steps=1, batchnorm=True)


# ---- compare and convergence_order -----------------------------------------------------------------
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


def test_compare_normalized_run_with_batchnorm_run_shapes(bn_problem):
    data, net = bn_problem
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
    runs = {lr: with_times(Trajectory(
        ts=flow.ts, rho=flow.rho * (1 + lr**2), rho_k=flow.rho_k, V=flow.V, margins=flow.margins,
        loss=flow.loss, rho_eq=flow.rho_eq), flow.ts) for lr in lrs}
    res = fs.convergence_order(flow, runs, metric="rho")
    assert res.order == pytest.approx(2.0, abs=1e-9)
    np.testing.assert_allclose(res.lrs, sorted(lrs))
    with pytest.raises(fs.InputError, match="`metric`"):
        fs.convergence_order(flow, runs, metric="nope")
    with pytest.raises(fs.InputError, match="`runs`"):
        fs.convergence_order(flow, [flow])
    with pytest.raises(fs.InputError, match=r"`runs\[0\]`"):
        fs.convergence_order(flow, list(runs.values()))  # no stats["lr"]
