"""Compiled, vmapped numerics of a planar kernel: the field and its Jacobian on batches of states, Newton's
method, and the integration of whole ensembles of initial conditions (each cached per kernel; jit caches per
shape)."""

from __future__ import annotations

import functools

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from ._kernel import Kernel, field


def padded(fn, z: np.ndarray, params) -> np.ndarray:
    """Apply a vmapped, jitted `fn` to a batch padded to a power of two (few shapes, few compilations)."""
    m = len(z)
    size = max(8, 1 << max(0, (m - 1).bit_length()))
    zp = np.zeros((size, 2))
    zp[:m] = z
    return np.asarray(fn(jnp.asarray(zp), params))[:m]


@functools.lru_cache(maxsize=32)
def grid_fn(kernel: Kernel):
    return jax.jit(jax.vmap(lambda z, p: field(kernel, z, p), in_axes=(0, None)))


@functools.lru_cache(maxsize=32)
def jac_fn(kernel: Kernel):
    return jax.jit(jax.vmap(jax.jacfwd(lambda z, p: field(kernel, z, p)), in_axes=(0, None)))


@functools.lru_cache(maxsize=32)
def newton_fn(kernel: Kernel, iters: int = 80):
    F = lambda z, p: field(kernel, z, p)
    J = jax.jacfwd(F)

    def solve(z, p, max_step):
        def body(_, z):
            Fz, Jz = F(z, p), J(z, p)
            u, s, vt = jnp.linalg.svd(Jz)
            keep = s > 1e-12 * s[0]
            s_inv = jnp.where(keep, 1.0 / jnp.where(keep, s, 1.0), 0.0)
            dz = vt.T @ (s_inv * (u.T @ Fz))  # pseudo-inverse step: converges onto continua too
            scale = jnp.minimum(1.0, jnp.min(max_step / jnp.maximum(jnp.abs(dz), 1e-300)))
            znew = z - scale * dz
            return jnp.where(jnp.all(jnp.isfinite(znew)), znew, z)

        z = jax.lax.fori_loop(0, iters, body, z)
        return z, F(z, p)

    return jax.jit(jax.vmap(solve, in_axes=(0, None, None)))


@functools.lru_cache(maxsize=32)
def ensemble_fn(kernel: Kernel, rtol: float, atol: float, max_steps: int):
    """One compiled call integrating a whole ensemble of initial conditions (vmapped diffrax Tsit5)."""
    term = diffrax.ODETerm(lambda t, z, p: field(kernel, z, p))
    solver = diffrax.Tsit5()
    controller = diffrax.PIDController(rtol=rtol, atol=atol)

    def one(z0, ts, p):
        sol = diffrax.diffeqsolve(
            term,
            solver,
            ts[0],
            ts[-1],
            None,
            z0,
            args=p,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=controller,
            max_steps=max_steps,
            throw=False,
        )
        return sol.ys, sol.result == diffrax.RESULTS.successful, sol.stats["num_steps"]

    return jax.jit(jax.vmap(one, in_axes=(0, None, None)))
