"""``fs.simulate``: error-controlled integration of a model's flow, ReLU kinks included.

The ReLU flow is piecewise smooth (a Filippov system): its gradient jumps where a pre-activation crosses
zero, and trajectories can slide along those switching surfaces, where explicit solvers chatter and stall
(docs/theory.md, "The numerical problem"). flowsim integrates the Sotomayor–Teixeira regularization of the
field — σ′ replaced by the smooth step ½(1 + tanh(z/ε)) in the *vector field* only, the forward pass
unchanged — whose solutions converge to the Filippov ones as ε → 0. Its stiffness (≈ 1/ε inside the band)
is taken by [`flowsim.RosenbrockW`][flowsim.RosenbrockW], a compiled stiff solver that reuses its Jacobian and LU across
steps; the whole solve is one jitted diffrax program (`solve_member`), the same one every member of
``fs.sweep`` runs.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import ArrayLike
from threadpoolctl import threadpool_limits

from .._data import Dataset
from .._errors import Checked, SolveError
from .._model import Model, Network, State, check_state
from ._flat import flat_field
from ._observables import observe
from ._options import check_solve
from ._projection import balance_law
from ._solve import compiled_member, settings_for
from ._stats import RunStats, flow_stats
from ._trajectory import Trajectory


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

    - `model`: from [`flowsim.load_model`][flowsim.load_model].
    - `net`, `data`: the network and the data set (``data.dim == net.widths[0]``).
    - `state`: the initial [`flowsim.State`][flowsim.State].
    - `t1`: end time (the cap when `steady_state` is set).
    - `ts`: save times in ``[0, t1]``, increasing; default 200 times, log-spaced (plus ``t = 0``). Values
      between solver steps come from the solver's dense output.
    - `rtol`, `atol`: error tolerances of the solver.
    - `steady_state`: stop once ``‖ẋ‖ ≤ steady_tol · (1 + ‖x‖)``; the state at the stop is saved last, and
      ``stats.status == "steady_state"``.
    - `solver`: ``"auto"`` = ``"rosenbrock"`` ([`flowsim.RosenbrockW`][flowsim.RosenbrockW], compiled, stiff), or a
      diffrax solver: ``"tsit5"``, ``"dopri5"``, ``"dopri8"`` (explicit), ``"kvaerno5"`` (implicit).
    - `progress`: show diffrax's progress bar; default: when ``t1 > 100``.
    - `smoothing`: width ε of the smooth step replacing σ′ in the field (``"auto"``: 1e-5 for ReLU
      networks, none for linear ones; ``None``: the raw, non-smooth field). It bounds the accuracy whatever
      `rtol`: the error against the ε → 0 (Filippov) flow is ≈ 20–30 ε. ``0``: that flow itself, integrated
      event by event: its accuracy is set by `rtol` alone, and ``stats`` counts its events (crossings,
      entries into sliding, exits).
    - `max_steps`: step limit; reaching it raises [`flowsim.SolveError`][flowsim.SolveError].
    - `steady_tol`: tolerance of the steady-state test.
    - `enforce_balance`: put per-layer scales on the symbolically derived layer-balance manifold at the
      save times (the solver's own deviation is reported as ``stats.max_balance_drift`` either way);
      ``False`` returns the scales as integrated, to measure the balance law rather than impose it.

    **Returns:** a [`flowsim.Trajectory`][flowsim.Trajectory], whose ``stats`` (a
    [`flowsim.RunStats`][flowsim.RunStats]) hold the solver, steps, rejections, Jacobians, kinks crossed and pinned,
    sliding time, wall time, and the manifold deviations removed by projection.

    **Raises:** [`flowsim.SolveError`][flowsim.SolveError] (with ``.partial``, the trajectory up to the failure) on
    non-finite values or the step limit; [`flowsim.InputError`][flowsim.InputError] on bad arguments.
    """
    t1, ts, rtol, atol, solver, eps, steady_tol = check_solve(
        model, net, data, t1, ts, rtol, atol, solver, max_steps, smoothing, steady_tol
    )
    check_state(model, net, state)
    if progress is None:
        progress = t1 > 100
    _warn_if_not_separable(model, net, data, state)
    x, y = jnp.asarray(data.x), jnp.asarray(data.y)
    z0 = ravel_pytree(state)[0]
    f0 = np.asarray(flat_field(model, net, x, y, z0, eps))
    if not np.all(np.isfinite(f0)):
        partial = observe(
            model,
            net,
            data,
            np.array([0.0]),
            jax.tree_util.tree_map(lambda a: a[None], state),
            RunStats(method=solver, status="nonfinite", steps=0, t_final=0.0),
        )
        raise SolveError(
            f"non-finite vector field at t = 0 (first bad coordinate {int(np.argmax(~np.isfinite(f0)))});"
            " reduce the initial scale",
            partial=partial,
        )
    balance0, rate = balance_law(model, state.rho_k)
    settings = settings_for(
        model,
        net,
        eps=eps,
        solver=solver,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
        steady_state=steady_state,
        steady_tol=steady_tol,
        enforce_balance=enforce_balance,
    )
    run = compiled_member(settings, meter=dfx.TqdmProgressMeter() if progress else None)
    started = time.perf_counter()
    # One BLAS thread: the LU factorizations are small, and a multithreaded BLAS competing with XLA's threads
    # was measured up to 100× slower on two cores.
    with threadpool_limits(1, "blas"):
        out = run(x, y, model.lam, jnp.asarray(rate, dtype=jnp.float64), z0, jnp.asarray(ts), jnp.asarray(t1))
        out = jax.tree_util.tree_map(np.asarray, out)
    stats = flow_stats(
        out,
        method=solver,
        model=model.name,
        lam=float(model.lam),
        loss=model.loss,
        rtol=rtol,
        atol=atol,
        smoothing=eps,
        max_steps=int(max_steps),
        t1=t1,
        balance_law=settings.has_balance_law,
        balance_enforced=bool(enforce_balance),
        wall_time=time.perf_counter() - started,
    )
    traj = member_trajectory(out, ts, t1, net.depth, stats)
    if stats.failure:
        raise SolveError(stats.failure, partial=traj)
    if stats.unresolved:
        warnings.warn(
            f"the exact flow's mode was not resolved at {stats.unresolved} event(s) (a selection loop stopped at "
            "its iteration cap); the segments after them follow the best mode found (traj.stats.unresolved)",
            stacklevel=2,
        )
    return traj


