"""Comparing two trajectories (typically the flow and a GD/SGD run) at matched times."""

from __future__ import annotations

import dataclasses

import numpy as np

from .._errors import Checked, check_real, fail
from .._solver import Trajectory

METRICS = ("weights", "directions", "rho", "rho_k", "margins", "loss", "rho_eq")


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Distances between two trajectories at matched times (numpy arrays, one entry per matched time).

    Fields:

    - `ts`: the matched times (the times of `run` inside the time span of `flow`), shape ``(T,)``.
    - `weights`: ``(Σ_k ‖W_k − W'_k‖²)^{1/2}`` with ``W_k = ρ_k V_k`` (per-layer scales on both sides) or
      ``W = (V_1, …, V_{L−1}, ρ V_L)`` (when either side has one shared scale).
    - `directions`: ``(Σ_k ‖V_k − V'_k‖²)^{1/2}``.
    - `rho`: ``|ρ − ρ'|``.
    - `rho_k`: ``max_k |ρ_k − ρ'_k|``, or ``None`` unless both sides have per-layer scales.
    - `margins`: ``max_n |y_n f_n − y_n f'_n|``.
    - `loss`: ``|L − L'|``.
    - `rho_eq`: ``|ρ_eq − ρ'_eq|``.
    - `interpolated`: whether `flow` had to be interpolated (linearly) at some of the matched times;
      ``False`` when every time of `run` is one of the saved times of `flow`.
    """

    ts: np.ndarray
    weights: np.ndarray
    directions: np.ndarray
    rho: np.ndarray
    rho_k: np.ndarray | None
    margins: np.ndarray
    loss: np.ndarray
    rho_eq: np.ndarray
    interpolated: bool

    def max(self) -> dict:
        """The largest distance over the matched times, for every metric (``None`` where absent)."""
        return {m: None if getattr(self, m) is None else float(np.max(getattr(self, m))) for m in METRICS}

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v:.3g}" for k, v in self.max().items() if v is not None)
        return f"Comparison({self.ts.size} times in [{self.ts[0]:g}, {self.ts[-1]:g}], max {shown})"


def check_trajectory(name, traj):
    if not isinstance(traj, Trajectory):
        raise fail(name, type(traj).__name__, "a flowsim.Trajectory (from fs.simulate or fs.sgd)")


def _at(a: np.ndarray, lo: np.ndarray, hi: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Linear interpolation ``(1 − w) a[lo] + w a[hi]`` along the first axis."""
    shape = (-1,) + (1,) * (a.ndim - 1)
    return (1.0 - w.reshape(shape)) * a[lo] + w.reshape(shape) * a[hi]


def compare(flow: Checked[Trajectory], run: Checked[Trajectory], *, rtol: Checked[float] = 1e-9) -> Comparison:
    """Distances of weights and observables between `flow` and `run` at the times of `run`.

    The times of `run` that lie in the saved time span of `flow` are matched; where a time of `run` is a
    saved time of `flow` (to `rtol`) that save is used, elsewhere `flow` is interpolated linearly between
    its neighbouring saves (then its directions are not exactly unit-norm; save the flow at ``ts=run.ts``
    for exact matching).

    **Arguments:**

    - `flow`: the reference [`flowsim.Trajectory`][flowsim.Trajectory] (e.g. from ``fs.simulate``).
    - `run`: the [`flowsim.Trajectory`][flowsim.Trajectory] to measure (e.g. from ``fs.sgd``); same network and data.
    - `rtol`: relative tolerance for two times to count as the same.

    **Returns:** a [`flowsim.Comparison`][flowsim.Comparison]; ``.max()`` gives the worst case of every distance.
    """
    check_trajectory("flow", flow)
    check_trajectory("run", run)
    check_real("rtol", rtol, "a finite number >= 0", lambda v: v >= 0)
    if len(flow.V) != len(run.V) or any(a.shape[1:] != b.shape[1:] for a, b in zip(flow.V, run.V)):
        raise fail(
            "run",
            f"weights of shapes {[tuple(v.shape[1:]) for v in run.V]}",
            f"the shapes of `flow`, {[tuple(v.shape[1:]) for v in flow.V]}",
        )
    if flow.margins.shape[1] != run.margins.shape[1]:
        raise fail("run", f"{run.margins.shape[1]} samples", f"the {flow.margins.shape[1]} samples of `flow`")

    ft, rt = np.asarray(flow.ts), np.asarray(run.ts)
    tol = rtol * max(1.0, float(np.max(np.abs(ft))))
    keep = (rt >= ft[0] - tol) & (rt <= ft[-1] + tol)
    if not keep.any():
        raise fail(
            "run",
            f"times in [{rt.min():g}, {rt.max():g}]",
            f"some times inside the span of `flow`, [{ft[0]:g}, {ft[-1]:g}]",
        )
    ts = rt[keep]
    hi = np.clip(np.searchsorted(ft, ts), 0, ft.size - 1)
    lo = np.clip(hi - 1, 0, ft.size - 1)
    exact_hi = np.abs(ft[hi] - ts) <= tol
    exact_lo = np.abs(ft[lo] - ts) <= tol
    span = np.where(ft[hi] > ft[lo], ft[hi] - ft[lo], 1.0)
    w = np.clip((ts - ft[lo]) / span, 0.0, 1.0)
    w = np.where(exact_hi, 1.0, np.where(exact_lo, 0.0, w))
    interpolated = bool(np.any(~(exact_hi | exact_lo)))

    def F(a):
        return _at(np.asarray(a), lo, hi, w)

    def R(a):
        return np.asarray(a)[keep]

    fV, rV = [F(v) for v in flow.V], [R(v) for v in run.V]
    frho, rrho = F(flow.rho), R(run.rho)
    per_layer = flow.rho_k is not None and run.rho_k is not None
    if per_layer:
        frk, rrk = F(flow.rho_k), R(run.rho_k)
        fW = [frk[:, k, None, None] * v for k, v in enumerate(fV)]
        rW = [rrk[:, k, None, None] * v for k, v in enumerate(rV)]
        drk = np.max(np.abs(frk - rrk), axis=1)
    else:
        fW = fV[:-1] + [frho[:, None, None] * fV[-1]]
        rW = rV[:-1] + [rrho[:, None, None] * rV[-1]]
        drk = None

    def dist(A, B):
        return np.sqrt(sum(np.sum((a - b) ** 2, axis=(1, 2)) for a, b in zip(A, B)))

    return Comparison(
        ts=ts,
        weights=dist(fW, rW),
        directions=dist(fV, rV),
        rho=np.abs(frho - rrho),
        rho_k=drk,
        margins=np.max(np.abs(F(flow.margins) - R(run.margins)), axis=1),
        loss=np.abs(F(flow.loss) - R(run.loss)),
        rho_eq=np.abs(F(flow.rho_eq) - R(run.rho_eq)),
        interpolated=interpolated,
    )
