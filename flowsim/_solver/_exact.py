"""The exact ReLU flow (ε → 0), event-driven: smooth segments on strata, the mode chosen again at each event.

The exact velocity is the least-G-norm element of the Filippov set (`exact_field`). Between events it is a
smooth field: with the *mode* fixed — the sliding set ``S`` (pre-activations held at zero) and the gate σ′ of
every other pre-activation — it is ``P_S F_g``, the one-sided field projected onto the stratum (`_stratum`).
A segment is integrated by the stiff solver until an event:

- a free pre-activation reaches zero (its signed distance ``±z / (‖V_1‖ ‖x_n‖)`` crosses 0): it crosses,
  or enters ``S`` if both one-sided fields push it back;
- a sliding one's one-sided velocities stop pointing into its surface (`sliding_margins`): it leaves ``S`` to
  that side;
- the speed falls below the steady-state tolerance.

The event is located by regula falsi on the step's dense output, then on steps redone from the step's start,
to within `EVENT_TOL` of the layer's scale. There the mode that flips or releases what the event concerns is
tried first; if it is not consistent, the exact velocity ``m`` (a bounded least squares over the pinned
pre-activations) chooses, and an active-set pass corrects its choice (`make_consistent`). Only attracting
surfaces hold a pre-activation (`attracting`). One hidden layer: the strata are then linear in ``V_1`` (see
``_stratum``), so the projection is fixed along a segment and every stage of a step stays on the stratum.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Bool, Float

from .._model import Network, State
from .._model._filippov import _forward_parts, _problem, exact_field, one_sided_field
from .._model._stratum import UnitBases, least_norm_correction, project_rows, sample_coefficients, unit_bases
from ._flat import unraveler
from ._rosenbrock import RosenbrockW, _State

# A pre-activation that left a stratum at a segment's start sits at |z| ≲ rounding; its distance counts from
# this offset, so the event does not fire on the first step.
RELEASE_OFFSET = 1e-9
# At an event: |z| below this (relative, as in `pinned`) counts as at zero; |ż| below this (relative to
# ‖V̇_1‖ ‖x_n‖) as held at zero; a margin below this (relative, `sliding_margins`) as reached.
EVENT_TOL = 1e-8


class Mode(eqx.Module):
    """What stays fixed along a segment (one hidden layer, shapes ``(N, d_1)``)."""

    sliding: Bool[Array, "N d1"]
    gates: Float[Array, "N d1"]  # σ′ off the sliding set (0 on it: P_S removes what it would add)
    released: Bool[Array, "N d1"]  # left the stratum at the segment's start, to the side of its gate
    bases: UnitBases


def _scales(V1, x):
    return jnp.linalg.norm(V1) * jnp.linalg.norm(x, axis=1)[:, None]


def segment_field(model, net, x, y, state: State, mode: Mode) -> State:
    """``P_S F_g``: the exact velocity along a segment with `mode`."""
    return _projected(mode, one_sided_field(model, net, x, y, state, (mode.gates,)))


def _projected(mode: Mode, base: State) -> State:
    """``P_S`` applied to a one-sided field: only ``V̇_1`` moves a pinned pre-activation."""
    return State((project_rows(mode.bases, base.V[0]), base.V[1]), base.rho, base.rho_k)


def sliding_margins(model, net, x, y, state: State, mode: Mode) -> tuple[Array, Array]:
    """How firmly each sliding pre-activation is held: ``(ż₀, −ż₁)``, relative, where ``ż₀`` and ``ż₁`` are its
    velocity with its σ′ set to 0 and to 1 (the others' held where they are). Sliding needs both ≥ 0 (the
    one-sided fields point into the surface); the first reaching 0 says it leaves to the negative side, the
    second to the positive side. Off the sliding set: 1.

    A σ′ moves row ``i`` of ``V̇_1`` by ``−g^{θθ} u_{n,i} x_n`` (``u`` the backpropagated signal), and sliding
    needs those moves to cancel the normal part of ``F_g``'s row, ``Σ_n β_{n,i} x_n`` (least norm). So the
    Filippov multiplier is ``α = β / (g^{θθ} u)`` and ``ż₀ = β ‖x_n‖²``, ``−ż₁ = (g^{θθ} u − β) ‖x_n‖²``:
    unlike α these are continuous where ``u`` passes through 0, and they are scaled by ``g^{θθ} |u| ‖x_n‖² +
    ‖V̇_1‖ ‖x_n‖`` (the jump of ``ż`` across the gate, plus the speed), which does not vanish there.
    """
    return _margins(model, net, x, y, state, mode, one_sided_field(model, net, x, y, state, (mode.gates,)))


def _margins(model, net, x, y, state: State, mode: Mode, base: State):
    """`sliding_margins` from ``F_g`` at `state` (`base`), when the caller has it."""
    beta = sample_coefficients(mode.bases, x, base.V[0])
    jump = _gate_effect(model, net, x, y, state)
    sq = jnp.sum(x * x, axis=1)[:, None]
    scale = jnp.abs(jump) * sq + jnp.linalg.norm(base.V[0]) * jnp.sqrt(sq) + jnp.finfo(x.dtype).tiny
    lower = jnp.where(mode.sliding, beta * sq / scale, 1.0)
    upper = jnp.where(mode.sliding, (jump - beta) * sq / scale, 1.0)
    return lower, upper


def _gate_effect(model, net, x, y, state: State) -> Float[Array, "N d1"]:
    """``g^{θθ} u_{n,i}``: raising σ′ of ``(n, i)`` from 0 to 1 moves row ``i`` of ``V̇_1`` by
    ``−g^{θθ} u_{n,i} x_n`` (``u`` the backpropagated signal), so ``ż_{n,i}`` by ``−g^{θθ} u_{n,i} ‖x_n‖²``."""
    p = _problem(model, net, x, y, state, 0.0, ())
    return p.c[0] ** 2 * p.w[:, None] * state.V[1][0][None, :]


def attracting(model, net, x, y, state: State) -> Bool[Array, "N d1"]:
    """Where sliding is possible (`_gate_effect` > 0): both one-sided fields point into the surface when a σ′
    in (0, 1) holds ``z`` at zero (it attracts). With ``u < 0`` both point away (it repels: sliding there is a
    Filippov solution, but an unstable one that every smoothed flow leaves at once). An effect below 1e-8 of
    the largest counts as zero."""
    effect = _gate_effect(model, net, x, y, state)
    return effect > EVENT_TOL * jnp.max(jnp.abs(effect))


def distance(model, net, x, y, state: State, mode: Mode) -> Float[Array, ""]:
    """The event function: the least of the free pre-activations' signed distances to zero (their side is
    their gate's) and the sliding ones' margins (`sliding_margins`)."""
    free = _free_distance(net, x, state, mode)
    lower, upper = _if_sliding(mode, lambda: sliding_margins(model, net, x, y, state, mode))
    return _least(mode, free, lower, upper)


def _if_sliding(mode: Mode, margins):
    """``margins()`` where something slides (they cost a field evaluation), else ones."""
    ones = jnp.ones(mode.sliding.shape, mode.gates.dtype)
    return jax.lax.cond(jnp.any(mode.sliding), margins, lambda: (ones, ones))


def _least(mode: Mode, free, lower, upper):
    return jnp.min(jnp.where(mode.sliding, jnp.minimum(lower, upper), free))


def segment_and_distance(model, net, x, y, state: State, mode: Mode):
    """`segment_field` and `distance` from one evaluation of ``F_g`` (what a step's end needs).

    **Returns:** ``(v, d, lower, upper)``: the segment field, the event function, and the sliding margins."""
    base = one_sided_field(model, net, x, y, state, (mode.gates,))
    v = _projected(mode, base)
    free = _free_distance(net, x, state, mode)
    lower, upper = _if_sliding(mode, lambda: _margins(model, net, x, y, state, mode, base))
    return v, _least(mode, free, lower, upper), lower, upper


def _free_distance(net, x, state: State, mode: Mode):
    zs, _, _ = _forward_parts(net, state.V, x)
    side = 2.0 * mode.gates - 1.0
    return side * zs[0] / _scales(state.V[0], x) + jnp.where(mode.released, RELEASE_OFFSET, 0.0)


def select_mode(model, net, x, y, state: State, candidates, exiting) -> tuple[Mode, State, object]:
    """The mode at an event: from the exact velocity with `candidates` pinned, which of them slide.

    **Arguments:**

    - `candidates`: the pre-activations at zero (the state is on their stratum).
    - `exiting`: per pre-activation, the bound (0 or 1) its multiplier reached at this event, else -1: such
      a pre-activation leaves to that side even though ``m`` does not move it yet (it leaves tangentially).

    **Returns:** ``(mode, m, info)``: the new `Mode`, the exact velocity and its `FilippovInfo`.
    """
    # few pre-activations are pinned at most events: small slot counts first (16, 128, then all)
    m, info = exact_field(model, net, x, y, state, pinned_mask=(candidates,), slots=(16, 128), return_info=True)
    zs, _, _ = _forward_parts(net, state.V, x)
    zdot = x @ m.V[0].T
    held = jnp.abs(zdot) <= EVENT_TOL * _scales(m.V[0], x)
    # only an attracting surface holds a pre-activation (a repelling one is the least-norm velocity's choice
    # too, but no smoothed flow stays there)
    sliding = candidates & held & attracting(model, net, x, y, state) & (exiting < 0)
    leave_up = jnp.where(held, exiting == 1, zdot > 0)
    gates = jnp.where(candidates, leave_up, zs[0] > 0).astype(x.dtype)
    gates = jnp.where(sliding, 0.0, gates)
    mode = Mode(sliding, gates, candidates & ~sliding, unit_bases(x, sliding))
    return mode, m, info


def project_onto(state: State, x, bases: UnitBases) -> State:
    """The state moved back onto the stratum of `bases` (least-norm change of ``V_1``, then renormalized: a
    positive scaling keeps zeros)."""
    V1 = state.V[0] - least_norm_correction(bases, x, x @ state.V[0].T)
    return State((V1 / jnp.linalg.norm(V1), state.V[1]), state.rho, state.rho_k)


# ---- the compiled event loop ------------------------------------------------------------------------------
_MAX_JACOBIAN_AGE = 20  # as RosenbrockW's default
_REFACTOR_RATIO = 2.0
_LOCATE_ITERATIONS = 30  # regula falsi (Illinois) on the step's dense output, to a quarter of EVENT_TOL
_REDO_ITERATIONS = 8  # then on steps redone from the step's start: the event state at the step's own accuracy
_AIM = 0.5 * EVENT_TOL  # the located event lies in [−EVENT_TOL, 0]: aim at its middle

RUNNING, REACHED, STEADY_STOP, MAX_STEPS_STOP, NONFINITE_STOP, MAX_EVENTS_STOP = range(6)


class _Loop(eqx.Module):
    t: Array
    z: Array
    h: Array
    mode: Mode
    f0: Array  # the segment field at (t, z)
    d0: Array  # the event function at (t, z)
    inv: Array  # (I − γ h_lu J)⁻¹: see RosenbrockW
    h_lu: Array
    jac_age: Array
    saves: Array
    counts: Array  # _COUNTS
    sliding_time: Array
    status: Array
    stuck: Array  # this iteration was an event in place (see `body`)


_COUNTS = (
    "steps", "rejected_steps", "jacobians", "crossings", "entries", "exits", "events", "max_sliding", "unresolved",
)  # fmt: skip


def _illinois(g, lo, g_lo, hi, g_hi, iterations, tol, *, first=None, aux=None):
    """Regula falsi (Illinois) on a bracket ``[lo, hi]`` of a sign change of `g` (``g_lo > 0 ≥ g_hi``) until
    ``|g| ≤ tol`` or `iterations`. `g` returns ``(value, aux)``; the first point tried is `first` if given.

    **Returns:** ``(m, g(m), aux(m), hi)``: the last point tried (``hi``, with `aux`, if none) and the bracket's
    end past the sign change."""

    def cond(c):
        i, *_, g_m, _ = c
        return (i < iterations) & (jnp.abs(g_m) > tol)

    def body(c):
        i, lo, g_lo, hi, g_hi, side, *_ = c
        m = jnp.clip(hi - g_hi * (hi - lo) / (g_hi - g_lo), lo + 1e-6 * (hi - lo), hi - 1e-6 * (hi - lo))
        if first is not None:
            m = jnp.where(i == 0, first, m)
        gm, aux_m = g(m)
        up = gm > 0  # the root is above m
        # Illinois: halve the value kept at the end that did not move twice in a row
        g_hi = jnp.where(up & (side == 1), 0.5 * g_hi, g_hi)
        g_lo = jnp.where(~up & (side == -1), 0.5 * g_lo, g_lo)
        return (i + 1, jnp.where(up, m, lo), jnp.where(up, gm, g_lo), jnp.where(up, hi, m),
                jnp.where(up, g_hi, gm), jnp.where(up, 1, -1), m, gm, aux_m)  # fmt: skip

    out = jax.lax.while_loop(cond, body, (0, lo, g_lo, hi, g_hi, 0, hi, g_hi, aux))
    return out[-3], out[-2], out[-1], out[3]


def exact_member(
    model,
    net: Network,
    x,
    y,
    z0,
    ts,
    t1,
    *,
    rtol: float,
    atol: float,
    max_steps: int,
    max_events: int,
    steady_tol: float | None,
) -> dict:
    """Integrate the exact flow of one member (traceable: one ``lax.while_loop``; one hidden layer).

    The segments are RosenbrockW steps on ``P_S F_g``; the Jacobian (as the inverse of ``I − γhJ``) is kept
    across events (a W-method allows any matrix), except when the sliding set changes (the stages stay on the
    new stratum only with its projection in the matrix), and so is the step size. A step whose end has crossed
    the event function's zero is redone to the event: the crossing is located on the step's dense output, then
    refined on steps redone from the step's start.

    **Returns:** a dict: ``saves`` (the flat states at `ts`, NaN where not reached), ``t_final``, ``z_final``,
    ``status`` (see the module's constants), the counts of `_COUNTS`, and ``sliding_time``.
    """
    unravel = unraveler(model, net)
    ros = RosenbrockW(jacobian="rev", retry=False)
    dtype = z0.dtype
    ts = jnp.asarray(ts, dtype)
    t1 = jnp.asarray(t1, dtype)

    def field_of(mode):
        return lambda t, z: ravel_pytree(segment_field(model, net, x, y, unravel(z), mode))[0]

    def dist(z, mode):
        return distance(model, net, x, y, unravel(z), mode)

    def factor(F, t, z, h):
        jac = jax.jacrev(lambda z_: F(t, z_))(z)
        return ros._factor(jac, h)

    z0s = unravel(z0)
    state, mode, resolved = initial_mode(model, net, x, y, z0s)
    z = ravel_pytree(state)[0]
    F = field_of(mode)
    v0, d0, _, _ = segment_and_distance(model, net, x, y, state, mode)
    f0 = ravel_pytree(v0)[0]
    h0 = jnp.minimum(t1, 1e-2 * (1.0 + jnp.linalg.norm(z)) / jnp.maximum(jnp.linalg.norm(f0), 1e-300))
    inv = factor(F, 0.0, z, h0)
    # one Jacobian made; the sliding set's size; the initial mode's selection, if unresolved
    counts = jnp.zeros(len(_COUNTS), jnp.int32).at[2].set(1).at[7].set(jnp.sum(mode.sliding, dtype=jnp.int32))
    counts = counts.at[8].set(~resolved)
    init = _Loop(
        jnp.asarray(0.0, dtype), z, h0, mode, f0, d0, inv, h0, jnp.asarray(0),
        jnp.where((ts <= 0.0)[:, None], z[None], jnp.nan), counts,
        jnp.asarray(0.0, dtype), jnp.asarray(RUNNING), jnp.asarray(False),
    )  # fmt: skip

    def cond(c):
        return c.status == RUNNING

    def body(c: _Loop) -> _Loop:
        F = field_of(c.mode)
        # A segment that starts below the event function's zero would see no event until it came back: the mode
        # is chosen again where it stands (a step of length 0; not twice in a row). Measured on experiment 10's
        # digits net at rtol 1e-5: a margin accepted at -5.7e-9, then a pre-activation carried 0.02 past zero
        # unseen, and 2 of 16 starts ended at another ρ.
        stuck = (c.d0 + _AIM <= 0) & ~c.stuck
        h = jnp.where(stuck, 0.0, jnp.minimum(c.h, t1 - c.t))
        need = (c.jac_age >= _MAX_JACOBIAN_AGE) | (jnp.abs(h / c.h_lu - 1.0) > _REFACTOR_RATIO)
        inv = jax.lax.cond(need, lambda: factor(F, c.t, c.z, h), lambda: c.inv)
        h_lu = jnp.where(need, h, c.h_lu)
        rs = ros_state(c.f0, inv, h_lu)

        def step(h_):
            return ros._stages(F, c.t, c.z, c.f0, h_, rs)

        z1, err, lin, quad = step(h)
        scale = atol + rtol * jnp.maximum(jnp.abs(c.z), jnp.abs(z1))
        ratio = jnp.sqrt(jnp.mean((err / scale) ** 2))
        ok = jnp.isfinite(ratio) & (ratio <= 1.0)
        v1, d1, _, _ = segment_and_distance(model, net, x, y, unravel(z1), c.mode)
        f1 = ravel_pytree(v1)[0]
        event = ok & (((d1 < 0) & (c.d0 + _AIM > 0)) | stuck)

        def locate():
            # The step is redone to land in [−EVENT_TOL, 0] of the event function: aim at its middle, first on the
            # dense output, then by regula falsi (Illinois) on steps redone from the step's start.
            g = lambda z_: dist(z_, c.mode) + _AIM  # noqa: E731
            guess, *_ = _illinois(lambda th: (g(c.z + th * (lin + th * quad)), None), 0.0, c.d0 + _AIM, 1.0,
                                  d1 + _AIM, _LOCATE_ITERATIONS, 0.5 * _AIM)  # fmt: skip

            def redone(h_):
                out = step(h_)
                return g(out[0]), out

            m, gm, out, h_hi = _illinois(redone, 0.0 * h, c.d0 + _AIM, h, d1 + _AIM, _REDO_ITERATIONS, _AIM,
                                         first=guess * h, aux=(z1, err, lin, quad))  # fmt: skip
            # none landed in the window: the bracket's end past the event (the projection then absorbs the miss)
            return jax.lax.cond(jnp.abs(gm) <= _AIM, lambda: (m, *out), lambda: (h_hi, *step(h_hi)))

        h_acc, z_acc, _, lin, quad = jax.lax.cond(event & ~stuck, locate, lambda: (h, z1, err, lin, quad))
        t_new = c.t + h_acc
        theta = (ts - c.t) / h_acc
        put = ok & (ts > c.t) & (ts <= t_new)
        th = theta[:, None]
        saves = jnp.where(put[:, None], c.z[None, :] + th * (lin[None, :] + th * quad[None, :]), c.saves)

        def at(z_acc):
            return _event_update(model, net, x, y, z_acc, c.mode)

        def none(z_acc):  # no event: the step ends at z1, where the segment field and the distance are known
            return z_acc, c.mode, jnp.zeros(3, jnp.int32), jnp.asarray(False), jnp.asarray(True), f1, d1

        z_new, mode_new, kinds, restratified, resolved, f_new, d_new = jax.lax.cond(event, at, none, z_acc)

        fac = jnp.clip(0.9 * jnp.where(ratio > 0, ratio, 1e-10) ** (-1.0 / 3.0), 0.2, 3.0)
        h_next = jnp.where(stuck, c.h, jnp.where(ok, h * fac, h * jnp.minimum(fac, 0.9)))
        counts = (
            c.counts.at[0]
            .add((ok & ~stuck).astype(jnp.int32))
            .at[1]
            .add((~ok).astype(jnp.int32))
            .at[2]
            .add(need.astype(jnp.int32))
        )
        counts = counts.at[3:6].add(jnp.where(event, kinds, 0)).at[6].add(event.astype(jnp.int32))
        counts = counts.at[7].max(jnp.sum(mode_new.sliding).astype(jnp.int32))
        # unresolved: a mode the loops did not settle, or an event in place that still left the segment below zero
        counts = counts.at[8].add((ok & (~resolved | (stuck & (d_new + _AIM <= 0)))).astype(jnp.int32))
        sliding_time = c.sliding_time + jnp.where(ok & jnp.any(c.mode.sliding), h_acc, 0.0)

        keep = lambda new, old: jnp.where(ok, new, old)  # noqa: E731
        t_out, z_out = keep(t_new, c.t), keep(z_new, c.z)
        steady = steady_tol is not None and jnp.linalg.norm(f_new) <= steady_tol * (1 + jnp.linalg.norm(z_new))
        status = jnp.select(
            [~jnp.all(jnp.isfinite(z_out)), ok & (t_new >= t1), ok & steady,
             counts[0] + counts[1] >= max_steps, counts[6] >= max_events],
            [NONFINITE_STOP, REACHED, STEADY_STOP, MAX_STEPS_STOP, MAX_EVENTS_STOP],
            RUNNING,
        )  # fmt: skip
        return _Loop(
            t_out, z_out, h_next, jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), mode_new, c.mode),
            keep(f_new, c.f0), keep(d_new, c.d0), inv, h_lu,
            # a new sliding set needs a new Jacobian: the stages stay on the stratum only with P_S in it
            jnp.where(restratified & ok, _MAX_JACOBIAN_AGE, jnp.where(need, 1, c.jac_age + ok)),
            saves, counts, sliding_time, status, stuck,
        )  # fmt: skip

    def ros_state(f0, inv, h_lu):
        return _State(f0, inv, jnp.zeros_like(f0), h_lu, jnp.asarray(0), jnp.asarray(0))

    out = jax.lax.while_loop(cond, body, init)
    result = {name: out.counts[i] for i, name in enumerate(_COUNTS)}
    result.update(
        saves=out.saves, t_final=out.t, z_final=out.z, status=out.status, sliding_time=out.sliding_time,
        mode=out.mode, final_speed=jnp.linalg.norm(out.f0),
    )  # fmt: skip
    return result


def _event_update(model, net, x, y, z, mode: Mode):
    """At an event: the state projected onto its stratum, the new mode, the counts of (crossings, entries,
    exits), whether the sliding set changed, whether the mode is resolved (consistent, found by loops that
    converged within their caps), and there the new segment field (flat) and event function.

    Most events are a free pre-activation crossing transversally, or a sliding one leaving at its bound: the
    mode that flips the first's gate, or releases the second to its bound's side, is tried first and kept if
    consistent (`_violations`). Otherwise the exact velocity decides (`select_mode`, a bounded least squares),
    corrected by `make_consistent`.
    """
    unravel = unraveler(model, net)
    state = unravel(z)
    near = (_free_distance(net, x, state, mode) <= EVENT_TOL) & ~mode.sliding
    lower, upper = _if_sliding(mode, lambda: sliding_margins(model, net, x, y, state, mode))
    exiting = jnp.where(mode.sliding & (lower <= EVENT_TOL), 0, -1)
    exiting = jnp.where(mode.sliding & (upper <= EVENT_TOL) & (upper < lower), 1, exiting)
    candidates = mode.sliding | near
    # onto the stratum of every candidate: the new sliding set is among them, and the others leave from zero
    state = project_onto(state, x, unit_bases(x, candidates))
    scales = _scales(state.V[0], x)

    leaving = exiting >= 0
    sliding = mode.sliding & ~leaving
    gates = jnp.where(near, 1.0 - mode.gates, jnp.where(leaving, exiting.astype(x.dtype), mode.gates))
    trial = Mode(sliding, jnp.where(sliding, 0.0, gates), near | leaving, unit_bases(x, sliding))
    seg = segment_and_distance(model, net, x, y, state, trial)
    _, box, back = _violations(x, state, trial, seg, scales)

    def select():
        new, _, info = select_mode(model, net, x, y, state, candidates, exiting)
        new, done = make_consistent(model, net, x, y, state, new, scales)
        v, d, _, _ = segment_and_distance(model, net, x, y, state, new)
        return new, done & info.converged, v, d

    new, resolved, v, d = jax.lax.cond(
        _consistent(box, back), lambda: (trial, jnp.asarray(True), seg[0], seg[1]), select
    )
    kinds = jnp.stack([
        jnp.sum(near & ~new.sliding & (new.gates != mode.gates)),  # crossings
        jnp.sum(near & new.sliding),  # entries
        jnp.sum(mode.sliding & ~new.sliding),  # exits
    ]).astype(jnp.int32)  # fmt: skip
    restratified = jnp.any(new.sliding != mode.sliding)
    return ravel_pytree(state)[0], new, kinds, restratified, resolved, ravel_pytree(v)[0], d


# One change per iteration. 16 left 3 events unresolved in 8 unnormalized runs to steady state on clusters
# 5-16-1 (one of them ended at another ρ: 15.8 against 11.3); 64 resolved them all. The loop stops when done.
_CONSISTENCY_ITERATIONS = 64


def _violations(x, state: State, mode: Mode, seg, scales):
    """How far `mode` is from consistent at `state`, given its `segment_and_distance` `seg`: the side each
    sliding pre-activation would leave to (1 positive), how much its margin is negative (`sliding_margins`),
    and how fast each released one moves back against its gate's side (relative to ``‖V̇_1‖ / ‖V_1‖``, the bound
    of ``|ż| / (‖V_1‖ ‖x_n‖)``)."""
    v, _, lower, upper = seg
    box = jnp.where(mode.sliding, -jnp.minimum(lower, upper), -jnp.inf)
    side = 2.0 * mode.gates - 1.0
    back = jnp.where(mode.released, -side * (x @ v.V[0].T) / jnp.maximum(scales, 1e-300), -jnp.inf)
    return upper < lower, box, back / jnp.maximum(jnp.linalg.norm(v.V[0]) / jnp.linalg.norm(state.V[0]), 1e-300)


def _consistent(box, back):
    return (jnp.max(box) <= EVENT_TOL) & (jnp.max(back) <= EVENT_TOL)


def make_consistent(model, net, x, y, state: State, mode: Mode, scales) -> tuple[Mode, Array]:
    """Correct a mode until its segment field is consistent at `state`: every sliding margin ≥ 0 (σ′ in [0, 1]),
    every released pre-activation moving to its gate's side.

    The least-norm velocity at the event point decides the mode in most cases, but not all: with several
    pre-activations of one unit at zero, one that the velocity moves off its surface changes the one-sided
    field the others slide on, and a multiplier can leave [0, 1] (measured on a one-hidden-layer net: 1.77).
    Then, one change at a time (an active-set method), the worst violation is repaired: an out-of-box
    margin's pre-activation is released to that side; a released one moving back is sent the
    other way, and made sliding if it moves back from both sides.

    With many pre-activations of one unit at zero and their inputs dependent (53 on one unit of a 16-6-1 net on
    digits, in 16 dimensions), the pass can cycle: the margins use the least-norm multipliers, which can leave
    [0, 1] where others in the box would do. A pass that does not settle returns `mode` as given, the exact
    velocity's choice, not wherever its cycle stopped (measured on that net: the flow then ended at ρ = 12.09
    where rtol 1e-6 … 1e-8 give 5.1324; with the given mode, 5.1324 at rtol 1e-5 too).

    **Returns:** ``(mode, consistent)``.
    """
    acts = attracting(model, net, x, y, state)

    def cond(c):
        i, mode, flipped, done = c
        return (i < _CONSISTENCY_ITERATIONS) & ~done

    def body(c):
        i, mode, flipped, _ = c
        up_side, box, back = _violations(x, state, mode, segment_and_distance(model, net, x, y, state, mode), scales)
        bad_box = jnp.max(box) > EVENT_TOL
        bad_back = ~bad_box & ~_consistent(box, back)
        j_box = jnp.unravel_index(jnp.argmax(box), box.shape)
        j_back = jnp.unravel_index(jnp.argmax(back), back.shape)
        onehot_box = jnp.zeros(box.shape, bool).at[j_box].set(True) & bad_box
        onehot_back = jnp.zeros(box.shape, bool).at[j_back].set(True) & bad_back
        to_slide = onehot_back & flipped & acts
        to_flip = onehot_back & ~to_slide
        sliding = (mode.sliding & ~onehot_box) | to_slide
        gates = jnp.where(onehot_box, up_side.astype(x.dtype), mode.gates)
        gates = jnp.where(to_flip, 1.0 - gates, gates)
        gates = jnp.where(sliding, 0.0, gates)
        released = (mode.released | onehot_box) & ~sliding
        changed = bad_box | bad_back
        new = Mode(sliding, gates, released, unit_bases(x, sliding))
        new = jax.tree_util.tree_map(lambda a, b: jnp.where(changed, a, b), new, mode)
        return i + 1, new, flipped | to_flip, ~changed

    _, new, _, done = jax.lax.while_loop(cond, body, (0, mode, jnp.zeros(mode.sliding.shape, bool), False))
    return jax.tree_util.tree_map(lambda a, b: jnp.where(done, a, b), new, mode), done


def initial_mode(model, net, x, y, state: State, tol: float = 1e-10):
    """The mode at the start: the pre-activations within `tol` (relative) of zero are pinned.

    **Returns:** ``(state, mode, resolved)``: the state on the mode's stratum, and whether the mode was found by
    loops that converged within their caps."""
    from .._model._filippov import pinned

    candidates = pinned(model, net, x, state, tol)[0]
    state = project_onto(state, x, unit_bases(x, candidates))
    mode, _, info = select_mode(model, net, x, y, state, candidates, jnp.full(candidates.shape, -1))
    mode, done = make_consistent(model, net, x, y, state, mode, _scales(state.V[0], x))
    return state, mode, done & info.converged
