"""Prediction 8: the critical-point relation λρV_k = Σ r_n ∂f_n/∂V_k holds at the end."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from .._solver import DEFAULT_SMOOTHING
from ._common import Result, grade, log_ts, run, save


def critical_cosines(model, net, data, state, eps: float | None = None):
    """cos(λρV_k, Σ_n r_n ∂f_n/∂V_k) for every layer, the sum computed with ``jax.vjp`` of the forward pass.

    ``eps=None`` differentiates the exact ReLU (σ′ = 1[z > 0]); ``eps > 0`` the solver's smoothed σ′ (the
    Sotomayor–Teixeira regularization, whose limit is the Filippov flow that slides along switching surfaces).
    """

    x, y = jnp.asarray(data.x), jnp.asarray(data.y)
    V = tuple(state.V)
    f, pull = jax.vjp(lambda V_: net._forward(V_, x, eps), V)
    rho = state.rho
    r = y - rho * f
    G = pull(r)[0]
    out = []
    for Vk, Gk in zip(V, G):
        a = model.lam * rho * Vk
        out.append(float(jnp.vdot(a, Gk) / (jnp.linalg.norm(a) * jnp.linalg.norm(Gk) + 1e-300)))
    return out


def exp_critical(quick: bool, out: Path) -> Result:
    model, net, data, tr = run("normalized", 1e-2, "clusters", quick)
    cos = np.array([critical_cosines(model, net, data, tr.state(i)) for i in range(len(tr))])
    cos_s = np.array([critical_cosines(model, net, data, tr.state(i), DEFAULT_SMOOTHING) for i in range(len(tr))])
    worst, worst_s = float(cos[-1].min()), float(cos_s[-1].min())
    pinned = int(
        np.sum(np.abs(np.asarray(net.preactivations(tr.final.V, jnp.asarray(data.x))[-1])) < 10 * DEFAULT_SMOOTHING)
    )
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    for k in range(cos.shape[1]):
        ax.semilogx(log_ts(tr), cos[:, k], label=f"layer {k + 1}, exact σ′")
        ax.semilogx(log_ts(tr), cos_s[:, k], "--", label=f"layer {k + 1}, smoothed σ′ (ε={DEFAULT_SMOOTHING:g})")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xlabel("t"), ax.set_ylabel("cos(λρV_k, Σ r_n ∂f_n/∂V_k)"), ax.legend(fontsize=7)
    fig_name = save(fig, out, "8_critical")
    return Result(
        "critical",
        "critical-point relation λρV_k = Σ r_n ∂f_n/∂V_k at the end",
        f"min cosine over layers at t={tr.ts[-1]:.0f}: {worst_s:.5f} with the solver's smoothed σ′ (Filippov), "
        f"{worst:.5f} with the exact ReLU σ′ ({pinned} hidden pre-activations of the last layer within 10ε of 0); "
        f"t=0: {cos[0].min():.3f}",
        "1 (holds: both > 0.99; partly: smoothed > 0.99 or exact > 0.9)",
        grade(worst > 0.99 and worst_s > 0.99, worst_s > 0.99 or worst > 0.9),
        fig_name,
        worst_s,
    )
