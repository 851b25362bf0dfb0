"""``fs.simulate(..., smoothing=0)``: the exact ReLU flow, event-driven (one and two hidden layers).

References, each an independent code path: projected Euler on the raw field (σ′ = 1[z > 0]) at tiny steps,
which chatters across the sliding surfaces and converges to the Filippov solution at first order; the
smoothed flows at shrinking ε, which converge to it linearly in ε; and the layer-balance law.
"""

import functools
import warnings
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import flowsim as fs
from flowsim._experiments._common import separated
from tests.helpers import assert_input_error

T1 = 2.0
TS = np.linspace(0.0, T1, 5)


@functools.cache
def problem():
    """Clusters, 5-16-1, ``normalized`` with λ = 1e-2: by t = 2 this start crosses hundreds of kinks and slides
    on up to 4 pre-activations, entering and leaving."""
    (train, _), net = separated(90, 0).split(1 / 3, seed=0), fs.Network((5, 16, 1))
    model = fs.load_model("normalized", lam=1e-2)
    return model, net, train, model.init(net, seed=3, scale=0.5)


@functools.cache
def exact(rtol: float):
    model, net, train, s0 = problem()
    return fs.simulate(model, net, train, s0, t1=T1, ts=TS, smoothing=0, rtol=rtol, atol=rtol * 1e-3)


def flat_rows(traj) -> np.ndarray:
    return np.stack([np.asarray(ravel_pytree(traj.state(i))[0]) for i in range(len(traj.ts))])


def test_events_are_counted_and_sliding_happens():
    st = exact(1e-9).stats
    assert st.status == "ok" and st.smoothing == 0.0
    assert st.crossings > 100 and st.entries >= 1 and st.exits >= 1 and st.max_pinned >= 2
    assert 0 < st.sliding_time <= T1
    assert st.unresolved == 0  # every event's mode was consistent, found within the loops' caps
    smooth = fs.simulate(*problem(), t1=0.1, ts=[0.0, 0.1])
    assert smooth.stats.crossings is None and smooth.stats.max_pinned is None and smooth.stats.unresolved is None


def test_unresolved_events_are_counted_and_warned_about(monkeypatch):
    # No consistency iterations: every event whose trial mode is inconsistent (an entry into sliding) is left
    # unresolved, and simulate must say so.
    from flowsim._solver import _exact, _solve

    monkeypatch.setattr(_exact, "_CONSISTENCY_ITERATIONS", 0)
    _solve.compiled_member.cache_clear()  # compile with the patched cap, and drop that program afterwards
    try:
        with pytest.warns(UserWarning, match="not resolved at"):
            tr = fs.simulate(*problem(), t1=T1, ts=TS, smoothing=0, rtol=1e-5)
    finally:
        _solve.compiled_member.cache_clear()
    assert tr.stats.unresolved >= 1 and tr.stats.entries >= 1


def test_events_that_cycle_in_place_stop_the_run_with_the_partial_result(monkeypatch):
    # A cycle of events in place (one mode entered, released, entered again, each after a step of ~1e-9) must stop
    # with a status and the trajectory so far, not spin to the step limit. Made to trigger at the first event here.
    from flowsim._solver import _exact, _solve

    monkeypatch.setattr(_exact, "_CHATTER_EVENTS", 1)
    monkeypatch.setattr(_exact, "_CHATTER_STEP", 1e9)
    _solve.compiled_member.cache_clear()
    try:
        with pytest.raises(fs.SolveError, match="events cycled at t = ") as caught:
            fs.simulate(*problem(), t1=T1, ts=TS, smoothing=0, rtol=1e-5)
    finally:
        _solve.compiled_member.cache_clear()
    partial = caught.value.partial
    st = partial.stats
    assert st.status == "chattering" and 0 < st.t_final < T1
    assert st.crossings + st.entries + st.exits >= 1
    # the saves before the stop, then the state it stopped at
    np.testing.assert_array_equal(np.asarray(partial.ts), [*TS[TS < st.t_final], st.t_final])
    assert np.all(np.isfinite(np.asarray(partial.rho)))


