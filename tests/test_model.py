"""flowsim._model: loading regimes, the compiled vector field against independent references, ρ_eq, invariants,
the singular case, States and their validation."""

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings

import flowsim as fs
from helpers import QUARTIC_REGIME_FILE, assert_input_error, same_bits, small_problem
from reference import jax_forward, numpy_forward, random_directions, reference_field

WIDTHS = (4, 6, 5, 1)
SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
MODELS = ("normalized", "unnormalized", "weightnorm")
LOSSES = ("square", "exponential", "logistic")
X_OK = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
Y_OK = np.array([1.0, -1.0, 1.0])


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


# ---- the compiled field against independent references ----------------------------------------
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
        got = model.vector_field(net, data, smoothing=None)(0.0, state)
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
    got = model.vector_field(net, data, smoothing=None)(0.0, state)
    assert float(got.rho) == pytest.approx(fd, rel=1e-6)  # central differences: ~1e-9 absolute
    # V̇ along a tangent direction E: ⟨V̇_1, E⟩ = −dL/ds (V_1 + sE) for E ⊥ V_1.
    E = np.random.default_rng(1).standard_normal(V[0].shape)
    E -= V[0] * np.sum(V[0] * E)
    Vp = [V[0] + h * E] + V[1:]
    Vm = [V[0] - h * E] + V[1:]
    fd_dir = -(L(rho, Vp) - L(rho, Vm)) / (2 * h)
    assert float(jnp.vdot(got.V[0], E)) == pytest.approx(fd_dir, rel=1e-6)


widths_strategy = st.one_of(
    st.tuples(st.integers(2, 4), st.integers(2, 5), st.just(1)),
    st.tuples(st.integers(1, 3), st.just(1)),
    st.tuples(st.integers(2, 3), st.integers(2, 3), st.integers(2, 3), st.just(1)),
)


@settings(max_examples=20, **SETTINGS)
@given(
    name=st.sampled_from(MODELS),
    loss=st.sampled_from(LOSSES),
    activation=st.sampled_from(("relu", "linear")),
    lam=st.one_of(st.just(0.0), st.floats(0.0, 1.0)),
    widths=widths_strategy,
    n=st.integers(3, 8),
    seed=st.integers(0, 2**16),
)
def test_compiled_field_matches_reference(name, loss, activation, lam, widths, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, widths[0]))
    y = np.where(rng.standard_normal(n) > 0, 1.0, -1.0)
    data = fs.Dataset(x, y)
    net = fs.Network(widths, activation=activation)
    model = fs.load_model(name, lam=lam, loss=loss)
    V = random_directions(widths, seed + 1)
    L = len(V)
    if model.per_layer:
        scales = rng.uniform(0.5, 2.0, L)
        state = model.state(V, rho_k=list(scales))
    else:
        scales = float(rng.uniform(0.5, 2.0))
        state = model.state(V, rho=scales)
    out = model.vector_field(net, data, smoothing=None)(0.0, state)
    sdot_ref, Vdot_ref = reference_field(name, lam, V, scales, jnp.asarray(x), jnp.asarray(y), activation, loss)
    got = np.concatenate([np.ravel(out.rho_k if model.per_layer else out.rho)] + [np.ravel(v) for v in out.V])
    ref = np.concatenate([np.ravel(np.asarray(sdot_ref))] + [np.ravel(np.asarray(v)) for v in Vdot_ref])
    assert got.shape == ref.shape
    assert np.all(np.isfinite(got))
    scale = max(np.linalg.norm(ref), 1e-12)
    assert np.linalg.norm(got - ref) <= 1e-9 * scale, np.linalg.norm(got - ref) / scale
    if model.per_layer:  # the overall scale's rate is consistent with the per-layer rates
        rk = np.asarray(scales)
        assert np.isclose(float(out.rho), np.prod(rk) * np.sum(np.asarray(sdot_ref) / rk), rtol=1e-9, atol=1e-12)


# ---- symbolic facts, checked numerically -------------------------------------------------------
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
            assert (
                np.max(np.abs(np.asarray(jax.flatten_util.ravel_pytree(m.vector_field(net, data)(0.0, st))[0]))) < 1e-12
            )
            # tangent directions that keep X w = y: dimension d − N − (one normal direction of the sphere)
            assert np.sum(np.abs(eig) < 1e-9) >= 6 - 3
    a = fs.load_model("normalized", lam=0.0).analysis()
    syms = {str(x): x for x in a["rho_eq"].free_symbols | a["relaxation_rate"].free_symbols}
    assert sp.simplify(a["rho_eq"] - syms["M_11"] / (syms["M_20"] + syms["lambda"])) == 0  # Σyf / (λ + Σf²)
    assert sp.simplify(a["relaxation_rate"] - 2 * (syms["f"] ** 2 + syms["lambda"])) == 0


