"""Equilibria of a planar reduction: isolated ones by Newton root finding, classified from the Jacobian, and
continua of equilibria (symbolic common factors of both components, or many degenerate roots)."""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
import sympy as sp

from ._classify import classify, transverse
from ._curves import curve_points, solve_factor, structure
from ._vmapped import newton_fn


@dataclasses.dataclass(frozen=True)
class Equilibrium:
    """An isolated equilibrium of a reduced model.

    Fields: `point` (state coordinates, shape (2,)), `eigenvalues` (of the Jacobian there, complex, shape
    (2,)), `kind` (``"stable node"``, ``"unstable node"``, ``"saddle"``, ``"stable focus"``,
    ``"unstable focus"``, ``"center"`` or ``"degenerate"``, the last when an eigenvalue vanishes).
    """

    point: np.ndarray
    eigenvalues: np.ndarray
    kind: str


@dataclasses.dataclass(frozen=True)
class Continuum:
    """A continuum of equilibria (a curve on which the whole field vanishes).

    Found symbolically as a factor common to both components (``method="symbolic"``: `equation` = 0, solved
    as `branches`, data-independent, e.g. the λ = 0 hyperbola of the chain), or numerically as many
    degenerate roots (``method="numeric"``: `equation` is ``None`` and `branches` empty; this catches
    data-specific continua, e.g. interpolable data at λ = 0).

    Fields: `equation`, `branches` ([`flowsim.plot.Curve`][flowsim.plot.Curve]), `kind` (``"degenerate"``: the Jacobian
    has a zero eigenvalue along the curve), `transverse` (``"attracting"`` or ``"repelling"``: the sign of the other
    eigenvalue at the sampled points, or ``"mixed"``), `samples` (points on the curve inside the domain, in state order)
    and their `eigenvalues`, `method`.
    """

    equation: sp.Expr | None
    branches: tuple
    kind: str
    transverse: str
    samples: np.ndarray
    eigenvalues: np.ndarray
    method: str = "symbolic"


def domain_key(domain):
    """A hashable form of `domain` (``None`` for the default), for the per-reduction memo."""
    if domain is None:
        return None
    return tuple(tuple(float(v) for v in pair) for pair in domain)


def continua(red, domain=None, n_samples: int = 9) -> tuple[Continuum, ...]:
    """Continua of equilibria of `red` in `domain`, symbolic (common factors) and numeric (many degenerate
    roots).

    **Returns:** a tuple of [`flowsim.plot.Continuum`][flowsim.plot.Continuum] (empty when the equilibria are isolated).
    """
    return red._memo(("continua", domain_key(domain), n_samples), lambda: _continua(red, domain, n_samples))


def _on_symbolic(red, conts, z, width):
    """Mask of the points `z` lying on one of the symbolic continua (distance via |g| / |∇g|)."""
    keep = np.zeros(len(z), bool)
    for c in conts:
        if c.equation is None:
            continue
        fn = sp.lambdify([red.kernel.coords], c.equation, "numpy")
        grad = [sp.lambdify([red.kernel.coords], sp.diff(c.equation, v), "numpy") for v in red.kernel.coords]
        for k, p in enumerate(z):
            gn = math.hypot(*[float(gr(p)) for gr in grad]) + 1e-300
            if abs(float(fn(p))) / gn <= 1e-6 * float(np.max(width)):
                keep[k] = True
    return keep


def _continua(red, domain, n_samples):
    dom = domain or red.default_domain()
    width = np.array([dom[0][1] - dom[0][0], dom[1][1] - dom[1][0]])
    found = []
    facs = structure(red)
    for g in facs[0] if facs is not None else ():
        if not any(sp.expand(g - h) == 0 or sp.expand(g + h) == 0 for h in facs[1]):
            continue
        branches = solve_factor(red, g)
        if branches is None:
            continue
        pts = np.concatenate([curve_points(red, b, (0, 1), dom, 2001) for b in branches])
        pts = pts[np.all(np.isfinite(pts), axis=1)]
        if pts.size == 0:
            continue
        samples = pts[np.linspace(0, len(pts) - 1, n_samples).round().astype(int)]
        ev = np.linalg.eigvals(red.jacobian(samples))
        kinds = {classify(e) for e in ev}
        kind = "degenerate" if kinds == {"degenerate"} else "/".join(sorted(kinds))
        found.append(Continuum(g.subs(red.moment_values), branches, kind, transverse(ev), samples, ev))
    # Numeric: many distinct degenerate roots off the symbolic continua trace a data-specific curve.
    pts, ev = roots(red, dom)
    if len(pts):
        deg = np.array([classify(e) == "degenerate" for e in ev]) & ~_on_symbolic(red, found, pts, width)
        if deg.sum() >= 8:
            ix = red.plot_axes[0]
            order = np.argsort(pts[deg][:, ix])
            found.append(
                Continuum(
                    None, (), "degenerate", transverse(ev[deg]), pts[deg][order], ev[deg][order], method="numeric"
                )
            )
    return tuple(found)


