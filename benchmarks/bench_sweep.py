"""Sweep throughput and accuracy: fs.sweep against a loop of fs.simulate calls, in one run.

CPU (the default): the stall case (widths 5-16-16-1 ReLU, 40 points, `normalized`, λ = 1e-2, ρ(0) = 0.1),
members from seeds 0..M-1, t1 = 2, default settings (RosenbrockW, ε = 1e-5). The sweep runs on as many host
devices as cores (``--xla_force_host_platform_device_count``, set here before JAX starts), one member after the
other on each (batching "map"), so each member is the very program ``simulate`` runs: checked member by member.

    python benchmarks/bench_sweep.py [--members 64] [--loop 8] [--out benchmarks/results/sweep.md]

GPU (``--gpu``): members of a smaller ReLU problem (widths 5-16-1, 40 points) to t1 = 5, vmapped on one device
(batching "vmap"), for each of ``--sizes`` (default 1000 3000 10000): throughput, and accuracy against
single-member ``simulate`` runs of the first members (on the GPU too) and against a tight solve (rtol 1e-10).

    python benchmarks/bench_sweep.py --gpu --out benchmarks/results/sweep_gpu.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if "--gpu" not in sys.argv and "XLA_FLAGS" not in os.environ:  # one host device per core, before JAX starts
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={os.cpu_count()}"

import platform  # noqa: E402
import warnings  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

import flowsim as fs  # noqa: E402

warnings.filterwarnings("ignore", message="the initial state is not on average separable")


def points(tr):
    """Every save's (ρ, V) as rows."""
    return np.concatenate([np.asarray(tr.rho)[:, None]] + [np.asarray(v).reshape(len(tr), -1) for v in tr.V], axis=1)


def largest_difference(res, runs):
    return max(float(np.max(np.abs(points(res.trajectory(i)) - points(r)))) for i, r in enumerate(runs))


def cpu(args):
    data = fs.datasets.gaussian_clusters(n=40, dim=5, seed=0)
    net = fs.Network((5, 16, 16, 1))
    model = fs.load_model("normalized", lam=1e-2)
    states = [model.init(net, seed=k, scale=0.1) for k in range(args.members)]
    ts = np.linspace(0.0, 2.0, 21)
    short = np.linspace(0.0, 0.01, len(ts))  # the save grid's length is a compile-time setting
    fs.simulate(model, net, data, states[0], t1=0.01, ts=short, progress=False)  # compile simulate
    t = time.perf_counter()
    singles = [fs.simulate(model, net, data, s, t1=2.0, ts=ts, progress=False) for s in states[: args.loop]]
    loop_rate = args.loop / (time.perf_counter() - t)
    fs.sweep(model, net, data, states, t1=0.01, ts=short)  # compile the sweep program (its batch size too)
    t = time.perf_counter()
    res = fs.sweep(model, net, data, states, t1=2.0, ts=ts)
    sweep_time = time.perf_counter() - t
    diff = largest_difference(res, singles)
    devices = jax.devices()
    lines = [
        "# Sweep throughput (CPU)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {len(devices)} host devices, jax {jax.__version__}; "
        f"run {time.strftime('%Y-%m-%d')} with "
        f"`python benchmarks/bench_sweep.py --members {args.members} --loop {args.loop}`.",
        "",
        "Problem: the stall case (5-16-16-1 ReLU, 40 points, `normalized`, λ = 1e-2, ρ(0) = 0.1), seeds "
        f"0..{args.members - 1}, t1 = 2, 21 saves, default settings (RosenbrockW, ε = 1e-5, rtol 1e-6).",
        "",
        "| method | members | wall (s) | members / s | vs the simulate loop |",
        "|---|---:|---:|---:|---:|",
        f"| loop of `fs.simulate` (warm) | {args.loop} | {args.loop / loop_rate:.1f} | {loop_rate:.3f} | 1.0× |",
        f'| `fs.sweep` ({len(devices)} host devices, batching "map") | {args.members} | {sweep_time:.1f} | '
        f"{args.members / sweep_time:.3f} | {args.members / sweep_time / loop_rate:.2f}× |",
        "",
        f"Members 0..{args.loop - 1} against their `simulate` runs: largest difference in (ρ, V) over all saves "
        f"{diff:.1e} (each member runs simulate's program).",
        "",
    ]
    return lines


def gpu(args):
    data = fs.datasets.gaussian_clusters(n=40, dim=5, seed=0)
    net = fs.Network((5, 16, 1))
    model = fs.load_model("normalized", lam=1e-2)
    ts = np.linspace(0.0, 5.0, 11)
    checks = 4
    exact = [
        fs.simulate(
            model, net, data, model.init(net, seed=k, scale=0.5), t1=5.0, ts=ts, rtol=1e-10, atol=1e-13, progress=False
        )
        for k in range(checks)
    ]
    singles = [
        fs.simulate(model, net, data, model.init(net, seed=k, scale=0.5), t1=5.0, ts=ts, progress=False)
        for k in range(checks)
    ]
    rows = []
    for size in args.sizes:
        states = [model.init(net, seed=k, scale=0.5) for k in range(size)]
        t = time.perf_counter()
        fs.sweep(model, net, data, states, t1=5.0, ts=ts, batching="vmap")
        first = time.perf_counter() - t
        t = time.perf_counter()
        res = fs.sweep(model, net, data, states, t1=5.0, ts=ts, batching="vmap")
        warm = time.perf_counter() - t
        vs_single, vs_exact = largest_difference(res, singles), largest_difference(res, exact)
        failed = int(np.sum(res.ds["status"].values >= 2))
        rows.append((size, first, warm, vs_single, vs_exact, failed))
        print(rows[-1], flush=True)
    lines = [
        "# Sweep throughput (GPU)",
        "",
        f"Machine: {jax.devices()[0].device_kind}, jax {jax.__version__}; run {time.strftime('%Y-%m-%d')} with "
        "`python benchmarks/bench_sweep.py --gpu`.",
        "",
        "Problem: 5-16-1 ReLU, 40 points, `normalized`, λ = 1e-2, ρ(0) = 0.5, t1 = 5, 11 saves, default settings, "
        'batching "vmap".',
        "",
        "| members | first call (s) | warm (s) | members / s | vs single simulate runs | vs rtol 1e-10 | failed |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size, first, warm, vs_single, vs_exact, failed in rows:
        lines.append(
            f"| {size} | {first:.1f} | {warm:.1f} | {size / warm:.0f} | {vs_single:.1e} | {vs_exact:.1e} | {failed} |"
        )
    return lines + [""]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--members", type=int, default=64)
    ap.add_argument("--loop", type=int, default=8)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 10000])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    text = "\n".join(gpu(args) if args.gpu else cpu(args))
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
