"""A regime's raw coordinates (its embedding in full dimension) for discrete steps: the map from a State and
back, the objective in those coordinates, its exact gradient, and the retraction.

Everything follows from the `flowsim._symbolic.Parametrization` read off the regime's embedding: the
raw matrix of a layer is either its weight ``W_k = ρ_k V_k`` or a direction ``v_k = c V_k`` entering as
``v_k/‖v_k‖``, and the scales are the weights' norms, one coordinate ``g_k`` per layer, or one shared ``ρ``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._model import Network, State
from .._symbolic import Parametrization


def norm(a):
    """The Frobenius norm of one array (traceable)."""
    return jnp.sqrt(jnp.sum(a * a))


def to_raw(param: Parametrization, state: State) -> dict:
    """The raw coordinates at `state` (the point the flow starts from): ``{"W"}``, ``{"g", "v"}`` or
    ``{"rho", "v"}``."""
    if param.direction == "weights":
        return {"W": tuple(r * v for r, v in zip(state.rho_k, state.V))}
    v = tuple(state.V) if param.amplitude == 1.0 else tuple(param.amplitude * V for V in state.V)
    if param.scale == "coordinate":
        return {"g": jnp.asarray(state.rho_k), "v": v}
    return {"rho": jnp.asarray(state.rho), "v": v}


def output_and_decay(param: Parametrization, compiled, net: Network, raw: dict, x, lam):
    """The outputs ``u_n = ρ f(V; x_n)`` and the regularizer, in raw coordinates.

    For directions ``v_k`` the caller passes them already divided by their norms (see `value_and_grad`).
    """
    if param.direction == "weights":
        u = net._forward(raw["W"], x)  # = ∏_k ‖W_k‖ f(W_k/‖W_k‖; x) by positive homogeneity
        if param.quadratic:  # λ Σ ‖W_k‖² without the square root (fewer operations per step)
            reg = lam * sum(jnp.sum(Wk * Wk) for Wk in raw["W"])
        else:
            reg = sum(compiled.regularizer(norm(Wk), lam) for Wk in raw["W"])
    elif param.scale == "coordinate":
        u = jnp.prod(raw["g"]) * net._forward(raw["v"], x)
        reg = jnp.sum(compiled.regularizer(raw["g"], lam))
    else:
        u = raw["rho"] * net._forward(raw["v"], x)
        reg = compiled.regularizer(raw["rho"], lam)
    return u, reg


def value_and_grad(param: Parametrization | None, objective, raw: dict):
    """``objective(raw)`` (with an auxiliary output), and its exact gradient in the raw coordinates.

    For directions ``v_k`` (used as ``V̂ = v/‖v‖``) the chain rule through the normalization is written out:
    with ``G = ∂L/∂V̂``, ``∂L/∂v = (G − V̂⟨V̂, G⟩)/‖v‖``. Same numbers as differentiating through ``v/‖v‖``,
    fewer operations.
    """
    fn = jax.value_and_grad(objective, has_aux=True)
    if param is None or param.direction == "weights":
        return fn(raw)
    norms = tuple(norm(v) for v in raw["v"])
    unit = tuple(v / n for v, n in zip(raw["v"], norms))
    (value, aux), g = fn({**raw, "v": unit})
    tangent = tuple((G - U * jnp.vdot(U, G)) / n for G, U, n in zip(g["v"], unit, norms))
    return (value, aux), {**g, "v": tangent}


def retract(param: Parametrization | None, raw: dict) -> dict:
    """Put the directions back on their sphere when the regime declares a retraction (normalization layers)."""
    if param is None or not param.retraction:
        return raw
    c = param.amplitude
    v = tuple(v / norm(v) if c == 1.0 else c * v / norm(v) for v in raw["v"])
    return {**raw, "v": v}


def states(param: Parametrization, raw: dict) -> State:
    """Time-stacked States from time-stacked raw coordinates."""

    def norms(a):  # (T, d, d') -> (T,)
        return jnp.sqrt(jnp.sum(a * a, axis=(1, 2)))

    if param.direction == "weights":
        rk = jnp.stack([norms(W) for W in raw["W"]], axis=1)
        V = tuple(W / rk[:, k, None, None] for k, W in enumerate(raw["W"]))
        return State(V, jnp.prod(rk, axis=1), rk)
    V = tuple(v / norms(v)[:, None, None] for v in raw["v"])
    if param.scale == "coordinate":
        return State(V, jnp.prod(raw["g"], axis=1), raw["g"])
    return State(V, raw["rho"], None)
