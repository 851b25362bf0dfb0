"""The model's field on flat coordinate vectors (``ravel_pytree`` of a State): what the solvers integrate."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from .._data import Dataset
from .._model import Model, Network, State, field


def _template(model: Model, net: Network) -> State:
    V = tuple(jnp.zeros(shape) for shape in net.shapes)
    return State(V, jnp.zeros(()), jnp.zeros(net.depth) if model.per_layer else None)


def unraveler(model: Model, net: Network):
    """The map from the flat coordinate vector back to a State (fixed by the model and the network)."""
    return ravel_pytree(_template(model, net))[1]


def flat_field(model: Model, net: Network, x, y, z, eps):
    """The field on the flat coordinate vector `z` (traceable): what every simulate solver integrates."""
    return ravel_pytree(field(model, net, x, y, unraveler(model, net)(z), eps))[0]


@functools.lru_cache(maxsize=64)
def compiled_flat(regime, loss: str, net: Network, eps: float | None):
    """Jitted ``(F, J, pre)`` on flat vectors for one (regime, loss, network, ε), compiled once per data shape.

    λ, the data and the point are arguments, so new λ or data do not recompile. Plain `jax.jit` with every
    static part closed over keeps a call at ~10 µs of dispatch (``eqx.filter_jit`` re-partitions its
    arguments on every call, ~0.2 ms, which dominated the cheap field). The Jacobian is reverse-mode: ~1.5×
    faster than forward mode on these square systems.
    """

    def F(lam, x, y, z):
        return flat_field(Model(regime, lam, loss), net, x, y, z, eps)

    def pre(x, z):
        return preactivations(net, unraveler(Model(regime, 0.0, loss), net)(z).V, x)

    return jax.jit(F), jax.jit(jax.jacrev(F, argnums=3)), jax.jit(pre)


class Flat:
    """The model's field on a flat vector (jitted), with its Jacobian and pre-activation diagnostics."""

    def __init__(self, model: Model, net: Network, data: Dataset, state: State, eps: float | None):
        self.z0, self.unravel = ravel_pytree(state)[0], unraveler(model, net)  # the map the compiled field uses
        x, y = jnp.asarray(data.x), jnp.asarray(data.y)
        self.model, self.net, self.x, self.y = model, net, x, y
        F, J, pre = compiled_flat(model.regime, model.loss, net, eps)
        lam = model.lam
        self.F = lambda z: F(lam, x, y, z)
        self.J = lambda z: J(lam, x, y, z)
        self.pre = lambda z: pre(x, z)


def preactivations(net: Network, V, x):
    """Every hidden pre-activation ``z_k = V_k a_{k-1}`` of every sample, flat (traceable)."""
    zs = net.preactivations(V, x)
    return jnp.concatenate([z.ravel() for z in zs]) if zs else jnp.zeros((0,))


def kink_statistics(net: Network, x, Vs, t_rows, valid, tol: float):
    """Kinks seen along saved states (traceable; every solver's and GD/SGD's ``RunStats`` use it).

    **Arguments:**

    - `net`, `x`: the network and the inputs.
    - `Vs`: the saved directions, one array per layer with a leading row axis.
    - `t_rows`: the rows' times; `valid`: which rows hold a state (a failed solve leaves NaN rows).
    - `tol`: ``|z|`` below which a hidden pre-activation counts as pinned.

    **Returns:** ``(switches, pinned, sliding_time)``: sign changes of hidden pre-activations between
    consecutive valid rows, pre-activations pinned at the last valid row, and the total time between
    consecutive valid rows whose later row has a pinned pre-activation.
    """
    pre = jax.vmap(lambda *V: preactivations(net, V, x))(*Vs)
    pair = valid[1:] & valid[:-1]
    switches = jnp.sum(jnp.where(pair[:, None], jnp.signbit(pre[1:]) != jnp.signbit(pre[:-1]), False))
    pinned_rows = jnp.abs(pre) <= tol
    sliding = jnp.sum(jnp.where(pair & jnp.any(pinned_rows, axis=1)[1:], jnp.diff(t_rows), 0.0))
    last = jnp.max(jnp.where(valid, jnp.arange(valid.size), 0))
    return switches, jnp.sum(pinned_rows[last]), sliding
