"""Symbolic derivation of the ρ / V dynamics from a regime's ingredients (loss, regularizer, parametrization).

Nothing here is typed in by hand: the equations follow from

- the per-sample loss ``ℓ(u, y)`` of the scalar output ``u = ρ f``,
- the regularizer, a function of the scales,
- the parametrization: how one layer's raw (Euclidean) coordinates depend on its scale ``s`` and its
  direction, represented by an angle ``θ`` on a great circle (the metric is rotation invariant, so a
  2-D representative fixes it),

together with positive homogeneity: ``f(W; x) = ρ f(V; x)`` with ``ρ = ∏_k ρ_k``, so ``∂ρ/∂ρ_k = ρ/ρ_k``.
Gradient flow in the raw coordinates becomes, in the polar ones, ``ṡ = −g^{ss} ∂L/∂s`` and
``V̇ = −g^{θθ} S ∂L/∂V`` with ``g`` the metric pulled back by the embedding.
"""

from __future__ import annotations

import dataclasses
import functools

import sympy as sp

from .._errors import FlowsimError
from ._regime import Regime
from ._symbols import LOSSES, G_n, N, f, f_n, lam, n_idx, rho, rho_rest, s, s_j, t, theta, u, y, y_n


@dataclasses.dataclass(frozen=True)
class Derivation:
    """What the symbolic layer hands to the compiler and to users (all sympy expressions).

    ``weight(rho, f, y)`` is ``∂ℓ/∂f`` per sample (the VJP weights); the scale equation is
    ``Σ_n scale_sample(rho, rho_k, f_n, y_n) + scale_reg(rho_k, λ)``; the direction equation is
    ``V̇_k = −direction_factor(rho_k) · S_k Σ_n weight_n ∂f_n/∂V_k``.
    """

    weight: sp.Expr
    scale_sample: sp.Expr
    scale_reg: sp.Expr
    direction_factor: sp.Expr
    scale_factor: sp.Expr
    equations: dict
    invariant: tuple | None
    relaxation_rate: sp.Expr
    singular_without_decay: bool


def _metric_factors(regime: Regime):
    """Inverse-metric factors ``(g^{ss}, g^{θθ})`` of the layer embedding, checked to be orthogonal."""
    coords = sp.Matrix(regime.embedding(s, theta))
    if regime.per_layer:
        J = coords.jacobian([s, theta])
        g = sp.simplify(J.T * J)
        if sp.simplify(g[0, 1]) != 0:
            raise FlowsimError(f"model {regime.name!r}: scale and direction are not orthogonal in its embedding")
        return sp.simplify(1 / g[0, 0]), sp.simplify(1 / g[1, 1])
    J = coords.jacobian([theta])
    return sp.Integer(1), sp.simplify(1 / (J.T * J)[0, 0])


@functools.lru_cache(maxsize=64)
def derive(regime: Regime, loss: str) -> Derivation:
    """Derive the flow of `regime` under `loss` (cached: sympy work happens once per pair)."""
    ell = LOSSES[loss]
    m_s, m_theta = _metric_factors(regime)
    sample = ell.subs(u, rho * f)
    weight = sp.simplify(sp.diff(sample, f))
    if regime.per_layer:
        # ρ = ρ_k · ρ_rest, differentiate in ρ_k, then put ρ back: uses ∂ρ/∂ρ_k = ρ/ρ_k.
        sample_k = ell.subs(u, s * rho_rest * f)
        dsample = sp.diff(sample_k, s).subs(rho_rest, rho / s)
        scale_sample = sp.simplify(-m_s * dsample)
        scale_reg = sp.simplify(-m_s * sp.diff(regime.regularizer(s, lam), s))
    else:
        scale_sample = sp.simplify(-m_s * sp.diff(sample, rho))
        scale_reg = sp.simplify(-m_s * sp.diff(regime.regularizer(rho, lam), rho))

    # Equations for display, with the sum over samples written out.
    per_n = {f: f_n[n_idx], y: y_n[n_idx]}
    scale_var = s if regime.per_layer else rho
    S_k = sp.Function("S_k")
    equations = {
        "scale": sp.Eq(
            sp.Derivative(sp.Function(scale_var.name)(t), t),
            sp.Sum(scale_sample.subs(per_n), (n_idx, 1, N)) + scale_reg,
        ),
        "direction": sp.Eq(
            sp.Derivative(sp.Function("V_k")(t), t),
            -m_theta * S_k(sp.Sum(weight.subs(per_n) * G_n[n_idx], (n_idx, 1, N))),
        ),
        "weight": sp.Eq(sp.Symbol("w_n"), weight.subs(per_n)),
    }

    # Layer balance: d/dt (ρ_k² − ρ_j²) in closed form; an invariant if it is a multiple of the quantity.
    invariant = None
    if regime.per_layer:
        rate_k = 2 * s * (scale_sample + scale_reg)  # d/dt ρ_k², per sample (the sum is linear)
        rate_j = rate_k.subs(s, s_j)
        quantity = s**2 - s_j**2
        ratio = sp.simplify((rate_k - rate_j) / quantity)
        if not ratio.has(s) and not ratio.has(s_j) and not ratio.has(f) and not ratio.has(rho):
            invariant = (quantity, ratio)  # d/dt quantity = ratio · quantity

    # Relaxation rate of the scale with V fixed: −∂(scale equation)/∂(scale), ρ = ρ_k ρ_rest when per-layer.
    if regime.per_layer:
        full = (scale_sample + scale_reg).subs(rho, s * rho_rest)
        relaxation_rate = sp.simplify(-sp.diff(full, s).subs(rho_rest, rho / s))
    else:
        relaxation_rate = sp.simplify(-sp.diff(scale_sample + scale_reg, rho))

    # Singular without weight decay: at interpolation (u = y for every sample) does the whole field vanish
    # for every V? Then the equilibria contain the interpolating manifold {ρ f(V) = y}: a continuum, and
    # the Jacobian there has a null space.
    at_interp = {f: y / rho, lam: 0}
    vanish = all(sp.simplify(e.subs(at_interp).subs(y**2, 1)) == 0 for e in (weight, scale_sample + scale_reg))
    return Derivation(
        weight=weight,
        scale_sample=scale_sample,
        scale_reg=scale_reg,
        direction_factor=m_theta,
        scale_factor=m_s,
        equations=equations,
        invariant=invariant,
        relaxation_rate=relaxation_rate,
        singular_without_decay=vanish,
    )
