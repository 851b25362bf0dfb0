"""Issue 9 — reliability: clear errors for bad input, no silent wrong numbers, determinism.

Sections:

1. argument validation of every public entry point, checked to happen before any JAX work;
2. run-time faults (non-finite values, step limit, a start that is not on average separable);
3. determinism (bit-identical reruns on CPU);
4. property-based checks against the independent references of ``tests/reference.py``;
5. result files on disk (atomic writes, validation on load).
"""

from __future__ import annotations

import math
import os
import warnings

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import flowsim as fs
import flowsim._discrete._sgd as _sgd
import flowsim._solver._result as _result
import flowsim._solver._simulate as _integrate
import flowsim._solver._sweep as _sweep

from reference import random_directions, reference_field

# `fs.sgd` is the public name (issue 9); fall back to the module while it is not exported.
sgd = getattr(fs, "sgd", None) or _sgd.sgd

SETTINGS = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
MODELS = ("normalized", "unnormalized", "weightnorm")
LOSSES = ("square", "exponential", "logistic")


# ---- helpers ----------------------------------------------------------------------------------------
class Traced(Exception):
    """Raised by the patched solver entry points: reaching them means validation came too late."""


@pytest.fixture
def no_tracing(monkeypatch):
    """Replace every place where the entry points start JAX work with a tripwire."""

    def trip(*args, **kwargs):
        raise Traced("reached the computation before the bad argument was rejected")

    monkeypatch.setattr(_integrate, "Flat", trip)
    monkeypatch.setattr(_integrate, "_warn_if_not_separable", trip)
    monkeypatch.setattr(_sgd, "_run_jit", trip)
    monkeypatch.setattr(_sweep, "_member_fn", trip)
    return trip


def small_problem(widths=(2, 3, 1), n=6, seed=1, activation="relu"):
    data = fs.datasets.gaussian_clusters(n=n, dim=widths[0], seed=seed)
    return fs.Network(widths, activation=activation), data


def assert_input_error(excinfo, argument, value_hint=None):
    err = excinfo.value
    assert isinstance(err, fs.InputError) and isinstance(err, fs.FlowsimError) and isinstance(err, ValueError)
    assert not isinstance(err, Traced)
    msg = str(err)
    assert f"`{argument}`" in msg, msg
    assert "got " in msg and "expected" in msg, msg
    if value_hint is not None:
        assert value_hint in msg, msg


def separable_sign(net, data, V):
    """V with the last layer's sign chosen so that Σ y_n f_n > 0."""
    f = np.asarray(net.forward(tuple(jnp.asarray(v) for v in V), jnp.asarray(data.x)))
    if np.sum(data.y * f) < 0:
        V = list(V[:-1]) + [-np.asarray(V[-1])]
    return V


# ==== 1. argument validation ===========================================================================
X_OK = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
Y_OK = np.array([1.0, -1.0, 1.0])


@pytest.mark.parametrize(
    "x, y, argument, hint",
    [
        (np.array([[1.0, np.nan], [0.0, 1.0], [1.0, 1.0]]), Y_OK, "x", "NaN or Inf"),
        (np.array([[1.0, np.inf], [0.0, 1.0], [1.0, 1.0]]), Y_OK, "x", "NaN or Inf"),
        (X_OK, np.array([1.0, 0.0, 1.0]), "y", "[0.0]"),
        (X_OK, np.array([1.0, -1.0, 2.0]), "y", "[2.0]"),
        (X_OK, np.array([1.0, -1.0, np.nan]), "y", None),
        (X_OK, np.array([1.0, -1.0]), "y", "2 labels"),
        (np.zeros((0, 2)), np.zeros((0,)), "x", "(0, 2)"),
        (np.zeros((3, 0)), Y_OK, "x", "(3, 0)"),
        (np.array([1.0, 2.0, 3.0]), Y_OK, "x", "(3,)"),
        (X_OK, Y_OK[:, None], "y", "(3, 1)"),
        ("abc", Y_OK, "x", None),
    ],
)
def test_dataset_rejects_bad_data(x, y, argument, hint):
    with pytest.raises(fs.FlowsimError) as excinfo:
        fs.Dataset(x, y)
    assert_input_error(excinfo, argument, hint)


