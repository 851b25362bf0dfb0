"""Prediction 2: the margins equalize under weight decay; their spread stays wider without it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ._common import Result, grade, run, save


def _cv(m):
    return float(np.std(m) / max(abs(np.mean(m)), 1e-12))


def exp_margins(quick: bool, out: Path) -> Result:
    wd = 1e-1
    runs = {lam: run("normalized", lam, "clusters", quick) for lam in (wd, 0.0)}
    cv = {lam: _cv(np.asarray(r[3].margins[-1])) for lam, r in runs.items()}
    ratio = cv[wd] / max(cv[0.0], 1e-12)
    fig = Figure(figsize=(9, 4.2))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, (lam, (_, _, _, tr)) in zip(axes, runs.items()):
        idx = np.unique(np.geomspace(1, len(tr) - 1, 7).astype(int))
        m = np.asarray(tr.margins)
        lo, hi = m[idx].min(), m[idx].max()
        grid = np.linspace(lo - 0.05, hi + 0.05, 200)
        for j, i in enumerate(idx):
            bw = 0.05 * (hi - lo + 1e-9)
            dens = np.exp(-0.5 * ((grid[:, None] - m[i][None, :]) / bw) ** 2).sum(1)
            dens = 0.8 * dens / dens.max()
            ax.fill_between(grid, j, j + dens, alpha=0.6)
            ax.text(grid[0], j + 0.2, f"t={float(tr.ts[i]):.3g}", fontsize=7)
        ax.set_title(f"λ={lam}: CV of y_n f_n at end = {cv[lam]:.3f}")
        ax.set_xlabel("margin y_n f_n"), ax.set_yticks([])
    fig_name = save(fig, out, "2_margin_ridges")
    return Result(
        "margins",
        "margins equalize under WD; spread stays wider without WD",
        f"normalized model: CV(y_n f_n) = std/mean at the end, λ={wd}: {cv[wd]:.3f}, λ=0 = {cv[0.0]:.3f} "
        f"(ratio {ratio:.2f})",
        "ratio < 1 (holds: <0.8; partly: <1.0)",
        grade(ratio < 0.8, ratio < 1.0),
        fig_name,
        ratio,
    )
