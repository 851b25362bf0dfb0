"""The exact flow (``smoothing=0``) with two hidden layers on the stall case: its accuracy and its cost.

Run:  python benchmarks/bench_exact_deep.py [--t1 2] [--rtol 1e-5 1e-6 1e-7 1e-8]
      → benchmarks/results/exact_deep.{md,json}

Problem: the stall case of ``bench_stiff.py`` (5-16-16-1 ReLU, 40 points, ``normalized``, λ = 1e-2, ρ(0) = 0.1).
Its states every 0.05 are compared with the tightest reference there is: the exact flow at rtol 1e-10. That
reference is checked first against the smoothed flows at ε = 1e-6, 1e-7, 1e-8 (rtol 1e-10): their distance to it
must fall with ε, as ≈ 20 ε. All four paths are cached in ``results/stall_paths.npz`` (delete it to recompute;
about 25 minutes). The error is relative, on the manifold point ``(ρ ∏‖V_k‖, V_k/‖V_k‖)``; a jump in it marks an
event the run placed coarsely.

Each rtol is compiled first (a run to t = 1e-6, timed), then timed warm.
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
PATHS = os.path.join(OUT, "stall_paths.npz")
# The reference (exact, rtol 1e-10) and the smoothed flows that check it; rtol 1e-10 for all.
REFERENCES = {
    "exact": dict(smoothing=0, rtol=1e-10, atol=1e-13, max_steps=10**6),
    **{f"eps {eps:g}": dict(smoothing=eps, rtol=1e-10, atol=1e-13, max_steps=10**7) for eps in (1e-6, 1e-7, 1e-8)},
}


def points(tr, n):
    return np.stack([manifold_point(tr.rho[i], [v[i] for v in tr.V]) for i in range(n)])


def paths() -> dict:
    """The reference paths at `TS`, computed where the cache lacks them."""
    cached = dict(np.load(PATHS)) if os.path.exists(PATHS) else {}
    missing = [name for name in REFERENCES if name not in cached]
    for name in missing:
        model, net, data, s0 = stall_problem()
        tr = fs.simulate(model, net, data, s0, t1=2.0, ts=TS, progress=False, **REFERENCES[name])
        cached[name] = points(tr, len(TS))
    if missing:
        np.savez(PATHS, **cached)
    return cached


def errors(pts, ref):
    return [float(np.linalg.norm(p - r) / np.linalg.norm(r)) for p, r in zip(pts, ref)]


def run(model, net, data, s0, t1, rtol, ref):
    """One exact solve, compiled first: compilation and run times, its stats, and its errors at the saves."""
    ts = TS[TS <= t1 + 1e-12]
    kw = dict(smoothing=0, rtol=rtol, atol=rtol * 1e-3, max_steps=10**6, progress=False)
    t = time.perf_counter()
    fs.simulate(model, net, data, s0, t1=1e-6, ts=ts * (1e-6 / t1), **kw)  # the same program: ts of one shape
    first = time.perf_counter() - t
    t = time.perf_counter()
    try:
        tr = fs.simulate(model, net, data, s0, t1=t1, ts=ts, **kw)
    except fs.SolveError as failure:  # report how far it went, and why it stopped
        tr = failure.partial
    wall = time.perf_counter() - t
    st = tr.stats
    reached = int(np.sum(ts <= st.t_final))
    stats = {k: getattr(st, k) for k in ("status", "t_final", "steps", "rejected_steps", "crossings", "entries",
                                         "exits", "unresolved", "max_pinned", "sliding_time")}  # fmt: skip
    return dict(rtol=rtol, compile=first, wall=wall, stats=stats, failure=st.failure,
                error=errors(points(tr, reached), ref))  # fmt: skip


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--t1", type=float, default=2.0)
    parser.add_argument("--rtol", type=float, nargs="+", default=[1e-5, 1e-6, 1e-7, 1e-8])
    args = parser.parse_args()
    ref = paths()
    checks = {name: errors(ref[name], ref["exact"]) for name in REFERENCES if name != "exact"}
    problem = stall_problem()
    runs = [run(*problem, args.t1, rtol, ref["exact"]) for rtol in args.rtol]
    ts = TS[TS <= args.t1 + 1e-12]
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    with open(os.path.join(OUT, "exact_deep.json"), "w") as f:
        json.dump(dict(t1=args.t1, ts=ts.tolist(), machine=machine, reference_checks=checks, runs=runs), f, indent=1)
    keys = list(runs[0]["stats"])
    lines = [
        "# The exact flow with two hidden layers: the stall case against the exact flow at rtol 1e-10",
        "",
        f"`python benchmarks/bench_exact_deep.py --t1 {args.t1:g} --rtol {' '.join(f'{r:g}' for r in args.rtol)}` "
        f"on {machine}, one process.",
        "",
        "## The reference, checked: the smoothed flows (rtol 1e-10) against it",
        "",
        "| ε | largest error over the saves | median | at t = 2 | at t = 2, over ε |",
        "|---|---|---|---|---|",
        *[f"| {name[4:]} | {max(e):.2e} | {np.median(e):.2e} | {e[-1]:.2e} | {e[-1] / float(name[4:]):.0f} |"
          for name, e in checks.items()],
        "",
        "## The exact flow against it",
        "",
        "Compilation: the first call (a run to t = 1e-6); run: a second call, to t = "
        f"{args.t1:g}.",
        "",
        "| rtol | compilation (s) | run (s) | largest error | at t = 2 | " + " | ".join(keys) + " |",
        "|---" * (len(keys) + 5) + "|",
        *[f"| {r['rtol']:g} | {r['compile']:.0f} | {r['wall']:.0f} | {max(r['error']):.2e} | {r['error'][-1]:.2e} | "
          + " | ".join(f"{v:.3g}" if isinstance(v, float) else f"{v}" for v in r["stats"].values()) + " |"
          for r in runs],
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
