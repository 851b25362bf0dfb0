"""Discrete GD/SGD on the same network, in each regime's own raw coordinates, compiled with ``lax.scan``.

A regime's GD step uses the exact gradient of the loss (docs/theory.md#conventions) in the raw coordinates its
embedding declares (see `flowsim._discrete._raw`), which is the gradient the flow follows, so the run
approximates the flow at ``t = lr · step``. For the installed regimes:

- ``unnormalized`` (embedding ``(s cos θ, s sin θ)``): GD on ``W_k`` with weight decay ``λ Σ_k ‖W_k‖²``;
- ``weightnorm`` (``(s, cos θ, sin θ)``): GD on ``(g_k, v_k)`` with ``W_k = g_k v_k / ‖v_k‖`` and weight decay
  ``λ Σ_k g_k²``;
- ``normalized`` (shared ``ρ``, ``(cos θ, sin θ)``, ``retraction=True``): GD on ``(ρ, V_k)`` with the output
  ``ρ f(V_1/‖V_1‖, …)`` (so the gradient in ``V_k`` is tangent to the sphere) and weight decay ``λ ρ²``, then
  each ``V_k`` retracted to the unit sphere (the normalization the model stands for; the retraction is the
  step's only departure from plain GD);
- ``batchnorm=True``: a real batch-normalized network trained with weight decay on all its weights.

A minibatch ``B`` contributes ``N/|B| Σ_{n∈B} ℓ(u_n, y_n)``, so a full batch is exactly GD on ``L``.
"""

from __future__ import annotations

import functools
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .. import _symbolic as sym
from .._data import Dataset
from .._errors import Checked, FlowsimError, SolveError, check_int, check_real, fail
from .._model import Model, Network, State, check_model, check_problem, check_state, compiled
from .._solver import RunStats, Trajectory, observe
from .._solver._flat import kink_statistics
from ._batchnorm import bn_decay, bn_forward, bn_raw, bn_trajectory
from ._raw import output_and_decay, retract, states, to_raw, value_and_grad


class _Spec(NamedTuple):
    """Everything that fixes the compiled program (static under jit)."""

    net: Network
    regime: sym.Regime
    loss: str
    n: int
    batch: int | None  # None: full batch, no sampling
    momentum: bool
    n_chunks: int  # number of recorded chunks after the start (the chunk length is dynamic)
    remainder: bool  # whether a shorter last chunk follows (its length is dynamic)
    param: sym.Parametrization | None  # the regime's raw coordinates; None for the batch-normalized network
    affine: bool = False
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5
    track: bool = False  # watch every step's loss to name the first non-finite one (costs ~10% per step)


# ---- validation (plain Python: runs before anything is traced) -------------------------------------
def _flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise fail(name, value, "True or False")
    return bool(value)


# ---- the objective ---------------------------------------------------------------------------------
def _objective(spec: _Spec, raw, x, y, scale, lam):
    """``scale · Σ_n ℓ(u_n, y_n) + regularizer`` and the BN batch statistics (``None`` without BN)."""
    c = compiled(spec.regime, spec.loss, spec.net.depth)
    if spec.param is None:
        u, aux = bn_forward(spec, raw, x)
        reg = bn_decay(raw, lam)
    else:
        (u, reg), aux = output_and_decay(spec.param, c, spec.net, raw, x, lam), None
    return scale * jnp.sum(c.loss(u, y)) + reg, aux


def _value_and_grad(spec: _Spec, raw, x, y, scale, lam):
    """The loss, the BN batch statistics and the exact gradient in the raw coordinates."""
    return value_and_grad(spec.param, lambda r: _objective(spec, r, x, y, scale, lam), raw)


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
        raw = retract(spec.param, tmap(lambda p, d: p - lr * d, raw, direction))
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


@functools.partial(jax.jit, static_argnums=0)
def _kinks(net, x, Vs, ts, valid):
    return kink_statistics(net, x, Vs, ts, valid, 1e-9)


def _slice(traj, stop: int):
    cut = lambda a: None if a is None else a[:stop]
    return Trajectory(
        ts=traj.ts[:stop],
        rho=traj.rho[:stop],
        rho_k=cut(traj.rho_k),
        V=tuple(v[:stop] for v in traj.V),
        margins=traj.margins[:stop],
        loss=traj.loss[:stop],
        rho_eq=traj.rho_eq[:stop],
        stats=traj.stats.replace(status="diverged", steps=None, t_final=float(traj.ts[stop - 1])),
    )


