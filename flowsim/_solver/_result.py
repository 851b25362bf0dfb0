"""Sweep result files: [`flowsim.SweepResult`][flowsim.SweepResult] (a labelled ``xarray.Dataset``), netCDF written
atomically, and [`flowsim.load`][flowsim.load] with validation."""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np

from .._errors import Checked, ResultFileError, fail
from ._stats import NOT_RUN, STEADY, flow_stats
from ._trajectory import Trajectory

FORMAT = "flowsim-sweep"
FORMAT_VERSION = 4  # 2: RunStats per member, steady-state stops; 3: the exact flow (smoothing "exact", events);
# 4: its unresolved events
# Per member: the run statistics (see RunStats; status codes in _stats), and the wall time (the member's share
# of its chunk's).
MEMBER_VARIABLES = {
    "status": np.int8,
    "t_final": np.float64,
    "steps": np.int64,
    "rejected_steps": np.int64,
    "jacobians": np.int64,
    "final_speed": np.float64,
    "switches": np.int64,
    "pinned": np.int64,
    "sliding_time": np.float64,
    "norm_drift": np.float64,
    "balance_drift": np.float64,
    "crossings": np.int64,  # the exact flow's events (-1 for smoothed solves)
    "entries": np.int64,
    "exits": np.int64,
    "max_pinned": np.int64,
    "unresolved": np.int64,
    "wall_time": np.float64,
}


def smoothing_attr(eps: float | None):
    """How a file stores the smoothing: ε, 0.0 for the raw field (None), ``"exact"`` for the exact flow (0)."""
    return "exact" if eps == 0.0 else (0.0 if eps is None else float(eps))


def smoothing_from_attr(value) -> float | None:
    if isinstance(value, str):
        return 0.0  # "exact"
    return None if float(value) == 0 else float(value)


class SweepResult:
    """The outcome of [`flowsim.sweep`][flowsim.sweep]: a labelled ``xarray.Dataset`` and helpers.

    ``res.ds`` has dimensions ``member``, ``time``, ``sample`` (data points), ``layer`` (per-layer models)
    and one pair ``(d_k, d_km1)`` per layer for the directions, with coordinates ``member``, ``time``,
    ``state_index`` (which initial State), ``lam`` (λ of the member) and, when given, ``scale`` and ``seed``.
    Variables: ``rho``, ``rho_k``, ``V_1 .. V_L``, ``margins``, ``loss``, ``rho_eq``, and per member
    ``status`` (0 reached t1, 1 stopped at a steady state, 2 step limit reached, 3 non-finite values,
    4 other failure, 5 the exact flow's events cycled in place, -1 not computed yet), ``t_final``, ``steps``,
    ``rejected_steps``, ``jacobians``, ``final_speed``, ``switches``, ``pinned``, ``sliding_time``, ``norm_drift``,
    ``balance_drift`` and ``wall_time`` (see [`flowsim.RunStats`][flowsim.RunStats]). Rows after a steady-state
    stop hold the stopped state; rows after a failure are NaN. The run settings are in ``ds.attrs``.
    """

    def __init__(self, ds):
        self.ds = ds

    def __repr__(self) -> str:
        return f"SweepResult({self.ds.sizes['member']} members, {self.ds.sizes['time']} saves)\n{self.ds!r}"

    def __len__(self) -> int:
        return int(self.ds.sizes["member"])

    def __getattr__(self, name):
        if name in ("rho", "rho_k", "margins", "loss", "rho_eq", "status", "lam", "time"):
            ds = self.__dict__["ds"]
            if name in ds.variables:
                return ds[name]
        raise AttributeError(name)

    @property
    def complete(self) -> bool:
        """Whether every member has been computed (false for a partial file of an interrupted sweep)."""
        return bool(np.all(self.ds["status"].values != NOT_RUN))

    def trajectory(self, i: Checked[int]) -> Trajectory:
        """Member `i` as a [`flowsim.Trajectory`][flowsim.Trajectory].

        **Arguments:**

        - `i`: the member index (position along ``member``).

        **Returns:** a Trajectory with the member's saved states and observables; its ``stats`` hold the
        solver settings, the step counts and the member's status.
        """
        ds = self.ds
        n = ds.sizes["member"]
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -n <= i < n:
            raise fail("i", i, f"a member index in [-{n}, {n})")
        m = ds.isel(member=int(i))
        a = ds.attrs
        t_final = float(m["t_final"].values)
        times = ds["time"].values
        # the rows the member reached, then its end if that is not a save time (a steady-state stop)
        rows = np.flatnonzero(np.isfinite(m["rho"].values) & (times <= t_final))
        t_rows = times[rows]
        if int(m["status"].values) == STEADY and not np.any(t_rows == t_final):
            rows = np.append(rows, times.size - 1)  # the last row holds the stopped state
            t_rows = np.append(t_rows, t_final)
        member = {name: m[name].values for name in MEMBER_VARIABLES}
        stats = flow_stats(
            member,
            method=str(a["solver"]),
            model=str(a["model"]),
            lam=float(m["lam"].values),
            loss=str(a["loss"]),
            rtol=float(a["rtol"]),
            atol=float(a["atol"]),
            smoothing=smoothing_from_attr(a["smoothing"]),
            max_steps=int(a["max_steps"]),
            t1=float(a["t1"]),
            balance_law=bool(int(a["balance_law"])),
            balance_enforced=bool(int(a["balance_enforced"])),
            wall_time=float(member["wall_time"]),
        )
        depth = int(a["depth"])
        return Trajectory(
            ts=jnp.asarray(t_rows),
            rho=jnp.asarray(m["rho"].values[rows]),
            rho_k=jnp.asarray(m["rho_k"].values[rows]) if "rho_k" in ds.variables else None,
            V=tuple(jnp.asarray(m[f"V_{k + 1}"].values[rows]) for k in range(depth)),
            margins=jnp.asarray(m["margins"].values[rows]),
            loss=jnp.asarray(m["loss"].values[rows]),
            rho_eq=jnp.asarray(m["rho_eq"].values[rows]),
            stats=stats,
        )

    def save(self, path) -> None:
        """Write the result to a netCDF file, atomically (a temporary file, then ``os.replace``).

        **Arguments:**

        - `path`: the file to write (``.nc``); an existing file is replaced only once the new one is complete.
        """
        write_atomic(self.ds, path)


