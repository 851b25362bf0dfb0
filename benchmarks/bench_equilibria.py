"""The stall case's end states (issue 15, question 6): how far apart are the smoothed steady states, and is their
spread a drift along a continuum of equilibria?

Run:  python benchmarks/bench_equilibria.py [--lam 0.01] [--eps 1e-5,1e-6]
      → benchmarks/results/equilibria.{md,json}

1. The stall case (5-16-16-1, 40 points, ``normalized``, ρ(0) = 0.1) integrated to steady state with the
   smoothed field at each ε (rtol 1e-6, steady-state test 1e-7): the end states' distances in the parameters,
   in ρ and in the margins.
2. At each end state x_ε: the pre-activations within 10 ε of zero (relative to the layer's scale), the exact
   selection α there (``exact_field``) and the sliding set S (0 < α < 1). Then Newton's method for an exact
   equilibrium on that stratum: zeros of the sliding field (``sliding_field``, the pinned entries that do not
   slide at their bound gates), its Jacobian on the tangent space T of the stratum and of the spheres
   ‖V_k‖ = 1 by central differences, least-norm steps halved until the residual falls, each iterate moved
   back onto the stratum (``project_to_stratum``). The result x̂_ε is checked by an independent code path:
   the norm of the exact velocity there (``exact_field``, a bounded least squares over the pinned entries).
3. The exact equilibria compared with each other: distances in the parameters, in ρ and in the margins.
4. The linearized sliding flow at each x̂_ε, restricted to T: its singular values. The equilibria near x̂_ε
   form a set whose tangent space lies in the kernel, so the singular values below the gap bound its dimension.
5. Whether the kernel is a set of equilibria and not only a degenerate direction: at each x̂, a step of 1e-3
   and of 1e-4 along each kernel direction, then Newton back onto the equilibria (the Jacobian of x̂ kept). On a
   smooth set of equilibria the correction is O(step²); at an isolated degenerate equilibrium it is O(step).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import flowsim as fs
from flowsim._model import State
from flowsim._model._filippov import exact_field, pinned
from flowsim._model._stratum import _constraints, _hidden_z, project_to_stratum, sliding_field

sys.path.insert(0, os.path.dirname(__file__))
from bench_integrator import stall_problem  # noqa: E402

warnings.filterwarnings("ignore", message="the initial state is not on average separable")
OUT = os.path.join(os.path.dirname(__file__), "results")
STEPS = (1e-3, 1e-4)  # along the kernel (section 5)
STEADY_TOL = 1e-7


def steady(model, net, data, s0, eps):
    # rtol 1e-6: the end states moved by 7-8% over ε in earlier measurements, far above the solver's error here;
    # a looser rtol is slower on this problem (steps across kinks are rejected)
    t = time.perf_counter()
    tr = fs.simulate(
        model, net, data, s0, t1=1e5, steady_state=True, steady_tol=STEADY_TOL, smoothing=eps, rtol=1e-6,
        max_steps=2 * 10**6, progress=False,
    )  # fmt: skip
    return tr, time.perf_counter() - t


def point(state):
    """A state as a flat vector, in the layout of the tangent basis (ravel_pytree: V_1..V_L, then ρ)."""
    return np.asarray(ravel_pytree(state)[0])


def margins(net, data, state):
    return np.asarray(data.y) * float(state.rho) * np.asarray(net.forward(state.V, jnp.asarray(data.x)))


def tangent_basis(net, x, state, sliding):
    """An orthonormal basis of the directions (ρ, V_1..V_L) that keep every ‖V_k‖ and every sliding z."""
    flat, unravel = ravel_pytree(state)
    n = flat.size
    rows = []
    for k in range(len(state.V)):  # the spheres: d/dt ‖V_k‖² = 2 ⟨V_k, V̇_k⟩
        e = jax.tree_util.tree_map(jnp.zeros_like, state)
        e = State(tuple(v if j == k else jnp.zeros_like(v) for j, v in enumerate(state.V)), e.rho, e.rho_k)
        rows.append(np.asarray(ravel_pytree(e)[0]))

    S = np.concatenate([np.ravel(np.asarray(m)) for m in sliding])
    J = np.asarray(jax.jacfwd(lambda f: _hidden_z(net, x, unravel(f).V[:-1]))(flat))[S]
    C = np.vstack(rows + [J])
    _, sv, Wt = np.linalg.svd(C)
    rank = int(np.sum(sv > 1e-10 * sv[0]))
    return Wt[rank:].T, rank, n  # columns: the basis of T


def stratum_at(model, net, x, y, state, tol):
    """The pinned entries (within `tol`), the exact selection there, the sliding set S (0 < α < 1) and the gates
    of the pinned entries that do not slide (their bound)."""
    P = pinned(model, net, x, state, tol)
    _, info = exact_field(model, net, x, y, state, tol, return_info=True)
    S = tuple(m & (a > 1e-6) & (a < 1 - 1e-6) for m, a in zip(P, info.alpha))
    gates = tuple(jnp.where(m & ~s, jnp.round(a), a) for m, s, a in zip(P, S, info.alpha))
    return P, S, gates, info


def on_stratum(model, net, x, state, S):
    """`state` moved onto the stratum of S and every V_k onto its unit sphere."""
    state = project_to_stratum(model, net, x, state, S)
    return State(tuple(v / jnp.linalg.norm(v) for v in state.V), state.rho, state.rho_k)


def linearization(fn, state, T, h=1e-6):
    """``Tᵀ ∂f T``: the sliding field's Jacobian on T, by central differences (the error: O(h²)·f''' plus
    round-off ~ ε_mach ‖f‖ / h)."""
    f0 = point(state)
    cols = [(np.asarray(fn(f0 + h * t)) - np.asarray(fn(f0 - h * t))) / (2 * h) for t in T.T]
    return T.T @ np.stack(cols, axis=1)


def newton_step(fn, unravel, model, net, x, state, S, T, K, residual):
    """One least-norm Newton step on T, halved until the residual falls. **Returns:** (state, residual), or
    ``None`` if no length lowers it."""
    f0 = point(state)
    d, *_ = np.linalg.lstsq(K, -(T.T @ np.asarray(fn(f0))), rcond=1e-9)
    for k in range(12):
        trial = on_stratum(model, net, x, unravel(jnp.asarray(f0 + 0.5**k * (T @ d))), S)
        r = float(np.linalg.norm(np.asarray(fn(point(trial)))))
        if r < residual:
            return trial, r
    return None


def exact_equilibrium(model, net, x, y, state, S, gates, iterations=10, tol=1e-12):
    """Newton's method for a zero of the sliding field of (S, gates) near `state` (see the module's docstring).

    **Returns:** ``(x̂, residuals, T, K, f)``: the equilibrium, the residual ‖f‖ at each iterate, the tangent
    basis and the Jacobian on it at the last iterate, and the sliding field (flat, jitted)."""
    unravel = ravel_pytree(state)[1]
    fn = jax.jit(lambda f: ravel_pytree(sliding_field(model, net, x, y, unravel(f), S, gates))[0])
    state = on_stratum(model, net, x, state, S)
    hist = [float(np.linalg.norm(np.asarray(fn(point(state)))))]
    while True:
        T, _, _ = tangent_basis(net, x, state, S)
        K = linearization(fn, state, T)
        # at the floor of the differences and the projection (~1e-9): the residual no longer halves
        at_floor = len(hist) > 1 and 0.5 * hist[-2] < hist[-1] < 1e-8
        if hist[-1] < tol or len(hist) > iterations or at_floor:
            return state, hist, T, K, fn
        step = newton_step(fn, unravel, model, net, x, state, S, T, K, hist[-1])
        if step is None:  # no length lowers the residual: as far as the differences resolve it
            return state, hist, T, K, fn
        state, r = step
        hist.append(r)
        print(f"  Newton {len(hist) - 1}: residual {r:.2e}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lam", type=float, default=1e-2)
    ap.add_argument("--eps", default="1e-5,1e-6")
    args = ap.parse_args()
    epss = sorted((float(e) for e in args.eps.split(",")), reverse=True)
    model, net, data, s0 = stall_problem(args.lam)
    x, y = jnp.asarray(data.x), jnp.asarray(data.y)
    res = {"lam": args.lam, "runs": {}, "equilibria": {}}

    # 1. the smoothed end states
    ends = {}
    for eps in epss:
        tr, wall = steady(model, net, data, s0, eps)
        ends[eps] = tr.final
        res["runs"][f"{eps:g}"] = dict(
            wall=wall, t_final=tr.stats["t_final"], steady=bool(tr.stats["steady_state"]), steps=tr.stats["steps"],
            rho=float(tr.rho[-1]), min_margin=float(margins(net, data, tr.final).min()),
        )  # fmt: skip
        print(eps, res["runs"][f"{eps:g}"], flush=True)
    res["distances"] = distances(net, data, ends, epss)

    # 2. an exact equilibrium near each; 4. the linearized sliding flow there
    hats, kernels = {}, {}
    for eps in epss:
        t = time.perf_counter()
        P, S, gates, info = stratum_at(model, net, x, y, ends[eps], 10 * eps)
        hat, hist, T, K, fn = exact_equilibrium(model, net, x, y, ends[eps], S, gates)
        m = exact_field(model, net, x, y, hat, 1e-9)
        # the conditioning of the stratum: the constraint Jacobian's singular values (the projection's pseudo-inverse
        # keeps those above 1e-10 of the largest)
        csv = np.asarray(_constraints(model, net, x, hat, S)[1])
        kept = csv[csv > 1e-10 * csv[0]]
        sv, Wt = np.linalg.svd(K)[1:]
        # the kernel: the singular values under 1e-6 of the largest (measured: a gap of 10⁶ or more sits there)
        small = np.flatnonzero(sv <= 1e-6 * sv[0])
        dim = int(sv.size - small[0]) if small.size else 0
        hats[eps], kernels[eps] = hat, (T, K, Wt[sv.size - dim :].T, fn, S)
        res["equilibria"][f"{eps:g}"] = dict(
            pinned=int(sum(int(np.sum(p)) for p in P)), sliding=int(sum(int(np.sum(s)) for s in S)),
            converged=bool(info.converged), residuals=hist, exact_speed=float(jnp.linalg.norm(ravel_pytree(m)[0])),
            moved=float(np.linalg.norm(point(hat) - point(ends[eps]))), rho=float(hat.rho),
            tangent_dim=int(T.shape[1]), largest=float(sv[0]), kernel_dim=dim,
            below=float(sv[-dim]) if dim else None, above=float(sv[-dim - 1]),
            singular_values_smallest=[float(v) for v in sv[-12:]], wall=time.perf_counter() - t,
            constraint_rank=int(kept.size), constraint_largest=float(kept[0]), constraint_smallest=float(kept[-1]),
            constraint_next=float(csv[kept.size]) if kept.size < csv.size else None,
        )  # fmt: skip
        print(eps, {k: v for k, v in res["equilibria"][f"{eps:g}"].items() if k != "singular_values_smallest"})
    # 3. the exact equilibria compared
    res["hat_distances"] = distances(net, data, hats, epss)
    res["initial_speed"] = float(np.linalg.norm(point(model.vector_field(net, data)(0.0, s0))))

    # 5. along the kernel at each x̂, two step lengths
    corrections = []
    for eps in epss:
        T, K, kernel, fn, S = kernels[eps]
        unravel = ravel_pytree(hats[eps])[1]
        for i, k in enumerate(kernel.T):
            for step in STEPS:
                target = point(hats[eps]) + step * (T @ k)
                moved = on_stratum(model, net, x, unravel(jnp.asarray(target)), S)
                r = r0 = float(np.linalg.norm(np.asarray(fn(point(moved)))))
                for _ in range(20):  # the chord method: x̂'s Jacobian kept
                    out = newton_step(fn, unravel, model, net, x, moved, S, T, K, r)
                    if out is None:
                        break
                    moved, r = out
                    if r < 1e-12:
                        break
                corrections.append(dict(
                    eps=eps, direction=i + 1, step=step, before=r0, residual=r,
                    correction=float(np.linalg.norm(point(moved) - target)) / step,
                ))  # fmt: skip
                print(corrections[-1], flush=True)
    res["kernel_steps"] = corrections
    res["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}"
    with open(os.path.join(OUT, "equilibria.json"), "w") as fh:
        json.dump(res, fh, indent=1)
    write(res, epss)


def distances(net, data, points_, epss):
    """Each state's distance to the narrowest's: relative in the parameters and in ρ, absolute in the margins."""
    ref = points_[epss[-1]]
    p_ref, m_ref = point(ref), margins(net, data, ref)
    return {
        f"{eps:g}": dict(
            params=float(np.linalg.norm(point(points_[eps]) - p_ref) / np.linalg.norm(p_ref)),
            rho=float(abs(float(points_[eps].rho) / float(ref.rho) - 1)),
            margins=float(np.max(np.abs(margins(net, data, points_[eps]) - m_ref))),
        )
        for eps in epss[:-1]
    }


def write(res, epss):
    lines = [
        "# The stall case's end states: unique, or a continuum of equilibria?",
        "",
        f"Machine: {res['machine']}; run with `python benchmarks/bench_equilibria.py --lam {res['lam']:g} "
        f"--eps {','.join(f'{e:g}' for e in epss)}`.",
        "",
        f"Problem: the stall case (5-16-16-1 ReLU, 40 points, `normalized`, λ = {res['lam']:g}, ρ(0) = 0.1), "
        "integrated to steady state with the smoothed field (rtol 1e-6, steady-state test 1e-7).",
        "",
        "## 1. The smoothed end states",
        "",
        "| ε | wall (s) | t_final | steps | ρ | min margin | params vs narrowest | ρ vs narrowest | margins vs "
        "narrowest |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for eps in epss:
        r, d = res["runs"][f"{eps:g}"], res["distances"].get(f"{eps:g}")
        dist = f"{d['params']:.2e} | {d['rho']:.2e} | {d['margins']:.2e}" if d else "— | — | —"
        lines.append(
            f"| {eps:g} | {r['wall']:.1f} | {r['t_final']:.4g} | {r['steps']} | {r['rho']:.6f} | "
            f"{r['min_margin']:.4g} | {dist} |"
        )
    lines += [
        "",
        "## 2. An exact equilibrium x̂_ε near each end state",
        "",
        f"The field at the start has norm {res['initial_speed']:.2g}.",
        "",
        "| ε | pinned (10 ε) | sliding | Newton residuals ‖f‖ | exact velocity at x̂_ε | ‖x_ε − x̂_ε‖ | ρ̂ | wall (s) |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for eps in epss:
        e = res["equilibria"][f"{eps:g}"]
        hist = " → ".join(f"{v:.1e}" for v in (e["residuals"][0], *e["residuals"][-2:]))
        lines.append(
            f"| {eps:g} | {e['pinned']} | {e['sliding']} | {hist} ({len(e['residuals']) - 1} steps) | "
            f"{e['exact_speed']:.1e} | {e['moved']:.1e} | {e['rho']:.15g} | {e['wall']:.0f} |"
        )
    lines += [
        "",
        "## 3. The exact equilibria compared",
        "",
        "| ε | params vs narrowest | ρ vs narrowest | margins vs narrowest |",
        "|---|---:|---:|---:|",
    ]
    for eps, d in res["hat_distances"].items():
        lines.append(f"| {eps} | {d['params']:.2e} | {d['rho']:.1e} | {d['margins']:.1e} |")
    lines += [
        "",
        "## 4. The linearized sliding flow at each x̂_ε",
        "",
        "| ε | tangent dimension | largest | kernel dimension | largest in the kernel | next above | smallest 12 |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for eps in epss:
        e = res["equilibria"][f"{eps:g}"]
        below = f"{e['below']:.1e}" if e["below"] is not None else "—"
        lines.append(
            f"| {eps:g} | {e['tangent_dim']} | {e['largest']:.3g} | {e['kernel_dim']} | {below} | "
            f"{e['above']:.1e} | " + ", ".join(f"{v:.1e}" for v in e["singular_values_smallest"]) + " |"
        )
    lines += [
        "",
        "The stratum's conditioning at each x̂_ε (the sliding pre-activations' Jacobian, metric-scaled):",
        "",
        "| ε | rank | largest singular value | smallest kept | next (dropped) |",
        "|---|---:|---:|---:|---:|",
    ]
    for eps in epss:
        e = res["equilibria"][f"{eps:g}"]
        nxt = f"{e['constraint_next']:.1e}" if e["constraint_next"] is not None else "—"
        lines.append(
            f"| {eps:g} | {e['constraint_rank']} | {e['constraint_largest']:.2g} | {e['constraint_smallest']:.1e} | "
            f"{nxt} |"
        )
    lines += [
        "",
        "## 5. Along the kernel at each x̂_ε",
        "",
        "A step along each kernel direction, then Newton back onto the equilibria (x̂_ε's Jacobian kept):",
        "",
        "| ε | direction | step | residual after the step | after Newton | correction / step |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c in res["kernel_steps"]:
        lines.append(
            f"| {c['eps']:g} | {c['direction']} | {c['step']:g} | {c['before']:.1e} | {c['residual']:.1e} | "
            f"{c['correction']:.1e} |"
        )
    lines += ["", "## Reading", "", "(written after the run)", ""]
    with open(os.path.join(OUT, "equilibria.md"), "w") as fh:
        fh.write("\n".join(lines))


if __name__ == "__main__":
    main()
