"""Reduced two-dimensional models, derived from the symbolic regimes, for phase portraits.

Two reductions in which a full flowsim model is *exactly* two-dimensional:

- ``"angle"`` (shared-scale models such as ``normalized``): one linear layer on 2-D inputs,
  ``f(V; x) = V·x`` with ``V = (cos θ, sin θ)``. State ``(ρ, θ)``. The direction equation
  ``V̇ = −m_θ S Σ_n w_n ∂f_n/∂V`` becomes ``θ̇ = −m_θ Σ_n w_n ∂f_n/∂θ``, because ``S`` projects onto the
  tangent ``e_θ = ∂V/∂θ`` of the circle.
- ``"chain"`` (per-layer models such as ``unnormalized`` and ``weightnorm``): the two-layer scalar chain
  ``f(x) = w_2 w_1 x`` on 1-D inputs. A 1×1 layer has the unit "sphere" ``{−1, +1}``: its direction
  ``V_k = sign w_k`` has no tangent space, so ``V̇_k = 0`` and only the scales move. The state is the pair of
  *signed* scales ``(ρ_1, ρ_2) = (V_1 |w_1|, V_2 |w_2|)``: each open quadrant is one choice of
  ``(V_1, V_2)``, in which the polar equations hold with ``f_n = V_1 V_2 x_n``. The derivation checks
  symbolically that the four quadrants' fields are reflections of one polynomial field, which therefore
  continues analytically across the axes ``ρ_k = 0`` (where the polar coordinates are singular and a layer
  changes sign). If a regime failed that check, only the positive quadrant would be used.

Nothing is typed by hand: the per-sample equations come from the model's `Derivation`
(``weight``, ``scale_sample``, ``scale_reg``, ``direction_factor``) with the 2-D parametrization substituted.
Sums over the data are written with moments ``M_{ijk} = Σ_n x_{n1}^i x_{n2}^j y_n^k`` when the
per-sample equations are polynomial in the data (the square loss), which gives closed-form nullclines and
a data-independent compiled field; other losses are summed sample by sample and their nullclines contoured.
"""

from __future__ import annotations

import dataclasses
import functools

import jax.numpy as jnp
import sympy as sp

from .. import _symbolic as sym

KINDS = ("angle", "chain")

# Symbols of the reduced states and of one sample's data.
_rho1, _rho2 = sp.symbols("rho_1 rho_2", real=True)
_x1, _x2, _xs = sp.symbols("x_1 x_2 x", real=True)


@dataclasses.dataclass(frozen=True, eq=False)
class Kernel:
    """The planar field of one (regime, loss), symbolic and lambdified (build with `kernel`)."""

    kind: str
    coords: tuple  # the two state symbols, in state order
    names: tuple  # their names ("rho", "theta") / ("rho_1", "rho_2")
    labels: tuple  # LaTeX labels
    data_syms: tuple  # symbols of one sample: inputs then the label
    per_sample: tuple  # two sympy expressions: one sample's contribution to each component
    reg: tuple  # two sympy expressions: the regularizer's contribution
    summed: tuple | None  # two expressions in coords, λ and the moments (None: not polynomial in data)
    moments: tuple  # the moment symbols, in order
    powers: tuple  # their exponents on data_syms
    signed: bool  # chain: the field continues across the axes (all four quadrants)
    field_fn: object  # jax: (z1, z2, lam, *moments) -> [F1, F2]   or   (z1, z2, lam, *data) summed
    reg_fn: object


def _aggregate(exprs, data_syms):
    """Σ_n of per-sample expressions as polynomials in the moments (None when not polynomial in the data)."""
    totals, used = [], {}
    for expr in exprs:
        expr = sp.expand(expr)
        try:
            poly = sp.Poly(expr, *data_syms)
        except sp.PolynomialError:
            return None
        if any(c.has(*data_syms) for c in poly.coeffs()):
            return None
        total = sp.Integer(0)
        for monom, coeff in poly.terms():
            monom = tuple(monom[:-1]) + (monom[-1] % 2,)  # labels are ±1: y² = 1
            if monom not in used:
                used[monom] = sp.Symbol("M_{" + ",".join(str(p) for p in monom) + "}", real=True)
            total += coeff * used[monom]
        totals.append(sp.simplify(total))
    return tuple(totals), tuple(used.values()), tuple(used.keys())


