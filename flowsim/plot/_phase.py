"""The phase portrait of a model's exact planar reduction: vector field, trajectories, nullclines, equilibria."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.lines import Line2D

from .._analysis import Reduced2D, reduced_model
from .._data import Dataset
from .._errors import Checked, check_real, fail
from .._model import Model
from ._style import (
    ANGLE_LABELS,
    ANGLE_TICKS,
    CONT_STYLE,
    EQ_STYLE,
    NULL_STYLE,
    angle_ticks,
    break_jumps,
    check_count,
    check_domain,
    cmap,
    new_axes,
    segments,
)


@dataclasses.dataclass(frozen=True)
class _View:
    """Which state coordinate is drawn on which axis, and the drawn ranges."""

    ix: int
    iy: int
    xlim: tuple[float, float]
    ylim: tuple[float, float]

    @classmethod
    def of(cls, red: Reduced2D, dom) -> _View:
        ix, iy = red.plot_axes
        return cls(ix, iy, dom[ix], dom[iy])

    @property
    def span(self) -> np.ndarray:
        return np.array([self.xlim[1] - self.xlim[0], self.ylim[1] - self.ylim[0]])

    def to_plot(self, z) -> np.ndarray:
        """States (state order, last axis) to plot coordinates (horizontal, vertical)."""
        z = np.asarray(z)
        return np.stack([z[..., self.ix], z[..., self.iy]], axis=-1)

    def grid(self, n: int):
        """An ``n × n`` grid over the drawn ranges: ``(gx, gy, states)`` with states of shape ``(n, n, 2)``."""
        gx, gy = np.linspace(*self.xlim, n), np.linspace(*self.ylim, n)
        X, Y = np.meshgrid(gx, gy)
        Z = np.empty(X.shape + (2,))
        Z[..., self.ix], Z[..., self.iy] = X, Y
        return gx, gy, Z


def _draw_field(ax, red: Reduced2D, view: _View, grid: int) -> None:
    gx, gy, Z = view.grid(grid)
    F = red.field(Z.reshape(-1, 2)).reshape(Z.shape)
    ax.streamplot(
        gx, gy, F[..., view.ix], F[..., view.iy], color="0.72", density=1.1, linewidth=0.6, arrowsize=0.7, zorder=1
    )


def _draw_trajectories(ax, red: Reduced2D, view: _View, dom, n: int, t1: float, rtol: float, atol: float):
    """`n` trajectories from a grid, coloured by their end point's horizontal coordinate."""
    z0 = red.grid(n, dom)
    _, zs, ok, _ = red.integrate(z0, t1=t1, rtol=rtol, atol=atol)
    if not ok.all():
        warnings.warn(
            f"{int((~ok).sum())} of {len(ok)} trajectories did not finish; drawn up to the failure",
            RuntimeWarning,
            stacklevel=3,
        )
    zs = red.canonical(zs)
    lines = [break_jumps(view.to_plot(z), view.span) for z in zs]
    finals = np.array(
        [
            view.to_plot(z[np.all(np.isfinite(z), axis=1)][-1]) if np.isfinite(z[0]).all() else [np.nan, np.nan]
            for z in zs
        ]
    )
    norm = Normalize(*view.xlim)
    colors = cmap("viridis")
    segs, cols = [], []
    for line, fin in zip(lines, finals):
        for s in segments([line]):
            segs.append(s)
            cols.append(colors(norm(fin[0])) if np.isfinite(fin[0]) else (0.5, 0.5, 0.5, 1.0))
    ax.add_collection(LineCollection(segs, colors=cols, linewidths=0.7, alpha=0.55, zorder=2))
    p0 = view.to_plot(z0)
    ax.scatter(p0[:, 0], p0[:, 1], s=2.5, c="0.35", zorder=2, linewidths=0)
    handles = [Line2D([], [], color=colors(0.5), lw=1.0, label=f"{n} trajectories (grey dots: starts)")]
    return handles, ScalarMappable(norm=norm, cmap=colors)


