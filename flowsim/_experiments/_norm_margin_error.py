"""Prediction 3: smaller ρ ⇔ larger margin ⇔ lower test error."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from ._common import Result, clusters_split, grade, run, save


def _spearman(a, b):
    """Spearman rank correlation with ties averaged; NaN when either side is constant."""
    from scipy.stats import rankdata

    ra, rb = rankdata(a), rankdata(b)
    if np.std(ra) == 0 or np.std(rb) == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def exp_norm_margin_error(quick: bool, out: Path) -> Result:
    _, test = clusters_split(quick)
    configs = [("normalized", 1e-2, 0.5), ("normalized", 1e-1, 0.5)]
    configs += [("unnormalized", 0.0, sc) for sc in ((0.1, 4.0) if quick else (0.03, 0.1, 0.3, 1.0, 2.0, 4.0))]
    if not quick:
        configs += [("unnormalized", lam, 1.0) for lam in (1e-3, 1e-2)] + [("normalized", 1e-3, 0.5)]
    rows = []
    for name, lam, sc in configs:
        _, net, train, tr = run(name, lam, "clusters", quick, scale=sc)
        f_test = np.asarray(net.forward(tr.final.V, jnp.asarray(test.x)))
        err = float(np.mean(np.sign(f_test) != test.y))
        rows.append((lam, sc, float(tr.rho[-1]), float(np.min(tr.margins[-1])), err, float(np.min(test.y * f_test))))
    rows = np.array(rows)
    c_rm = _spearman(rows[:, 2], rows[:, 3])
    c_me = _spearman(rows[:, 3], rows[:, 4])
    c_mt = _spearman(rows[:, 3], rows[:, 5])
    test_ok = c_me <= -0.5 if np.isfinite(c_me) else c_mt >= 0.5
    fig = Figure(figsize=(9, 3.6))
    a, b = fig.subplots(1, 2)
    for (name, lam, sc), r in zip(configs, rows):
        mk = "o" if name == "normalized" else "s"
        a.scatter(r[2], r[3], marker=mk)
        a.annotate(f"{name[:4]} λ={lam:g} s={sc:g}", (r[2], r[3]), fontsize=6)
        b.scatter(r[3], r[4], marker=mk)
    a.set_xlabel("final ρ"), a.set_ylabel("min train margin y_n f_n"), a.set_xscale("log")
    b.set_xlabel("min train margin"), b.set_ylabel(f"test error ({test.n} points)")
    fig_name = save(fig, out, "3_norm_margin_error")
    return Result(
        "norm_margin_error",
        "smaller ρ ⇔ larger margin ⇔ lower test error",
        f"Spearman(ρ, min margin) = {c_rm:.2f}; Spearman(min margin, test error) = {c_me:.2f} "
        f"(test errors {', '.join(f'{e:.3f}' for e in rows[:, 4])}); Spearman(min margin, min test margin) = "
        f"{c_mt:.2f}; {len(rows)} runs (model × λ × init scale)",
        "−1, −1, +1 (holds: ρ–margin ≤ −0.8 and margin–test error ≤ −0.5, or, if the test errors are all equal, "
        "margin–test margin ≥ 0.5; partly: ρ–margin ≤ −0.5)",
        grade(c_rm <= -0.8 and test_ok, c_rm <= -0.5),
        fig_name,
        c_rm,
    )
