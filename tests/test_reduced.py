"""flowsim._analysis (reduced models): the exact planar reductions, their equilibria, continua, nullclines and
classification.

References are independent of the derivation: the full model's vector field, the Euclidean gradient of the
loss in weight space (jax.grad), and hand-derived closed forms (ridge regression; the balance hyperbolas).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowsim as fs
from flowsim import plot as fplot

TIGHT = dict(rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module")
def angle_data():
    return fs.datasets.gaussian_clusters(n=20, dim=2, seed=3, separation=1.5)


@pytest.fixture(scope="module")
def chain_data():
    return fplot.default_data("chain")


def _moments(data):
    x, y = data.x[:, 0], data.y
    return float(np.sum(x * y)), float(np.sum(x * x))


def test_angle_field_matches_full_model(angle_data):
    model = fs.load_model("normalized", lam=0.7)
    red = fplot.reduced_model(model, angle_data)
    field = model.vector_field(red.network, angle_data)
    rng = np.random.default_rng(0)
    for rho, th in zip(rng.uniform(0.1, 3, 5), rng.uniform(-math.pi, math.pi, 5)):
        d = field(0.0, red.to_state(np.array([rho, th])))
        e_theta = np.array([-math.sin(th), math.cos(th)])
        vdot = np.asarray(d.V[0]).ravel()
        expect = np.array([float(d.rho), vdot @ e_theta])
        np.testing.assert_allclose(red.field([rho, th]), expect, rtol=1e-12, atol=1e-12)
        # the full V̇ is tangent to the circle, so (ρ̇, θ̇) carries all of it
        np.testing.assert_allclose(vdot, expect[1] * e_theta, atol=1e-12)


@pytest.mark.parametrize("name", ["unnormalized", "weightnorm"])
def test_chain_field_matches_full_model_and_weight_space(name, chain_data):
    lam = 0.9
    model = fs.load_model(name, lam=lam)
    red = fplot.reduced_model(model, chain_data)
    assert red.kind == "chain" and red.signed
    field = model.vector_field(red.network, chain_data)
    x, y = jnp.asarray(chain_data.x[:, 0]), jnp.asarray(chain_data.y)

    def loss(w):  # the sum-loss convention, no ½ and no 1/N
        return jnp.sum((y - w[0] * w[1] * x) ** 2) + lam * jnp.sum(w**2)

    grad = jax.grad(loss)
    pts = [[0.7, 1.3], [-0.4, 0.9], [1.1, -0.2], [-0.8, -0.6], [0.0, 0.5], [0.3, 0.0], [0.0, 0.0]]
    for z in pts:
        z = np.array(z)
        # weight space: the scalar chain's gradient flow (both regimes move the scales the same way)
        np.testing.assert_allclose(red.field(z), -np.asarray(grad(jnp.asarray(z))), rtol=1e-12, atol=1e-12)
        if np.all(z != 0):  # the polar chart: ρ̇_k of the full model, signed by the frozen V_k = ±1
            d = field(0.0, red.to_state(z))
            np.testing.assert_allclose(red.field(z), np.sign(z) * np.asarray(d.rho_k), rtol=1e-12, atol=1e-12)
            assert all(float(jnp.max(jnp.abs(v))) == 0.0 for v in d.V)  # a 1×1 direction cannot move


def test_reduction_rejects_bad_input(chain_data):
    with pytest.raises(fs.InputError, match="dimension 2"):
        fplot.reduced_model(fs.load_model("normalized"), chain_data)
    with pytest.raises(fs.InputError, match="dimension 1"):
        fplot.reduced_model(fs.load_model("unnormalized"), fs.datasets.gaussian_clusters(n=8, dim=2))
    with pytest.raises(fs.InputError, match="flowsim.Model"):
        fplot.reduced_model("normalized")
    with pytest.raises(fs.InputError, match="Dataset"):
        fplot.reduced_model(fs.load_model("normalized"), np.ones((4, 2)))


@pytest.mark.parametrize("lam", [0.0, 2.5])
def test_angle_equilibrium_is_ridge_optimum_and_stable(lam, angle_data):
    red = fplot.reduced_model(fs.load_model("normalized", lam=lam), angle_data)
    X, y = angle_data.x, angle_data.y
    ridge = np.linalg.solve(X.T @ X + lam * np.eye(2), X.T @ y)  # L = Σ(y − ρV·x)² + λρ²
    eqs = red.equilibria()
    interior = [q for q in eqs if q.point[0] > 0]
    assert len(interior) == 1
    q = interior[0]
    w = q.point[0] * np.array([math.cos(q.point[1]), math.sin(q.point[1])])
    np.testing.assert_allclose(w, ridge, rtol=1e-9, atol=1e-12)
    assert q.kind == "stable node" and np.all(q.eigenvalues.real < 0)
    # the rest lie on ρ = 0, where the average margin Σ y f(θ) vanishes: saddles of the (ρ, θ) chart
    for b in eqs:
        if b is q:
            continue
        assert b.point[0] == 0.0 and b.kind == "saddle"
        v = np.array([math.cos(b.point[1]), math.sin(b.point[1])])
        assert abs(float(np.sum(y * (X @ v)))) < 1e-9
    assert red.continua() == ()


def test_angle_lambda0_interpolable_data_is_a_continuum():
    # x_n = y_n u: every (ρ, θ) with ρ u·V(θ) = 1 interpolates, so at λ = 0 the equilibria form a curve
    data = fplot.interpolable_data()
    red = fplot.reduced_model(fs.load_model("normalized", lam=0.0), data)
    (cont,) = red.continua()
    assert cont.method == "numeric" and cont.kind == "degenerate" and cont.transverse == "attracting"
    u = data.x[0]
    rho, th = cont.samples[:, 0], cont.samples[:, 1]
    np.testing.assert_allclose(rho * (u[0] * np.cos(th) + u[1] * np.sin(th)), 1.0, rtol=1e-9)
    assert len(cont.samples) >= 50
    assert all(q.point[0] == 0.0 and q.kind == "saddle" for q in red.equilibria())
    # with weight decay the continuum collapses to the ridge point
    red = fplot.reduced_model(fs.load_model("normalized", lam=0.5), data)
    assert red.continua() == ()
    (q,) = [q for q in red.equilibria() if q.point[0] > 0]
    ridge = np.linalg.solve(data.x.T @ data.x + 0.5 * np.eye(2), data.x.T @ data.y)
    np.testing.assert_allclose(q.point[0] * np.array([np.cos(q.point[1]), np.sin(q.point[1])]), ridge, rtol=1e-9)
    assert q.kind == "stable node"


def test_angle_nullclines_are_symbolic_and_match_rho_eq(angle_data):
    lam = 2.5
    model = fs.load_model("normalized", lam=lam)
    red = fplot.reduced_model(model, angle_data)
    n_rho, n_theta = red.nullclines()
    assert n_rho.method == n_theta.method == "symbolic"
    (branch,) = n_rho.branches  # ρ = ρ_eq(θ), the paper's Σ y f / (λ + Σ f²)
    th = np.linspace(-3, 3, 13)
    f = np.cos(th)[:, None] * angle_data.x[:, 0] + np.sin(th)[:, None] * angle_data.x[:, 1]
    expect = (f @ angle_data.y) / (lam + np.sum(f**2, axis=1))
    np.testing.assert_allclose(branch.fn(th), expect, rtol=1e-10)
    assert any(b.expr == 0 for b in n_theta.branches)  # θ̇ ∝ ρ: the axis ρ = 0 is a θ̇-nullcline


def test_chain_lambda0_continuum_on_hyperbola(chain_data):
    red = fplot.reduced_model(fs.load_model("unnormalized", lam=0.0), chain_data)
    sxy, sxx = _moments(chain_data)
    c = sxy / sxx
    (cont,) = red.continua()
    assert cont.kind == "degenerate" and cont.transverse == "attracting"
    z = cont.samples
    np.testing.assert_allclose(z[:, 0] * z[:, 1], c, rtol=1e-10)
    for zi, ev in zip(z, cont.eigenvalues):  # one zero eigenvalue (along the curve), one −2Σx²(ρ_1² + ρ_2²)
        ev = np.sort(ev.real)
        assert abs(ev[1]) < 1e-9 * abs(ev[0])
        np.testing.assert_allclose(ev[0], -2 * sxx * (zi @ zi), rtol=1e-9)
    (origin,) = red.equilibria()
    np.testing.assert_allclose(origin.point, 0.0, atol=1e-12)
    assert origin.kind == "saddle"
    np.testing.assert_allclose(np.sort(origin.eigenvalues.real), [-2 * sxy, 2 * sxy], rtol=1e-10)
    assert fs.load_model("unnormalized", lam=0.0).singular


def test_chain_lambda0_conserves_balance_and_ends_on_hyperbola(chain_data):
    red = fplot.reduced_model(fs.load_model("unnormalized", lam=0.0), chain_data)
    sxy, sxx = _moments(chain_data)
    z0 = red.grid(64)
    ts, zs, ok, _ = red.integrate(z0, t1=2.0, **TIGHT)
    assert ok.all()
    Q = zs[..., 0] ** 2 - zs[..., 1] ** 2
    assert np.max(np.abs(Q - Q[:, :1])) < 1e-8
    off = np.abs(z0[:, 0] + z0[:, 1]) > 1e-9  # the anti-diagonal is the saddle's stable manifold
    end = zs[off, -1]
    np.testing.assert_allclose(end[:, 0] * end[:, 1], sxy / sxx, rtol=1e-6)
    # the end point is fixed by the start: the hyperbola point with the same ρ_1² − ρ_2²
    np.testing.assert_allclose(end[:, 0] ** 2 - end[:, 1] ** 2, Q[off, 0], atol=1e-8)


def test_chain_weight_decay_equilibria_and_balance_decay(chain_data):
    lam = 3.0
    red = fplot.reduced_model(fs.load_model("unnormalized", lam=lam), chain_data)
    sxy, sxx = _moments(chain_data)
    r = math.sqrt((sxy - lam) / sxx)  # balanced: Σ y f − ρ Σ f² = λ ρ^{2/L − 1} with L = 2
    eqs = red.equilibria()
    assert red.continua() == ()
    assert [q.kind for q in eqs] == ["stable node", "saddle", "stable node"]
    np.testing.assert_allclose(eqs[0].point, [-r, -r], rtol=1e-10)
    np.testing.assert_allclose(eqs[1].point, [0, 0], atol=1e-12)
    np.testing.assert_allclose(eqs[2].point, [r, r], rtol=1e-10)
    np.testing.assert_allclose(np.sort(eqs[1].eigenvalues.real), [-2 * lam - 2 * sxy, 2 * sxy - 2 * lam], rtol=1e-10)
    ts, zs, ok, _ = red.integrate(red.grid(16), t1=0.2, **TIGHT)
    assert ok.all()
    Q = zs[..., 0] ** 2 - zs[..., 1] ** 2
    np.testing.assert_allclose(Q, Q[:, :1] * np.exp(-4 * lam * ts)[None, :], atol=1e-9)


def test_logistic_loss_is_contoured(chain_data):
    red = fplot.reduced_model(fs.load_model("unnormalized", lam=0.0, loss="logistic"), chain_data)
    assert [n.method for n in red.nullclines()] == ["contour", "contour"]
    assert red.continua() == ()
    assert [q.kind for q in red.equilibria()] == ["saddle"]


def test_classify():
    assert fplot.classify([-1, -2]) == "stable node"
    assert fplot.classify([1, 2]) == "unstable node"
    assert fplot.classify([-1, 2]) == "saddle"
    assert fplot.classify([0.0, -2]) == "degenerate"
    assert fplot.classify([-1 + 1j, -1 - 1j]) == "stable focus"
    assert fplot.classify([1j, -1j]) == "center"


def test_reduction_reports_its_equations_and_maps_states():
    red = fplot.reduced_model(fs.load_model("normalized", lam=0.5))
    assert red.kind == "angle" and red.coords == ("rho", "theta") and "Reduced2D('normalized'" in repr(red)
    assert red.latex().startswith("\\begin{aligned}") and "M_{" in red.latex()
    z = np.array([1.3, 0.4])
    np.testing.assert_allclose(red.from_state(red.to_state(z)), z, rtol=1e-14)
    np.testing.assert_allclose(red.canonical([-1.0, 0.5]), [1.0, 0.5 - math.pi], rtol=1e-14)  # (−ρ, θ) ~ (ρ, θ+π)
    with pytest.raises(fs.InputError, match="`t1`"):
        red.integrate(z, t1=-1.0)
