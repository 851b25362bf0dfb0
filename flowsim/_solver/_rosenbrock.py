"""A Rosenbrock-W solver for diffrax that keeps its Jacobian (as the inverse of ``I − γhJ``) across steps."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import diffrax as dfx
import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
from jax.flatten_util import ravel_pytree
from jaxtyping import PyTree

# ROS34PW2 (Rang & Angermann, BIT 45, 2005): 4 stages, order 3 with an embedded order-2 method, L-stable,
# stiffly accurate, and a W-method: its order holds for any matrix in place of the Jacobian. That is what
# lets a stale Jacobian, or a matrix inverted for another step size, be reused without losing order.
_GAMMA = 4.3586652150845900e-01
_ALPHA = np.array(
    [
        [0.0, 0.0, 0.0, 0.0],
        [8.7173304301691801e-01, 0.0, 0.0, 0.0],
        [8.4457060015369423e-01, -1.1299064236484185e-01, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
    ]
)
_GAMMAS = np.array(
    [
        [_GAMMA, 0.0, 0.0, 0.0],
        [-8.7173304301691801e-01, _GAMMA, 0.0, 0.0],
        [-9.0338057013044082e-01, 5.4180672388095326e-02, _GAMMA, 0.0],
        [2.4212380706095346e-01, -1.2232505839045147e00, 5.4526025533510214e-01, _GAMMA],
    ]
)
_B = np.array([2.4212380706095346e-01, -1.2232505839045147e00, 1.5452602553351020e00, 4.3586652150845900e-01])
_B_EMBEDDED = np.array([3.7810903145819369e-01, -9.6042292212423178e-02, 0.5, 2.1793326075422950e-01])

# The transformed form (Hairer & Wanner IV.7, (7.25)): with u_i = Σ_j γ_ij k_j, every stage solves
# (I − γ hJ) u_i = γ (h f_i + Σ_{j<i} c_ij u_j) and needs no product with J.
_GINV = np.linalg.inv(_GAMMAS)
_A_U = _ALPHA @ _GINV  # stage arguments y0 + Σ_j a_ij u_j
_C_U = -np.tril(_GINV, -1)
_M = _B @ _GINV  # y1 = y0 + Σ_j m_j u_j
_M_ERR = (_B - _B_EMBEDDED) @ _GINV
_C_TIME = _ALPHA.sum(axis=1)  # stage times t0 + c_i h
_G_TIME = _GAMMAS.sum(axis=1)  # weights of the time-derivative term

# Dense output: y(t0 + θh) = y0 + Σ_i (θ p_i + θ² (b_i − p_i)) k_i is second order for the W-method
# (Σ p = 1, Σ p α = 0, Σ p γ = 0; the minimal-norm such p) and equals the step at θ = 1. It is built from the
# stages, which the linear solves damp in stiff directions: a Hermite interpolant through f(y0), f(y1) would
# amplify the step's error by the stiffness (seen: 30× the value of a stiff component on Robertson's problem).
_P = np.linalg.lstsq(np.vstack([np.ones(4), _C_TIME, _G_TIME]), np.array([1.0, 0.0, 0.0]), rcond=None)[0]
_P_U = _P @ _GINV
_Q_U = (_B - _P) @ _GINV


class _StageInterpolation(dfx.AbstractLocalInterpolation):
    """The step's second-order dense output ``y0 + θ P + θ² Q``, ``θ = (t − t0)/(t1 − t0)``."""

    t0: jax.Array
    t1: jax.Array
    y0: PyTree
    linear: PyTree
    quadratic: PyTree

    def evaluate(self, t0, t1=None, left=True):
        del left
        if t1 is not None:
            return jax.tree_util.tree_map(lambda a, b: a - b, self.evaluate(t1), self.evaluate(t0))
        theta = (t0 - self.t0) / (self.t1 - self.t0)
        return jax.tree_util.tree_map(lambda y, p, q: y + theta * (p + theta * q), self.y0, self.linear, self.quadratic)


