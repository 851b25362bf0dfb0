"""flowsim._solver._simulate: fs.simulate against closed forms and independent integrators, its solvers, its
faults, its argument validation and its determinism."""

import math
import warnings

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from scipy.integrate import solve_ivp

import flowsim as fs
from helpers import assert_input_error, same_bits, separable_sign, small_problem
from reference import random_directions, reference_field

pytestmark = pytest.mark.filterwarnings("ignore:the initial state is not on average separable")

SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
X_OK = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
Y_OK = np.array([1.0, -1.0, 1.0])


def _aligned(V, data, net):
    """Flip the last layer so that Σ y f > 0 (on average separable start)."""
    f = net.forward([jnp.asarray(v) for v in V], jnp.asarray(data.x))
    if float(jnp.sum(jnp.asarray(data.y) * f)) < 0:
        V = V[:-1] + [-V[-1]]
    return V


# ---- closed forms and independent references --------------------------------------------------
def test_ridge_regression_closed_form():
    """normalized, one linear layer: the steady state ρV is ridge regression (XᵀX + λI)⁻¹Xᵀy."""
    data = fs.datasets.gaussian_clusters(n=20, dim=5, seed=0)
    lam = 0.5
    X, y = data.x, data.y
    ridge = np.linalg.solve(X.T @ X + lam * np.eye(5), X.T @ y)
    net = fs.Network((5, 1), "linear")
    m = fs.load_model("normalized", lam=lam)
    v0 = X.T @ y + np.random.default_rng(0).standard_normal(5)
    s0 = m.state(V=[(v0 / np.linalg.norm(v0))[None, :]], rho=0.1)
    tr = fs.simulate(m, net, data, s0, t1=1e4, rtol=1e-10, atol=1e-12, steady_state=True, steady_tol=1e-10)
    assert tr.stats["steady_state"] is True and tr.ts[-1] < 1e4
    w = float(tr.rho[-1]) * np.asarray(tr.V[0][-1, 0])
    np.testing.assert_allclose(w, ridge, rtol=1e-7, atol=1e-9)
    assert float(tr.rho_eq[-1]) == pytest.approx(float(tr.rho[-1]), rel=1e-8)


@pytest.mark.parametrize("solver", ["rosenbrock", "tsit5", "dopri8", "kvaerno5"])
def test_every_solver_reaches_the_ridge_solution(solver):
    """The non-default solvers converge to the same closed form, and report what they can count."""
    data = fs.datasets.gaussian_clusters(n=20, dim=5, seed=0)
    lam = 0.5
    ridge = np.linalg.solve(data.x.T @ data.x + lam * np.eye(5), data.x.T @ data.y)
    net = fs.Network((5, 1), "linear")
    m = fs.load_model("normalized", lam=lam)
    v0 = data.x.T @ data.y + np.random.default_rng(0).standard_normal(5)
    s0 = m.state(V=[(v0 / np.linalg.norm(v0))[None, :]], rho=0.1)
    tr = fs.simulate(m, net, data, s0, t1=200.0, rtol=1e-10, atol=1e-12, solver=solver)  # 10**log10(200) > 200
    assert tr.ts[-1] == 200.0
    w = float(tr.rho[-1]) * np.asarray(tr.V[0][-1, 0])
    np.testing.assert_allclose(w, ridge, rtol=1e-6, atol=1e-8)
    st = tr.stats
    assert st.method == solver and st.status == "ok" and st.steps > 0 and st.rejected_steps >= 0
    # only flowsim's solver counts its Jacobians: None for the others, never a made-up 0
    assert (st.jacobians is None) == (solver != "rosenbrock")
    assert solver != "rosenbrock" or 1 <= st.jacobians <= st.steps


def test_min_norm_interpolant_from_tiny_scale():
    """unnormalized, one linear layer, N < d, tiny start: converges to pinv(X) y (stiff: V̇ ∝ 1/ρ²)."""
    data = fs.datasets.gaussian_clusters(n=4, dim=8, seed=1)
    X, y = data.x, data.y
    w_star = np.linalg.pinv(X) @ y
    net = fs.Network((8, 1), "linear")
    m = fs.load_model("unnormalized", lam=0.0)
    s0 = m.init(net, seed=3, scale=1e-6)
    tr = fs.simulate(m, net, data, s0, t1=200.0, rtol=1e-9, atol=1e-12)
    w = float(tr.rho[-1]) * np.asarray(tr.V[0][-1, 0])
    np.testing.assert_allclose(w, w_star, atol=3e-6)  # the start's null-space part, |W0| = 1e-6, remains


