"""The flow on a stratum: sliding is a projection.

A stratum ``M_S = {z_j = 0, j ∈ S}`` is the set of states where the hidden pre-activations in ``S`` (the
*sliding* set) sit at zero. The loss is continuous across the switching surfaces, so every one-sided field
``F_s`` (any σ′ on ``S``) has the same component tangent to ``M_S``, and where the flow slides the exact
velocity (:func:`flowsim._model.exact_field`) is that component:

    ``m = P_S F_s``, with ``P_S`` the G-orthogonal projection onto ``{d : ∇z_j · d = 0, j ∈ S}``.

This is the field an event-driven integrator follows between events, and :func:`project_to_stratum` is its
drift correction. Only the directions of the hidden layers move a hidden pre-activation, and the metric is a
multiple of the identity on each direction (``g^{θθ}_k``, :func:`metric_factors`), so in the coordinates
``ŷ_k = V̇_k / √g^{θθ}_k`` the projection is Euclidean. The constraints of ``S`` are often dependent (duplicate
samples, collapsed features give one constraint many times): the projection uses a rank-revealing SVD of the
constraint Jacobian, never the inverse of its Gram matrix. On the stratum the gradient of a pinned ``z`` is
orthogonal to the radial direction of every ``V_k`` (``z`` is homogeneous of degree 1 in each ``V_k``), so the
projection keeps a velocity tangent to the spheres ``‖V_k‖ = 1``.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from ._field import field
from ._filippov import _flat, _forward_parts, metric_factors, one_sided_field, pinned
from ._network import Network
from ._state import State

__all__ = ["project_to_stratum", "sliding_field"]


def _hidden_z(net: Network, x, hidden) -> Array:
    """Every hidden pre-activation, flattened, as a function of the hidden directions ``V_1..V_{L-1}``."""
    zs, _, _ = _forward_parts(net, tuple(hidden) + (jnp.zeros((1, hidden[-1].shape[0])),), x)
    return jnp.concatenate([z.ravel() for z in zs])


def _flat_hidden(state: State) -> Array:
    return jnp.concatenate([v.ravel() for v in state.V[:-1]])


def _unflat_hidden(flat, like: State) -> tuple:
    out, i = [], 0
    for v in like.V[:-1]:
        out.append(flat[i : i + v.size].reshape(v.shape))
        i += v.size
    return tuple(out)


def _col(model, net: Network, state: State):
    """``√g^{θθ}_k`` per flat hidden coordinate: ``ŷ = V̇ / col`` are G-orthonormal."""
    _, g_tt = metric_factors(model, net, state)
    return jnp.concatenate([jnp.full(v.size, jnp.sqrt(g_tt[k])) for k, v in enumerate(state.V[:-1])])


def _moved(state: State, step) -> State:
    """`state` with its hidden directions moved by `step` (flat, in V's coordinates) and each put back on its
    unit sphere (a positive scaling keeps zeros)."""
    hidden = _unflat_hidden(_flat_hidden(state) + step, state)
    return State(tuple(w / jnp.linalg.norm(w) for w in hidden) + (state.V[-1],), state.rho, state.rho_k)


def _constraints(model, net: Network, x, state: State, sliding):
    """The Jacobian of the sliding pre-activations in the coordinates ``ŷ`` (rows off ``S`` zero), its SVD's
    left and right factors and singular values, the column scaling ``√g^{θθ}``, and the values of those
    pre-activations."""
    flat0 = _flat_hidden(state)

    def z_of(flat):
        return _hidden_z(net, x, _unflat_hidden(flat, state))

    mask = jnp.concatenate([jnp.ravel(m) for m in sliding])
    z = z_of(flat0)
    J = jax.jacfwd(z_of)(flat0) if flat0.size < z.size else jax.jacrev(z_of)(flat0)
    col = _col(model, net, state)
    Jt = jnp.where(mask[:, None], J * col[None, :], 0.0)
    U, sv, Wt = jnp.linalg.svd(Jt, full_matrices=False)
    return U, sv, Wt, col, jnp.where(mask, z, 0.0)


def _kept(sv, rank_tol):
    return sv > rank_tol * jnp.maximum(sv[0], jnp.finfo(sv.dtype).tiny)


def sliding_field(
    model,
    net: Network,
    x: Float[Array | np.ndarray, "N d"],
    y: Float[Array | np.ndarray, " N"],
    state: State,
    sliding: tuple[Bool[Array, "N _dk"], ...],
    gates: tuple[Float[Array, "N _dk"], ...] | None = None,
    *,
    rank_tol: float = 1e-10,
) -> State:
    """The velocity of the flow sliding on the stratum of `sliding`: ``P_S F_s`` (traceable, jittable).

    **Arguments:**

    - `model`, `net`: the [`flowsim.Model`][flowsim.Model] and [`flowsim.Network`][flowsim.Network].
    - `x`, `y`: the data as arrays, shapes ``(N, d_0)`` and ``(N,)``.
    - `state`: the point (on the stratum, or within the solver's drift of it).
    - `sliding`: one boolean mask per hidden layer, shapes ``(N, d_k)``: the pre-activations held at zero.
    - `gates`: σ′ of every hidden pre-activation, one array per hidden layer (off `sliding` they choose the
      one-sided field, e.g. the bound a pinned pre-activation leaves by; on `sliding` they do not matter);
      default ``1[z > 0]``.
    - `rank_tol`: singular values of the constraint Jacobian below ``rank_tol`` times the largest count as
      zero (dependent constraints).

    **Returns:** a [`flowsim.State`][flowsim.State] holding the time derivatives: the field's scales and last
    layer, and the hidden directions projected.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    if net.depth < 2:
        return field(model, net, x, y, state)
    if gates is None:
        zs, _, _ = _forward_parts(net, tuple(state.V), x)
        gates = tuple((z > 0).astype(z.dtype) for z in zs)
    base = one_sided_field(model, net, x, y, state, gates)
    _, sv, Wt, col, _ = _constraints(model, net, x, state, sliding)
    yhat = _flat_hidden(base) / col
    basis = jnp.where(_kept(sv, rank_tol)[:, None], Wt, 0.0)
    yhat = yhat - basis.T @ (basis @ yhat)
    return State(_unflat_hidden(yhat * col, base) + (base.V[-1],), base.rho, base.rho_k)


def project_to_stratum(
    model,
    net: Network,
    x: Float[Array | np.ndarray, "N d"],
    state: State,
    sliding: tuple[Bool[Array, "N _dk"], ...],
    *,
    iterations: int = 3,
    rank_tol: float = 1e-10,
) -> State:
    """The drift correction: the state moved back onto the stratum of `sliding` (traceable, jittable).

    Each iteration takes the least-G-norm step that zeroes the linearized sliding pre-activations
    (Gauss–Newton, ``d = −G⁻¹Jᵀ(JG⁻¹Jᵀ)⁺ z_S``) and puts each hidden ``V_k`` back on its unit sphere (a
    positive scaling: zeros stay zeros). With one hidden layer the pre-activations are linear in ``V_1``, and
    one iteration lands on the stratum exactly (to round-off).

    **Arguments:**

    - `model`, `net`: the [`flowsim.Model`][flowsim.Model] and [`flowsim.Network`][flowsim.Network].
    - `x`: the inputs, shape ``(N, d_0)``.
    - `state`: the point, near the stratum.
    - `sliding`: one boolean mask per hidden layer, shapes ``(N, d_k)``.
    - `iterations`: Gauss–Newton iterations (a fixed count, so the function is traceable).
    - `rank_tol`: as for :func:`sliding_field`.

    **Returns:** the projected [`flowsim.State`][flowsim.State] (scales and last layer unchanged).
    """
    x = jnp.asarray(x)
    if net.depth < 2:
        return state
    for _ in range(1 if net.depth == 2 else iterations):
        U, sv, Wt, col, z = _constraints(model, net, x, state, sliding)
        keep = _kept(sv, rank_tol)
        state = _moved(state, -col * (Wt.T @ jnp.where(keep, (U.T @ z) / jnp.where(keep, sv, 1.0), 0.0)))
    return state


# ---- one hidden layer: the strata are linear in V_1 --------------------------------------------------------
# With one hidden layer the constraint of a pinned z_{n,i} = V_1[i] · x_n has the normal e_i x_nᵀ, which does
# not depend on the state: on a stratum the projection P_S is a fixed per-unit projection, row i of V̇_1 losing
# its component in span{x_n : (n, i) sliding}. So a segment of the exact flow with its sliding set S and the
# gates g of the other pre-activations fixed is the smooth field P_S F_g, whose Jacobian is P_S ∂F_g: a stiff
# solver needs no derivative of a factorization, and every stage of a Rosenbrock step stays in range(P_S),
# so the sliding pre-activations stay at zero to rounding without a drift correction.
class UnitBases(eqx.Module):
    """Per hidden unit ``i``, an orthonormal basis of ``span{x_n : (n, i) sliding}`` (one hidden layer): the
    eigenvectors of the Gram matrix ``M_i = Σ_{n sliding} x_n x_nᵀ`` (``d_0 × d_0``, small: an SVD of the
    ``N × d_0`` inputs cost 4× more per event)."""

    sliding: Bool[Array, "N d1"]
    lam: Float[Array, "d1 k"]  # the eigenvalues (squared singular values of the sliding inputs)
    W: Float[Array, "d1 k d0"]  # the eigenvectors, as rows
    keep: Bool[Array, "d1 k"]  # those kept: dependent samples give zeros


def unit_bases(x: Float[Array, "N d0"], sliding: Bool[Array, "N d1"], rank_tol: float = 1e-7) -> UnitBases:
    """The :class:`UnitBases` of the sliding set `sliding` (traceable). Directions whose singular value is below
    `rank_tol` of the unit's largest count as dependent."""
    x = jnp.asarray(x)
    M = jnp.einsum("ni,nd,ne->ide", sliding.astype(x.dtype), x, x)
    lam, Q = jnp.linalg.eigh(M)
    keep = lam > rank_tol**2 * jnp.maximum(lam[:, -1:], jnp.finfo(lam.dtype).tiny)
    return UnitBases(sliding, lam, jnp.swapaxes(Q, 1, 2), keep)


def _normal_part(bases: UnitBases, rows):
    return jnp.where(bases.keep, jnp.einsum("ikd,id->ik", bases.W, rows), 0.0)


def project_rows(bases: UnitBases, rows: Float[Array, "d1 d0"]) -> Float[Array, "d1 d0"]:
    """Row ``i`` of `rows` without its component in ``span{x_n : (n, i) sliding}``: ``P_S`` on ``V_1``."""
    return rows - jnp.einsum("ik,ikd->id", _normal_part(bases, rows), bases.W)


def _pinv_gram(bases: UnitBases, rows):
    """``M_i⁺ rows[i]`` per unit."""
    c = _normal_part(bases, rows) / jnp.where(bases.keep, bases.lam, 1.0)
    return jnp.einsum("ik,ikd->id", c, bases.W)


def sample_coefficients(bases: UnitBases, x, rows: Float[Array, "d1 d0"]) -> Float[Array, "N d1"]:
    """``β`` with ``(I − P_S) rows[i] = Σ_n β_{n,i} x_n`` over the sliding ``(n, i)``, of least norm:
    ``β_{·,i} = X_i M_i⁺ rows[i]``."""
    return jnp.where(bases.sliding, jnp.asarray(x) @ _pinv_gram(bases, rows).T, 0.0)


def least_norm_correction(bases: UnitBases, x, z: Float[Array, "N d1"]) -> Float[Array, "d1 d0"]:
    """The least-norm change of each row ``V_1[i]`` that moves the sliding ``z_{n,i}`` by ``−z_{n,i}``:
    ``X_i⁺ z = M_i⁺ X_iᵀ z``."""
    return _pinv_gram(bases, jnp.where(bases.sliding, z, 0.0).T @ jnp.asarray(x))


# ---- several hidden layers: the strata are curved ------------------------------------------------------------
# With two or more hidden layers a pinned pre-activation of layer k ≥ 2 is a nonlinear function of V_1..V_k, so
# P_S moves with the state and the constraints of S are often dependent (collapsed features). Measured on the
# 5-16-16-1 stall case at t = 2 with 181 pinned: on the stratum the constraint Jacobian has rank 97 with a clean
# gap (its smallest kept singular value 1.6e-8 of the largest, the next 6e-16), and the rank stays 97 along the
# stratum; but 1e-6 off it (a smoothed flow's state) the gap is smeared (values from 1e-5 down to 1e-14), so a
# rank decided afresh at every stage of a step, off the stratum by the step's local error, jumps. The rank and
# the independent combinations of the constraints (the left singular vectors U of the kept values) are therefore
# decided where the state is on the stratum (`curved_basis`); elsewhere the constraints are those combinations,
# ``B(z) = Uᵀ Ĵ_S(z)``, whose rank stays that of U while U's dependencies rotate by O(|Δz|) (measured: the left
# null space moved by 4.5e-4 over a step of 1e-3, while B kept its 97 values with the smallest at 1.6e-8).
class CurvedBasis(eqx.Module):
    """The independent combinations of a sliding set's constraints (two or more hidden layers), decided on the
    stratum: ``U`` holds the left singular vectors of the kept singular values of ``Ĵ_S`` (zero columns
    elsewhere); its rows follow the flat order of every hidden pre-activation (layer by layer, ``(N, d_k)``
    row-major)."""

    sliding: Bool[Array, " P"]
    gates: Float[Array, " P"]  # σ′ in the constraints' rows (`gated_z`): the mode's, 0 on the sliding set
    U: Float[Array, "P n"]


def gated_z(net: Network, x, hidden, gates: Float[Array, " P"]) -> Array:
    """Every hidden pre-activation, flat, as a function of the hidden directions, differentiated with σ′ =
    `gates` (flat) in the layers below: the ReLU's own derivative at a pinned pre-activation (sitting at ±1e-17
    after a projection) would follow the sign of rounding, and with it the rows of the layers above."""
    a, zs, i = x, [], 0
    for Vk in hidden:
        z = a @ Vk.T
        zs.append(z)
        g = gates[i : i + z.size].reshape(z.shape)
        i += z.size
        a = g * z + jax.lax.stop_gradient(net._sigma(z) - g * z)
    return jnp.concatenate([z.ravel() for z in zs])


def hat_rows(model, net: Network, x, state: State, sliding: Bool[Array, " P"], gates, idx) -> Array:
    """Rows `idx` (flat indices over every hidden pre-activation) of the Jacobian of the pre-activations with
    respect to the hidden directions (σ′ = `gates` below, `gated_z`), in the coordinates ``ŷ``; rows off
    `sliding` zero. Shape ``(K, n)``."""
    flat0 = _flat_hidden(state)

    def z_of(flat):
        return gated_z(net, x, _unflat_hidden(flat, state), gates)[idx]

    # few rows: one backward pass each; many: one forward pass per coordinate
    J = (jax.jacrev if idx.shape[0] < flat0.size else jax.jacfwd)(z_of)(flat0)
    return jnp.where(sliding[idx][:, None], J * _col(model, net, state)[None, :], 0.0)


# The sliding rows are gathered into the smallest of these slot counts that holds them (then all): at most
# events a few slide, and an SVD of the masked (P, n) Jacobian costs 55 ms on the stall case (P = 1280,
# n = 336) where 32 rows cost well under 1 ms.
_SLOTS = (32, 64, 128, 512)


def _gathered(sliding, fn, n: int):
    """``fn(idx)`` with ``idx`` the flat indices of `sliding` first, cut to the smallest slot count holding them
    (a static size: one compiled branch per slot count). Slot counts of `n` (the hidden directions' size) or
    more are not offered: there the rank is at most `n` whatever the count, and the branch with every row costs
    about as much (measured on the stall case, n = 336: the projection's SVD is 336 × 336 in both), while each
    branch is compiled at every call site."""
    P = sliding.shape[0]
    sizes = [k for k in _SLOTS if k < min(P, n)] + [P]
    order = jnp.argsort(~sliding, stable=True)
    which = jnp.minimum(jnp.searchsorted(jnp.asarray(sizes), jnp.sum(sliding)), len(sizes) - 1)
    return jax.lax.switch(which, [functools.partial(fn, order[:K]) for K in sizes])


def curved_basis(
    model, net: Network, x, state: State, sliding: Bool[Array, " P"], gates: Float[Array, " P"], rank_tol: float = 1e-10
):
    """The :class:`CurvedBasis` of `sliding` at `state` (on its stratum: see above), σ′ = `gates` off it.
    Singular values below `rank_tol` of the largest count as zero (dependent constraints)."""
    gates = jnp.where(sliding, 0.0, gates)
    P, n = sliding.shape[0], _flat_hidden(state).size

    def basis(idx):
        U, sv, _ = jnp.linalg.svd(hat_rows(model, net, x, state, sliding, gates, idx), full_matrices=False)
        U = jnp.where(_kept(sv, rank_tol)[None, :], U, 0.0)
        return jnp.zeros((P, n), U.dtype).at[idx, : U.shape[1]].set(U)

    return CurvedBasis(sliding, gates, _gathered(sliding, basis, n))


# Coefficients ``λ`` along directions of ``Ĵ_S`` with singular values below this (relative) are not taken from
# the field but from a reference (`_combined`). Measured on the stall case at t = 0.942: one layer-2 unit whose
# output weight had fallen to 1e-4, pinned for four samples of collapsed features, had rows at 9e-5 and 2.5e-4
# of the largest singular value (the next at 8e-2). Least-norm coefficients there are 1e-5 of the field over
# 1e-4: multipliers of -3,900 and 1.7e6 where the exact velocity holds the four with α in (0, 1).
MULTIPLIER_RANK = 1e-3


def _combined(model, net, x, state: State, basis: CurvedBasis, yhat=None, residual=None, lam_ref=None):
    """With ``B = Uᵀ Ĵ_S`` at `state` (the rows U drops are exact zeros; the others have U's rank):

    - for `yhat`: ``ŷ`` without its part in B's row space, and coefficients ``λ`` (flat, P) with that part
      ``= Ĵ_Sᵀ λ``: least-norm on the singular directions above `MULTIPLIER_RANK`, and below it (and in the
      null space of ``Ĵ_Sᵀ``) the component of `lam_ref` (zero if not given);
    - for `residual` (the sliding pre-activations' values, flat): the least-norm step ``d`` with
      ``B d = −Uᵀ residual`` (Gauss–Newton on the combinations).

    For `yhat` also ``Ĵ_S``'s squared row norms (flat, P)."""
    P, n = basis.U.shape

    def solve(idx):
        U, Jh = basis.U[idx, : min(idx.shape[0], n)], hat_rows(model, net, x, state, basis.sliding, basis.gates, idx)
        Ub, sb, Vbt = jnp.linalg.svd(U.T @ Jh, full_matrices=False)
        keep = sb > 1e-13 * jnp.maximum(sb[0], jnp.finfo(sb.dtype).tiny)
        inv = jnp.where(keep, 1.0 / jnp.where(keep, sb, 1.0), 0.0)
        Vbt = jnp.where(keep[:, None], Vbt, 0.0)
        out = []
        if yhat is not None:
            coef = Vbt @ yhat
            firm = sb > MULTIPLIER_RANK * jnp.maximum(sb[0], jnp.finfo(sb.dtype).tiny)
            L = U @ jnp.where(firm[None, :], Ub, 0.0)  # Ĵ_S's left singular vectors with firm singular values
            lam = L @ jnp.where(firm, inv * coef, 0.0)
            if lam_ref is not None:
                ref = jnp.where(basis.sliding[idx], lam_ref[idx], 0.0)
                lam = lam + ref - L @ (L.T @ ref)
            out += [yhat - Vbt.T @ coef, jnp.zeros(P, Jh.dtype).at[idx].set(lam)]
            out.append(jnp.zeros(P, Jh.dtype).at[idx].set(jnp.sum(Jh * Jh, axis=1)))
        if residual is not None:
            out.append(-(Vbt.T @ (inv * (Ub.T @ (U.T @ residual[idx])))))
        return tuple(out)

    return _gathered(basis.sliding, solve, n)


def curved_projection(model, net: Network, x, state: State, basis: CurvedBasis, velocity: State, lam_ref=None):
    """``P_S`` on the hidden directions of `velocity` (the constraints of `basis`, linearized at `state`), and
    the coefficients ``λ`` of the part removed on the constraints' rows, ``ŷ − P_S ŷ = Ĵ_Sᵀ λ`` (least-norm
    where they are well determined, else `lam_ref`'s: see `_combined`).

    **Returns:** ``(projected, λ, ‖Ĵ_j‖², ‖ŷ‖)``: a State with the hidden directions projected, and per flat
    pre-activation its coefficient and its row's squared norm (both zero off the sliding set)."""
    col = _col(model, net, state)
    yhat = _flat_hidden(velocity) / col
    projected, lam, row_sq = _combined(model, net, x, state, basis, yhat=yhat, lam_ref=lam_ref)
    hidden = _unflat_hidden(projected * col, velocity)
    return State(hidden + (velocity.V[-1],), velocity.rho, velocity.rho_k), lam, row_sq, jnp.linalg.norm(yhat)


# A state whose pinned pre-activations are all below this, relative to their scale ``‖V_k‖ ‖a_{k-1,n}‖`` (as in
# `pinned`), is on its stratum: the Gauss–Newton drift correction stops there. One iteration from a step's local
# error (≲ 1e-7) gets there; the second was half of the correction's cost on the stall case.
ON_STRATUM = 1e-13


def on_stratum(net: Network, x, state: State, sliding: Bool[Array, " P"]) -> Bool[Array, ""]:
    """Whether every `sliding` pre-activation (flat) is pinned to `ON_STRATUM` (`pinned`)."""
    return jnp.all(_flat(pinned(None, net, x, state, ON_STRATUM)) | ~sliding)


def curved_step(model, net: Network, x, state: State, basis: CurvedBasis) -> State:
    """One Gauss–Newton step of the drift correction onto the stratum of `basis` (see `curved_onto`)."""
    z = jnp.where(basis.sliding, _hidden_z(net, x, state.V[:-1]), 0.0)
    (step,) = _combined(model, net, x, state, basis, residual=z)
    return _moved(state, _col(model, net, state) * step)


def curved_onto(model, net: Network, x, state: State, basis: CurvedBasis, iterations: int = 2) -> State:
    """The drift correction on a curved stratum: Gauss–Newton on the combinations ``Uᵀ z_S = 0`` of `basis`
    (least-G-norm steps), each hidden ``V_k`` put back on its unit sphere (a positive scaling keeps zeros); at
    most `iterations`, until `on_stratum`."""

    def cond(c):
        i, state = c
        return (i < iterations) & ~on_stratum(net, x, state, basis.sliding)

    def once(c):  # a loop, not unrolled: one copy of the solve to compile
        i, state = c
        return i + 1, curved_step(model, net, x, state, basis)

    return jax.lax.while_loop(cond, once, (0, state))[1]
