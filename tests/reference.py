"""Independent references for the tests: a plain network in W coordinates, written here from scratch."""

import jax
import jax.numpy as jnp
import numpy as np


def numpy_forward(W, x, activation="relu"):
    """f(W; x) for all rows of x, in plain numpy."""
    a = np.asarray(x)
    for Wk in W[:-1]:
        z = a @ np.asarray(Wk).T
        a = np.maximum(z, 0.0) if activation == "relu" else z
    return (a @ np.asarray(W[-1]).T)[:, 0]


def jax_forward(W, x, activation="relu"):
    a = x
    for Wk in W[:-1]:
        z = a @ Wk.T
        a = jnp.maximum(z, 0.0) if activation == "relu" else z
    return (a @ W[-1].T)[:, 0]


LOSSES = {
    "square": lambda u, y: (y - u) ** 2,
    "exponential": lambda u, y: jnp.exp(-y * u),
    "logistic": lambda u, y: jnp.log1p(jnp.exp(-y * u)),
}


def reference_field(name, lam, V, scales, x, y, activation="relu", loss="square"):
    """The flow of each regime from −∇L in its raw coordinates (autodiff), mapped to (scales, V).

    Returns ``(scale_dot, V_dot)``: scale_dot is ρ̇ (normalized) or ρ̇_k (per-layer).
    """
    ell = LOSSES[loss]
    V = [jnp.asarray(v) for v in V]
    if name == "unnormalized":
        W = [r * v for r, v in zip(scales, V)]

        def L(W):
            return jnp.sum(ell(jax_forward(W, x, activation), y)) + lam * sum(jnp.sum(w**2) for w in W)

        G = [-g for g in jax.grad(L)(W)]
        rdot = np.array([float(jnp.vdot(v, g)) for v, g in zip(V, G)])
        Vdot = [(g - v * jnp.vdot(v, g)) / r for v, g, r in zip(V, G, scales)]
        return rdot, Vdot
    if name == "weightnorm":

        def L(g, v):
            W = [gk * vk / jnp.linalg.norm(vk) for gk, vk in zip(g, v)]
            return jnp.sum(ell(jax_forward(W, x, activation), y)) + lam * sum(gk**2 for gk in g)

        gg, gv = jax.grad(L, argnums=(0, 1))(list(jnp.asarray(scales)), V)
        return -np.array([float(a) for a in gg]), [-a for a in gv]
    if name == "normalized":
        rho = scales

        def L(rho, V):
            return jnp.sum(ell(rho * jax_forward(V, x, activation), y)) + lam * rho**2

        g_rho, g_V = jax.grad(L, argnums=(0, 1))(jnp.asarray(rho), V)
        return -g_rho, [-(g - v * jnp.vdot(v, g)) for v, g in zip(V, g_V)]
    raise ValueError(name)


def random_directions(widths, seed):
    rng = np.random.default_rng(seed)
    V = []
    for k in range(len(widths) - 1):
        v = rng.standard_normal((widths[k + 1], widths[k]))
        V.append(v / np.linalg.norm(v))
    return V
