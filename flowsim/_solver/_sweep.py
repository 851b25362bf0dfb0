"""``fs.sweep``: many flows at once — vmapped, sharded over every visible device, saved as it goes.

A sweep integrates the same problem (model, network, data) from a batch of initial States and, optionally,
for several weight-decay strengths λ. Each member is exactly the diffrax solve that ``fs.simulate`` runs with
the same `solver`, `smoothing`, `ts` and tolerances (the same pure :func:`diffrax_solve` on the same flat
field), followed by the same projection and observables, so a member equals its single run to round-off.

The batch axis is vmapped and laid out over ``jax.sharding.Mesh(jax.devices(), ("batch",))``: the same code
runs on one CPU, on forced host devices (``XLA_FLAGS=--xla_force_host_platform_device_count=N``), on a GPU,
and on several hosts after ``jax.distributed.initialize()`` (every process runs the same script; process 0
writes the file).

Results are an ``xarray.Dataset`` wrapped in :class:`SweepResult`, saved to netCDF atomically. With
``path=``, each finished chunk of members is written as soon as it is done, and rerunning the same sweep
with the same path computes only the members not in the file yet.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import ArrayLike

from .._data import Dataset
from .._errors import Checked, ResultFileError, fail
from .._model import Model, Network, State, check_lam, check_state
from ._diffrax import diffrax_solve
from ._flat import flat_field, unraveler
from ._observables import observe_one
from ._options import DIFFRAX_SOLVERS, check_solve
from ._projection import balance_law, project_states
from ._result import (
    FORMAT,
    FORMAT_VERSION,
    STATUS_FAILED,
    STATUS_MAX_STEPS,
    STATUS_NOT_RUN,
    STATUS_OK,
    SweepResult,
    empty_dataset,
    load,
    write_atomic,
)

_COMPILED: dict = {}  # one compiled program per problem and settings, the 8 most recent (see sweep)


# ---- inputs ---------------------------------------------------------------------------------------
def _stack_members(model, net, states):
    if isinstance(states, State):
        leaves = jax.tree_util.tree_leaves(states)
        if not leaves or jnp.ndim(states.rho) != 1:
            raise fail(
                "states",
                "a State without a batch axis",
                "a list of States or a State stacked along a leading batch axis (rho of shape (B,))",
            )
        n = int(states.rho.shape[0])
        states = [jax.tree_util.tree_map(lambda a, i=i: a[i], states) for i in range(n)]
    elif isinstance(states, (list, tuple)):
        states = list(states)
    else:
        raise fail("states", type(states).__name__, "a list of States or a stacked State")
    if not states:
        raise fail("states", states, "at least one initial State")
    for i, s in enumerate(states):
        if not isinstance(s, State):
            raise fail(f"states[{i}]", type(s).__name__, "a flowsim.State")
        check_state(model, net, s, name=f"states[{i}]")
    return np.stack([np.asarray(ravel_pytree(s)[0]) for s in states])


def _labels(name, values, n):
    if values is None:
        return None
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise fail(name, values, f"one label per initial State ({n} values)")
    return arr


def _hash(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(str(p.dtype).encode() + str(p.shape).encode())
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(repr(p).encode())
        h.update(b"|")
    return h.hexdigest()


# ---- the batched computation ----------------------------------------------------------------------
def _member_fn(model, net, x, y, eps, t1, ts, save_t, rtol, atol, solver, max_steps, lam_fixed):
    has_law = balance_law(model, jnp.ones(net.depth))[0] is not None
    keep = np.asarray(save_t, dtype=bool)
    unravel = unraveler(model, net)

    def one(z0, lam, rate):
        if lam_fixed:  # λ a compile-time constant, exactly as in simulate's closure
            m, lam = model, model.lam
        else:
            m = _with_lam(model, lam)

        sol = diffrax_solve(lambda z: flat_field(m, net, x, y, z, eps), z0, t1, ts, rtol, atol, solver, max_steps)
        zs = sol.ys[keep]
        states = jax.vmap(unravel)(zs)
        s0 = unravel(z0)
        balance0 = s0.rho_k**2 if has_law else None
        t_saved = jnp.asarray(np.concatenate([ts, [t1]])[keep])
        projected, _, _ = project_states(states, balance0, rate, t_saved)
        V, rho, rho_k = projected.V, projected.rho, projected.rho_k
        margins, loss, rho_eq = jax.vmap(lambda V_, r, rk: observe_one(m, net, x, y, lam, V_, r, rk))(V, rho, rho_k)
        out = {
            "rho": rho,
            "margins": margins,
            "loss": loss,
            "rho_eq": rho_eq,
            "result": sol.result._value,
            "accepted": sol.stats["num_accepted_steps"],
            "rejected": sol.stats["num_rejected_steps"],
        }
        for k, v in enumerate(V):
            out[f"V_{k + 1}"] = v
        if rho_k is not None:
            out["rho_k"] = rho_k
        return out

    return jax.vmap(one)


def _with_lam(model, lam):
    import equinox as eqx

    return eqx.tree_at(lambda mm: mm.lam, model, lam)


def _result_code(result_value):
    import diffrax as dfx

    codes = np.full(result_value.shape, STATUS_FAILED, dtype=np.int8)
    codes[result_value == dfx.RESULTS.successful._value] = STATUS_OK
    codes[result_value == dfx.RESULTS.max_steps_reached._value] = STATUS_MAX_STEPS
    return codes


def _to_global(arr, sharding):
    return jax.make_array_from_callback(arr.shape, sharding, lambda idx: arr[idx])


def _to_host(tree):
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        tree = multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree_util.tree_map(np.asarray, tree)


# ---- the public entry point -----------------------------------------------------------------------
def sweep(
    model: Checked[Model],
    net: Checked[Network],
    data: Checked[Dataset],
    states: Checked[Sequence[State] | State],
    *,
    t1: Checked[float],
    ts: Checked[ArrayLike | Sequence[float] | None] = None,
    lam: Checked[ArrayLike | Sequence[float] | None] = None,
    scale: Checked[ArrayLike | Sequence | None] = None,
    seed: Checked[ArrayLike | Sequence | None] = None,
    rtol: Checked[float] = 1e-6,
    atol: Checked[float] = 1e-9,
    solver: Checked[str] = "tsit5",
    smoothing: Checked[float | None | str] = "auto",
    max_steps: Checked[int] = 200_000,
    chunk_size: Checked[int | None] = None,
    path: str | os.PathLike | None = None,
    progress: bool = False,
    _on_chunk=None,
) -> SweepResult:
    """Integrate the flow of `model` from many initial States (and λ values) at once.

    Members are vmapped and sharded over all visible devices (a mesh over the batch axis). Member ``i``
    equals ``fs.simulate(model_i, net, data, states[j], t1=t1, ts=ts, rtol=rtol, atol=atol, solver=solver,
    smoothing=smoothing, max_steps=max_steps)`` to round-off, where ``model_i`` has the member's λ.

    **Arguments:**

    - `model`, `net`, `data`: the problem, as for :func:`flowsim.simulate`.
    - `states`: a list of initial :class:`flowsim.State` s, or one State stacked along a leading batch axis.
    - `t1`: end time; `ts`: save times in ``[0, t1]`` (default: as in ``simulate``). If the last save time
      is before `t1`, the state at `t1` is saved too, as in ``simulate``.
    - `lam`: optional 1-D sequence of weight-decay strengths; the sweep is then every State × every λ
      (member ``i_state · n_lam + i_lam``). Default: ``model.lam`` for all.
    - `scale`, `seed`: optional labels, one per initial State, stored as coordinates of the members.
    - `rtol`, `atol`, `max_steps`: as for ``simulate``.
    - `solver`: a diffrax solver, ``"tsit5"`` (default), ``"dopri5"``, ``"dopri8"`` or ``"kvaerno5"``.
    - `smoothing`: as for ``simulate`` (``"auto"``: ε = 1e-5 for ReLU networks).
    - `chunk_size`: members computed per device batch (rounded up to a multiple of the device count);
      default: all members in one chunk, or 256 when `path` is given.
    - `path`: a netCDF file. Each finished chunk is written to it atomically; rerunning the same sweep with
      the same `path` resumes, computing only the members not in the file yet, on any number of devices
      (the chunking is not part of the sweep's identity).
    - `progress`: show a progress bar over chunks.

    **Returns:** a :class:`flowsim.SweepResult` (``res.ds`` is the ``xarray.Dataset``).

    **Raises:** :class:`flowsim.InputError` on bad arguments; :class:`flowsim.ResultFileError` when `path`
    holds a file of a different sweep (or not a sweep file). Members that fail are not raised: their
    ``status`` is non-zero and their values past the failure are not finite.
    """
    import xarray as xr

    # a sweep vmaps a diffrax solve, so only the diffrax solvers apply
    t1, ts, rtol, atol, eps = check_solve(
        model, net, data, t1, ts, rtol, atol, solver, DIFFRAX_SOLVERS, max_steps, smoothing
    )
    z0s = _stack_members(model, net, states)
    n_states = z0s.shape[0]
    lams = (
        np.array([float(model.lam)])
        if lam is None
        else np.asarray([check_lam(v) for v in np.atleast_1d(lam)], dtype=np.float64)
    )
    if lams.size == 0:
        raise fail("lam", lam, "a non-empty sequence of λ >= 0")
    scale = _labels("scale", scale, n_states)
    seed = _labels("seed", seed, n_states)
    n_lam = lams.size
    n = n_states * n_lam
    state_index = np.repeat(np.arange(n_states), n_lam)
    member_lam = np.tile(lams, n_states)
    member_z0 = z0s[state_index]
    if model.per_layer and model.derivation.invariant is not None:
        rates = {v: _with_lam(model, jnp.asarray(v)).invariant_rate() for v in lams}
        member_rate = np.array([rates[v] for v in member_lam])
    else:
        member_rate = np.zeros(n)

    devices = jax.devices()
    n_dev = len(devices)
    if chunk_size is None:
        chunk_size = n if path is None else min(n, 256)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise fail("chunk_size", chunk_size, "an integer >= 1")
    chunk = int(math.ceil(int(chunk_size) / n_dev) * n_dev)
    n_chunks = int(math.ceil(n / chunk))

    # The time axis exactly as simulate keeps it: ts, plus t1 when ts stops before it.
    save_t = np.ones(ts.size + 1, dtype=bool)
    save_t[-1] = not (t1 == ts[-1])
    time_axis = np.concatenate([ts, [t1]])[save_t]

    x, y = jnp.asarray(data.x), jnp.asarray(data.y)
    sweep_hash = _hash(
        FORMAT_VERSION,
        model.name,
        model.loss,
        tuple(net.widths),
        net.activation,
        np.asarray(data.x),
        np.asarray(data.y),
        member_z0,
        member_lam,
        float(t1),
        ts,
        rtol,
        atol,
        solver,
        eps,
        int(max_steps),
        scale,
        seed,
    )  # not the chunking: it depends on the devices
    attrs = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "sweep_hash": sweep_hash,
        "model": model.name,
        "loss": model.loss,
        "per_layer": int(model.per_layer),
        "widths": np.asarray(net.widths, dtype=np.int64),
        "activation": net.activation,
        "depth": net.depth,
        "solver": solver,
        "smoothing": 0.0 if eps is None else float(eps),
        "rtol": rtol,
        "atol": atol,
        "t1": float(t1),
        "max_steps": int(max_steps),
        "chunk_size": chunk,
        "n_chunks": n_chunks,
    }

    ds = empty_dataset(xr, net, model, n, time_axis, data.n, state_index, member_lam, scale, seed, attrs)
    if path is not None and os.path.exists(os.fspath(path)):
        old = load(path).ds
        if old.attrs.get("sweep_hash") != sweep_hash:
            raise ResultFileError(
                f"result file {os.fspath(path)!r} holds a different sweep (other inputs or "
                "settings); use another path or delete the file to start over"
            )
        ds = old
        ds.attrs.update(chunk_size=chunk, n_chunks=n_chunks)  # this run's chunking (another machine's may differ)
    # Per chunk, the members not computed yet: all of them in a new sweep, the missing ones when resuming
    # (a file written with another chunking, e.g. on another number of devices, leaves chunks half done).
    status = ds["status"].values
    members = [np.arange(c * chunk, min((c + 1) * chunk, n)) for c in range(n_chunks)]
    todo = [(c, m[status[m] == STATUS_NOT_RUN]) for c, m in enumerate(members)]
    todo = [(c, m) for c, m in todo if m.size]

    if todo:
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

        mesh = Mesh(np.asarray(devices), ("batch",))
        sharding = NamedSharding(mesh, P("batch"))
        key = _hash(
            model.name,
            model.loss,
            float(model.lam) if lam is None else None,
            tuple(net.widths),
            net.activation,
            np.asarray(data.x),
            np.asarray(data.y),
            member_z0.shape[1],
            model.per_layer,
            eps,
            float(t1),
            ts,
            rtol,
            atol,
            solver,
            int(max_steps),
        )
        run = _COMPILED.get(key)
        if run is None:  # one compiled program per problem and settings, reused by reruns and resumes
            run = jax.jit(
                _member_fn(model, net, x, y, eps, t1, ts, save_t, rtol, atol, solver, int(max_steps), lam is None)
            )
            if len(_COMPILED) >= 8:
                _COMPILED.pop(next(iter(_COMPILED)))
            _COMPILED[key] = run
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), unit="chunk", desc="sweep")
        writer = jax.process_index() == 0
        for c, m in todo:
            idx = np.concatenate([m, np.repeat(m[-1:], chunk - m.size)])  # pad by repeating the last member
            args = [_to_global(np.ascontiguousarray(a[idx]), sharding) for a in (member_z0, member_lam, member_rate)]
            out = _to_host(run(*args))
            _fill(ds, out, m, net.depth, model.per_layer)
            if path is not None and writer:
                write_atomic(ds, path)
            if bar is not None:
                bar.update(1)
            if _on_chunk is not None:
                _on_chunk(c)
        if bar is not None:
            bar.close()
    return SweepResult(ds)


def _fill(ds, out, members, depth, per_layer):
    """Write the first ``len(members)`` rows of a chunk's output into the rows `members` of `ds`."""
    m = members.size
    names = ["rho", "margins", "loss", "rho_eq"] + [f"V_{k + 1}" for k in range(depth)]
    if per_layer:
        names.append("rho_k")
    for name in names:
        ds[name].values[members] = out[name][:m]
    ds["accepted_steps"].values[members] = out["accepted"][:m]
    ds["rejected_steps"].values[members] = out["rejected"][:m]
    ds["status"].values[members] = _result_code(np.asarray(out["result"][:m]))
