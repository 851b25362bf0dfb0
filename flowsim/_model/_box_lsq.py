"""Bounded least squares ``min_{b ∈ [0,1]^K} ½‖r + J (b − a)‖²`` on masked slots (traceable): an interior point,
then an active-set polish. What the exact ReLU velocity solves for its Filippov selection (see ``_filippov``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_STEPS = 2.0 ** -np.arange(0, 40, 2)  # lengths tried along a projected arc, 1 down to 4e-12
# Singular values below this (relative) are dropped from least-squares steps: along such a direction a move that
# stays in the box changes ŷ by at most _RCOND·‖J‖·√K, while the least-norm step would leave the box by far.
_RCOND = 1e-10


def _box_ipm(J, r, a, valid, n_iter: int):
    """Primal–dual interior point (Mehrotra) for ``min_{b ∈ [0,1]} ½‖r + J (b − a)‖²`` on the `valid` slots.

    Each iteration solves ``(JᵀJ + D) Δb = …`` with ``D = z/b + v/(1 − b) > 0`` from the barrier, so the
    system stays positive definite however dependent the columns are: no inverse of the Gram matrix alone.
    Returns the (approximate, interior) minimizer and the lower/upper multipliers.
    """
    K = a.shape[0]
    Q = J.T @ J
    s = jnp.maximum(jnp.max(jnp.diag(Q)), jnp.finfo(J.dtype).tiny)
    Q = jnp.where(valid[:, None] & valid[None, :], Q / s, 0.0)
    c = jnp.where(valid, (J.T @ r) / s - Q @ a, 0.0)
    delta = 1e-13 * jnp.eye(K)

    def solve(L, x, z, v, tl, tu):
        w = 1.0 - x
        rd = Q @ x + c - z + v
        dx = jax.scipy.linalg.cho_solve(L, -rd - z + tl / x + v - tu / w)
        dz = (-x * z + tl - z * dx) / x
        dv = (-w * v + tu + v * dx) / w
        return dx, dz, dv

    def length(u, du):
        # The largest step in [0, 1] keeping u + α du ≥ 0.
        return jnp.minimum(1.0, jnp.min(jnp.where(du < 0, -u / jnp.where(du < 0, du, -1.0), jnp.inf)))

    def gap(x, z, v):
        return (jnp.vdot(x, z) + jnp.vdot(1.0 - x, v)) / (2 * K)

    def cond(carry):
        it, x, z, v = carry
        # Stop at a complementarity gap of rounding size (further steps only meet the barrier's 0/0).
        return (it < n_iter) & (gap(x, z, v) > 1e-15)

    def step(carry):
        it, x, z, v = carry
        w = 1.0 - x
        mu = gap(x, z, v)
        zero = jnp.zeros_like(x)
        L = jax.scipy.linalg.cho_factor(Q + jnp.diag(z / x + v / w) + delta, lower=True)
        dx, dz, dv = solve(L, x, z, v, zero, zero)  # predictor (affine scaling)
        al = jnp.minimum(jnp.minimum(length(x, dx), length(w, -dx)), jnp.minimum(length(z, dz), length(v, dv)))
        mu_aff = (jnp.vdot(x + al * dx, z + al * dz) + jnp.vdot(w - al * dx, v + al * dv)) / (2 * K)
        sigma = (mu_aff / mu) ** 3
        dx, dz, dv = solve(L, x, z, v, sigma * mu - dx * dz, sigma * mu + dx * dv)  # corrector
        al = 0.99 * jnp.minimum(jnp.minimum(length(x, dx), length(w, -dx)), jnp.minimum(length(z, dz), length(v, dv)))
        new = (x + al * dx, z + al * dz, v + al * dv)
        ok = jnp.all(jnp.isfinite(jnp.concatenate(new))) & (jnp.min(new[0]) > 0) & (jnp.max(new[0]) < 1)
        # A breakdown (a factorization gone singular) ends the loop on the last good point.
        return jnp.where(ok, it + 1, n_iter), *(jnp.where(ok, n_, o_) for n_, o_ in zip(new, (x, z, v)))

    x0 = jnp.full((K,), 0.5)
    _, x, z, v = jax.lax.while_loop(cond, step, (jnp.asarray(0), x0, jnp.ones(K), jnp.ones(K)))
    return x, z, v


def _stationary(J, res, b, valid, tol_r):
    # Moving one variable alone, to its best point in [0, 1], changes the residual by |b_j − b_j⁺| ‖J_j‖.
    norms = jnp.sqrt(jnp.sum(J * J, axis=0))
    g = J.T @ res
    best = jnp.clip(b - g / jnp.maximum(norms**2, jnp.finfo(J.dtype).tiny), 0.0, 1.0)
    return jnp.max(jnp.where(valid, jnp.abs(b - best) * norms, 0.0)) <= tol_r


def _box_lsq(J, r, a, valid, noise_r, tol_r, max_iter: int):
    """``min_{b ∈ [0,1]} ½‖r + J (b − a)‖²`` over the `valid` slots.

    An interior-point solve (:func:`_box_ipm`) finds the active set; the free variables are then corrected by
    the least-norm least-squares step (a truncated SVD: the columns can be dependent), and projected-Newton
    iterations finish: each holds the variables at a bound whose gradient points out of the box, takes the
    least-norm step for the others, and cuts it back along the projected arc to the best of `_STEPS`. It stops
    when the residual moves by less than `tol_r` or no step lowers it beyond rounding (`noise_r`, the rounding
    level of the residual). Returns ``b``, the number of SVDs and whether it stopped before `max_iter`.
    """

    def model(b):
        res = r + J @ (b - a)
        return 0.5 * jnp.vdot(res, res), res

    def newton_step(b, res, held):
        return jnp.where(held, 0.0, jnp.linalg.lstsq(jnp.where(held[None, :], 0.0, J), -res, rcond=_RCOND)[0])

    # The interior point's active set: a bound whose multiplier exceeds its distance.
    x, z, v = _box_ipm(J, r, a, valid, 50)
    x = jnp.where(valid, x, 0.0)
    lower, upper = valid & (z > x), valid & (v > 1.0 - x)
    snapped = jnp.where(lower, 0.0, jnp.where(upper, 1.0, x))
    polished = jnp.clip(snapped + newton_step(snapped, model(snapped)[1], lower | upper | ~valid), 0.0, 1.0)
    b0 = jnp.where(model(polished)[0] <= model(x)[0], polished, x)

    def cond(carry):
        it, done, b, (_, res) = carry
        # Done already when no single variable can move the residual by tol_r (the common case after the
        # interior point and its polish): the projected-Newton loop then costs no SVD.
        return (it < max_iter) & ~done & ~_stationary(J, res, b, valid, tol_r)

    def body(carry):
        it, _, b, (val, res) = carry
        g = J.T @ res
        held = ((b <= 0.0) & (g > 0)) | ((b >= 1.0) & (g < 0)) | ~valid
        d = newton_step(b, res, held)
        cands = jnp.clip(b[None] + _STEPS[:, None] * d[None], 0.0, 1.0)
        resid = r[None] + (cands - a[None]) @ J.T
        vals = 0.5 * jnp.sum(resid * resid, axis=1)
        best = jnp.argmin(vals)
        noise = noise_r * jnp.sqrt(2.0 * val)
        improved = vals[best] < val - noise
        # A full step that stays in the box is taken even when the value cannot tell it better: its gain
        # (½‖P res‖², P onto the free columns' span) can lie below rounding while it moves res by ‖P res‖.
        interior = jnp.all((b + d >= 0.0) & (b + d <= 1.0))
        newton = ~improved & interior & (vals[0] <= val + noise)
        b_new = jnp.where(improved, cands[best], jnp.where(newton, cands[0], b))
        m_new = model(b_new)
        done = ~(improved | newton) | (jnp.linalg.norm(m_new[1] - res) <= tol_r)
        return it + 1, done, b_new, m_new

    it, done, b, (_, res) = jax.lax.while_loop(cond, body, (jnp.asarray(0), jnp.asarray(False), b0, model(b0)))
    return b, it + 1, done | _stationary(J, res, b, valid, tol_r)
