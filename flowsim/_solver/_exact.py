"""The exact ReLU flow (ε → 0), event-driven: smooth segments on strata, the mode chosen again at each event.

The exact velocity is the least-G-norm element of the Filippov set (`exact_field`). Between events it is a
smooth field: with the *mode* fixed — the sliding set ``S`` (pre-activations held at zero) and the gate σ′ of
every other pre-activation — it is ``P_S F_g``, the one-sided field projected onto the stratum (`_stratum`).
A segment is integrated by the stiff solver until an event:

- a free pre-activation reaches zero (its signed distance ``±z / (‖V_k‖ ‖a_{k-1,n}‖)`` crosses 0): it
  crosses, or enters ``S`` if both one-sided fields push it back;
- a sliding one's one-sided velocities stop pointing into its surface (`sliding_margins`): it leaves ``S`` to
  that side;
- the speed falls below the steady-state tolerance.

The event is located by regula falsi on the step's dense output (with two or more hidden layers the sliding
margins there are interpolated between the step's ends), then on steps redone from the step's start, to within
`EVENT_TOL` of the layer's scale. The run's start is an event too (in place: the first iteration). There the
mode that flips or releases what the event concerns is tried first, then (where flipped ones move back) the
mode that slides them; if neither is consistent, the exact velocity ``m`` (a bounded least squares over the
pinned pre-activations) chooses, and an active-set pass corrects its choice (`make_consistent`). Only
attracting surfaces hold a pre-activation (`attracting`).

Degenerate structures of deep nets have their own rules: pre-activations whose input is zero on the stratum,
and units whose weights have decayed, are *dead* (`_dead`: no events, σ′ the exact velocity's); multipliers on
nearly dependent constraints come from the exact velocity at the event (`_combined`'s reference).

Every per-pre-activation quantity is a flat vector over all hidden pre-activations (layer by layer, each
``(N, d_k)`` row-major). One hidden layer: the strata are linear in ``V_1`` (``UnitBases``), so the
projection is fixed along a segment and every stage of a step stays on the stratum. Two or more: the strata
are curved (``CurvedBasis``): the projection is evaluated at every stage from the constraints' independent
combinations, which are decided on the stratum (where the rank has a clean gap) and renewed with the
Jacobian; each accepted step is followed by a Gauss–Newton drift correction, and the W-method's matrix is
the one-sided field's Jacobian between two copies of the step start's projection.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Bool, Float

from .._model import Network, State
from .._model._filippov import _flat, _forward_parts, _problem, exact_field, one_sided_field, pinned
from .._model._stratum import (
    CurvedBasis,
    UnitBases,
    curved_basis,
    curved_onto,
    curved_projection,
    curved_step,
    gated_z,
    least_norm_correction,
    on_stratum,
    project_rows,
    sample_coefficients,
    unit_bases,
)
from ._flat import unraveler
from ._rosenbrock import RosenbrockW, _State

# A pre-activation that left a stratum at a segment's start sits at |z| ≲ rounding; its distance counts from
# this offset, so the event does not fire on the first step.
RELEASE_OFFSET = 1e-9
# At an event: |z| below this (relative, as in `pinned`) counts as at zero; |ż| below this (relative to
# ‖V̇‖ ‖a_{k-1,n}‖) as held at zero; a margin below this (relative, `sliding_margins`) as reached.
EVENT_TOL = 1e-8


class Mode(eqx.Module):
    """What stays fixed along a segment (flat over the hidden pre-activations, shape ``(P,)``)."""

    sliding: Bool[Array, " P"]
    gates: Float[Array, " P"]  # σ′ off the sliding set (0 on it: P_S removes what it would add)
    released: Bool[Array, " P"]  # left the stratum at the segment's start, to the side of its gate
    dead: Bool[Array, " P"]  # input zero on the stratum, or a dead unit (`_dead`): no side, no events
    lam_ref: Float[Array, " P"]  # the sliding set's multipliers' numerators α u at the mode's choice (`_combined`)
    bases: UnitBases | CurvedBasis


def _linear(net: Network) -> bool:
    return net.depth == 2


def _layers(net: Network, flat) -> tuple:
    """A flat per-pre-activation vector as one ``(N, d_k)`` array per hidden layer."""
    widths = net.widths[1:-1]
    N = flat.shape[0] // sum(widths)
    out, i = [], 0
    for d in widths:
        out.append(flat[i : i + N * d].reshape(N, d))
        i += N * d
    return tuple(out)


def _forward(net: Network, state: State, x):
    """The hidden pre-activations (flat), each one's scale ``‖V_k‖ ‖a_{k-1,n}‖`` (a bound on ``|z|``), and its
    rate scale ``‖V_k‖ (Σ_{j≤k} ‖a_{j-1,n}‖²)^½`` (with a unit-norm velocity, a bound on ``|ż|`` up to the other
    layers' norms)."""
    zs, inputs, _ = _forward_parts(net, state.V, x)
    scales, rates, acc = [], [], 0.0
    for Vk, z, a in zip(state.V, zs, inputs):
        sq = jnp.sum(a * a, axis=1)
        acc = acc + sq
        norm = jnp.linalg.norm(Vk)
        scales.append(jnp.broadcast_to((norm * jnp.sqrt(sq))[:, None], z.shape))
        rates.append(jnp.broadcast_to((norm * jnp.sqrt(acc))[:, None], z.shape))
    return _flat(zs), _flat(scales), _flat(rates)


def _hidden_speed(velocity: State, state: State):
    return jnp.sqrt(sum(jnp.sum(v * v) / jnp.sum(w * w) for v, w in zip(velocity.V[:-1], state.V[:-1])))


def _zdot(net: Network, state: State, x, velocity: State, gates):
    """``ż`` of every hidden pre-activation (flat) along `velocity`, σ′ = `gates` in the layers below."""
    hidden = tuple(state.V[:-1])
    return jax.jvp(lambda V: gated_z(net, x, V, gates), (hidden,), (tuple(velocity.V[:-1]),))[1]


def make_bases(model, net: Network, x, state: State, sliding, gates) -> UnitBases | CurvedBasis:
    """The projection's data for the sliding set `sliding` (for a curved stratum, decided at `state`, σ′ =
    `gates` off `sliding`)."""
    if _linear(net):
        return unit_bases(x, sliding.reshape(x.shape[0], -1))
    return curved_basis(model, net, x, state, sliding, gates)


def new_mode(model, net: Network, x, state: State, sliding, gates, released, dead=None, lam_ref=None) -> Mode:
    """A `Mode` with its projection's data: σ′ 0 on the sliding set (``P_S`` removes what it would add), the
    dead pre-activations found and their gates set (`_dead`; `dead`: those that were dead, whose gates are
    kept), and `lam_ref` (the multipliers' reference, kept on the sliding set)."""
    was = jnp.zeros(sliding.shape, bool) if dead is None else dead
    sliding, gates, dead = _dead(net, x, state, sliding, jnp.where(sliding, 0.0, gates), was)
    lam_ref = jnp.where(sliding, 0.0 if lam_ref is None else lam_ref, 0.0).astype(gates.dtype)
    bases = make_bases(model, net, x, state, sliding, gates)
    return Mode(sliding, gates, released & ~dead, dead, lam_ref, bases)


# σ′ of a pre-activation whose input is zero on the stratum: the smoothing's own at z = 0, ½(1 + tanh 0)
DEAD_GATE = 0.5
# A hidden unit whose incoming row and outgoing weights are both below this, relative to their layers' norms,
# is dead (`_dead`). Weight decay drives units there: on the stall case three layer-2 units fall from 2e-4 at
# t = 1 to 6e-7 at t = 1.65, both ways (their rates ~8).
DEAD_UNIT = 1e-6


def _dead(net: Network, x, state: State, sliding, gates, was_dead):
    """The dead pre-activations (two or more hidden layers), which are never sliding and have no events:

    - **dead inputs**: above the first hidden layer, those whose sample has every unit of the layer below off
      (σ′ < 1: gated 0, sliding, or dead itself). Their input is zero along the stratum, so they are zero too,
      whatever their gate. ``P_S F_g`` does not depend on their gate (the sample reaches the parameters only
      through the sliding units' constraint rows), nor do the margins of the sliding units below (they take
      the signal they pass turned on: `_signals`). Measured on the stall case at t = 0.537, one sample with four
      layer-1 units sliding and the rest negative: the smoothed flow (ε = 1e-8) holds its layer-2
      pre-activations at ~1e-10, σ′ = 0.50 ± 0.02; rounding's sign made them cross back and forth 60 times in
      0.005 (the state then 1.2e-4 off the smoothed flow; with this rule 4e-6).
    - **dead units** (`DEAD_UNIT`): every pre-activation of the unit is within ~1e-6 of zero for the layer's
      tolerances, and its gate reaches nothing but its own weights, through weights of 1e-6. Measured on the
      stall case at t = 1.648: three such units, 117 candidates at an event, their margins at rounding's size
      with rounding's sign; the consistency pass, chasing them, left the exact velocity by more than its norm
      and the events cycled in place.

    Those in `was_dead` keep the gate given (`select_mode` gives the exact velocity's α, what passes down to a
    third hidden layer); newly dead ones get `DEAD_GATE`. One whose input comes back (a unit below turned on)
    takes the side of that unit's weight; a unit that grows back, its own side.

    **Returns:** ``(sliding, gates, dead)``, flat."""
    if _linear(net):
        return sliding, gates, jnp.zeros(sliding.shape, bool)
    gates_k, sliding_k, was_k = list(_layers(net, gates)), list(_layers(net, sliding)), _layers(net, was_dead)
    zs, inputs, _ = _forward_parts(net, state.V, x)
    dead_k = []
    for h, (V, W) in enumerate(zip(state.V[:-1], state.V[1:])):
        tiny = (jnp.linalg.norm(V, axis=1) < DEAD_UNIT * jnp.linalg.norm(V)) & (
            jnp.linalg.norm(W, axis=0) < DEAD_UNIT * jnp.linalg.norm(W)
        )
        dead = jnp.broadcast_to(tiny[None, :], gates_k[h].shape)
        side = zs[h] > 0
        if h > 0:
            on = ((gates_k[h - 1] == 1.0) & ~sliding_k[h - 1] & ~dead_k[h - 1]).astype(gates.dtype)
            dead = dead | ~jnp.any(on > 0, axis=1, keepdims=True)
            norms = jnp.linalg.norm(inputs[h], axis=1, keepdims=True)
            side = jnp.where(norms > 1e-12 * jnp.max(norms), side, on @ V.T > 0)  # no input yet: its weights'
        kept = jnp.where(was_k[h], gates_k[h], DEAD_GATE)
        gates_k[h] = jnp.where(dead, kept, jnp.where(was_k[h], side.astype(gates.dtype), gates_k[h]))
        sliding_k[h] = sliding_k[h] & ~dead
        dead_k.append(dead)
    return _flat(sliding_k), _flat(gates_k), _flat(dead_k)


def segment_field(model, net, x, y, state: State, mode: Mode) -> State:
    """``P_S F_g``: the exact velocity along a segment with `mode`."""
    return _segment(model, net, x, y, state, mode)[0]


def _segment(model, net, x, y, state: State, mode: Mode, margins: bool = False):
    """``P_S F_g`` and, if `margins`, the sliding margins (`sliding_margins`; ones where nothing slides)."""
    base = one_sided_field(model, net, x, y, state, _layers(net, mode.gates))
    ones = jnp.ones(mode.sliding.shape, mode.gates.dtype)
    if _linear(net):
        v = State((project_rows(mode.bases, base.V[0]), base.V[1]), base.rho, base.rho_k)
        lower, upper = _if_sliding(mode, lambda: _linear_margins(model, net, x, y, state, mode, base)) if margins \
            else (ones, ones)  # fmt: skip
        return v, lower, upper

    def curved():
        v, lam, row_sq, speed, u = _curved(model, net, x, y, state, mode, base)
        if not margins:
            return v, ones, ones
        scale = jnp.abs(u) * row_sq + speed * jnp.sqrt(row_sq) + jnp.finfo(x.dtype).tiny
        lower = jnp.where(mode.sliding, lam * row_sq / scale, 1.0)
        upper = jnp.where(mode.sliding, (u - lam) * row_sq / scale, 1.0)
        return v, lower, upper

    return jax.lax.cond(jnp.any(mode.sliding), curved, lambda: (base, ones, ones))


def _curved(model, net, x, y, state: State, mode: Mode, base: State):
    """On a curved stratum, from ``F_g`` (`base`): ``P_S F_g``, the coefficients ``λ`` of its removed part on
    the constraint rows, those rows' squared norms, ``‖ŷ‖``, and the signals ``u`` (`_signals`)."""
    v, lam, row_sq, speed = curved_projection(model, net, x, state, mode.bases, base, mode.lam_ref)
    return v, lam, row_sq, speed, _signals(model, net, x, y, state, mode.gates, mode.sliding, lam, mode.dead)


def multipliers(model, net, x, y, state: State, mode: Mode) -> Float[Array, " P"]:
    """The Filippov multipliers of a curved stratum's sliding pre-activations, ``α_j = λ_j / u_j`` (see
    `sliding_margins`; elsewhere the mode's gates): σ′ = α in the backward pass gives the segment field."""
    base = one_sided_field(model, net, x, y, state, _layers(net, mode.gates))
    _, lam, _, _, u = _curved(model, net, x, y, state, mode, base)
    return jnp.where(mode.sliding, lam / jnp.where(mode.sliding, u, 1.0), mode.gates)


def sliding_margins(model, net, x, y, state: State, mode: Mode) -> tuple[Array, Array]:
    """How firmly each sliding pre-activation is held: ``(ż₀, −ż₁)``, relative, where ``ż₀`` and ``ż₁`` are its
    velocity with its σ′ set to 0 and to 1 (the others' held where they are). Sliding needs both ≥ 0 (the
    one-sided fields point into the surface); the first reaching 0 says it leaves to the negative side, the
    second to the positive side. Off the sliding set: 1.

    Raising σ′ of ``j`` from 0 to 1 adds ``u_j ∇z_j`` to the gradient (``u_j`` the signal backpropagated to its
    unit), so moves ``ŷ`` by ``−u_j Ĵ_jᵀ`` (``Ĵ_j`` the row of ``∇z_j`` in the G-orthonormal coordinates
    ``ŷ``). Sliding needs those moves to cancel the normal part of ``F_g``, ``Ĵ_Sᵀ λ`` (least-norm ``λ``): the
    Filippov multiplier is ``α_j = λ_j / u_j``, and ``ż₀ = λ_j ‖Ĵ_j‖²``, ``−ż₁ = (u_j − λ_j) ‖Ĵ_j‖²``. Unlike α
    these are continuous where ``u`` passes through 0; they are scaled by ``|u_j| ‖Ĵ_j‖² + ‖ŷ‖ ‖Ĵ_j‖`` (the
    jump of ``ż`` across the gate, plus the speed), which does not vanish there. With two or more hidden
    layers ``u_j`` carries the multipliers of the sliding units above it (`_signals`).
    """
    return _segment(model, net, x, y, state, mode, margins=True)[1:]


def _linear_margins(model, net, x, y, state: State, mode: Mode, base: State):
    """`sliding_margins` with one hidden layer, from ``F_g`` (`base`): ``λ_j ‖Ĵ_j‖² = β_{n,i} ‖x_n‖²`` with
    ``β`` the least-norm coefficients of row ``i`` of ``V̇_1``'s normal part on the sliding ``x_n``."""
    beta = sample_coefficients(mode.bases, x, base.V[0])
    jump = _gate_effect(model, net, x, y, state)
    sq = jnp.sum(x * x, axis=1)[:, None]
    scale = jnp.abs(jump) * sq + jnp.linalg.norm(base.V[0]) * jnp.sqrt(sq) + jnp.finfo(x.dtype).tiny
    sliding = mode.bases.sliding
    return jnp.where(sliding, beta * sq / scale, 1.0).ravel(), jnp.where(
        sliding, (jump - beta) * sq / scale, 1.0
    ).ravel()


def _gate_effect(model, net, x, y, state: State) -> Float[Array, "N d1"]:
    """``g^{θθ} u_{n,i}`` (one hidden layer): raising σ′ of ``(n, i)`` from 0 to 1 moves row ``i`` of ``V̇_1`` by
    ``−g^{θθ} u_{n,i} x_n`` (``u`` the backpropagated signal), so ``ż_{n,i}`` by ``−g^{θθ} u_{n,i} ‖x_n‖²``."""
    p = _problem(model, net, x, y, state, 0.0, ())
    return p.c[0] ** 2 * p.w[:, None] * state.V[1][0][None, :]


def _signals(model, net, x, y, state: State, gates, sliding=None, lam=None, dead=None) -> Float[Array, " P"]:
    """``u``: the signal backpropagated to each hidden unit's output (before its gate), σ′ = `gates` above.

    Where `dead` is given, a unit whose sample is dead in the layer above (all its pre-activations there
    dead: `_dead`) gets the signal it would pass with σ′ = 1, the side it would revive to: the sample's
    pre-activations above then take the signs of this unit's weights, ``u_j = Σ_i max(V_{ij}, 0) u_i``. Its
    gate's effect is not what the dead gates say (measured on the stall case at t = 1.538: a layer-1
    pre-activation of a dead sample reached zero and slid on the dead gates' signal, where the smoothed flow
    crossed and revived the sample; 2.4e-3 off by t = 1.55).

    Where `sliding` and the multipliers' numerators `lam` (``λ_j = α_j u_j``, `sliding_margins`) are given, a
    sliding unit passes ``α_j u_j = λ_j`` down instead: its Filippov multiplier, not the mode's 0. Layer by
    layer from the top this is exact where a sample is pinned in two layers (then ``u`` of the lower unit
    depends on the upper one's α, and ``λ`` splits accordingly; measured on the stall case: with the mode's 0,
    one layer-1 pre-activation under a sliding layer-2 one of its sample entered and left sliding 40 times
    by t = 0.5)."""
    p = _problem(model, net, x, y, state, 0.0, ())
    gates = _layers(net, gates)
    sliding = None if sliding is None else _layers(net, sliding)
    lam = None if lam is None else _layers(net, lam)
    us, delta = [None] * len(gates), p.w[:, None]
    for h in reversed(range(len(gates))):
        us[h] = delta @ p.V[h + 1]
        delta = gates[h] * us[h] if sliding is None else jnp.where(sliding[h], lam[h], gates[h] * us[h])
    if dead is not None:
        dead = _layers(net, dead)
        for h in range(len(gates) - 1):
            revived = us[h + 1] @ jnp.maximum(p.V[h + 1], 0.0)
            us[h] = jnp.where(jnp.all(dead[h + 1], axis=1, keepdims=True), revived, us[h])
    return _flat(us)


def attracting(model, net, x, y, state: State, gates, dead=None) -> Bool[Array, " P"]:
    """Where sliding is possible (the gate's effect ``u_j ‖Ĵ_j‖²`` on ``−ż_j`` is > 0, σ′ = `gates` above):
    both one-sided fields point into the surface when a σ′ in (0, 1) holds ``z`` at zero (it attracts). With
    ``u < 0`` both point away (it repels: sliding there is a Filippov solution, but an unstable one that every
    smoothed flow leaves at once). An effect below 1e-8 of the largest counts as zero."""
    if _linear(net):
        effect = _gate_effect(model, net, x, y, state).ravel()
    else:
        _, inputs, _ = _forward_parts(net, state.V, x)
        # ‖Ĵ_j‖² > 0 on every unit whose input is not zero: its sign is u's, its size a scale for the tolerance
        sq = [jnp.outer(jnp.sum(a * a, axis=1), jnp.ones(V.shape[0])) for a, V in zip(inputs, state.V[:-1])]
        effect = _signals(model, net, x, y, state, gates, dead=dead) * _flat(sq)
    return effect > EVENT_TOL * jnp.max(jnp.abs(effect))


def distance(model, net, x, y, state: State, mode: Mode) -> Float[Array, ""]:
    """The event function: the least of the free pre-activations' signed distances to zero (their side is
    their gate's) and the sliding ones' margins (`sliding_margins`)."""
    return segment_and_distance(model, net, x, y, state, mode)[1]


def _if_sliding(mode: Mode, margins):
    """``margins()`` where something slides (they cost a field evaluation), else ones."""
    ones = jnp.ones(mode.sliding.shape, mode.gates.dtype)
    return jax.lax.cond(jnp.any(mode.sliding), margins, lambda: (ones, ones))


def _least(mode: Mode, free, lower, upper):
    return jnp.min(jnp.where(mode.sliding, jnp.minimum(lower, upper), free))


def segment_and_distance(model, net, x, y, state: State, mode: Mode):
    """`segment_field` and `distance` from one evaluation of ``F_g`` (what a step's end needs).

    **Returns:** ``(v, d, lower, upper)``: the segment field, the event function, and the sliding margins."""
    v, lower, upper = _segment(model, net, x, y, state, mode, margins=True)
    return v, _least(mode, _free_distance(net, x, state, mode), lower, upper), lower, upper


def _free_distance(net, x, state: State, mode: Mode):
    z, scales, _ = _forward(net, state, x)
    side = 2.0 * mode.gates - 1.0
    # a unit whose input vanishes has z ≡ 0 while it does: it has no side to reach (nor, at rounding's size, a
    # sign: one revived at an event has its input at ~1e-17)
    live = (scales > 1e-12 * jnp.max(scales)) & ~mode.dead
    d = jnp.where(live, side * z / jnp.where(live, scales, 1.0), 1.0)
    return d + jnp.where(mode.released, RELEASE_OFFSET, 0.0)


def select_mode(model, net, x, y, state: State, candidates, exiting) -> tuple[Mode, State, object, Array]:
    """The mode at an event: from the exact velocity with `candidates` pinned, which of them slide.

    **Arguments:**

    - `candidates`: the pre-activations at zero (the state is on their stratum), flat.
    - `exiting`: per pre-activation, the bound (0 or 1) its multiplier reached at this event, else -1: such
      a pre-activation leaves to that side even though ``m`` does not move it yet (it leaves tangentially).

    **Returns:** ``(mode, m, info, acts)``: the new `Mode`, the exact velocity, its `FilippovInfo`, and where
    a surface attracts (`attracting`, with the gates ``m`` chose).
    """
    # few pre-activations are pinned at most events: small slot counts first (16, 128, then all). Deeper: also
    # 512 (at 181 pinned on the stall case, 2.6 s a call against 15 s with all 1,280). Its Gauss-Newton runs
    # to convergence: measured on the stall case at t = 0.942, capped at 3 iterations of 10 inner steps (gap
    # 2e-4) it held 7 of 54 candidates and its mode's field was 3.9 off the exact velocity of norm 3.1; converged
    # (11 iterations, gap 1e-6) 32, and 6e-5 off.
    kw = dict(slots=(16, 128)) if _linear(net) else dict(slots=(16, 128, 512))
    z, _, rates = _forward(net, state, x)
    # the dead pre-activations (`_dead`) are at zero too, or have no effect: pinned, then σ′ = their α
    dead = _dead(net, x, state, candidates, jnp.where(candidates, 0.0, z > 0), jnp.zeros(z.shape, bool))[2]
    at_zero = _layers(net, candidates | dead)
    m, info = exact_field(model, net, x, y, state, pinned_mask=at_zero, return_info=True, **kw)
    alpha = _flat(info.alpha)
    zdot = _zdot(net, state, x, m, alpha)
    held = jnp.abs(zdot) <= _HELD_TOL[_linear(net)] * rates * _hidden_speed(m, state)
    # only an attracting surface holds a pre-activation (a repelling one is the least-norm velocity's choice
    # too, but no smoothed flow stays there)
    acts = attracting(model, net, x, y, state, alpha, dead)
    sliding = candidates & held & acts & (exiting < 0)
    leave_up = jnp.where(held, exiting == 1, zdot > 0)
    gates = jnp.where(dead, alpha, jnp.where(candidates, leave_up, z > 0)).astype(x.dtype)
    lam_ref = alpha * _signals(model, net, x, y, state, alpha)
    return new_mode(model, net, x, state, sliding, gates, candidates & ~sliding, dead, lam_ref), m, info, acts


# |ż| (relative, as in `select_mode`) below which the exact velocity holds a pre-activation. One hidden layer:
# EVENT_TOL (its bounded least squares is exact to rounding). More: the relaxation's Gauss-Newton stops at a gap
# of ~1e-6; measured on the stall case at t = 0.942, the held candidates had |ż| up to 3e-7, the others 8e-4 and
# more.
_HELD_TOL = {True: EVENT_TOL, False: 1e-5}


def project_onto(model, net, x, state: State, candidates) -> State:
    """The state moved back onto the stratum of `candidates` (least-norm change of the hidden directions, each
    put back on its sphere: a positive scaling keeps zeros). One hidden layer: one step, exact; more: up to
    three Gauss–Newton steps, the rank decided afresh at each, until `on_stratum` (one, at most events)."""
    if _linear(net):
        bases = unit_bases(x, candidates.reshape(x.shape[0], -1))
        V1 = state.V[0] - least_norm_correction(bases, x, x @ state.V[0].T)
        return State((V1 / jnp.linalg.norm(V1), state.V[1]), state.rho, state.rho_k)

    def cond(c):
        i, state = c
        return (i < 3) & ~on_stratum(net, x, state, candidates)

    def once(c):  # a loop, not unrolled: one copy of the basis and the step to compile
        i, state = c
        gates = (_forward(net, state, x)[0] > 0).astype(x.dtype)
        return i + 1, curved_step(model, net, x, state, curved_basis(model, net, x, state, candidates, gates))

    return jax.lax.while_loop(cond, once, (0, state))[1]


# ---- the compiled event loop ------------------------------------------------------------------------------
_MAX_JACOBIAN_AGE = 20  # as RosenbrockW's default
_REFACTOR_RATIO = 2.0
_LOCATE_ITERATIONS = 30  # regula falsi (Illinois) on the step's dense output, to a quarter of EVENT_TOL
_REDO_ITERATIONS = 8  # then on steps redone from the step's start: the event state at the step's own accuracy
_AIM = 0.5 * EVENT_TOL  # the located event lies in [−EVENT_TOL, 0]: aim at its middle

RUNNING, REACHED, STEADY_STOP, MAX_STEPS_STOP, NONFINITE_STOP, MAX_EVENTS_STOP, CHATTER_STOP = range(7)
# Events in a row, each after a step below 1e-8 (1 + |t|), that count as a cycle (`CHATTER_STOP`): a safety net.
# Before the mode selection was mended (`select_mode`, `_dead`), the stall case at t = 0.942 had one layer-2
# unit's pre-activations of four samples enter after steps of 9e-10, be released in place, and come back, until
# the event cap. A burst of genuine events is grouped: everything within EVENT_TOL of zero is one event.
_CHATTER_EVENTS = 200
_CHATTER_STEP = 1e-8


class _Loop(eqx.Module):
    t: Array
    z: Array
    h: Array
    mode: Mode
    f0: Array  # the segment field at (t, z)
    d0: Array  # the event function at (t, z)
    margins: Array  # there, the sliding margins (the least of `sliding_margins`' two; 1 off the sliding set)
    inv: Array  # (I − γ h_lu J)⁻¹: see RosenbrockW
    h_lu: Array
    jac_age: Array
    saves: Array
    counts: Array  # _COUNTS
    sliding_time: Array
    status: Array
    stuck: Array  # this iteration was an event in place (see `body`)
    initial: Array  # this is the first iteration: the mode is chosen where the run starts
    chatter: Array  # events in a row after steps below _CHATTER_STEP


_COUNTS = (
    "steps", "rejected_steps", "jacobians", "crossings", "entries", "exits", "events", "max_sliding", "unresolved",
)  # fmt: skip


def _illinois(g, lo, g_lo, hi, g_hi, iterations, tol, *, first=None, aux=None, bisect=False):
    """Regula falsi (Illinois; with `bisect`, bisecting where one end keeps moving slowly) on a bracket
    ``[lo, hi]`` of a sign change of `g` (``g_lo > 0 ≥ g_hi``) until ``|g| ≤ tol`` or `iterations`. `g`
    returns ``(value, aux)``; the first point tried is `first` if given.

    **Returns:** ``(m, g(m), aux(m), hi, aux(hi))``: the last point tried (``hi``, with `aux`, if none) and the
    bracket's end past the sign change."""

    def cond(c):
        i, *_, g_m, _, _ = c
        return (i < iterations) & (jnp.abs(g_m) > tol)

    def body(c):
        i, lo, g_lo, hi, g_hi, side, slow, *_ = c
        m = jnp.clip(hi - g_hi * (hi - lo) / (g_hi - g_lo), lo + 1e-6 * (hi - lo), hi - 1e-6 * (hi - lo))
        # With `bisect`, where the same end moved twice in a row without halving its |g|: the midpoint. On the
        # stall case just after an exit (g_lo = 6e-9 from the released offset, flat; g_hi = -5e-4, the root a
        # quarter of the way) Illinois alone crept from lo for all its iterations, the step was taken whole and
        # four crossings in it were projected onto zero at once (3e-4 off the smoothed flow for good). Not from a
        # good first guess with few iterations: a bisection there throws it away (experiment 10's digits net at
        # rtol 1e-5: 1.7e-3 off the tight solution by t = 0.1, against 2e-7).
        if bisect:
            m = jnp.where(slow, 0.5 * (lo + hi), m)
        if first is not None:
            m = jnp.where(i == 0, first, m)
        gm, aux_m = g(m)
        up = gm > 0  # the root is above m
        new_side = jnp.where(up, 1, -1)
        slow = (new_side == side) & (jnp.abs(gm) > 0.5 * jnp.abs(jnp.where(up, g_lo, g_hi)))
        # Illinois: halve the value kept at the end that did not move twice in a row
        g_hi = jnp.where(up & (side == 1), 0.5 * g_hi, g_hi)
        g_lo = jnp.where(~up & (side == -1), 0.5 * g_lo, g_lo)
        aux_hi = jax.tree_util.tree_map(lambda a, b: jnp.where(up, a, b), c[-1], aux_m)
        return (i + 1, jnp.where(up, m, lo), jnp.where(up, gm, g_lo), jnp.where(up, hi, m), jnp.where(up, g_hi, gm),
                new_side, slow, m, gm, aux_m, aux_hi)  # fmt: skip

    out = jax.lax.while_loop(cond, body, (0, lo, g_lo, hi, g_hi, 0, False, hi, g_hi, aux, aux))
    return out[-4], out[-3], out[-2], out[3], out[-1]


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
    """Integrate the exact flow of one member (traceable: one ``lax.while_loop``).

    The segments are RosenbrockW steps on ``P_S F_g``; the W-method's matrix (as the inverse of ``I − γhW``,
    ``W = P_S ∂F_g``) is kept across events, except when the sliding set changes (the stages stay on the new
    stratum only with its projection in the matrix), and so is the step size. A step whose end has crossed
    the event function's zero is redone to the event: the crossing is located on the step's dense output, then
    refined on steps redone from the step's start. On a curved stratum (two or more hidden layers) each
    step is projected back onto it before its end is evaluated, and the constraints' combinations are renewed
    with the matrix. The first iteration is an event in place that chooses the mode at the start.

    **Returns:** a dict: ``saves`` (the flat states at `ts`, NaN where not reached), ``t_final``, ``z_final``,
    ``status`` (see the module's constants), the counts of `_COUNTS`, and ``sliding_time``.
    """
    unravel = unraveler(model, net)
    ros = RosenbrockW(jacobian="rev", retry=False)
    dtype = z0.dtype
    ts = jnp.asarray(ts, dtype)
    t1 = jnp.asarray(t1, dtype)
    linear = _linear(net)

    def field_of(mode):
        return lambda t, z: ravel_pytree(segment_field(model, net, x, y, unravel(z), mode))[0]

    def dist(z, mode):
        return distance(model, net, x, y, unravel(z), mode)

    def factor(mode, t, z, h):
        if linear:  # P_S is constant: the segment field's own Jacobian
            jac = jax.jacrev(field_of(mode), argnums=1)(t, z)
        else:  # P_S(z_0) ∂F_g: a W-method needs no derivative of the projection
            state = unravel(z)
            gates = _layers(net, mode.gates)
            J_g = jax.jacrev(lambda z_: ravel_pytree(one_sided_field(model, net, x, y, unravel(z_), gates))[0])(z)
            P = jax.jacfwd(
                lambda v: ravel_pytree(curved_projection(model, net, x, state, mode.bases, unravel(v))[0])[0]
            )(jnp.zeros_like(z))
            jac = jax.lax.cond(jnp.any(mode.sliding), lambda: P @ J_g, lambda: J_g)
        return ros._factor(jac, h)

    # The first iteration is an event in place (d0 = −∞) that chooses the mode where the run starts, by the
    # events' own code: one copy of the mode selection to compile, not two (6 s of 35 s of XLA's compilation on
    # the stall case).
    # Until then every pre-activation is free, on its sign's side.
    z0s = unravel(z0)
    gates = (_forward(net, z0s, x)[0] > 0).astype(dtype)
    free = jnp.zeros(gates.shape, bool)
    mode = new_mode(model, net, x, z0s, free, gates, free)
    f0 = ravel_pytree(one_sided_field(model, net, x, y, z0s, _layers(net, gates)))[0]
    h0 = jnp.minimum(t1, 1e-2 * (1.0 + jnp.linalg.norm(z0)) / jnp.maximum(jnp.linalg.norm(f0), 1e-300))
    eye = jnp.eye(z0.size, dtype=dtype)  # a placeholder: the first iteration makes the Jacobian (jac_age)
    init = _Loop(
        jnp.asarray(0.0, dtype), z0, h0, mode, f0, jnp.asarray(-jnp.inf, dtype), jnp.ones(gates.shape, dtype), eye,
        h0, jnp.asarray(_MAX_JACOBIAN_AGE), jnp.where((ts <= 0.0)[:, None], z0[None], jnp.nan),
        jnp.zeros(len(_COUNTS), jnp.int32), jnp.asarray(0.0, dtype), jnp.asarray(RUNNING), jnp.asarray(False),
        jnp.asarray(True), jnp.asarray(0),
    )  # fmt: skip

    def cond(c):
        return c.status == RUNNING

    def body(c: _Loop) -> _Loop:
        # A segment that starts below the event function's zero would see no event until it came back: the mode
        # is chosen again where it stands (a step of length 0; not twice in a row). Measured on experiment 10's
        # digits net at rtol 1e-5: a margin accepted at -5.7e-9, then a pre-activation carried 0.02 past zero
        # unseen, and 2 of 16 starts ended at another ρ.
        stuck = (c.d0 + _AIM <= 0) & ~c.stuck
        h = jnp.where(stuck, 0.0, jnp.minimum(c.h, t1 - c.t))
        need = (c.jac_age >= _MAX_JACOBIAN_AGE) | (jnp.abs(h / c.h_lu - 1.0) > _REFACTOR_RATIO)
        mode = c.mode
        if not linear:  # renew the constraints' combinations where the state is on the stratum (see `_stratum`)
            fresh = lambda: make_bases(model, net, x, unravel(c.z), mode.sliding, mode.gates)  # noqa: E731
            mode = eqx.tree_at(lambda m: m.bases, mode, jax.lax.cond(need, fresh, lambda: mode.bases))
        F = field_of(mode)
        inv = jax.lax.cond(need, lambda: factor(mode, c.t, c.z, h), lambda: c.inv)
        h_lu = jnp.where(need, h, c.h_lu)
        rs = ros_state(c.f0, inv, h_lu)

        def step(h_):
            return ros._stages(F, c.t, c.z, c.f0, h_, rs, loop=True)

        z1, err, lin, quad = step(h)
        scale = atol + rtol * jnp.maximum(jnp.abs(c.z), jnp.abs(z1))
        ratio = jnp.sqrt(jnp.mean((err / scale) ** 2))
        ok = jnp.isfinite(ratio) & (ratio <= 1.0)
        # on a curved stratum the stages leave it by the step's local error: back onto it, and evaluate there (an
        # evaluation of the projected field fewer per step than evaluating before the projection too)
        s1 = unravel(z1)
        if not linear:
            s1 = jax.lax.cond(jnp.any(mode.sliding), lambda: curved_onto(model, net, x, s1, mode.bases), lambda: s1)
        v1, d1, lower1, upper1 = segment_and_distance(model, net, x, y, s1, mode)
        z1_on, f1, margins1 = ravel_pytree(s1)[0], ravel_pytree(v1)[0], jnp.minimum(lower1, upper1)
        event = ok & (((d1 < 0) & (c.d0 + _AIM > 0)) | stuck)

        def locate():
            # The step is redone to land in [−EVENT_TOL, 0] of the event function: aim at its middle, first on the
            # dense output, then by regula falsi (Illinois) on steps redone from the step's start.
            g = lambda z_: dist(z_, mode) + _AIM  # noqa: E731

            def dense(th):
                z_ = c.z + th * (lin + th * quad)
                if linear:
                    return g(z_), None
                # Deeper, the event function costs a projection (on the stall case 35× the one-sided field, and
                # 11,700 of its 27,000 evaluations were here): the free distances are exact on the dense output,
                # the sliding margins interpolated between the step's ends. The redone steps below are exact.
                free = _free_distance(net, x, unravel(z_), mode)
                return jnp.min(jnp.where(mode.sliding, (1.0 - th) * c.margins + th * margins1, free)) + _AIM, None

            guess, *_ = _illinois(dense, 0.0, c.d0 + _AIM, 1.0, d1 + _AIM, _LOCATE_ITERATIONS, 0.5 * _AIM,
                                  bisect=True)  # fmt: skip

            def redone(h_):
                out = step(h_)
                return g(out[0]), out

            m, gm, out, h_hi, out_hi = _illinois(redone, 0.0 * h, c.d0 + _AIM, h, d1 + _AIM, _REDO_ITERATIONS,
                                                 _AIM, first=guess * h, aux=(z1, err, lin, quad))  # fmt: skip
            # none landed in the window: the bracket's end past the event (the projection then absorbs the miss)
            keep = jnp.abs(gm) <= _AIM
            return jnp.where(keep, m, h_hi), *(jnp.where(keep, a, b) for a, b in zip(out, out_hi))

        h_acc, z_acc, _, lin, quad = jax.lax.cond(event & ~stuck, locate, lambda: (h, z1, err, lin, quad))
        t_new = c.t + h_acc
        theta = (ts - c.t) / h_acc
        put = ok & (ts > c.t) & (ts <= t_new)
        th = theta[:, None]
        saves = jnp.where(put[:, None], c.z[None, :] + th * (lin[None, :] + th * quad[None, :]), c.saves)
        later = ~c.initial  # the first iteration's event and Jacobian are the start's: not counted

        def at(z_acc):
            return _event_update(model, net, x, y, z_acc, mode, c.initial)

        def none(z_acc):  # no event: the step ends at z1, where the segment field and the distance are known
            return z1_on, mode, jnp.zeros(3, jnp.int32), jnp.asarray(False), jnp.asarray(True), f1, d1, margins1

        z_new, mode_new, kinds, restratified, resolved, f_new, d_new, margins_new = jax.lax.cond(event, at, none, z_acc)

        fac = jnp.clip(0.9 * jnp.where(ratio > 0, ratio, 1e-10) ** (-1.0 / 3.0), 0.2, 3.0)
        h_next = jnp.where(stuck, c.h, jnp.where(ok, h * fac, h * jnp.minimum(fac, 0.9)))
        counts = (
            c.counts.at[0]
            .add((ok & ~stuck).astype(jnp.int32))
            .at[1]
            .add((~ok).astype(jnp.int32))
            .at[2]
            .add((need & later).astype(jnp.int32))
        )
        counts = counts.at[3:6].add(jnp.where(event & later, kinds, 0)).at[6].add((event & later).astype(jnp.int32))
        counts = counts.at[7].max(jnp.sum(mode_new.sliding).astype(jnp.int32))
        # unresolved: a mode the loops did not settle, or an event in place that still left the segment below zero
        # (at the start, the next iteration may choose again in place)
        counts = counts.at[8].add((ok & (~resolved | (stuck & later & (d_new + _AIM <= 0)))).astype(jnp.int32))
        sliding_time = c.sliding_time + jnp.where(ok & jnp.any(mode.sliding), h_acc, 0.0)
        tiny = event & later & (h_acc <= _CHATTER_STEP * (1.0 + jnp.abs(c.t)))
        chatter = jnp.where(ok, jnp.where(tiny, c.chatter + 1, 0), c.chatter)

        keep = lambda new, old: jnp.where(ok, new, old)  # noqa: E731
        t_out, z_out = keep(t_new, c.t), keep(z_new, c.z)
        steady = steady_tol is not None and jnp.linalg.norm(f_new) <= steady_tol * (1 + jnp.linalg.norm(z_new))
        status = jnp.select(
            [~jnp.all(jnp.isfinite(z_out)), ok & (t_new >= t1), ok & steady,
             counts[0] + counts[1] >= max_steps, counts[6] >= max_events, chatter >= _CHATTER_EVENTS],
            [NONFINITE_STOP, REACHED, STEADY_STOP, MAX_STEPS_STOP, MAX_EVENTS_STOP, CHATTER_STOP],
            RUNNING,
        )  # fmt: skip
        return _Loop(
            t_out, z_out, h_next, jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), mode_new, mode),
            keep(f_new, c.f0), keep(d_new, c.d0), keep(margins_new, c.margins), inv, h_lu,
            # a new sliding set needs a new Jacobian: the stages stay on the stratum only with P_S in it
            jnp.where(restratified & ok, _MAX_JACOBIAN_AGE, jnp.where(need, 1, c.jac_age + ok)),
            jnp.where(c.initial, jnp.where((ts <= 0.0)[:, None], z_new[None], saves), saves), counts, sliding_time,
            status, stuck & later, jnp.asarray(False), chatter,
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


