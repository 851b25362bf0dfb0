import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import sympy as sp

import flowsim as fs
from reference import numpy_forward, random_directions, reference_field

WIDTHS = (4, 6, 5, 1)


def _problem(activation, seed=0):
    net = fs.Network(WIDTHS, activation)
    data = fs.datasets.gaussian_clusters(n=16, dim=4, seed=seed)
    return net, data


def _state(model, seed):
    V = random_directions(WIDTHS, seed)
    if model.per_layer:
        scales = np.array([0.7, 1.3, 1.1])
        return model.state(V=V, rho_k=scales), V, scales
    return model.state(V=V, rho=1.7), V, 1.7


def _rel(a, b):
    a, b = np.ravel(np.asarray(a)), np.ravel(np.asarray(b))
    return np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300)


@pytest.mark.parametrize("name", ["normalized", "unnormalized", "weightnorm"])
@pytest.mark.parametrize("activation", ["relu", "linear"])
@pytest.mark.parametrize("lam", [0.0, 0.1])
def test_field_equals_chain_rule_of_autodiff_gradient(name, activation, lam):
    net, data = _problem(activation)
    model = fs.load_model(name, lam=lam)
    state, V, scales = _state(model, seed=3)
    got = jax.jit(model.vector_field(net, data))(0.0, state)
    sdot, Vdot = reference_field(name, lam, V, scales, jnp.asarray(data.x), jnp.asarray(data.y), activation)
    for g, r in zip(got.V, Vdot):
        assert _rel(g, r) < 1e-10
    if model.per_layer:
        assert _rel(got.rho_k, sdot) < 1e-10
        rho = np.prod(scales)
        assert _rel(got.rho, rho * np.sum(np.asarray(sdot) / scales)) < 1e-10  # ρ̇ of ρ = ∏ρ_k
    else:
        assert _rel(got.rho, sdot) < 1e-10


@pytest.mark.parametrize("loss", ["exponential", "logistic"])
def test_other_losses_match_autodiff(loss):
    net, data = _problem("relu")
    for name in ("normalized", "unnormalized"):
        model = fs.load_model(name, lam=0.05, loss=loss)
        state, V, scales = _state(model, seed=4)
        got = model.vector_field(net, data)(0.0, state)
        sdot, Vdot = reference_field(name, 0.05, V, scales, jnp.asarray(data.x), jnp.asarray(data.y), "relu", loss)
        assert _rel(got.rho_k if model.per_layer else got.rho, sdot) < 1e-10
        for g, r in zip(got.V, Vdot):
            assert _rel(g, r) < 1e-10


def test_field_matches_finite_differences_of_the_loss():
    """ρ̇ = −∂L/∂ρ by central differences of a numpy loss (normalized, ReLU, λ > 0)."""
    net, data = _problem("relu")
    lam = 0.03
    model = fs.load_model("normalized", lam=lam)
    state, V, rho = _state(model, seed=5)

    def L(rho, V):
        return np.sum((data.y - rho * numpy_forward(V, data.x)) ** 2) + lam * rho**2

    h = 1e-6
    fd = -(L(rho + h, V) - L(rho - h, V)) / (2 * h)
    got = model.vector_field(net, data)(0.0, state)
    assert float(got.rho) == pytest.approx(fd, rel=1e-6)  # central differences: ~1e-9 absolute
    # V̇ along a tangent direction E: ⟨V̇_1, E⟩ = −dL/ds (V_1 + sE) for E ⊥ V_1.
    E = np.random.default_rng(1).standard_normal(V[0].shape)
    E -= V[0] * np.sum(V[0] * E)
    Vp = [V[0] + h * E] + V[1:]
    Vm = [V[0] - h * E] + V[1:]
    fd_dir = -(L(rho, Vp) - L(rho, Vm)) / (2 * h)
    assert float(jnp.vdot(got.V[0], E)) == pytest.approx(fd_dir, rel=1e-6)


def test_equations_are_derived_and_match_theory():
    """The derived sympy equations reduce to theory.md's for the square loss."""
    rho, s, f, y, lam = sp.symbols("rho rho_k f y lambda", real=True)
    d = fs.load_model("normalized").derivation
    assert sp.simplify(d.scale_sample - 2 * (y - rho * f) * f) == 0
    assert sp.simplify(d.scale_reg + 2 * lam * rho) == 0
    assert d.direction_factor == 1
    u = fs.load_model("unnormalized").derivation
    assert sp.simplify(u.scale_sample - 2 * rho / s * (y - rho * f) * f) == 0
    assert sp.simplify(u.direction_factor - 1 / s**2) == 0
    w = fs.load_model("weightnorm").derivation
    assert w.direction_factor == 1 and sp.simplify(w.scale_reg + 2 * lam * s) == 0


