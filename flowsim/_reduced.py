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

Nothing is typed by hand: the per-sample equations come from the model's :class:`Derivation`
(``weight``, ``scale_sample``, ``scale_reg``, ``direction_factor``) with the 2-D parametrization substituted.
Sums over the data are written with moments ``M_{ijk} = Σ_n x_{n1}^i x_{n2}^j y_n^k`` when the
per-sample equations are polynomial in the data (the square loss), which gives closed-form nullclines and
a data-independent compiled field; other losses are summed sample by sample and their nullclines contoured.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp

from . import _symbolic as sym
from ._data import Dataset
from ._errors import fail

KINDS = ("angle", "chain")

# Symbols of the reduced states and of one sample's data.
_rho1, _rho2 = sp.symbols("rho_1 rho_2", real=True)
_x1, _x2, _xs = sp.symbols("x_1 x_2 x", real=True)


# ------------------------------------------------------------------------------------------------
# The symbolic kernel: one per (regime, loss)
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class _Kernel:
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


@functools.lru_cache(maxsize=None)
def _kernel(regime: sym.Regime, loss: str) -> _Kernel:
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
    return _Kernel(kind, coords, names, labels, data_syms, per_sample, reg, summed, moments, powers, signed,
                   field_fn, reg_fn)


def _field(kernel: _Kernel, z, params):
    """The reduced field at one state ``z`` (shape (2,)); `params` = (λ, moments) or (λ, data columns)."""
    lam, arrays = params
    if kernel.summed is not None:
        out = kernel.field_fn(z[0], z[1], lam, *[arrays[i] for i in range(len(kernel.moments))])
        return jnp.stack([jnp.asarray(o, dtype=jnp.float64) for o in out])
    per = kernel.field_fn(z[0], z[1], lam, *arrays)
    reg = kernel.reg_fn(z[0], z[1], lam)
    n = arrays[0].shape[0]
    return jnp.stack([jnp.sum(jnp.broadcast_to(p, (n,))) + r for p, r in zip(per, reg)])


# ------------------------------------------------------------------------------------------------
# Compiled, vmapped numerics (cached per kernel; jit caches per shape)
# ------------------------------------------------------------------------------------------------
def _padded(fn, z: np.ndarray, params) -> np.ndarray:
    """Apply a vmapped, jitted `fn` to a batch padded to a power of two (few shapes, few compilations)."""
    m = len(z)
    size = max(8, 1 << max(0, (m - 1).bit_length()))
    zp = np.zeros((size, 2))
    zp[:m] = z
    return np.asarray(fn(jnp.asarray(zp), params))[:m]


@functools.lru_cache(maxsize=None)
def _grid_fn(kernel: _Kernel):
    return jax.jit(jax.vmap(lambda z, p: _field(kernel, z, p), in_axes=(0, None)))


@functools.lru_cache(maxsize=None)
def _jac_fn(kernel: _Kernel):
    return jax.jit(jax.vmap(jax.jacfwd(lambda z, p: _field(kernel, z, p)), in_axes=(0, None)))


@functools.lru_cache(maxsize=None)
def _newton_fn(kernel: _Kernel, iters: int = 80):
    F = lambda z, p: _field(kernel, z, p)  # noqa: E731
    J = jax.jacfwd(F)

    def solve(z, p, max_step):
        def body(_, z):
            Fz, Jz = F(z, p), J(z, p)
            u, s, vt = jnp.linalg.svd(Jz)
            keep = s > 1e-12 * s[0]
            s_inv = jnp.where(keep, 1.0 / jnp.where(keep, s, 1.0), 0.0)
            dz = vt.T @ (s_inv * (u.T @ Fz))  # pseudo-inverse step: converges onto continua too
            scale = jnp.minimum(1.0, jnp.min(max_step / jnp.maximum(jnp.abs(dz), 1e-300)))
            znew = z - scale * dz
            return jnp.where(jnp.all(jnp.isfinite(znew)), znew, z)

        z = jax.lax.fori_loop(0, iters, body, z)
        return z, F(z, p)

    return jax.jit(jax.vmap(solve, in_axes=(0, None, None)))