def _event_update(model, net, x, y, z, mode: Mode, initial=False):
    """At an event: the state projected onto its stratum, the new mode, the counts of (crossings, entries,
    exits), whether the sliding set changed, whether the mode is resolved (consistent, found by loops that
    converged within their caps), and there the new segment field (flat), the event function, and the sliding
    margins (the least of the two).

    Most events are a free pre-activation crossing transversally, or a sliding one leaving at its bound: the
    mode that flips the first's gate, or releases the second to its bound's side, is tried first and kept if
    consistent (`_violations`). If flipped ones move back, the mode that slides them (where their surface
    attracts) is tried next: an entry. Otherwise the exact velocity decides (`select_mode`, a bounded least squares),
    corrected by `make_consistent`.

    At the `initial` event (the run's start, every pre-activation free) the candidates are the pre-activations
    within 1e-10 (relative) of zero, and the exact velocity decides.
    """
    unravel = unraveler(model, net)
    state = unravel(z)
    near = (_free_distance(net, x, state, mode) <= EVENT_TOL) & ~mode.sliding
    near = jnp.where(initial, _flat(pinned(model, net, x, state, 1e-10)), near)
    lower, upper = sliding_margins(model, net, x, y, state, mode)
    exiting = jnp.where(mode.sliding & (lower <= EVENT_TOL), 0, -1)
    exiting = jnp.where(mode.sliding & (upper <= EVENT_TOL) & (upper < lower), 1, exiting)
    candidates = mode.sliding | near
    # onto the stratum of every candidate: the new sliding set is among them, and the others leave from zero
    state = project_onto(model, net, x, state, candidates)
    _, _, rates = _forward(net, state, x)

    leaving = exiting >= 0
    sliding = mode.sliding & ~leaving
    gates = jnp.where(near, 1.0 - mode.gates, jnp.where(leaving, exiting.astype(x.dtype), mode.gates))
    trial = new_mode(model, net, x, state, sliding, gates, near | leaving, mode.dead, mode.lam_ref)
    seg = segment_and_distance(model, net, x, y, state, trial)
    _, box, back = _violations(net, x, state, trial, seg, rates)

    crossed = _consistent(box, back) & ~initial

    def entry():
        # The flipped ones that move back, where their surface attracts, enter sliding: that mode is tried next,
        # before the exact velocity (on the stall case 442 of 918 events went to `select_mode`, at 157 ms each).
        entering = near & (back > EVENT_TOL) & attracting(model, net, x, y, state, gates, mode.dead)
        tried = new_mode(model, net, x, state, sliding | entering, jnp.where(entering, 0.0, gates),
                         (near | leaving) & ~entering, mode.dead, mode.lam_ref)  # fmt: skip
        seg_tried = segment_and_distance(model, net, x, y, state, tried)
        _, box_tried, back_tried = _violations(net, x, state, tried, seg_tried, rates)
        return tried, seg_tried, jnp.any(entering) & _consistent(box_tried, back_tried)

    tried, seg_tried, entered = jax.lax.cond(crossed | initial, lambda: (trial, seg, jnp.asarray(False)), entry)

    def select():
        new, _, info, acts = select_mode(model, net, x, y, state, candidates, exiting)
        new, done = make_consistent(model, net, x, y, state, new, rates, acts)
        return new, done & _settled(net, info), *segment_and_distance(model, net, x, y, state, new)

    # `tried` is the flip trial itself where that was consistent
    new, resolved, v, d, lower, upper = jax.lax.cond(
        crossed | entered, lambda: (tried, jnp.asarray(True), *seg_tried), select
    )
    kinds = jnp.stack([
        jnp.sum(near & ~new.sliding & (new.gates != mode.gates)),  # crossings
        jnp.sum(near & new.sliding),  # entries
        jnp.sum(mode.sliding & ~new.sliding),  # exits
    ]).astype(jnp.int32)  # fmt: skip
    restratified = jnp.any(new.sliding != mode.sliding)
    return ravel_pytree(state)[0], new, kinds, restratified, resolved, ravel_pytree(v)[0], d, jnp.minimum(lower, upper)