# ---- loading regimes -----------------------------------------------------------------------------
# Merged with the former test_bad_model_arguments: the value named and what is expected.
@pytest.mark.parametrize(
    "kwargs, argument, got, expected",
    [
        (dict(name="bogus"), "name", "'bogus'", "'normalized', 'unnormalized', 'weightnorm'"),
        (dict(name="batchnorm"), "name", "'batchnorm'", "a flowsim.Regime, or the path of a regime file"),
        (dict(name=3), "name", "3", None),
        (dict(name="normalized", loss="hinge"), "loss", "'hinge'", "'square'"),
        (dict(name="normalized", lam=-1.0), "lam", "-1.0", ">= 0"),
        (dict(name="normalized", lam=float("nan")), "lam", "nan", None),
        (dict(name="normalized", lam=float("inf")), "lam", "inf", None),
        (dict(name="normalized", lam="0.1"), "lam", "'0.1'", None),
    ],
)
def test_load_model_rejects_bad_arguments(kwargs, argument, got, expected):
    name = kwargs.pop("name")
    with pytest.raises(fs.FlowsimError) as excinfo:
        fs.load_model(name, **kwargs)
    assert_input_error(excinfo, argument, got, expected)


def test_new_regime_is_one_small_file(tmp_path):
    """A Regime declared outside the package compiles and gives the expected field; load_model takes the Regime
    itself or the path of its file."""
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
    loaded = fs.load_model(regime, lam=0.05)
    assert loaded.regime is regime and float(loaded.lam) == 0.05 and loaded.name == "double_decay"


def test_load_model_from_a_regime_file(tmp_path):
    path = tmp_path / "quartic.py"
    path.write_text(QUARTIC_REGIME_FILE, encoding="utf-8")
    model = fs.load_model(path, lam=0.3)
    assert model.name == "quartic" and model.per_layer and float(model.lam) == 0.3
    assert fs.load_model(str(path), lam=0.1).regime is model.regime  # read once while the file is unchanged
    assert "quartic" not in fs.available_models()  # the installed package is untouched
    # the derived field is −∇L in weight space for L = Σ(y − f)² + λ Σ‖W_k‖⁴, mapped to (ρ_k, V_k)
    net, data = _problem("relu")
    V = random_directions(WIDTHS, 2)
    scales = np.array([0.8, 1.3, 0.9])
    got = model.vector_field(net, data)(0.0, model.state(V=V, rho_k=scales))
    x, y = jnp.asarray(data.x), jnp.asarray(data.y)

    def L(W):
        return jnp.sum((y - jax_forward(W, x)) ** 2) + 0.3 * sum(jnp.sum(w**2) ** 2 for w in W)

    G = jax.grad(L)([r * jnp.asarray(v) for r, v in zip(scales, V)])
    rdot = [-float(jnp.vdot(v, g)) for v, g in zip(V, G)]
    np.testing.assert_allclose(np.asarray(got.rho_k), rdot, rtol=1e-10)
    for k in range(3):
        want = -(G[k] - V[k] * jnp.vdot(V[k], G[k])) / scales[k]
        np.testing.assert_allclose(np.asarray(got.V[k]), np.asarray(want), rtol=1e-9, atol=1e-13)


def test_load_model_rejects_bad_regime_files(tmp_path):
    with pytest.raises(fs.FlowsimError) as excinfo:
        fs.load_model(tmp_path / "missing.py")
    assert_input_error(excinfo, "name", "missing.py", "existing regime file")
    empty = tmp_path / "empty.py"
    empty.write_text("X = 1\n", encoding="utf-8")
    with pytest.raises(fs.FlowsimError) as excinfo:
        fs.load_model(empty)
    assert_input_error(excinfo, "name", "empty.py", "defines REGIME")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('no')\n", encoding="utf-8")
    with pytest.raises(fs.FlowsimError) as excinfo:
        fs.load_model(broken)
    assert_input_error(excinfo, "name", "broken.py", "RuntimeError: no")