@pytest.mark.parametrize(
    "widths, activation, argument, hint",
    [
        ((2, 3, 2), "relu", "widths", "(2, 3, 2)"),
        ((2, 0, 1), "relu", "widths", "(2, 0, 1)"),
        ((2,), "relu", "widths", "(2,)"),
        ((), "relu", "widths", "()"),
        ((2, -1, 1), "relu", "widths", None),
        ((2, 2.5, 1), "relu", "widths", None),
        ("21", "relu", "widths", None),
        ((2, 3, 1), "tanh", "activation", "'tanh'"),
    ],
)
def test_network_rejects_bad_widths_and_activation(widths, activation, argument, hint):
    with pytest.raises(fs.FlowsimError) as excinfo:
        fs.Network(widths, activation=activation)
    assert_input_error(excinfo, argument, hint)


@pytest.mark.parametrize(
    "kwargs, argument, hint",
    [
        (dict(name="bogus"), "name", "'bogus'"),
        (dict(name="normalized", loss="hinge"), "loss", "'hinge'"),
        (dict(name="normalized", lam=-1.0), "lam", "-1.0"),
        (dict(name="normalized", lam=float("nan")), "lam", "nan"),
        (dict(name="normalized", lam=float("inf")), "lam", "inf"),
        (dict(name="normalized", lam="0.1"), "lam", "'0.1'"),
    ],
)
def test_load_model_rejects_bad_arguments(kwargs, argument, hint):
    with pytest.raises(fs.FlowsimError) as excinfo:
        fs.load_model(**kwargs)
    assert_input_error(excinfo, argument, hint)


def test_model_state_and_init_validate():
    net, _ = small_problem()
    model = fs.load_model("normalized")
    V = random_directions(net.widths, 0)
    with pytest.raises(fs.FlowsimError) as excinfo:
        model.state([2 * V[0], V[1]], rho=1.0)
    assert_input_error(excinfo, "V[0]", "norm 2")
    with pytest.raises(fs.FlowsimError) as excinfo:
        model.state(V, rho=-1.0)
    assert_input_error(excinfo, "rho", "-1.0")
    with pytest.raises(fs.FlowsimError) as excinfo:
        model.state(V, rho=1.0, rho_k=[1.0, 1.0])
    assert_input_error(excinfo, "rho_k")
    with pytest.raises(fs.FlowsimError) as excinfo:
        fs.load_model("unnormalized").state(V, rho_k=[1.0, 0.0])
    assert_input_error(excinfo, "rho_k")
    with pytest.raises(fs.FlowsimError) as excinfo:
        model.init(net, seed=0, scale=0.0)
    assert_input_error(excinfo, "scale", "0.0")
    with pytest.raises(fs.FlowsimError) as excinfo:
        model.init((2, 3, 1))
    assert_input_error(excinfo, "net", "tuple")


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