def test_saxe_logistic_law_two_layer_linear():
    """Two-layer linear net, whitened inputs, aligned balanced start: u = ρ obeys u̇ = 4u(c − u)."""
    rng = np.random.default_rng(2)
    N, d, h = 12, 4, 3
    Q, _ = np.linalg.qr(rng.standard_normal((N, d)))  # XᵀX = I
    y = np.where(rng.standard_normal(N) > 0, 1.0, -1.0)
    data = fs.Dataset(Q, y)
    c = np.linalg.norm(Q.T @ y)
    s = Q.T @ y / c
    u0 = 1e-3
    net = fs.Network((d, h, 1), "linear")
    m = fs.load_model("unnormalized", lam=0.0)
    V1 = np.zeros((h, d))
    V1[0] = s
    V2 = np.zeros((1, h))
    V2[0, 0] = 1.0
    s0 = m.state(V=[V1, V2], rho_k=[np.sqrt(u0), np.sqrt(u0)])
    ts = np.linspace(0, 3.0 / c, 40)
    tr = fs.simulate(m, net, data, s0, t1=float(ts[-1]), ts=ts, rtol=1e-10, atol=1e-13)
    law = c / (1 + (c / u0 - 1) * np.exp(-4 * c * ts))
    np.testing.assert_allclose(np.asarray(tr.rho), law, rtol=1e-7)
    assert law[-1] > 0.9 * c  # the run covers the whole sigmoid


