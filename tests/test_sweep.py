"""fs.sweep and result files: members equal single runs, files round-trip, sweeps resume, devices agree."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowsim as fs

T1 = 5.0
TS = np.linspace(0.0, T1, 11)
LAMS = [1e-2, 1e-1]


def _problem(activation="linear", name="normalized"):
    data = fs.datasets.gaussian_clusters(n=10, dim=3, seed=0)
    net = fs.Network((3, 4, 1), activation)
    model = fs.load_model(name, lam=1e-2)
    states = [model.init(net, seed=k, scale=0.5) for k in range(3)]
    return data, net, model, states


@pytest.fixture(scope="module")
def linear_sweep():
    data, net, model, states = _problem()
    res = fs.sweep(model, net, data, states, t1=T1, ts=TS, lam=LAMS, scale=[0.5] * 3, seed=[0, 1, 2])
    return data, net, model, states, res


def _assert_member_equals(res, i, traj, tol):
    m = res.trajectory(i)
    np.testing.assert_array_equal(np.asarray(m.ts), np.asarray(traj.ts))
    for name in ("rho", "margins", "loss", "rho_eq"):
        np.testing.assert_allclose(np.asarray(getattr(m, name)), np.asarray(getattr(traj, name)), rtol=0, atol=tol,
                                   err_msg=name)
    for a, b in zip(m.V, traj.V):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=tol)
    if traj.rho_k is not None:
        np.testing.assert_allclose(np.asarray(m.rho_k), np.asarray(traj.rho_k), rtol=0, atol=tol)


@pytest.mark.filterwarnings("ignore:the initial state is not on average separable")
def test_members_equal_single_runs_lambda_sweep(linear_sweep):
    data, net, model, states, res = linear_sweep
    ds = res.ds
    assert ds.sizes["member"] == 6 and ds.sizes["time"] == TS.size and res.complete
    assert list(ds["state_index"].values) == [0, 0, 1, 1, 2, 2]
    assert list(ds["lam"].values) == LAMS * 3 and list(ds["seed"].values) == [0, 0, 1, 1, 2, 2]
    for i in (0, 5):
        j, lam = int(ds["state_index"][i]), float(ds["lam"][i])
        traj = fs.simulate(fs.load_model("normalized", lam=lam), net, data, states[j], t1=T1, ts=TS, solver="tsit5")
        _assert_member_equals(res, i, traj, 1e-10)


@pytest.mark.filterwarnings("ignore:the initial state is not on average separable")
def test_per_layer_members_equal_single_runs_and_stacked_states():
    data, net, model, states = _problem(name="unnormalized")
    ts = np.linspace(0.0, 3.0, 7)  # stops before t1: the state at t1 is saved too, as in simulate
    stacked = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *states)
    res = fs.sweep(model, net, data, stacked, t1=4.0, ts=ts)
    assert res.ds.sizes["time"] == 8 and "rho_k" in res.ds
    traj = fs.simulate(model, net, data, states[2], t1=4.0, ts=ts, solver="tsit5")
    _assert_member_equals(res, 2, traj, 1e-10)


@pytest.mark.filterwarnings("ignore:the initial state is not on average separable")
def test_relu_member_matches_single_run():
    # With a smoothed ReLU the field is stiff near kinks, which amplifies round-off between the vmapped and
    # the single compiled programs (same step counts; differences ~1e-9): checked to 1e-7 here.
    data, net, model, states = _problem(activation="relu")
    res = fs.sweep(model, net, data, states[:2], t1=T1, ts=TS, smoothing=0.1)
    traj = fs.simulate(model, net, data, states[0], t1=T1, ts=TS, solver="tsit5", smoothing=0.1)
    _assert_member_equals(res, 0, traj, 1e-7)
    assert res.trajectory(0).stats["accepted_steps"] == traj.stats["accepted_steps"]


def test_save_load_round_trip_exact(linear_sweep, tmp_path):
    res = linear_sweep[-1]
    path = tmp_path / "sweep.nc"
    res.save(path)
    back = fs.load(path)
    assert back.ds.identical(res.ds)
    assert not [p for p in os.listdir(tmp_path) if p != "sweep.nc"]  # no temporary file left behind
    t0, t1 = res.trajectory(3), back.trajectory(3)
    np.testing.assert_array_equal(np.asarray(t0.margins), np.asarray(t1.margins))


def test_load_rejects_missing_truncated_and_foreign_files(linear_sweep, tmp_path):
    import xarray as xr

    with pytest.raises(fs.ResultFileError, match="does not exist"):
        fs.load(tmp_path / "nope.nc")
    good = tmp_path / "good.nc"
    linear_sweep[-1].save(good)
    blob = good.read_bytes()
    (tmp_path / "cut.nc").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(fs.ResultFileError, match="not a readable"):
        fs.load(tmp_path / "cut.nc")
    xr.Dataset({"a": ("x", np.arange(3.0))}).to_netcdf(tmp_path / "foreign.nc", engine="netcdf4")
    with pytest.raises(fs.ResultFileError, match="not a flowsim sweep file"):
        fs.load(tmp_path / "foreign.nc")
    ds = fs.load(good).ds.drop_vars("margins")
    ds.to_netcdf(tmp_path / "partial.nc", engine="netcdf4")
    with pytest.raises(fs.ResultFileError, match="margins"):
        fs.load(tmp_path / "partial.nc")
    assert issubclass(fs.ResultFileError, fs.FlowsimError)


class _Interrupt(Exception):
    pass


def test_interrupted_sweep_resumes_without_recomputing(linear_sweep, tmp_path):
    data, net, model, states, whole = linear_sweep  # the same sweep, run uninterrupted in one chunk
    path = tmp_path / "run.nc"
    kwargs = dict(chunk_size=2, lam=LAMS, scale=[0.5] * 3, seed=[0, 1, 2])  # 6 members, 3 chunks of 2

    def stop_after_first(c):
        raise _Interrupt

    with pytest.raises(_Interrupt):
        fs.sweep(model, net, data, states, t1=T1, ts=TS, path=path, _on_chunk=stop_after_first, **kwargs)
    partial = fs.load(path)
    assert not partial.complete
    assert list(partial.ds["status"].values[:2]) == [0, 0] and (partial.ds["status"].values[2:] == -1).all()

    computed = []
    res = fs.sweep(model, net, data, states, t1=T1, ts=TS, path=path, _on_chunk=computed.append, **kwargs)
    assert computed == [1, 2] and res.complete
    assert fs.load(path).ds.identical(res.ds)
    again = []
    fs.sweep(model, net, data, states, t1=T1, ts=TS, path=path, _on_chunk=again.append, **kwargs)
    assert again == []  # a finished file is not recomputed

    for name in ("rho", "margins", "loss", "rho_eq", "V_1", "V_2"):
        np.testing.assert_allclose(res.ds[name].values, whole.ds[name].values, rtol=0, atol=1e-12, err_msg=name)
    np.testing.assert_array_equal(res.ds["status"].values, whole.ds["status"].values)

    with pytest.raises(fs.ResultFileError, match="different sweep"):
        fs.sweep(model, net, data, states, t1=T1, ts=TS, path=path, chunk_size=2, lam=[0.06])


def test_bad_arguments():
    data, net, model, states = _problem()
    with pytest.raises(fs.InputError, match="`solver`"):
        fs.sweep(model, net, data, states, t1=T1, ts=TS, solver="bdf")
    with pytest.raises(fs.InputError, match="`states`"):
        fs.sweep(model, net, data, [], t1=T1, ts=TS)
    with pytest.raises(fs.InputError, match="`seed`"):
        fs.sweep(model, net, data, states, t1=T1, ts=TS, seed=[1, 2])
    with pytest.raises(fs.InputError, match="`lam`"):
        fs.sweep(model, net, data, states, t1=T1, ts=TS, lam=[-1.0])


_CHILD = """
import json, sys, numpy as np, jax
import flowsim as fs
data = fs.datasets.gaussian_clusters(n=10, dim=3, seed=0)
net = fs.Network((3, 4, 1), "linear")
model = fs.load_model("normalized", lam=1e-2)
states = [model.init(net, seed=k, scale=0.5) for k in range(3)]
res = fs.sweep(model, net, data, states, t1=5.0, ts=np.linspace(0.0, 5.0, 11), lam=[1e-2, 1e-1],
               scale=[0.5] * 3, seed=[0, 1, 2], chunk_size=3, path=sys.argv[1])
print(json.dumps({"devices": len(jax.devices()), "complete": res.complete}))
"""


def test_sharded_over_four_host_devices_matches_one_device(linear_sweep, tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    path = tmp_path / "four.nc"
    out = subprocess.run([sys.executable, "-c", _CHILD, str(path)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info == {"devices": 4, "complete": True}
    four, one = fs.load(path).ds, linear_sweep[-1].ds
    assert four.attrs["chunk_size"] == 4  # rounded up to a multiple of the device count
    for name in ("rho", "margins", "loss", "rho_eq", "V_1", "V_2"):
        np.testing.assert_allclose(four[name].values, one[name].values, rtol=0, atol=1e-10, err_msg=name)
    np.testing.assert_array_equal(four["lam"].values, one["lam"].values)