@pytest.mark.parametrize("label, overrides, argument, hint", _bad_simulate_cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_simulate_rejects_bad_arguments_before_tracing(no_tracing, label, overrides, argument, hint):
    net, data = small_problem()
    model = fs.load_model("normalized", lam=0.1)
    kwargs = dict(model=model, net=net, data=data, state=model.init(net, seed=0), t1=1.0)
    kwargs.update(overrides)
    with pytest.raises(fs.FlowsimError) as excinfo:
        fs.simulate(**kwargs)
    assert_input_error(excinfo, argument, hint)


def _mismatched_states():
    """(label, model name, state builder, argument) for States that do not fit `small_problem()`'s network."""
    norm, unnorm = fs.load_model("normalized"), fs.load_model("unnormalized")
    V = random_directions((2, 3, 1), 0)
    return [
        ("too few layers", "normalized", lambda: norm.init(fs.Network((2, 1))), "state", "1 layers"),
        ("too many layers", "normalized", lambda: norm.init(fs.Network((2, 3, 2, 1))), "state", "3 layers"),
        ("wrong width", "normalized", lambda: norm.init(fs.Network((2, 4, 1))), "state.V[0]", "(4, 2)"),
        ("per-layer state, shared model", "normalized", lambda: unnorm.init(fs.Network((2, 3, 1))), "state",
         "per-layer"),
        ("shared state, per-layer model", "unnormalized", lambda: norm.init(fs.Network((2, 3, 1))), "state",
         "shared-scale"),
        ("V not unit norm", "normalized",
         lambda: fs.State(tuple(jnp.asarray(2.0 * v) for v in V), jnp.asarray(1.0), None), "state.V", "norms"),
        ("V nan", "normalized",
         lambda: fs.State((jnp.full((3, 2), jnp.nan), jnp.asarray(V[1])), jnp.asarray(1.0), None), "state.V",
         "nan"),
    ]


@pytest.mark.parametrize("label, name, build, argument, hint", _mismatched_states(), ids=lambda v: v if isinstance(v, str) else "")
def test_state_must_match_network_and_model(no_tracing, label, name, build, argument, hint):
    net, data = small_problem()
    model = fs.load_model(name, lam=0.1)
    state = build()
    with pytest.raises(fs.FlowsimError) as excinfo:
        fs.simulate(model, net, data, state, t1=1.0)
    assert_input_error(excinfo, argument, hint)
    with pytest.raises(fs.FlowsimError) as excinfo:
        sgd(model, net, data, state, lr=0.1, steps=2)
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
        ("rho_k too long", "unnormalized", lambda: fs.State(V, jnp.asarray(8.0), jnp.asarray([2.0, 2.0, 2.0])),
         "state.rho_k"),
        ("rho_k zero", "unnormalized", lambda: fs.State(V, jnp.asarray(0.0), jnp.asarray([1.0, 0.0])), "state.rho_k"),
        ("rho_k nan", "unnormalized", lambda: fs.State(V, jnp.asarray(1.0), jnp.asarray([1.0, jnp.nan])),
         "state.rho_k"),
    ]


@pytest.mark.parametrize("label, name, build, argument", _bad_scale_states(), ids=lambda v: v if isinstance(v, str) else "")
def test_state_scales_are_validated(no_tracing, label, name, build, argument):
    net, data = small_problem()
    model = fs.load_model(name, lam=0.1)
    with pytest.raises(fs.FlowsimError) as excinfo:
        fs.simulate(model, net, data, build(), t1=1.0)
    assert_input_error(excinfo, argument)


@pytest.mark.parametrize(
    "overrides, argument, hint",
    [
        (dict(lr=0.0), "lr", "0.0"),
        (dict(lr=-0.1), "lr", "-0.1"),
        (dict(lr=float("nan")), "lr", "nan"),
        (dict(lr=float("inf")), "lr", "inf"),
        (dict(steps=0), "steps", "0"),
        (dict(steps=-3), "steps", "-3"),
        (dict(steps=2.0), "steps", "2.0"),
        (dict(batch_size=7), "batch_size", "7"),  # N = 6
        (dict(batch_size=0), "batch_size", "0"),
        (dict(batch_size=2.5), "batch_size", "2.5"),
        (dict(momentum=1.0), "momentum", "1.0"),
        (dict(momentum=-0.5), "momentum", "-0.5"),
        (dict(record_every=0), "record_every", "0"),
        (dict(seed=1.5), "seed", "1.5"),
        (dict(batchnorm="yes"), "batchnorm", "'yes'"),
        (dict(batchnorm=True, batch_size=1), "batch_size", "1"),
        (dict(data=fs.Dataset(np.ones((3, 3)), Y_OK)), "data", "dimension 3"),
        (dict(model="normalized"), "model", "str"),
    ],
)
def test_sgd_rejects_bad_arguments_before_tracing(no_tracing, overrides, argument, hint):
    net, data = small_problem()
    model = fs.load_model("unnormalized", lam=0.1)
    kwargs = dict(model=model, net=net, data=data, state=model.init(net, seed=0), lr=0.1, steps=3)
    kwargs.update(overrides)
    with pytest.raises(fs.FlowsimError) as excinfo:
        sgd(**kwargs)
    assert_input_error(excinfo, argument, hint)


