"""Helpers shared by the test files: small problems and the checks of flowsim's error messages."""

import jax.numpy as jnp
import numpy as np

import flowsim as fs


class Traced(Exception):
    """Raised by the patched solver entry points: reaching them means validation came too late."""


def small_problem(widths=(2, 3, 1), n=6, seed=1, activation="relu"):
    data = fs.datasets.gaussian_clusters(n=n, dim=widths[0], seed=seed)
    return fs.Network(widths, activation=activation), data


def assert_input_error(excinfo, argument, value_hint=None, expected_hint=None):
    """The error is an InputError (a FlowsimError and ValueError) naming `argument`, what it got and what was
    expected, with `value_hint` and `expected_hint` in the message where given."""
    err = excinfo.value
    assert isinstance(err, fs.InputError) and isinstance(err, fs.FlowsimError) and isinstance(err, ValueError)
    assert not isinstance(err, Traced)
    msg = str(err)
    assert f"`{argument}`" in msg, msg
    assert "got " in msg and "expected" in msg, msg
    for hint in (value_hint, expected_hint):
        if hint is not None:
            assert hint in msg, msg


def separable_sign(net, data, V):
    """V with the last layer's sign chosen so that Σ y_n f_n > 0."""
    f = np.asarray(net.forward(tuple(jnp.asarray(v) for v in V), jnp.asarray(data.x)))
    if np.sum(data.y * f) < 0:
        V = list(V[:-1]) + [-np.asarray(V[-1])]
    return V


def same_bits(a, b):
    """Two pytrees with bit-identical leaves (same shapes and dtypes)."""
    import jax

    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for u, v in zip(la, lb):
        u, v = np.asarray(u), np.asarray(v)
        assert u.shape == v.shape and u.dtype == v.dtype and u.tobytes() == v.tobytes()


# A regime declared outside the package, as a user would write it: plain gradient flow on W_k = ρ_k V_k with a
# quartic weight decay λ Σ_k ‖W_k‖⁴ (not quadratic, so fs.sgd evaluates the declared regularizer itself).
QUARTIC_REGIME_FILE = '''"""Plain gradient flow on W_k with the weight decay lam * sum_k ||W_k||^4."""

import sympy as sp

from flowsim import Regime

REGIME = Regime(
    name="quartic",
    description="plain gradient flow on W_k = rho_k V_k with weight decay lam * sum_k ||W_k||^4",
    per_layer=True,
    embedding=lambda s, theta: (s * sp.cos(theta), s * sp.sin(theta)),
    regularizer=lambda s, lam: lam * s**4,
)
'''


def with_times(traj, ts):
    """The same Trajectory at other times (to test time matching)."""
    return fs.Trajectory(
        ts=ts,
        rho=traj.rho,
        rho_k=traj.rho_k,
        V=traj.V,
        margins=traj.margins,
        loss=traj.loss,
        rho_eq=traj.rho_eq,
        stats=traj.stats,
    )