@functools.lru_cache(maxsize=32)
def kernel(regime: sym.Regime, loss: str) -> Kernel:
    d = sym.derive(regime, loss)
    if regime.per_layer:
        kind = "chain"
        coords, names = (_rho1, _rho2), ("rho_1", "rho_2")
        labels = (r"$\rho_1$", r"$\rho_2$")
        data_syms = (_xs, sym.y)

        def quadrant(s1, s2):
            # Polar equations in the quadrant V = (s1, s2), written for the signed scales w_k = s_k ρ_k.
            w1, w2 = coords
            r1, r2 = s1 * w1, s2 * w2
            base = {sym.rho: r1 * r2, sym.f: s1 * s2 * _xs}
            per = tuple(
                sp.cancel(sk * d.scale_sample.subs({**base, sym.s: rk}, simultaneous=True))
                for sk, rk in ((s1, r1), (s2, r2))
            )
            reg = tuple(sp.cancel(sk * d.scale_reg.subs(sym.s, rk)) for sk, rk in ((s1, r1), (s2, r2)))
            return per, reg

        per_sample, reg = quadrant(1, 1)
        signed = all(
            sp.simplify(a - b) == 0
            for s1, s2 in ((-1, 1), (1, -1), (-1, -1))
            for a, b in zip(sum(quadrant(s1, s2), ()), per_sample + reg)
        )
        # ... and stays finite on the axes ρ_k = 0, where the polar chart is singular.
        signed = signed and not any(
            sp.simplify(sp.denom(sp.together(e)).subs(c, 0)) == 0 for e in per_sample + reg for c in coords
        )
    else:
        kind = "angle"
        coords, names = (sym.rho, sym.theta), ("rho", "theta")
        labels = (r"$\rho$", r"$\theta$")
        data_syms = (_x1, _x2, sym.y)
        f_expr = _x1 * sp.cos(sym.theta) + _x2 * sp.sin(sym.theta)
        rho_dot = d.scale_sample.subs(sym.f, f_expr)
        theta_dot = -d.direction_factor.subs(sym.s, sym.rho) * d.weight.subs(sym.f, f_expr) * sp.diff(f_expr, sym.theta)
        per_sample = (sp.simplify(rho_dot), sp.simplify(theta_dot))
        reg = (d.scale_reg, sp.Integer(0))
        signed = True
    agg = _aggregate(per_sample, data_syms)
    mods = [{"cosh": jnp.cosh}, jnp]
    if agg is not None:
        totals, moments, powers = agg
        summed = tuple(sp.simplify(t + r) for t, r in zip(totals, reg))
        field_fn = sp.lambdify([*coords, sym.lam, *moments], list(summed), modules=mods)
    else:
        summed, moments, powers = None, (), ()
        field_fn = sp.lambdify([*coords, sym.lam, *data_syms], list(per_sample), modules=mods)
    reg_fn = sp.lambdify([*coords, sym.lam], list(reg), modules=mods)
    return Kernel(
        kind, coords, names, labels, data_syms, per_sample, reg, summed, moments, powers, signed, field_fn, reg_fn
    )


def field(kernel: Kernel, z, params):
    """The reduced field at one state ``z`` (shape (2,)); `params` = (λ, moments) or (λ, data columns)."""
    lam, arrays = params
    if kernel.summed is not None:
        out = kernel.field_fn(z[0], z[1], lam, *[arrays[i] for i in range(len(kernel.moments))])
        return jnp.stack([jnp.asarray(o, dtype=jnp.float64) for o in out])
    per = kernel.field_fn(z[0], z[1], lam, *arrays)
    reg = kernel.reg_fn(z[0], z[1], lam)
    n = arrays[0].shape[0]
    return jnp.stack([jnp.sum(jnp.broadcast_to(p, (n,))) + r for p, r in zip(per, reg)])