@pytest.mark.parametrize(
    "overrides, argument, hint",
    [
        (dict(t1=0.0), "t1", "0.0"),
        (dict(t1=float("nan")), "t1", "nan"),
        (dict(ts=[0.0, 2.0]), "ts", "[0, 2]"),
        (dict(rtol=0.0), "rtol", "0.0"),
        (dict(atol=-1.0), "atol", "-1.0"),
        (dict(states=[]), "states", "[]"),
        (dict(lam=[0.1, -1.0]), "lam", "-1.0"),
        (dict(lam=[float("nan")]), "lam", "nan"),
        (dict(solver="bdf"), "solver", "'bdf'"),
        (dict(seed=[1, 2, 3]), "seed", None),
        (dict(chunk_size=0), "chunk_size", "0"),
    ],
)
def test_sweep_rejects_bad_arguments_before_tracing(no_tracing, overrides, argument, hint):
    net, data = small_problem()
    model = fs.load_model("normalized", lam=0.1)
    kwargs = dict(model=model, net=net, data=data, states=[model.init(net, seed=0), model.init(net, seed=1)], t1=1.0)
    kwargs.update(overrides)
    with pytest.raises(fs.FlowsimError) as excinfo:
        fs.sweep(**kwargs)
    assert_input_error(excinfo, argument, hint)


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


def test_errors_are_one_family():
    assert issubclass(fs.InputError, fs.FlowsimError) and issubclass(fs.FlowsimError, ValueError)
    assert issubclass(fs.SolveError, fs.FlowsimError) and issubclass(fs.ResultFileError, fs.FlowsimError)
    err = fs.SolveError("boom", partial="p")
    assert err.partial == "p" and str(err) == "boom"


def test_sgd_is_public():
    assert fs.sgd is _sgd.sgd and "sgd" in fs.__all__


# ==== 2. run-time faults ===============================================================================
def test_sgd_divergence_raises_solve_error_with_partial():
    net, data = small_problem()
    model = fs.load_model("unnormalized", lam=0.0)
    with pytest.raises(fs.SolveError) as excinfo:
        sgd(model, net, data, model.init(net, seed=0), lr=1e6, steps=30)
    msg = str(excinfo.value)
    assert "diverged at step" in msg and "lr" in msg, msg
    partial = excinfo.value.partial
    assert isinstance(partial, fs.Trajectory) and len(partial) >= 1
    assert np.all(np.isfinite(np.asarray(partial.loss))) and np.all(np.isfinite(np.asarray(partial.rho)))
    assert partial.stats.get("stopped") == "diverged"


def test_sgd_minibatch_divergence_names_the_batch():
    net, data = small_problem()
    model = fs.load_model("unnormalized", lam=0.0)
    with pytest.raises(fs.SolveError) as excinfo:
        sgd(model, net, data, model.init(net, seed=0), lr=1e6, steps=30, batch_size=3, seed=0)
    assert "diverged at step" in str(excinfo.value) and "batch_size = 3" in str(excinfo.value)


def test_step_limit_says_how_to_fix():
    net, data = small_problem()
    model = fs.load_model("unnormalized", lam=0.1)
    with pytest.raises(fs.SolveError) as excinfo:
        fs.simulate(model, net, data, model.init(net, seed=0), t1=100.0, max_steps=2, progress=False)
    msg = str(excinfo.value)
    assert "max_steps = 2" in msg and "raise max_steps" in msg and "t =" in msg, msg
    partial = excinfo.value.partial
    assert isinstance(partial, fs.Trajectory) and 1 <= len(partial) and float(partial.ts[-1]) < 100.0


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
            fs.simulate(model, net, data, state, t1=1.0, ts=[0.0, 1.0], solver="tsit5", max_steps=500,
                        progress=False)
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