def _inverse(A):
    """``A⁻¹`` from an LU factorization (the triangular solves on the identity are matrix-matrix: BLAS 3)."""
    lu, _, perm = jax.lax.linalg.lu(A)
    x = jnp.eye(A.shape[0], dtype=A.dtype)[perm]
    x = jax.lax.linalg.triangular_solve(lu, x, left_side=True, lower=True, unit_diagonal=True)
    return jax.lax.linalg.triangular_solve(lu, x, left_side=True, lower=False)


class _State(eqx.Module):
    f0: jax.Array  # the field at the step's start (the previous step's end: first same as last)
    # (I − γ h_lu J)⁻¹, J taken jac_age steps ago (J itself is not kept: see step). The inverse, not the LU
    # factors: a step's 4 solves are then matrix-vector products, which XLA runs 6× faster on the CPU than
    # a pair of triangular solves (1 µs against 6 µs at n = 103, 10 against 60 µs at n = 353), while the
    # inverse costs one LU and two matrix-matrix triangular solves per refresh (a refresh serves ~10 steps).
    inv: jax.Array
    f_t: jax.Array  # ∂f/∂t where J was taken
    h_lu: jax.Array  # the step size `inv` was made for
    jac_age: jax.Array  # accepted steps since J was taken
    n_jac: jax.Array  # Jacobians (each with its inverse) made in accepted steps


