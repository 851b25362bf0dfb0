"""What every portrait shares: marker and line styles, new axes, argument checks, and polyline helpers."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from .._errors import check_int, fail

EQ_STYLE = {
    "stable node": dict(marker="o", mfc="k", mec="k", ms=7),
    "stable focus": dict(marker="o", mfc="k", mec="k", ms=7),
    "unstable node": dict(marker="o", mfc="w", mec="k", ms=7, mew=1.4),
    "unstable focus": dict(marker="o", mfc="w", mec="k", ms=7, mew=1.4),
    "saddle": dict(marker="o", mfc="k", mec="k", ms=7, fillstyle="left", mfcalt="w", mew=1.2),
    "center": dict(marker="s", mfc="w", mec="k", ms=6, mew=1.2),
    "degenerate": dict(marker="D", mfc="tab:red", mec="k", ms=6),
}
NULL_STYLE = ({"color": "tab:orange", "ls": "--", "lw": 1.5}, {"color": "tab:green", "ls": "-.", "lw": 1.5})
CONT_STYLE = {"color": "tab:red", "lw": 5.0, "alpha": 0.35, "solid_capstyle": "round"}


def new_axes(ax, size=(4.8, 4.0)):
    """``(figure, axes)``: a new Figure (never through pyplot, so no backend is selected) or the given Axes'."""
    if ax is None:
        fig = Figure(figsize=size, layout="constrained")
        return fig, fig.add_subplot()
    if not hasattr(ax, "plot") or not hasattr(ax, "figure"):
        raise fail("ax", type(ax).__name__, "a matplotlib Axes or None")
    return ax.figure, ax


def check_count(name, value, minimum=0):
    """`value` as an int >= `minimum`, else an InputError naming `name`."""
    return check_int(name, value, f"an integer >= {minimum}", lambda v: v >= minimum)


def check_domain(domain):
    """`domain` as ``((lo, hi), (lo, hi))`` floats, or ``None``; else an InputError."""
    if domain is None:
        return None
    try:
        d = np.asarray(domain, dtype=np.float64)
    except (TypeError, ValueError):
        raise fail("domain", domain, "((lo, hi), (lo, hi)) in state order") from None
    if d.shape != (2, 2) or not np.all(np.isfinite(d)) or np.any(d[:, 1] <= d[:, 0]):
        raise fail("domain", domain, "((lo, hi), (lo, hi)) in state order, finite, lo < hi")
    return tuple((float(a), float(b)) for a, b in d)


def break_jumps(xy: np.ndarray, span) -> np.ndarray:
    """Insert NaN rows where consecutive points jump by more than half the span (chart wrap-arounds)."""
    if len(xy) < 2:
        return xy
    with np.errstate(invalid="ignore"):
        jump = np.any(np.abs(np.diff(xy, axis=0)) > 0.5 * np.asarray(span), axis=1)
    if not np.any(jump):
        return xy
    idx = np.flatnonzero(jump) + 1
    return np.insert(xy, idx, np.nan, axis=0)


def segments(lines):
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


ANGLE_TICKS = (-math.pi, -math.pi / 2, 0.0, math.pi / 2, math.pi)
ANGLE_LABELS = (r"$-\pi$", r"$-\pi/2$", r"$0$", r"$\pi/2$", r"$\pi$")


def angle_ticks(ax, axis="x"):
    """Ticks at multiples of π/2 on the angle axis."""
    if axis == "x":
        ax.set_xticks(ANGLE_TICKS, ANGLE_LABELS)
    else:
        ax.set_yticks(ANGLE_TICKS, ANGLE_LABELS)


def cmap(name):
    """A registered matplotlib colormap."""
    from matplotlib import colormaps

    return colormaps[name]
