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
import functools
import math
import time

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from threadpoolctl import threadpool_limits

from ._data import Dataset
from ._errors import SolveError, check_int, check_real, fail
from ._model import Model, check_problem, check_state, field
from ._network import Network
from ._state import State
from ._trajectory import Trajectory, observe

SCIPY_SOLVERS = {"bdf": "BDF", "lsoda": "LSODA", "radau": "Radau"}
DIFFRAX_SOLVERS = {"tsit5": dfx.Tsit5, "dopri5": dfx.Dopri5, "dopri8": dfx.Dopri8, "kvaerno5": dfx.Kvaerno5}
SOLVERS = ("auto", *SCIPY_SOLVERS, *DIFFRAX_SOLVERS)
DEFAULT_SMOOTHING = 1e-5  # measured: 1e-4 can follow a different sliding path (8% off at t = 2 on the stall case)


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


def check_solve(model, net, data, t1, ts, rtol, atol, solver, solvers, max_steps, smoothing):
    """Validate what every solve takes (before any tracing).

    **Returns:** ``(t1, ts, rtol, atol, eps)`` with `ts` defaulted to :func:`default_ts` and `eps` the
    smoothing width (``None`` for the raw field).
    """
    if not isinstance(model, Model):
        raise fail("model", type(model).__name__, "a flowsim.Model (from fs.load_model)")
    check_problem(net, data)
    t1, ts = check_times(t1, ts)
    rtol = check_real("rtol", rtol, "a tolerance > 0", lambda v: v > 0)
    atol = check_real("atol", atol, "a tolerance > 0", lambda v: v > 0)
    if not isinstance(solver, str) or solver not in solvers:
        raise fail("solver", solver, f"one of {tuple(solvers)}")
    check_int("max_steps", max_steps, "an integer >= 1", lambda v: v >= 1)
    if isinstance(smoothing, str) and smoothing == "auto":
        eps = DEFAULT_SMOOTHING if net.activation == "relu" else None
    elif smoothing is None or (not isinstance(smoothing, str) and smoothing == 0):
        eps = None
    else:
        eps = check_real("smoothing", smoothing, "a width ε > 0, 0/None, or 'auto'", lambda v: v > 0)
    return t1, default_ts(t1) if ts is None else ts, rtol, atol, eps


def default_ts(t1: float, n: int = 200) -> np.ndarray:
    """The automatic save grid: t = 0 and log-spaced times from t1·1e-4 to t1."""
    ts = np.concatenate([[0.0], np.logspace(math.log10(t1) - 4, math.log10(t1), n - 1)])
    ts[-1] = t1  # 10**log10(t1) can round past t1, which diffrax rejects
    return ts


def _template(model: Model, net: Network) -> State:
    V = tuple(jnp.zeros(shape) for shape in net.shapes)
    return State(V, jnp.zeros(()), jnp.zeros(net.depth) if model.per_layer else None)


def unraveler(model: Model, net: Network):
    """The map from the flat coordinate vector back to a State (fixed by the model and the network)."""
    return ravel_pytree(_template(model, net))[1]


def flat_field(model: Model, net: Network, x, y, z, eps):
    """The field on the flat coordinate vector `z` (traceable): what every simulate solver integrates."""
    return ravel_pytree(field(model, net, x, y, unraveler(model, net)(z), eps))[0]


@functools.lru_cache(maxsize=64)
def _compiled_flat(regime, loss: str, net: Network, eps: float | None):
    """Jitted ``(F, J, pre)`` on flat vectors for one (regime, loss, network, ε), compiled once per data shape.

    λ, the data and the point are arguments, so new λ or data do not recompile. Plain `jax.jit` with every
    static part closed over keeps a call at ~10 µs of dispatch (``eqx.filter_jit`` re-partitions its
    arguments on every call, ~0.2 ms, which dominated the cheap field). The Jacobian is reverse-mode: ~1.5×
    faster than forward mode on these square systems.
    """

    def F(lam, x, y, z):
        return flat_field(Model(regime, lam, loss), net, x, y, z, eps)

    def pre(x, z):
        return _preacts(net, unraveler(Model(regime, 0.0, loss), net)(z).V, x)

    return jax.jit(F), jax.jit(jax.jacrev(F, argnums=3)), jax.jit(pre)


class _Flat:
    """The model's field on a flat vector (jitted), with its Jacobian and pre-activation diagnostics."""

    def __init__(self, model: Model, net: Network, data: Dataset, state: State, eps: float | None):
        self.z0, self.unravel = ravel_pytree(state)[0], unraveler(model, net)  # the map the compiled field uses
        x, y = jnp.asarray(data.x), jnp.asarray(data.y)
        self.model, self.net, self.x, self.y = model, net, x, y
        F, J, pre = _compiled_flat(model.regime, model.loss, net, eps)
        lam = model.lam
        self.F = lambda z: F(lam, x, y, z)
        self.J = lambda z: J(lam, x, y, z)
        self.pre = lambda z: pre(x, z)