def _draw_nullclines(ax, red: Reduced2D, view: _View, dom):
    """Solved nullclines as curves, the others as the zero contour of their component."""
    handles = []
    names = [lab.strip("$") for lab in red.labels]
    for nc in red.nullclines():
        style = NULL_STYLE[nc.component]
        label = rf"$\dot{{{names[nc.component]}}} = 0$"
        if nc.method == "symbolic":
            for br in nc.branches:
                raw = red.curve_points(br, (nc.component,), dom, 1201)
                pts = red.canonical(raw)
                pts[~np.all(np.isfinite(raw), axis=1)] = np.nan
                xy = break_jumps(view.to_plot(pts), view.span)
                ax.plot(xy[:, 0], xy[:, 1], zorder=3, **style)
        else:
            gx, gy, Z = view.grid(161)
            F = red.field(Z.reshape(-1, 2)).reshape(Z.shape)[..., nc.component]
            ax.contour(
                gx,
                gy,
                F,
                levels=[0.0],
                colors=[style["color"]],
                linestyles=[style["ls"]],
                linewidths=[style["lw"]],
                zorder=3,
            )
            label += " (contour)"
        handles.append(Line2D([], [], label=label, **style))
    return handles


def _draw_equilibria(ax, red: Reduced2D, view: _View, dom, eqs, conts):
    """Continua as thick bands, isolated equilibria as markers of their kind."""
    handles = []
    for c in conts:
        for br in c.branches:
            xy = break_jumps(view.to_plot(red.curve_points(br, (0, 1), dom, 1201)), view.span)
            ax.plot(xy[:, 0], xy[:, 1], zorder=4, **CONT_STYLE)
        if not c.branches:  # found numerically: the sampled roots, in order along the horizontal axis
            xy = break_jumps(view.to_plot(c.samples), 0.5 * view.span)
            ax.plot(xy[:, 0], xy[:, 1], zorder=4, **CONT_STYLE)
    if conts:
        handles.append(Line2D([], [], label="continuum of equilibria (degenerate)", **CONT_STYLE))
    seen = set()
    for q in eqs:
        pts = [q.point]
        if red.kind == "angle" and q.point[0] == 0.0:  # (0, θ) and (0, θ ± π) are the same point
            for shift in (math.pi, -math.pi):
                p = q.point + np.array([0.0, shift])
                if dom[1][0] - 1e-12 <= p[1] <= dom[1][1] + 1e-12:
                    pts.append(p)
        for p in pts:
            xy = view.to_plot(p)
            ax.plot([xy[0]], [xy[1]], ls="none", zorder=5, **EQ_STYLE[q.kind])
        if q.kind not in seen:
            seen.add(q.kind)
            handles.append(Line2D([], [], ls="none", label=q.kind, **EQ_STYLE[q.kind]))
    return handles


def _colorbar(ax, red: Reduced2D, view: _View, mappable) -> None:
    """The colour key of the trajectories: where each one ends, on the horizontal axis."""
    label = red.labels[view.ix]
    cb = ax.figure.colorbar(mappable, ax=ax, shrink=0.85, pad=0.02)
    cb.set_label(f"trajectory colour: final {label}", fontsize=8)
    cb.ax.tick_params(labelsize=7)
    if red.kind == "angle":
        lo, hi = view.xlim
        ticks = [(t, lab) for t, lab in zip(ANGLE_TICKS, ANGLE_LABELS) if lo - 1e-9 <= t <= hi + 1e-9]
        cb.set_ticks([t for t, _ in ticks], labels=[lab for _, lab in ticks])


def _finish(ax, red: Reduced2D, view: _View, title, legend: bool, handles) -> None:
    """Limits, labels, the title and the legend."""
    ax.set_xlim(*view.xlim)
    ax.set_ylim(*view.ylim)
    names = {
        "rho": "scale",
        "theta": "direction angle",
        "rho_1": "signed scale of layer 1",
        "rho_2": "signed scale of layer 2",
    }
    ax.set_xlabel(f"{names.get(red.kernel.names[view.ix], '')} {red.labels[view.ix]}".strip())
    ax.set_ylabel(f"{names.get(red.kernel.names[view.iy], '')} {red.labels[view.iy]}".strip())
    if red.kind == "angle":
        angle_ticks(ax, "x")
    if title is None:
        if red.kind == "angle":
            what = r"one linear layer on 2-D inputs, $V = (\cos\theta, \sin\theta)$"
        else:
            what = r"scalar two-layer chain $f(x) = w_2 w_1 x$"
        loss = "" if red.model.loss == "square" else f", {red.model.loss} loss"
        plane = f"({red.labels[view.ix]}, {red.labels[view.iy]})".replace("$, $", ", ")
        title = f"Phase portrait in {plane}: {red.model.name}{loss}, $\\lambda = {red.lam:g}$\n{what}"
    if title:
        ax.set_title(title, fontsize=9)
    if legend and handles:
        ax.legend(
            handles=handles,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.13),
            ncol=3,
            fontsize=7,
            frameon=False,
            handlelength=2.2,
            columnspacing=1.2,
        )


