"""Batch or weight normalization modelled as a normalization of every layer: one scale ρ, weight decay λρ².

λ = 0 is the paper's singular case (BN without weight decay): every interpolating configuration is an
equilibrium.
"""

import sympy as sp

from flowsim import Regime

REGIME = Regime(
    name="normalized",
    description="every layer normalized (BN/WN model): shared scale rho, unit-norm V_k, weight decay lam*rho^2",
    per_layer=False,
    # Each V_k lives on its unit sphere; ρ is a Euclidean coordinate of its own.
    embedding=lambda s, theta: (sp.cos(theta), sp.sin(theta)),
    regularizer=lambda rho, lam: lam * rho**2,
    # A discrete step puts each V_k back on its sphere, as the normalization layers it stands for do.
    retraction=True,
)
