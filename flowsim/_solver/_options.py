"""What every solve takes: the solver names, the smoothing width, the save grid, and their validation."""

from __future__ import annotations

import math

import diffrax as dfx
import numpy as np

from .._errors import check_int, check_real, fail
from .._model import check_model, check_problem, resolve_smoothing

# "rosenbrock" is flowsim's compiled stiff solver (RosenbrockW), what "auto" means; the others are diffrax's.
EXPLICIT = {"tsit5": dfx.Tsit5, "dopri5": dfx.Dopri5, "dopri8": dfx.Dopri8, "kvaerno5": dfx.Kvaerno5}
SOLVERS = ("auto", "rosenbrock", *EXPLICIT)


def check_times(t1, ts):
    """Validate `t1` and `ts`; return ``(t1, ts as float64 numpy array or None)``."""
    t1 = check_real("t1", t1, "a finite end time > 0", lambda v: v > 0)
    if ts is None:
        return t1, None
    arr = np.asarray(ts, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise fail("ts", ts, "a non-empty 1-D array of save times")
    if not np.all(np.isfinite(arr)):
        raise fail("ts", ts, "finite save times")
    if arr[0] < 0 or arr[-1] > t1:
        raise fail("ts", f"times in [{arr[0]:g}, {arr[-1]:g}]", f"times within [0, t1] = [0, {t1:g}]")
    if arr.size > 1 and np.any(np.diff(arr) <= 0):
        raise fail("ts", ts, "strictly increasing save times")
    return t1, arr


def check_solve(model, net, data, t1, ts, rtol, atol, solver, max_steps, smoothing, steady_tol=1e-6):
    """Validate what every solve takes (before any tracing).

    **Returns:** ``(t1, ts, rtol, atol, solver, eps, steady_tol)`` with `ts` defaulted to `default_ts`,
    ``"auto"`` resolved, and `eps` the smoothing width (``None`` for the raw field).
    """
    check_model(model)
    check_problem(net, data)
    t1, ts = check_times(t1, ts)
    rtol = check_real("rtol", rtol, "a tolerance > 0", lambda v: v > 0)
    atol = check_real("atol", atol, "a tolerance > 0", lambda v: v > 0)
    if not isinstance(solver, str) or solver not in SOLVERS:
        raise fail("solver", solver, f"one of {SOLVERS}")
    check_int("max_steps", max_steps, "an integer >= 1", lambda v: v >= 1)
    eps = resolve_smoothing(net, smoothing)
    if eps == 0.0 and solver not in ("auto", "rosenbrock"):
        raise fail("solver", solver, "'auto' with smoothing=0 (the exact flow has its own event-driven integrator)")
    steady_tol = check_real("steady_tol", steady_tol, "a tolerance > 0", lambda v: v > 0)
    solver = "rosenbrock" if solver == "auto" else solver
    return t1, default_ts(t1) if ts is None else ts, rtol, atol, solver, eps, steady_tol


def default_ts(t1: float, n: int = 200) -> np.ndarray:
    """The automatic save grid: t = 0 and log-spaced times from t1·1e-4 to t1."""
    ts = np.concatenate([[0.0], np.logspace(math.log10(t1) - 4, math.log10(t1), n - 1)])
    ts[-1] = t1  # 10**log10(t1) can round past t1, which diffrax rejects
    return ts
