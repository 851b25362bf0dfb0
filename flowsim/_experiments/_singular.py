"""Prediction 4: the normalized flow without weight decay is singular (ρ drifts, depends on the start)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ._common import Result, grade, log_ts, prefetch, run, save


def exp_singular(quick: bool, out: Path, seed: int = 0) -> Result:
    seeds = (0, 1) if quick else (0, 1, 2, 3)
    wd = 1e-1
    prefetch("normalized", "digits", quick, seeds, (0.0, wd), data_seed=seed)  # the runs below, as one sweep
    trs0 = [run("normalized", 0.0, "digits", quick, seed=s, data_seed=seed)[3] for s in seeds]
    trsw = [run("normalized", wd, "digits", quick, seed=s, data_seed=seed)[3] for s in seeds]

    def spread(trs):
        finals = np.array([float(t.rho[-1]) for t in trs])
        return float((finals.max() - finals.min()) / finals.mean())

    def drift(tr):
        r = np.asarray(tr.rho)
        half = int(np.searchsorted(np.asarray(tr.ts), tr.ts[-1] / 2))
        return float(abs(r[-1] - r[half]) / abs(r[-1]))

    s0, sw = spread(trs0), spread(trsw)
    d0, dw = max(map(drift, trs0)), max(map(drift, trsw))
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.subplots()
    for s, t in zip(seeds, trs0):
        ax.loglog(log_ts(t), np.asarray(t.rho), label=f"λ=0, init seed {s}")
    for s, t in zip(seeds, trsw):
        ax.loglog(log_ts(t), np.asarray(t.rho), "--", label=f"λ={wd}, init seed {s}")
    ax.set_xlabel("t"), ax.set_ylabel(r"$\rho$"), ax.legend(fontsize=7)
    ax.set_title("normalized, digits 3/8", fontsize=9)
    title = r"Prediction 4: without WD, $\rho$ drifts or depends on the start"
    fig_name = save(fig, out, "4_singular", title)
    measure = max(d0, s0)
    ref = max(dw, sw)
    return Result(
        "singular",
        "normalized without WD: ρ drifts / depends on the initial condition",
        f"λ=0: spread of final ρ over {len(seeds)} inits = {s0:.3f}, late drift = {d0:.1e}; "
        f"λ={wd}: spread {sw:.3f}, drift {dw:.1e}",
        "λ=0 ≫ WD (holds: max(spread, drift) > 0.05 and > 3× the WD value; partly: > 0.01)",
        grade(measure > 0.05 and measure > 3 * ref, measure > 0.01),
        fig_name,
        measure,
    )
