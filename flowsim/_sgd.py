"""Discrete GD/SGD on the same network, in each model's own parametrization, compiled with ``lax.scan``.

Each regime's GD step uses the exact gradient of the loss of theory.md in that regime's raw coordinates,
which is the gradient the flow follows, so the run approximates the flow at ``t = lr · step``:

- ``unnormalized``: GD on ``W_k`` with weight decay ``λ Σ_k ‖W_k‖²``;
- ``weightnorm``: GD on ``(g_k, v_k)`` with ``W_k = g_k v_k / ‖v_k‖`` and weight decay ``λ Σ_k g_k²``;
- ``normalized``: GD on ``(ρ, V_k)`` with the output ``ρ f(V_1/‖V_1‖, …)`` (so the gradient in ``V_k`` is
  tangent to the sphere) and weight decay ``λ ρ²``, then each ``V_k`` retracted to the unit sphere
  (the normalization the model stands for; the retraction is the step's only departure from plain GD);
- ``batchnorm=True``: a real batch-normalized network trained with weight decay on all its weights.

A minibatch ``B`` contributes ``N/|B| Σ_{n∈B} ℓ(u_n, y_n)``, so a full batch is exactly GD on ``L``.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from . import _symbolic as sym
from ._data import Dataset
from ._errors import SolveError, check_int, check_real, fail
from ._model import Model, _compiled, check_problem, check_state
from ._network import Network
from ._state import State
from ._trajectory import Trajectory

SUPPORTED = ("normalized", "unnormalized", "weightnorm")


class _Spec(NamedTuple):
    """Everything that fixes the compiled program (static under jit)."""

    kind: str  # a model name or "batchnorm"
    net: Network
    regime: sym.Regime
    loss: str
    n: int
    batch: int | None  # None: full batch, no sampling
    momentum: bool
    n_chunks: int  # number of recorded chunks after the start (the chunk length is dynamic)
    remainder: bool  # whether a shorter last chunk follows (its length is dynamic)
    affine: bool
    bn_momentum: float
    bn_eps: float
    quadratic: bool = False  # the regularizer is λ s² (so λ Σ ‖W_k‖² needs no norms)
    track: bool = False  # watch every step's loss to name the first non-finite one (costs ~10% per step)


# ---- validation (plain Python: runs before anything is traced) -------------------------------------
def _flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise fail(name, value, "True or False")
    return bool(value)


# ---- the raw parametrizations ----------------------------------------------------------------------
def _norm(a):
    return jnp.sqrt(jnp.sum(a * a))


def _to_raw(kind: str, state: State, affine: bool, widths) -> dict:
    """The model's raw coordinates at `state` (the point the flow starts from)."""
    if kind == "unnormalized":
        return {"W": tuple(r * v for r, v in zip(state.rho_k, state.V))}
    if kind == "weightnorm":
        return {"g": jnp.asarray(state.rho_k), "v": tuple(state.V)}
    if kind == "normalized":
        return {"rho": jnp.asarray(state.rho), "V": tuple(state.V)}
    raw = {"W": tuple(state.weights())}
    if affine:
        raw["gamma"] = tuple(jnp.ones((d,)) for d in widths[1:-1])
        raw["beta"] = tuple(jnp.zeros((d,)) for d in widths[1:-1])
    return raw


def _bn_forward(spec: _Spec, raw, x, stats=None):
    """Batch-normalized forward pass: batch statistics when `stats` is None, else the given (mean, var)."""
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


def _objective(spec: _Spec, raw, x, y, scale, lam):
    """``scale · Σ_n ℓ(u_n, y_n) + regularizer`` and the BN batch statistics.

    Takes the raw coordinates, except that for ``weightnorm`` and ``normalized`` the directions are
    passed already divided by their norms (see :func:`_value_and_grad`).
    """
    c = _compiled(spec.regime, spec.loss, spec.net.depth)
    net = spec.net
    aux = None
    if spec.kind == "unnormalized":
        u = net._forward(raw["W"], x)
        if spec.quadratic:  # λ Σ ‖W_k‖² without the square root (fewer operations per step)
            reg = lam * sum(jnp.sum(Wk * Wk) for Wk in raw["W"])
        else:
            reg = sum(c.regularizer(_norm(Wk), lam) for Wk in raw["W"])
    elif spec.kind == "weightnorm":
        u = jnp.prod(raw["g"]) * net._forward(raw["v"], x)
        reg = jnp.sum(c.regularizer(raw["g"], lam))
    elif spec.kind == "normalized":
        u = raw["rho"] * net._forward(raw["V"], x)
        reg = c.regularizer(raw["rho"], lam)
    else:
        u, aux = _bn_forward(spec, raw, x)
        reg = lam * sum(jnp.sum(leaf * leaf) for leaf in jax.tree_util.tree_leaves(raw))
    return scale * jnp.sum(c.loss(u, y)) + reg, aux


