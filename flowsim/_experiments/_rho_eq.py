"""Prediction 1: ρ tracks ρ_eq and settles with weight decay; ρ·y_n f_n → ≈1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ._common import Result, fit_margins, grade, log_ts, run, save


def exp_rho_eq(quick: bool, out: Path, seed: int = 0) -> Result:
    lam = 1e-2
    model, net, data, tr = run("normalized", lam, "clusters", quick, data_seed=seed)
    rho, req = np.asarray(tr.rho), np.asarray(tr.rho_eq)
    prod = rho[:, None] * np.asarray(tr.margins)
    gap = abs(rho[-1] / req[-1] - 1.0)
    dev = float(np.median(np.abs(prod[-1] - 1.0)))
    fig = Figure(figsize=(9, 3.6))
    a, b = fig.subplots(1, 2)
    _, n_stuck, stuck = fit_margins(net, tr.final.V, data, tr.margins[-1])
    a.semilogx(log_ts(tr), rho, label=r"$\rho(t)$")
    a.semilogx(log_ts(tr), req, "--", label=r"$\rho_{eq}(V(t))$")
    a.set_xlabel("t"), a.set_ylabel("scale"), a.legend(), a.set_title(f"normalized, λ={lam}", fontsize=9)
    b.semilogx(log_ts(tr), np.median(prod, axis=1), label=r"median $\rho\, y_n f_n$")
    b.fill_between(log_ts(tr), prod.min(1), prod.max(1), alpha=0.3, label="min–max over samples")
    b.axhline(1.0, color="k", lw=0.8)
    b.set_ylim(-0.5, 1.5), b.set_xlabel("t"), b.legend(fontsize=8)
    title = r"Prediction 1: $\rho$ settles at $\rho_{eq}$ and $\rho\, y_n f_n \to 1$ (quasi-interpolation)"
    fig_name = save(fig, out, "1_rho_eq", title)
    return Result(
        "rho_eq",
        "ρ tracks ρ_eq and settles with WD; ρ·y_n f_n → ≈1",
        f"|ρ/ρ_eq−1| = {gap:.2e} at t={float(tr.ts[-1]):.0f}; median |ρ y_n f_n − 1| = {dev:.3f}; {stuck}",
        "0 and 0 (holds: gap<1e-2 and median<0.1; partly: gap<0.1 and median<0.3)",
        grade(gap < 1e-2 and dev < 0.1, gap < 0.1 and dev < 0.3),
        fig_name,
        dev,
    )
