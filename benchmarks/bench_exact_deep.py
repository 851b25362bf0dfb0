"""The exact flow (``smoothing=0``) with two hidden layers on the stall case: where it leaves the smoothed flow.

Run:  python benchmarks/bench_exact_deep.py [--t1 2] [--rtol 1e-5 1e-6 1e-7 1e-8]
      → benchmarks/results/exact_deep.{md,json}

Problem: the stall case of ``bench_stiff.py`` (5-16-16-1 ReLU, 40 points, ``normalized``, λ = 1e-2, ρ(0) = 0.1).
Its states every 0.05 are compared with the smoothed flow at ε = 1e-8, rtol 1e-10 (cached in
``results/stall_path.npz``; about 2e-7 from ε → 0 at t = 2, and within 3.4e-9 of ``stall_reference.npz`` there).
The error is relative, on the manifold point ``(ρ ∏‖V_k‖, V_k/‖V_k‖)``. A jump in the error marks an event the
exact flow got wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
from bench_stiff import OUT, manifold_point, stall_problem

import flowsim as fs

TS = np.linspace(0.05, 2.0, 40)


def points(tr, n):
    return np.stack([manifold_point(tr.rho[i], [v[i] for v in tr.V]) for i in range(n)])


def reference():
    path = os.path.join(OUT, "stall_path.npz")
    if not os.path.exists(path):
        model, net, data, s0 = stall_problem()
        kw = dict(t1=2.0, ts=TS, smoothing=1e-8, rtol=1e-10, atol=1e-13, max_steps=10**7, progress=False)
        np.savez(path, ts=TS, pts=points(fs.simulate(model, net, data, s0, **kw), len(TS)))
    return np.load(path)["pts"]


def run(model, net, data, s0, t1, rtol):
    """One exact solve (compilation included in its wall time): its stats and its errors at the saves."""
    ts = TS[TS <= t1 + 1e-12]
    t = time.perf_counter()
    try:
        tr = fs.simulate(model, net, data, s0, t1=t1, ts=ts, smoothing=0, rtol=rtol, atol=rtol * 1e-3,
                         max_steps=10**6, progress=False)  # fmt: skip
    except fs.SolveError as failure:  # report how far it went, and why it stopped
        tr = failure.partial
    wall = time.perf_counter() - t
    st = tr.stats
    reached = int(np.sum(ts <= st.t_final))
    err = [float(np.linalg.norm(p - r) / np.linalg.norm(r)) for p, r in zip(points(tr, reached), reference())]
    stats = {k: getattr(st, k) for k in ("status", "t_final", "steps", "rejected_steps", "crossings", "entries",
                                         "exits", "unresolved", "max_pinned", "sliding_time")}  # fmt: skip
    return dict(rtol=rtol, wall=wall, stats=stats, failure=st.failure, error=err)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--t1", type=float, default=2.0)
    parser.add_argument("--rtol", type=float, nargs="+", default=[1e-5, 1e-6, 1e-7, 1e-8])
    args = parser.parse_args()
    problem = stall_problem()
    runs = [run(*problem, args.t1, rtol) for rtol in args.rtol]
    ts = TS[TS <= args.t1 + 1e-12]
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    with open(os.path.join(OUT, "exact_deep.json"), "w") as f:
        json.dump(dict(t1=args.t1, ts=ts.tolist(), machine=machine, runs=runs), f, indent=1)
    keys = list(runs[0]["stats"])
    lines = [
        "# The exact flow with two hidden layers: the stall case against the smoothed flow (ε = 1e-8)",
        "",
        f"`python benchmarks/bench_exact_deep.py --t1 {args.t1:g} --rtol {' '.join(f'{r:g}' for r in args.rtol)}` "
        f"on {machine}. The reference is the smoothed flow at ε = 1e-8, rtol 1e-10: itself ~20 ε = 2e-7 from "
        "ε → 0 (the rate measured with one hidden layer), so errors below ~2e-7 are the reference's.",
        "",
        "| rtol | wall (s, with compilation) | " + " | ".join(keys) + " |",
        "|---" * (len(keys) + 2) + "|",
        *[f"| {r['rtol']:g} | {r['wall']:.0f} | " + " | ".join(
            f"{v:.3g}" if isinstance(v, float) else f"{v}" for v in r["stats"].values()) + " |" for r in runs],
        *[f"\nrtol {r['rtol']:g} stopped: {r['failure']}." for r in runs if r["failure"]],
        "",
        "| t | " + " | ".join(f"error, rtol {r['rtol']:g}" for r in runs) + " |",
        "|---" * (len(runs) + 1) + "|",
        *[f"| {t_:.2f} | " + " | ".join(f"{r['error'][i]:.2e}" if i < len(r["error"]) else "" for r in runs) + " |"
          for i, t_ in enumerate(ts)],
    ]  # fmt: skip
    with open(os.path.join(OUT, "exact_deep.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
