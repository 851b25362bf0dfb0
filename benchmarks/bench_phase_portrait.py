"""Benchmark of the phase portraits (issue 6): ensembles of planar trajectories, and whole figures.

Targets: 256 trajectories of a 2-D model in one vmapped call under 2 s after compilation, and a whole figure
under 30 s including compilation.

Measured, for each reduction (``normalized`` one linear layer λ = 5; ``unnormalized`` scalar chain λ = 0):

- compile + first call, then the median of warm calls of the vmapped diffrax Tsit5 ensemble (256 starts);
- baselines run beside it: the same compiled single-trajectory diffrax solve in a Python loop, and scipy
  ``solve_ivp`` (DOP853 and LSODA) driven by the same jitted field, with the same tolerances;
- work-precision: wall time and end-point error against a tight reference (Tsit5, rtol 1e-13);
- whole figures (`fs.plot.phase_portrait`, 256 trajectories, savefig), each in a fresh Python process so
  that the time includes the import, the sympy derivation and every compilation.

Run: ``python benchmarks/bench_phase_portrait.py [--quick]``; writes ``benchmarks/results/phase_portrait.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from scipy.integrate import solve_ivp

import flowsim as fs
from flowsim._analysis import _kernel, _vmapped

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "phase_portrait.md"
CASES = [("normalized", 5.0), ("unnormalized", 0.0)]
N_TRAJ = 256


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def ensemble_case(name, lam, repeats, n_scipy):
    red = fs.plot.reduced_model(fs.load_model(name, lam=lam))
    z0 = red.grid(N_TRAJ)
    t1 = red.time_scale()
    ts = np.concatenate([[0.0], np.geomspace(1e-4 * t1, t1, 299)])
    rows = {}
    tol = dict(rtol=1e-8, atol=1e-10)

    # the vmapped ensemble: first call (compile) and warm calls
    run = _vmapped.ensemble_fn(red.kernel, tol["rtol"], tol["atol"], 16384)
    args = (jnp.asarray(z0), jnp.asarray(ts), red.params)
    t0 = time.perf_counter()
    ys, ok, steps = jax.block_until_ready(run(*args))
    first = time.perf_counter() - t0
    warm, _ = median_time(lambda: jax.block_until_ready(run(*args)), repeats)
    rows["vmapped"] = dict(
        first=first, warm=warm, ok=bool(np.all(ok)), steps_mean=float(np.mean(steps)), steps_max=int(np.max(steps))
    )
    ends = np.asarray(ys)[:, -1]

    # baseline 1: one compiled single-trajectory solve, called in a Python loop
    term = diffrax.ODETerm(lambda t, z, p: _kernel.field(red.kernel, z, p))

    @jax.jit
    def single(z, ts, p):
        sol = diffrax.diffeqsolve(
            term,
            diffrax.Tsit5(),
            ts[0],
            ts[-1],
            None,
            z,
            args=p,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(**tol),
            max_steps=16384,
            throw=False,
        )
        return sol.ys

    starts = list(args[0])  # slice once, outside the timing
    loop_once = lambda: [jax.block_until_ready(single(z, args[1], red.params)) for z in starts]  # noqa: E731
    loop_once()  # compile and warm up
    loop, _ = median_time(loop_once, repeats)
    rows["python loop of compiled single solves"] = dict(warm=loop)

    # baseline 2: scipy solve_ivp on the same jitted field (n_scipy trajectories, scaled to 256)
    f1 = jax.jit(lambda z: _kernel.field(red.kernel, z, red.params))
    jax.block_until_ready(f1(jnp.asarray(z0[0])))
    fnp = lambda t, z: np.asarray(f1(jnp.asarray(z)))  # noqa: E731
    for method in ("DOP853", "LSODA"):
        t0 = time.perf_counter()
        errs = []
        for i in range(n_scipy):
            sol = solve_ivp(fnp, (0.0, t1), z0[i], method=method, rtol=tol["rtol"], atol=tol["atol"])
            errs.append(np.max(np.abs(sol.y[:, -1] - ends[i])))
        dt = time.perf_counter() - t0
        rows[f"scipy solve_ivp {method} (jitted field)"] = dict(
            warm=dt * N_TRAJ / n_scipy, measured_on=n_scipy, agree=float(np.max(errs))
        )

    # work-precision against a tight reference
    ref_run = _vmapped.ensemble_fn(red.kernel, 1e-13, 1e-15, 1_000_000)
    ref = np.asarray(jax.block_until_ready(ref_run(*args))[0])[:, -1]
    wp = []
    for rtol in (1e-4, 1e-6, 1e-8, 1e-10):
        r = _vmapped.ensemble_fn(red.kernel, rtol, rtol * 1e-2, 100_000)
        jax.block_until_ready(r(*args))
        w, _ = median_time(lambda: jax.block_until_ready(r(*args)), repeats)
        err = float(np.max(np.abs(np.asarray(r(*args)[0])[:, -1] - ref)))
        wp.append((rtol, w, err))
    return red, t1, rows, wp


FIGURE_SCRIPT = """
import time, sys
t0 = time.perf_counter()
import flowsim as fs
t_import = time.perf_counter() - t0
fig = fs.plot.phase_portrait(fs.load_model(sys.argv[1], lam=float(sys.argv[2])), n_trajectories=256)
fig.savefig(sys.argv[3], dpi=150)
print(t_import, time.perf_counter() - t0)
"""


def figure_case(name, lam, tmp):
    out = Path(tmp) / f"{name}_{lam:g}.png"
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-c", FIGURE_SCRIPT, name, str(lam), str(out)], capture_output=True, text=True, check=True
    )
    wall = time.perf_counter() - t0
    t_import, t_total = map(float, res.stdout.split()[-2:])
    return dict(process=wall, imported=t_import, in_process=t_total)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repeats")
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args()
    repeats = 3 if a.quick else 7
    n_scipy = 8 if a.quick else 32

    lines = ["# Phase portraits: benchmark", ""]
    lines += [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
        f"JAX {jax.__version__} on {jax.devices()[0].platform}, diffrax {diffrax.__version__}, "
        f"Python {platform.python_version()}, load average at start {os.getloadavg()[0]:.1f} "
        "(the machine is shared: wall times include contention). Float64. Command: "
        f"`python benchmarks/bench_phase_portrait.py"
        f"{' --quick' if a.quick else ''}`; medians of {repeats} warm calls.",
        "",
    ]
    lines += [
        "Targets (issue 6): 256 trajectories of a 2-D model in one vmapped call **< 2 s** after compilation; "
        "a whole figure **< 30 s** including compilation.",
        "",
    ]
    for name, lam in CASES:
        red, t1, rows, wp = ensemble_case(name, lam, repeats, n_scipy)
        lines += [
            f"## Ensemble: `{name}`, λ = {lam:g} ({red.kind} reduction, default data N = {red.data.n}), "
            f"{N_TRAJ} trajectories to t1 = {t1:.3g}, 300 saves, Tsit5 rtol 1e-8 atol 1e-10",
            "",
        ]
        v = rows["vmapped"]
        lines += ["| method | wall time for 256 trajectories | ratio to vmapped | notes |", "|---|---|---|---|"]
        lines.append(
            f"| **one vmapped, jitted diffrax call** | **{v['warm'] * 1e3:.1f} ms** (first call incl. "
            f"compile {v['first']:.2f} s) | 1 | all succeeded: {v['ok']}; steps mean {v['steps_mean']:.0f}, "
            f"max {v['steps_max']} |"
        )
        for k, r in rows.items():
            if k == "vmapped":
                continue
            note = ""
            if "measured_on" in r:
                note = f"measured on {r['measured_on']} trajectories, scaled; end points agree to {r['agree']:.1e}"
            lines.append(f"| {k} | {r['warm'] * 1e3:.0f} ms | {r['warm'] / v['warm']:.0f}× | {note} |")
        lines += [
            "",
            "Work-precision (vmapped Tsit5, atol = rtol·1e-2; error = max end-point error over the 256 "
            "trajectories against rtol 1e-13):",
            "",
            "| rtol | warm wall time | max error |",
            "|---|---|---|",
        ]
        for rtol, w, err in wp:
            lines.append(f"| {rtol:.0e} | {w * 1e3:.1f} ms | {err:.1e} |")
        lines.append("")
        print(f"{name}: vmapped warm {v['warm'] * 1e3:.1f} ms, first {v['first']:.2f} s", flush=True)

    lines += [
        "## Whole figures (fresh process each: import + sympy + compile + 256 trajectories + savefig)",
        "",
        "| model | λ | total in process | of which `import flowsim` | process wall time |",
        "|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name, lam in [("normalized", 0.0), ("normalized", 5.0), ("unnormalized", 0.0), ("unnormalized", 8.0)]:
            r = figure_case(name, lam, tmp)
            lines.append(
                f"| {name} | {lam:g} | **{r['in_process']:.1f} s** | {r['imported']:.1f} s | {r['process']:.1f} s |"
            )
            print(f"figure {name} {lam}: {r['in_process']:.1f} s", flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines += ["", f"Peak resident memory of the benchmark process: {rss:.0f} MiB.", ""]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(lines))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
