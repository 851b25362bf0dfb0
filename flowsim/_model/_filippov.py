"""The exact (ε → 0) velocity of the ReLU flow: the least-norm element of the Filippov set.

The ReLU flow is piecewise smooth: the gradient jumps where a hidden pre-activation ``z = (V_k a_{k-1})_i`` of a
sample crosses zero. At a state ``x`` let ``A`` be the pre-activations at zero ("pinned"). Every choice of
``σ′ ∈ {0, 1}`` on ``A`` (with ``σ′ = 1[z > 0]`` elsewhere) gives a one-sided field ``F_s(x) = −G⁻¹∇L_s``, and
along every Filippov solution the velocity is, for almost every t, the element of least G-norm of their convex
hull, ``m(x)`` (Davis–Drusvyatskiy–Kakade–Lee 2020; Bolte–Pauwels 2021: the hull of the backpropagated
gradients with ``σ′(0) ∈ [0, 1]`` is a conservative field for L, so ``⟨v, ẋ⟩`` is the same for all its
elements ``v`` and ``−ẋ`` in it must be the least-norm one).

Only the directions of the hidden layers ``V_1..V_{L-1}`` see σ′: the forward pass (so every ``f_n``, the
scale equations and ``V̇_L``) does not. Writing ``α`` for σ′ on ``A`` and ``ŷ(α)`` for those directions'
velocity in G-orthonormal coordinates, ``ŷ_k = V̇_k / √g^{θθ}_k``:

- **One hidden layer:** ``ŷ`` is affine in ``α`` and the hull is ``ŷ([0, 1]^A)``, so ``m`` is the solution of
  the bounded least-squares problem ``min_{α ∈ [0,1]^A} ‖ŷ(α)‖`` — solved here exactly.
- **Deeper nets:** ``ŷ`` is multilinear in the α of different layers, and the hull is spanned by its ``2^|A|``
  vertex values. The selection used is the **multilinear box relaxation** ``min_{α ∈ [0,1]^A} ‖ŷ(α)‖``, with
  ``α`` as σ′ in the backward pass: ``ŷ(α)`` is the convex combination of the vertex fields with the product
  weights ``∏ α^s (1 − α)^{1−s}``, so it is a point of the hull and its norm is ≥ the true minimum. The hull
  is the Minkowski sum over samples of each sample's hull (the gradient is a sum over samples and a gate acts
  on one sample), and within a layer the gates enter linearly, so the relaxation can only lose where one
  sample has pinned units in two or more layers (a product ``α_i α_j`` whose coefficient changes sign needs a
  correlated, not a product, mixture). Measured: on the 5-16-16-1 stall case's trajectory (t = 0.5 … 200, up to
  228 pinned, up to 15 samples pinned in both layers) it is the hull's minimum to the reference's accuracy
  (1e-12 … 1e-6 relative); on small states built so that every pinned sample is pinned in both layers, it
  is exact in ~75% and within 1.2% of the minimum's norm in all. :func:`hull_min_norm` (host side, exact)
  computes the true minimum for comparison.

The solver: Gauss–Newton on ``φ(α) = ½‖ŷ(α)‖²`` over the box, each step the exact minimizer of the linearized
problem (a bounded least squares; the only step with one hidden layer), cut back along the segment to the best
of a fixed set of lengths. Each bounded least squares is solved by a primal–dual interior point (its systems
``JᵀJ + D`` are positive definite whatever the rank of ``J``), whose active set is then polished by a
least-norm least-squares step on the free variables (a truncated SVD: the columns of pre-activations that share
a feature are dependent) and, where that is not yet stationary, projected-Newton iterations. Everything has a
fixed size (masks and gathered slots, not index sets) and every loop a cap, so :func:`exact_field` is traceable
and jittable.
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp
from jaxtyping import Array, Bool, Float, Int

from .. import _symbolic as sym
from ._box_lsq import _STEPS, _box_lsq, _stationary
from ._field import field
from ._network import Network
from ._state import State

__all__ = [
    "FilippovInfo",
    "exact_field",
    "metric_factors",
    "metric_norm",
    "one_sided_field",
    "pinned",
]


# ---- the metric ---------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _scale_factor_fn(regime: sym.Regime, loss: str):
    expr = sym.derive(regime, loss).scale_factor
    return sp.lambdify((sym.s,), expr, modules=jnp)


def metric_factors(model, net: Network, state: State):
    """The inverse-metric factors of the model's coordinates at `state`, read off its derivation.

    A model's coordinates are its scale(s) and the directions ``V_k``; the metric ``G`` is the one pulled back
    by the regime's embedding (``model.derivation``: ``scale_factor = g^{ss}``, ``direction_factor =
    g^{θθ}``), diagonal in (scale, direction):

    - ``normalized`` (embedding ``(cos θ, sin θ)``, ρ its own coordinate): ``g^{ss} = 1``, ``g^{θθ} = 1``;
    - ``unnormalized`` (``ρ_k (cos θ, sin θ)``, the weights ``W_k = ρ_k V_k``): ``g^{ss} = 1``,
      ``g^{θθ} = 1/ρ_k²``;
    - ``weightnorm`` (``(ρ_k, cos θ, sin θ)``, the gain and a unit direction): ``g^{ss} = 1``, ``g^{θθ} = 1``.

    **Arguments:**

    - `model`, `net`: the :class:`flowsim.Model` and :class:`flowsim.Network`.
    - `state`: the point (its scales set the factors).

    **Returns:** ``(g_ss, g_tt)``: ``g_ss`` of shape ``(L,)`` (per-layer models) or ``()`` (the shared ρ), and
    ``g_tt`` of shape ``(L,)``, the factor of each direction ``V_k``.
    """
    c = model.compiled(net)
    L = len(state.V)
    gss_fn = _scale_factor_fn(model.regime, model.loss)
    if model.per_layer:
        rk = state.rho_k
        g_ss = jnp.stack([jnp.asarray(gss_fn(rk[k]), dtype=rk.dtype) for k in range(L)])
        g_tt = jnp.stack([jnp.asarray(c.direction_factor(rk[k]), dtype=rk.dtype) for k in range(L)])
    else:
        rho = state.rho
        g_ss = jnp.asarray(gss_fn(rho), dtype=rho.dtype)
        g_tt = jnp.stack([jnp.asarray(c.direction_factor(rho), dtype=rho.dtype)] * L)
    return g_ss, g_tt


def metric_norm(model, net: Network, state: State, velocity: State) -> Float[Array, ""]:
    """The G-norm of a State-shaped velocity at `state`: ``‖v‖_G = √⟨v, G v⟩`` in the model's coordinates.

    ``‖v‖_G² = Σ_scales ṡ²/g^{ss} + Σ_k ‖V̇_k‖²/g^{θθ}_k`` (see :func:`metric_factors`):
    ``ρ̇² + Σ_k ‖V̇_k‖²`` for ``normalized``, ``Σ_k ṡ_k² + ρ_k² ‖V̇_k‖²`` for ``unnormalized`` (the norm of
    ``Ẇ_k = ṡ_k V_k + ρ_k V̇_k``, as ``V̇_k ⊥ V_k``), ``Σ_k ṡ_k² + ‖V̇_k‖²`` for ``weightnorm``. The ``rho``
    field of a per-layer velocity (``ρ̇``, a function of the ``ṡ_k``) is not a coordinate and is not counted.

    **Arguments:**

    - `model`, `net`: the :class:`flowsim.Model` and :class:`flowsim.Network`.
    - `state`: the point the metric is taken at.
    - `velocity`: a State holding time derivatives (e.g. from :func:`exact_field`).

    **Returns:** a 0-d array.
    """
    g_ss, g_tt = metric_factors(model, net, state)
    scales = velocity.rho_k if model.per_layer else velocity.rho
    sq = jnp.sum(scales**2 / g_ss)
    for k, v in enumerate(velocity.V):
        sq = sq + jnp.sum(v**2) / g_tt[k]
    return jnp.sqrt(sq)


# ---- pinned pre-activations ---------------------------------------------------------------------------
def _forward_parts(net: Network, V, x):
    """Pre-activations ``z_k`` and layer inputs ``a_{k-1}`` of the hidden layers, and the outputs ``f``."""
    a, zs, inputs = x, [], []
    for Vk in tuple(V)[:-1]:
        inputs.append(a)
        z = a @ Vk.T
        zs.append(z)
        a = net._sigma(z)
    f = (a @ V[-1].T)[:, 0]
    return zs, inputs + [a], f


def pinned(model, net: Network, x: Float[Array | np.ndarray, "N d"], state: State, tol: float = 1e-10) -> tuple:
    """Which hidden pre-activations sit at zero, to a tolerance relative to the layer's scale.

    ``z_{k,n,i} = (V_k a_{k-1,n})_i`` is pinned when ``|z_{k,n,i}| ≤ tol · ‖V_k‖_F · ‖a_{k-1,n}‖``: by
    Cauchy–Schwarz the right side bounds ``|z|`` for every unit of the layer, so `tol` is a relative
    tolerance, invariant to the scale of the layer and of the sample. An exact zero is always pinned (also with
    ``tol = 0``), including every unit of a sample whose input to the layer vanishes. A ``"linear"`` network
    has no kinks: nothing is pinned.

    **Arguments:**

    - `model`: the :class:`flowsim.Model` (unused: the kinks are the network's; kept for a uniform signature).
    - `net`: the :class:`flowsim.Network`.
    - `x`: the inputs, shape ``(N, d_0)``.
    - `state`: the point.
    - `tol`: the relative tolerance.

    **Returns:** a tuple of boolean masks, one per hidden layer, shapes ``(N, d_k)``.
    """
    del model
    zs, inputs, _ = _forward_parts(net, state.V, x)
    masks = []
    for Vk, z, a in zip(state.V, zs, inputs):
        if net.activation != "relu":
            masks.append(jnp.zeros(z.shape, dtype=bool))
            continue
        scale = jnp.linalg.norm(Vk) * jnp.linalg.norm(a, axis=1, keepdims=True)
        masks.append(jnp.abs(z) <= tol * scale)
    return tuple(masks)


# ---- the directions' velocity as a function of the gates ----------------------------------------------
class _Problem(eqx.Module):
    """What the gates do not change: the forward pass and the per-layer factors, computed once."""

    V: tuple
    inputs: tuple  # a_0 = x, a_1, ..., a_{L-1}
    w: Array  # ∂ℓ/∂f per sample: the backward pass starts from it
    c: Array  # √g^{θθ}_k per hidden layer: ŷ_k = V̇_k / c_k
    signs: tuple  # 1[z > 0] per hidden layer: σ′ off the pinned set
    mask: tuple  # pinned, per hidden layer


def _problem(model, net: Network, x, y, state: State, tol: float, mask=None) -> _Problem:
    V = tuple(state.V)
    zs, inputs, f = _forward_parts(net, V, x)
    rho = jnp.prod(state.rho_k) if model.per_layer else state.rho
    w = model.compiled(net).weight(rho, f, y) * jnp.ones_like(f)
    _, g_tt = metric_factors(model, net, state)
    mask = pinned(model, net, x, state, tol) if mask is None else tuple(mask)
    signs = tuple((z > 0).astype(z.dtype) for z in zs)
    return _Problem(V, tuple(inputs), w, jnp.sqrt(g_tt[:-1]), signs, mask)


def _tangent(Vk, Gk):
    # S_k G: the component tangent to the sphere of V_k (as in the field, ‖V_k‖² in the denominator).
    return Gk - Vk * (jnp.vdot(Vk, Gk) / jnp.vdot(Vk, Vk))


def _directions(p: _Problem, gates) -> tuple:
    """``ŷ_k = V̇_k/√g^{θθ}_k = −√g^{θθ}_k S_k Σ_n w_n ∂f_n/∂V_k`` of the hidden layers, σ′ = `gates`."""
    H = len(p.V) - 1
    delta, out = p.w[:, None], [None] * H
    for h in reversed(range(H)):
        delta = gates[h] * (delta @ p.V[h + 1])
        out[h] = -p.c[h] * _tangent(p.V[h], delta.T @ p.inputs[h])
    return tuple(out)


def _jacobian(p: _Problem, gates) -> Array:
    """``∂ŷ/∂σ′`` at `gates`, columns of unpinned entries zero: shape ``(Σ_k d_k d_{k-1}, N Σ_k d_k)``.

    A gate ``σ′_{h,n,i}`` scales the backpropagated signal ``u_{h,n,i}`` of its unit: it moves ``V̇_h``'s row
    ``i`` by ``u_{h,n,i} a_{h-1,n}`` and every lower layer ``g`` through the gated chain
    ``T_{h→g} = diag(σ′_g) V_{g+1}ᵀ ⋯ V_hᵀ``; it does not touch the layers above (its unit's output is zero).
    """
    H = len(p.V) - 1
    N = p.w.shape[0]
    # u_h: the signal reaching a_h from above (before the gate of layer h).
    us, delta = [None] * H, p.w[:, None]
    for h in reversed(range(H)):
        us[h] = delta @ p.V[h + 1]
        delta = gates[h] * us[h]
    rows = []
    for g in range(H):
        blocks = []
        for h in range(H):
            d_g, d_in, d_h = p.V[g].shape[0], p.V[g].shape[1], p.V[h].shape[0]
            if h < g:
                blocks.append(jnp.zeros((d_g, d_in, N, d_h)))
                continue
            T = jnp.broadcast_to(jnp.eye(d_h), (N, d_h, d_h))  # T_{h→h}
            for k in range(h - 1, g - 1, -1):  # down to layer g
                T = gates[k][:, :, None] * jnp.einsum("ji,njm->nim", p.V[k + 1], T)
            C = jnp.einsum("nm,npm,nq->pqnm", us[h] * p.mask[h], T, p.inputs[g])
            Vg = p.V[g]
            radial = jnp.einsum("pq,pqnm->nm", Vg, C) / jnp.vdot(Vg, Vg)
            C = -p.c[g] * (C - Vg[:, :, None, None] * radial[None, None])
            blocks.append(C)
        rows.append(jnp.concatenate([b.reshape(b.shape[0] * b.shape[1], -1) for b in blocks], axis=1))
    return jnp.concatenate(rows, axis=0)


def _flat(parts) -> Array:
    return jnp.concatenate([jnp.ravel(q) for q in parts])


def _unflat(vec, like) -> tuple:
    out, i = [], 0
    for q in like:
        out.append(vec[i : i + q.size].reshape(q.shape))
        i += q.size
    return tuple(out)


def _with_alpha(p: _Problem, alpha) -> tuple:
    """σ′ per hidden layer: `alpha` on the pinned entries, the sign of z elsewhere."""
    return tuple(jnp.where(m, a, s) for m, a, s in zip(p.mask, alpha, p.signs))


def one_sided_field(
    model, net: Network, x: Float[Array | np.ndarray, "N d"], y: Float[Array | np.ndarray, " N"], state: State, gates
) -> State:
    """The field with σ′ on the hidden layers given by `gates` (any values; ``{0, 1}`` on pinned entries gives
    the one-sided fields ``F_s``, fractions the product-weight combinations of them).

    **Arguments:**

    - `model`, `net`: the :class:`flowsim.Model` and :class:`flowsim.Network`.
    - `x`, `y`: the data, shapes ``(N, d_0)`` and ``(N,)``.
    - `state`: the point.
    - `gates`: one array per hidden layer, shapes ``(N, d_k)``: σ′ of every pre-activation.

    **Returns:** a :class:`flowsim.State` holding the time derivatives; the scales and ``V̇_L``, which σ′ does
    not reach, are those of :func:`flowsim._model.field`.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    # one backward pass with σ′ = gates (the forward values are σ's): the scales and V̇_L do not see σ′
    return field(model, net, x, y, state, gates=tuple(gates) if net.depth >= 2 else None)


# ---- the bounded least-squares solve ------------------------------------------------------------------
class FilippovInfo(eqx.Module):
    """How :func:`exact_field` chose the velocity.

    Fields:

    - `alpha`: σ′ used in the backward pass, one array per hidden layer, shapes ``(N, d_k)``: the selection
      ``α ∈ [0, 1]`` on the pinned entries, ``1[z > 0]`` elsewhere.
    - `pinned`: the masks of pinned pre-activations (:func:`pinned`).
    - `n_pinned`: their number.
    - `iterations`: Gauss–Newton iterations taken (1 with one hidden layer; 3–5 measured with two).
    - `solves`: SVDs of the ``P × K`` Jacobian in all (one per polish and projected-Newton step; each bounded
      least squares also runs an interior point, ≤ 50 Cholesky factorizations of ``K × K``).
    - `gap`: the Frank–Wolfe gap ``⟨∇φ, α − α_FW⟩`` of ``φ = ½‖ŷ(α)‖²`` on the box. With one hidden layer
      ``φ`` is convex and ``‖m − m*‖_G ≤ √(2 gap)``: `error_bound` is a certificate. With more it measures
      stationarity of the relaxation only.
    - `error_bound`: ``√(2 gap)``, in the G-norm. A rigorous bound, but loose: the gap of an exact solution is
      rounding (~eps·‖F‖²·|A|), so the bound stays near √(eps·|A|)·‖F‖ while the velocity is exact to rounding
      (measured against the host reference).
    - `converged`: whether every loop stopped on its own within its cap — the velocity moving by less than
      1e-12 of ``‖F‖_G``, no single σ′ able to move it by more, or no step lowering its norm beyond rounding —
      with every pinned entry in a slot (always true when nothing is pinned).
    """

    alpha: tuple
    pinned: tuple
    n_pinned: Int[Array, ""]
    iterations: Int[Array, ""]
    solves: Int[Array, ""]
    gap: Float[Array, ""]
    error_bound: Float[Array, ""]
    converged: Bool[Array, ""]


def _solve(p: _Problem, scale, max_iter: int, max_inner: int, K: int):
    """Minimize ``φ(α) = ½‖ŷ(α)‖²`` over the box on (up to `K` of) the pinned entries: Gauss–Newton, each step
    the exact bounded least-squares minimizer of the linearized ``ŷ`` (:func:`_box_lsq`), cut back along the
    segment to the best of `_STEPS` for the true φ.

    With one hidden layer ``ŷ`` is affine: the first step is the answer and the second confirms it. The
    pinned entries are gathered into `K` slots (a fixed size: an SVD costs ``O(P² K)``, not ``O(P² M)``);
    pinned entries past the first `K` keep σ′ = 1[z > 0]. Stops when ``ŷ`` moves by less than
    ``1e-12 (‖F‖_G + ‖ŷ‖)`` or no step lowers φ beyond rounding. Returns the flat σ′ of all entries, the
    Gauss–Newton and SVD counts, the Frank–Wolfe gap, and whether every loop stopped on its own, with no
    pinned entry left out.
    """
    like = p.signs
    pinned_flat = _flat(p.mask) > 0
    signs = _flat(p.signs)
    M = signs.size
    idx = jnp.nonzero(pinned_flat, size=K, fill_value=M)[0]
    valid = idx < M
    eps = jnp.finfo(signs.dtype).eps

    def gates(a):
        return _with_alpha(p, _unflat(signs.at[idx].set(a, mode="drop"), like))

    def phi(a):
        r = _flat(_directions(p, gates(a)))
        return 0.5 * jnp.vdot(r, r), r

    def linearize(a):
        val, r = phi(a)
        J = jnp.take(_jacobian(p, gates(a)), idx, axis=1, mode="fill", fill_value=0.0)
        g = jnp.where(valid, J.T @ r, 0.0)
        # Frank–Wolfe gap on the box: ⟨g, α − s⟩, s_j = 1[g_j < 0] the best vertex of the linearization.
        gap = jnp.sum(jnp.where(g > 0, g * a, g * (a - 1.0)))
        return val, r, J, gap

    def tolerances(r):
        # ŷ sums terms of size ~scale that cancel near a sliding state: r carries rounding of ~eps·scale per
        # entry, and a change of r below tol_r (1e-12 of the scale) counts as none.
        size = scale + jnp.linalg.norm(r)
        return 4 * eps * size * jnp.sqrt(r.size), 1e-12 * size

    def cond(carry):
        it, _, done, _, (_, r, J, _), a = carry
        return (it < max_iter) & ~done & ~_stationary(J, r, a, valid, tolerances(r)[1])

    def body(carry):
        it, inner, _, inner_ok, (val, r, J, _), a = carry
        noise_r, tol_r = tolerances(r)
        b, n_inner, ok = _box_lsq(J, r, a, valid, noise_r, tol_r, max_inner)
        d = b - a
        cands = jnp.clip(a[None] + _STEPS[:, None] * d[None], 0.0, 1.0)
        vals = jax.vmap(lambda c_: phi(c_)[0])(cands)
        best = jnp.argmin(vals)
        noise = noise_r * jnp.sqrt(2.0 * val)
        improved = vals[best] < val - noise
        full = ~improved & (vals[0] <= val + noise)  # the full step, when the value cannot tell
        a_new = jnp.where(improved, cands[best], jnp.where(full, cands[0], a))
        lin = linearize(a_new)
        # With one hidden layer ŷ is affine: the bounded least squares of its linearization was the problem.
        done = ~(improved | full) | (jnp.linalg.norm(lin[1] - r) <= tol_r) | (len(p.V) == 2)
        return it + 1, inner + n_inner, done, inner_ok & ok, lin, a_new

    a0 = jnp.where(valid, 0.5, 0.0)
    init = (jnp.asarray(0), jnp.asarray(0), jnp.asarray(False), jnp.asarray(True), linearize(a0), a0)
    it, inner, done, inner_ok, lin, a = jax.lax.while_loop(cond, body, init)
    done = done | _stationary(lin[2], lin[1], a, valid, tolerances(lin[1])[1])
    ok = done & inner_ok & (jnp.sum(pinned_flat) <= K)
    return signs.at[idx].set(a, mode="drop"), it, inner, jnp.maximum(lin[3], 0.0), ok


def _buckets(M: int, max_pinned: int | None, slots: tuple[int, ...] | None = None) -> tuple[int, ...]:
    # Slot counts compiled for: `slots` (default 256, 512, 1024, …) below M, then all M entries. lax.switch runs
    # only the smallest that holds the pinned set (under vmap every branch runs: pass max_pinned there). Each
    # size is compiled.
    if max_pinned is not None:
        return (max(1, min(int(max_pinned), M)),)
    if slots is not None:
        return tuple(k for k in slots if k < M) + (M,)
    sizes, k = [], 256
    while k < M:
        sizes.append(k)
        k *= 2
    return tuple(sizes) + (M,)


def exact_field(
    model,
    net: Network,
    x: Float[Array | np.ndarray, "N d"],
    y: Float[Array | np.ndarray, " N"],
    state: State,
    tol: float = 1e-10,
    *,
    max_iter: int = 20,
    max_inner: int = 30,
    max_pinned: int | None = None,
    pinned_mask: tuple | None = None,
    slots: tuple[int, ...] | None = None,
    return_info: bool = False,
):
    """The exact (ε → 0) velocity ``m(x)``: the least-G-norm element of the Filippov set (traceable, jittable).

    Where nothing is pinned this is :func:`flowsim._model.field`, bit for bit. Elsewhere the directions of the
    hidden layers move with σ′ = α on the pinned pre-activations, α minimizing their G-norm over
    ``[0, 1]^A`` (see the module docstring): exact with one hidden layer, the multilinear box relaxation with
    more (a point of the Filippov set, of norm at least the minimum's; equal to it in most cases measured).

    **Arguments:**

    - `model`, `net`: the :class:`flowsim.Model` and :class:`flowsim.Network`.
    - `x`, `y`: the data as arrays, shapes ``(N, d_0)`` and ``(N,)``.
    - `state`: the point.
    - `tol`: relative tolerance for a pre-activation to count as pinned (:func:`pinned`).
    - `max_iter`: cap on the Gauss–Newton iterations.
    - `max_inner`: cap on the projected-Newton iterations that finish each bounded least squares (each one SVD
      of the ``(Σ_k d_k d_{k-1}) × K`` Jacobian of the hidden directions, ``K`` the slots for pinned entries).
    - `max_pinned`: the number of slots ``K`` for pinned entries; ``None`` (the default) compiles a few sizes
      (256, 512, 1024, … and all entries; ~4 s of compilation each on a CPU) and runs the smallest that fits.
      Pinned entries beyond ``K`` keep σ′ = 1[z > 0] and the info reports ``converged = False``.
    - `pinned_mask`: the pinned set itself, one boolean mask per hidden layer (overrides `tol`): an
      event-driven integrator knows which pre-activations sit at zero better than a tolerance does.
    - `slots`: the slot counts compiled instead of the default (256, 512, …; all entries is always one):
      small ones for a caller that usually pins few pre-activations, such as an event-driven integrator.
    - `return_info`: also return a :class:`FilippovInfo`.

    **Returns:** a :class:`flowsim.State` holding the time derivatives, or ``(State, FilippovInfo)``.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    base = field(model, net, x, y, state)
    if net.depth < 2 or net.activation != "relu":
        if not return_info:
            return base
        z = jnp.asarray(0)
        info = FilippovInfo((), (), z, z, z, jnp.asarray(0.0), jnp.asarray(0.0), jnp.asarray(True))
        return base, info
    p = _problem(model, net, x, y, state, tol, pinned_mask)
    n_pinned = sum(jnp.sum(m) for m in p.mask)
    scale = metric_norm(model, net, state, base)
    sizes = _buckets(sum(m.size for m in p.mask), max_pinned, slots)
    branches = [functools.partial(_solve, max_iter=max_iter, max_inner=max_inner, K=K) for K in sizes]
    which = jnp.minimum(jnp.searchsorted(jnp.asarray(sizes), n_pinned), len(sizes) - 1)
    a, it, inner, gap, ok = jax.lax.switch(which, branches, p, scale)
    alpha = _with_alpha(p, _unflat(a, p.signs))
    yhat = _directions(p, alpha)
    hidden = tuple(jnp.where(n_pinned > 0, c * q, b) for c, q, b in zip(p.c, yhat, base.V[:-1]))
    out = State(hidden + (base.V[-1],), base.rho, base.rho_k)
    if not return_info:
        return out
    info = FilippovInfo(alpha, p.mask, n_pinned, it, inner, gap, jnp.sqrt(2.0 * gap), ok | (n_pinned == 0))
    return out, info