def member_trajectory(member: dict, ts, t1: float, depth: int, stats: RunStats) -> Trajectory:
    """A Trajectory of the rows one member reached: the save times, then its end (if not a save time)."""
    t_rows = np.concatenate([ts, [t1]])
    keep = np.asarray(member["reached"], dtype=bool).copy()
    t_final = float(member["t_final"])
    keep[-1] &= not np.any(keep[:-1] & (t_rows[:-1] == t_final))  # the end is saved once
    t_rows[-1] = t_final
    rho_k = member.get("rho_k")
    return Trajectory(
        ts=jnp.asarray(t_rows[keep]),
        rho=jnp.asarray(member["rho"][keep]),
        rho_k=None if rho_k is None else jnp.asarray(rho_k[keep]),
        V=tuple(jnp.asarray(member[f"V_{k + 1}"][keep]) for k in range(depth)),
        margins=jnp.asarray(member["margins"][keep]),
        loss=jnp.asarray(member["loss"][keep]),
        rho_eq=jnp.asarray(member["rho_eq"][keep]),
        stats=stats,
    )


def _warn_if_not_separable(model, net, data, state):
    f = net._forward(state.V, jnp.asarray(data.x))
    avg = float(jnp.sum(jnp.asarray(data.y) * f))
    if avg <= 0:
        warnings.warn(
            f"the initial state is not on average separable: Σ_n y_n f_n = {avg:.3g} <= 0, so ρ_eq < 0 and ρ "
            "first shrinks toward 0; choose another seed or data if that is not intended.",
            stacklevel=3,
        )