# ---- States --------------------------------------------------------------------------------------
def test_model_state_and_init_validate():
    net, _ = small_problem()
    model = fs.load_model("normalized")
    V = random_directions(net.widths, 0)
    with pytest.raises(fs.FlowsimError) as excinfo:
        model.state([2 * V[0], V[1]], rho=1.0)
    assert_input_error(excinfo, "V[0]", "norm 2", "unit Frobenius norm")
    with pytest.raises(fs.FlowsimError) as excinfo:
        model.state(V, rho=-1.0)
    assert_input_error(excinfo, "rho", "-1.0")
    with pytest.raises(fs.FlowsimError) as excinfo:
        model.state(V, rho=1.0, rho_k=[1.0, 1.0])
    assert_input_error(excinfo, "rho_k")
    for bad in ([1.0, 0.0], [1.0, -1.0]):
        with pytest.raises(fs.FlowsimError) as excinfo:
            fs.load_model("unnormalized").state(V, rho_k=bad)
        assert_input_error(excinfo, "rho_k")
    with pytest.raises(fs.FlowsimError) as excinfo:
        model.init(net, seed=0, scale=0.0)
    assert_input_error(excinfo, "scale", "0.0")
    with pytest.raises(fs.FlowsimError) as excinfo:
        model.init((2, 3, 1))
    assert_input_error(excinfo, "net", "tuple")
    with pytest.raises(fs.FlowsimError) as excinfo:
        model.init(net, seed=1.5)
    assert_input_error(excinfo, "seed", "1.5")


def test_init_takes_a_seed_and_is_deterministic():
    net = fs.Network((3, 4, 2, 1))
    for name in MODELS:
        model = fs.load_model(name)
        same_bits(model.init(net, seed=5), model.init(net, seed=5))
        same_bits(model.init(net, seed=5), model.init(net, seed=jax.random.PRNGKey(5)))
        assert not np.array_equal(np.asarray(model.init(net, seed=5).V[0]), np.asarray(model.init(net, seed=6).V[0]))
    # the old name still works, with a warning; the seed is keyword-only like every option
    with pytest.warns(DeprecationWarning, match="seed="):
        old = model.init(net, key=5, scale=2.0)
    same_bits(old, model.init(net, seed=5, scale=2.0))
    with pytest.raises(TypeError):
        model.init(net, 5)


def test_vector_field_and_rho_eq_check_the_data_dimension():
    net, _ = small_problem()
    model = fs.load_model("normalized")
    bad = fs.Dataset(np.ones((3, 3)), Y_OK)
    with pytest.raises(fs.FlowsimError) as excinfo:
        model.vector_field(net, bad)
    assert_input_error(excinfo, "data", "dimension 3")
    with pytest.raises(fs.FlowsimError) as excinfo:
        model.rho_eq(net, bad, model.init(net))
    assert_input_error(excinfo, "data", "dimension 3")


# ---- the State checks every entry point shares (before any tracing) -------------------------------
def _mismatched_states():
    """(label, model name, state builder, argument) for States that do not fit `small_problem()`'s network."""
    norm, unnorm = fs.load_model("normalized"), fs.load_model("unnormalized")
    V = random_directions((2, 3, 1), 0)
    return [
        ("too few layers", "normalized", lambda: norm.init(fs.Network((2, 1))), "state", "1 layers"),
        ("too many layers", "normalized", lambda: norm.init(fs.Network((2, 3, 2, 1))), "state", "3 layers"),
        ("wrong width", "normalized", lambda: norm.init(fs.Network((2, 4, 1))), "state.V[0]", "(4, 2)"),
        (
            "per-layer state, shared model",
            "normalized",
            lambda: unnorm.init(fs.Network((2, 3, 1))),
            "state",
            "per-layer",
        ),
        (
            "shared state, per-layer model",
            "unnormalized",
            lambda: norm.init(fs.Network((2, 3, 1))),
            "state",
            "shared-scale",
        ),
        (
            "V not unit norm",
            "normalized",
            lambda: fs.State(tuple(jnp.asarray(2.0 * v) for v in V), jnp.asarray(1.0), None),
            "state.V",
            "norms",
        ),
        (
            "V nan",
            "normalized",
            lambda: fs.State((jnp.full((3, 2), jnp.nan), jnp.asarray(V[1])), jnp.asarray(1.0), None),
            "state.V",
            "nan",
        ),
    ]


