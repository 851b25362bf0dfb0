"""flowsim._solver._sweep: members equal single runs, sweeps resume (also on another number of devices), devices
agree, arguments are validated before any tracing."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowsim as fs
from helpers import assert_input_error, small_problem

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
        np.testing.assert_allclose(
            np.asarray(getattr(m, name)), np.asarray(getattr(traj, name)), rtol=0, atol=tol, err_msg=name
        )
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
        traj = fs.simulate(fs.load_model("normalized", lam=lam), net, data, states[j], t1=T1, ts=TS)
        _assert_member_equals(res, i, traj, 1e-10)
        assert res.trajectory(i).stats == traj.stats.replace(wall_time=res.trajectory(i).stats.wall_time)


@pytest.mark.filterwarnings("ignore:the initial state is not on average separable")
def test_vmapped_members_equal_single_runs_on_a_linear_net(linear_sweep):
    """batching="vmap" (what accelerators use) computes a batched field: equal to round-off on a linear net."""
    data, net, model, states, res = linear_sweep
    vm = fs.sweep(model, net, data, states, t1=T1, ts=TS, lam=LAMS, batching="vmap")
    for name in ("rho", "margins", "V_1", "V_2"):
        np.testing.assert_allclose(vm.ds[name].values, res.ds[name].values, rtol=0, atol=1e-10, err_msg=name)


@pytest.mark.filterwarnings("ignore:the initial state is not on average separable")
def test_per_layer_members_equal_single_runs_and_stacked_states():
    data, net, model, states = _problem(name="unnormalized")
    ts = np.linspace(0.0, 3.0, 7)  # stops before t1: the state at t1 is saved too, as in simulate
    stacked = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *states)
    res = fs.sweep(model, net, data, stacked, t1=4.0, ts=ts)
    assert res.ds.sizes["time"] == 8 and "rho_k" in res.ds
    traj = fs.simulate(model, net, data, states[2], t1=4.0, ts=ts)
    _assert_member_equals(res, 2, traj, 1e-10)


@pytest.mark.filterwarnings("ignore:the initial state is not on average separable")
def test_relu_members_equal_single_runs_at_the_default_settings():
    """On a ReLU net the sliding dynamics amplify any round-off to the solver's accuracy, so equality needs the
    very same program: on a CPU each member runs simulate's (batching "map"), and equals it bitwise."""
    data = fs.datasets.gaussian_clusters(n=32, dim=5, seed=0)
    net = fs.Network((5, 8, 1))
    model = fs.load_model("normalized", lam=1e-2)
    states = [model.init(net, seed=k, scale=0.5) for k in range(3)]
    ts = np.linspace(0.0, 10.0, 21)
    res = fs.sweep(model, net, data, states, t1=10.0, ts=ts)
    for i in range(3):
        traj = fs.simulate(model, net, data, states[i], t1=10.0, ts=ts)
        assert traj.stats.switches > 10 and traj.stats.pinned > 0  # it does cross and slide on kinks
        _assert_member_equals(res, i, traj, 1e-8)
        assert res.trajectory(i).stats.steps == traj.stats.steps


@pytest.mark.filterwarnings("ignore:the initial state is not on average separable")
def test_steady_state_sweep_stops_each_member_as_simulate_does():
    data, net, model, states = _problem()
    res = fs.sweep(model, net, data, states, t1=1e4, ts=TS, steady_state=True, steady_tol=1e-8)
    for i in range(3):
        traj = fs.simulate(model, net, data, states[i], t1=1e4, ts=TS, steady_state=True, steady_tol=1e-8)
        member = res.trajectory(i)
        assert member.stats.status == traj.stats.status == "steady_state"
        assert member.stats.t_final == traj.stats.t_final < 1e4
        _assert_member_equals(res, i, traj, 1e-10)
        # the rows after the stop hold the stopped state
        np.testing.assert_array_equal(res.ds["rho"].values[i, -1], np.asarray(traj.rho[-1]))


@pytest.mark.filterwarnings("ignore:the initial state is not on average separable")
def test_failed_members_raise_or_warn_never_silent():
    data, net, model, states = _problem(activation="relu")
    with pytest.raises(fs.SolveError, match=r"3 of 3 sweep members failed \(3 max_steps\)") as err:
        fs.sweep(model, net, data, states, t1=T1, ts=TS, max_steps=20)
    partial = err.value.partial
    assert isinstance(partial, fs.SweepResult) and (partial.ds["status"].values == 2).all()
    with pytest.warns(UserWarning, match="3 of 3 sweep members failed") as rec:
        res = fs.sweep(model, net, data, states, t1=T1, ts=TS, max_steps=20, throw=False)
    assert "raise max_steps" in str(rec[0].message)
    rho = res.ds["rho"].values
    assert not np.isinf(rho).any() and np.isnan(rho[:, -1]).all()  # unreached rows are NaN, never inf
    assert np.isfinite(rho[:, 0]).all()  # what was reached is kept
    assert res.trajectory(0).stats.failure.startswith("reached max_steps = 20")