# ---- the public entry point ------------------------------------------------------------------------
def sgd(
    model: Checked[Model],
    net: Checked[Network],
    data: Checked[Dataset],
    state: Checked[State],
    *,
    lr: Checked[float],
    steps: Checked[int],
    batch_size: Checked[int | None] = None,
    momentum: Checked[float] = 0.0,
    seed: Checked[int] = 0,
    batchnorm: Checked[bool] = False,
    record_every: Checked[int] = 1,
    bn_affine: Checked[bool] = False,
    bn_momentum: Checked[float] = 0.1,
    bn_eps: Checked[float] = 1e-5,
) -> Trajectory:
    """Discrete gradient descent (full batch) or minibatch SGD, the discrete counterpart of the flow.

    The step is the model's own, in the raw coordinates its regime's embedding declares: GD on ``W_k``
    (``unnormalized``), on ``(g_k, v_k)`` (``weightnorm``), or on ``(ρ, V_k)`` followed by the retraction
    ``V_k ← V_k/‖V_k‖`` (``normalized``, which declares one), and likewise for a regime of one's own, with
    the exact gradient of the loss (sum over samples, no ½, the model's regularizer; see
    docs/theory.md#conventions). A minibatch ``B`` contributes ``N/|B| Σ_{n∈B} ℓ``, so a full batch is exactly
    GD on ``L`` and ``t = lr · step`` is the flow's time. Minibatches are drawn by random reshuffling from
    ``jax.random.key(seed)``: every epoch of ``⌊N/|B|⌋`` steps takes a fresh permutation of the samples and
    walks through it in consecutive batches (the ``N mod |B|`` left over wait for the next shuffle).
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

    - `model`: a [`flowsim.Model`][flowsim.Model] whose regime's embedding is one of the shapes of
      [`flowsim.Regime`][flowsim.Regime] (all installed ones are); its λ and loss are used.
    - `net`: the [`flowsim.Network`][flowsim.Network].
    - `data`: the [`flowsim.Dataset`][flowsim.Dataset].
    - `state`: the initial [`flowsim.State`][flowsim.State] of `model`.
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

    **Returns:** a [`flowsim.Trajectory`][flowsim.Trajectory] with ``ts = lr · step`` at the recorded steps and the same
    observables as a flow; ``stats`` holds the run's settings (``method``, ``lr``, ``steps``, ...).

    **Raises:** [`flowsim.InputError`][flowsim.InputError] (a ``ValueError``) on bad arguments, before anything is
    compiled; [`flowsim.SolveError`][flowsim.SolveError] when the loss becomes non-finite, naming the step, with the
    trajectory up to it attached as ``partial``.
    """
    check_model(model)
    check_problem(net, data)
    check_state(model, net, state)
    batchnorm = _flag("batchnorm", batchnorm)
    param = None
    if not batchnorm:
        try:
            param = sym.parametrization(model.regime)
        except FlowsimError as err:
            raise fail("model", model.name, f"a regime whose raw coordinates fs.sgd can step in: {err}") from None
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

    started = time.perf_counter()
    full = batch_size is None or batch_size == n
    spec = _Spec(
        net=net,
        regime=model.regime,
        loss=model.loss,
        n=n,
        batch=None if full else batch_size,
        momentum=momentum > 0,
        n_chunks=steps // record_every,
        remainder=steps % record_every > 0,
        param=param,
        affine=bn_affine if batchnorm else False,
        bn_momentum=bn_momentum,
        bn_eps=bn_eps,
    )
    x, y = jnp.asarray(data.x), jnp.asarray(data.y)
    bn = None
    if batchnorm:  # running statistics start at the full-data statistics of the initial weights
        raw = bn_raw(state, spec.affine, net.widths)
        _, bn = bn_forward(spec, raw, x)
    else:
        raw = to_raw(param, state)
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
    stats = RunStats(
        method=("gd" if full else "sgd") + ("+batchnorm" if batchnorm else ""),
        steps=steps,
        t_final=float(lr * steps),
        model=model.name,
        lam=float(lam),
        loss=model.loss,
        lr=lr,
        batch_size=n if full else batch_size,
        momentum=momentum,
        seed=seed,
        record_every=record_every,
        batchnorm=batchnorm,
        bn_affine=spec.affine,
        rho_measure="prod_k |W_k| * prod_k |gamma_k| / prod_k |sigma_k| (running sigma)" if batchnorm else None,
    )
    if batchnorm:
        traj = bn_trajectory(spec, records[0], records[1], x, y, lam, ts, stats)
    else:
        traj = observe(model, net, data, ts, states(param, records[0]), stats)
    # kinks seen along the records, with the same meaning as for a flow (absolute tolerance of the raw field)
    valid = np.isfinite(np.asarray(traj.rho))
    switches, pinned, sliding = _kinks(net, x, traj.V, traj.ts, jnp.asarray(valid))
    traj = traj.with_stats(
        stats.replace(
            switches=int(switches),
            pinned=int(pinned),
            sliding_time=float(sliding),
            wall_time=time.perf_counter() - started,
        )
    )

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
