"""Prediction 8: the critical-point relation λρV_k = Σ_n r_n ∂f_n/∂V_k holds at the end, with the Filippov
selection of σ′ at the pre-activations pinned at a kink."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from .._model import exact_field
from .._solver import DEFAULT_SMOOTHING
from ._common import Result, grade, log_ts, run, save

# a pre-activation counts as pinned within 10 ε (relative to its layer's scale): where the smoothed flow
# holds the sliding ones
PINNED_TOL = 10 * DEFAULT_SMOOTHING


def _cosines(model, V, rho, G):
    out = []
    for Vk, Gk in zip(V, G):
        a = model.lam * rho * Vk
        out.append(float(jnp.vdot(a, Gk) / (jnp.linalg.norm(a) * jnp.linalg.norm(Gk) + 1e-300)))
    return out


def critical_cosines(model, net, data, state, eps: float | None = None):
    """cos(λρV_k, Σ_n r_n ∂f_n/∂V_k) for every layer, the sum computed with ``jax.vjp`` of the forward pass.

    ``eps=None`` differentiates the exact ReLU (σ′ = 1[z > 0]); ``eps > 0`` the solver's smoothed σ′.
    """
    x, y = jnp.asarray(data.x), jnp.asarray(data.y)
    V = tuple(state.V)
    f, pull = jax.vjp(lambda V_: net._forward(V_, x, eps), V)
    return _cosines(model, V, state.rho, pull(y - state.rho * f)[0])


def filippov_cosines(model, net, data, state, tol: float = PINNED_TOL):
    """The cosines with σ′ = the Filippov selection (the least-norm velocity's α) on the pinned pre-activations.

    The forward pass is written with the gates held fixed, ``a_k = z_k ⊙ α_k``: equal to ReLU off the kinks,
    and its backward pass uses σ′ = α. **Returns:** ``(cosines, number of pinned pre-activations)``.
    """
    x, y = jnp.asarray(data.x), jnp.asarray(data.y)
    V = tuple(state.V)
    _, info = exact_field(model, net, x, y, state, tol, return_info=True)
    gates = tuple(jax.lax.stop_gradient(a) for a in info.alpha)

    def gated(V_):
        a = x
        for Vk, g in zip(V_[:-1], gates):
            a = (a @ Vk.T) * g
        return (a @ V_[-1].T)[:, 0]

    r = y - state.rho * net._forward(V, x)
    _, pull = jax.vjp(gated, V)
    return _cosines(model, V, state.rho, pull(r)[0]), int(info.n_pinned)


def exp_critical(quick: bool, out: Path, seed: int = 0) -> Result:
    model, net, data, tr = run("normalized", 1e-2, "clusters", quick, data_seed=seed)
    cos = np.array([critical_cosines(model, net, data, tr.state(i)) for i in range(len(tr))])
    cos_s = np.array([critical_cosines(model, net, data, tr.state(i), DEFAULT_SMOOTHING) for i in range(len(tr))])
    cos_f, n_pinned = filippov_cosines(model, net, data, tr.final)
    worst, worst_s, worst_f = float(cos[-1].min()), float(cos_s[-1].min()), float(min(cos_f))
    n_hidden = data.n * sum(net.widths[1:-1])
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    for k in range(cos.shape[1]):
        ax.semilogx(log_ts(tr), 1 - cos[:, k], color=f"C{k}", label=rf"layer {k + 1}, $\sigma'=1[z>0]$")
        ax.semilogx(log_ts(tr), 1 - cos_s[:, k], ":", color=f"C{k}", lw=2, label=rf"layer {k + 1}, smoothed $\sigma'$")
        ax.plot([tr.ts[-1]], [1 - cos_f[k]], "*", ms=12, color=f"C{k}", label=f"layer {k + 1}, Filippov selection")
    ax.set_yscale("symlog", linthresh=1e-6), ax.set_ylim(-1e-7, 2.0)
    ax.set_xlabel("t"), ax.set_ylabel(r"$1-\cos(\lambda\rho V_k,\ \sum_n r_n \partial f_n/\partial V_k)$")
    ax.legend(fontsize=7, ncol=2)
    title = rf"Prediction 8: critical-point relation at the end ({n_pinned} of {n_hidden} pre-activations pinned)"
    fig_name = save(fig, out, "8_critical", title)
    return Result(
        "critical",
        "critical-point relation λρV_k = Σ r_n ∂f_n/∂V_k at the end, with the Filippov selection of σ′ at kinks",
        f"min cosine over layers at t={float(tr.ts[-1]):.0f}: {worst_f:.6f} with the Filippov selection on the "
        f"{n_pinned} of {n_hidden} hidden pre-activations pinned (|z| ≤ {PINNED_TOL:g} of the layer's scale), "
        f"{worst_s:.6f} with the solver's smoothed σ′, {worst:.5f} with σ′ = 1[z > 0]; t=0: {cos[0].min():.3f}",
        "1 with the Filippov selection (holds: > 0.999; partly: > 0.99); σ′ = 1[z > 0] need not satisfy it "
        "when pre-activations are pinned",
        grade(worst_f > 0.999, worst_f > 0.99),
        fig_name,
        worst_f,
    )