# ==== 3. determinism ===================================================================================
def _same(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for u, v in zip(la, lb):
        u, v = np.asarray(u), np.asarray(v)
        assert u.shape == v.shape and u.dtype == v.dtype and u.tobytes() == v.tobytes()


def test_simulate_is_bit_identical():
    net, data = small_problem()
    model = fs.load_model("unnormalized", lam=0.1)
    state = model.state(separable_sign(net, data, random_directions(net.widths, 4)), rho_k=[0.9, 1.2])
    runs = [fs.simulate(model, net, data, state, t1=0.5, ts=[0.0, 0.1, 0.5], progress=False) for _ in range(2)]
    _same(runs[0], runs[1])
    assert runs[0].stats["accepted_steps"] == runs[1].stats["accepted_steps"]


def test_sgd_with_minibatches_is_bit_identical_per_seed():
    net, data = small_problem()
    model = fs.load_model("weightnorm", lam=0.1)
    state = model.init(net, seed=2)
    a, b, c = (sgd(model, net, data, state, lr=0.01, steps=20, batch_size=3, seed=s) for s in (7, 7, 8))
    _same(a, b)
    assert not np.array_equal(np.asarray(a.rho), np.asarray(c.rho))  # the seed is used


def test_init_and_datasets_are_deterministic():
    net = fs.Network((3, 4, 2, 1))
    for name in MODELS:
        model = fs.load_model(name)
        _same(model.init(net, seed=5), model.init(net, seed=5))
        _same(model.init(net, seed=5), model.init(net, seed=jax.random.PRNGKey(5)))
        assert not np.array_equal(np.asarray(model.init(net, seed=5).V[0]), np.asarray(model.init(net, seed=6).V[0]))
    d1, d2 = fs.datasets.gaussian_clusters(n=8, dim=3, seed=9), fs.datasets.gaussian_clusters(n=8, dim=3, seed=9)
    assert d1.x.tobytes() == d2.x.tobytes() and d1.y.tobytes() == d2.y.tobytes()
    assert d1.x.tobytes() != fs.datasets.gaussian_clusters(n=8, dim=3, seed=10).x.tobytes()
    (tr1, te1), (tr2, te2) = d1.split(0.25, seed=3), d2.split(0.25, seed=3)
    assert tr1.x.tobytes() == tr2.x.tobytes() and te1.y.tobytes() == te2.y.tobytes()


# ==== 4. property-based checks =========================================================================
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
    out = model.vector_field(net, data)(0.0, state)
    sdot_ref, Vdot_ref = reference_field(name, lam, V, scales, jnp.asarray(x), jnp.asarray(y), activation, loss)
    got = np.concatenate([np.ravel(out.rho_k if model.per_layer else out.rho)] + [np.ravel(v) for v in out.V])
    ref = np.concatenate([np.ravel(np.asarray(sdot_ref))] + [np.ravel(np.asarray(v)) for v in Vdot_ref])
    assert got.shape == ref.shape
    assert np.all(np.isfinite(got))
    scale = max(np.linalg.norm(ref), 1e-12)
    assert np.linalg.norm(got - ref) <= 1e-9 * scale, (np.linalg.norm(got - ref) / scale)
    if model.per_layer:  # the overall scale's rate is consistent with the per-layer rates
        rk = np.asarray(scales)
        assert np.isclose(float(out.rho), np.prod(rk) * np.sum(np.asarray(sdot_ref) / rk), rtol=1e-9, atol=1e-12)


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
    traj = fs.simulate(model, net, data, state, t1=t1, ts=np.linspace(0.0, t1, 6), rtol=1e-9, atol=1e-12,
                       progress=False, enforce_balance=False)  # measure the law, do not impose it
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


@pytest.mark.slow
@settings(max_examples=5, **SETTINGS)
@given(lam=st.floats(0.05, 2.0), seed=st.integers(0, 2**16))
def test_rho_reaches_rho_eq_at_steady_state(lam, seed):
    net, data = small_problem((2, 1), n=6, seed=seed % 5, activation="linear")
    model = fs.load_model("normalized", lam=lam)
    V = separable_sign(net, data, random_directions((2, 1), seed))
    state = model.state(V, rho=float(np.random.default_rng(seed).uniform(0.2, 3.0)))
    traj = fs.simulate(model, net, data, state, t1=1e4, ts=[0.0, 1.0], steady_state=True, steady_tol=1e-11,
                       rtol=1e-10, atol=1e-12, progress=False)
    assert traj.stats["steady_state"]
    rho, rho_eq = float(traj.rho[-1]), float(traj.rho_eq[-1])
    assert rho_eq > 0
    assert abs(rho - rho_eq) <= 1e-6 * abs(rho_eq), (rho, rho_eq)


# ==== 5. result files on disk ==========================================================================
def _tiny_result(version=_result.FORMAT_VERSION):
    """A small valid sweep result built without running a sweep (no JAX compilation)."""
    import xarray as xr

    net = fs.Network((2, 2, 1))
    model = fs.load_model("unnormalized")
    time_axis = np.array([0.0, 0.5, 1.0])
    attrs = {"format": _result.FORMAT, "format_version": version, "sweep_hash": "x", "model": model.name,
             "loss": model.loss, "per_layer": 1, "depth": net.depth, "solver": "tsit5", "smoothing": 0.0,
             "rtol": 1e-6, "atol": 1e-9, "t1": 1.0}
    ds = _result.empty_dataset(xr, net, model, 2, time_axis, 4, np.arange(2), np.zeros(2), None, None, attrs)
    ds["rho"].values[:] = 1.0
    ds["status"].values[:] = 0
    return fs.SweepResult(ds)


def test_save_then_load_round_trips(tmp_path):
    res = _tiny_result()
    path = tmp_path / "res.nc"
    res.save(path)
    back = fs.load(path)
    assert back.complete and len(back) == 2
    np.testing.assert_array_equal(back.ds["rho"].values, res.ds["rho"].values)
    assert [p.name for p in tmp_path.iterdir()] == ["res.nc"]  # no temporary file left behind


def test_load_missing_file(tmp_path):
    with pytest.raises(fs.ResultFileError, match="does not exist") as excinfo:
        fs.load(tmp_path / "nope.nc")
    assert isinstance(excinfo.value, fs.FlowsimError) and isinstance(excinfo.value, OSError)


@pytest.mark.parametrize("keep", [0, 8, 0.5, 0.9])
def test_load_truncated_file(tmp_path, keep):
    path = tmp_path / "res.nc"
    _tiny_result().save(path)
    raw = path.read_bytes()
    cut = keep if isinstance(keep, int) else int(keep * len(raw))
    path.write_bytes(raw[:cut])
    with pytest.raises(fs.ResultFileError):
        fs.load(path)


def test_load_garbage_and_foreign_files(tmp_path):
    import xarray as xr

    junk = tmp_path / "junk.nc"
    junk.write_bytes(b"not a netcdf file at all" * 10)
    with pytest.raises(fs.ResultFileError, match="not a readable netCDF"):
        fs.load(junk)
    foreign = tmp_path / "foreign.nc"
    xr.Dataset({"a": ("t", np.arange(3.0))}).to_netcdf(foreign, engine="netcdf4")
    with pytest.raises(fs.ResultFileError, match="not a flowsim sweep file"):
        fs.load(foreign)


@pytest.mark.parametrize("version", [_result.FORMAT_VERSION + 1, 0])
def test_load_wrong_format_version(tmp_path, version):
    path = tmp_path / "res.nc"
    _tiny_result(version=version).save(path)
    with pytest.raises(fs.ResultFileError, match="format version"):
        fs.load(path)


def test_load_missing_variable(tmp_path):
    res = _tiny_result()
    path = tmp_path / "res.nc"
    fs.SweepResult(res.ds.drop_vars("rho_eq")).save(path)
    with pytest.raises(fs.ResultFileError, match="rho_eq"):
        fs.load(path)


def test_failed_save_leaves_the_old_file_intact(tmp_path, monkeypatch):
    import xarray as xr

    path = tmp_path / "res.nc"
    _tiny_result().save(path)
    before = path.read_bytes()

    def broken(self, target, *args, **kwargs):
        with open(target, "wb") as fh:  # a half-written file, then the disk fills up
            fh.write(b"CDF\x01 partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", broken)
    with pytest.raises(OSError, match="No space"):
        _tiny_result().save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res.nc"]
    assert fs.load(path).complete
