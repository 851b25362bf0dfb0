"""``fs.simulate``: error-controlled integration of a model's flow, ReLU kinks included.

The ReLU flow is piecewise smooth (a Filippov system): its gradient jumps where a pre-activation crosses
zero, and trajectories can slide along those switching surfaces. Explicit solvers chatter there and stall
(design.md). flowsim integrates the Sotomayor–Teixeira regularization of the field instead — σ′ replaced
by the smooth step ½(1 + tanh(z/ε)) in the *vector field* only, with the forward pass unchanged — whose
solutions converge to the Filippov ones as ε → 0, with a stiff solver that reuses its Jacobian across
steps (scipy's BDF driven by the jitted field and its jitted Jacobian). Measured on the stall case, that
was the fastest option by far (see ``benchmarks/results/integrator.md``); explicit and implicit diffrax
solvers stay available through `solver` (and are what ``fs.sweep`` vmaps).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike
from threadpoolctl import threadpool_limits

from .._data import Dataset
from .._errors import Checked, SolveError, check_real
from .._model import Model, Network, State, check_state
from ._diffrax import diffrax_solve
from ._flat import Flat, flat_field
from ._observables import observe
from ._options import SCIPY_SOLVERS, SOLVERS, check_solve
from ._projection import balance_law, project_states
from ._trajectory import Trajectory

BDF_NEWTON_ITERATIONS = 8  # scipy's default of 4 often fails to converge near kinks (see _bdf_setup)


@contextlib.contextmanager
def _bdf_setup():
    """Count scipy BDF step attempts (each Newton solve is one), to report rejected steps exactly, and allow
    its Newton solves `BDF_NEWTON_ITERATIONS` iterations.

    Near kinks scipy's 4 iterations often fail to converge, which rejects the step, refactors and rebuilds
    the Jacobian. Measured on the stall case to steady state, 8 iterations cut the LUs 13.1k → 9.7k and the
    Jacobians 4.7k → 3.0k for 19% more field calls: 20% less wall time (four alternated runs).
    """
    from scipy.integrate._ivp import bdf

    counter = {"attempts": 0}
    original, maxiter = bdf.solve_bdf_system, bdf.NEWTON_MAXITER

    def counting(*args, **kwargs):
        counter["attempts"] += 1
        return original(*args, **kwargs)

    bdf.solve_bdf_system, bdf.NEWTON_MAXITER = counting, BDF_NEWTON_ITERATIONS
    try:
        yield counter
    finally:
        bdf.solve_bdf_system, bdf.NEWTON_MAXITER = original, maxiter


def simulate(
    model: Checked[Model],
    net: Checked[Network],
    data: Checked[Dataset],
    state: Checked[State],
    *,
    t1: Checked[float],
    ts: Checked[ArrayLike | Sequence[float] | None] = None,
    rtol: Checked[float] = 1e-6,
    atol: Checked[float] = 1e-9,
    steady_state: bool = False,
    solver: Checked[str] = "auto",
    progress: bool | None = None,
    smoothing: Checked[float | None | str] = "auto",
    max_steps: Checked[int] = 200_000,
    steady_tol: Checked[float] = 1e-6,
    enforce_balance: bool = True,
) -> Trajectory:
    """Integrate the flow of `model` from `state` over ``[0, t1]``.

    **Arguments:**

    - `model`: from :func:`flowsim.load_model`.
    - `net`, `data`: the network and the data set (``data.dim == net.widths[0]``).
    - `state`: the initial :class:`flowsim.State`.
    - `t1`: end time (the cap when `steady_state` is set).
    - `ts`: save times in ``[0, t1]``, increasing; default 200 times, log-spaced (plus ``t = 0``).
    - `rtol`, `atol`: error tolerances of the solver.
    - `steady_state`: stop once ``‖ẋ‖ ≤ steady_tol · (1 + ‖x‖)``; the final state is saved too and
      ``stats["steady_state"]`` says whether it was reached.
    - `solver`: ``"auto"`` (BDF), ``"bdf"``, ``"lsoda"``, ``"radau"`` (scipy, Jacobian reused across
      steps), or ``"tsit5"``, ``"dopri5"``, ``"dopri8"``, ``"kvaerno5"`` (diffrax).
    - `progress`: show a progress bar (log-time axis to steady state); default: when ``t1 > 100``.
    - `smoothing`: width ε of the smooth step replacing σ′ in the field (``"auto"``: 1e-5 for ReLU
      networks, none for linear ones; ``None`` or 0: the raw, non-smooth field). It bounds the accuracy
      whatever `rtol`: on the benchmark's stall case the error against the ε → 0 (Filippov) flow is ≈ 20 ε,
      so narrow it, with `rtol`, for tighter answers.
    - `max_steps`: step limit; reaching it raises :class:`flowsim.SolveError`.
    - `steady_tol`: tolerance of the steady-state test.
    - `enforce_balance`: put per-layer scales on the symbolically derived layer-balance manifold at the
      save times (the solver's own deviation is reported as ``stats["max_balance_drift"]`` either way);
      ``False`` returns the scales as integrated, to measure the balance law rather than impose it.

    **Returns:** a :class:`flowsim.Trajectory`. Its ``stats`` hold the solver, accepted and rejected
    steps, field and Jacobian evaluations, activation switches, sliding time (time with some
    pre-activation inside the smoothing band, i.e. pinned to a switching surface), wall time, and the
    manifold deviations removed by projection.

    **Raises:** :class:`flowsim.SolveError` (with ``.partial``, the trajectory up to the failure) on a
    failed step, non-finite values or the step limit; :class:`flowsim.InputError` on bad arguments.
    """
    t1, ts, rtol, atol, eps = check_solve(model, net, data, t1, ts, rtol, atol, solver, SOLVERS, max_steps, smoothing)
    check_state(model, net, state)
    steady_tol = check_real("steady_tol", steady_tol, "a tolerance > 0", lambda v: v > 0)
    if progress is None:
        progress = t1 > 100
    solver = "bdf" if solver == "auto" else solver
    _warn_if_not_separable(model, net, data, state)

    flat = Flat(model, net, data, state, eps)
    f0 = np.asarray(flat.F(flat.z0))
    if not np.all(np.isfinite(f0)):
        partial = _trajectory(
            model,
            net,
            data,
            state,
            flat,
            np.array([0.0]),
            np.asarray(flat.z0)[None],
            {"solver": solver, "failure": "non-finite field at t = 0"},
        )
        raise SolveError(
            f"non-finite vector field at t = 0 (first bad coordinate {int(np.argmax(~np.isfinite(f0)))});"
            " reduce the initial scale",
            partial=partial,
        )
    started = time.perf_counter()
    if solver in SCIPY_SOLVERS:
        t_saved, z_saved, stats = _scipy_solve(
            flat, solver, t1, ts, rtol, atol, steady_state, steady_tol, progress, max_steps, eps
        )
    else:
        t_saved, z_saved, stats = _diffrax_solve(
            flat, solver, t1, ts, rtol, atol, steady_state, steady_tol, progress, max_steps, eps
        )
    stats.update(solver=solver, smoothing=eps, rtol=rtol, atol=atol, wall_time=time.perf_counter() - started)
    traj = _trajectory(model, net, data, state, flat, t_saved, z_saved, stats, enforce_balance)
    if stats.get("failure"):
        raise SolveError(stats["failure"], partial=traj)
    return traj


def _trajectory(model, net, data, state, flat, t_saved, z_saved, stats, enforce_balance=True) -> Trajectory:
    states = jax.vmap(flat.unravel)(jnp.asarray(np.asarray(z_saved).reshape(len(t_saved), -1)))
    balance0, rate = balance_law(model, state.rho_k)
    states, norm_drift, balance_drift = project_states(states, balance0, rate, t_saved, enforce_balance)
    stats.update(max_norm_drift=float(norm_drift), balance_enforced=bool(balance0 is not None and enforce_balance))
    if balance0 is not None:
        stats["max_balance_drift"] = float(balance_drift)
    return observe(model, net, data, np.asarray(t_saved), states, stats)


def _warn_if_not_separable(model, net, data, state):
    import warnings

    f = net._forward(state.V, jnp.asarray(data.x))
    avg = float(jnp.sum(jnp.asarray(data.y) * f))
    if avg <= 0:
        warnings.warn(
            f"the initial state is not on average separable: Σ_n y_n f_n = {avg:.3g} <= 0, so ρ_eq < 0 and ρ "
            "first shrinks toward 0; choose another seed or data if that is not intended.",
            stacklevel=3,
        )


def _switch_stats(flat, z_prev, z_new, dt, eps, acc):
    p_new = np.asarray(flat.pre(z_new))
    p_prev = acc.get("_pre")
    if p_prev is None:
        p_prev = np.asarray(flat.pre(z_prev))
    acc["switches"] += int(np.sum(np.signbit(p_prev) != np.signbit(p_new)))
    if eps and p_new.size and np.min(np.abs(p_new)) < 10 * eps:
        acc["sliding_time"] += dt
    acc["_pre"] = p_new


def _progress_bar(enabled, t1, steady_state):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    unit = "decade" if steady_state else "t"
    total = math.log10(t1) + 6 if steady_state else t1
    return tqdm(
        total=round(total, 3),
        unit=unit,
        desc="simulate",
        leave=False,
        bar_format="{l_bar}{bar}| {n:.2f}/{total:.2f} " + unit + " [{elapsed}<{remaining}]",
    )


def _bare_lapack(integ):
    """Give scipy's BDF LAPACK's getrf/getrs without scipy.linalg's wrappers (−0.15 ms per LU, −13 µs per solve).

    BDF solves 3–4 systems per step on 353 coordinates, so the wrappers' input checks were ~5% of a run.
    Non-finite values are still caught: they reach the state, which the step loop checks.
    """
    from scipy.linalg.lapack import dgetrf, dgetrs

    def lu(A):
        integ.nlu += 1
        factors, piv, _ = dgetrf(A, overwrite_a=True)
        return factors, piv

    def solve_lu(LU, b):
        return dgetrs(LU[0], LU[1], b, overwrite_b=True)[0]

    integ.lu, integ.solve_lu = lu, solve_lu


def _scipy_solve(flat, solver, t1, ts, rtol, atol, steady_state, steady_tol, progress, max_steps, eps):
    import scipy.integrate as si

    F, J = flat.F, flat.J
    z0 = np.asarray(flat.z0)
    fun = lambda t, z: np.asarray(F(z))
    jac = lambda t, z: np.asarray(J(z))
    cls = getattr(si, SCIPY_SOLVERS[solver])
    acc = {"switches": 0, "sliding_time": 0.0}
    t_saved, z_saved = [], []
    i = 0  # next save time index
    while i < len(ts) and ts[i] <= 0.0:
        t_saved.append(ts[i])
        z_saved.append(z0)
        i += 1
    bar = _progress_bar(progress, t1, steady_state)
    stats = {"steady_state": False, "failure": None}
    n_acc = 0
    # One BLAS thread: the LU factorizations are small, and JAX's threads compete for the 2 cores.
    with _bdf_setup() as counter, threadpool_limits(1, "blas"):
        integ = cls(fun, 0.0, z0, t1, rtol=rtol, atol=atol, jac=jac)
        if solver == "bdf":
            _bare_lapack(integ)
        try:
            while integ.status == "running":
                t_old, z_old = integ.t, integ.y.copy()
                try:
                    message = integ.step()
                except (ValueError, np.linalg.LinAlgError) as err:  # scipy's LU rejects non-finite Jacobians
                    stats["failure"] = (
                        f"non-finite values in the step from t = {t_old:.6g} ({err}); "
                        "reduce the initial scale or the tolerances"
                    )
                    break
                if integ.status == "failed":
                    stats["failure"] = f"step failed at t = {t_old:.6g}: {message}"
                    break
                if not np.all(np.isfinite(integ.y)):
                    bad = int(np.argmax(~np.isfinite(integ.y)))
                    stats["failure"] = (
                        f"non-finite state at t = {integ.t:.6g} (first bad coordinate {bad}); "
                        "reduce the initial scale or the tolerances"
                    )
                    break
                n_acc += 1
                if ts[i:].size and ts[i] <= integ.t:
                    dense = integ.dense_output()
                    while i < len(ts) and ts[i] <= integ.t:
                        t_saved.append(ts[i])
                        z_saved.append(dense(ts[i]))
                        i += 1
                _switch_stats(flat, z_old, integ.y, integ.t - t_old, eps, acc)
                if bar is not None:
                    pos = math.log10(max(integ.t, 1e-6)) + 6 if steady_state else integ.t
                    bar.update(round(pos - bar.n, 3))
                if steady_state:
                    # the step's secant speed screens out most steps before paying for a field evaluation
                    bound = steady_tol * (1.0 + float(np.linalg.norm(integ.y)))
                    secant = float(np.linalg.norm(integ.y - z_old)) / max(integ.t - t_old, 1e-300)
                    if secant <= 10 * bound and float(np.linalg.norm(fun(integ.t, integ.y))) <= bound:
                        stats["steady_state"] = True
                        break
                if n_acc >= max_steps:
                    stats["failure"] = (
                        f"reached max_steps = {max_steps} at t = {integ.t:.6g} of t1 = {t1:g}; "
                        "raise max_steps, loosen rtol/atol, or widen `smoothing`"
                    )
                    break
        finally:
            if bar is not None:
                bar.close()
    if (not t_saved or t_saved[-1] < integ.t) and np.all(np.isfinite(integ.y)):  # never save a non-finite row
        t_saved.append(integ.t)
        z_saved.append(integ.y.copy())
    stats.update(
        t_final=float(integ.t),
        accepted_steps=n_acc,
        # counted through BDF's Newton solves; LSODA and Radau do not expose their rejections
        rejected_steps=max(counter["attempts"] - n_acc, 0) if solver == "bdf" else None,
        field_evaluations=int(integ.nfev),
        jacobian_evaluations=int(integ.njev),
        lu_decompositions=int(getattr(integ, "nlu", 0)),
        switches=acc["switches"],
        sliding_time=float(acc["sliding_time"]),
        final_speed=float(np.linalg.norm(fun(integ.t, z_saved[-1]))),
    )
    return np.asarray(t_saved), np.stack(z_saved), stats


@eqx.filter_jit
def _diffrax_run(model, net, x, y, z0, ts, t1, rtol, atol, solver, max_steps, steady_state, steady_tol, eps, meter):
    # A module-level compiled solve: repeated simulate calls on one problem reuse it (λ and t1 are traced).
    def F(z):
        return flat_field(model, net, x, y, z, eps)

    return diffrax_solve(F, z0, t1, ts, rtol, atol, solver, max_steps, steady_state, steady_tol, meter)


def _diffrax_solve(flat, solver, t1, ts, rtol, atol, steady_state, steady_tol, progress, max_steps, eps):
    meter = dfx.TqdmProgressMeter() if progress else dfx.NoProgressMeter()
    sol = _diffrax_run(
        flat.model,
        flat.net,
        flat.x,
        flat.y,
        flat.z0,
        jnp.asarray(ts),
        jnp.asarray(t1),
        rtol,
        atol,
        solver,
        max_steps,
        steady_state,
        steady_tol,
        eps,
        meter,
    )
    ys = np.asarray(sol.ys)
    t_all = np.concatenate([ts, [float(sol.ts[-1])]])
    keep = np.isfinite(ys).all(axis=1) & np.isfinite(t_all)
    if keep[-1]:
        keep[:-1] &= ts <= t_all[-1]  # saves past a steady-state stop are not reached
        keep[-1] = not np.any(ts == t_all[-1])  # the end time is saved once
    t_saved, z_saved = t_all[keep], ys[keep]
    # after a failure diffrax reports no end time: the last finite save is where the solve is known to have got
    t_end = float(t_saved[-1]) if len(t_saved) else 0.0
    stats = {"steady_state": bool(steady_state and sol.result == dfx.RESULTS.event_occurred), "failure": None}
    last_bad = len(z_saved) and not np.all(np.isfinite(np.asarray(flat.F(jnp.asarray(z_saved[-1])))))
    if sol.result == dfx.RESULTS.max_steps_reached and last_bad:
        stats["failure"] = f"non-finite vector field after t = {t_end:.6g}; reduce the initial scale or the tolerances"
    elif sol.result == dfx.RESULTS.max_steps_reached:
        stats["failure"] = (
            f"reached max_steps = {max_steps} past t = {t_end:.6g} of "
            f"t1 = {t1:g}; raise max_steps, loosen rtol/atol, or use solver='bdf'"
        )
    elif sol.result not in (dfx.RESULTS.successful, dfx.RESULTS.event_occurred):
        stats["failure"] = f"diffrax stopped: {sol.result} (last saved t = {t_end:.6g})"
    acc = {"switches": 0, "sliding_time": 0.0}
    for a, b, ta, tb in zip(z_saved[:-1], z_saved[1:], t_saved[:-1], t_saved[1:]):
        _switch_stats(flat, a, b, tb - ta, eps, acc)
    stats.update(
        t_final=t_end,
        accepted_steps=int(sol.stats["num_accepted_steps"]),
        rejected_steps=int(sol.stats["num_rejected_steps"]),
        field_evaluations=None,
        switches=acc["switches"],
        sliding_time=float(acc["sliding_time"]),
        switch_counts_from="saved times only",
    )
    return t_saved, z_saved, stats
