"""flowsim._solver._trajectory: the Trajectory pytree, its saved states, and run facts kept out of its structure."""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowsim as fs


def _trajectory(stats, T=4, offset=0.0):
    ts = jnp.linspace(0.0, 1.0, T)
    V = (jnp.ones((T, 3, 2)) / np.sqrt(6.0), jnp.ones((T, 1, 3)) / np.sqrt(3.0))
    return fs.Trajectory(
        ts=ts, rho=ts + 1.0 + offset, rho_k=None, V=V, margins=jnp.zeros((T, 5)), loss=ts, rho_eq=ts, stats=stats
    )


def test_jit_over_trajectories_of_different_runs_compiles_once():
    """Run facts (wall time, step counts, ...) differ from run to run; they are not part of the tree
    structure, so a jitted function of Trajectories is traced once for arrays of the same shapes."""
    a = _trajectory(fs.RunStats(method="rosenbrock", wall_time=1.25, steps=10))
    b = _trajectory(fs.RunStats(method="tsit5", wall_time=3.5, steps=99, status="max_steps"), offset=1.0)
    assert a.stats != b.stats
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    traces = []

    @jax.jit
    def final_rho(traj):
        traces.append(None)
        return traj.rho[-1] + traj.final.rho

    @eqx.filter_jit
    def mean_loss(traj):
        traces.append(None)
        return jnp.mean(traj.loss)

    assert float(final_rho(a)) == 4.0 and float(final_rho(b)) == 6.0
    mean_loss(a), mean_loss(b)
    assert len(traces) == 2  # one trace per function, not per run


def test_run_facts_stay_on_the_host():
    traj = _trajectory(fs.RunStats(method="rosenbrock", steps=3))
    assert traj.stats.steps == 3 and traj.stats["steps"] == 3 and traj.stats["rtol"] is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        traj.stats.steps = 4  # a typed, read-only record
    with pytest.raises(KeyError):
        traj.stats["accepted_steps"]  # one set of names for every solver
    assert traj.stats.replace(steps=4).steps == 4 and traj.stats.steps == 3
    assert set(traj.stats) == {f.name for f in dataclasses.fields(fs.RunStats)}
    # a Trajectory rebuilt from its leaves (as inside a transformation) carries no run facts
    rebuilt = jax.tree_util.tree_map(lambda a: a, traj)
    assert rebuilt.stats is None and np.array_equal(np.asarray(rebuilt.rho), np.asarray(traj.rho))


def test_saved_states():
    traj = _trajectory(None)
    assert len(traj) == 4 and "4 saves" in repr(traj)
    s = traj.state(1)
    assert isinstance(s, fs.State) and s.rho_k is None and s.V[0].shape == (3, 2)
    np.testing.assert_allclose(float(traj.final.rho), 2.0)
    np.testing.assert_array_equal(np.asarray(traj.normalized_margin()), np.zeros(4))
