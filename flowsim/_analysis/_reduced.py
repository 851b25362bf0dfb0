"""The reduced planar model ([`flowsim.plot.Reduced2D`][flowsim.plot.Reduced2D]): one flowsim model reduced exactly to a
planar system on given data: its field and Jacobian, charts, ensemble integration, and the small data sets of the
reductions.

The reductions themselves (which planar field, and why it is exact) are derived in
`flowsim._analysis._kernel`; equilibria, continua and nullclines live in their own modules.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp
from jaxtyping import ArrayLike

from .. import _symbolic as sym
from .._data import Dataset, gaussian_clusters
from .._errors import Checked, fail
from .._model import Model, Network, check_model
from ._curves import Curve, curve_points
from ._equilibria import Continuum, Equilibrium, continua, domain_key, equilibria, time_scale
from ._kernel import KINDS, kernel
from ._nullclines import Nullcline, nullclines
from ._vmapped import ensemble_fn, grid_fn, jac_fn, padded


def default_data(kind: str) -> Dataset:
    """The small default data set of a reduction.

    **Arguments:**

    - `kind`: ``"angle"`` (24 unit-norm points in 2-D, two Gaussian clusters) or ``"chain"`` (16 scalar
      inputs, clusters at ±1 with noise 0.5, not normalized).

    **Returns:** a [`flowsim.Dataset`][flowsim.Dataset].
    """
    if kind == "angle":
        return gaussian_clusters(n=24, dim=2, seed=0, separation=2.0, noise=1.0)
    if kind == "chain":
        return gaussian_clusters(n=16, dim=1, seed=0, separation=2.0, noise=0.5, normalize=False)
    raise fail("kind", kind, f"one of {KINDS}")


def interpolable_data() -> Dataset:
    """Two points ``x_n = y_n u`` (``u = (0.6, 0.8)``) that one linear layer interpolates exactly.

    At λ = 0 the normalized flow's equilibria then form the continuum ``ρ u·V = 1`` (the singular case).
    """
    u = np.array([0.6, 0.8])
    return Dataset(np.stack([u, -u]), np.array([1.0, -1.0]))


class Reduced2D:
    """A flowsim model reduced exactly to a planar system, on a given data set.

    Build with [`flowsim.plot.reduced_model`][flowsim.plot.reduced_model]. Shared-scale models (``normalized``) reduce
    to one linear layer on 2-D inputs, state ``(ρ, θ)`` with ``V = (cos θ, sin θ)``; per-layer models (``unnormalized``,
    ``weightnorm``) reduce to the scalar two-layer chain, state the signed scales ``(ρ_1, ρ_2)``.

    **Arguments:**

    - `model`: a [`flowsim.Model`][flowsim.Model] (its regime, λ and loss are used).
    - `data`: a [`flowsim.Dataset`][flowsim.Dataset] of dimension 2 (``angle``) or 1 (``chain``); ``None`` for
      [`flowsim.plot.default_data`][flowsim.plot.default_data].
    """

    def __init__(self, model: Checked[Model], data: Checked[Dataset | None] = None):
        check_model(model)
        self.model = model
        self.kernel = kernel(model.regime, model.loss)
        self.kind = self.kernel.kind
        need = 2 if self.kind == "angle" else 1
        if data is None:
            data = default_data(self.kind)
        if not isinstance(data, Dataset):
            raise fail("data", type(data).__name__, "a flowsim.Dataset or None")
        if data.dim != need:
            what = "one linear layer on 2-D inputs" if need == 2 else "the scalar two-layer chain on 1-D inputs"
            raise fail(
                "data",
                f"inputs of dimension {data.dim}",
                f"dimension {need}: the {model.name!r} model reduces to {what}",
            )
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
        self._cache: dict = {}  # per reduction: domain, field scale, roots, continua, factored structure

    def _memo(self, key, compute):
        """``compute()``, once per `key` for this reduction."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

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
        """The [`flowsim.Network`][flowsim.Network] the reduction is exact for (linear activations)."""
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
        return sym.latex(self.equations)

    # ---- numerics -----------------------------------------------------------------------------
    def field(self, z) -> np.ndarray:
        """The field at states `z`, shape ``(2,)`` or ``(M, 2)``; returns the same shape."""
        z = np.asarray(z, dtype=np.float64)
        out = padded(grid_fn(self.kernel), z.reshape(-1, 2), self.params)
        return out[0] if z.ndim == 1 else out

    def jacobian(self, z) -> np.ndarray:
        """The Jacobian (2×2) of the field at state `z` (or a stack, shape ``(M, 2, 2)``)."""
        z = np.asarray(z, dtype=np.float64)
        out = padded(jac_fn(self.kernel), z.reshape(-1, 2), self.params)
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
        """The full [`flowsim.State`][flowsim.State] of
        [`flowsim.plot.Reduced2D.network`][flowsim.plot.Reduced2D.network] at reduced state `z` (scales must be
        nonzero)."""
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
        """The reduced state of a full State of [`flowsim.plot.Reduced2D.network`][flowsim.plot.Reduced2D.network]."""
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
        return self._memo("domain", self._default_domain)

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

        def compute():
            dom = domain or self.default_domain()
            g = np.stack(np.meshgrid(*[np.linspace(a, b, 41) for a, b in dom], indexing="ij"), -1).reshape(-1, 2)
            return float(np.median(np.abs(self.field(g)))) + 1e-300

        return self._memo(("fscale", domain_key(domain)), compute)

    def curve_points(self, curve: Curve, components=(0, 1), domain=None, n: int = 1201) -> np.ndarray:
        """Points of a solved `curve` inside `domain` (see `flowsim._analysis._curves.curve_points`)."""
        return curve_points(self, curve, components, domain, n)

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

    def integrate(
        self,
        z0: Checked[ArrayLike],
        *,
        t1: Checked[float],
        ts: Checked[ArrayLike | None] = None,
        rtol: float = 1e-8,
        atol: float = 1e-10,
        max_steps: int = 16384,
    ):
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
        run = ensemble_fn(self.kernel, float(rtol), float(atol), int(max_steps))
        m = len(z0)  # pad the batch to a power of two (repeating the first start): fewer compilations
        size = 1 << max(0, (m - 1).bit_length())
        zp = np.concatenate([z0, np.repeat(z0[:1], size - m, axis=0)])
        ys, ok, steps = run(jnp.asarray(zp), jnp.asarray(ts), self.params)
        ys, ok, steps = np.asarray(ys)[:m], np.asarray(ok)[:m], np.asarray(steps)[:m]
        if single:
            return ts, ys[0], ok[0], steps[0]
        return ts, ys, ok, steps

    # ---- structure (computed in the modules of one concept each) ------------------------------------
    def nullclines(self) -> tuple[Nullcline, Nullcline]:
        """The two nullclines (see `flowsim._analysis._nullclines.nullclines`).

        **Returns:** ``(N_1, N_2)``, where ``N_i`` is the set ``F_i = 0`` (``F_i`` the i-th component).
        """
        return nullclines(self)

    def continua(self, domain=None, n_samples: int = 9) -> tuple[Continuum, ...]:
        """Continua of equilibria in `domain`, symbolic (common factors) and numeric (many degenerate roots).

        **Returns:** a tuple of [`flowsim.plot.Continuum`][flowsim.plot.Continuum] (empty when the equilibria are
        isolated).
        """
        return continua(self, domain, n_samples)

    def equilibria(self, domain=None, n_starts: int = 20) -> tuple[Equilibrium, ...]:
        """Isolated equilibria in `domain`, by Newton root finding from a grid, classified from the Jacobian
        (see `flowsim._analysis._equilibria.equilibria`).

        **Arguments:**

        - `domain`: ``((lo, hi), (lo, hi))`` in state order; default
          [`flowsim.plot.Reduced2D.default_domain`][flowsim.plot.Reduced2D.default_domain].
        - `n_starts`: Newton starts per axis.

        **Returns:** a tuple of [`flowsim.plot.Equilibrium`][flowsim.plot.Equilibrium], sorted by their coordinates.
        """
        return equilibria(self, domain, n_starts)

    def time_scale(self, equilibria=None, continua=None) -> float:
        """A time by which trajectories have settled: 10 over the slowest nonzero rate at the equilibria."""
        return time_scale(self, equilibria, continua)


def reduced_model(model: Checked[Model], data: Checked[Dataset | None] = None) -> Reduced2D:
    """The exact planar reduction of `model` (see [`flowsim.plot.Reduced2D`][flowsim.plot.Reduced2D]).

    **Arguments:**

    - `model`: a [`flowsim.Model`][flowsim.Model]. Shared-scale regimes (``normalized``) give the ``"angle"``
      reduction, state ``(ρ, θ)``; per-layer regimes (``unnormalized``, ``weightnorm``) the ``"chain"``
      reduction, state ``(ρ_1, ρ_2)``.
    - `data`: a [`flowsim.Dataset`][flowsim.Dataset] of dimension 2 (angle) or 1 (chain), or ``None`` for the small
      default data set.

    **Returns:** a [`flowsim.plot.Reduced2D`][flowsim.plot.Reduced2D].
    """
    return Reduced2D(model, data)
