"""The exact flow (``smoothing=0``) with two hidden layers on the stall case: where it leaves the smoothed flow.

Run:  python benchmarks/bench_exact_deep.py [--t1 0.9] [--rtol 1e-6]   → benchmarks/results/exact_deep.{md,json}

Problem: the stall case of ``bench_stiff.py`` (5-16-16-1 ReLU, 40 points, ``normalized``, λ = 1e-2, ρ(0) = 0.1).
The deep exact path is not offered to users yet (``_options.DEEP_EXACT``); this switches it on. Its states every
0.05 are compared with the smoothed flow at ε = 1e-8, rtol 1e-10 (cached in ``results/stall_path.npz``; about
2e-7 from ε → 0 at t = 2, and within 3.4e-9 of ``stall_reference.npz`` there). The error is relative, on the
manifold point ``(ρ ∏‖V_k‖, V_k/‖V_k‖)``. A jump in the error marks an event the exact flow got wrong.
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
from flowsim._solver import _options

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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--t1", type=float, default=0.9)
    parser.add_argument("--rtol", type=float, default=1e-6)
    args = parser.parse_args()
    ref = reference()
    _options.DEEP_EXACT = True
    model, net, data, s0 = stall_problem()
    ts = TS[TS <= args.t1 + 1e-12]
    t = time.perf_counter()
    try:
        tr = fs.simulate(model, net, data, s0, t1=args.t1, ts=ts, smoothing=0, rtol=args.rtol,
                         atol=args.rtol * 1e-3, max_steps=10**6, progress=False)  # fmt: skip
    except fs.SolveError as failure:  # report how far it went, and why it stopped
        tr = failure.partial
    wall = time.perf_counter() - t  # compilation included
    st = tr.stats
    reached = int(np.sum(ts <= st.t_final))
    pts = points(tr, reached)
    err = [float(np.linalg.norm(p - r) / np.linalg.norm(r)) for p, r in zip(pts, ref)]
    stats = {k: getattr(st, k) for k in ("status", "t_final", "steps", "rejected_steps", "crossings", "entries",
                                         "exits", "unresolved", "max_pinned", "sliding_time")}  # fmt: skip
    res = dict(t1=args.t1, rtol=args.rtol, wall=wall, stats=stats, ts=ts[:reached].tolist(), error=err,
               machine=f"{platform.machine()}, {os.cpu_count()} cores")  # fmt: skip
    with open(os.path.join(OUT, "exact_deep.json"), "w") as f:
        json.dump(res, f, indent=1)
    lines = [
        "# The exact flow with two hidden layers: the stall case against the smoothed flow (ε = 1e-8)",
        "",
        f"`python benchmarks/bench_exact_deep.py --t1 {args.t1} --rtol {args.rtol}` on {res['machine']}: "
        f"{wall:.0f} s with compilation; "
        + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items())
        + ".",  # fmt: skip
        *([] if st.failure is None else ["", f"It stopped: {st.failure}."]),
        "",
        "| t | relative error |",
        "|---|---|",
        *[f"| {t_:.2f} | {e:.2e} |" for t_, e in zip(ts, err)],
    ]
    with open(os.path.join(OUT, "exact_deep.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
