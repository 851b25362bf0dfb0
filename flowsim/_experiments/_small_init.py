"""Prediction 5: no normalization, no weight decay: a small initial scale gives a larger margin."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ._common import Result, grade, log_ts, run, save


def exp_small_init(quick: bool, out: Path) -> Result:
    scales = (0.1, 4.0) if quick else (0.03, 0.1, 1.0, 4.0)
    runs = [run("unnormalized", 0.0, "clusters", quick, seed=0, scale=s)[3] for s in scales]
    mins = [float(np.min(t.margins[-1])) for t in runs]
    means = [float(np.mean(t.margins[-1])) for t in runs]
    diff = mins[0] - mins[-1]
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    for s, t in zip(scales, runs):
        ax.semilogx(log_ts(t), np.asarray(t.normalized_margin()), label=f"init scale {s}")
    ax.set_xlabel("t"), ax.set_ylabel("min_n y_n f_n (normalized)"), ax.legend(fontsize=8)
    ax.set_title("unnormalized, λ=0")
    fig_name = save(fig, out, "5_small_init")
    return Result(
        "small_init",
        "no normalization, no WD: small initial scale ⇒ larger margin",
        f"min margin: scale {scales[0]} → {mins[0]:.4f}, scale {scales[-1]} → {mins[-1]:.4f}",
        "small > large (holds: min margin larger by > 1e-3; partly: mean margin larger)",
        grade(diff > 1e-3, means[0] > means[-1]),
        fig_name,
        diff,
    )