@pytest.mark.parametrize(
    "label, name, build, argument, hint", _mismatched_states(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_state_must_match_network_and_model(no_tracing, label, name, build, argument, hint):
    net, data = small_problem()
    model = fs.load_model(name, lam=0.1)
    state = build()
    with pytest.raises(fs.FlowsimError) as excinfo:
        fs.simulate(model, net, data, state, t1=1.0)
    assert_input_error(excinfo, argument, hint)
    with pytest.raises(fs.FlowsimError) as excinfo:
        fs.sgd(model, net, data, state, lr=0.1, steps=2)
    assert_input_error(excinfo, argument, hint)
    with pytest.raises(fs.FlowsimError) as excinfo:
        model.jacobian(net, data, state)
    assert_input_error(excinfo, argument, hint)


def _bad_scale_states():
    V = tuple(jnp.asarray(v) for v in random_directions((2, 3, 1), 0))
    return [
        ("rho nan", "normalized", lambda: fs.State(V, jnp.asarray(jnp.nan), None), "state.rho"),
        ("rho inf", "normalized", lambda: fs.State(V, jnp.asarray(jnp.inf), None), "state.rho"),
        ("rho negative", "normalized", lambda: fs.State(V, jnp.asarray(-1.0), None), "state.rho"),
        (
            "rho_k too long",
            "unnormalized",
            lambda: fs.State(V, jnp.asarray(8.0), jnp.asarray([2.0, 2.0, 2.0])),
            "state.rho_k",
        ),
        ("rho_k zero", "unnormalized", lambda: fs.State(V, jnp.asarray(0.0), jnp.asarray([1.0, 0.0])), "state.rho_k"),
        (
            "rho_k nan",
            "unnormalized",
            lambda: fs.State(V, jnp.asarray(1.0), jnp.asarray([1.0, jnp.nan])),
            "state.rho_k",
        ),
    ]


@pytest.mark.parametrize(
    "label, name, build, argument", _bad_scale_states(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_state_scales_are_validated(no_tracing, label, name, build, argument):
    net, data = small_problem()
    model = fs.load_model(name, lam=0.1)
    with pytest.raises(fs.FlowsimError) as excinfo:
        fs.simulate(model, net, data, build(), t1=1.0)
    assert_input_error(excinfo, argument)


def test_vector_field_is_the_field_a_solve_integrates():
    """model.vector_field(net, data, smoothing=...) is what fs.simulate integrates with that smoothing: its
    first step from a state agrees with the field to the step's order."""
    net, data = _problem("relu")
    model = fs.load_model("normalized", lam=0.05)
    state, _, _ = _state(model, seed=4)
    raw = model.vector_field(net, data, smoothing=None)(0.0, state)
    auto = model.vector_field(net, data)(0.0, state)
    eps = model.vector_field(net, data, smoothing=1e-5)(0.0, state)
    leaves = jax.tree_util.tree_leaves
    assert all(np.array_equal(a, b) for a, b in zip(leaves(auto), leaves(eps)))  # "auto" is ε = 1e-5 on ReLU
    wide = model.vector_field(net, data, smoothing=10.0)(0.0, state)
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(leaves(raw), leaves(wide))) > 1e-3  # ε matters
    h = 1e-6
    tr = fs.simulate(model, net, data, state, t1=h, ts=[0.0, h], rtol=1e-12, atol=1e-14, smoothing=10.0)
    step = (float(tr.rho[-1]) - float(state.rho)) / h
    assert step == pytest.approx(float(wide.rho), rel=1e-4)
    with pytest.raises(fs.InputError, match="smoothing"):
        model.vector_field(net, data, smoothing=-1.0)


def test_vector_field_exact_at_pinned_states_and_in_solves():
    """smoothing=0 is the exact ε → 0 velocity, the least-norm Filippov element where pre-activations sit at zero
    (checked against brute force, and against the ordinary field away from kinks, in test_filippov); solves
    integrate it (test_exact_flow), and accept it on linear nets (no kinks: the raw field)."""
    net, data = _problem("relu")
    model = fs.load_model("normalized", lam=0.05)
    state, _, _ = _state(model, seed=4)
    leaves = jax.tree_util.tree_leaves
    # pin the first hidden unit of sample 0 exactly: remove its component along that sample's input
    V1 = np.asarray(state.V[0]).copy()
    x0 = np.asarray(data.x[0])
    V1[0] -= (V1[0] @ x0) / (x0 @ x0) * x0
    V = [V1 / np.linalg.norm(V1)] + [np.asarray(v) for v in state.V[1:]]
    pinned_state = model.state(V=V, rho=float(state.rho))
    m = model.vector_field(net, data, smoothing=0)(0.0, pinned_state)
    one_sided = [model.vector_field(net, data, smoothing=None)(0.0, pinned_state)]
    norm = lambda s: float(np.sqrt(sum(np.sum(np.asarray(a) ** 2) for a in leaves(s))))  # noqa: E731
    assert norm(m) <= norm(one_sided[0]) + 1e-12  # the least-norm element is no longer than a one-sided field
    lin = fs.Network(net.widths, "linear")
    lin_state = model.init(lin, seed=0)
    tr = fs.simulate(model, lin, data, lin_state, t1=0.1, smoothing=0)
    assert tr.stats.smoothing is None