def _settled(net, info):
    """Whether the exact velocity's own loops settled, with one hidden layer (its bounded least squares). With
    more, its capped Gauss-Newton is only a first guess that `make_consistent` checks (it reports unconverged
    after 3 iterations as after 20, measured on the stall case): there only the consistency pass counts."""
    return info.converged if _linear(net) else jnp.asarray(True)


# One change per iteration. 16 left 3 events unresolved in 8 unnormalized runs to steady state on clusters
# 5-16-1 (one of them ended at another ρ: 15.8 against 11.3); 64 resolved them all. The loop stops when done.
_CONSISTENCY_ITERATIONS = 64


def _violations(net, x, state: State, mode: Mode, seg, rates):
    """How far `mode` is from consistent at `state`, given its `segment_and_distance` `seg`: the side each
    sliding pre-activation would leave to (1 positive), how much its margin is negative (`sliding_margins`),
    and how fast each released one moves back against its gate's side (relative to ``‖V̇‖ (Σ_{j≤k}
    ‖a_{j-1,n}‖²)^½``, a bound of ``|ż|``)."""
    v, _, lower, upper = seg
    box = jnp.where(mode.sliding, -jnp.minimum(lower, upper), -jnp.inf)
    side = 2.0 * mode.gates - 1.0
    back = jnp.where(mode.released, -side * _zdot(net, state, x, v, mode.gates) / jnp.maximum(rates, 1e-300), -jnp.inf)
    return upper < lower, box, back / jnp.maximum(_hidden_speed(v, state), 1e-300)


