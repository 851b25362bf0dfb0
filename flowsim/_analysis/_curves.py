"""Curves in the state plane solved in closed form: the factors of the summed field and their branches."""

from __future__ import annotations

import dataclasses

import numpy as np
import sympy as sp

from .. import _symbolic as sym


@dataclasses.dataclass(frozen=True)
class Curve:
    """A curve in the state plane given symbolically as ``coords[index] = expr(coords[1 − index])``."""

    index: int
    expr: sp.Expr  # in the other coordinate (moments substituted)
    fn: object = dataclasses.field(repr=False, compare=False)

    def points(self, domain, n: int = 801) -> np.ndarray:
        """Points of the curve, shape (n, 2) in state order; NaN outside `domain` (breaks the line)."""
        other = 1 - self.index
        lo, hi = domain[other]
        s = np.linspace(lo, hi, n)
        with np.errstate(all="ignore"):
            v = np.asarray(self.fn(s), dtype=complex) * np.ones_like(s)
        real = np.abs(v.imag) <= 1e-9 * (1 + np.abs(v.real))
        v = np.where(real, v.real, np.nan)
        lo_i, hi_i = domain[self.index]
        pad = 1e-9 * (hi_i - lo_i)
        with np.errstate(invalid="ignore"):
            v = np.where((v >= lo_i - pad) & (v <= hi_i + pad), v, np.nan)
        pts = np.empty((n, 2))
        pts[:, self.index], pts[:, other] = v, s
        return pts


def structure(red):
    """The factors (involving the state) of each summed component, with λ exact and the moments symbolic, or
    ``None`` when the loss is not polynomial in the data (then nothing is solved in closed form)."""

    def compute():
        if red.kernel.summed is None:
            return None
        lam = sp.Rational(red.lam) if red.lam != 0 else sp.Integer(0)
        try:
            return [factors(red, sp.expand(e.subs(sym.lam, lam))) for e in red.kernel.summed]
        except (sp.PolynomialError, NotImplementedError):
            return None

    return red._memo("structure", compute)


def factors(red, expr):
    """The irreducible factors of `expr` that involve the state coordinates."""
    coeff, facs = sp.factor_list(expr)
    return [f for f, _ in facs if f.has(*red.kernel.coords)]


def solve_factor(red, factor):
    """Branches ``coords[i] = g(other)`` of ``factor = 0`` (moments substituted), or ``None``."""
    c = red.kernel.coords
    _, ay = red.plot_axes
    order = [ay, 1 - ay]
    for i in order:
        v = c[i]
        if not factor.has(v):
            continue
        try:
            if sp.Poly(factor, v).degree() > 2:
                continue
            sols = sp.solve(factor, v, dict=False)
        except (sp.PolynomialError, NotImplementedError, TypeError):
            continue
        if not sols or any(s.has(v) for s in sols):
            continue
        other = c[1 - i]
        out = []
        for s_ in sols:
            s_ = s_.subs(red.moment_values)
            fn = sp.lambdify([other], s_, modules=[{"sqrt": np.emath.sqrt}, "numpy"])
            out.append(Curve(i, s_, fn))
        return tuple(out)
    return None


def curve_points(red, curve: Curve, components=(0, 1), domain=None, n: int = 1201) -> np.ndarray:
    """Points of a solved `curve` inside `domain` (state order, NaN elsewhere), each checked to make the
    field's `components` vanish to 1e-7 of ``red.field_scale`` (drops round-off such as cancellation near a
    removable singularity of the closed form)."""
    dom = domain or red.default_domain()
    pts = curve.points(dom, n)
    ok = np.all(np.isfinite(pts), axis=1)
    if ok.any():
        F = red.field(pts[ok])[:, list(components)]
        bad = np.max(np.abs(F), axis=1) > 1e-7 * red.field_scale(dom)
        idx = np.flatnonzero(ok)[bad]
        pts[idx] = np.nan
    return pts
