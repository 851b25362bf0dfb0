"""The sympy symbols every derivation uses, and the per-sample losses ``ℓ(u, y)`` of the scalar output."""

from __future__ import annotations

import sympy as sp

u, y, f, rho, s, s_j, theta, lam, t = sp.symbols("u y f rho rho_k rho_j theta lambda t", real=True)
rho_rest = sp.Symbol("rho_rest", positive=True)
n_idx, N = sp.symbols("n N", integer=True, positive=True)
f_n, y_n, G_n = sp.IndexedBase("f"), sp.IndexedBase("y"), sp.IndexedBase(r"\partial f / \partial V_k")

LOSSES: dict[str, sp.Expr] = {
    "square": (y - u) ** 2,
    "exponential": sp.exp(-y * u),
    "logistic": sp.log(1 + sp.exp(-y * u)),
}
