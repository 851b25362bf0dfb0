"""A real batch-normalized network (the system the ``normalized`` model stands for), for ``fs.sgd(...,
batchnorm=True)``: its raw weights, forward pass with batch or running statistics, and observables."""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp

from .._model import State, compiled
from .._solver import Trajectory
from ._raw import norm


def bn_raw(state: State, affine: bool, widths) -> dict:
    """The BN network's raw parameters started from ``state.weights()`` (γ = 1, β = 0 with `affine`)."""
    raw = {"W": tuple(state.weights())}
    if affine:
        raw["gamma"] = tuple(jnp.ones((d,)) for d in widths[1:-1])
        raw["beta"] = tuple(jnp.zeros((d,)) for d in widths[1:-1])
    return raw


def bn_forward(spec, raw, x, stats=None):
    """Batch-normalized forward pass: batch statistics when `stats` is None, else the given (mean, var).

    **Returns:** ``(u, (means, variances))``: the outputs and the statistics used, one entry per hidden layer.
    """
    net = spec.net
    a, means, variances = x, [], []
    W = raw["W"]
    for k, Wk in enumerate(W[:-1]):
        z = a @ Wk.T
        if stats is None:
            mu = jnp.mean(z, axis=0)
            var = jnp.mean((z - mu[None, :]) ** 2, axis=0)
        else:
            mu, var = stats[0][k], stats[1][k]
        means.append(mu)
        variances.append(var)
        zh = (z - mu[None, :]) / jnp.sqrt(var + spec.bn_eps)[None, :]
        if spec.affine:
            zh = zh * raw["gamma"][k][None, :] + raw["beta"][k][None, :]
        a = net._sigma(zh)
    return (a @ W[-1].T)[:, 0], (tuple(means), tuple(variances))


def bn_decay(raw, lam):
    """Weight decay ``λ`` on every parameter of the BN network."""
    return lam * sum(jnp.sum(leaf * leaf) for leaf in jax.tree_util.tree_leaves(raw))


def _normalized_regime():
    return importlib.import_module("flowsim.models.normalized").REGIME


def _bn_observables(spec, raw, bn, x, y, lam):
    """Observables of the batch-normalized network, evaluated with its running statistics.

    ρ follows the authors' measure ``∏_k ‖W_k‖ · ∏_k ‖γ_k‖ / ∏_k ‖σ_k‖`` (γ_k = 1 without affine
    parameters; σ_k the running standard deviations); the per-layer factors go in ``rho_k``.
    """
    net = spec.net
    c_norm = compiled(_normalized_regime(), spec.loss, net.depth)

    def one(r, stat):
        u, _ = bn_forward(spec, r, x, stats=stat)
        wn = [norm(W) for W in r["W"]]
        factors = []
        for k in range(net.depth - 1):
            sigma = jnp.sqrt(stat[1][k] + spec.bn_eps)
            gamma = norm(r["gamma"][k]) if spec.affine else jnp.sqrt(float(net.widths[k + 1]))
            factors.append(wn[k] * gamma / norm(sigma))
        factors.append(wn[-1])
        rk = jnp.stack(factors)
        rho = jnp.prod(rk)
        f = u / rho
        loss = jnp.sum(c_norm.loss(u, y)) + bn_decay(r, lam)
        V = tuple(W / n for W, n in zip(r["W"], wn))
        return V, rho, rk, y * f, loss, c_norm.rho_eq(f, y, lam)

    return jax.vmap(one)(raw, bn)


_bn_observables_jit = jax.jit(_bn_observables, static_argnums=0)


def bn_trajectory(spec, raw, bn, x, y, lam, ts, stats) -> Trajectory:
    """The Trajectory of a BN run from its time-stacked parameters and running statistics."""
    V, rho, rk, margins, loss, rho_eq = _bn_observables_jit(spec, raw, bn, x, y, lam)
    return Trajectory(ts=ts, rho=rho, rho_k=rk, V=V, margins=margins, loss=loss, rho_eq=rho_eq, stats=stats)
