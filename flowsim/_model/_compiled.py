"""The sympy expressions of one (regime, loss, depth) turned into jax.numpy functions."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import sympy as sp

from .. import _symbolic as sym


class Compiled:
    """The derivation of one (regime, loss, depth) as jax.numpy functions (build with `compiled`)."""

    def __init__(self, regime: sym.Regime, loss: str, depth: int):
        d = sym.derive(regime, loss)
        self.derivation = d
        self.per_layer = regime.per_layer
        self.depth = depth
        mods = [{"cosh": jnp.cosh}, jnp]
        self.weight = sp.lambdify((sym.rho, sym.f, sym.y), d.weight, modules=mods)
        if regime.per_layer:
            self.scale_sample = sp.lambdify((sym.rho, sym.s, sym.f, sym.y), d.scale_sample, modules=mods)
        else:
            ss = sp.lambdify((sym.rho, sym.f, sym.y), d.scale_sample, modules=mods)
            self.scale_sample = lambda rho, s, f, y: ss(rho, f, y)
        self.scale_reg = sp.lambdify((sym.s if regime.per_layer else sym.rho, sym.lam), d.scale_reg, modules=mods)
        self.direction_factor = sp.lambdify((sym.s,), d.direction_factor, modules=mods)
        self.loss = sp.lambdify((sym.u, sym.y), sym.LOSSES[loss], modules=mods)
        self.regularizer = sp.lambdify((sym.s, sym.lam), regime.regularizer(sym.s, sym.lam), modules=mods)
        closed = sym.rho_equilibrium(d, regime.per_layer, depth)
        if closed is not None:
            expr, used = closed
            names = list(used)
            fn = sp.lambdify([sym.N, sym.lam, *names], expr, modules=mods)
            powers = [used[m] for m in names]

            def rho_eq_closed(f, y, lam):
                aggs = [jnp.sum(f**a * y**b) for a, b in powers]
                return fn(f.shape[0], lam, *aggs)

            self.rho_eq = rho_eq_closed
        else:
            self.rho_eq = self._rho_eq_numeric

    def _balanced_scale_rate(self, rho, f, y, lam):
        """ρ_k · dρ_k/dt with all layers balanced (per-layer), or dρ/dt (shared), at fixed V."""
        if self.per_layer:
            s = rho ** (1.0 / self.depth)
            return s * (jnp.sum(self.scale_sample(rho, s, f, y)) + self.scale_reg(s, lam))
        return jnp.sum(self.scale_sample(rho, rho, f, y)) + self.scale_reg(rho, lam)

    def _rho_eq_numeric(self, f, y, lam):
        # Largest stable root (sign change + to −) on a log grid, refined by bisection.
        grid = jnp.logspace(-8, 8, 321)
        h = jax.vmap(lambda r: self._balanced_scale_rate(r, f, y, lam))(grid)
        change = (h[:-1] > 0) & (h[1:] <= 0)
        idx = jnp.where(change.any(), jnp.max(jnp.where(change, jnp.arange(320), -1)), 0)
        lo, hi = grid[idx], grid[idx + 1]

        def body(_, bounds):
            lo, hi = bounds
            mid = jnp.sqrt(lo * hi)
            pos = self._balanced_scale_rate(mid, f, y, lam) > 0
            return jnp.where(pos, mid, lo), jnp.where(pos, hi, mid)

        lo, hi = jax.lax.fori_loop(0, 80, body, (lo, hi))
        return jnp.where(change.any(), jnp.sqrt(lo * hi), jnp.nan)


@functools.lru_cache(maxsize=64)
def compiled(regime: sym.Regime, loss: str, depth: int) -> Compiled:
    """The `Compiled` functions of (`regime`, `loss`, `depth`), built once (lambdify is slow)."""
    return Compiled(regime, loss, depth)
