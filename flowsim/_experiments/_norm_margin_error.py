"""Prediction 3: among near-interpolating solutions, smaller ρ ⇔ larger margin ⇔ lower test error.

ρ means a different thing in each model (and the normalized model with weight decay stops short of
interpolation by an amount set by λ), so the relation is measured one model at a time: over initial scales and
λ, on clusters and (in the full run) on digits, with the test error on held-out points.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

import flowsim as fs

from ._common import Result, final_point, final_sweep, fit_margins, grade, problem, save, spearman, t1_of, test_error

# (model, initial scales, λ values) of each group: the members of one sweep
GROUPS = {
    True: (("normalized", (0.5, 2.0), (1e-3, 1e-2, 1e-1)), ("unnormalized", (0.1, 0.5, 2.0), (0.0, 1e-3))),
    False: (
        ("normalized", (0.3, 1.0, 3.0), (1e-3, 1e-2, 1e-1)),
        ("unnormalized", (0.1, 0.5, 2.0), (0.0, 1e-3)),
    ),
}


def _group(model_name, scales, lams, problem_name, quick, seed):
    net, train, test = problem(problem_name, quick, seed)
    model = fs.load_model(model_name, lam=lams[0])
    states = [model.init(net, seed=i, scale=s) for i, s in enumerate(scales)]
    res = final_sweep(model, net, train, states, t1=t1_of(quick, problem_name), lam=list(lams), scale=list(scales))
    rows = []
    for i in range(len(res)):
        tr = res.trajectory(i)
        rho, margins, sign = final_point(tr)
        fitted, _, _ = fit_margins(net, tr.final.V, train, margins)
        fit = float(np.median(np.abs(rho * margins - 1.0)))
        rows.append((rho, float(fitted.min()), test_error(net, tr.final.V, test, sign), fit))
    rows = np.array(rows)
    near = rows[rows[:, 3] < 0.5]  # near-interpolating: median |ρ y_n f_n − 1| < 0.5
    return rows, near, spearman(near[:, 0], near[:, 1]), spearman(near[:, 1], near[:, 2])


def exp_norm_margin_error(quick: bool, out: Path, seed: int = 0) -> Result:
    found = {}
    for model_name, scales, lams in GROUPS[quick]:
        for problem_name in ("clusters",) if quick else ("clusters", "digits"):  # digits: ~25 s a group
            found[model_name, problem_name] = _group(model_name, scales, lams, problem_name, quick, seed)
    r_rm = np.array([v[2] for v in found.values()])
    r_me = np.array([v[3] for v in found.values()])
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, len(GROUPS[quick]))
    for ax, (model_name, _, _) in zip(axes, GROUPS[quick]):
        for problem_name, marker in (("clusters", "o"), ("digits", "s")):
            if (model_name, problem_name) not in found:
                continue
            rows, near, c_rm, c_me = found[model_name, problem_name]
            sc = ax.scatter(
                near[:, 0], near[:, 1], c=near[:, 2], marker=marker, cmap="viridis", vmin=0, vmax=0.5, s=25,
                label=f"{problem_name}: ρ–margin {c_rm:.2f}, margin–error {c_me:.2f}",
            )  # fmt: skip
        ax.set_xscale("log"), ax.set_yscale("log"), ax.set_title(model_name, fontsize=9)
        ax.set_xlabel(r"final $\rho$"), ax.set_ylabel(r"min fitted margin $y_n f_n$"), ax.legend(fontsize=7)
    fig.colorbar(sc, ax=axes, label="held-out test error")
    title = r"Prediction 3: smaller $\rho$ ⇔ larger margin ⇔ lower test error (Spearman in the legend)"
    fig_name = save(fig, out, "3_norm_margin_error", title)
    finite = r_me[np.isfinite(r_me)]
    counts = ", ".join(f"{m}/{p}: {len(v[1])} of {len(v[0])}" for (m, p), v in found.items())
    return Result(
        "norm_margin_error",
        "among near-interpolating solutions, smaller ρ ⇔ larger margin ⇔ lower test error (one model at a time)",
        "Spearman(ρ, min fitted margin) / Spearman(margin, test error) per model and data: "
        + "; ".join(f"{m}/{p}: {v[2]:.2f} / {v[3]:.2f}" for (m, p), v in found.items())
        + f" (near-interpolating runs: {counts}; test errors "
        + ", ".join(f"{np.min(v[1][:, 2]):.2f}–{np.max(v[1][:, 2]):.2f}" for v in found.values() if len(v[1]))
        + ")",
        "−1 and −1 (holds: every ρ–margin ≤ −0.8 and every defined margin–error ≤ −0.3; partly: median "
        "ρ–margin ≤ −0.5; a margin–error correlation is undefined when the test errors are all equal)",
        grade(bool(np.all(r_rm <= -0.8) and finite.size and np.all(finite <= -0.3)), np.nanmedian(r_rm) <= -0.5),
        fig_name,
        float(np.nanmedian(r_rm)),
    )
