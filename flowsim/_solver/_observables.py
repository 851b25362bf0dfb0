"""Observables of saved states: margins, loss and ρ_eq (shared by simulate, sweep and sgd)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .._model import Model, Network, State
from ._stats import RunStats
from ._trajectory import Trajectory


def observe(model: Model, net: Network, data, ts, states: State, stats: RunStats | None = None) -> Trajectory:
    """Build a Trajectory from a time-stacked State (every leaf has a leading time axis).

    **Arguments:**

    - `model`, `net`, `data`: the problem.
    - `ts`: times, shape ``(T,)``.
    - `states`: a State whose leaves are stacked over time.
    - `stats`: run facts to attach.

    **Returns:** a [`flowsim.Trajectory`][flowsim.Trajectory] with margins, loss and ρ_eq computed at every saved time.
    """
    rho = jnp.prod(states.rho_k, axis=1) if states.rho_k is not None else states.rho
    margins, loss, rho_eq = _observables(
        model, net, jnp.asarray(data.x), jnp.asarray(data.y), tuple(states.V), rho, states.rho_k
    )
    return Trajectory(
        ts=jnp.asarray(ts, dtype=jnp.float64),
        rho=rho,
        rho_k=states.rho_k,
        V=tuple(states.V),
        margins=margins,
        loss=loss,
        rho_eq=rho_eq,
        stats=stats,
    )


def observe_one(model: Model, net: Network, x, y, lam, V, rho, rho_k):
    """Margins ``y_n f_n``, loss and ρ_eq of one state (traceable; shared by simulate, sgd and sweep)."""
    c = model.compiled(net)
    f = net._forward(V, x)
    reg = jnp.sum(c.regularizer(rho_k, lam)) if rho_k is not None else c.regularizer(rho, lam)
    return y * f, jnp.sum(c.loss(rho * f, y)) + reg * jnp.ones(()), c.rho_eq(f, y, lam)


@eqx.filter_jit
def _observables(model, net, x, y, V, rho, rho_k):
    return jax.vmap(lambda V_, r, rk: observe_one(model, net, x, y, model.lam, V_, r, rk))(V, rho, rho_k)