class _Interrupt(Exception):
    pass


def _watch_chunks(monkeypatch, stop_after=None):
    """Record the members of each chunk the sweep computes; interrupt after `stop_after` chunks are written."""
    import flowsim._solver._sweep as sweep_module

    computed, fill, write = [], sweep_module._fill, sweep_module.write_atomic

    def watched_fill(ds, out, members, *args):
        computed.append([int(m) for m in members])
        return fill(ds, out, members, *args)

    def watched_write(ds, path):
        write(ds, path)
        if stop_after is not None and len(computed) >= stop_after:
            raise _Interrupt

    monkeypatch.setattr(sweep_module, "_fill", watched_fill)
    monkeypatch.setattr(sweep_module, "write_atomic", watched_write)
    return computed


def test_interrupted_sweep_resumes_without_recomputing(linear_sweep, tmp_path, monkeypatch):
    data, net, model, states, whole = linear_sweep  # the same sweep, run uninterrupted in one chunk
    path = tmp_path / "run.nc"
    kwargs = dict(chunk_size=2, lam=LAMS, scale=[0.5] * 3, seed=[0, 1, 2])  # 6 members, 3 chunks of 2

    with monkeypatch.context() as mp, pytest.raises(_Interrupt):
        _watch_chunks(mp, stop_after=1)
        fs.sweep(model, net, data, states, t1=T1, ts=TS, path=path, **kwargs)
    partial = fs.load(path)
    assert not partial.complete
    assert list(partial.ds["status"].values[:2]) == [0, 0] and (partial.ds["status"].values[2:] == -1).all()

    with monkeypatch.context() as mp:
        computed = _watch_chunks(mp)
        res = fs.sweep(model, net, data, states, t1=T1, ts=TS, path=path, **kwargs)
    assert computed == [[2, 3], [4, 5]] and res.complete
    assert fs.load(path).ds.identical(res.ds)
    with monkeypatch.context() as mp:
        again = _watch_chunks(mp)
        fs.sweep(model, net, data, states, t1=T1, ts=TS, path=path, **kwargs)
    assert again == []  # a finished file is not recomputed

    for name in ("rho", "margins", "loss", "rho_eq", "V_1", "V_2"):
        np.testing.assert_allclose(res.ds[name].values, whole.ds[name].values, rtol=0, atol=1e-12, err_msg=name)
    np.testing.assert_array_equal(res.ds["status"].values, whole.ds["status"].values)

    with pytest.raises(fs.ResultFileError, match="different sweep"):
        fs.sweep(model, net, data, states, t1=T1, ts=TS, path=path, chunk_size=2, lam=[0.06])


_CHILD = """
import json, sys, numpy as np, jax
import flowsim as fs
data = fs.datasets.gaussian_clusters(n=10, dim=3, seed=0)
net = fs.Network((3, 4, 1), "linear")
model = fs.load_model("normalized", lam=1e-2)
states = [model.init(net, seed=k, scale=0.5) for k in range(3)]
import flowsim._solver._sweep as sweep_module
computed, fill = [], sweep_module._fill
def watched(ds, out, members, *a):
    computed.append([int(m) for m in members])
    return fill(ds, out, members, *a)
sweep_module._fill = watched
res = fs.sweep(model, net, data, states, t1=5.0, ts=np.linspace(0.0, 5.0, 11), lam=[1e-2, 1e-1],
               scale=[0.5] * 3, seed=[0, 1, 2], chunk_size=3, path=sys.argv[1])
print(json.dumps({"devices": len(jax.devices()), "complete": res.complete, "computed": computed}))
"""


def test_resumed_on_four_host_devices_matches_one_device(linear_sweep, tmp_path, monkeypatch):
    """A file started on one device (chunks of 3) resumes on four (chunks of 4): the chunking is not part of
    the sweep's identity, only the missing members are computed, and the devices agree."""
    data, net, model, states, one = linear_sweep
    path = tmp_path / "moved.nc"

    with monkeypatch.context() as mp, pytest.raises(_Interrupt):
        _watch_chunks(mp, stop_after=1)
        fs.sweep(
            model,
            net,
            data,
            states,
            t1=T1,
            ts=TS,
            lam=LAMS,
            scale=[0.5] * 3,
            seed=[0, 1, 2],
            chunk_size=3,
            path=path,
        )
    started = fs.load(path).ds
    assert list(started["status"].values) == [0, 0, 0, -1, -1, -1]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info == {"devices": 4, "complete": True, "computed": [[3], [4, 5]]}  # chunks of 4: 0-3 and 4-7
    four = fs.load(path).ds
    assert four.attrs["chunk_size"] == 4  # rounded up to a multiple of the device count
    for name in ("rho", "margins", "loss", "rho_eq", "V_1", "V_2"):
        np.testing.assert_array_equal(four[name].values[:3], started[name].values[:3], err_msg=name)  # kept
        np.testing.assert_allclose(four[name].values, one.ds[name].values, rtol=0, atol=1e-10, err_msg=name)
    np.testing.assert_array_equal(four["lam"].values, one.ds["lam"].values)


