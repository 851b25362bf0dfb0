"""Closed forms in the data aggregates ``M_{a,b} = Σ_n f_n^a y_n^b``: sums over samples and the scale ρ_eq."""

from __future__ import annotations

import sympy as sp

from ._derive import Derivation
from ._symbols import N, f, rho, s, y


def aggregate(expr: sp.Expr):
    """Write ``Σ_n expr(f_n, y_n)`` with aggregates ``M_{a,b} = Σ_n f_n^a y_n^b`` (y² = 1), if polynomial.

    **Returns:** ``(sum_expr, {symbol: (a, b)})`` or ``None`` when `expr` is not polynomial in ``f, y``.
    """
    expr = sp.expand(expr)
    try:
        poly = sp.Poly(expr, f, y)
    except sp.PolynomialError:
        return None
    if not all(c.is_polynomial(f, y) is not False and not c.has(f, y) for c in poly.coeffs()):
        return None
    total, used = sp.Integer(0), {}
    for (a, b), c in zip(poly.monoms(), poly.coeffs()):
        if a == 0 and b % 2 == 0:
            total += c * N  # Σ_n 1 = N
            continue
        M = sp.Symbol(f"M_{a}{b % 2}")
        used[M] = (a, b % 2)
        total += c * M
    return sp.simplify(total), used


def rho_equilibrium(deriv: Derivation, per_layer: bool, depth: int):
    """The scale ρ_eq at which the scale equation vanishes with V fixed (balanced layers when per-layer).

    **Returns:** ``(expr, aggregates)`` for a closed form in ``M_{a,b}`` and λ, or ``None`` when there is
    no closed form (then the compiled model finds the root numerically).
    """
    if per_layer:
        # ρ_k ṡ_k with every ρ_k = ρ^{1/L}.
        eq = sp.expand((deriv.scale_sample * s).subs(s, rho ** sp.Rational(1, depth)))
        reg = sp.expand((deriv.scale_reg * s).subs(s, rho ** sp.Rational(1, depth)))
    else:
        eq, reg = deriv.scale_sample, deriv.scale_reg
    agg = aggregate(eq)
    if agg is None:
        return None
    total, used = agg
    total = sp.expand(total + reg)
    if per_layer:
        total = sp.expand(total / rho)  # drop the trivial root ρ = 0
    try:
        poly = sp.Poly(total, rho)
    except sp.PolynomialError:
        return None
    if poly.degree() != 1:
        return None
    a1, a0 = poly.all_coeffs()
    return sp.simplify(-a0 / a1), used