def roots(red, dom, n_starts: int = 20):
    """Distinct roots of `red`'s field in `dom` by pseudo-inverse Newton from a grid, with their Jacobian
    eigenvalues."""
    return red._memo(("roots", domain_key(dom), n_starts), lambda: _roots(red, dom, n_starts))


def _roots(red, dom, n_starts):
    lo = np.array([dom[0][0], dom[1][0]])
    hi = np.array([dom[0][1], dom[1][1]])
    width = hi - lo
    g = np.stack(
        np.meshgrid(
            *[np.linspace(lo[k] - 0.05 * width[k], hi[k] + 0.05 * width[k], n_starts) for k in range(2)], indexing="ij"
        ),
        -1,
    ).reshape(-1, 2)
    fscale = red.field_scale(dom)
    newton = newton_fn(red.kernel)
    z, _ = newton(jnp.asarray(g), red.params, jnp.asarray(0.25 * width))
    z, Fz = newton(z, red.params, jnp.asarray(0.25 * width))  # polish
    z, Fz = np.asarray(z), np.asarray(Fz)
    good = np.all(np.isfinite(z), axis=1) & np.all(np.isfinite(Fz), axis=1)
    good &= np.max(np.abs(np.where(np.isfinite(Fz), Fz, np.inf)), axis=1) <= 1e-9 * fscale
    z = red.canonical(z[good])
    tol = 1e-6 * width
    z = z[np.all((z >= lo - tol) & (z <= hi + tol), axis=1)]
    if len(z):
        # A genuine root has a finite Jacobian that does not vanish with the field; an under- or
        # overflowing loss (exp, log(1 + exp)) can fake a zero far out.
        J = red.jacobian(z)
        Jn = np.max(np.abs(J.reshape(len(z), -1)), axis=1)
        z = z[np.isfinite(Jn) & (Jn >= 1e-8 * fscale / float(np.max(width)))]
    z = np.clip(z, lo, hi)
    # Deduplicate (periodic in θ; on ρ = 0 the angle chart identifies θ with θ + π, since (ρ, θ) and
    # (−ρ, θ + π) are the same network).
    unique: list[np.ndarray] = []
    for p in z:
        if red.kind == "angle" and abs(p[0]) <= 1e-9 * width[0]:
            p = np.array([0.0, np.mod(p[1] + np.pi / 2, np.pi) - np.pi / 2])
        for q in unique:
            d = np.abs(p - q)
            if red.kind == "angle":
                d[1] = min(d[1], 2 * math.pi - d[1])
            if np.all(d <= 1e-5 * width):
                break
        else:
            unique.append(p)
    pts = np.array(unique).reshape(-1, 2)
    ev = np.linalg.eigvals(red.jacobian(pts)) if len(pts) else np.zeros((0, 2), complex)
    return pts, ev


def equilibria(red, domain=None, n_starts: int = 20) -> tuple[Equilibrium, ...]:
    """Isolated equilibria of `red` in `domain`, by Newton root finding from a grid, classified from the
    Jacobian.

    Points on a `continua` curve are not listed here. Newton uses the pseudo-inverse of the Jacobian,
    so it also converges where the Jacobian is singular.

    **Arguments:**

    - `red`: a [`flowsim.plot.Reduced2D`][flowsim.plot.Reduced2D].
    - `domain`: ``((lo, hi), (lo, hi))`` in state order; default ``red.default_domain()``.
    - `n_starts`: Newton starts per axis.

    **Returns:** a tuple of [`flowsim.plot.Equilibrium`][flowsim.plot.Equilibrium], sorted by their coordinates.
    """
    dom = domain or red.default_domain()
    width = np.array([dom[0][1] - dom[0][0], dom[1][1] - dom[1][0]])
    pts, ev = roots(red, dom, n_starts)
    conts = continua(red, domain)
    off = ~_on_symbolic(red, conts, pts, width)
    for c in conts:
        if c.method == "numeric":
            off &= ~np.array([np.any(np.all(np.abs(c.samples - p) <= 1e-12 * width, axis=1)) for p in pts])
    out = [Equilibrium(p, e, classify(e)) for p, e, k in zip(pts, ev, off) if k]
    return tuple(sorted(out, key=lambda q: tuple(q.point)))


def time_scale(red, equilibria=None, continua=None) -> float:
    """A time by which trajectories of `red` have settled: 10 over the slowest nonzero rate at the equilibria."""
    eq = red.equilibria() if equilibria is None else equilibria
    co = red.continua() if continua is None else continua
    rates = [abs(e.real) for q in eq for e in q.eigenvalues]
    rates += [abs(e.real) for c in co for ev in c.eigenvalues for e in ev]
    rates = [r for r in rates if r > 1e-9 * max(rates + [1e-300])]
    if not rates:
        return 10.0
    return 10.0 / min(rates)
