"""flowsim._discrete._sgd: GD/SGD in each regime's raw coordinates against the flow (first-order convergence),
by-hand steps, SGD noise and low rank, a regime file of one's own, run mechanics and validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from scipy.integrate import solve_ivp

import flowsim as fs
from flowsim._discrete import _sgd
from flowsim._solver import observe
from helpers import QUARTIC_REGIME_FILE, assert_input_error, same_bits, small_problem, with_times

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


# ---- a regime of one's own ---------------------------------------------------------------------------
def test_regime_file_integrates_and_runs_sgd(tmp_path):
    """A new regime is one file: written into a temporary folder, loaded, integrated, and stepped by fs.sgd in
    the raw coordinates its embedding declares, with its own (quartic, not quadratic) weight decay."""
    path = tmp_path / "quartic.py"
    path.write_text(QUARTIC_REGIME_FILE, encoding="utf-8")
    model = fs.load_model(path, lam=0.1)
    data = fs.datasets.gaussian_clusters(n=16, dim=4, seed=0)
    net = fs.Network((4, 5, 1), activation="linear")
    s0 = model.init(net, seed=1, scale=1.0)
    # one step by hand: W ← W − lr ∇L(W), L = Σ (y − f)² + λ Σ ‖W_k‖⁴
    x, y = jnp.asarray(data.x), jnp.asarray(data.y)

    def L(W):
        return jnp.sum((y - net._forward(W, x)) ** 2) + 0.1 * sum(jnp.sum(w**2) ** 2 for w in W)

    W0 = s0.weights()
    W1 = tuple(w - 1e-2 * g for w, g in zip(W0, jax.grad(L)(W0)))
    one = fs.sgd(model, net, data, s0, lr=1e-2, steps=1)
    for k in range(2):
        np.testing.assert_allclose(np.asarray(one.rho_k[-1, k] * one.V[k][-1]), np.asarray(W1[k]), rtol=1e-12)
    assert float(one.loss[-1]) == pytest.approx(float(L(W1)), rel=1e-12)
    # GD converges to the file's flow, integrated by fs.simulate, at first order
    flow = fs.simulate(model, net, data, s0, t1=0.5, ts=np.linspace(0.0, 0.5, 11), rtol=1e-10, atol=1e-12)
    res = fs.convergence_order(flow, gd_runs(model, net, data, s0, 0.5, LRS))
    assert abs(res.order - 1.0) < 0.2 and res.errors[0] < 0.02, res
    # minibatch SGD on it runs and lowers the loss
    run = fs.sgd(model, net, data, s0, lr=1e-2, steps=400, batch_size=4, seed=0, record_every=100)
    assert run.stats["model"] == "quartic" and float(run.loss[-1]) < 0.8 * float(run.loss[0])


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


# Merged from the two former copies: same seed, bit-identical run; another seed, another run.
def test_minibatches_are_reproducible(basic):
    model, net, data, s0 = basic
    a = fs.sgd(model, net, data, s0, lr=1e-2, steps=50, batch_size=4, seed=1, record_every=10)
    b = fs.sgd(model, net, data, s0, lr=1e-2, steps=50, batch_size=4, seed=1, record_every=10)
    c = fs.sgd(model, net, data, s0, lr=1e-2, steps=50, batch_size=4, seed=2, record_every=10)
    same_bits(a, b)
    assert not np.allclose(np.asarray(a.V[0][-1]), np.asarray(c.V[0][-1]))
    net, data = small_problem()
    model = fs.load_model("weightnorm", lam=0.1)
    state = model.init(net, seed=2)
    a, b, c = (fs.sgd(model, net, data, state, lr=0.01, steps=20, batch_size=3, seed=s) for s in (7, 7, 8))
    same_bits(a, b)
    assert not np.array_equal(np.asarray(a.rho), np.asarray(c.rho))  # the seed is used


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


# Merged from the two former copies: the message names the step and the learning rate; the records before
# it are attached, finite.
def test_divergence_raises_solve_error_with_partial(basic):
    model, net, data, s0 = basic
    with pytest.raises(fs.SolveError, match=r"diverged at step \d+") as info:
        fs.sgd(model, net, data, s0, lr=1.0, steps=500, record_every=2)
    assert "lr = 1" in str(info.value)
    partial = info.value.partial
    assert isinstance(partial, fs.Trajectory) and len(partial) >= 1
    step = int(str(info.value).split("step ")[1].split(" ")[0])
    assert float(partial.ts[-1]) < step * 1.0
    assert np.all(np.isfinite(np.asarray(partial.loss))) and np.all(np.isfinite(np.asarray(partial.V[0])))
    assert np.all(np.isfinite(np.asarray(partial.rho)))
    assert partial.stats.status == "diverged" and partial.stats.t_final == float(partial.ts[-1])


def test_sgd_minibatch_divergence_names_the_batch():
    net, data = small_problem()
    model = fs.load_model("unnormalized", lam=0.0)
    with pytest.raises(fs.SolveError) as excinfo:
        fs.sgd(model, net, data, model.init(net, seed=0), lr=1e6, steps=30, batch_size=3, seed=0)
    assert "diverged at step" in str(excinfo.value) and "batch_size = 3" in str(excinfo.value)


# ---- argument validation ---------------------------------------------------------------------------
# Merged from the two former lists (small_problem has N = 6 samples).
@pytest.mark.parametrize(
    "overrides, argument, hint",
    [
        (dict(lr=0.0), "lr", "0.0"),
        (dict(lr=-0.1), "lr", "-0.1"),
        (dict(lr=float("nan")), "lr", "nan"),
        (dict(lr=float("inf")), "lr", "inf"),
        (dict(lr="0.1"), "lr", "'0.1'"),
        (dict(steps=0), "steps", "0"),
        (dict(steps=-3), "steps", "-3"),
        (dict(steps=2.0), "steps", "2.0"),
        (dict(steps=2.5), "steps", "2.5"),
        (dict(batch_size=7), "batch_size", "7"),  # N = 6
        (dict(batch_size=0), "batch_size", "0"),
        (dict(batch_size=2.5), "batch_size", "2.5"),
        (dict(momentum=1.0), "momentum", "1.0"),
        (dict(momentum=-0.5), "momentum", "-0.5"),
        (dict(record_every=0), "record_every", "0"),
        (dict(seed=1.5), "seed", "1.5"),
        (dict(batchnorm="yes"), "batchnorm", "'yes'"),
        (dict(batchnorm=True, batch_size=1), "batch_size", "1"),
        (dict(bn_eps=0.0), "bn_eps", "0.0"),
        (dict(bn_momentum=0.0), "bn_momentum", "0.0"),
        (dict(data=fs.Dataset(np.ones((3, 3)), np.array([1.0, -1.0, 1.0]))), "data", "dimension 3"),
        (dict(model="normalized"), "model", "str"),
    ],
)
def test_sgd_rejects_bad_arguments_before_tracing(no_tracing, overrides, argument, hint):
    net, data = small_problem()
    model = fs.load_model("unnormalized", lam=0.1)
    kwargs = dict(model=model, net=net, data=data, state=model.init(net, seed=0), lr=0.1, steps=3)
    kwargs.update(overrides)
    problem = [kwargs.pop(k) for k in ("model", "net", "data", "state")]
    with pytest.raises(fs.FlowsimError) as excinfo:
        fs.sgd(*problem, **kwargs)
    assert_input_error(excinfo, argument, hint)


def test_batchnorm_needs_a_hidden_layer(basic):
    _, _, data, _ = basic
    one = fs.Network((4, 1))
    m = fs.load_model("normalized")
    with pytest.raises(fs.InputError, match="`batchnorm`"):
        fs.sgd(m, one, data, m.init(one), lr=1e-2, steps=1, batchnorm=True)


def test_sgd_rejects_a_regime_it_cannot_step_in(basic):
    import sympy as sp

    _, net, data, _ = basic
    squared = fs.Regime(
        "squared",
        "raw matrix s² V",
        True,
        lambda s, th: (s**2 * sp.cos(th), s**2 * sp.sin(th)),
        lambda s, lam: lam * s**2,
    )
    model = fs.Model(squared, 0.1)
    with pytest.raises(fs.FlowsimError) as excinfo:
        fs.sgd(model, net, data, model.init(net), lr=1e-2, steps=1)
    assert_input_error(excinfo, "model", "'squared'", "raw coordinates fs.sgd can step in")


def test_sgd_is_public():
    assert fs.sgd is _sgd.sgd and "sgd" in fs.__all__