def _consistent(box, back):
    return (jnp.max(box) <= EVENT_TOL) & (jnp.max(back) <= EVENT_TOL)


def make_consistent(model, net, x, y, state: State, mode: Mode, rates, acts) -> tuple[Mode, Array]:
    """Correct a mode until its segment field is consistent at `state`: every sliding margin ≥ 0 (σ′ in [0, 1]),
    every released pre-activation moving to its gate's side.

    The least-norm velocity at the event point decides the mode in most cases, but not all: with several
    pre-activations of one unit at zero, one that the velocity moves off its surface changes the one-sided
    field the others slide on, and a multiplier can leave [0, 1] (measured on a one-hidden-layer net: 1.77).
    Then, one change at a time (an active-set method), the worst violation is repaired: an out-of-box
    margin's pre-activation is released to that side; a released one moving back is sent the
    other way, and made sliding if it moves back from both sides (and its surface attracts, `acts`).

    With many pre-activations of one unit at zero and their inputs dependent (53 on one unit of a 16-6-1 net on
    digits, in 16 dimensions), the pass can cycle: the margins use the least-norm multipliers, which can leave
    [0, 1] where others in the box would do. A pass that does not settle returns `mode` as given, the exact
    velocity's choice, not wherever its cycle stopped (measured on that net: the flow then ended at ρ = 12.09
    where rtol 1e-6 … 1e-8 give 5.1324; with the given mode, 5.1324 at rtol 1e-5 too).

    **Returns:** ``(mode, consistent)``.
    """

    def cond(c):
        i, mode, flipped, done = c
        return (i < _CONSISTENCY_ITERATIONS) & ~done

    def body(c):
        i, mode, flipped, _ = c
        up_side, box, back = _violations(
            net, x, state, mode, segment_and_distance(model, net, x, y, state, mode), rates
        )
        bad_box = jnp.max(box) > EVENT_TOL
        bad_back = ~bad_box & ~_consistent(box, back)
        onehot_box = (jnp.arange(box.size) == jnp.argmax(box)) & bad_box
        onehot_back = (jnp.arange(back.size) == jnp.argmax(back)) & bad_back
        to_slide = onehot_back & flipped & acts
        to_flip = onehot_back & ~to_slide
        sliding = (mode.sliding & ~onehot_box) | to_slide
        gates = jnp.where(onehot_box, up_side.astype(x.dtype), mode.gates)
        gates = jnp.where(to_flip, 1.0 - gates, gates)
        released = (mode.released | onehot_box) & ~sliding
        changed = bad_box | bad_back
        new = new_mode(model, net, x, state, sliding, gates, released, mode.dead, mode.lam_ref)
        new = jax.tree_util.tree_map(lambda a, b: jnp.where(changed, a, b), new, mode)
        return i + 1, new, flipped | to_flip, ~changed

    _, new, _, done = jax.lax.while_loop(cond, body, (0, mode, jnp.zeros(mode.sliding.shape, bool), False))
    return jax.tree_util.tree_map(lambda a, b: jnp.where(done, a, b), new, mode), done