@functools.lru_cache(maxsize=None)
def _ensemble_fn(kernel: _Kernel, rtol: float, atol: float, max_steps: int):
    """One compiled call integrating a whole ensemble of initial conditions (vmapped diffrax Tsit5)."""
    term = diffrax.ODETerm(lambda t, z, p: _field(kernel, z, p))
    solver = diffrax.Tsit5()
    controller = diffrax.PIDController(rtol=rtol, atol=atol)

    def one(z0, ts, p):
        sol = diffrax.diffeqsolve(
            term, solver, ts[0], ts[-1], None, z0, args=p,
            saveat=diffrax.SaveAt(ts=ts), stepsize_controller=controller, max_steps=max_steps, throw=False,
        )
        return sol.ys, sol.result == diffrax.RESULTS.successful, sol.stats["num_steps"]

    return jax.jit(jax.vmap(one, in_axes=(0, None, None)))


# ------------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------------
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


@dataclasses.dataclass(frozen=True)
class Continuum:
    """A continuum of equilibria (a curve on which the whole field vanishes).

    Found symbolically as a factor common to both components (``method="symbolic"``: `equation` = 0, solved
    as `branches`, data-independent, e.g. the λ = 0 hyperbola of the chain), or numerically as many
    degenerate roots (``method="numeric"``: `equation` is ``None`` and `branches` empty; this catches
    data-specific continua, e.g. interpolable data at λ = 0).

    Fields: `equation`, `branches` (:class:`Curve`), `kind` (``"degenerate"``: the Jacobian has a zero
    eigenvalue along the curve), `transverse` (``"attracting"`` or ``"repelling"``: the sign of the other
    eigenvalue at the sampled points, or ``"mixed"``), `samples` (points on the curve inside the domain, in
    state order) and their `eigenvalues`, `method`.
    """

    equation: sp.Expr | None
    branches: tuple
    kind: str
    transverse: str
    samples: np.ndarray
    eigenvalues: np.ndarray
    method: str = "symbolic"


@dataclasses.dataclass(frozen=True)
class Nullcline:
    """Where one component of the field vanishes: ``method`` ``"symbolic"`` (solved `branches`) or ``"contour"``."""

    component: int
    method: str
    branches: tuple


def classify(eigenvalues, tol: float = 1e-7) -> str:
    """The kind of a planar equilibrium from its Jacobian's eigenvalues (`tol` relative to the largest)."""
    ev = np.asarray(eigenvalues, dtype=complex)
    scale = max(float(np.max(np.abs(ev))), 1e-300)
    re, im = ev.real / scale, ev.imag / scale
    if np.min(np.abs(ev)) / scale <= tol:
        return "degenerate"
    if np.max(np.abs(im)) > tol:
        if np.all(np.abs(re) <= tol):
            return "center"
        return "stable focus" if re[0] < 0 else "unstable focus"
    if np.all(re < 0):
        return "stable node"
    if np.all(re > 0):
        return "unstable node"
    return "saddle"


# ------------------------------------------------------------------------------------------------
# The reduced model
# ------------------------------------------------------------------------------------------------
def default_data(kind: str) -> Dataset:
    """The small default data set of a reduction.

    **Arguments:**

    - `kind`: ``"angle"`` (24 unit-norm points in 2-D, two Gaussian clusters) or ``"chain"`` (16 scalar
      inputs, clusters at ±1 with noise 0.5, not normalized).

    **Returns:** a :class:`flowsim.Dataset`.
    """
    from . import datasets

    if kind == "angle":
        return datasets.gaussian_clusters(n=24, dim=2, seed=0, separation=2.0, noise=1.0)
    if kind == "chain":
        return datasets.gaussian_clusters(n=16, dim=1, seed=0, separation=2.0, noise=0.5, normalize=False)
    raise fail("kind", kind, f"one of {KINDS}")


