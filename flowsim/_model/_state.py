"""The state of the flow: layer scales and unit-norm directions, as an immutable pytree."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float


class State(eqx.Module):
    """A point ``(ρ, V_1..V_L)`` (shared-scale models) or ``(ρ_1..ρ_L, V_1..V_L)`` (per-layer models).

    Fields:

    - `V`: tuple of unit-Frobenius-norm matrices, one per layer, shapes ``(d_k, d_{k-1})``.
    - `rho`: the overall scale ``ρ = ∏_k ρ_k`` (a 0-d array).
    - `rho_k`: per-layer scales, shape ``(L,)``, or ``None`` for the shared-scale ``normalized`` model.

    A State returned by a vector field holds time derivatives in the same fields
    (``rho`` then holds ``dρ/dt``). Build states with ``model.init`` or ``model.state``, which validate.
    Every field may carry the same leading batch axes (``*batch``): the saved states of a trajectory, stacked
    over time, or the initial states of a sweep.
    """

    V: tuple[Float[Array, "*batch _dk _dkm1"], ...]
    rho: Float[Array, "*batch"]
    rho_k: Float[Array, "*batch L"] | None = None

    @property
    def depth(self) -> int:
        """Number of layers L."""
        return len(self.V)

    def norms(self) -> Float[Array, " L"]:
        """Frobenius norms ``‖V_k‖`` (1 on the manifold)."""
        return jnp.stack([jnp.linalg.norm(v) for v in self.V])

    def weights(self) -> tuple[Float[Array, "*batch _dk _dkm1"], ...]:
        """The network weights ``W_k = ρ_k V_k`` (shared models put all of ρ on the last layer)."""
        if self.rho_k is not None:
            return tuple(r * v for r, v in zip(self.rho_k, self.V))
        return tuple(self.V[:-1]) + (self.rho * self.V[-1],)
