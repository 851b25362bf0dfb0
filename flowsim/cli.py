"""The ``flowsim`` command: ``flowsim reproduce`` (the ten predictions) and ``flowsim simulate`` (one run)."""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

from ._model import available_models
from ._model._load import LOSS_NAMES
from ._solver._options import SOLVERS


def _positive(text: str) -> float:
    value = _float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number > 0")
    return value


def _non_negative(text: str) -> float:
    value = _float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number >= 0")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a finite number")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer >= 1")
    return value


def _smoothing(text: str) -> float | str | None:
    if text.strip().lower() == "auto":
        return "auto"
    if text.strip().lower() == "none":
        return None
    return _non_negative(text)  # 0: the exact flow


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers like 16,16") from None
    if any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"{text!r}: expected widths >= 1")
    return widths


def _model_name(text: str) -> str:
    if text in available_models() or (text.endswith(".py") and Path(text).is_file()):
        return text
    raise argparse.ArgumentTypeError(
        f"invalid choice: {text!r} (choose from {', '.join(available_models())}, or the path of a regime file .py)"
    )


def _network_widths(args, dim: int) -> tuple[int, ...]:
    """The network's widths: the data's dimension, then --widths (hidden widths, or all of them if it ends in 1)."""
    if args.widths is None:
        return (dim, 8, 1)
    if len(args.widths) >= 2 and args.widths[-1] == 1:  # all the widths d_0,...,1: the earlier form of --widths
        if args.widths[0] != dim:
            given = ",".join(map(str, args.widths))
            hidden = ",".join(map(str, args.widths[1:-1]))
            fix = f"give only the hidden widths (--widths {hidden}) or" if hidden else "to fix it,"
            raise ValueError(
                f"--widths {given} starts with the input width {args.widths[0]}, but the {args.data} data have "
                f"dimension {dim}; {fix} start the list with {dim}"
            )
        return args.widths
    return (dim, *args.widths, 1)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="flowsim",
        description="Gradient-flow dynamics of deep ReLU classifiers trained with the square loss (Poggio & Liao).",
    )
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser(
        "reproduce",
        help="run the predictions of docs/theory.md; write figures and report.md",
        description="Run one experiment per prediction of docs/theory.md#the-predictions (fs.reproduce), each "
        "with a measured number, a verdict from stated thresholds and a figure; write them and report.md into --out.",
    )
    r.add_argument("--quick", action="store_true", help="tiny networks, short times, one data seed (about 3 minutes)")
    r.add_argument("--out", default="figures", help="output directory (default: figures/)")
    r.add_argument(
        "--only",
        default=None,
        metavar="NAME[,NAME...]",
        help="run only these experiments (comma-separated); names: see --list",
    )
    r.add_argument("--list", action="store_true", help="list the experiment names and exit")

    s = sub.add_parser(
        "simulate",
        help="integrate one flow and print a summary",
        description="Integrate the flow of one model on one data set and print ρ, ρ_eq, the margins and the "
        "solver statistics. The network's input width is the data's dimension; --widths gives the layers after it.",
    )
    models = available_models()
    s.add_argument(
        "--model",
        default="normalized",
        type=_model_name,
        metavar="{" + ",".join(models) + "}",
        help="the regime (default normalized), or the path of a regime file (.py defining REGIME)",
    )
    s.add_argument("--lam", type=_non_negative, default=1e-2, help="weight decay λ >= 0 (default 1e-2)")
    s.add_argument("--loss", default="square", choices=LOSS_NAMES, help="the loss (default square)")
    s.add_argument(
        "--widths",
        default=None,
        type=_widths,
        metavar="H[,H...]",
        help="hidden widths, comma-separated (default 8: the net d_0-8-1, d_0 the data's dimension); "
        "a list ending in 1, like 5,8,1, is read as all the widths d_0,...,1, and d_0 must be the data's dimension",
    )
    s.add_argument("--activation", default="relu", choices=("relu", "linear"), help="default relu")
    s.add_argument(
        "--data",
        default="clusters",
        choices=("clusters", "digits"),
        help="clusters: two Gaussian clusters in --dim dimensions; digits: the 8x8 digits 3 against 8 (64 dimensions)",
    )
    s.add_argument(
        "--dim",
        type=_positive_int,
        default=None,
        help="dimension of --data clusters (default 5, or d_0 when --widths gives all the widths)",
    )
    s.add_argument("--n", type=_positive_int, default=40, help="number of samples (clusters; digits: subsample)")
    s.add_argument("--data-seed", type=int, default=None, metavar="SEED", help="seed of the data (default 0)")
    s.add_argument(
        "--init-seed", type=int, default=None, metavar="SEED", help="seed of the initial directions V_k (default 0)"
    )
    s.add_argument(
        "--seed", type=int, default=None, metavar="SEED", help="deprecated: sets both --data-seed and --init-seed"
    )
    s.add_argument("--scale", type=_positive, default=0.5, help="initial overall scale ρ(0) > 0 (default 0.5)")
    s.add_argument("--t1", type=_positive, default=200.0, help="end time (default 200)")
    s.add_argument("--steady-state", action="store_true", help="stop at the steady state (t1 is the cap)")
    s.add_argument(
        "--solver",
        default="rosenbrock",
        choices=SOLVERS[1:],
        help="rosenbrock (the default: flowsim's compiled stiff solver) or a diffrax solver",
    )
    s.add_argument(
        "--smoothing",
        type=_smoothing,
        default="auto",
        metavar="EPS",
        help="width ε of the smoothed ReLU derivative in the field: a number > 0 (it sets the accuracy: error "
        "≈ 20-30 ε), none for the raw field (σ′ = 1[z > 0]), 0 for the exact flow (accuracy set by --rtol), or "
        "auto (the default: 1e-5 for ReLU, none for linear)",
    )
    s.add_argument("--rtol", type=_positive, default=1e-6, help="relative tolerance of the solver (default 1e-6)")
    s.add_argument("--out", default=None, help="write a PNG of ρ, ρ_eq and the margins to this file")
    return p


