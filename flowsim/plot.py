"""Phase portraits of the flow (``fs.plot``).

- :func:`phase_portrait`: the exact planar reductions of a model (see :func:`reduced_model`): vector field,
  nullclines, classified equilibria (and continua of equilibria), and an ensemble of trajectories
  integrated in one compiled, vmapped call.
- :func:`deep_portrait`: deep networks, where no planar model is exact: trajectories of ``fs.simulate``
  projected onto (normalized margin or alignment, ρ) together with their ρ_eq curves.
- :func:`save_all`: writes the project's phase-portrait figures (called by ``flowsim reproduce``).

Figures are built with :class:`matplotlib.figure.Figure` directly, never through ``pyplot``: importing
this module does not select a backend or open a window, and ``savefig`` renders with Agg.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ._data import Dataset
from ._errors import SolveError, check_int, check_real, fail
from ._reduced import (
    Continuum,
    Curve,
    Equilibrium,
    Nullcline,
    Reduced2D,
    classify,
    default_data,
    reduced_model,
)

__all__ = [
    "Continuum",
    "Curve",
    "Equilibrium",
    "Nullcline",
    "Reduced2D",
    "classify",
    "deep_portrait",
    "default_data",
    "interpolable_data",
    "phase_portrait",
    "reduced_model",
    "save_all",
]

# Weight decays of the λ > 0 panels of the project's figures, sized to the default data sets.
FIGURE_LAMBDAS = {"normalized": 5.0, "unnormalized": 8.0}

_EQ_STYLE = {
    "stable node": dict(marker="o", mfc="k", mec="k", ms=7),
    "stable focus": dict(marker="o", mfc="k", mec="k", ms=7),
    "unstable node": dict(marker="o", mfc="w", mec="k", ms=7, mew=1.4),
    "unstable focus": dict(marker="o", mfc="w", mec="k", ms=7, mew=1.4),
    "saddle": dict(marker="o", mfc="k", mec="k", ms=7, fillstyle="left", mfcalt="w", mew=1.2),
    "center": dict(marker="s", mfc="w", mec="k", ms=6, mew=1.2),
    "degenerate": dict(marker="D", mfc="tab:red", mec="k", ms=6),
}
_NULL_STYLE = ({"color": "tab:orange", "ls": "--", "lw": 1.5}, {"color": "tab:green", "ls": "-.", "lw": 1.5})
_CONT_STYLE = {"color": "tab:red", "lw": 5.0, "alpha": 0.35, "solid_capstyle": "round"}


def _new_axes(ax, size=(4.8, 4.0)):
    if ax is None:
        fig = Figure(figsize=size, layout="constrained")
        return fig, fig.add_subplot()
    if not hasattr(ax, "plot") or not hasattr(ax, "figure"):
        raise fail("ax", type(ax).__name__, "a matplotlib Axes or None")
    return ax.figure, ax


def _check_count(name, value, minimum=0):
    return check_int(name, value, f"an integer >= {minimum}", lambda v: v >= minimum)


def _check_domain(domain):
    if domain is None:
        return None
    try:
        d = np.asarray(domain, dtype=np.float64)
    except (TypeError, ValueError):
        raise fail("domain", domain, "((lo, hi), (lo, hi)) in state order") from None
    if d.shape != (2, 2) or not np.all(np.isfinite(d)) or np.any(d[:, 1] <= d[:, 0]):
        raise fail("domain", domain, "((lo, hi), (lo, hi)) in state order, finite, lo < hi")
    return tuple((float(a), float(b)) for a, b in d)


def _break_jumps(xy: np.ndarray, span) -> np.ndarray:
    """Insert NaN rows where consecutive points jump by more than half the span (chart wrap-arounds)."""
    if len(xy) < 2:
        return xy
    with np.errstate(invalid="ignore"):
        jump = np.any(np.abs(np.diff(xy, axis=0)) > 0.5 * np.asarray(span), axis=1)
    if not np.any(jump):
        return xy
    idx = np.flatnonzero(jump) + 1
    return np.insert(xy, idx, np.nan, axis=0)


def _segments(lines):
    """Split polylines with NaN rows into finite segments for a LineCollection."""
    out = []
    for line in lines:
        ok = np.all(np.isfinite(line), axis=1)
        if not ok.any():
            continue
        edges = np.flatnonzero(np.diff(np.concatenate([[0], ok.astype(int), [0]])))
        for a, b in zip(edges[::2], edges[1::2]):
            if b - a >= 2:
                out.append(line[a:b])
    return out


def _angle_ticks(ax, axis="x"):
    ticks = [-math.pi, -math.pi / 2, 0.0, math.pi / 2, math.pi]
    labels = [r"$-\pi$", r"$-\pi/2$", r"$0$", r"$\pi/2$", r"$\pi$"]
    if axis == "x":
        ax.set_xticks(ticks, labels)
    else:
        ax.set_yticks(ticks, labels)


def phase_portrait(
    model,
    data=None,
    n_trajectories: int = 256,
    *,
    t1: float | None = None,
    domain=None,
    ax=None,
    stream: bool = True,
    nullclines: bool = True,
    grid: int = 41,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    title: str | None = None,
    legend: bool = True,
):
    """The phase portrait of the exact planar reduction of `model`.

    Shared-scale models (``normalized``) are drawn for one linear layer on 2-D inputs in the plane
    ``(θ, ρ)`` with ``V = (cos θ, sin θ)``; per-layer models (``unnormalized``, ``weightnorm``) for the
    scalar two-layer chain ``f(x) = w_2 w_1 x`` in the plane of signed scales ``(ρ_1, ρ_2)``
    (see :class:`Reduced2D`). Drawn: the vector field (grey streamlines); the nullclines (solved by sympy
    where it can, contoured otherwise); the equilibria found by Newton root finding and classified from the
    Jacobian's eigenvalues (● stable node, ○ unstable node, half-filled: saddle, ◆ degenerate); continua of
    equilibria (the λ = 0 case) as a thick red band; and `n_trajectories` trajectories started on a grid
    and integrated in one compiled, vmapped diffrax call, coloured by their end point's horizontal coordinate
    (so that end points depending on the start show as a colour gradient).

    **Arguments:**

    - `model`: a :class:`flowsim.Model` (``fs.load_model(...)``), or a :class:`Reduced2D`.
    - `data`: a :class:`flowsim.Dataset` of dimension 2 (normalized) or 1 (per-layer models); ``None``
      for the small default data set (:func:`default_data`).
    - `n_trajectories`: number of trajectories (0 for none), started at cell centres of a grid.
    - `t1`: integration time; default 10 over the slowest nonzero rate at the equilibria.
    - `domain`: ``((lo, hi), (lo, hi))`` in state order (``(ρ, θ)`` or ``(ρ_1, ρ_2)``); default
      :meth:`Reduced2D.default_domain`.
    - `ax`: a matplotlib Axes to draw into; default a new Figure.
    - `stream`, `nullclines`: draw the streamlines, the nullclines.
    - `grid`: streamline grid points per axis.
    - `rtol`, `atol`: tolerances of the trajectories' step-size controller.
    - `title`: the panel title; default the model, λ and the reduction.
    - `legend`: draw a legend.

    **Returns:** the :class:`matplotlib.figure.Figure`.
    """
    if isinstance(model, Reduced2D):
        if data is not None:
            raise fail("data", type(data).__name__, "None when `model` is already a Reduced2D")
        red = model
    else:
        red = reduced_model(model, data)
    n_trajectories = _check_count("n_trajectories", n_trajectories)
    grid = _check_count("grid", grid, minimum=5)
    dom = _check_domain(domain) or red.default_domain()
    if t1 is not None:
        check_real("t1", t1, "a finite time > 0 or None", lambda v: v > 0)
    fig, ax = _new_axes(ax)
    ix, iy = red.plot_axes
    (x0, x1), (y0, y1) = dom[ix], dom[iy]
    span = np.array([x1 - x0, y1 - y0])

    def to_plot(z):
        z = np.asarray(z)
        return np.stack([z[..., ix], z[..., iy]], axis=-1)

    eqs = red.equilibria(dom)
    conts = red.continua(dom)

    # Vector field.
    if stream:
        gx, gy = np.linspace(x0, x1, grid), np.linspace(y0, y1, grid)
        X, Y = np.meshgrid(gx, gy)
        Z = np.empty(X.shape + (2,))
        Z[..., ix], Z[..., iy] = X, Y
        F = red.field(Z.reshape(-1, 2)).reshape(Z.shape)
        ax.streamplot(gx, gy, F[..., ix], F[..., iy], color="0.72", density=1.1, linewidth=0.6, arrowsize=0.7,
                      zorder=1)

    # Trajectories.
    handles = []
    if n_trajectories:
        z0 = red.grid(n_trajectories, dom)
        T = float(t1) if t1 is not None else red.time_scale(eqs, conts)
        _, zs, ok, _ = red.integrate(z0, T, rtol=rtol, atol=atol)
        if not ok.all():
            warnings.warn(f"{int((~ok).sum())} of {len(ok)} trajectories did not finish; drawn up to the failure",
                          RuntimeWarning, stacklevel=2)
        zs = red.canonical(zs)
        lines = [_break_jumps(to_plot(z), span) for z in zs]
        finals = np.array([to_plot(z[np.all(np.isfinite(z), axis=1)][-1]) if np.isfinite(z[0]).all() else
                           [np.nan, np.nan] for z in zs])
        norm = Normalize(x0, x1)
        cmap = _cmap("viridis")
        segs, cols = [], []
        for line, fin in zip(lines, finals):
            for s in _segments([line]):
                segs.append(s)
                cols.append(cmap(norm(fin[0])) if np.isfinite(fin[0]) else (0.5, 0.5, 0.5, 1.0))
        ax.add_collection(LineCollection(segs, colors=cols, linewidths=0.7, alpha=0.55, zorder=2))
        p0 = to_plot(z0)
        ax.scatter(p0[:, 0], p0[:, 1], s=2.5, c="0.35", zorder=2, linewidths=0)
        handles.append(Line2D([], [], color=cmap(0.5), lw=1.0, label=f"{n_trajectories} trajectories"))

    # Nullclines.
    if nullclines:
        names = [lab.strip("$") for lab in red.labels]
        for nc in red.nullclines():
            style = _NULL_STYLE[nc.component]
            label = rf"$\dot{{{names[nc.component]}}} = 0$"
            if nc.method == "symbolic":
                for br in nc.branches:
                    raw = red.curve_points(br, (nc.component,), dom, 1201)
                    pts = red.canonical(raw)
                    pts[~np.all(np.isfinite(raw), axis=1)] = np.nan
                    xy = _break_jumps(to_plot(pts), span)
                    ax.plot(xy[:, 0], xy[:, 1], zorder=3, **style)
            else:
                n = 161
                gx, gy = np.linspace(x0, x1, n), np.linspace(y0, y1, n)
                X, Y = np.meshgrid(gx, gy)
                Z = np.empty(X.shape + (2,))
                Z[..., ix], Z[..., iy] = X, Y
                F = red.field(Z.reshape(-1, 2)).reshape(Z.shape)[..., nc.component]
                ax.contour(gx, gy, F, levels=[0.0], colors=[style["color"]], linestyles=[style["ls"]],
                           linewidths=[style["lw"]], zorder=3)
                label += " (contour)"
            handles.append(Line2D([], [], label=label, **style))

    # Continua of equilibria and isolated equilibria.
    for c in conts:
        for br in c.branches:
            xy = _break_jumps(to_plot(red.curve_points(br, (0, 1), dom, 1201)), span)
            ax.plot(xy[:, 0], xy[:, 1], zorder=4, **_CONT_STYLE)
        if not c.branches:  # found numerically: the sampled roots, in order along the horizontal axis
            xy = _break_jumps(to_plot(c.samples), 0.5 * span)
            ax.plot(xy[:, 0], xy[:, 1], zorder=4, **_CONT_STYLE)
    if conts:
        handles.append(Line2D([], [], label="continuum of equilibria (degenerate)", **_CONT_STYLE))
    seen = set()
    for q in eqs:
        pts = [q.point]
        if red.kind == "angle" and q.point[0] == 0.0:  # (0, θ) and (0, θ ± π) are the same point
            for shift in (math.pi, -math.pi):
                p = q.point + np.array([0.0, shift])
                if dom[1][0] - 1e-12 <= p[1] <= dom[1][1] + 1e-12:
                    pts.append(p)
        for p in pts:
            xy = to_plot(p)
            ax.plot([xy[0]], [xy[1]], ls="none", zorder=5, **_EQ_STYLE[q.kind])
        if q.kind not in seen:
            seen.add(q.kind)
            handles.append(Line2D([], [], ls="none", label=q.kind, **_EQ_STYLE[q.kind]))

    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel(red.labels[ix])
    ax.set_ylabel(red.labels[iy])
    if red.kind == "angle":
        _angle_ticks(ax, "x")
    if title is None:
        what = "one linear layer, 2-D inputs" if red.kind == "angle" else "scalar two-layer chain"
        loss = "" if red.model.loss == "square" else f", {red.model.loss} loss"
        title = f"{red.model.name}{loss}, $\\lambda = {red.lam:g}$ ({what})"
    if title:
        ax.set_title(title, fontsize=10)
    if legend and handles:
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize=7,
                  frameon=False, handlelength=2.2, columnspacing=1.2)
    return fig


def _cmap(name):
    from matplotlib import colormaps

    return colormaps[name]


# ------------------------------------------------------------------------------------------------
# Deep networks
# ------------------------------------------------------------------------------------------------
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
    model,
    net,
    data,
    *,
    scales: Sequence[float] = (0.1, 0.5, 2.0),
    seeds: Sequence[int] = (0, 1),
    t1: float = 20.0,
    n_save: int = 200,
    x: str = "min_margin",
    ax=None,
    title: str | None = None,
    legend: bool = True,
    **simulate_kwargs,
):
    """Trajectories of a deep network projected onto (normalized margin or alignment, ρ), with ρ_eq.

    No planar model is exact for a deep network, so this projects full runs of :func:`flowsim.simulate`
    from an ensemble of initial scales and seeds: the horizontal axis is a function of the directions
    ``V`` alone, the vertical axis the overall scale ``ρ`` (log scale). Each run is drawn as a solid line
    coloured by its initial scale (○ start, ● end), with its ``ρ_eq(V(t))`` as a dashed line of the same
    colour: ρ tracks ρ_eq and settles with weight decay. For the margin projections the grey dotted
    curve ``ρ = 1/margin`` is where ``ρ y_n f_n = 1`` (interpolation, equal margins).

    **Arguments:**

    - `model`: a :class:`flowsim.Model`.
    - `net`: a :class:`flowsim.Network`.
    - `data`: a :class:`flowsim.Dataset`.
    - `scales`: initial overall scales ``ρ(0)`` (each > 0).
    - `seeds`: seeds of the initial directions (``model.init(net, key=seed, scale=...)``).
    - `t1`: final time of every run.
    - `n_save`: saved times per run (0, then geometrically spaced from ``1e-4 t1`` to `t1`).
    - `x`: the horizontal coordinate: ``"min_margin"`` (``min_n y_n f_n``, the normalized margin),
      ``"mean_margin"`` (``mean_n y_n f_n``) or ``"alignment"`` (cosine between ``f`` and ``y``).
    - `ax`: a matplotlib Axes to draw into; default a new Figure.
    - `title`, `legend`: as in :func:`phase_portrait`.
    - `simulate_kwargs`: passed on to :func:`flowsim.simulate` (``rtol``, ``atol``, ``solver``, ...).

    **Returns:** the :class:`matplotlib.figure.Figure`. A run that fails with :class:`flowsim.SolveError`
    is drawn up to the failure (its ``partial`` trajectory) and reported with a warning.
    """
    import flowsim as fs

    from ._model import Model, check_problem

    if not isinstance(model, Model):
        raise fail("model", type(model).__name__, "a flowsim.Model (from fs.load_model)")
    check_problem(net, data)
    if x not in _PROJECTIONS:
        raise fail("x", x, f"one of {_PROJECTIONS}")
    scales = list(scales) if isinstance(scales, Sequence) and not isinstance(scales, str) else None
    if not scales or not all(isinstance(s, (int, float, np.floating, np.integer)) and not isinstance(s, bool)
                             and math.isfinite(s) and s > 0 for s in scales):
        raise fail("scales", scales, "a non-empty sequence of initial scales > 0")
    seeds = list(seeds) if isinstance(seeds, Sequence) and not isinstance(seeds, str) else None
    if not seeds or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in seeds):
        raise fail("seeds", seeds, "a non-empty sequence of integer seeds")
    check_real("t1", t1, "a finite time > 0", lambda v: v > 0)
    n_save = _check_count("n_save", n_save, minimum=2)

    simulate_kwargs.setdefault("progress", False)
    fig, ax = _new_axes(ax)
    ts = np.concatenate([[0.0], np.geomspace(1e-4 * t1, t1, n_save - 1)])
    norm = LogNorm(min(scales), max(scales)) if len(set(scales)) > 1 else None
    cmap = _cmap("plasma")
    xs_all = []
    for scale in scales:
        color = cmap(0.1 + 0.75 * norm(scale)) if norm is not None else cmap(0.4)
        for seed in seeds:
            s0 = model.init(net, key=int(seed), scale=float(scale))
            try:
                traj = fs.simulate(model, net, data, s0, t1=float(t1), ts=ts, **simulate_kwargs)
            except SolveError as err:
                warnings.warn(f"deep_portrait: run (scale={scale:g}, seed={seed}) failed: {err}", RuntimeWarning,
                              stacklevel=2)
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
    labels = {"min_margin": r"normalized margin $\min_n y_n f(V; x_n)$",
              "mean_margin": r"mean margin $\frac{1}{N}\sum_n y_n f(V; x_n)$",
              "alignment": r"alignment $\langle y, f\rangle / (\|y\|\,\|f\|)$"}
    ax.set_xlabel(labels[x])
    ax.set_ylabel(r"$\rho$")
    if title is None:
        loss = "" if model.loss == "square" else f", {model.loss} loss"
        title = f"{model.name}{loss}, $\\lambda = {float(model.lam):g}$, widths {net.widths}, {net.activation}"
    if title:
        ax.set_title(title, fontsize=10)
    if legend:
        handles = [Line2D([], [], color=cmap(0.1 + 0.75 * norm(s)) if norm is not None else cmap(0.4), lw=1.2,
                          label=rf"$\rho(0) = {s:g}$") for s in scales]
        handles.append(Line2D([], [], color="0.3", lw=0.9, ls="--", label=r"$\rho_{eq}(V(t))$"))
        if x != "alignment":
            handles.append(Line2D([], [], color="0.4", lw=1.2, ls=":", label=r"$\rho \cdot$ margin $= 1$"))
        handles.append(Line2D([], [], ls="none", marker="o", mfc="w", mec="k", ms=5, label="start"))
        handles.append(Line2D([], [], ls="none", marker="o", mfc="k", mec="k", ms=6, label="end"))
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=4, fontsize=7,
                  frameon=False, handlelength=2.2, columnspacing=1.2)
    return fig


# ------------------------------------------------------------------------------------------------
# The project's figures
# ------------------------------------------------------------------------------------------------
def interpolable_data() -> Dataset:
    """Two points ``x_n = y_n u`` (``u = (0.6, 0.8)``) that one linear layer interpolates exactly.

    At λ = 0 the normalized flow's equilibria then form the continuum ``ρ u·V = 1`` (the singular case).
    """
    u = np.array([0.6, 0.8])
    return Dataset(np.stack([u, -u]), np.array([1.0, -1.0]))


def _deep_problem(quick: bool):
    from . import datasets
    from ._network import Network

    data = datasets.gaussian_clusters(n=16 if quick else 32, dim=4, seed=1)
    net = Network((4, 8, 1) if quick else (4, 8, 8, 1), activation="relu")
    return net, data


def save_all(out_dir="figures", quick: bool = True, dpi: int = 150, deep: bool = True) -> list[Path]:
    """Write the phase-portrait figures as PNG files (used by ``flowsim reproduce``).

    Files: ``phase_normalized.png`` (one linear layer: λ = 0 and λ > 0 on the default data, and λ = 0 on
    :func:`interpolable_data`, the singular continuum), ``phase_unnormalized.png``
    (scalar chain, λ = 0 and λ > 0), ``phase_deep.png`` (deep ReLU networks projected onto
    (normalized margin, ρ); needs :func:`flowsim.simulate`, skipped with a warning if it is missing).

    **Arguments:**

    - `out_dir`: the folder to write to (created if needed).
    - `quick`: fewer trajectories, runs and a smaller network (seconds instead of minutes).
    - `dpi`: resolution of the PNG files.
    - `deep`: also write the deep-network figure.

    **Returns:** the list of written paths.
    """
    from ._model import load_model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = 64 if quick else 256
    written = []
    for name in ("normalized", "unnormalized"):
        panels = [(0.0, None, None), (FIGURE_LAMBDAS[name], None, None)]
        if name == "normalized":  # the singular case needs data a linear layer can interpolate
            panels.append((0.0, interpolable_data(),
                           r"normalized, $\lambda = 0$, interpolable data $x_n = y_n u$: singular"))
        fig = Figure(figsize=(4.8 * len(panels), 4.6), layout="constrained")
        axes = fig.subplots(1, len(panels))
        for ax, (lam, data, title) in zip(axes, panels):
            phase_portrait(load_model(name, lam=lam), data, n_trajectories=n, ax=ax, title=title)
        path = out / f"phase_{name}.png"
        fig.savefig(path, dpi=dpi)
        written.append(path)
    if deep:
        net, data = _deep_problem(quick)
        fig = Figure(figsize=(9.6, 4.6), layout="constrained")
        axes = fig.subplots(1, 2)
        scales = (0.1, 1.0, 4.0) if quick else (0.03, 0.3, 3.0)
        seeds = (0,) if quick else (0, 1)
        deep_portrait(load_model("normalized", lam=1e-2), net, data, scales=scales, seeds=seeds, t1=20.0,
                      ax=axes[0])
        deep_portrait(load_model("unnormalized", lam=0.0), net, data, scales=scales, seeds=seeds, t1=20.0,
                      ax=axes[1])
        path = out / "phase_deep.png"
        fig.savefig(path, dpi=dpi)
        written.append(path)
    return written

