"""Prediction 1: ρ tracks ρ_eq and settles with weight decay; ρ·y_n f_n → ≈1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ._common import Result, grade, log_ts, run, save


def exp_rho_eq(quick: bool, out: Path) -> Result:
    lam = 1e-2
    model, net, data, tr = run("normalized", lam, "clusters", quick)
    rho, req = np.asarray(tr.rho), np.asarray(tr.rho_eq)
    prod = rho[:, None] * np.asarray(tr.margins)
    gap = abs(rho[-1] / req[-1] - 1.0)
    dev = float(np.median(np.abs(prod[-1] - 1.0)))
    fig = Figure(figsize=(9, 3.6))
    a, b = fig.subplots(1, 2)
    a.semilogx(log_ts(tr), rho, label="ρ(t)")
    a.semilogx(log_ts(tr), req, "--", label="ρ_eq(V(t))")
    a.set_xlabel("t"), a.set_ylabel("scale"), a.legend(), a.set_title(f"normalized, λ={lam}")
    b.semilogx(log_ts(tr), np.median(prod, axis=1), label="median ρ y_n f_n")
    b.fill_between(log_ts(tr), prod.min(1), prod.max(1), alpha=0.3, label="min–max")
    b.axhline(1.0, color="k", lw=0.8)
    b.set_ylim(-0.5, 1.5), b.set_xlabel("t"), b.legend()
    fig_name = save(fig, out, "1_rho_eq")
    return Result(
        "rho_eq",
        "ρ tracks ρ_eq and settles with WD; ρ·y_n f_n → ≈1",
        f"|ρ/ρ_eq−1| = {gap:.2e} at t={tr.ts[-1]:.0f}; median |ρ y_n f_n − 1| = {dev:.3f}",
        "0 and 0 (holds: gap<1e-2 and median<0.1; partly: gap<0.1 and median<0.3)",
        grade(gap < 1e-2 and dev < 0.1, gap < 0.1 and dev < 0.3),
        fig_name,
        dev,
    )