def _preacts(net: Network, V, x):
    zs = net.preactivations(V, x)
    return jnp.concatenate([z.ravel() for z in zs]) if zs else jnp.zeros((0,))


def project_states(states: State, balance0=None, rate=0.0, ts=None, enforce_balance: bool = True):
    """Put time-stacked states back on their manifolds (traceable; shared by simulate and sweep).

    Directions are scaled to unit norm with the norms folded into the scales (the network function is
    unchanged, by homogeneity). For per-layer models with a layer-balance law (`balance0` = ρ_k(0)², `rate`
    = the derived c) the deviation from ``ρ_k² − ρ_1² = (ρ_k(0)² − ρ_1(0)²) e^{c t}`` is measured, and
    with `enforce_balance` the scales are put on that manifold, keeping ``Σ_k ρ_k²``.

    **Returns:** ``(states, norm_drift, balance_drift)``; the drifts are maxima over time (0 if not defined).
    """
    norms = jnp.stack([jnp.linalg.norm(v.reshape(v.shape[0], -1), axis=1) for v in states.V], axis=1)
    V = tuple(v / n[:, None, None] for v, n in zip(states.V, norms.T))
    norm_drift = jnp.max(jnp.abs(norms - 1.0))
    if states.rho_k is None:
        return State(V, states.rho * jnp.prod(norms, axis=1), None), norm_drift, jnp.zeros(())
    rk = states.rho_k * norms
    balance_drift = jnp.zeros(())
    if balance0 is not None and rk.shape[1] > 1:
        sq = rk**2
        c = (balance0 - jnp.mean(balance0))[None, :] * jnp.exp(rate * jnp.asarray(ts))[:, None]
        target = jnp.mean(sq, axis=1, keepdims=True) + c
        balance_drift = jnp.max(jnp.abs(sq - target) / jnp.max(sq, axis=1, keepdims=True))
        if enforce_balance:
            rk = jnp.sqrt(jnp.maximum(target, 0.0))
    return State(V, jnp.prod(rk, axis=1), rk), norm_drift, balance_drift


def balance_law(model: Model, rho_k0):
    """``(ρ_k(0)², c)`` of the derived layer-balance law, or ``(None, 0.0)`` where the model has none."""
    if rho_k0 is None or not model.per_layer or model.derivation.invariant is None:
        return None, 0.0
    return rho_k0**2, model.invariant_rate()


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
    model: Model,
    net: Network,
    data: Dataset,
    state: State,
    t1: float,
    ts=None,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    steady_state: bool = False,
    solver: str = "auto",
    progress: bool | None = None,
    smoothing: float | None | str = "auto",
    max_steps: int = 200_000,
    steady_tol: float = 1e-6,
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

    flat = _Flat(model, net, data, state, eps)
    f0 = np.asarray(flat.F(flat.z0))
    if not np.all(np.isfinite(f0)):
        partial = _trajectory(model, net, data, state, flat, np.array([0.0]), np.asarray(flat.z0)[None],
                              {"solver": solver, "failure": "non-finite field at t = 0"})
        raise SolveError(f"non-finite vector field at t = 0 (first bad coordinate {int(np.argmax(~np.isfinite(f0)))});"
                         " reduce the initial scale", partial=partial)
    started = time.perf_counter()
    if solver in SCIPY_SOLVERS:
        t_saved, z_saved, stats = _scipy_solve(flat, solver, t1, ts, rtol, atol, steady_state, steady_tol, progress,
                                               max_steps, eps)
    else:
        t_saved, z_saved, stats = _diffrax_solve(flat, solver, t1, ts, rtol, atol, steady_state, steady_tol,
                                                 progress, max_steps, eps)
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
    return tqdm(total=round(total, 3), unit=unit, desc="simulate", leave=False,
                bar_format="{l_bar}{bar}| {n:.2f}/{total:.2f} " + unit + " [{elapsed}<{remaining}]")


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
    fun = lambda t, z: np.asarray(F(z))  # noqa: E731
    jac = lambda t, z: np.asarray(J(z))  # noqa: E731
    cls = getattr(si, SCIPY_SOLVERS[solver])
    acc = {"switches": 0, "sliding_time": 0.0}
    t_saved, z_saved = [], []
    i = 0  # next save time index
    while i < len(ts) and ts[i] <= 0.0:
        t_saved.append(ts[i]); z_saved.append(z0); i += 1  # noqa: E702
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
                    stats["failure"] = (f"non-finite values in the step from t = {t_old:.6g} ({err}); "
                                        "reduce the initial scale or the tolerances")
                    break
                if integ.status == "failed":
                    stats["failure"] = f"step failed at t = {t_old:.6g}: {message}"
                    break
                if not np.all(np.isfinite(integ.y)):
                    bad = int(np.argmax(~np.isfinite(integ.y)))
                    stats["failure"] = (f"non-finite state at t = {integ.t:.6g} (first bad coordinate {bad}); "
                                        "reduce the initial scale or the tolerances")
                    break
                n_acc += 1
                if ts[i:].size and ts[i] <= integ.t:
                    dense = integ.dense_output()
                    while i < len(ts) and ts[i] <= integ.t:
                        t_saved.append(ts[i]); z_saved.append(dense(ts[i])); i += 1  # noqa: E702
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
                    stats["failure"] = (f"reached max_steps = {max_steps} at t = {integ.t:.6g} of t1 = {t1:g}; "
                                        "raise max_steps, loosen rtol/atol, or widen `smoothing`")
                    break
        finally:
            if bar is not None:
                bar.close()
    if (not t_saved or t_saved[-1] < integ.t) and np.all(np.isfinite(integ.y)):  # never save a non-finite row
        t_saved.append(integ.t); z_saved.append(integ.y.copy())  # noqa: E702
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


