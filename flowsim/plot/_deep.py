"""Deep networks, where no planar model is exact: runs of ``fs.simulate`` projected onto (margin, ρ)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, LogNorm
from matplotlib.lines import Line2D

from .._data import Dataset
from .._errors import Checked, SolveError, check_real, fail
from .._model import Model, Network, check_model, check_problem
from .._solver import simulate
from ._style import check_count, cmap, new_axes

_PROJECTIONS = ("min_margin", "mean_margin", "alignment")


def _project(traj, y, which):
    m = np.asarray(traj.margins)  # (T, N) = y_n f_n(V)
    if which == "min_margin":
        return m.min(axis=1)
    if which == "mean_margin":
        return m.mean(axis=1)
    f = m * np.asarray(y)[None, :]
    return (m.sum(axis=1)) / (np.linalg.norm(f, axis=1) * math.sqrt(len(y)) + 1e-300)


def deep_portrait(
    model: Checked[Model],
    net: Checked[Network],
    data: Checked[Dataset],
    *,
    scales: Checked[Sequence[float]] = (0.1, 0.5, 2.0),
    seeds: Checked[Sequence[int]] = (0, 1),
    t1: Checked[float] = 20.0,
    n_save: Checked[int] = 200,
    x: Checked[str] = "min_margin",
    ax=None,
    title: str | None = None,
    legend: bool = True,
    colorbar: bool = True,
    **simulate_kwargs,
):
    """Trajectories of a deep network projected onto (normalized margin or alignment, ρ), with ρ_eq.

    No planar model is exact for a deep network, so this projects full runs of [`flowsim.simulate`][flowsim.simulate]
    from an ensemble of initial scales and seeds: the horizontal axis is a function of the directions
    ``V`` alone, the vertical axis the overall scale ``ρ`` (log scale). Each run is drawn as a solid line
    coloured by its initial scale (○ start, ● end), with its ``ρ_eq(V(t))`` as a dashed line of the same
    colour: ρ tracks ρ_eq and settles with weight decay. For the margin projections the grey dotted
    curve ``ρ = 1/margin`` is where ``ρ y_n f_n = 1`` (interpolation, equal margins).

    **Arguments:**

    - `model`: a [`flowsim.Model`][flowsim.Model].
    - `net`: a [`flowsim.Network`][flowsim.Network].
    - `data`: a [`flowsim.Dataset`][flowsim.Dataset].
    - `scales`: initial overall scales ``ρ(0)`` (each > 0).
    - `seeds`: seeds of the initial directions (``model.init(net, seed=seed, scale=...)``).
    - `t1`: final time of every run.
    - `n_save`: saved times per run (0, then geometrically spaced from ``1e-4 t1`` to `t1`).
    - `x`: the horizontal coordinate: ``"min_margin"`` (``min_n y_n f_n``, the normalized margin),
      ``"mean_margin"`` (``mean_n y_n f_n``) or ``"alignment"`` (cosine between ``f`` and ``y``).
    - `ax`: a matplotlib Axes to draw into; default a new Figure.
    - `title`, `legend`: as in [`flowsim.plot.phase_portrait`][flowsim.plot.phase_portrait].
    - `colorbar`: draw the colour bar of the initial scales beside the panel (when there are several).
    - `simulate_kwargs`: passed on to [`flowsim.simulate`][flowsim.simulate] (``rtol``, ``atol``, ``solver``, ...).

    **Returns:** the `matplotlib.figure.Figure`. A run that fails with [`flowsim.SolveError`][flowsim.SolveError]
    is drawn up to the failure (its ``partial`` trajectory) and reported with a warning.
    """
    check_model(model)
    check_problem(net, data)
    if x not in _PROJECTIONS:
        raise fail("x", x, f"one of {_PROJECTIONS}")
    scales = list(scales) if isinstance(scales, Sequence) and not isinstance(scales, str) else None
    if not scales or not all(
        isinstance(s, (int, float, np.floating, np.integer)) and not isinstance(s, bool) and math.isfinite(s) and s > 0
        for s in scales
    ):
        raise fail("scales", scales, "a non-empty sequence of initial scales > 0")
    seeds = list(seeds) if isinstance(seeds, Sequence) and not isinstance(seeds, str) else None
    if not seeds or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in seeds):
        raise fail("seeds", seeds, "a non-empty sequence of integer seeds")
    check_real("t1", t1, "a finite time > 0", lambda v: v > 0)
    n_save = check_count("n_save", n_save, minimum=2)

    simulate_kwargs.setdefault("progress", False)
    fig, ax = new_axes(ax)
    ts = np.concatenate([[0.0], np.geomspace(1e-4 * t1, t1, n_save - 1)])
    norm = LogNorm(min(scales), max(scales)) if len(set(scales)) > 1 else None
    colors = cmap("plasma")
    xs_all = []
    for scale in scales:
        color = colors(0.1 + 0.75 * norm(scale)) if norm is not None else colors(0.4)
        for seed in seeds:
            s0 = model.init(net, seed=int(seed), scale=float(scale))
            try:
                traj = simulate(model, net, data, s0, t1=float(t1), ts=ts, **simulate_kwargs)
            except SolveError as err:
                warnings.warn(
                    f"deep_portrait: run (scale={scale:g}, seed={seed}) failed: {err}", RuntimeWarning, stacklevel=2
                )
                traj = err.partial
                if traj is None:
                    continue
            px = _project(traj, data.y, x)
            rho, req = np.asarray(traj.rho), np.asarray(traj.rho_eq)
            ok = np.isfinite(px) & np.isfinite(rho) & (rho > 0)
            if not ok.any():
                continue
            xs_all.append(px[ok])
            ax.plot(px[ok], rho[ok], color=color, lw=1.2, alpha=0.9, zorder=3)
            good_eq = ok & np.isfinite(req) & (req > 0)
            ax.plot(px[good_eq], req[good_eq], color=color, lw=0.9, ls="--", alpha=0.8, zorder=2)
            i0, i1 = np.flatnonzero(ok)[[0, -1]]
            ax.plot([px[i0]], [rho[i0]], "o", mfc="w", mec=color, ms=5, zorder=4)
            ax.plot([px[i1]], [rho[i1]], "o", mfc=color, mec="k", ms=6, zorder=5)
    ax.set_yscale("log")
    if xs_all and x != "alignment":
        allx = np.concatenate(xs_all)
        pos = allx[allx > 0]
        if pos.size:
            grid = np.linspace(max(pos.min(), 1e-3 * pos.max()), pos.max(), 200)
            lo, hi = ax.get_ylim()
            ax.plot(grid, 1.0 / grid, ":", color="0.4", lw=1.2, zorder=1)
            ax.set_ylim(lo, hi)
    labels = {
        "min_margin": r"normalized margin $\min_n y_n f(V; x_n)$",
        "mean_margin": r"mean margin $\frac{1}{N}\sum_n y_n f(V; x_n)$",
        "alignment": r"alignment $\langle y, f\rangle / (\|y\|\,\|f\|)$",
    }
    ax.set_xlabel(labels[x])
    ax.set_ylabel(r"overall scale $\rho$")
    if title is None:
        loss = "" if model.loss == "square" else f", {model.loss} loss"
        what = "normalized margin" if x == "min_margin" else ("mean margin" if x == "mean_margin" else "alignment")
        title = (
            f"Runs projected onto ({what}, $\\rho$): {model.name}{loss}, $\\lambda = {float(model.lam):g}$\n"
            f"widths {'-'.join(map(str, net.widths))}, {net.activation}, "
            + (f"{len(seeds)} seeds per initial scale" if len(seeds) > 1 else f"seed {seeds[0]}")
        )
    if title:
        ax.set_title(title, fontsize=9)
    if colorbar and norm is not None:
        # the colour of a run is its initial scale, on the part of the colour map the lines use
        part = ListedColormap(colors(np.linspace(0.1, 0.85, 256)))
        cb = ax.figure.colorbar(ScalarMappable(norm=norm, cmap=part), ax=ax, shrink=0.85, pad=0.02)
        cb.set_label(r"run colour: initial scale $\rho(0)$", fontsize=8)
        cb.set_ticks(sorted(set(scales)), labels=[f"{v:g}" for v in sorted(set(scales))])
        cb.minorticks_off()
        cb.ax.tick_params(labelsize=7)
    if legend:
        handles = [
            Line2D(
                [],
                [],
                color=colors(0.1 + 0.75 * norm(s)) if norm is not None else colors(0.4),
                lw=1.2,
                label=rf"$\rho(0) = {s:g}$",
            )
            for s in scales
        ]
        handles.append(Line2D([], [], color="0.3", lw=0.9, ls="--", label=r"$\rho_{eq}(V(t))$"))
        if x != "alignment":
            handles.append(Line2D([], [], color="0.4", lw=1.2, ls=":", label=r"$\rho \cdot$ margin $= 1$"))
        handles.append(Line2D([], [], ls="none", marker="o", mfc="w", mec="k", ms=5, label="start"))
        handles.append(Line2D([], [], ls="none", marker="o", mfc="k", mec="k", ms=6, label="end"))
        ax.legend(
            handles=handles,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.15),
            ncol=4,
            fontsize=7,
            frameon=False,
            handlelength=2.2,
            columnspacing=1.2,
        )
    return fig
