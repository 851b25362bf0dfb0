"""Sweep throughput (trajectories per second): fs.sweep against a Python loop of single runs.

Problem: widths (3, 8, 1) ReLU, 20 points, `normalized`, λ = 1e-2, t1 = 5, 11 save times, Tsit5,
smoothing ε = 0.1, rtol 1e-6 / atol 1e-9. Compile once, time warm runs, quote medians.

Baselines, in the same run:
- ``fs.simulate`` in a Python loop (what a user writes; each call builds and compiles its field);
- a warm loop: one jitted single solve (the same ``diffrax_solve``), called once per member.

Usage: ``python benchmarks/bench_sweep.py [--sizes 16 64 256] [--out benchmarks/results/sweep.md]``.
On a GPU, pass ``--sizes 1000 3000 10000``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings

import jax
import numpy as np
from jax.flatten_util import ravel_pytree

import flowsim as fs
from flowsim._model import field
from flowsim._solver._diffrax import diffrax_solve


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--loop", type=int, default=8, help="members in the Python-loop baselines")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message="the initial state is not on average separable")

    data = fs.datasets.gaussian_clusters(n=20, dim=3, seed=0)
    net = fs.Network((3, 8, 1), "relu")
    model = fs.load_model("normalized", lam=1e-2)
    t1, ts, eps = 5.0, np.linspace(0.0, 5.0, 11), 0.1
    opts = dict(solver="tsit5", smoothing=eps)
    all_states = [model.init(net, seed=k, scale=0.5) for k in range(max(args.sizes))]

    rows = []
    # Python loop of fs.simulate (each call compiles its own field: what a user's loop costs).
    loop = all_states[: args.loop]
    t = time.perf_counter()
    for s in loop:
        fs.simulate(model, net, data, s, t1=t1, ts=ts, **opts)
    loop_rate = len(loop) / (time.perf_counter() - t)
    rows.append(("Python loop of fs.simulate", len(loop), "-", loop_rate))

    # Warm loop: one jitted single solve reused for every member.
    z0, unravel = ravel_pytree(all_states[0])
    x, y = jax.numpy.asarray(data.x), jax.numpy.asarray(data.y)
    F = lambda z: ravel_pytree(field(model, net, x, y, unravel(z), eps))[0]  # noqa: E731
    single = jax.jit(lambda z: diffrax_solve(F, z, t1, ts, 1e-6, 1e-9, "tsit5", 200_000).ys)
    zs = [ravel_pytree(s)[0] for s in loop]
    t = time.perf_counter()
    single(zs[0]).block_until_ready()
    compile_single = time.perf_counter() - t
    warm = median_time(lambda: [single(z).block_until_ready() for z in zs], args.repeats)
    warm_rate = len(zs) / warm
    rows.append(("warm loop of one jitted solve", len(zs), f"{compile_single:.2f}", warm_rate))

    for b in args.sizes:
        states = all_states[:b]
        t = time.perf_counter()
        fs.sweep(model, net, data, states, t1=t1, ts=ts, **opts)
        first = time.perf_counter() - t
        warm_sweep = median_time(lambda: fs.sweep(model, net, data, states, t1=t1, ts=ts, **opts), args.repeats)
        rows.append(("fs.sweep, first call (incl. compile)", b, "-", b / first))
        rows.append(("fs.sweep, repeated call (compiled program reused)", b, "-", b / warm_sweep))

    machine = (
        f"{platform.processor() or platform.machine()}, {jax.devices()[0].platform} x {len(jax.devices())}"
        f" ({jax.devices()[0].device_kind}), jax {jax.__version__}"
    )
    lines = [
        "# Sweep throughput",
        "",
        f"Machine: {machine}. Problem: widths (3, 8, 1) ReLU, 20 points, `normalized` λ = 1e-2, t1 = 5, "
        "11 saves, Tsit5, ε = 0.1, rtol 1e-6, atol 1e-9.",
        "",
        "| method | trajectories | compile (s) | trajectories / s | vs fs.simulate loop |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, n, comp, rate in rows:
        lines.append(f"| {name} | {n} | {comp} | {rate:.1f} | {rate / loop_rate:.1f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