def digits_start(i):
    """Experiment 10's digits net (16-6-1, 100 points), `normalized` with λ = 1e-2, and its start `i` (of 16)."""
    from flowsim._experiments._common import problem as experiment_problem

    _, train, _ = experiment_problem("digits", False, 0)
    net, model = fs.Network((train.x.shape[1], 6, 1)), fs.load_model("normalized", lam=1e-2)
    scale = np.exp(np.random.default_rng(0).uniform(np.log(0.1), np.log(2.0), 16))[i]
    return model, net, train, model.init(net, seed=i, scale=float(scale))


@pytest.mark.slow
def test_a_cycling_consistency_pass_keeps_the_exact_velocitys_choice():
    # Experiment 10's digits net (16-6-1, 100 points), one of its starts: at t ≈ 25.8 an event pins 53
    # pre-activations of one unit, whose inputs span 16 dimensions, and the active-set pass cycles there. It used
    # to keep the mode its cycle stopped at, and the flow ended at ρ = 12.09 where tighter rtol gives 5.1324.
    model, net, train, start = digits_start(2)
    ts = [0.0, 20.0, 40.0]
    # the reference: the smoothed flow, another field and another solver (measured: ρ(40) agree to 3e-6)
    ref = fs.simulate(model, net, train, start, t1=40.0, ts=ts, smoothing=1e-6, rtol=1e-5)
    with pytest.warns(UserWarning, match="not resolved at"):  # still counted, and said
        tr = fs.simulate(model, net, train, start, t1=40.0, ts=ts, smoothing=0, rtol=1e-5)
    assert tr.stats.unresolved >= 1 and tr.stats.entries > 100 and tr.stats.max_pinned > 50
    np.testing.assert_allclose(np.asarray(tr.rho), np.asarray(ref.rho), rtol=1e-4)


@pytest.mark.slow
def test_a_run_that_leaves_the_flow_says_so():
    # Another start of that net: at rtol 1e-5 an event at t ≈ 0.247 starts its segment just below the event
    # function's zero. Before the mode was chosen again in place, the flow left the tight solution unseen (0.08 in
    # the parameters by t = 0.5). Such a run must stay with the tight solution, or count the event as unresolved
    # and warn.
    model, net, train, start = digits_start(10)
    ts = np.linspace(0.0, 0.5, 6)
    ref = flat_rows(fs.simulate(model, net, train, start, t1=0.5, ts=ts, smoothing=1e-7, rtol=1e-8))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tr = fs.simulate(model, net, train, start, t1=0.5, ts=ts, smoothing=0, rtol=1e-5)
    said = tr.stats.unresolved >= 1 and any("not resolved at" in str(w.message) for w in caught)
    assert np.max(np.abs(flat_rows(tr) - ref)) < 1e-3 or said


def test_accuracy_is_set_by_rtol():
    ref = flat_rows(exact(1e-9))
    err = np.max(np.abs(flat_rows(exact(1e-6)) - ref))
    assert err < 1e-6  # measured 1.3e-7 at rtol 1e-6


def test_sliding_against_projected_euler_on_the_raw_field():
    # Euler on σ′ = 1[z > 0], each step put back on the sphere: it chatters across the surfaces the exact flow
    # slides on, and its distance to the exact solution falls with the step, at first order.
    model, net, train, s0 = problem()
    F = model.vector_field(net, train, smoothing=None)
    z0, unravel = ravel_pytree(s0)

    @functools.partial(jax.jit, static_argnums=1)
    def euler(z, n):
        def step(z, _):
            s = unravel(z + (T1 / n) * ravel_pytree(F(0.0, unravel(z)))[0])
            V = tuple(v / jnp.linalg.norm(v) for v in s.V)
            return ravel_pytree(fs.State(V, s.rho, s.rho_k))[0], None

        return jax.lax.scan(step, z, None, length=n)[0]

    ref = flat_rows(exact(1e-9))[-1]
    errs = [float(np.max(np.abs(np.asarray(euler(z0, n)) - ref))) for n in (2_000, 20_000, 200_000)]
    assert errs[2] < errs[1] < errs[0]
    assert errs[2] < errs[0] / 30  # first order: 100× smaller steps, ~100× closer
    assert errs[2] < 1e-4


