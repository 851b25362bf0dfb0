"""The one solve behind ``fs.simulate`` and every member of ``fs.sweep``.

A member is one initial state and one λ. `solve_member` integrates it with diffrax (flowsim's compiled stiff
[`flowsim.RosenbrockW`][flowsim.RosenbrockW] by default), saves at the requested times, stops at a steady state if
asked, projects the saved states back onto their manifolds, and computes the observables and the run statistics, all in
one traceable function: ``simulate`` jits it, ``sweep`` jits its ``vmap``. So a member of a sweep is the same
computation as its single ``simulate`` run.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import diffrax as dfx
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from .._model import Model, Network
from ._exact import (
    CHATTER_STOP,
    MAX_EVENTS_STOP,
    MAX_STEPS_STOP,
    NONFINITE_STOP,
    REACHED,
    STEADY_STOP,
    exact_member,
)
from ._flat import flat_field, kink_statistics, unraveler
from ._observables import observe_one
from ._options import EXPLICIT
from ._projection import balance_law, project_states
from ._rosenbrock import RosenbrockW
from ._stats import CHATTERING, FAILED, MAX_STEPS, NONFINITE, OK, STEADY


class Settings(NamedTuple):
    """The static part of a solve: one compiled program per distinct value."""

    regime: object
    loss: str
    net: Network
    eps: float | None  # smoothing width of σ′ (None: the raw field)
    solver: str  # a key of SOLVERS other than "auto"
    rtol: float
    atol: float
    max_steps: int
    steady_state: bool
    steady_tol: float
    enforce_balance: bool
    has_balance_law: bool


def settings_for(
    model: Model, net: Network, *, eps, solver, rtol, atol, max_steps, steady_state, steady_tol, enforce_balance
) -> Settings:
    """The `Settings` of a validated solve of `model` on `net` (simulate's and sweep's)."""
    has_law = balance_law(model, jnp.ones(net.depth))[0] is not None
    return Settings(
        model.regime,
        model.loss,
        net,
        eps,
        solver,
        rtol,
        atol,
        int(max_steps),
        bool(steady_state),
        steady_tol,
        bool(enforce_balance),
        has_law,
    )


def make_solver(name: str) -> dfx.AbstractSolver:
    """The diffrax solver behind a solver name (``"rosenbrock"``: flowsim's, set for ReLU flows)."""
    if name == "rosenbrock":
        # No in-step retry: the Jacobian of a ReLU flow jumps at each kink, so a retry with a fresh one rarely
        # saves the step; measured on the stall case, retrying was 1.6× slower.
        return RosenbrockW(jacobian="rev", retry=False)
    return EXPLICIT[name]()


def make_controller(name: str, rtol: float, atol: float) -> dfx.PIDController:
    if name == "rosenbrock":
        # A PI controller with a growth cap keeps the step size smooth, so the LU serves more steps
        # (measured on the stall case: 25% less time than the default integral controller).
        return dfx.PIDController(rtol=rtol, atol=atol, pcoeff=0.3, icoeff=0.4, factormax=3.0)
    return dfx.PIDController(rtol=rtol, atol=atol)


def pin_tolerance(eps: float | None) -> float:
    """|z| below which a hidden pre-activation counts as pinned at a kink (10 ε, or 1e-9 for the raw field)."""
    return 10.0 * eps if eps else 1e-9


def solve_member(settings: Settings, x, y, lam, rate, z0, ts, t1, meter=None) -> dict:
    """Integrate one member and post-process it (traceable and vmappable over `lam`, `rate`, `z0`).

    **Arguments:**

    - `settings`: the static `Settings`.
    - `x`, `y`: the data arrays.
    - `lam`: the member's λ; `rate`: the rate of its layer-balance law (0 where there is none).
    - `z0`: the flat initial state (``ravel_pytree`` of a State).
    - `ts`: save times, shape ``(T,)``; `t1`: the end time (the state at the end is saved too).
    - `meter`: a diffrax progress meter.

    **Returns:** a dict of arrays over the ``T + 1`` save rows (``ts`` then the end): ``reached`` (whether the
    solve got there), ``t`` (the time of the row's state: the stop time for rows after a steady-state stop,
    whose state is held), the projected state (``V_1..V_L``, ``rho``, ``rho_k``), ``margins``, ``loss``,
    ``rho_eq``; and per member ``status``, ``t_final``, ``steps``, ``rejected_steps``, ``jacobians``,
    ``final_speed``, ``switches``, ``pinned``, ``sliding_time``, ``norm_drift``, ``balance_drift``.
    """
    s = settings
    model = Model(s.regime, lam, s.loss)
    net = s.net
    t_rows = jnp.concatenate([jnp.asarray(ts), jnp.asarray(t1)[None]])
    run = _integrate_exact if s.eps == 0.0 else _integrate_smoothed
    r = run(s, model, x, y, z0, ts, t1, meter)
    zs, t_final, z_end = r.pop("zs"), r["t_final"], r.pop("z_end")
    finite = jnp.all(jnp.isfinite(zs), axis=1)
    stopped = r["status"] == STEADY
    # The end row holds the end state at t_final; save rows after a steady-state stop hold the stopped state
    # (the flow is stationary there to steady_tol); rows after a failure are NaN, and the status says why.
    t_reached = t_rows.at[-1].set(t_final)
    zs = zs.at[-1].set(z_end)
    reached = (finite & (t_rows <= t_final)).at[-1].set(jnp.all(jnp.isfinite(z_end)))
    hold = stopped & ~reached
    zs = jnp.where(reached[:, None], zs, jnp.where(hold[:, None], z_end[None, :], jnp.nan))
    t_state = jnp.where(reached, t_reached, jnp.where(hold, t_final, jnp.nan))

    unravel = unraveler(model, net)
    states = jax.vmap(unravel)(zs)
    balance0 = unravel(z0).rho_k ** 2 if s.has_balance_law else None
    states, norm_drift, balance_drift = project_states(
        states, balance0, rate, jnp.nan_to_num(t_state), s.enforce_balance
    )
    margins, loss, rho_eq = jax.vmap(lambda V, r, rk: observe_one(model, net, x, y, lam, V, r, rk))(
        states.V, states.rho, states.rho_k
    )

    # Kinks crossed between saves and pinned at the end. Sign patterns need no projection: it scales by > 0.
    raw_V = jax.vmap(lambda z: unravel(z).V)(zs)
    switches, pinned, sliding = kink_statistics(net, x, raw_V, t_reached, reached, pin_tolerance(s.eps))
    out = {
        "reached": reached,
        "t": t_state,
        "rho": states.rho,
        "margins": margins,
        "loss": loss,
        "rho_eq": rho_eq,
        "switches": switches,
        "pinned": pinned,
        "sliding_time": sliding,
        "norm_drift": norm_drift,
        "balance_drift": balance_drift,
        **r,  # status, t_final, steps, rejected_steps, jacobians, final_speed, and the exact flow's counts
    }
    for k, v in enumerate(states.V):
        out[f"V_{k + 1}"] = v
    if states.rho_k is not None:
        out["rho_k"] = states.rho_k
    return out


EXACT_COUNTS = ("crossings", "entries", "exits", "max_pinned", "unresolved")  # -1 for smoothed solves


def _integrate_smoothed(s: Settings, model, x, y, z0, ts, t1, meter) -> dict:
    """The diffrax solve of the (smoothed or raw) field: the rows at ``ts`` and the end, and the counts."""
    net = s.net

    def F(z):
        return flat_field(model, net, x, y, z, s.eps)

    event = None
    if s.steady_state:
        event = dfx.Event(lambda t, z, args, **kw: jnp.linalg.norm(F(z)) <= s.steady_tol * (1 + jnp.linalg.norm(z)))
    sol = dfx.diffeqsolve(
        dfx.ODETerm(lambda t, z, args: F(z)),
        make_solver(s.solver),
        0.0,
        t1,
        None,
        z0,
        saveat=dfx.SaveAt(ts=ts, t1=True, solver_state=s.solver == "rosenbrock"),
        stepsize_controller=make_controller(s.solver, s.rtol, s.atol),
        max_steps=s.max_steps,
        event=event,
        throw=False,
        progress_meter=meter if meter is not None else dfx.NoProgressMeter(),
    )
    zs = sol.ys
    finite = jnp.all(jnp.isfinite(zs), axis=1)
    # The end: t1, or the time the solve stopped (event or failure). A stopped solve has its end state in the
    # first save slot past the stop (not the t1 slot), with the stop time in sol.ts: the last finite slot.
    last = jnp.max(jnp.where(finite, jnp.arange(zs.shape[0]), 0))
    z_end = zs[last]
    speed = jnp.linalg.norm(F(z_end))
    # A non-finite field shows as a step limit (diffrax rejects non-finite steps until max_steps), seen here
    # when it is non-finite at the last state saved.
    status = jnp.select(
        [
            ~jnp.isfinite(speed),
            sol.result == dfx.RESULTS.successful,
            sol.result == dfx.RESULTS.event_occurred,
            sol.result == dfx.RESULTS.max_steps_reached,
        ],
        [NONFINITE, OK, STEADY, MAX_STEPS],
        FAILED,
    )
    minus = jnp.asarray(-1)
    return {
        "zs": zs,
        "z_end": z_end,
        "t_final": sol.ts[last],
        "status": status,
        "steps": sol.stats["num_accepted_steps"],
        "rejected_steps": sol.stats["num_rejected_steps"],
        "jacobians": sol.solver_state.n_jac if s.solver == "rosenbrock" else minus,
        "final_speed": speed,
        **{k: minus for k in EXACT_COUNTS},
    }


def _integrate_exact(s: Settings, model, x, y, z0, ts, t1, meter) -> dict:
    """The event-driven solve of the exact flow (`_exact`): the rows at ``ts`` and the end, and the counts."""
    del meter  # no progress meter: the loop is flowsim's own
    r = exact_member(
        model, s.net, x, y, z0, ts, t1, rtol=s.rtol, atol=s.atol, max_steps=s.max_steps,
        max_events=s.max_steps, steady_tol=s.steady_tol if s.steady_state else None,
    )  # fmt: skip
    status = jnp.select(
        # the event cap is max_steps: reaching it is the step limit
        [
            r["status"] == code
            for code in (REACHED, STEADY_STOP, MAX_STEPS_STOP, MAX_EVENTS_STOP, NONFINITE_STOP, CHATTER_STOP)
        ],
        [OK, STEADY, MAX_STEPS, MAX_STEPS, NONFINITE, CHATTERING],
        FAILED,
    )
    return {
        "zs": jnp.concatenate([r["saves"], r["z_final"][None]]),
        "z_end": r["z_final"],
        "t_final": r["t_final"],
        "status": status,
        "steps": r["steps"],
        "rejected_steps": r["rejected_steps"],
        "jacobians": r["jacobians"],
        "final_speed": r["final_speed"],
        "crossings": r["crossings"],
        "entries": r["entries"],
        "exits": r["exits"],
        "max_pinned": r["max_sliding"],
        "unresolved": r["unresolved"],
        "sliding_time": r["sliding_time"],  # the time with a non-empty sliding set, not a count between saves
        "pinned": jnp.sum(r["mode"].sliding),  # sliding at the end
    }


BATCHING = ("auto", "map", "vmap")


@functools.lru_cache(maxsize=16)
def compiled_member(settings: Settings, batching: str | None = None, mesh=None, meter=None):
    """``solve_member`` jitted for `settings`: one member, or a batch sharded over `mesh`'s ``"batch"`` axis.

    **Arguments:**

    - `settings`: the static `Settings`.
    - `batching`: ``None`` for one member (``simulate``); ``"map"`` to run a device's members one after the
      other (``lax.map``: each member is the very program ``simulate`` runs, so it equals its single run
      bitwise); ``"vmap"`` to run them as one vectorized program (what an accelerator parallelizes; a
      batched field differs from the single one by round-off, which the sliding dynamics amplify to the
      solver's accuracy).
    - `mesh`: the device mesh of a batch; each device computes its members (``shard_map``).
    - `meter`: a diffrax progress meter (single members).

    **Returns:** a jitted ``(x, y, lam, rate, z0, ts, t1) -> dict``; batched arguments ``lam, rate, z0``
    have a leading member axis, as have the outputs.
    """

    def one(x, y, lam, rate, z0, ts, t1):
        return solve_member(settings, x, y, lam, rate, z0, ts, t1, meter)

    if batching is None:
        return jax.jit(one)

    def local(x, y, lam, rate, z0, ts, t1):  # the members of one device
        if batching == "vmap":
            return jax.vmap(one, in_axes=(None, None, 0, 0, 0, None, None))(x, y, lam, rate, z0, ts, t1)
        return jax.lax.map(lambda m: one(x, y, *m, ts, t1), (lam, rate, z0))

    shared, member = P(), P("batch")
    sharded = jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(shared, shared, member, member, member, shared, shared),
        out_specs=member,
        check_vma=False,
    )
    return jax.jit(sharded)