def test_rho_eq_closed_form_and_root():
    net, data = _problem("relu")
    V = random_directions(WIDTHS, 7)
    f = numpy_forward(V, data.x)
    if np.sum(data.y * f) < 0:
        V[-1] = -V[-1]
        f = -f
    for lam in (0.0, 0.2):
        m = fs.load_model("normalized", lam=lam)
        want = np.sum(data.y * f) / (lam + np.sum(f**2))
        assert float(m.rho_eq(net, data, m.state(V=V, rho=1.0))) == pytest.approx(want, rel=1e-12)
        # ρ̇ vanishes there
        st = m.state(V=V, rho=want)
        assert abs(float(m.vector_field(net, data)(0.0, st).rho)) < 1e-12
    # per-layer, L = 3, λ > 0: no closed form; the numeric root makes every ρ̇_k vanish (balanced)
    m = fs.load_model("unnormalized", lam=0.01)
    r = float(m.rho_eq(net, data, m.state(V=V, rho_k=[1.0, 1.0, 1.0])))
    st = m.state(V=V, rho_k=[r ** (1 / 3)] * 3)
    assert np.max(np.abs(np.asarray(m.vector_field(net, data)(0.0, st).rho_k))) < 1e-9
    # and the theory's equilibrium relation Σ y f − ρ Σ f² = λ ρ^{2/L − 1}
    assert np.sum(data.y * f) - r * np.sum(f**2) == pytest.approx(0.01 * r ** (2 / 3 - 1), rel=1e-8)


def test_balance_invariant_derived_and_numeric():
    net, data = _problem("relu")
    for name in ("unnormalized", "weightnorm"):
        for lam in (0.0, 0.3):
            m = fs.load_model(name, lam=lam)
            assert m.invariant_rate() == pytest.approx(-4 * lam)
            state, V, scales = _state(m, seed=2)
            d = m.vector_field(net, data)(0.0, state)
            q = scales**2
            dq = 2 * scales * np.asarray(d.rho_k)
            for k in range(1, 3):
                assert dq[k] - dq[0] == pytest.approx(-4 * lam * (q[k] - q[0]), rel=1e-10, abs=1e-12)


def test_singular_case_has_a_null_space():
    """normalized, λ = 0, one linear layer, N < d: the interpolant is an equilibrium with a Jacobian null space."""
    data = fs.datasets.gaussian_clusters(n=3, dim=6, seed=0)
    net = fs.Network((6, 1), "linear")
    w = np.linalg.pinv(data.x) @ data.y
    for lam, singular in ((0.0, True), (0.1, False)):
        m = fs.load_model("normalized", lam=lam)
        assert m.singular is singular and m.analysis()["singular"] is singular
        st = m.state(V=[(w / np.linalg.norm(w))[None, :]], rho=np.linalg.norm(w))
        J, eig = m.jacobian(net, data, st)
        if singular:
            assert np.max(np.abs(np.asarray(jax.flatten_util.ravel_pytree(
                m.vector_field(net, data)(0.0, st))[0]))) < 1e-12
            # tangent directions that keep X w = y: dimension d − N − (one normal direction of the sphere)
            assert np.sum(np.abs(eig) < 1e-9) >= 6 - 3
    a = fs.load_model("normalized", lam=0.0).analysis()
    syms = {str(x): x for x in a["rho_eq"].free_symbols | a["relaxation_rate"].free_symbols}
    assert sp.simplify(a["rho_eq"] - syms["M_11"] / (syms["M_20"] + syms["lambda"])) == 0  # Σyf / (λ + Σf²)
    assert sp.simplify(a["relaxation_rate"] - 2 * (syms["f"] ** 2 + syms["lambda"])) == 0


def test_latex_renders():
    for name in fs.available_models():
        m = fs.load_model(name, lam=0.1)
        text = m.latex()
        assert "\\sum_{n=1}^{N}" in text and "\\frac{d}{d t}" in text
        fig = plt.figure()
        for i, eq in enumerate(m.equations.values()):
            fig.text(0.01, 0.9 - 0.3 * i, "$" + sp.latex(eq) + "$")
        fig.canvas.draw()  # raises if mathtext cannot parse it
        plt.close(fig)


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="normalized.*unnormalized.*weightnorm"):
        fs.load_model("batchnorm")
    with pytest.raises(ValueError, match="square"):
        fs.load_model("normalized", loss="hinge")
    for lam in (-1.0, float("nan"), float("inf"), "0.1"):
        with pytest.raises(ValueError, match="`lam`"):
            fs.load_model("normalized", lam=lam)
    m = fs.load_model("unnormalized")
    net, data = _problem("relu")
    V = random_directions(WIDTHS, 0)
    with pytest.raises(ValueError, match="unit Frobenius norm"):
        m.state(V=[2 * V[0]] + V[1:], rho_k=[1, 1, 1])
    with pytest.raises(ValueError, match="`rho_k`"):
        m.state(V=V, rho_k=[1, -1, 1])
    with pytest.raises(ValueError, match="`rho_k`"):
        fs.load_model("normalized").state(V=V, rho_k=[1, 1, 1])
    with pytest.raises(ValueError, match="dimension 4"):
        m.vector_field(net, fs.datasets.gaussian_clusters(n=8, dim=3))


def test_new_regime_is_one_small_file(tmp_path):
    """A Regime declared outside the package compiles and gives the expected field."""
    regime = fs.Regime(
        name="double_decay",
        description="unnormalized with a doubled weight decay",
        per_layer=True,
        embedding=lambda s, th: (s * sp.cos(th), s * sp.sin(th)),
        regularizer=lambda s, lam: 2 * lam * s**2,
    )
    net, data = _problem("relu")
    V = random_directions(WIDTHS, 1)
    new = fs.Model(regime, 0.05)
    old = fs.load_model("unnormalized", lam=0.1)
    a = new.vector_field(net, data)(0.0, new.state(V=V, rho_k=[1.0, 0.5, 2.0]))
    b = old.vector_field(net, data)(0.0, old.state(V=V, rho_k=[1.0, 0.5, 2.0]))
    assert _rel(a.rho_k, b.rho_k) < 1e-13
