"""The exact flow (``smoothing=0``) on a one-hidden-layer net: accuracy against rtol, the smoothed flows' distance
to it, compiled Euler on the raw field, and the cost to steady state against the smoothed default.

Run:  python benchmarks/bench_exact.py [--members 8]   → benchmarks/results/exact.{md,json}

Problem: the separated clusters of ``flowsim reproduce``'s experiment 10 (90 points, a third held out), widths
5-16-1; starts ``model.init(net, seed=s, scale=0.5)``.

1. ``normalized``, λ = 1e-2, seed 3, to t = 2 (hundreds of kinks crossed, sliding on up to 4): the exact flow at
   rtol 1e-5 … 1e-9 against itself at rtol 1e-10; the smoothed flows at ε = 1e-5 … 1e-7 (rtol 1e-10) against
   the same reference; compiled Euler GD on the raw field (σ′ = 1[z > 0], a ``lax.scan``, each step put back
   on the spheres) at 2e3 … 2e5 steps. Warm wall times, median of 3.
2. The three regimes of experiment 10, `--members` starts each, to steady state (t1 = 100, steady-state test
   1e-9, rtol 1e-5 as experiment 10 runs them): warm ``simulate`` time per member, exact against the smoothed
   default (ε = 1e-5), and how far their final ρ lie apart.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from threadpoolctl import threadpool_limits

import flowsim as fs
from flowsim._experiments._common import STEADY_TOL, separated

warnings.filterwarnings("ignore", message="the initial state is not on average separable")
OUT = os.path.join(os.path.dirname(__file__), "results")
T1 = 2.0


def problem():
    (train, _), net = separated(90, 0).split(1 / 3, seed=0), fs.Network((5, 16, 1))
    return net, train


def flat(state) -> np.ndarray:
    return np.asarray(ravel_pytree(state)[0])


def timed(fn, repeats=3):
    out = fn()  # compiles
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, float(np.median(times))


def accuracy(net, data):
    model = fs.load_model("normalized", lam=1e-2)
    s0 = model.init(net, seed=3, scale=0.5)
    run = functools.partial(fs.simulate, model, net, data, s0, t1=T1, ts=[0.0, T1], progress=False)
    ref = run(smoothing=0, rtol=1e-10, atol=1e-13)
    z_ref = flat(ref.final)
    rows = {"exact": [], "smoothed": [], "euler": []}
    for rtol in (1e-5, 1e-6, 1e-7, 1e-8, 1e-9):
        tr, wall = timed(lambda rtol=rtol: run(smoothing=0, rtol=rtol, atol=rtol * 1e-3))
        st = tr.stats
        rows["exact"].append(dict(rtol=rtol, error=float(np.max(np.abs(flat(tr.final) - z_ref))), wall=wall,
                                  steps=st.steps, rejected=st.rejected_steps, jacobians=st.jacobians,
                                  events=st.crossings + st.entries + st.exits))  # fmt: skip
    for eps in (1e-5, 1e-6, 1e-7):
        tr = run(smoothing=eps, rtol=1e-10, atol=1e-13, max_steps=10**6)
        rows["smoothed"].append(dict(eps=eps, error=float(np.max(np.abs(flat(tr.final) - z_ref)))))
    default, wall = timed(lambda: run())
    rows["default"] = dict(error=float(np.max(np.abs(flat(default.final) - z_ref))), wall=wall,
                           steps=default.stats.steps)  # fmt: skip

    F = model.vector_field(net, data, smoothing=None)
    z0, unravel = ravel_pytree(s0)

    @functools.partial(jax.jit, static_argnums=1)
    def euler(z, n):
        def step(z, _):
            s = unravel(z + (T1 / n) * ravel_pytree(F(0.0, unravel(z)))[0])
            V = tuple(v / jnp.linalg.norm(v) for v in s.V)
            return ravel_pytree(fs.State(V, s.rho, s.rho_k))[0], None

        return jax.lax.scan(step, z, None, length=n)[0]

    for n in (2_000, 20_000, 200_000):
        z, wall = timed(lambda n=n: np.asarray(euler(z0, n)))
        rows["euler"].append(dict(steps=n, error=float(np.max(np.abs(z - z_ref))), wall=wall))
    rows["reference_stats"] = {k: ref.stats[k] for k in ("crossings", "entries", "exits", "max_pinned", "steps")}
    return rows


def steady(net, data, members):
    out = []
    for name, lam in (("normalized", 1e-2), ("normalized", 0.0), ("unnormalized", 0.0)):
        model = fs.load_model(name, lam=lam)
        kw = dict(t1=100.0, ts=[0.0, 100.0], steady_state=True, steady_tol=STEADY_TOL, rtol=1e-5, progress=False)
        walls = {"exact": [], "smoothed": []}
        drho, events, unresolved, steps = [], [], [], {"exact": [], "smoothed": []}
        for seed in range(members):
            s0 = model.init(net, seed=seed, scale=0.5)
            ex, w_ex = timed(lambda s0=s0: fs.simulate(model, net, data, s0, smoothing=0, **kw), repeats=1)
            sm, w_sm = timed(lambda s0=s0: fs.simulate(model, net, data, s0, **kw), repeats=1)
            walls["exact"].append(w_ex)
            walls["smoothed"].append(w_sm)
            steps["exact"].append(ex.stats.steps)
            steps["smoothed"].append(sm.stats.steps)
            events.append(ex.stats.crossings + ex.stats.entries + ex.stats.exits)
            unresolved.append(ex.stats.unresolved)
            drho.append(abs(float(ex.rho[-1]) / float(sm.rho[-1]) - 1))
        med = {k: float(np.median(v)) for k, v in (*walls.items(), ("events", events))}
        out.append(dict(model=name, lam=lam, members=members, wall_exact=med["exact"], wall_smoothed=med["smoothed"],
                        steps_exact=float(np.median(steps["exact"])),
                        steps_smoothed=float(np.median(steps["smoothed"])),
                        events=med["events"], max_rel_drho=float(np.max(drho)),
                        n_drho_over_1e3=int(np.sum(np.asarray(drho) > 1e-3)), unresolved=int(np.sum(unresolved)),
                        members_unresolved=int(np.count_nonzero(unresolved))))  # fmt: skip
        print(out[-1], flush=True)
    return out


def write(acc, st, args):
    lines = [
        "# The exact flow (`smoothing=0`), one hidden layer",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}; run "
        f"{time.strftime('%Y-%m-%d')} with `python benchmarks/bench_exact.py --members {args.members}`.",
        "",
        "Problem: experiment 10's separated clusters (60 training points), widths 5-16-1. Warm wall times "
        "(compilation excluded), one process.",
        "",
        "## 1. Accuracy to t = 2 (`normalized`, λ = 1e-2, seed 3)",
        "",
        f"Reference: the exact flow at rtol 1e-10 ({acc['reference_stats']['crossings']} crossings, "
        f"{acc['reference_stats']['entries']} entries into sliding, {acc['reference_stats']['exits']} exits, up to "
        f"{acc['reference_stats']['max_pinned']} pre-activations sliding at once). Error: the largest difference "
        "in the flat state (ρ, V) at t = 2.",
        "",
        "| solve | error | wall (s) | steps | events |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in acc["exact"]:
        lines.append(
            f"| exact, rtol {r['rtol']:g} | {r['error']:.1e} | {r['wall']:.3f} | {r['steps']} | {r['events']} |"
        )
    d = acc["default"]
    lines.append(f"| smoothed default (ε = 1e-5, rtol 1e-6) | {d['error']:.1e} | {d['wall']:.3f} | {d['steps']} | |")
    for r in acc["euler"]:
        lines.append(f"| Euler GD on the raw field, {r['steps']} steps | {r['error']:.1e} | {r['wall']:.3f} | "
                     f"{r['steps']} | |")  # fmt: skip
    lines += ["", "The smoothed flows against the exact one (rtol 1e-10 each):", "",
              "| ε | error | error / ε |", "|---:|---:|---:|"]  # fmt: skip
    for r in acc["smoothed"]:
        lines.append(f"| {r['eps']:g} | {r['error']:.1e} | {r['error'] / r['eps']:.0f} |")
    lines += [
        "",
        "## 2. To steady state, the three regimes of experiment 10",
        "",
        f"t1 = 100, steady-state test {STEADY_TOL:g}, rtol 1e-5 (experiment 10's settings); medians over the "
        "members; unresolved: events whose mode the selection loops left unresolved (`RunStats.unresolved`), in all "
        "(in how many members).",
        "",
        "| model | λ | members | exact (s) | smoothed ε = 1e-5 (s) | exact / smoothed | steps exact / smoothed "
        "| events | unresolved | members whose final ρ differ by > 1e-3 | largest difference |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in st:
        lines.append(
            f"| {r['model']} | {r['lam']:g} | {r['members']} | {r['wall_exact']:.2f} | {r['wall_smoothed']:.2f} | "
            f"{r['wall_exact'] / r['wall_smoothed']:.2f} | {r['steps_exact']:.0f} / {r['steps_smoothed']:.0f} | "
            f"{r['events']:.0f} | {r['unresolved']} ({r['members_unresolved']}) | {r['n_drho_over_1e3']} | "
            f"{r['max_rel_drho']:.1e} |"
        )
    with open(os.path.join(OUT, "exact.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(OUT, "exact.json"), "w") as f:
        json.dump({"accuracy": acc, "steady": st}, f, indent=1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--members", type=int, default=8)
    args = p.parse_args()
    net, data = problem()
    with threadpool_limits(1, "blas"):
        acc = accuracy(net, data)
        print(json.dumps(acc, indent=1), flush=True)
        st = steady(net, data, args.members)
    write(acc, st, args)


if __name__ == "__main__":
    main()