def _use_all_cores() -> None:
    """One JAX CPU device per core, so that sweeps run their members in parallel (each member is the same
    program as on one device, so results do not change). Only a command-line run does this, before JAX starts
    its backend, and never over a device count the user set in ``XLA_FLAGS``."""
    try:  # JAX has no public test for a started backend; without this one, leave the devices alone
        from jax._src.xla_bridge import backends_are_initialized
    except ImportError:
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if backends_are_initialized() or "xla_force_host_platform_device_count" in flags:
        return
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={os.cpu_count() or 1}".strip()


def _reproduce(args, all_cores: bool = False) -> int:
    import flowsim as fs

    from . import _experiments as R
    from ._errors import InputError

    if args.list:
        for name in R.EXPERIMENTS:
            print(name)
        return 0
    try:
        names = R.select(args.only)
    except InputError as e:
        print(f"flowsim reproduce: error: {e}", file=sys.stderr)
        return 2
    if all_cores:
        _use_all_cores()
    import jax

    t0 = time.perf_counter()
    print(
        f"flowsim reproduce ({'quick' if args.quick else 'full'}): {len(names)} experiment(s) -> {args.out}, "
        f"sweeps on {jax.device_count()} {jax.default_backend().upper()} device(s)",
        flush=True,
    )
    results = fs.reproduce(quick=args.quick, out=args.out, only=args.only)
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

    data_seed = args.data_seed if args.data_seed is not None else (args.seed if args.seed is not None else 0)
    init_seed = args.init_seed if args.init_seed is not None else (args.seed if args.seed is not None else 0)
    if args.seed is not None:
        print(
            "flowsim simulate: warning: --seed is deprecated; use --data-seed and --init-seed "
            f"(this run: --data-seed {data_seed} --init-seed {init_seed})",
            file=sys.stderr,
        )
    try:
        if args.data == "digits":
            if args.dim is not None and args.dim != 64:
                raise ValueError(f"--dim {args.dim}: the digits data have dimension 64 (--dim is for clusters)")
            data = fs.datasets.digits(3, 8)
            if args.n < data.n:
                idx = np.sort(np.random.default_rng(data_seed).permutation(data.n)[: args.n])
                data = data.subset(idx)
        else:
            full = args.widths is not None and len(args.widths) >= 2 and args.widths[-1] == 1
            dim = args.dim if args.dim is not None else (args.widths[0] if full else 5)
            data = fs.datasets.gaussian_clusters(n=args.n, dim=dim, seed=data_seed)
        widths = _network_widths(args, data.dim)
    except ValueError as e:
        print(f"flowsim simulate: error: {e}", file=sys.stderr)
        return 2
    try:
        net = fs.Network(widths, args.activation)
        model = fs.load_model(args.model, lam=args.lam, loss=args.loss)
        s0 = model.init(net, seed=init_seed, scale=args.scale)
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
                solver=args.solver,
                smoothing=args.smoothing,
                rtol=args.rtol,
            )
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
    except fs.SolveError as e:
        print(f"flowsim simulate: the run failed: {e}", file=sys.stderr)
        return 1
    except fs.FlowsimError as e:
        print(f"flowsim simulate: error: {e}", file=sys.stderr)
        return 2
    m = np.asarray(traj.margins[-1])
    print(f"{model!r} on {data!r}, net {widths} {args.activation}, data seed {data_seed}, init seed {init_seed}")
    print(
        f"t = {float(traj.ts[-1]):.4g}: rho = {float(traj.rho[-1]):.6g}, rho_eq = {float(traj.rho_eq[-1]):.6g}, "
        f"loss = {float(traj.loss[-1]):.6g}"
    )
    print(
        f"margins y_n f_n: min {m.min():.4g}, mean {m.mean():.4g}, max {m.max():.4g}; train error {np.mean(m <= 0):.3f}"
    )
    shown = {k: f"{v:.4g}" if isinstance(v, float) else v for k, v in traj.stats.items() if v is not None}
    print("stats: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    if args.out:
        from matplotlib.figure import Figure  # not pyplot: no backend is selected, savefig renders with Agg

        fig = Figure(figsize=(9, 3.6))
        a, b = fig.subplots(1, 2)
        t = np.asarray(traj.ts)
        a.plot(t, np.asarray(traj.rho), label=r"$\rho$")
        a.plot(t, np.asarray(traj.rho_eq), "--", label=r"$\rho_{eq}(V)$")
        a.set(xlabel="$t$", title=r"the scale $\rho$ and its equilibrium $\rho_{eq}$"), a.legend()
        b.plot(t, np.asarray(traj.margins), lw=0.6)
        b.set(xlabel="$t$", ylabel="$y_n f_n$", title=f"the margins of the {data.n} samples")
        fig.tight_layout()
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out, dpi=110)
        print(f"figure: {args.out}")
    return 0


def main(argv=None) -> int:
    """Entry point of the ``flowsim`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "reproduce":
        # from the command line (not from Python, where JAX may be running already), use every core
        return _reproduce(args, all_cores=argv is None)
    return _simulate(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
