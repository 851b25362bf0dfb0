"""Trajectories: saved states and observables of a flow or of a GD/SGD run."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._model import State
from ._stats import RunStats


class _RunFacts:
    """A run's [`flowsim.RunStats`][flowsim.RunStats], carried by a Trajectory outside its pytree.

    It flattens to no leaves and a constant auxiliary value, so Trajectories of different runs have one tree
    structure: ``jax.jit`` over them compiles once, whatever their facts. The facts are host-side metadata and
    do not pass through JAX transformations: a Trajectory rebuilt from its leaves (inside ``jax.jit``, by
    ``jax.tree_util.tree_map``) has none.
    """

    __slots__ = ("stats",)

    def __init__(self, stats: RunStats | None = None):
        self.stats = stats


jax.tree_util.register_pytree_node(_RunFacts, lambda facts: ((), None), lambda aux, children: _RunFacts())


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
    - `stats`: the run's [`flowsim.RunStats`][flowsim.RunStats] (steps, rejections, switches, pinned pre-activations,
      why it stopped, ...), or ``None``. They are not part of the pytree (see `_RunFacts`): jitting
      over Trajectories does not recompile per run.
    """

    ts: Float[Array, " T"]
    rho: Float[Array, " T"]
    rho_k: Float[Array, "T L"] | None
    V: tuple[Float[Array, "T dk dkm1"], ...]
    margins: Float[Array, "T N"]
    loss: Float[Array, " T"]
    rho_eq: Float[Array, " T"]
    _facts: _RunFacts

    def __init__(self, ts, rho, rho_k, V, margins, loss, rho_eq, stats: RunStats | None = None):
        self.ts, self.rho, self.rho_k, self.V = ts, rho, rho_k, tuple(V)
        self.margins, self.loss, self.rho_eq = margins, loss, rho_eq
        self._facts = _RunFacts(stats)

    @property
    def stats(self) -> RunStats | None:
        """The run's [`flowsim.RunStats`][flowsim.RunStats] (``None`` for a Trajectory rebuilt by a JAX
        transformation)."""
        return self._facts.stats

    def with_stats(self, stats: RunStats | None) -> "Trajectory":
        """The same saved states and observables with other run facts."""
        return Trajectory(self.ts, self.rho, self.rho_k, self.V, self.margins, self.loss, self.rho_eq, stats)

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
