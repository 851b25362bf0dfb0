"""Plain gradient flow on the weights W_k = ρ_k V_k, weight decay λ Σ_k ‖W_k‖²."""

import sympy as sp

from flowsim import Regime

REGIME = Regime(
    name="unnormalized",
    description="plain gradient flow on W_k = rho_k V_k with weight decay lam * sum_k ||W_k||^2",
    per_layer=True,
    # W_k in polar coordinates: radius ρ_k, direction on the unit sphere.
    embedding=lambda s, theta: (s * sp.cos(theta), s * sp.sin(theta)),
    regularizer=lambda s, lam: lam * s**2,
)