def test_smoothed_flows_converge_to_it_linearly_in_eps():
    model, net, train, s0 = problem()
    ref = flat_rows(exact(1e-9))
    errs = []
    for eps in (1e-5, 1e-6):
        tr = fs.simulate(model, net, train, s0, t1=T1, ts=TS, smoothing=eps, rtol=1e-10, atol=1e-13, max_steps=10**6)
        errs.append(float(np.max(np.abs(flat_rows(tr) - ref))))
    # measured 3.0e-4 and 3.0e-5: ≈ 30 ε
    assert 5 * 1e-5 < errs[0] < 100 * 1e-5
    assert 5 < errs[0] / errs[1] < 20


def test_balance_law_holds_through_the_exact_flow():
    # unnormalized, without WD: ρ_1² − ρ_2² is conserved by the flow, kinks or not
    (train, _), net = separated(90, 0).split(1 / 3, seed=0), fs.Network((5, 16, 1))
    model = fs.load_model("unnormalized", lam=0.0)
    s0 = model.init(net, seed=3, scale=0.5)
    s0 = fs.State(s0.V, s0.rho, s0.rho_k * jnp.array([1.3, 0.8]))
    tr = fs.simulate(model, net, train, s0, t1=5.0, ts=[0.0, 2.5, 5.0], smoothing=0, rtol=1e-9, atol=1e-12)
    assert tr.stats.crossings > 0
    gap = np.asarray(tr.rho_k[:, 0] ** 2 - tr.rho_k[:, 1] ** 2)
    assert np.max(np.abs(gap / gap[0] - 1)) < 1e-7


def test_sweep_members_equal_their_simulate_runs():
    model, net, train, _ = problem()
    states = [model.init(net, seed=s, scale=0.5) for s in (3, 4)]
    res = fs.sweep(model, net, train, states, t1=T1, ts=TS, smoothing=0, rtol=1e-6)
    for i, s in enumerate(states):
        single = fs.simulate(model, net, train, s, t1=T1, ts=TS, smoothing=0, rtol=1e-6)
        member = res.trajectory(i)
        assert np.max(np.abs(flat_rows(member) - flat_rows(single))) <= 1e-8
        assert member.stats.crossings == single.stats.crossings


def test_bad_input_names_the_argument():
    model, net, train, s0 = problem()
    with pytest.raises(fs.InputError) as excinfo:
        fs.simulate(model, net, train, s0, t1=1.0, smoothing=0, solver="tsit5")
    assert_input_error(excinfo, "solver")


@functools.cache
def deep_problem():
    """Two hidden layers (curved strata): clusters, 3-5-4-1, 12 points, ``normalized`` with λ = 1e-2. To t = 1
    this start crosses 9 kinks, enters 5 sliding surfaces and leaves one, sliding on up to 4 at once."""
    data = fs.datasets.gaussian_clusters(n=12, dim=3, seed=0)
    net, model = fs.Network((3, 5, 4, 1)), fs.load_model("normalized", lam=1e-2)
    return model, net, data, model.init(net, seed=0, scale=0.1)


