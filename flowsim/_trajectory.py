"""Trajectories: saved states and observables of a flow or of a GD/SGD run."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._model import Model
from ._network import Network
from ._state import State


class Trajectory(eqx.Module):
    """Saved states and observables along a run (time first in every array).

    Fields:

    - `ts`: times, shape ``(T,)``; for GD/SGD ``t = lr · step``.
    - `rho`: overall scale ρ, ``(T,)``.
    - `rho_k`: per-layer scales ``(T, L)``, or ``None`` for shared-scale models.
    - `V`: one array per layer, ``(T, d_k, d_{k-1})``, unit Frobenius norm.
    - `margins`: normalized margins ``y_n f(V; x_n)``, ``(T, N)``.
    - `loss`: the loss ``Σ_n ℓ(ρ f_n, y_n)`` plus the regularizer, ``(T,)``.
    - `rho_eq`: ρ_eq(V(t)), ``(T,)``.
    - `stats`: a dict of run facts (steps, rejections, switches, sliding time, why it stopped, ...).
    """

    ts: Float[Array, " T"]
    rho: Float[Array, " T"]
    rho_k: Float[Array, "T L"] | None
    V: tuple[Float[Array, "T dk dkm1"], ...]
    margins: Float[Array, "T N"]
    loss: Float[Array, " T"]
    rho_eq: Float[Array, " T"]
    _stats: tuple = eqx.field(static=True, default=())

    def __init__(self, ts, rho, rho_k, V, margins, loss, rho_eq, stats=None, _stats=None):
        self.ts, self.rho, self.rho_k, self.V = ts, rho, rho_k, tuple(V)
        self.margins, self.loss, self.rho_eq = margins, loss, rho_eq
        items = stats if stats is not None else dict(_stats or ())
        self._stats = tuple(sorted(dict(items).items()))

    @property
    def stats(self) -> dict:
        """Run facts: solver, steps, rejections, field evaluations, switches, sliding time, stop reason."""
        return dict(self._stats)

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def __repr__(self) -> str:
        return (
            f"Trajectory({len(self)} saves, t in [{float(self.ts[0]):g}, {float(self.ts[-1]):g}], "
            f"rho {float(self.rho[0]):.4g} -> {float(self.rho[-1]):.4g})"
        )

    def state(self, i: int) -> State:
        """The State saved at index `i` (negative indices count from the end)."""
        return State(
            tuple(v[i] for v in self.V),
            self.rho[i],
            None if self.rho_k is None else self.rho_k[i],
        )

    @property
    def final(self) -> State:
        """The last saved State."""
        return self.state(-1)

    def normalized_margin(self) -> Float[Array, " T"]:
        """The minimum normalized margin ``min_n y_n f_n`` over time."""
        return jnp.min(self.margins, axis=1)


def observe(model: Model, net: Network, data, ts, states: State, stats: dict | None = None) -> Trajectory:
    """Build a Trajectory from a time-stacked State (every leaf has a leading time axis).

    **Arguments:**

    - `model`, `net`, `data`: the problem.
    - `ts`: times, shape ``(T,)``.
    - `states`: a State whose leaves are stacked over time.
    - `stats`: run facts to attach.

    **Returns:** a :class:`Trajectory` with margins, loss and ρ_eq computed at every saved time.
    """
    rho = jnp.prod(states.rho_k, axis=1) if states.rho_k is not None else states.rho
    margins, loss, rho_eq = _observables(model, net, jnp.asarray(data.x), jnp.asarray(data.y), tuple(states.V), rho,
                                         states.rho_k)
    return Trajectory(
        ts=jnp.asarray(ts, dtype=jnp.float64),
        rho=rho,
        rho_k=states.rho_k,
        V=tuple(states.V),
        margins=margins,
        loss=loss,
        rho_eq=rho_eq,
        stats=stats or {},
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