def diffrax_solve(F, z0, t1, ts, rtol, atol, solver, max_steps, steady_state=False, steady_tol=1e-6,
                  progress_meter=None):
    """One pure diffrax solve of ``ż = F(z)`` saving at `ts` and at the end (vmappable; used by sweeps)."""
    term = dfx.ODETerm(lambda t, z, args: F(z))
    event = None
    if steady_state:
        def cond(t, z, args, **kwargs):
            return jnp.linalg.norm(F(z)) <= steady_tol * (1.0 + jnp.linalg.norm(z))

        event = dfx.Event(cond)
    return dfx.diffeqsolve(
        term,
        DIFFRAX_SOLVERS[solver](),
        0.0,
        t1,
        None,
        z0,
        saveat=dfx.SaveAt(ts=jnp.asarray(ts), t1=True),
        stepsize_controller=dfx.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps,
        event=event,
        throw=False,
        progress_meter=progress_meter if progress_meter is not None else dfx.NoProgressMeter(),
    )


@eqx.filter_jit
def _diffrax_run(model, net, x, y, z0, ts, t1, rtol, atol, solver, max_steps, steady_state, steady_tol, eps,
                 meter):
    # A module-level compiled solve: repeated simulate calls on one problem reuse it (λ and t1 are traced).
    def F(z):
        return flat_field(model, net, x, y, z, eps)

    return diffrax_solve(F, z0, t1, ts, rtol, atol, solver, max_steps, steady_state, steady_tol, meter)


def _diffrax_solve(flat, solver, t1, ts, rtol, atol, steady_state, steady_tol, progress, max_steps, eps):
    meter = dfx.TqdmProgressMeter() if progress else dfx.NoProgressMeter()
    sol = _diffrax_run(flat.model, flat.net, flat.x, flat.y, flat.z0, jnp.asarray(ts), jnp.asarray(t1), rtol, atol,
                       solver, max_steps, steady_state, steady_tol, eps, meter)
    ys = np.asarray(sol.ys)
    t_all = np.concatenate([ts, [float(sol.ts[-1])]])
    keep = np.isfinite(ys).all(axis=1) & np.isfinite(t_all)
    if keep[-1]:
        keep[:-1] &= ts <= t_all[-1]  # saves past a steady-state stop are not reached
        keep[-1] = not np.any(ts == t_all[-1])  # the end time is saved once
    t_saved, z_saved = t_all[keep], ys[keep]
    # after a failure diffrax reports no end time: the last finite save is where the solve is known to have got
    t_end = float(t_saved[-1]) if len(t_saved) else 0.0
    stats = {"steady_state": bool(steady_state and sol.result == dfx.RESULTS.event_occurred),
             "failure": None}
    last_bad = len(z_saved) and not np.all(np.isfinite(np.asarray(flat.F(jnp.asarray(z_saved[-1])))))
    if sol.result == dfx.RESULTS.max_steps_reached and last_bad:
        stats["failure"] = f"non-finite vector field after t = {t_end:.6g}; reduce the initial scale or the tolerances"
    elif sol.result == dfx.RESULTS.max_steps_reached:
        stats["failure"] = (f"reached max_steps = {max_steps} past t = {t_end:.6g} of "
                            f"t1 = {t1:g}; raise max_steps, loosen rtol/atol, or use solver='bdf'")
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