class Reduced2D:
    """A flowsim model reduced exactly to a planar system, on a given data set.

    Build with :func:`flowsim.plot.reduced_model`. Shared-scale models (``normalized``) reduce to one
    linear layer on 2-D inputs, state ``(ρ, θ)`` with ``V = (cos θ, sin θ)``; per-layer models
    (``unnormalized``, ``weightnorm``) reduce to the scalar two-layer chain, state the signed scales
    ``(ρ_1, ρ_2)``.

    **Arguments:**

    - `model`: a :class:`flowsim.Model` (its regime, λ and loss are used).
    - `data`: a :class:`flowsim.Dataset` of dimension 2 (``angle``) or 1 (``chain``); ``None`` for
      :func:`default_data`.
    """

    def __init__(self, model, data: Dataset | None = None):
        from ._model import Model

        if not isinstance(model, Model):
            raise fail("model", type(model).__name__, "a flowsim.Model (from fs.load_model)")
        self.model = model
        self.kernel = _kernel(model.regime, model.loss)
        self.kind = self.kernel.kind
        need = 2 if self.kind == "angle" else 1
        if data is None:
            data = default_data(self.kind)
        if not isinstance(data, Dataset):
            raise fail("data", type(data).__name__, "a flowsim.Dataset or None")
        if data.dim != need:
            what = "one linear layer on 2-D inputs" if need == 2 else "the scalar two-layer chain on 1-D inputs"
            raise fail("data", f"inputs of dimension {data.dim}",
                       f"dimension {need}: the {model.name!r} model reduces to {what}")
        self.data = data
        self.lam = float(model.lam)
        cols = [np.asarray(data.x[:, j]) for j in range(data.dim)] + [np.asarray(data.y)]
        if self.kernel.summed is not None:
            vals = [float(np.sum(np.prod([c**p for c, p in zip(cols, pw)], axis=0))) for pw in self.kernel.powers]
            self.moment_values = dict(zip(self.kernel.moments, vals))
            arrays = jnp.asarray(vals, dtype=jnp.float64) if vals else jnp.zeros((0,))
        else:
            self.moment_values = {}
            arrays = tuple(jnp.asarray(c) for c in cols)
        self.params = (jnp.asarray(self.lam, dtype=jnp.float64), arrays)
        self._cache: dict = {}

    # ---- description --------------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"Reduced2D({self.model.name!r}, kind={self.kind!r}, lam={self.lam:g}, n={self.data.n})"

    @property
    def coords(self) -> tuple[str, str]:
        """Names of the two state coordinates, in state order."""
        return self.kernel.names

    @property
    def labels(self) -> tuple[str, str]:
        """LaTeX labels of the two state coordinates."""
        return self.kernel.labels

    @property
    def plot_axes(self) -> tuple[int, int]:
        """Which state coordinate goes on the horizontal and which on the vertical axis of a portrait."""
        return (1, 0) if self.kind == "angle" else (0, 1)

    @property
    def signed(self) -> bool:
        """Chain: whether the field continues across the axes (signed scales, four quadrants)."""
        return self.kernel.signed

    @property
    def network(self):
        """The :class:`flowsim.Network` the reduction is exact for (linear activations)."""
        from ._network import Network

        return Network((2, 1), "linear") if self.kind == "angle" else Network((1, 1, 1), "linear")

    @property
    def equations(self) -> tuple:
        """The planar flow as sympy equations, sums over the data written with the moments ``M_{ijk}``.

        Falls back to the per-sample form (with an explicit ``Σ_n``) when the loss is not polynomial.
        """
        t = sym.t
        lhs = [sp.Derivative(sp.Function(str(c))(t), t) for c in self.kernel.coords]
        if self.kernel.summed is not None:
            return tuple(sp.Eq(a, b) for a, b in zip(lhs, self.kernel.summed))
        n = sym.n_idx
        xb = sp.IndexedBase("x")
        inputs = self.kernel.data_syms[:-1]
        idx = {v: (xb[n, j + 1] if len(inputs) > 1 else xb[n]) for j, v in enumerate(inputs)}
        idx[self.kernel.data_syms[-1]] = sym.y_n[n]
        return tuple(
            sp.Eq(a, sp.Sum(p.subs(idx), (n, 1, sym.N)) + r)
            for a, p, r in zip(lhs, self.kernel.per_sample, self.kernel.reg)
        )

    def latex(self) -> str:
        """The equations as a LaTeX ``aligned`` block."""
        return "\\begin{aligned}\n" + " \\\\\n".join(
            sp.latex(e).replace("=", "&=", 1) for e in self.equations
        ) + "\n\\end{aligned}"

    # ---- numerics -----------------------------------------------------------------------------
    def field(self, z) -> np.ndarray:
        """The field at states `z`, shape ``(2,)`` or ``(M, 2)``; returns the same shape."""
        z = np.asarray(z, dtype=np.float64)
        out = _padded(_grid_fn(self.kernel), z.reshape(-1, 2), self.params)
        return out[0] if z.ndim == 1 else out

    def jacobian(self, z) -> np.ndarray:
        """The Jacobian (2×2) of the field at state `z` (or a stack, shape ``(M, 2, 2)``)."""
        z = np.asarray(z, dtype=np.float64)
        out = _padded(_jac_fn(self.kernel), z.reshape(-1, 2), self.params)
        return out[0] if z.ndim == 1 else out

    def canonical(self, z) -> np.ndarray:
        """States in their canonical chart: ``angle`` maps ``(ρ<0, θ)`` to ``(−ρ, θ+π)`` and wraps θ to [−π, π)."""
        z = np.array(z, dtype=np.float64)
        if self.kind == "angle":
            with np.errstate(invalid="ignore"):
                return self._canonical_angle(z)
        return z

    @staticmethod
    def _canonical_angle(z):
        neg = z[..., 0] < 0
        z[..., 0] = np.abs(z[..., 0])
        z[..., 1] = np.mod(z[..., 1] + np.where(neg, np.pi, 0.0) + np.pi, 2 * np.pi) - np.pi
        return z

    def to_state(self, z):
        """The full :class:`flowsim.State` of :attr:`network` at reduced state `z` (scales must be nonzero)."""
        z = np.asarray(z, dtype=np.float64)
        if z.shape != (2,):
            raise fail("z", f"array of shape {z.shape}", "one reduced state of shape (2,)")
        if self.kind == "angle":
            rho, th = float(z[0]), float(z[1])
            if rho == 0:
                raise fail("z", z.tolist(), "rho != 0")
            s = 1.0 if rho > 0 else -1.0
            return self.model.state(V=[np.array([[s * math.cos(th), s * math.sin(th)]])], rho=abs(rho))
        if np.any(z == 0):
            raise fail("z", z.tolist(), "nonzero scales (the polar coordinates are singular on the axes)")
        return self.model.state(V=[np.array([[np.sign(z[0])]]), np.array([[np.sign(z[1])]])], rho_k=np.abs(z).tolist())

    def from_state(self, state) -> np.ndarray:
        """The reduced state of a full State of :attr:`network`."""
        if self.kind == "angle":
            v = np.asarray(state.V[0]).ravel()
            return np.array([float(state.rho), math.atan2(v[1], v[0])])
        signs = np.array([float(np.asarray(v).ravel()[0]) for v in state.V])
        return signs * np.asarray(state.rho_k)

    def default_domain(self) -> tuple:
        """A domain ``((lo, hi), (lo, hi))`` in state order that holds the equilibria with room to spare.

        Sized from the model's own closed-form ρ_eq over the directions (at most 4× its median over them,
        since it diverges where V is orthogonal to interpolable data); for losses without one
        (exponential, logistic, whose ρ_eq may not exist on separable data) from the square loss's
        ``Σ y f / Σ f²``, tripled.
        """
        if "domain" not in self._cache:
            self._cache["domain"] = self._default_domain()
        return self._cache["domain"]

    def _default_domain(self):
        net = self.network
        closed = self.kernel.summed is not None
        model = self.model if closed else type(self.model)(self.model.regime, 0.0, "square")
        c = model.compiled(net)
        x, y = jnp.asarray(self.data.x), jnp.asarray(self.data.y)
        if self.kind == "angle":
            th = jnp.linspace(-jnp.pi, jnp.pi, 181)
            fs_ = jnp.cos(th)[:, None] * x[None, :, 0] + jnp.sin(th)[:, None] * x[None, :, 1]
            req = np.asarray(jax.vmap(lambda f: c.rho_eq(f, y, model.lam))(fs_))
        else:
            req = np.array([float(c.rho_eq(sg * x[:, 0], y, model.lam)) for sg in (1.0, -1.0)])
        req = req[np.isfinite(req) & (req > 0)]
        # ρ_eq(θ) → ∞ where V ⟂ the data (interpolable data at λ = 0): cap at 4× the median direction.
        top = min(float(np.max(req)), 4.0 * float(np.median(req))) if req.size else 1.0
        top *= 1.0 if closed else 3.0
        if self.kind == "angle":
            return ((0.0, 1.5 * top), (-math.pi, math.pi))
        R = 1.8 * math.sqrt(top)
        return ((-R, R), (-R, R)) if self.signed else ((0.0, R), (0.0, R))

    def field_scale(self, domain=None) -> float:
        """The median field magnitude over `domain` (the yardstick of the root and curve tolerances)."""
        key = ("fscale", _domain_key(domain))
        if key not in self._cache:
            dom = domain or self.default_domain()
            g = np.stack(np.meshgrid(*[np.linspace(a, b, 41) for a, b in dom], indexing="ij"), -1).reshape(-1, 2)
            self._cache[key] = float(np.median(np.abs(self.field(g)))) + 1e-300
        return self._cache[key]

    def curve_points(self, curve: Curve, components=(0, 1), domain=None, n: int = 1201) -> np.ndarray:
        """Points of a solved `curve` inside `domain` (state order, NaN elsewhere), each checked to make the
        field's `components` vanish to 1e-7 of :meth:`field_scale` (drops round-off such as cancellation
        near a removable singularity of the closed form)."""
        dom = domain or self.default_domain()
        pts = curve.points(dom, n)
        ok = np.all(np.isfinite(pts), axis=1)
        if ok.any():
            F = self.field(pts[ok])[:, list(components)]
            bad = np.max(np.abs(F), axis=1) > 1e-7 * self.field_scale(dom)
            idx = np.flatnonzero(ok)[bad]
            pts[idx] = np.nan
        return pts

    def grid(self, n: int, domain=None) -> np.ndarray:
        """`n` initial conditions on a grid of cell centres over `domain`, shape ``(n, 2)`` in state order."""
        dom = domain or self.default_domain()
        ax, ay = self.plot_axes
        nx = max(1, math.ceil(math.sqrt(n)))
        ny = max(1, math.ceil(n / nx))
        gx = dom[ax][0] + (np.arange(nx) + 0.5) * (dom[ax][1] - dom[ax][0]) / nx
        gy = dom[ay][0] + (np.arange(ny) + 0.5) * (dom[ay][1] - dom[ay][0]) / ny
        X, Y = np.meshgrid(gx, gy)
        z = np.empty((nx * ny, 2))
        z[:, ax], z[:, ay] = X.ravel(), Y.ravel()
        return z[:n]

    def integrate(self, z0, t1: float, ts=None, rtol: float = 1e-8, atol: float = 1e-10, max_steps: int = 16384):
        """Integrate an ensemble of initial conditions in one compiled, vmapped call (diffrax Tsit5).

        **Arguments:**

        - `z0`: initial states, shape ``(M, 2)`` (or ``(2,)``), state order.
        - `t1`: final time > 0.
        - `ts`: save times (increasing, from 0 to `t1`); default 0 then 299 geometrically spaced times
          from ``1e-4 t1`` to `t1`, which resolves both the fast and the slow phase.
        - `rtol`, `atol`: tolerances of the PID step-size controller.
        - `max_steps`: step limit per trajectory.

        **Returns:** ``(ts, zs, ok, steps)``: ``zs`` of shape ``(M, T, 2)`` (non-finite after a failure),
        ``ok`` (M,) whether each solve succeeded, ``steps`` (M,) accepted+rejected step counts.
        """
        z0 = np.asarray(z0, dtype=np.float64)
        single = z0.ndim == 1
        z0 = z0.reshape(-1, 2)
        if not np.all(np.isfinite(z0)):
            raise fail("z0", "non-finite entries", "finite initial states")
        if not (isinstance(t1, (int, float, np.floating, np.integer)) and math.isfinite(t1) and t1 > 0):
            raise fail("t1", t1, "a finite time > 0")
        if ts is None:
            ts = np.concatenate([[0.0], np.geomspace(1e-4 * t1, t1, 299)])
        ts = np.asarray(ts, dtype=np.float64)
        if ts.ndim != 1 or ts.size < 2 or np.any(np.diff(ts) <= 0):
            raise fail("ts", f"array of shape {ts.shape}", "an increasing 1-D array of at least 2 times")
        run = _ensemble_fn(self.kernel, float(rtol), float(atol), int(max_steps))
        m = len(z0)  # pad the batch to a power of two (repeating the first start): fewer compilations
        size = 1 << max(0, (m - 1).bit_length())
        zp = np.concatenate([z0, np.repeat(z0[:1], size - m, axis=0)])
        ys, ok, steps = run(jnp.asarray(zp), jnp.asarray(ts), self.params)
        ys, ok, steps = np.asarray(ys)[:m], np.asarray(ok)[:m], np.asarray(steps)[:m]
        if single:
            return ts, ys[0], ok[0], steps[0]
        return ts, ys, ok, steps

    # ---- structure ----------------------------------------------------------------------------
    def _numeric_summed(self):
        """The summed components with λ exact and the moments symbolic (for factoring)."""
        lam = sp.Rational(self.lam) if self.lam != 0 else sp.Integer(0)
        return [sp.expand(e.subs(sym.lam, lam)) for e in self.kernel.summed]

    def _solve_factor(self, factor):
        """Branches ``coords[i] = g(other)`` of ``factor = 0`` (moments substituted), or None."""
        c = self.kernel.coords
        _, ay = self.plot_axes
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
                s_ = s_.subs(self.moment_values)
                fn = sp.lambdify([other], s_, modules=[{"sqrt": np.emath.sqrt}, "numpy"])
                out.append(Curve(i, s_, fn))
            return tuple(out)
        return None

    def _factors(self, expr):
        coeff, facs = sp.factor_list(expr)
        return [f for f, _ in facs if f.has(*self.kernel.coords)]

    @functools.cached_property
    def _structure(self):
        if self.kernel.summed is None:
            return None
        try:
            return [self._factors(e) for e in self._numeric_summed()]
        except (sp.PolynomialError, NotImplementedError):
            return None

    def nullclines(self) -> tuple[Nullcline, Nullcline]:
        """The two nullclines, solved by sympy where it can (polynomial losses), else marked for contouring.

        **Returns:** ``(N_1, N_2)``, where ``N_i`` is the set ``F_i = 0`` (``F_i`` the i-th component).
        """
        out = []
        facs = self._structure
        for i in range(2):
            branches = []
            ok = facs is not None
            if ok:
                for fac in facs[i]:
                    b = self._solve_factor(fac)
                    if b is None:
                        ok = False
                        break
                    branches.extend(b)
            out.append(Nullcline(i, "symbolic", tuple(branches)) if ok else Nullcline(i, "contour", ()))
        return tuple(out)

    def continua(self, domain=None, n_samples: int = 9) -> tuple[Continuum, ...]:
        """Continua of equilibria in `domain`, symbolic (common factors) and numeric (many degenerate roots).

        **Returns:** a tuple of :class:`Continuum` (empty when the equilibria are isolated).
        """
        key = ("continua", _domain_key(domain), n_samples)
        if key not in self._cache:
            self._cache[key] = self._continua(domain, n_samples)
        return self._cache[key]

    def _transverse(self, ev):
        big = np.take_along_axis(ev, np.argmax(np.abs(ev), axis=1)[:, None], axis=1)[:, 0].real
        return "attracting" if np.all(big < 0) else "repelling" if np.all(big > 0) else "mixed"

    def _on_symbolic(self, conts, z, width):
        """Mask of the points `z` lying on one of the symbolic continua (distance via |g| / |∇g|)."""
        keep = np.zeros(len(z), bool)
        for c in conts:
            if c.equation is None:
                continue
            fn = sp.lambdify([self.kernel.coords], c.equation, "numpy")
            grad = [sp.lambdify([self.kernel.coords], sp.diff(c.equation, v), "numpy") for v in self.kernel.coords]
            for k, p in enumerate(z):
                gn = math.hypot(*[float(gr(p)) for gr in grad]) + 1e-300
                if abs(float(fn(p))) / gn <= 1e-6 * float(np.max(width)):
                    keep[k] = True
        return keep

    def _continua(self, domain, n_samples):
        dom = domain or self.default_domain()
        width = np.array([dom[0][1] - dom[0][0], dom[1][1] - dom[1][0]])
        found = []
        facs = self._structure
        for g in facs[0] if facs is not None else ():
            if not any(sp.expand(g - h) == 0 or sp.expand(g + h) == 0 for h in facs[1]):
                continue
            branches = self._solve_factor(g)
            if branches is None:
                continue
            pts = np.concatenate([self.curve_points(b, (0, 1), dom, 2001) for b in branches])
            pts = pts[np.all(np.isfinite(pts), axis=1)]
            if pts.size == 0:
                continue
            samples = pts[np.linspace(0, len(pts) - 1, n_samples).round().astype(int)]
            ev = np.linalg.eigvals(self.jacobian(samples))
            kinds = {classify(e) for e in ev}
            kind = "degenerate" if kinds == {"degenerate"} else "/".join(sorted(kinds))
            found.append(Continuum(g.subs(self.moment_values), branches, kind, self._transverse(ev), samples, ev))
        # Numeric: many distinct degenerate roots off the symbolic continua trace a data-specific curve.
        pts, ev = self._roots(dom)
        if len(pts):
            deg = np.array([classify(e) == "degenerate" for e in ev]) & ~self._on_symbolic(found, pts, width)
            if deg.sum() >= 8:
                ix = self.plot_axes[0]
                order = np.argsort(pts[deg][:, ix])
                found.append(Continuum(None, (), "degenerate", self._transverse(ev[deg]), pts[deg][order],
                                       ev[deg][order], method="numeric"))
        return tuple(found)

    def _roots(self, dom, n_starts: int = 20):
        """Distinct roots in `dom` by pseudo-inverse Newton from a grid, with their Jacobian eigenvalues."""
        key = ("roots", _domain_key(dom), n_starts)
        if key in self._cache:
            return self._cache[key]
        lo = np.array([dom[0][0], dom[1][0]])
        hi = np.array([dom[0][1], dom[1][1]])
        width = hi - lo
        g = np.stack(np.meshgrid(*[np.linspace(lo[k] - 0.05 * width[k], hi[k] + 0.05 * width[k], n_starts)
                                   for k in range(2)], indexing="ij"), -1).reshape(-1, 2)
        fscale = self.field_scale(dom)
        newton = _newton_fn(self.kernel)
        z, _ = newton(jnp.asarray(g), self.params, jnp.asarray(0.25 * width))
        z, Fz = newton(z, self.params, jnp.asarray(0.25 * width))  # polish
        z, Fz = np.asarray(z), np.asarray(Fz)
        good = np.all(np.isfinite(z), axis=1) & np.all(np.isfinite(Fz), axis=1)
        good &= np.max(np.abs(np.where(np.isfinite(Fz), Fz, np.inf)), axis=1) <= 1e-9 * fscale
        z = self.canonical(z[good])
        tol = 1e-6 * width
        z = z[np.all((z >= lo - tol) & (z <= hi + tol), axis=1)]
        if len(z):
            # A genuine root has a finite Jacobian that does not vanish with the field; an under- or
            # overflowing loss (exp, log(1 + exp)) can fake a zero far out.
            J = self.jacobian(z)
            Jn = np.max(np.abs(J.reshape(len(z), -1)), axis=1)
            z = z[np.isfinite(Jn) & (Jn >= 1e-8 * fscale / float(np.max(width)))]
        z = np.clip(z, lo, hi)
        # Deduplicate (periodic in θ; on ρ = 0 the angle chart identifies θ with θ + π, since (ρ, θ) and
        # (−ρ, θ + π) are the same network).
        unique: list[np.ndarray] = []
        for p in z:
            if self.kind == "angle" and abs(p[0]) <= 1e-9 * width[0]:
                p = np.array([0.0, np.mod(p[1] + np.pi / 2, np.pi) - np.pi / 2])
            for q in unique:
                d = np.abs(p - q)
                if self.kind == "angle":
                    d[1] = min(d[1], 2 * math.pi - d[1])
                if np.all(d <= 1e-5 * width):
                    break
            else:
                unique.append(p)
        pts = np.array(unique).reshape(-1, 2)
        ev = np.linalg.eigvals(self.jacobian(pts)) if len(pts) else np.zeros((0, 2), complex)
        self._cache[key] = (pts, ev)
        return pts, ev

    def equilibria(self, domain=None, n_starts: int = 20) -> tuple[Equilibrium, ...]:
        """Isolated equilibria in `domain`, by Newton root finding from a grid, classified from the Jacobian.

        Points on a :meth:`continua` curve are not listed here. Newton uses the pseudo-inverse of the
        Jacobian, so it also converges where the Jacobian is singular.

        **Arguments:**

        - `domain`: ``((lo, hi), (lo, hi))`` in state order; default :meth:`default_domain`.
        - `n_starts`: Newton starts per axis.

        **Returns:** a tuple of :class:`Equilibrium`, sorted by their coordinates.
        """
        dom = domain or self.default_domain()
        width = np.array([dom[0][1] - dom[0][0], dom[1][1] - dom[1][0]])
        pts, ev = self._roots(dom, n_starts)
        conts = self.continua(domain)
        off = ~self._on_symbolic(conts, pts, width)
        for c in conts:
            if c.method == "numeric":
                off &= ~np.array([np.any(np.all(np.abs(c.samples - p) <= 1e-12 * width, axis=1)) for p in pts])
        out = [Equilibrium(p, e, classify(e)) for p, e, k in zip(pts, ev, off) if k]
        return tuple(sorted(out, key=lambda q: tuple(q.point)))

    def time_scale(self, equilibria=None, continua=None) -> float:
        """A time by which trajectories have settled: 10 over the slowest nonzero rate at the equilibria."""
        eq = self.equilibria() if equilibria is None else equilibria
        co = self.continua() if continua is None else continua
        rates = [abs(e.real) for q in eq for e in q.eigenvalues]
        rates += [abs(e.real) for c in co for ev in c.eigenvalues for e in ev]
        rates = [r for r in rates if r > 1e-9 * max(rates + [1e-300])]
        if not rates:
            return 10.0
        return 10.0 / min(rates)


def _domain_key(domain):
    if domain is None:
        return None
    return tuple(tuple(float(v) for v in pair) for pair in domain)


def reduced_model(model, data: Dataset | None = None) -> Reduced2D:
    """The exact planar reduction of `model` (see :class:`Reduced2D`).

    **Arguments:**

    - `model`: a :class:`flowsim.Model`. Shared-scale regimes (``normalized``) give the ``"angle"``
      reduction, state ``(ρ, θ)``; per-layer regimes (``unnormalized``, ``weightnorm``) the ``"chain"``
      reduction, state ``(ρ_1, ρ_2)``.
    - `data`: a :class:`flowsim.Dataset` of dimension 2 (angle) or 1 (chain), or ``None`` for the small
      default data set.

    **Returns:** a :class:`Reduced2D`.
    """
    return Reduced2D(model, data)


__all__ = ["Continuum", "Curve", "Equilibrium", "Nullcline", "Reduced2D", "classify", "default_data",
           "reduced_model"]
