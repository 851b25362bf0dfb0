"""``fs.sweep``: many flows at once — vmapped, sharded over every visible device, saved as it goes.

A sweep integrates the same problem (model, network, data) from a batch of initial States and, optionally,
for several weight-decay strengths λ. Each member is exactly the diffrax solve that ``fs.simulate`` runs with
the same settings: both run `solve_member` (the solve, the projection, the observables and the run
statistics), jitted alone for ``simulate`` and vmapped here.

The batch axis is vmapped and laid out over ``jax.sharding.Mesh(jax.devices(), ("batch",))``: the same code
runs on one CPU, on forced host devices (``XLA_FLAGS=--xla_force_host_platform_device_count=N``), on a GPU,
and on several hosts after ``jax.distributed.initialize()`` (every process runs the same script; process 0
writes the file).

Results are an ``xarray.Dataset`` wrapped in [`flowsim.SweepResult`][flowsim.SweepResult], saved to netCDF atomically.
With ``path=``, each finished chunk of members is written as soon as it is done, and rerunning the same sweep with the
same path computes only the members not in the file yet.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import warnings
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import ArrayLike
from threadpoolctl import threadpool_limits

from .._data import Dataset
from .._errors import Checked, ResultFileError, SolveError, fail
from .._model import Model, Network, State, check_lam, check_state
from ._options import check_solve
from ._result import (
    FORMAT,
    FORMAT_VERSION,
    MEMBER_VARIABLES,
    SweepResult,
    empty_dataset,
    load,
    smoothing_attr,
    write_atomic,
)
from ._solve import BATCHING, compiled_member, settings_for
from ._stats import FAILURES, NOT_RUN, STATUS_NAMES, failure_message


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
def _with_lam(model, lam):
    import equinox as eqx

    return eqx.tree_at(lambda mm: mm.lam, model, lam)


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
    steady_state: bool = False,
    solver: Checked[str] = "auto",
    smoothing: Checked[float | None | str] = "auto",
    max_steps: Checked[int] = 200_000,
    steady_tol: Checked[float] = 1e-6,
    enforce_balance: bool = True,
    batching: Checked[str] = "auto",
    chunk_size: Checked[int | None] = None,
    path: str | os.PathLike | None = None,
    progress: bool = False,
    throw: bool = True,
) -> SweepResult:
    """Integrate the flow of `model` from many initial States (and λ values) at once.

    Members are vmapped and sharded over all visible devices (a mesh over the batch axis). Member ``i`` is
    the computation ``fs.simulate(model_i, net, data, states[j], t1=t1, ts=ts, ...)`` runs with the same
    settings, where ``model_i`` has the member's λ: both run one function (`solve_member`), jitted alone
    or vmapped.

    **Arguments:**

    - `model`, `net`, `data`: the problem, as for [`flowsim.simulate`][flowsim.simulate].
    - `states`: a list of initial [`flowsim.State`][flowsim.State] objects, or one State stacked along a leading batch
      axis.
    - `t1`: end time; `ts`: save times in ``[0, t1]`` (default: as in ``simulate``). If the last save time
      is before `t1`, the state at `t1` is saved too, as in ``simulate``.
    - `lam`: optional 1-D sequence of weight-decay strengths; the sweep is then every State × every λ
      (member ``i_state · n_lam + i_lam``). Default: ``model.lam`` for all.
    - `scale`, `seed`: optional labels, one per initial State, stored as coordinates of the members.
    - `rtol`, `atol`, `solver`, `smoothing`, `max_steps`, `steady_tol`, `enforce_balance`: as for
      ``simulate`` (the default solver is the compiled stiff ``"rosenbrock"``).
    - `steady_state`: stop each member at its steady state, as ``simulate`` does. Its ``t_final`` says when;
      its save rows after that hold the stopped state (the flow is stationary there to `steady_tol`).
    - `batching`: how a device runs its members: ``"map"``, one after the other, each the very program
      ``simulate`` runs (so a member equals its single run bitwise); ``"vmap"``, as one vectorized program
      (what a GPU parallelizes; members then differ from single runs by round-off, which the sliding
      dynamics of ReLU flows amplify up to the solver's accuracy); ``"auto"``: ``"map"`` on CPUs and for the
      exact flow (``smoothing=0``, whose events a vmapped batch would handle for every member at every step),
      ``"vmap"`` otherwise on accelerators. Several CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=N``
      before JAX starts) run their members in parallel, one core each.
    - `chunk_size`: members computed per device batch (rounded up to a multiple of the device count);
      default: all members in one chunk, or 256 when `path` is given.
    - `path`: a netCDF file. Each finished chunk is written to it atomically; rerunning the same sweep with
      the same `path` resumes, computing only the members not in the file yet, on any number of devices
      (the chunking is not part of the sweep's identity).
    - `progress`: show a progress bar over chunks.
    - `throw`: raise [`flowsim.SolveError`][flowsim.SolveError] when some member fails (step limit, non-finite values),
      with the whole result (file written) as ``.partial``; ``False``: warn, counting the failed members
      and naming the reasons, and return the result.

    **Returns:** a [`flowsim.SweepResult`][flowsim.SweepResult] (``res.ds`` is the ``xarray.Dataset``). A failed
    member's ``status`` says why; its rows after the failure are NaN.

    **Raises:** [`flowsim.InputError`][flowsim.InputError] on bad arguments;
    [`flowsim.ResultFileError`][flowsim.ResultFileError] when `path` holds a file of a different sweep (or not a sweep
    file); [`flowsim.SolveError`][flowsim.SolveError] (see `throw`).
    """
    import xarray as xr

    t1, ts, rtol, atol, solver, eps, steady_tol = check_solve(
        model, net, data, t1, ts, rtol, atol, solver, max_steps, smoothing, steady_tol
    )
    if not isinstance(batching, str) or batching not in BATCHING:
        raise fail("batching", batching, f"one of {BATCHING}")
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
    settings = settings_for(
        model,
        net,
        eps=eps,
        solver=solver,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
        steady_state=steady_state,
        steady_tol=steady_tol,
        enforce_balance=enforce_balance,
    )
    has_law = settings.has_balance_law
    if has_law:
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
    keep_end = bool(t1 != ts[-1])
    time_axis = np.concatenate([ts, [t1]]) if keep_end else ts

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
        bool(steady_state),
        steady_tol,
        bool(enforce_balance),
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
        "smoothing": smoothing_attr(eps),
        "rtol": rtol,
        "atol": atol,
        "t1": float(t1),
        "max_steps": int(max_steps),
        "steady_state": int(steady_state),
        "steady_tol": steady_tol,
        "balance_law": int(has_law),
        "balance_enforced": int(has_law and enforce_balance),
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
    todo = [(c, m[status[m] == NOT_RUN]) for c, m in enumerate(members)]
    todo = [(c, m) for c, m in todo if m.size]

    if todo:
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

        mesh = Mesh(np.asarray(devices), ("batch",))
        sharding = NamedSharding(mesh, P("batch"))
        if batching == "auto":
            # the exact flow's event handling runs for every member of a vmapped batch at every step (a
            # select): 2 members to t = 0.5 took 230 s vmapped on a CPU, compilation included
            batching = "map" if devices[0].platform == "cpu" or eps == 0.0 else "vmap"
        run = compiled_member(settings, batching, mesh)  # one compiled program per settings, reused by reruns
        x, y = jnp.asarray(data.x), jnp.asarray(data.y)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), unit="chunk", desc="sweep")
        writer = jax.process_index() == 0
        for c, m in todo:
            idx = np.concatenate([m, np.repeat(m[-1:], chunk - m.size)])  # pad by repeating the last member
            lam_c, rate_c, z0_c = (
                _to_global(np.ascontiguousarray(a[idx]), sharding) for a in (member_lam, member_rate, member_z0)
            )
            started = time.perf_counter()
            with threadpool_limits(1, "blas"):  # small LU factorizations: see simulate
                out = _to_host(run(x, y, lam_c, rate_c, z0_c, jnp.asarray(ts), jnp.asarray(t1)))
            _fill(ds, out, m, keep_end, (time.perf_counter() - started) / m.size)
            if path is not None and writer:
                write_atomic(ds, path)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
    result = SweepResult(ds)
    _report_failures(result, t1, int(max_steps), throw)
    return result


def _fill(ds, out, members, keep_end, wall_time):
    """Write the first ``len(members)`` rows of a chunk's output into the rows `members` of `ds`."""
    m = members.size
    rows = slice(None) if keep_end else slice(0, -1)
    for name in ds.data_vars:
        if name in MEMBER_VARIABLES:
            ds[name].values[members] = out[name][:m] if name != "wall_time" else wall_time
        else:
            ds[name].values[members] = out[name][:m, rows]


def _report_failures(result: SweepResult, t1: float, max_steps: int, throw: bool) -> None:
    """Raise (or warn) when some members failed, counting them by reason; never leave failures silent."""
    ds = result.ds
    status = ds["status"].values
    failed = np.flatnonzero(np.isin(status, FAILURES))
    if failed.size == 0:
        return
    reasons = ", ".join(f"{np.sum(status == code)} {STATUS_NAMES[code]}" for code in FAILURES if np.any(status == code))
    first = int(failed[0])
    detail = failure_message(int(status[first]), float(ds["t_final"].values[first]), t1, max_steps, ds.attrs["solver"])
    message = (
        f"{failed.size} of {status.size} sweep members failed ({reasons}); their rows after the failure are NaN. "
        f"First, member {first}: {detail}"
    )
    if throw:
        raise SolveError(message, partial=result)
    warnings.warn(message, stacklevel=3)