def load(path) -> SweepResult:
    """Read a sweep result written by [`flowsim.SweepResult.save`][flowsim.SweepResult.save] or by ``fs.sweep(...,
    path=...)``.

    **Arguments:**

    - `path`: a netCDF file.

    **Returns:** a [`flowsim.SweepResult`][flowsim.SweepResult] (possibly partial: see
    [`flowsim.SweepResult.complete`][flowsim.SweepResult.complete]).

    **Raises:** [`flowsim.ResultFileError`][flowsim.ResultFileError] when the file is missing, truncated or unreadable,
    is not a flowsim sweep file, has another format version, or lacks variables or has inconsistent shapes.
    """
    import xarray as xr

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ResultFileError(f"result file {path!r} does not exist")
    try:
        ds = xr.load_dataset(path, engine="netcdf4")
    except Exception as err:  # noqa: BLE001  (h5py/netCDF raise many types for a damaged file)
        raise ResultFileError(f"result file {path!r} is not a readable netCDF file ({type(err).__name__}: {err})")
    if ds.attrs.get("format") != FORMAT:
        raise ResultFileError(
            f"result file {path!r} is not a flowsim sweep file (format attribute "
            f"{ds.attrs.get('format')!r}, expected {FORMAT!r})"
        )
    version = ds.attrs.get("format_version")
    if version is None or int(version) != FORMAT_VERSION:
        raise ResultFileError(
            f"result file {path!r} has format version {version!r}; this flowsim reads version {FORMAT_VERSION}"
        )
    _validate(ds, path)
    return SweepResult(ds)


def _validate(ds, path):
    try:
        depth = int(ds.attrs["depth"])
        per_layer = bool(int(ds.attrs["per_layer"]))
    except (KeyError, ValueError) as err:
        raise ResultFileError(f"result file {path!r} lacks the attribute {err}")
    needed = {
        "rho": ("member", "time"),
        "loss": ("member", "time"),
        "rho_eq": ("member", "time"),
        "margins": ("member", "time", "sample"),
        **{name: ("member",) for name in MEMBER_VARIABLES},
        "lam": ("member",),
        "state_index": ("member",),
    }
    if per_layer:
        needed["rho_k"] = ("member", "time", "layer")
    for k in range(depth):
        needed[f"V_{k + 1}"] = ("member", "time", f"d{k + 1}_out", f"d{k + 1}_in")
    for name, dims in needed.items():
        if name not in ds.variables:
            raise ResultFileError(f"result file {path!r} lacks the variable {name!r}")
        if ds[name].dims != dims:
            raise ResultFileError(
                f"result file {path!r}: variable {name!r} has dimensions {ds[name].dims}, expected {dims}"
            )
    if "time" not in ds.coords or ds.sizes["time"] == 0 or ds.sizes["member"] == 0:
        raise ResultFileError(f"result file {path!r} has an empty member or time axis")


def write_atomic(ds, path):
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        ds.to_netcdf(tmp, engine="netcdf4")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def empty_dataset(xr, net, model, n, time_axis, n_samples, state_index, member_lam, scale, seed, attrs):
    T = time_axis.size
    nan = np.nan
    data_vars = {
        "rho": (("member", "time"), np.full((n, T), nan)),
        "margins": (("member", "time", "sample"), np.full((n, T, n_samples), nan)),
        "loss": (("member", "time"), np.full((n, T), nan)),
        "rho_eq": (("member", "time"), np.full((n, T), nan)),
        **{name: (("member",), np.zeros(n, dtype=dtype)) for name, dtype in MEMBER_VARIABLES.items()},
    }
    data_vars["status"][1][:] = NOT_RUN
    for k, shape in enumerate(net.shapes):
        data_vars[f"V_{k + 1}"] = (("member", "time", f"d{k + 1}_out", f"d{k + 1}_in"), np.full((n, T, *shape), nan))
    if model.per_layer:
        data_vars["rho_k"] = (("member", "time", "layer"), np.full((n, T, net.depth), nan))
    coords = {
        "member": np.arange(n),
        "time": time_axis,
        "state_index": ("member", state_index),
        "lam": ("member", member_lam),
    }
    if scale is not None:
        coords["scale"] = ("member", scale[state_index])
    if seed is not None:
        coords["seed"] = ("member", seed[state_index])
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)