@pytest.mark.slow
def test_two_hidden_layers_the_smoothed_flows_converge_to_it():
    """The smoothed flows (an independent code path: no events, no projection) approach the exact flow linearly
    in ε, and the exact flow's own error is set by rtol."""
    model, net, data, s0 = deep_problem()
    run = functools.partial(fs.simulate, model, net, data, s0, t1=1.0, ts=[0.0, 1.0], progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # this start is not on average separable: ρ first shrinks
        ref, loose = (run(smoothing=0, rtol=r, atol=r * 1e-3) for r in (1e-8, 1e-5))
        smoothed = [run(smoothing=eps, rtol=1e-10, atol=1e-13, max_steps=10**6) for eps in (1e-6, 1e-7)]
    assert ref.stats.entries >= 1 and ref.stats.crossings >= 1 and ref.stats.unresolved == 0
    z = flat_rows(ref)[-1]
    errors = [np.max(np.abs(flat_rows(s)[-1] - z)) for s in smoothed]
    assert errors[0] <= 10 * 1e-6 and errors[1] <= 10 * 1e-7  # measured 2.6e-6 and 3.0e-7
    assert errors[1] <= errors[0] / 5
    assert np.max(np.abs(flat_rows(loose)[-1] - z)) <= 1e-5  # measured 1.1e-6


@pytest.mark.slow
def test_two_hidden_layers_sweep_members_equal_their_simulate_runs():
    model, net, data, s0 = deep_problem()
    states = [s0, model.init(net, seed=1, scale=0.1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fs.sweep(model, net, data, states, t1=1.0, ts=[0.0, 0.5, 1.0], smoothing=0, rtol=1e-5, progress=False)
        for i, s in enumerate(states):
            single = fs.simulate(
                model, net, data, s, t1=1.0, ts=[0.0, 0.5, 1.0], smoothing=0, rtol=1e-5, progress=False
            )
            member = res.trajectory(i)
            assert np.max(np.abs(flat_rows(member) - flat_rows(single))) <= 1e-8
            assert member.stats.crossings == single.stats.crossings


def small_deep():
    """Clusters (12 points in 3 dimensions), 3-5-4-1, `normalized` with λ = 1e-2: the model, the network, the
    data as arrays, and a start's directions as writable copies."""
    data = fs.datasets.gaussian_clusters(n=12, dim=3, seed=0)
    net, model = fs.Network((3, 5, 4, 1)), fs.load_model("normalized", lam=1e-2)
    V = [np.asarray(v).copy() for v in model.init(net, seed=2, scale=0.5).V]
    return model, net, jnp.asarray(data.x), jnp.asarray(data.y), V


def kill_sample_0(V1, x):
    """Make sample 0 dead above layer 1, in place: z_{1,0,1} = 0, its other layer-1 units negative."""
    xn = np.asarray(x[0])
    for i in range(V1.shape[0]):
        V1[i] -= ((V1[i] @ xn) / (xn @ xn) + (0.0 if i == 1 else 0.5)) * xn


def test_two_hidden_layers_the_multipliers_give_the_segment_field():
    """On a curved stratum where one sample is pinned in both hidden layers, the backward pass with σ′ = the
    Filippov multipliers α (an independent code path: no projection) gives the projected segment field. The
    layer-1 unit's α needs the layer-2 unit's α in its backpropagated signal (with that gate at 0: 0.03 off)."""
    from flowsim._solver import _exact as E

    model, net, x, y, (V1, V2, V3) = small_deep()
    xn = np.asarray(x[0])
    V1[1] -= (V1[1] @ xn) / (xn @ xn) * xn  # z_{1,0,1} = 0
    V1 /= np.linalg.norm(V1)
    a1 = np.maximum(xn @ V1.T, 0.0)
    V2[1] -= (V2[1] @ a1) / (a1 @ a1) * a1  # z_{2,0,1} = 0, through the other layer-1 units of sample 0
    V2 /= np.linalg.norm(V2)
    state = model.state(V=[V1, V2, V3], rho=1.3)
    z, _, _ = E._forward(net, state, x)
    sliding = jnp.zeros(z.shape, bool).at[jnp.asarray([1, 12 * 5 + 1])].set(True)
    gates = jnp.where(sliding, 0.0, (z > 0).astype(x.dtype))
    none = jnp.zeros(z.shape, bool)
    mode = E.Mode(sliding, gates, none, none, jnp.zeros(z.shape), E.make_bases(model, net, x, state, sliding, gates))
    v = E.segment_field(model, net, x, y, state, mode)
    alpha = E.multipliers(model, net, x, y, state, mode)
    w = E.one_sided_field(model, net, x, y, state, E._layers(net, alpha))
    for a, b in zip(w.V[:-1], v.V[:-1]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-13)
    assert float(jnp.max(jnp.abs(v.V[0]))) > 0.01 and float(jnp.max(jnp.abs(x @ v.V[0].T)[0, 1])) < 1e-13


def test_two_hidden_layers_a_dead_samples_layer_2_has_no_events_and_does_not_move_the_field():
    """A sample whose layer-1 units are all negative but one, sliding: its layer-2 input is zero along the
    stratum. Those pre-activations get σ′ = ½ and no events (with rounding's sign they crossed back and forth),
    and neither the segment field nor the sliding unit's margins depend on their gate."""
    from flowsim._solver import _exact as E

    model, net, x, y, (V1, V2, V3) = small_deep()
    kill_sample_0(V1, x)
    V1 /= np.linalg.norm(V1)
    state = model.state(V=[V1, V2, V3], rho=1.3)
    z, _, _ = E._forward(net, state, x)
    dead = np.arange(12 * 5, 12 * 5 + 4)  # layer 2, sample 0
    sliding = jnp.zeros(z.shape, bool).at[1].set(True)
    mode = E.new_mode(model, net, x, state, sliding, (z > 0).astype(x.dtype), jnp.zeros(z.shape, bool))
    np.testing.assert_array_equal(np.asarray(mode.gates)[dead], 0.5)
    assert np.all(np.asarray(mode.dead)[dead])
    assert not np.any(np.asarray(mode.sliding)[dead])
    np.testing.assert_array_equal(np.asarray(E._free_distance(net, x, state, mode))[dead], 1.0)
    v = E.segment_field(model, net, x, y, state, mode)
    margins = []
    for g in (0.0, 1.0):
        other = eqx.tree_at(lambda m: m.gates, mode, mode.gates.at[dead].set(g))
        for a, b in zip(E.segment_field(model, net, x, y, state, other).V, v.V):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-14)
        margins.append([float(m[1]) for m in E.sliding_margins(model, net, x, y, state, other)])
    # nor the sliding unit's margins: they take the signal it passes turned on (`_signals`), not the dead gates'
    np.testing.assert_allclose(margins[0], margins[1], rtol=1e-12)
    # a mode made from this one keeps the dead pre-activations' gates (the exact velocity's α, in select_mode)
    kept = E.new_mode(model, net, x, state, mode.sliding, mode.gates.at[dead].set(0.8), mode.released, mode.dead)
    np.testing.assert_array_equal(np.asarray(kept.gates)[dead], 0.8)


def test_two_hidden_layers_a_decayed_unit_is_dead():
    """A layer-2 unit whose incoming and outgoing weights have decayed to 1e-8 of their layers': its
    pre-activations are within 1e-8 of zero for the layer's tolerance and its gate reaches nothing else. It is
    dead: no events, never sliding, and its gate moves the segment field by the size of those weights only."""
    from flowsim._solver import _exact as E

    model, net, x, y, (V1, V2, V3) = small_deep()
    V2[2] *= 1e-8 / np.linalg.norm(V2[2])
    V3[:, 2] = 1e-8
    state = model.state(V=[V1, V2 / np.linalg.norm(V2), V3 / np.linalg.norm(V3)], rho=1.3)
    z, _, _ = E._forward(net, state, x)
    unit = 12 * 5 + np.arange(12) * 4 + 2  # layer 2, unit 2, every sample
    sliding = jnp.zeros(z.shape, bool).at[unit].set(True)
    mode = E.new_mode(model, net, x, state, sliding, (z > 0).astype(x.dtype), jnp.zeros(z.shape, bool))
    assert np.all(np.asarray(mode.dead)[unit]) and np.sum(mode.dead) == len(unit)
    assert not np.any(np.asarray(mode.sliding)) and np.all(np.asarray(mode.gates)[unit] == 0.5)
    np.testing.assert_array_equal(np.asarray(E._free_distance(net, x, state, mode))[unit], 1.0)
    v = ravel_pytree(E.segment_field(model, net, x, y, state, mode))[0]
    for g in (0.0, 1.0):
        other = eqx.tree_at(lambda m: m.gates, mode, mode.gates.at[unit].set(g))
        w = ravel_pytree(E.segment_field(model, net, x, y, state, other))[0]
        assert float(jnp.max(jnp.abs(w - v))) < 1e-7 * float(jnp.max(jnp.abs(v)))  # measured 2e-8 of 4.4


def test_two_hidden_layers_the_mode_at_a_degenerate_event_matches_the_exact_velocity():
    """A state of the stall case (5-16-16-1, `normalized`, λ = 1e-2) where the deep exact flow once cycled: 54
    pre-activations at zero, among them one layer-2 unit with output weight 1e-4 pinned for four samples of
    collapsed features (its constraint rows at 1e-4 of the largest singular value), and a sample dead in layer 2.
    The mode chosen there must be consistent, its segment field must be the exact velocity (the least-norm
    element of the Filippov set: a bounded least squares, another code path), and its multipliers in [0, 1]."""
    from flowsim._model._filippov import exact_field
    from flowsim._solver import _exact as E

    saved = np.load(Path(__file__).parent / "data" / "stall_t0942.npz")
    data = fs.datasets.gaussian_clusters(n=40, dim=5, seed=0)
    net, model = fs.Network((5, 16, 16, 1)), fs.load_model("normalized", lam=1e-2)
    state = model.state(V=[saved["V1"], saved["V2"], saved["V3"]], rho=float(saved["rho"]))
    x, y = jnp.asarray(data.x), jnp.asarray(data.y)

    def choose(state):
        z, scales, rates = E._forward(net, state, x)
        candidates = jnp.abs(z) <= 1e-7 * scales
        mode, _, _, acts = E.select_mode(model, net, x, y, state, candidates, jnp.full(z.shape, -1))
        mode, done = E.make_consistent(model, net, x, y, state, mode, rates, acts)
        return candidates, mode, done, E.segment_field(model, net, x, y, state, mode)

    candidates, mode, done, v = jax.jit(choose)(state)
    assert int(jnp.sum(candidates)) == 54 and bool(done) and int(jnp.sum(mode.sliding)) >= 20
    m = exact_field(model, net, x, y, state, pinned_mask=E._layers(net, candidates | mode.dead))
    gap = np.linalg.norm(ravel_pytree(v)[0] - ravel_pytree(m)[0]) / np.linalg.norm(ravel_pytree(m)[0])
    assert gap < 1e-5  # measured 3e-7; with the capped Gauss-Newton and σ′ = ½ on the dead sample, 1.3
    alpha = np.asarray(E.multipliers(model, net, x, y, state, mode))[np.asarray(mode.sliding)]
    assert np.all((alpha > -1e-6) & (alpha < 1 + 1e-6))


def test_two_hidden_layers_a_dead_samples_unit_at_zero_attracts_as_its_revived_field_says():
    """A dead sample (every layer-1 unit negative but one, at zero) whose unit at zero has weights of both signs
    into layer 2. Turned on, it revives the sample with the layer-2 signs of its own weights: whether the surface
    attracts is the sign of the jump of ż between its one-sided fields, that σ′ = 1 field taken with those
    layer-2 gates (the field itself, another code path). Built so that σ′ = ½ above gives the other sign."""
    from flowsim._solver import _exact as E

    model, net, x, y, (V1, V2, V3) = small_deep()
    kill_sample_0(V1, x)
    V2[:, 1] = [0.5, -3.0, 0.1, 0.1]
    V3[:] = 1.0
    state = model.state(V=[V1 / np.linalg.norm(V1), V2 / np.linalg.norm(V2), V3 / np.linalg.norm(V3)], rho=1.3)
    z, _, _ = E._forward(net, state, x)
    dead = 12 * 5 + np.arange(4)  # layer 2, sample 0
    gates = jnp.where(jnp.arange(z.size) == 1, 0.0, (z > 0).astype(x.dtype))
    mode = E.new_mode(model, net, x, state, jnp.zeros(z.shape, bool), gates, jnp.zeros(z.shape, bool))
    assert np.all(np.asarray(mode.dead)[dead])

    def zdot1(g):
        v = E.one_sided_field(model, net, x, y, state, E._layers(net, g))
        return float(E._zdot(net, state, x, v, g)[1])

    off = zdot1(mode.gates)
    on = zdot1(mode.gates.at[1].set(1.0).at[dead].set((np.asarray(V2[:, 1]) > 0).astype(float)))
    half = zdot1(mode.gates.at[1].set(1.0).at[dead].set(0.5))
    assert (off - on > 0) != (off - half > 0)  # the two readings disagree here
    acts = E.attracting(model, net, x, y, state, mode.gates, mode.dead)
    assert bool(acts[1]) == (off - on > 0)


def test_two_hidden_layers_the_drift_correction_puts_a_state_back_on_its_stratum():
    """A state 1e-5 off a curved stratum (sample 0 pinned in both hidden layers), as a step's local error leaves
    it: the drift correction brings both pinned pre-activations to zero within 1e-12 of their scales (a numpy
    forward pass), by a move of the step's size, and does not move a state that is on it."""
    from flowsim._model._stratum import curved_onto
    from flowsim._solver import _exact as E

    model, net, x, y, (V1, V2, V3) = small_deep()
    xn = np.asarray(x[0])
    V1[1] -= (V1[1] @ xn) / (xn @ xn) * xn
    V1 /= np.linalg.norm(V1)
    a1 = np.maximum(xn @ V1.T, 0.0)
    V2[1] -= (V2[1] @ a1) / (a1 @ a1) * a1
    V2 /= np.linalg.norm(V2)
    on = model.state(V=[V1, V2, V3], rho=1.3)
    z, _, _ = E._forward(net, on, x)
    sliding = jnp.zeros(z.shape, bool).at[jnp.asarray([1, 12 * 5 + 1])].set(True)
    basis = E.make_bases(model, net, x, on, sliding, jnp.where(sliding, 0.0, (z > 0).astype(x.dtype)))
    rng = np.random.default_rng(0)
    W1, W2 = (v + 1e-5 * rng.standard_normal(v.shape) for v in (V1, V2))
    off = model.state(V=[W1 / np.linalg.norm(W1), W2 / np.linalg.norm(W2), V3], rho=1.3)

    def pinned_rel(state):
        U1, U2 = (np.asarray(v) for v in state.V[:2])
        h = np.maximum(xn @ U1.T, 0.0)
        return abs(xn @ U1[1]) / (np.linalg.norm(U1) * np.linalg.norm(xn)), abs(h @ U2[1]) / (
            np.linalg.norm(U2) * np.linalg.norm(h)
        )

    assert max(pinned_rel(off)) > 1e-7
    back = curved_onto(model, net, x, off, basis)
    assert max(pinned_rel(back)) < 1e-12
    moved = max(float(np.linalg.norm(np.asarray(a) - np.asarray(b))) for a, b in zip(back.V[:2], off.V[:2]))
    assert moved < 1e-4
    still = curved_onto(model, net, x, on, basis)
    for a, b in zip(still.V, on.V):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
