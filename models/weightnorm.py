"""Salimans–Kingma weight normalization W_k = g_k v_k/‖v_k‖, weight decay λ Σ_k g_k² on the gains."""

import sympy as sp

from flowsim import Regime

REGIME = Regime(
    name="weightnorm",
    description="weight normalization W_k = g_k v_k/||v_k|| (g_k = rho_k), weight decay lam * sum_k g_k^2",
    per_layer=True,
    # Raw coordinates (g_k, v_k) with ‖v_k‖ = 1 (the exact flow keeps it there).
    embedding=lambda s, theta: (s, sp.cos(theta), sp.sin(theta)),
    regularizer=lambda s, lam: lam * s**2,
)
