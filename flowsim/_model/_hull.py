"""The true least-norm point of the Filippov hull, on the host (a reference for tests and benchmarks): bounded least
squares by scipy for one hidden layer, Wolfe's minimum-norm-point algorithm over enumerated gates for more."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ._field import field
from ._filippov import _directions, _flat, _jacobian, _Problem, _problem, _unflat, _with_alpha
from ._network import Network
from ._state import State


def hull_min_norm(
    model,
    net: Network,
    x,
    y,
    state: State,
    tol: float = 1e-10,
    *,
    max_iter: int = 10_000,
    max_enumerate: int = 16,
):
    """The least-G-norm point of the Filippov set, exactly, on the host (numpy/scipy; for checks and studies).

    One hidden layer: the bounded least-squares problem by scipy's active-set BVLS. Deeper: Wolfe's
    minimum-norm-point algorithm on the hull of the vertex fields, whose linear minimization oracle
    ``min_s ⟨r, F_s⟩_G`` splits over samples (a gate acts on one sample's gradient only) and, per sample, is
    solved by enumerating the sample's pinned gates in all hidden layers but the one where it has the most
    (there, given the rest, the oracle is linear: each gate takes the sign of its coefficient). Cost: ``2^k`` per
    sample and oracle call, ``k`` the sample's pinned gates outside that layer.

    **Arguments:**

    - `model`, `net`, `x`, `y`, `state`, `tol`: as for :func:`exact_field`.
    - `max_iter`: cap on Wolfe's major iterations.
    - `max_enumerate`: refuse (``ValueError``) a sample with more gates than this to enumerate.

    **Returns:** ``(velocity, gap)``: the State-shaped least-norm velocity, and the final Frank–Wolfe gap
    ``‖m‖²_G − min_s ⟨m, F_s⟩_G`` (≈ 0 at the exact minimum; ``½‖m‖² − ½‖m*‖² ≤`` it).
    """
    from scipy.optimize import lsq_linear

    x, y = jnp.asarray(x), jnp.asarray(y)
    base = field(model, net, x, y, state)
    if net.depth < 2 or net.activation != "relu":
        return base, 0.0
    p = _problem(model, net, x, y, state, tol)
    mask = np.asarray(_flat(p.mask)) > 0
    like = p.signs

    def assemble(r_flat):
        hid = _unflat(jnp.asarray(r_flat), like=tuple(q for q in _directions(p, p.signs)))
        V = tuple(c * q for c, q in zip(p.c, hid)) + (base.V[-1],)
        return State(V, base.rho, base.rho_k)

    if not mask.any():
        return base, 0.0
    if net.depth == 2:
        J = np.asarray(_jacobian(p, p.signs))[:, mask]
        a_off = np.array(_flat(p.signs))
        a_off[mask] = 0.0
        r0 = np.asarray(_flat(_directions(p, _with_alpha(p, _unflat(jnp.asarray(a_off), like)))))
        res = lsq_linear(J, -r0, bounds=(0.0, 1.0), method="bvls", tol=1e-15, max_iter=max(100, 10 * J.shape[1]))
        m = r0 + J @ res.x
        g = J.T @ m
        gap = float(m @ m - (r0 @ m + np.sum(np.minimum(g, 0.0))))
        return assemble(m), gap
    return _wolfe_deep(p, assemble, max_iter, max_enumerate)


def _wolfe_deep(p: _Problem, assemble, max_iter: int, max_enumerate: int):
    """Wolfe's minimum-norm-point algorithm over the vertex fields of a deep net (see :func:`hull_min_norm`)."""
    V = [np.asarray(v) for v in p.V]
    inputs = [np.asarray(a) for a in p.inputs]
    w = np.asarray(p.w)
    c = np.asarray(p.c)
    signs = [np.asarray(s) for s in p.signs]
    mask = [np.asarray(m) for m in p.mask]
    H = len(V) - 1
    N = w.shape[0]

    def directions(gates):
        delta, out = w[:, None], [None] * H
        for h in reversed(range(H)):
            delta = gates[h] * (delta @ V[h + 1])
            G = delta.T @ inputs[h]
            out[h] = -c[h] * (G - V[h] * (np.vdot(V[h], G) / np.vdot(V[h], V[h])))
        return np.concatenate([q.ravel() for q in out])

    # Per sample: ⟨r, ŷ⟩ is linear in the gates of any one layer when the others are fixed. The layer with the
    # most pinned gates is chosen greedily (each gate by the sign of its coefficient); the sample's pinned gates
    # in the other layers are enumerated.
    plans = []
    for n in range(N):
        counts = [int(mask[h][n].sum()) for h in range(H)]
        ell = int(np.argmax(counts))
        idx = [(h, i) for h in range(H) if h != ell for i in np.flatnonzero(mask[h][n])]
        if len(idx) > max_enumerate:
            raise ValueError(f"sample {n} has {len(idx)} pinned gates to enumerate (> {max_enumerate})")
        bits = ((np.arange(2 ** len(idx))[:, None] >> np.arange(len(idx))[None, :]) & 1).astype(float)
        plans.append((ell, idx, bits))

    def lmo(r):
        # R_h = −c_h S_h(r_h), so that ⟨r, ŷ(gates)⟩ = Σ_h Σ_n δ_{h,n} · (R_h a_{h-1,n}).
        R, i0 = [], 0
        for h in range(H):
            sz = V[h].size
            rh = r[i0 : i0 + sz].reshape(V[h].shape)
            i0 += sz
            R.append(-c[h] * (rh - V[h] * (np.vdot(V[h], rh) / np.vdot(V[h], V[h]))))
        gates = [s.copy() for s in signs]
        for n, (ell, idx, bits) in enumerate(plans):
            G = [np.repeat(signs[h][n][None], len(bits), axis=0) for h in range(H)]
            for b, (h, i) in enumerate(idx):
                G[h][:, i] = bits[:, b]
            rho = [R[h] @ inputs[h][n] for h in range(H)]
            # From the output down to layer ell: the signal u reaching it, and the value of the layers above.
            val, u = np.zeros(len(bits)), np.full((len(bits), 1), w[n]) @ V[H]
            for h in range(H - 1, ell, -1):
                delta = G[h] * u
                val += delta @ rho[h]
                u = delta @ V[h]
            # From the first layer up to ell: π with Σ_{h ≤ ell} δ_h·ρ_h = δ_ell·π.
            pi = np.repeat(rho[0][None], len(bits), axis=0)
            for h in range(ell):
                pi = rho[h + 1][None] + (G[h] * pi) @ V[h + 1].T
            coef = u * pi
            G[ell] = np.where(mask[ell][n][None], (coef < 0).astype(float), G[ell])
            val += np.sum(G[ell] * coef, axis=1)
            best = int(np.argmin(val))
            for h in range(H):
                gates[h][n] = G[h][best]
        return directions(gates)

    # Wolfe (1976), with the affine minimizer by least squares on the corral.
    v = lmo(np.zeros(sum(q.size for q in V[:-1])))
    S, lam = [v], np.array([1.0])
    xk = v.copy()
    eps = 1e-13
    for _ in range(max_iter):
        q = lmo(xk)
        scale = max(np.vdot(xk, xk), max(np.vdot(s, s) for s in S))
        # Stop at a rounding-level gap, or when the best vertex is already in the corral (the affine minimizer of
        # the corral is then the minimum: the gap left is rounding in x).
        if np.vdot(xk, xk) - np.vdot(xk, q) <= 1e-15 * scale or any(np.array_equal(q, s) for s in S):
            break
        S.append(q)
        lam = np.append(lam, 0.0)
        while True:
            M = np.array(S).T
            # Affine minimizer: min ‖M μ‖ s.t. Σμ = 1, via μ = e_0 + Z t with Z a basis of {Σ = 0}.
            k = M.shape[1]
            Z = np.vstack([-np.ones((1, k - 1)), np.eye(k - 1)])
            t = np.linalg.lstsq(M @ Z, -M[:, 0], rcond=None)[0]
            mu = np.concatenate([[1.0], np.zeros(k - 1)]) + Z @ t
            if np.all(mu > eps):
                lam = mu
                break
            neg = mu <= eps
            theta = np.min(np.where(neg, lam / np.maximum(lam - mu, 1e-300), np.inf))
            lam = theta * mu + (1 - theta) * lam
            keep = lam > eps
            S = [s for s, kp in zip(S, keep) if kp]
            lam = lam[keep] / np.sum(lam[keep])
        xk = np.array(S).T @ lam
    q = lmo(xk)
    return assemble(xk), float(np.vdot(xk, xk) - np.vdot(xk, q))
