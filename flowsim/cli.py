"""The ``flowsim`` command: ``flowsim reproduce`` (the nine predictions) and ``flowsim simulate`` (one run)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flowsim",
        description="Gradient-flow dynamics of deep ReLU classifiers trained with the square loss (Poggio & Liao).",
    )
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("reproduce", help="run the nine predictions of theory.md; write figures and report.md")
    r.add_argument("--quick", action="store_true", help="tiny networks and short times (a few minutes)")
    r.add_argument("--out", default="figures", help="output directory (default: figures/)")
    r.add_argument(
        "--only",
        default=None,
        metavar="NAME[,NAME...]",
        help="run only these experiments (comma-separated); names: see --list",
    )
    r.add_argument("--list", action="store_true", help="list the experiment names and exit")

    s = sub.add_parser("simulate", help="integrate one flow and print a summary")
    s.add_argument("--model", default="normalized", help="normalized | unnormalized | weightnorm")
    s.add_argument("--lam", type=float, default=1e-2, help="weight decay λ (default 1e-2)")
    s.add_argument("--widths", default="5,8,1", help="comma-separated widths d_0,...,1 (default 5,8,1)")
    s.add_argument("--activation", default="relu", choices=("relu", "linear"))
    s.add_argument("--data", default="clusters", choices=("clusters", "digits"))
    s.add_argument("--n", type=int, default=40, help="number of samples (clusters; digits: subsample)")
    s.add_argument("--seed", type=int, default=0, help="seed of the data and the initial state")
    s.add_argument("--scale", type=float, default=0.5, help="initial overall scale ρ(0)")
    s.add_argument("--t1", type=float, default=200.0, help="end time")
    s.add_argument("--steady-state", action="store_true", help="stop at the steady state (t1 is the cap)")
    s.add_argument("--out", default=None, help="write a PNG of ρ, ρ_eq and the margins to this file")
    return p


def _reproduce(args) -> int:
    from . import _experiments as R
    from ._errors import InputError

    if args.list:
        for name, fn in R.EXPERIMENTS.items():
            print(name)
        return 0
    try:
        names = R.select(args.only)
    except InputError as e:
        print(f"flowsim reproduce: error: {e}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    print(
        f"flowsim reproduce ({'quick' if args.quick else 'full'}): {len(names)} experiment(s) -> {args.out}", flush=True
    )
    results = R.reproduce(quick=args.quick, out=args.out, only=args.only)
    counts = {v: sum(r.verdict == v for r in results) for v in R.VERDICTS}
    print(
        f"done in {time.perf_counter() - t0:.0f} s: "
        + ", ".join(f"{n} {v}" for v, n in counts.items())
        + f"; report: {Path(args.out) / 'report.md'}"
    )
    return 0


def _simulate(args) -> int:
    import warnings

    import numpy as np

    import flowsim as fs

    try:
        widths = tuple(int(w) for w in args.widths.split(","))
    except ValueError:
        print(f"flowsim simulate: error: --widths {args.widths!r}: expected integers like 5,8,1", file=sys.stderr)
        return 2
    try:
        if args.data == "digits":
            data = fs.datasets.digits(3, 8)
            if args.n < data.n:
                idx = np.sort(np.random.default_rng(args.seed).permutation(data.n)[: args.n])
                data = data.subset(idx)
        else:
            data = fs.datasets.gaussian_clusters(n=args.n, dim=widths[0], seed=args.seed)
        net = fs.Network(widths, args.activation)
        model = fs.load_model(args.model, lam=args.lam)
        s0 = model.init(net, seed=args.seed, scale=args.scale)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            traj = fs.simulate(
                model,
                net,
                data,
                s0,
                t1=args.t1,
                steady_state=args.steady_state,
                ts=None if args.steady_state else np.linspace(0.0, args.t1, 101),
            )
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
    except fs.FlowsimError as e:
        print(f"flowsim simulate: error: {e}", file=sys.stderr)
        return 2
    m = np.asarray(traj.margins[-1])
    print(f"{model!r} on {data!r}, net {widths} {args.activation}")
    print(
        f"t = {float(traj.ts[-1]):.4g}: rho = {float(traj.rho[-1]):.6g}, rho_eq = {float(traj.rho_eq[-1]):.6g}, "
        f"loss = {float(traj.loss[-1]):.6g}"
    )
    print(
        f"margins y_n f_n: min {m.min():.4g}, mean {m.mean():.4g}, max {m.max():.4g}; train error {np.mean(m <= 0):.3f}"
    )
    print("stats: " + ", ".join(f"{k}={v}" for k, v in traj.stats.items() if v is not None))
    if args.out:
        from matplotlib.figure import Figure  # not pyplot: no backend is selected, savefig renders with Agg

        fig = Figure(figsize=(9, 3.6))
        a, b = fig.subplots(1, 2)
        t = np.asarray(traj.ts)
        a.plot(t, np.asarray(traj.rho), label="ρ"), a.plot(t, np.asarray(traj.rho_eq), "--", label="ρ_eq")
        a.set_xlabel("t"), a.legend()
        b.plot(t, np.asarray(traj.margins), lw=0.6), b.set_xlabel("t"), b.set_ylabel("y_n f_n")
        fig.tight_layout()
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out, dpi=110)
        print(f"figure: {args.out}")
    return 0


def main(argv=None) -> int:
    """Entry point of the ``flowsim`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "reproduce":
        return _reproduce(args)
    return _simulate(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