class RosenbrockW(dfx.AbstractAdaptiveSolver, dfx.AbstractImplicitSolver):
    r"""A stiff solver that reuses its Jacobian across steps (ROS34PW2), for diffrax.

    A 4-stage, third-order, L-stable Rosenbrock-W method with an embedded second-order error estimate
    (Rang & Angermann, BIT 45, 2005). Being a W-method, it keeps its order with *any* matrix in place of the
    Jacobian ``J``; so it keeps ``(I − γ h J)⁻¹`` for as long as it serves:

    - ``J`` is rebuilt (and the matrix inverted again) when it is `max_jacobian_age` accepted steps old, or when
      the step size has moved by more than a factor ``1 + refactor_ratio`` from the one of the inverse;
    - with `retry`, a step that fails the error test with an old ``J`` or inverse is redone at once, inside the
      same call, with a fresh one (a rejected step's solver state is discarded by ``diffeqsolve``, so a
      refresh left to the next attempt would be lost).

    A step costs 4 evaluations of the vector field (the last is reused as the next step's first) and 4
    matrix-vector products with the kept inverse; there is no Newton iteration and so no convergence failure. Under
    ``jax.vmap`` the refresh decisions are taken on an unbatched predicate (any member), so a batch pays for
    the refresh branch only on steps where some member needs it, and applies it per member.

    Use it as any diffrax solver, with an adaptive step-size controller whose tolerances it also uses for
    its own error test:

    ```python
    sol = diffrax.diffeqsolve(diffrax.ODETerm(f), fs.RosenbrockW(), t0, t1, dt0, y0,
                              stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-9))
    ```

    Dense output (``SaveAt(ts=...)``) is a second-order continuous extension built from the stages, which
    the linear solves damp in stiff directions (an interpolant through the field re-evaluated at the step's
    ends would amplify the step's error by the stiffness).

    On the CPU, limit BLAS to one thread (``threadpoolctl.threadpool_limits(1, "blas")``): the
    matrices are small, and a multithreaded BLAS competing with XLA's threads was measured 100× slower.

    **Arguments:**

    - `refactor_ratio`: rebuild when ``|h / h_inv − 1|`` exceeds this (default 2).
    - `max_jacobian_age`: rebuild after this many accepted steps with one ``J`` (default 20). A stale ``J``
      can pass the error test at a small step indefinitely, so age alone must force a rebuild.
    - `retry`: redo a failed step at once with a fresh ``J`` (default ``True``). On ReLU gradient flows,
      whose Jacobian jumps at every kink, ``False`` was faster (flowsim's setting).
    - `jacobian`: ``"fwd"`` (``jax.jacfwd``, the default) or ``"rev"`` (``jax.jacrev``, faster for fields
      that are one reverse-mode gradient, such as flowsim's).
    """

    term_structure: ClassVar = dfx.AbstractTerm
    interpolation_cls: ClassVar[Callable[..., _StageInterpolation]] = _StageInterpolation
    # Holds the tolerances and norm of the error test; diffeqsolve fills them in from the step-size
    # controller. (A W-method solves no nonlinear system: nothing else of the root finder is used.)
    root_finder: optx.AbstractRootFinder = dfx.with_stepsize_controller_tols(optx.Chord)()
    root_find_max_steps: int = 0
    refactor_ratio: float = 2.0
    max_jacobian_age: int = 20
    retry: bool = eqx.field(static=True, default=True)
    jacobian: str = eqx.field(static=True, default="fwd")

    def __check_init__(self):
        if self.jacobian not in ("fwd", "rev"):
            raise ValueError(f"RosenbrockW(jacobian=...): got {self.jacobian!r}; expected 'fwd' or 'rev'")

    def order(self, terms):
        return 3

    def _flat_field(self, terms, y0, args):
        z0, unravel = ravel_pytree(y0)

        def F(t, z):
            return ravel_pytree(terms.vf(t, unravel(z), args))[0]

        return z0, unravel, F

    def _jacobian(self, F, t, z):
        jac = (jax.jacrev if self.jacobian == "rev" else jax.jacfwd)(lambda z_: F(t, z_))(z)
        f_t = jax.jvp(lambda t_: F(t_, z), (t,), (jnp.ones_like(t),))[1]
        return jac, f_t

    def _factor(self, jac, h):
        return _inverse(jnp.eye(jac.shape[0], dtype=jac.dtype) - _GAMMA * h * jac)

    def _refresh(self, F, t0, z0, h):
        jac, f_t = self._jacobian(F, t0, z0)
        return self._factor(jac, h), f_t

    def _refreshed(self, s: _State, F, t0, z0, h, mask) -> _State:
        """`s` with a new J and inverse for the members where `mask` holds (all compute them: they are batched)."""
        inv, f_t = self._refresh(F, t0, z0, h)
        keep = lambda new, old: jnp.where(mask, new, old)  # noqa: E731
        return _State(
            s.f0,
            keep(inv, s.inv),
            keep(f_t, s.f_t),
            keep(h, s.h_lu),
            jnp.where(mask, 0, s.jac_age),
            s.n_jac + mask,
        )

    def init(self, terms, t0, t1, y0, args) -> _State:
        z0, _, F = self._flat_field(terms, y0, args)
        t0 = jnp.asarray(t0, dtype=z0.dtype)
        h = jnp.asarray(t1, dtype=z0.dtype) - t0
        inv, f_t = self._refresh(F, t0, z0, h)
        return _State(F(t0, z0), inv, f_t, h, jnp.zeros((), jnp.int32), jnp.ones((), jnp.int32))

    def step(self, terms, t0, t1, y0, args, solver_state: _State, made_jump):
        z0, unravel, F = self._flat_field(terms, y0, args)
        dtype = z0.dtype
        t0 = jnp.asarray(t0, dtype=dtype)
        t1 = jnp.asarray(t1, dtype=dtype)
        h = t1 - t0
        s = solver_state
        f0 = s.f0 if made_jump is False else jnp.where(made_jump, F(t0, z0), s.f0)

        # Rebuild J and refactor when J is old or the step size has moved by more than refactor_ratio from the
        # inverse's. Otherwise the old inverse serves, which a W-method allows. (A stale J can pass the error test at a
        # small step for ever, so age alone forces a rebuild.) J is not kept between rebuilds: keeping it
        # would allow inverse-only refreshes, but carrying a second n×n matrix through the loop costs more.
        need = (s.jac_age >= self.max_jacobian_age) | (jnp.abs(h / s.h_lu - 1.0) > self.refactor_ratio)

        def refresh(s):
            return self._refreshed(s, F, t0, z0, h, need)

        # decided for the whole batch under vmap (an unbatched predicate), applied per member
        s = jax.lax.cond(eqxi.unvmap_any(need), refresh, lambda s: s, s)

        z1, err, linear, quadratic = self._stages(F, t0, z0, f0, h, s)
        if self.retry:
            # A failed error test with an old J or inverse: refresh here and redo at once (a rejected step's solver
            # state is discarded by diffeqsolve, so a refresh left to the next attempt would be lost).
            ratio = self._error_ratio(z0, z1, err, unravel)
            redo = (ratio > 1.0) & ((s.jac_age > 0) | (s.h_lu != h))

            def again(carry):
                s, out = carry
                s = self._refreshed(s, F, t0, z0, h, redo)
                keep = lambda new, old: jnp.where(redo, new, old)  # noqa: E731
                return s, tuple(keep(new, old) for new, old in zip(self._stages(F, t0, z0, f0, h, s), out))

            s, (z1, err, linear, quadratic) = jax.lax.cond(
                eqxi.unvmap_any(redo), again, lambda c: c, (s, (z1, err, linear, quadratic))
            )
        f1 = F(t1, z1)
        s = eqx.tree_at(lambda s: (s.f0, s.jac_age), s, (f1, s.jac_age + 1))
        dense_info = dict(y0=y0, linear=unravel(linear), quadratic=unravel(quadratic))
        return unravel(z1), unravel(err), dense_info, s, dfx.RESULTS.successful

    def _stages(self, F, t0, z0, f0, h, s: _State, loop: bool = False):
        """The step's stages: ``(z1, err, linear, quadratic)``. With `loop`, the three field evaluations are one
        in a ``fori_loop``: for a costly field (the exact flow's projected field), a third of that code to
        compile."""
        if loop:
            a_u, c_u, c_t, g_t = (jnp.asarray(c, z0.dtype) for c in (_A_U, _C_U, _C_TIME, _G_TIME))

            def stage(i, us):
                fi = F(t0 + c_t[i] * h, z0 + a_u[i] @ us)
                rhs = h * fi + (h * s.h_lu * g_t[i]) * s.f_t + c_u[i] @ us
                return us.at[i].set(s.inv @ (_GAMMA * rhs))

            u0 = s.inv @ (_GAMMA * (h * f0 + (h * s.h_lu * _G_TIME[0]) * s.f_t))
            us = jax.lax.fori_loop(1, 4, stage, jnp.zeros((4,) + z0.shape, z0.dtype).at[0].set(u0))
            z1 = z0 + jnp.asarray(_M, z0.dtype) @ us
            return z1, *(jnp.asarray(w, z0.dtype) @ us for w in (_M_ERR, _P_U, _Q_U))
        us = []
        for i in range(4):
            if i == 0:
                fi = f0
            else:
                zi = z0 + sum(_A_U[i, j] * us[j] for j in range(i) if _A_U[i, j] != 0)
                fi = F(t0 + _C_TIME[i] * h, zi)
            rhs = h * fi + (h * s.h_lu * _G_TIME[i]) * s.f_t + sum(_C_U[i, j] * us[j] for j in range(i))
            us.append(s.inv @ (_GAMMA * rhs))
        z1 = z0 + sum(_M[j] * us[j] for j in range(4))
        err = sum(_M_ERR[j] * us[j] for j in range(4))
        linear = sum(_P_U[j] * us[j] for j in range(4))
        quadratic = sum(_Q_U[j] * us[j] for j in range(4))
        return z1, err, linear, quadratic

    def _error_ratio(self, z0, z1, err, unravel):
        rf = self.root_finder
        scale = rf.atol + rf.rtol * jnp.maximum(jnp.abs(z0), jnp.abs(z1))
        return rf.norm(unravel(err / scale))

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)