def test_relu_matches_scipy_dop853_on_independent_field():
    """Small ReLU net crossing kinks transversally (no sliding), raw field: agree with DOP853 at tight
    tolerance on the W-coordinate autodiff field."""
    data = fs.datasets.gaussian_clusters(n=10, dim=3, seed=4)
    net = fs.Network((3, 5, 1))
    x, yy = jnp.asarray(data.x), jnp.asarray(data.y)
    V = _aligned(random_directions((3, 5, 1), 4), data, net)
    scales = np.array([1.2, 0.8])
    m = fs.load_model("unnormalized", lam=0.05)
    s0 = m.state(V=V, rho_k=scales)
    ts = np.linspace(0, 0.2, 11)
    tr = fs.simulate(m, net, data, s0, t1=0.2, ts=ts, rtol=1e-10, atol=1e-12, smoothing=None, solver="dopri8")
    assert tr.stats["switches"] > 0
    smooth = fs.simulate(m, net, data, s0, t1=0.2, ts=ts, rtol=1e-9, atol=1e-12, smoothing=1e-7)  # default BDF

    shapes = [v.shape for v in V]
    sizes = [int(np.prod(sh)) for sh in shapes]

    def rhs(t, z):
        W, i = [], 0
        for sh, n in zip(shapes, sizes):
            W.append(jnp.asarray(z[i : i + n].reshape(sh)))
            i += n
        G = jax.grad(lambda W: jnp.sum((yy - _fwd(W, x)) ** 2) + 0.05 * sum(jnp.sum(w**2) for w in W))(W)
        return -np.concatenate([np.ravel(np.asarray(g)) for g in G])

    z0 = np.concatenate([np.ravel(r * v) for r, v in zip(scales, V)])
    ref = solve_ivp(rhs, (0, 0.2), z0, method="DOP853", t_eval=ts, rtol=1e-12, atol=1e-13)
    W1 = ref.y[: sizes[0]].T.reshape(len(ts), *shapes[0])
    np.testing.assert_allclose(np.asarray(tr.rho_k[:, 0]), np.linalg.norm(W1, axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(tr.V[0]), W1 / np.linalg.norm(W1, axis=(1, 2))[:, None, None], atol=1e-6)
    np.testing.assert_allclose(np.asarray(smooth.rho_k[:, 0]), np.linalg.norm(W1, axis=(1, 2)), rtol=1e-5)


def _fwd(W, x):
    return (jnp.maximum(x @ W[0].T, 0.0) @ W[1].T)[:, 0]


@pytest.mark.slow
def test_sliding_case_matches_fine_euler_reference():
    """A trajectory that slides along switching surfaces for most of its time agrees with hand-written
    Euler GD on the raw non-smooth gradient at η = 1e-5, which converges to the Filippov solution."""
    data = fs.datasets.gaussian_clusters(n=12, dim=3, seed=1)
    net = fs.Network((3, 6, 1))
    m = fs.load_model("normalized", lam=1e-2)
    s0 = m.init(net, seed=0, scale=0.5)
    T = 3.0
    tr = fs.simulate(m, net, data, s0, t1=T, ts=np.linspace(0.0, T, 301), smoothing=1e-5, rtol=1e-8, atol=1e-10)
    assert tr.stats.sliding_time > 0.5 * T and tr.stats.switches > 0 and tr.stats.pinned > 0
    x, y = jnp.asarray(data.x), jnp.asarray(data.y)

    def euler(eta):
        def step(c, _):
            rho, V = c
            rd, Vd = reference_field("normalized", 1e-2, V, rho, x, y, "relu")
            V = [v + eta * d for v, d in zip(V, Vd)]
            return (rho + eta * rd, [v / jnp.linalg.norm(v) for v in V]), None

        (rho, V), _ = jax.jit(lambda c: jax.lax.scan(step, c, None, length=int(round(T / eta))))((s0.rho, list(s0.V)))
        return float(rho), V

    rho_coarse, _ = euler(1e-4)
    rho_fine, V_fine = euler(1e-5)
    assert abs(float(tr.rho[-1]) - rho_fine) < 2e-5
    assert abs(rho_coarse - rho_fine) > 10 * abs(float(tr.rho[-1]) - rho_fine)  # closer than the Euler(1e-4) gap
    for k in range(2):
        assert np.max(np.abs(np.asarray(tr.V[k][-1]) - np.asarray(V_fine[k]))) < 1e-4


# ---- manifolds, balance law, steady state ------------------------------------------------------
@pytest.mark.parametrize("name", ["unnormalized", "weightnorm"])
@pytest.mark.parametrize("lam", [0.0, 0.1])
def test_manifold_and_balance_laws(name, lam):
    data = fs.datasets.gaussian_clusters(n=16, dim=4, seed=5)
    net = fs.Network((4, 6, 5, 1))
    m = fs.load_model(name, lam=lam)
    V = _aligned(random_directions((4, 6, 5, 1), 6), data, net)
    s0 = m.state(V=V, rho_k=[0.6, 1.1, 1.4])
    # the balance law as integrated (not imposed by the projection onto the derived balance manifold)
    tr = fs.simulate(m, net, data, s0, t1=5.0, rtol=1e-11, atol=1e-13, enforce_balance=False)
    assert tr.stats["balance_enforced"] is False
    for v in tr.V:
        np.testing.assert_allclose(np.linalg.norm(np.asarray(v), axis=(1, 2)), 1.0, atol=1e-10)
    q = np.asarray(tr.rho_k) ** 2
    q0 = np.asarray(s0.rho_k) ** 2
    decay = np.exp(-4 * lam * np.asarray(tr.ts))[:, None]
    want = (q0[1:] - q0[0])[None, :] * decay
    np.testing.assert_allclose(q[:, 1:] - q[:, :1], want, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(np.asarray(tr.rho), np.prod(np.asarray(tr.rho_k), axis=1), rtol=1e-14)
    # at default tolerances the drift the projection removes is of the solver's tolerance
    assert fs.simulate(m, net, data, s0, t1=5.0).stats["max_balance_drift"] < 1e-5


SIM_WIDTHS = ((2, 3, 1), (2, 2, 2, 1))  # few shapes: every shape compiles the field and its Jacobian once


@pytest.mark.slow
@settings(max_examples=6, **SETTINGS)
@given(
    name=st.sampled_from(("unnormalized", "weightnorm")),
    widths=st.sampled_from(SIM_WIDTHS),
    lam=st.sampled_from((0.0, 0.05, 0.5)),
    seed=st.integers(0, 2**16),
)
def test_simulate_keeps_unit_directions_and_the_balance_law(name, widths, lam, seed):
    rng = np.random.default_rng(seed)
    net, data = small_problem(widths, n=6, seed=seed % 7)
    model = fs.load_model(name, lam=lam)
    V = separable_sign(net, data, random_directions(widths, seed))
    rho_k = rng.uniform(0.6, 1.6, len(V))  # unbalanced: the invariant is not zero
    state = model.state(V, rho_k=list(rho_k))
    t1 = 1.0
    traj = fs.simulate(
        model,
        net,
        data,
        state,
        t1=t1,
        ts=np.linspace(0.0, t1, 6),
        rtol=1e-9,
        atol=1e-12,
        progress=False,
        enforce_balance=False,
    )  # measure the law, do not impose it
    for v in traj.V:
        norms = np.linalg.norm(np.asarray(v).reshape(v.shape[0], -1), axis=1)
        assert np.max(np.abs(norms - 1.0)) <= 1e-10
    assert traj.stats["max_norm_drift"] <= 1e-6  # the solver itself stays near the sphere
    assert math.isclose(model.invariant_rate(), -4.0 * lam, rel_tol=1e-12, abs_tol=1e-15)
    rk = np.asarray(traj.rho_k)
    Q = rk[:, 1:] ** 2 - rk[:, :1] ** 2
    Q0 = rho_k[1:] ** 2 - rho_k[0] ** 2
    expected = Q0[None, :] * np.exp(-4.0 * lam * np.asarray(traj.ts))[:, None]
    ref = np.max(np.abs(Q0)) + 1e-300
    assert np.max(np.abs(Q - expected)) <= 1e-7 * ref
    assert traj.stats["max_balance_drift"] <= 1e-6  # before projection, too


def test_steady_state_stops_and_records():
    data = fs.datasets.gaussian_clusters(n=20, dim=5, seed=0)
    net = fs.Network((5, 1), "linear")
    m = fs.load_model("normalized", lam=0.1)
    s0 = m.init(net, seed=0, scale=1.0)
    tr = fs.simulate(m, net, data, s0, t1=1e6, steady_state=True, progress=False)
    assert tr.stats["steady_state"] is True
    assert tr.ts[-1] < 1e6 and tr.ts[-1] == tr.stats["t_final"]
    speed = np.linalg.norm(jax.flatten_util.ravel_pytree(m.vector_field(net, data)(0.0, tr.final))[0])
    assert speed < 1e-5
    tr2 = fs.simulate(m, net, data, s0, t1=1.0, steady_state=True, progress=False)
    assert tr2.stats["steady_state"] is False and tr2.ts[-1] == 1.0


def test_steady_stop_time_does_not_depend_on_the_save_grid():
    # diffrax writes an event's end state into the first save slot past it: the stop time must come from the
    # solve, not from the save grid (it read t1 when ts ended at t1).
    data = fs.datasets.gaussian_clusters(n=20, dim=5, seed=0)
    net = fs.Network((5, 1), "linear")
    m = fs.load_model("normalized", lam=0.1)
    s0 = m.init(net, seed=0, scale=1.0)
    field = m.vector_field(net, data)

    def speed(state):
        return np.linalg.norm(jax.flatten_util.ravel_pytree(field(0.0, state))[0])

    ends = []
    for ts in ([0.0, 1e4], np.linspace(0.0, 1e4, 101)):
        tr = fs.simulate(m, net, data, s0, t1=1e4, ts=ts, steady_state=True, steady_tol=1e-8, progress=False)
        t_end = tr.stats["t_final"]
        assert tr.stats["steady_state"] and 0 < t_end < 1e4 and tr.ts[-1] == t_end
        assert np.all(np.diff(np.asarray(tr.ts)) > 0)
        ends.append((t_end, jax.flatten_util.ravel_pytree(tr.final)[0]))
    assert ends[0][0] == ends[1][0]
    np.testing.assert_array_equal(ends[0][1], ends[1][1])
    # stationary at the end (the test reads the unprojected state, hence the margin over steady_tol)
    assert speed(tr.final) <= 1e-6 * speed(s0)


@pytest.mark.slow
@settings(max_examples=5, **SETTINGS)
@given(lam=st.floats(0.05, 2.0), seed=st.integers(0, 2**16))
def test_rho_reaches_rho_eq_at_steady_state(lam, seed):
    net, data = small_problem((2, 1), n=6, seed=seed % 5, activation="linear")
    model = fs.load_model("normalized", lam=lam)
    V = separable_sign(net, data, random_directions((2, 1), seed))
    state = model.state(V, rho=float(np.random.default_rng(seed).uniform(0.2, 3.0)))
    traj = fs.simulate(
        model,
        net,
        data,
        state,
        t1=1e4,
        ts=[0.0, 1.0],
        steady_state=True,
        steady_tol=1e-11,
        rtol=1e-10,
        atol=1e-12,
        progress=False,
    )
    assert traj.stats["steady_state"]
    rho, rho_eq = float(traj.rho[-1]), float(traj.rho_eq[-1])
    assert rho_eq > 0
    assert abs(rho - rho_eq) <= 1e-6 * abs(rho_eq), (rho, rho_eq)


# ---- run-time faults -----------------------------------------------------------------------------
# Merged from the two former step-limit tests: the message says how to fix it, the part computed is attached.
def test_step_limit_raises_with_partial_trajectory():
    net, data = small_problem()
    model = fs.load_model("unnormalized", lam=0.1)
    with pytest.raises(fs.SolveError) as excinfo:
        fs.simulate(model, net, data, model.init(net, seed=0), t1=100.0, max_steps=2, progress=False)
    msg = str(excinfo.value)
    assert "max_steps = 2" in msg and "raise max_steps" in msg and "t =" in msg, msg
    partial = excinfo.value.partial
    assert isinstance(partial, fs.Trajectory) and 1 <= len(partial) and float(partial.ts[-1]) < 100.0
    data = fs.datasets.gaussian_clusters(n=20, dim=5, seed=0)
    net = fs.Network((5, 8, 1))
    m = fs.load_model("normalized", lam=0.01)
    s0 = m.init(net, seed=1, scale=0.5)
    with pytest.raises(fs.SolveError, match="max_steps = 30") as err:
        fs.simulate(m, net, data, s0, t1=100.0, max_steps=30)
    partial = err.value.partial
    assert isinstance(partial, fs.Trajectory) and 0 < partial.ts[-1] < 100.0
    assert np.all(np.isfinite(np.asarray(partial.rho)))


def test_blow_up_raises_naming_the_time():
    """A user regime whose weight growth blows up in finite time (ṡ ≈ 4 s³ from s = 1: t* ≈ 1/8)."""
    regime = fs.Regime(
        "antidecay",
        "negative quartic decay",
        True,
        lambda s, th: (s * sp.cos(th), s * sp.sin(th)),
        lambda s, lam: -lam * s**4,
    )
    m = fs.Model(regime, 1.0)
    data = fs.datasets.gaussian_clusters(n=6, dim=2, seed=0)
    net = fs.Network((2, 1), "linear")
    s0 = m.state(V=[np.array([[0.6, 0.8]])], rho_k=[1.0])
    with pytest.raises(fs.SolveError, match=r"t = 0\.1[0-9]*") as err:
        fs.simulate(m, net, data, s0, t1=1.0)
    partial = err.value.partial
    assert float(partial.ts[-1]) < 0.2 and float(partial.rho[-1]) > 1e3


def test_non_finite_field_raises_solve_error_bdf():
    net, data = small_problem()
    model = fs.load_model("unnormalized", lam=0.0)
    state = model.init(net, seed=0, scale=1e200)  # a valid scale whose field overflows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(fs.SolveError) as excinfo:
            fs.simulate(model, net, data, state, t1=1.0, ts=[0.0, 1.0], progress=False)
    assert "non-finite" in str(excinfo.value) and "t =" in str(excinfo.value)
    assert excinfo.value.partial is not None


@pytest.mark.slow
def test_non_finite_field_raises_solve_error_diffrax():
    net, data = small_problem()
    model = fs.load_model("unnormalized", lam=0.0)
    state = model.init(net, seed=0, scale=1e200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(fs.SolveError) as excinfo:
            fs.simulate(model, net, data, state, t1=1.0, ts=[0.0, 1.0], solver="tsit5", max_steps=500, progress=False)
    assert "non-finite" in str(excinfo.value), str(excinfo.value)


def test_not_separable_start_warns():
    net, data = small_problem()
    model = fs.load_model("normalized", lam=0.1)
    V = separable_sign(net, data, random_directions(net.widths, 3))
    flipped = list(V[:-1]) + [-np.asarray(V[-1])]  # Σ y f < 0 now
    state = model.state(flipped, rho=1.0)
    with pytest.warns(UserWarning, match="not on average separable"):
        fs.simulate(model, net, data, state, t1=0.01, ts=[0.0, 0.01], progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the separable start does not warn
        fs.simulate(model, net, data, model.state(V, rho=1.0), t1=0.01, ts=[0.0, 0.01], progress=False)


@pytest.mark.slow
def test_stall_case_explicit_stalls_auto_finishes():
    """The stall case (docs/theory.md): Tsit5 on the raw field grinds; the default solver gets far beyond it."""
    data = fs.datasets.gaussian_clusters(n=40, dim=5, seed=0)
    net = fs.Network((5, 16, 16, 1))
    m = fs.load_model("normalized", lam=1e-2)
    s0 = m.init(net, seed=0, scale=0.1)
    with pytest.raises(fs.SolveError, match="max_steps") as err:
        fs.simulate(m, net, data, s0, t1=2.0, solver="tsit5", smoothing=None, rtol=1e-7, max_steps=20000)
    st = err.value.partial.stats
    assert st.rejected_steps > 0.3 * (st.steps + st.rejected_steps) and st.t_final < 1.0
    tr = fs.simulate(m, net, data, s0, t1=50.0, progress=False)
    assert tr.stats.steps < 20000 and tr.stats.sliding_time > 0


# ---- argument validation and determinism --------------------------------------------------------
def _bad_simulate_cases():
    """(label, overrides, argument, hint): overrides of the simulate call that must be rejected."""
    nan = float("nan")
    return [
        ("t1 zero", dict(t1=0.0), "t1", "0.0"),
        ("t1 negative", dict(t1=-1.0), "t1", "-1.0"),
        ("t1 nan", dict(t1=nan), "t1", "nan"),
        ("t1 inf", dict(t1=float("inf")), "t1", "inf"),
        ("ts past t1", dict(t1=1.0, ts=[0.0, 0.5, 2.0]), "ts", "[0, 2]"),
        ("ts negative", dict(t1=1.0, ts=[-0.1, 0.5]), "ts", "[-0.1, 0.5]"),
        ("ts repeated", dict(t1=1.0, ts=[0.0, 0.5, 0.5]), "ts", "increasing"),
        ("ts decreasing", dict(t1=1.0, ts=[0.0, 0.6, 0.3]), "ts", "increasing"),
        ("ts nan", dict(t1=1.0, ts=[0.0, nan]), "ts", "finite"),
        ("ts empty", dict(t1=1.0, ts=[]), "ts", "non-empty"),
        ("rtol zero", dict(rtol=0.0), "rtol", "0.0"),
        ("rtol negative", dict(rtol=-1e-6), "rtol", "-1e-06"),
        ("rtol nan", dict(rtol=nan), "rtol", "nan"),
        ("atol zero", dict(atol=0.0), "atol", "0.0"),
        ("atol negative", dict(atol=-1.0), "atol", "-1.0"),
        ("max_steps zero", dict(max_steps=0), "max_steps", "0"),
        ("solver", dict(solver="euler"), "solver", "'euler'"),
        ("smoothing", dict(smoothing=-1.0), "smoothing", "-1.0"),
        ("model", dict(model="normalized"), "model", "str"),
        ("net", dict(net=(2, 3, 1)), "net", "tuple"),
        ("data", dict(data=(X_OK, Y_OK)), "data", "tuple"),
        ("data dim", dict(data=fs.Dataset(np.ones((3, 3)), Y_OK)), "data", "dimension 3"),
        ("state type", dict(state="state"), "state", "str"),
    ]


@pytest.mark.parametrize(
    "label, overrides, argument, hint", _bad_simulate_cases(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_simulate_rejects_bad_arguments_before_tracing(no_tracing, label, overrides, argument, hint):
    net, data = small_problem()
    model = fs.load_model("normalized", lam=0.1)
    kwargs = dict(model=model, net=net, data=data, state=model.init(net, seed=0), t1=1.0)
    kwargs.update(overrides)
    with pytest.raises(fs.FlowsimError) as excinfo:
        fs.simulate(**kwargs)
    assert_input_error(excinfo, argument, hint)


def test_simulate_is_bit_identical():
    net, data = small_problem()
    model = fs.load_model("unnormalized", lam=0.1)
    state = model.state(separable_sign(net, data, random_directions(net.widths, 4)), rho_k=[0.9, 1.2])
    runs = [fs.simulate(model, net, data, state, t1=0.5, ts=[0.0, 0.1, 0.5], progress=False) for _ in range(2)]
    same_bits(runs[0], runs[1])
    assert runs[0].stats.steps == runs[1].stats.steps