def _value_and_grad(spec: _Spec, raw, x, y, scale, lam):
    """The loss, the BN batch statistics and the exact gradient in the raw coordinates.

    For ``weightnorm`` (``W_k = g_k v_k/‖v_k‖``) and ``normalized`` (directions ``V_k/‖V_k‖``) the chain
    rule through the normalization is written out: with ``V̂ = v/‖v‖`` and ``G = ∂L/∂V̂``,
    ``∂L/∂v = (G − V̂⟨V̂, G⟩)/‖v‖``. Same numbers as differentiating through ``v/‖v‖``, fewer operations.
    """
    fn = jax.value_and_grad(lambda r: _objective(spec, r, x, y, scale, lam), has_aux=True)
    if spec.kind not in ("weightnorm", "normalized"):
        return fn(raw)
    name = "v" if spec.kind == "weightnorm" else "V"
    norms = tuple(_norm(v) for v in raw[name])
    unit = tuple(v / n for v, n in zip(raw[name], norms))
    (value, aux), g = fn({**raw, name: unit})
    tangent = tuple((G - U * jnp.vdot(U, G)) / n for G, U, n in zip(g[name], unit, norms))
    return (value, aux), {**g, name: tangent}


def _retract(spec: _Spec, raw):
    if spec.kind == "normalized":
        return {"rho": raw["rho"], "V": tuple(v / _norm(v) for v in raw["V"])}
    return raw


def _shuffle(key, epoch, n):
    return jax.random.permutation(jax.random.fold_in(key, epoch), n).astype(jnp.int32)


