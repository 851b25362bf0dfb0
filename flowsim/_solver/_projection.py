"""Putting solved states back on their manifolds: unit directions and the derived layer-balance law."""

from __future__ import annotations

import jax.numpy as jnp

from .._model import Model, State


def project_states(states: State, balance0=None, rate=0.0, ts=None, enforce_balance: bool = True):
    """Put time-stacked states back on their manifolds (traceable; shared by simulate and sweep).

    Directions are scaled to unit norm with the norms folded into the scales (the network function is
    unchanged, by homogeneity). For per-layer models with a layer-balance law (`balance0` = ρ_k(0)², `rate`
    = the derived c) the deviation from ``ρ_k² − ρ_1² = (ρ_k(0)² − ρ_1(0)²) e^{c t}`` is measured, and
    with `enforce_balance` the scales are put on that manifold, keeping ``Σ_k ρ_k²``.

    **Returns:** ``(states, norm_drift, balance_drift)``; the drifts are maxima over the saves (rows of NaN,
    saves a failed solve did not reach, are skipped), 0 where not defined.
    """
    norms = jnp.stack([jnp.linalg.norm(v.reshape(v.shape[0], -1), axis=1) for v in states.V], axis=1)
    V = tuple(v / n[:, None, None] for v, n in zip(states.V, norms.T))
    norm_drift = jnp.nanmax(jnp.abs(norms - 1.0))
    if states.rho_k is None:
        return State(V, states.rho * jnp.prod(norms, axis=1), None), norm_drift, jnp.zeros(())
    rk = states.rho_k * norms
    balance_drift = jnp.zeros(())
    if balance0 is not None and rk.shape[1] > 1:
        sq = rk**2
        c = (balance0 - jnp.mean(balance0))[None, :] * jnp.exp(rate * jnp.asarray(ts))[:, None]
        target = jnp.mean(sq, axis=1, keepdims=True) + c
        balance_drift = jnp.nanmax(jnp.abs(sq - target) / jnp.max(sq, axis=1, keepdims=True))
        if enforce_balance:
            rk = jnp.sqrt(jnp.maximum(target, 0.0))
    return State(V, jnp.prod(rk, axis=1), rk), norm_drift, balance_drift


def balance_law(model: Model, rho_k0):
    """``(ρ_k(0)², c)`` of the derived layer-balance law, or ``(None, 0.0)`` where the model has none."""
    if rho_k0 is None or not model.per_layer or model.derivation.invariant is None:
        return None, 0.0
    return rho_k0**2, model.invariant_rate()
