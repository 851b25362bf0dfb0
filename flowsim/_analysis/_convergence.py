"""The order of convergence of GD to the flow as the learning rate goes to zero."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
from jaxtyping import Float

from .._errors import Checked, fail
from .._solver import Trajectory
from ._compare import METRICS, check_trajectory, compare


@dataclasses.dataclass(frozen=True)
class ConvergenceOrder:
    """The estimated order ``p`` of ``error ≈ C · lr^p``.

    Fields:

    - `order`: the least-squares slope of ``log error`` against ``log lr``.
    - `lrs`: the learning rates, increasing.
    - `errors`: the error at each learning rate (the largest distance over the matched times).
    - `slopes`: the slopes between successive learning rates (a check that the order is asymptotic).
    - `metric`: which distance of [`flowsim.Comparison`][flowsim.Comparison] was used.
    """

    order: float
    lrs: np.ndarray
    errors: np.ndarray
    slopes: np.ndarray
    metric: str

    def __repr__(self) -> str:
        return f"ConvergenceOrder(order={self.order:.3f}, metric={self.metric!r}, lrs={self.lrs.tolist()})"


def convergence_order(
    flow: Checked[Trajectory],
    runs: Checked[Sequence[Trajectory] | Mapping[float, Trajectory]],
    *,
    metric: Checked[str] = "weights",
    lrs: Checked[Sequence[float] | Float[np.ndarray, " R"] | None] = None,
) -> ConvergenceOrder:
    """Estimate the order of convergence of GD to the flow as ``lr → 0``.

    Each run is compared with `flow` ([`flowsim.compare`][flowsim.compare]), its error is the largest distance `metric`
    over the matched times, and the order is the least-squares slope of ``log error`` against ``log lr``
    (1 for GD, which is the explicit Euler method of the flow).

    **Arguments:**

    - `flow`: the reference [`flowsim.Trajectory`][flowsim.Trajectory].
    - `runs`: at least two [`flowsim.Trajectory`][flowsim.Trajectory] from ``fs.sgd`` at different learning rates (their
      ``stats.lr`` is used), or a mapping ``{lr: trajectory}``.
    - `metric`: one of ``"weights"`` (the default), ``"directions"``, ``"rho"``, ``"rho_k"``,
      ``"margins"``, ``"loss"``, ``"rho_eq"``.
    - `lrs`: the learning rates of `runs`, if they are not in the runs' ``stats``.

    **Returns:** a [`flowsim.ConvergenceOrder`][flowsim.ConvergenceOrder] with the order, the errors and the pairwise
    slopes.
    """
    if metric not in METRICS:
        raise fail("metric", metric, f"one of {METRICS}")
    if isinstance(runs, Mapping):
        if lrs is not None:
            raise fail("lrs", lrs, "None when `runs` is a mapping {lr: trajectory}")
        lrs, runs = list(runs.keys()), list(runs.values())
    if isinstance(runs, (str, bytes)) or not isinstance(runs, Sequence) or len(runs) < 2:
        raise fail("runs", type(runs).__name__, "a sequence of at least two trajectories from fs.sgd")
    for i, r in enumerate(runs):
        check_trajectory(f"runs[{i}]", r)
    if lrs is None:
        missing = [i for i, r in enumerate(runs) if r.stats is None or r.stats.lr is None]
        if missing:
            raise fail(f"runs[{missing[0]}]", "a trajectory without stats.lr", "runs from fs.sgd, or pass `lrs`")
        lrs = [r.stats.lr for r in runs]
    lrs = np.asarray(lrs, dtype=np.float64)
    if lrs.shape != (len(runs),) or not np.all(np.isfinite(lrs)) or np.any(lrs <= 0):
        raise fail("lrs", lrs.tolist(), f"{len(runs)} finite learning rates > 0, one per run")
    if np.unique(lrs).size != lrs.size:
        raise fail("lrs", lrs.tolist(), "distinct learning rates")
    errors = []
    for r in runs:
        c = compare(flow, r)
        values = getattr(c, metric)
        if values is None:
            raise fail("metric", metric, "a distance both trajectories have (rho_k needs per-layer scales)")
        errors.append(float(np.max(values)))
    errors = np.asarray(errors)
    if not np.all(np.isfinite(errors)) or np.any(errors <= 0):
        raise fail("runs", f"errors {errors.tolist()}", "finite positive errors (is a run identical to the flow?)")
    order = np.argsort(lrs)
    lrs, errors = lrs[order], errors[order]
    x, y = np.log(lrs), np.log(errors)
    slope = float(np.polyfit(x, y, 1)[0])
    slopes = np.diff(y) / np.diff(x)
    return ConvergenceOrder(order=slope, lrs=lrs, errors=errors, slopes=slopes, metric=metric)