def _run(spec: _Spec, raw, bn, x, y, key, lr, mu, lam, record_every, remainder):
    """The whole run: a ``lax.scan`` over record chunks, each a loop of `record_every` steps."""
    tmap = jax.tree_util.tree_map
    scale = 1.0 if spec.batch is None else spec.n / spec.batch
    per_epoch = spec.n // spec.batch if spec.batch else 1

    def step(_, carry):
        raw, buf, bn, k, bad, perm = carry
        if spec.batch is None:
            xb, yb = x, y
        else:  # random reshuffling: a fresh permutation every epoch, batches are its consecutive slices
            j = k % per_epoch
            perm = jax.lax.cond(j == 0, lambda: _shuffle(key, k // per_epoch, spec.n), lambda: perm)
            idx = jax.lax.dynamic_slice(perm, (j * spec.batch,), (spec.batch,))
            xb, yb = x[idx], y[idx]
        (value, stats), g = _value_and_grad(spec, raw, xb, yb, scale, lam)
        if spec.momentum:
            buf = tmap(lambda b, gi: mu * b + gi, buf, g)
            direction = buf
        else:
            direction = g
        raw = _retract(spec, tmap(lambda p, d: p - lr * d, raw, direction))
        if stats is not None:  # running statistics: exponential average, unbiased batch variance
            nb = xb.shape[0]
            m = spec.bn_momentum
            run_mean = tuple((1 - m) * a + m * b for a, b in zip(bn[0], stats[0]))
            run_var = tuple((1 - m) * a + m * b * (nb / (nb - 1)) for a, b in zip(bn[1], stats[1]))
            bn = (run_mean, run_var)
        if spec.track:  # the first step whose loss is non-finite (only when re-running a diverged run)
            bad = jnp.where((bad < 0) & ~jnp.isfinite(value), k, bad)
        return (raw, buf, bn, k + 1, bad, perm)

    def record(carry):
        return carry[0], carry[2]

    def chunk(carry, _):
        carry = jax.lax.fori_loop(0, record_every, step, carry)
        return carry, record(carry)

    buf = tmap(jnp.zeros_like, raw) if spec.momentum else None
    perm = jnp.arange(spec.n, dtype=jnp.int32) if spec.batch else None
    carry = (raw, buf, bn, jnp.asarray(0, jnp.int32), jnp.asarray(-1, jnp.int32), perm)
    pieces = [tmap(lambda a: a[None], record(carry))]
    if spec.n_chunks:
        carry, recs = jax.lax.scan(chunk, carry, None, length=spec.n_chunks)
        pieces.append(recs)
    if spec.remainder:
        carry = jax.lax.fori_loop(0, remainder, step, carry)
        pieces.append(tmap(lambda a: a[None], record(carry)))
    records = tmap(lambda *a: jnp.concatenate(a), *pieces)
    return records, carry[4]


_run_jit = jax.jit(_run, static_argnums=0)


# ---- observables -----------------------------------------------------------------------------------
def _states(spec: _Spec, raw) -> State:
    """Time-stacked States from time-stacked raw coordinates."""

    def norms(a):  # (T, d, d') -> (T,)
        return jnp.sqrt(jnp.sum(a * a, axis=(1, 2)))

    if spec.kind == "unnormalized":
        rk = jnp.stack([norms(W) for W in raw["W"]], axis=1)
        V = tuple(W / rk[:, k, None, None] for k, W in enumerate(raw["W"]))
        return State(V, jnp.prod(rk, axis=1), rk)
    if spec.kind == "weightnorm":
        V = tuple(v / norms(v)[:, None, None] for v in raw["v"])
        return State(V, jnp.prod(raw["g"], axis=1), raw["g"])
    V = tuple(v / norms(v)[:, None, None] for v in raw["V"])
    return State(V, raw["rho"], None)


def _bn_observables(spec: _Spec, raw, bn, x, y, lam):
    """Observables of the batch-normalized network, evaluated with its running statistics.

    ρ follows the authors' measure ``∏_k ‖W_k‖ · ∏_k ‖γ_k‖ / ∏_k ‖σ_k‖`` (γ_k = 1 without affine
    parameters; σ_k the running standard deviations); the per-layer factors go in ``rho_k``.
    """
    net = spec.net
    c_norm = _compiled(_normalized_regime(), spec.loss, net.depth)

    def one(r, stat):
        u, _ = _bn_forward(spec, r, x, stats=stat)
        wn = [_norm(W) for W in r["W"]]
        factors = []
        for k in range(net.depth - 1):
            sigma = jnp.sqrt(stat[1][k] + spec.bn_eps)
            gamma = _norm(r["gamma"][k]) if spec.affine else jnp.sqrt(float(net.widths[k + 1]))
            factors.append(wn[k] * gamma / _norm(sigma))
        factors.append(wn[-1])
        rk = jnp.stack(factors)
        rho = jnp.prod(rk)
        f = u / rho
        reg = lam * sum(jnp.sum(leaf * leaf) for leaf in jax.tree_util.tree_leaves(r))
        loss = jnp.sum(c_norm.loss(u, y)) + reg
        V = tuple(W / n for W, n in zip(r["W"], wn))
        return V, rho, rk, y * f, loss, c_norm.rho_eq(f, y, lam)

    return jax.vmap(one)(raw, bn)


_bn_observables_jit = jax.jit(_bn_observables, static_argnums=0)


def _bn_trajectory(spec: _Spec, raw, bn, x, y, lam, ts, stats):
    V, rho, rk, margins, loss, rho_eq = _bn_observables_jit(spec, raw, bn, x, y, lam)
    return Trajectory(ts=ts, rho=rho, rho_k=rk, V=V, margins=margins, loss=loss, rho_eq=rho_eq, stats=stats)


def _normalized_regime():
    import importlib

    return importlib.import_module("flowsim.models.normalized").REGIME


def _slice(traj, stop: int):
    cut = lambda a: None if a is None else a[:stop]  # noqa: E731
    return Trajectory(
        ts=traj.ts[:stop],
        rho=traj.rho[:stop],
        rho_k=cut(traj.rho_k),
        V=tuple(v[:stop] for v in traj.V),
        margins=traj.margins[:stop],
        loss=traj.loss[:stop],
        rho_eq=traj.rho_eq[:stop],
        stats={**traj.stats, "stopped": "diverged"},
    )


@functools.lru_cache(maxsize=None)
def _is_quadratic(regime: sym.Regime) -> bool:
    import sympy as sp

    return sp.simplify(regime.regularizer(sym.s, sym.lam) - sym.lam * sym.s**2) == 0


# ---- the public entry point ------------------------------------------------------------------------
def sgd(
    model: Model,
    net: Network,
    data: Dataset,
    state: State,
    lr: float,
    steps: int,
    batch_size: int | None = None,
    momentum: float = 0.0,
    seed: int = 0,
    batchnorm: bool = False,
    record_every: int = 1,
    *,
    bn_affine: bool = False,
    bn_momentum: float = 0.1,
    bn_eps: float = 1e-5,
) -> Trajectory:
    """Discrete gradient descent (full batch) or minibatch SGD, the discrete counterpart of the flow.

    The step is the model's own: GD on ``W_k`` (``unnormalized``), on ``(g_k, v_k)`` (``weightnorm``), or on
    ``(ρ, V_k)`` followed by the retraction ``V_k ← V_k/‖V_k‖`` (``normalized``), with the exact gradient
    of the loss of theory.md (sum over samples, no ½, the model's regularizer). A minibatch ``B`` contributes
    ``N/|B| Σ_{n∈B} ℓ``, so a full batch is exactly GD on ``L`` and ``t = lr · step`` is the flow's time.
    Minibatches are drawn by random reshuffling from ``jax.random.key(seed)``: every epoch of
    ``⌊N/|B|⌋`` steps takes a fresh permutation of the samples and walks through it in consecutive
    batches (the ``N mod |B|`` left over wait for the next shuffle).
    Momentum is heavy-ball, ``m ← μ m + ∇L_B``, ``p ← p − lr m`` (its effective time is ``lr/(1−μ) · step``;
    the returned ``ts`` stay ``lr · step``).

    With ``batchnorm=True`` the network is a real batch-normalized one — batch normalization (batch
    statistics, no affine parameters unless ``bn_affine``) before every hidden activation, weight decay
    ``λ`` on all its weights, running statistics (initialized from the full data at the start) for
    evaluation — started from the weights ``state.weights()``. Its ρ is the authors' measure
    ``∏‖W_k‖ · ∏‖γ_k‖ / ∏‖σ_k‖`` (γ_k = 1 without affine parameters, σ_k the running standard
    deviations); its margins are ``y_n u_n / ρ`` with ``u_n`` the evaluation-mode output; its ρ_eq uses the
    ``normalized`` model's formula. This is the real system the ``normalized`` model stands in for.

    **Arguments:**

    - `model`: a :class:`flowsim.Model` (``"normalized"``, ``"unnormalized"`` or ``"weightnorm"``); its λ
      and loss are used.
    - `net`: the :class:`flowsim.Network`.
    - `data`: the :class:`flowsim.Dataset`.
    - `state`: the initial :class:`flowsim.State` of `model`.
    - `lr`: learning rate ``> 0``.
    - `steps`: number of steps ``>= 1``.
    - `batch_size`: ``None`` (full batch, plain GD) or an integer in ``[1, N]`` (``[2, N]`` with batchnorm).
    - `momentum`: heavy-ball coefficient in ``[0, 1)``.
    - `seed`: integer seed of the minibatch draws; the same seed gives the same run.
    - `batchnorm`: train the real batch-normalized network instead of the model's parametrization.
    - `record_every`: keep every `record_every`-th step (and always the first and the last); memory is
      ``O(steps / record_every)``.
    - `bn_affine`: with `batchnorm`, learn BN gains γ and shifts β (with weight decay) as well.
    - `bn_momentum`: with `batchnorm`, the running-statistics update weight in ``(0, 1]``.
    - `bn_eps`: with `batchnorm`, the ε added to the batch variance, ``> 0``.

    **Returns:** a :class:`flowsim.Trajectory` with ``ts = lr · step`` at the recorded steps and the same
    observables as a flow; ``stats`` holds the run's settings (``method``, ``lr``, ``steps``, ...).

    **Raises:** :class:`flowsim.InputError` (a ``ValueError``) on bad arguments, before anything is
    compiled; :class:`flowsim.SolveError` when the loss becomes non-finite, naming the step, with the
    trajectory up to it attached as ``partial``.
    """
    if not isinstance(model, Model):
        raise fail("model", type(model).__name__, "a flowsim.Model (from fs.load_model)")
    check_problem(net, data)
    check_state(model, net, state)
    batchnorm = _flag("batchnorm", batchnorm)
    if not batchnorm and model.name not in SUPPORTED:
        raise fail("model", model.name, f"one of {SUPPORTED} (the parametrizations fs.sgd knows)")
    lr = check_real("lr", lr, "a finite learning rate > 0", lambda v: v > 0)
    steps = check_int("steps", steps, "an integer number of steps >= 1", lambda v: v >= 1)
    n = data.n
    low = 2 if batchnorm else 1
    if batch_size is not None:
        batch_size = check_int(
            "batch_size",
            batch_size,
            f"None (full batch) or an integer in [{low}, N = {n}]"
            + (" (batch normalization needs two samples per batch)" if batchnorm else ""),
            lambda v: low <= v <= n,
        )
    elif batchnorm and n < 2:
        raise fail("data", f"{n} sample", "at least 2 samples for batch normalization")
    momentum = check_real("momentum", momentum, "a heavy-ball coefficient in [0, 1)", lambda v: 0 <= v < 1)
    seed = check_int("seed", seed, "an integer seed in [0, 2**63)", lambda v: 0 <= v < 2**63)
    record_every = check_int("record_every", record_every, "an integer >= 1", lambda v: v >= 1)
    bn_affine = _flag("bn_affine", bn_affine)
    bn_momentum = check_real("bn_momentum", bn_momentum, "a number in (0, 1]", lambda v: 0 < v <= 1)
    bn_eps = check_real("bn_eps", bn_eps, "a finite number > 0", lambda v: v > 0)
    if batchnorm and net.depth < 2:
        raise fail("batchnorm", True, "a network with at least one hidden layer to normalize")

    kind = "batchnorm" if batchnorm else model.name
    full = batch_size is None or batch_size == n
    spec = _Spec(
        kind=kind,
        net=net,
        regime=model.regime,
        loss=model.loss,
        n=n,
        batch=None if full else batch_size,
        momentum=momentum > 0,
        n_chunks=steps // record_every,
        remainder=steps % record_every > 0,
        affine=bn_affine if batchnorm else False,
        bn_momentum=bn_momentum,
        bn_eps=bn_eps,
        quadratic=_is_quadratic(model.regime),
    )
    x, y = jnp.asarray(data.x), jnp.asarray(data.y)
    raw = _to_raw(kind, state, spec.affine, net.widths)
    bn = None
    if batchnorm:  # running statistics start at the full-data statistics of the initial weights
        _, bn = _bn_forward(spec, raw, x)
    lam = model.lam
    dynamic = (
        raw,
        bn,
        x,
        y,
        jax.random.key(seed),
        jnp.asarray(lr),
        jnp.asarray(momentum),
        lam,
        jnp.asarray(record_every, jnp.int32),
        jnp.asarray(steps % record_every, jnp.int32),
    )
    records, _ = _run_jit(spec, *dynamic)

    rec_steps = np.arange(spec.n_chunks + 1) * record_every
    if spec.remainder:
        rec_steps = np.append(rec_steps, steps)
    ts = jnp.asarray(lr * rec_steps, dtype=jnp.float64)
    stats = {
        "method": ("gd" if full else "sgd") + ("+batchnorm" if batchnorm else ""),
        "model": model.name,
        "lam": float(lam),
        "loss": model.loss,
        "lr": lr,
        "steps": steps,
        "batch_size": n if full else batch_size,
        "momentum": momentum,
        "seed": seed,
        "record_every": record_every,
        "batchnorm": batchnorm,
        "bn_affine": spec.affine,
    }
    if batchnorm:
        stats["rho_measure"] = "prod_k |W_k| * prod_k |gamma_k| / prod_k |sigma_k| (running sigma)"
    if batchnorm:
        traj = _bn_trajectory(spec, records[0], records[1], x, y, lam, ts, stats)
    else:
        from ._trajectory import observe

        traj = observe(model, net, data, ts, _states(spec, records[0]), stats)

    good = np.isfinite(np.asarray(traj.loss)) & np.isfinite(np.asarray(traj.rho))
    for leaf in jax.tree_util.tree_leaves(records[0]):
        good &= np.all(np.isfinite(np.asarray(leaf)).reshape(len(rec_steps), -1), axis=1)
    if not good.all():
        # NaN/Inf never heals, so everything from the first bad record on is lost. Run again watching every
        # step's loss (a separate, slightly slower program) to name the step where it first broke.
        stop = int(np.argmin(good))
        _, bad = _run_jit(spec._replace(track=True), *dynamic)
        bad = int(bad)
        if bad < 0 or bad > rec_steps[stop]:
            bad, where = int(rec_steps[stop]), "the loss on the full data (seen when recording)"
        else:
            where = "the loss" if full else "the minibatch loss"
        stop = int(np.sum(rec_steps < bad))  # the records before the step that broke
        partial = _slice(traj, stop) if stop > 0 else None
        raise SolveError(
            f"fs.sgd diverged at step {bad} (t = {lr * bad:g}): {where} became non-finite with lr = {lr:g}"
            f"{'' if full else f' and batch_size = {batch_size}'}; try a smaller lr. The {stop} records "
            f"before it are attached as `partial`.",
            partial=partial,
        )
    return traj


def stable_rank(W: Float[Array, "... m n"]) -> Float[Array, "..."]:
    """The stable rank ``‖W‖_F² / ‖W‖_2²`` of a matrix (or of a stack of matrices).

    **Arguments:**

    - `W`: an array whose last two axes are the matrix.

    **Returns:** the stable rank, one per matrix.
    """
    W = jnp.asarray(W)
    s = jnp.linalg.svd(W, compute_uv=False)
    return jnp.sum(s * s, axis=-1) / s[..., 0] ** 2