def phase_portrait(
    model: Checked[Model | Reduced2D],
    data: Checked[Dataset | None] = None,
    *,
    n_trajectories: Checked[int] = 256,
    t1: Checked[float | None] = None,
    domain=None,
    ax=None,
    stream: bool = True,
    nullclines: bool = True,
    grid: Checked[int] = 41,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    title: str | None = None,
    legend: bool = True,
    colorbar: bool = True,
):
    """The phase portrait of the exact planar reduction of `model`.

    Shared-scale models (``normalized``) are drawn for one linear layer on 2-D inputs in the plane
    ``(θ, ρ)`` with ``V = (cos θ, sin θ)``; per-layer models (``unnormalized``, ``weightnorm``) for the
    scalar two-layer chain ``f(x) = w_2 w_1 x`` in the plane of signed scales ``(ρ_1, ρ_2)``
    (see [`flowsim.plot.Reduced2D`][flowsim.plot.Reduced2D]). Drawn: the vector field (grey streamlines);
    the nullclines (solved by sympy where it can, contoured otherwise); the equilibria found by Newton root
    finding and classified from the Jacobian's eigenvalues (● stable node, ○ unstable node, half-filled:
    saddle, ◆ degenerate); continua of equilibria (the λ = 0 case) as a thick red band; and `n_trajectories`
    trajectories started on a grid and integrated in one compiled, vmapped diffrax call, coloured by their
    end point's horizontal coordinate (so that end points depending on the start show as a colour gradient;
    the colour bar beside the panel gives the scale, trajectories that did not finish are grey).

    **Arguments:**

    - `model`: a [`flowsim.Model`][flowsim.Model] (``fs.load_model(...)``), or a
      [`flowsim.plot.Reduced2D`][flowsim.plot.Reduced2D].
    - `data`: a [`flowsim.Dataset`][flowsim.Dataset] of dimension 2 (normalized) or 1 (per-layer models); ``None``
      for the small default data set ([`flowsim.plot.default_data`][flowsim.plot.default_data]).
    - `n_trajectories`: number of trajectories (0 for none), started at cell centres of a grid.
    - `t1`: integration time; default 10 over the slowest nonzero rate at the equilibria.
    - `domain`: ``((lo, hi), (lo, hi))`` in state order (``(ρ, θ)`` or ``(ρ_1, ρ_2)``); default
      [`flowsim.plot.Reduced2D.default_domain`][flowsim.plot.Reduced2D.default_domain].
    - `ax`: a matplotlib Axes to draw into; default a new Figure.
    - `stream`, `nullclines`: draw the streamlines, the nullclines.
    - `grid`: streamline grid points per axis.
    - `rtol`, `atol`: tolerances of the trajectories' step-size controller.
    - `title`: the panel title; default the plane, the model, λ and the reduction.
    - `legend`: draw a legend.
    - `colorbar`: draw the colour bar of the trajectories' end points beside the panel.

    **Returns:** the `matplotlib.figure.Figure`.
    """
    if isinstance(model, Reduced2D):
        if data is not None:
            raise fail("data", type(data).__name__, "None when `model` is already a Reduced2D")
        red = model
    else:
        red = reduced_model(model, data)
    n_trajectories = check_count("n_trajectories", n_trajectories)
    grid = check_count("grid", grid, minimum=5)
    dom = check_domain(domain) or red.default_domain()
    if t1 is not None:
        check_real("t1", t1, "a finite time > 0 or None", lambda v: v > 0)
    fig, ax = new_axes(ax)
    view = _View.of(red, dom)
    eqs = red.equilibria(dom)
    conts = red.continua(dom)

    if stream:
        _draw_field(ax, red, view, grid)
    handles = []
    if n_trajectories:
        T = float(t1) if t1 is not None else red.time_scale(eqs, conts)
        lines, mappable = _draw_trajectories(ax, red, view, dom, n_trajectories, T, rtol, atol)
        handles += lines
        if colorbar:
            _colorbar(ax, red, view, mappable)
    if nullclines:
        handles += _draw_nullclines(ax, red, view, dom)
    handles += _draw_equilibria(ax, red, view, dom, eqs, conts)
    _finish(ax, red, view, title, legend, handles)
    return fig