@pytest.mark.parametrize(
    "overrides, argument, hint",
    [
        (dict(t1=0.0), "t1", "0.0"),
        (dict(t1=float("nan")), "t1", "nan"),
        (dict(ts=[0.0, 2.0]), "ts", "[0, 2]"),
        (dict(rtol=0.0), "rtol", "0.0"),
        (dict(atol=-1.0), "atol", "-1.0"),
        (dict(states=[]), "states", "[]"),
        (dict(lam=[0.1, -1.0]), "lam", "-1.0"),
        (dict(lam=[float("nan")]), "lam", "nan"),
        (dict(solver="bdf"), "solver", "'bdf'"),
        (dict(seed=[1, 2, 3]), "seed", None),
        (dict(chunk_size=0), "chunk_size", "0"),
        (dict(batching="pmap"), "batching", "'pmap'"),
    ],
)
def test_sweep_rejects_bad_arguments_before_tracing(no_tracing, overrides, argument, hint):
    net, data = small_problem()
    model = fs.load_model("normalized", lam=0.1)
    kwargs = dict(model=model, net=net, data=data, states=[model.init(net, seed=0), model.init(net, seed=1)], t1=1.0)
    kwargs.update(overrides)
    with pytest.raises(fs.FlowsimError) as excinfo:
        fs.sweep(**kwargs)
    assert_input_error(excinfo, argument, hint)


_DISTRIBUTED_CHILD = """
import json, sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address="localhost:" + sys.argv[3], num_processes=2, process_id=int(sys.argv[1]))
import numpy as np
import flowsim as fs
import flowsim._solver._sweep as sweep_module
computed, writes, fill, write = [], [], sweep_module._fill, sweep_module.write_atomic
def watched_fill(ds, out, members, *a):
    computed.extend(int(m) for m in members)
    return fill(ds, out, members, *a)
def watched_write(ds, path):
    writes.append(path)
    return write(ds, path)
sweep_module._fill, sweep_module.write_atomic = watched_fill, watched_write
data = fs.datasets.gaussian_clusters(n=10, dim=3, seed=0)
net = fs.Network((3, 4, 1), "linear")
model = fs.load_model("normalized", lam=1e-2)
states = [model.init(net, seed=k, scale=0.5) for k in range(3)]
res = fs.sweep(model, net, data, states, t1=5.0, ts=np.linspace(0.0, 5.0, 11), lam=[1e-2, 1e-1],
               scale=[0.5] * 3, seed=[0, 1, 2], chunk_size=4, path=sys.argv[2])
print(json.dumps({"process": jax.process_index(), "devices": len(jax.devices()), "computed": computed,
                  "writes": len(writes), "rho": res.ds["rho"].values.tolist()}))
"""


@pytest.mark.slow
def test_two_processes_through_jax_distributed_equal_one(linear_sweep, tmp_path):
    """The multi-host path the README documents, on this machine: two processes (one CPU device each) joined by
    jax.distributed (a localhost coordinator, gloo collectives) share one sweep. Each gets every member's result,
    equal to the single-process sweep; only process 0 writes the file; a rerun resumes and computes nothing."""
    import socket

    data, net, model, states, one = linear_sweep
    path = tmp_path / "two.nc"

    def run_pair():
        with socket.socket() as probe:  # a free port for the coordinator
            probe.bind(("localhost", 0))
            port = str(probe.getsockname()[1])
        env = dict(os.environ, JAX_PLATFORMS="cpu")
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _DISTRIBUTED_CHILD, str(i), str(path), port],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        outs = [p.communicate(timeout=300) for p in procs]
        for p, (out, err) in zip(procs, outs):
            assert p.returncode == 0, err[-3000:]
        return [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]

    first = run_pair()
    assert [r["devices"] for r in first] == [2, 2]
    assert [sorted(r["computed"]) for r in first] == [list(range(6))] * 2  # every process gets every member
    assert first[0]["writes"] >= 1 and first[1]["writes"] == 0  # the file is written once, by process 0
    for r in first:
        np.testing.assert_allclose(np.asarray(r["rho"]), one.ds["rho"].values, rtol=0, atol=1e-12)
    written = fs.load(path)
    assert written.complete
    np.testing.assert_allclose(written.ds["rho"].values, one.ds["rho"].values, rtol=0, atol=1e-12)
    again = run_pair()
    assert [r["computed"] for r in again] == [[], []] and [r["writes"] for r in again] == [0, 0]  # resumed: done
