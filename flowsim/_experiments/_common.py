"""What the experiments share: the result record and its verdict, the problems, cached flow runs, figures.

Figures are :class:`matplotlib.figure.Figure` objects built without ``pyplot``, so running the experiments
does not select a matplotlib backend (``savefig`` renders PNG files with Agg).
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import flowsim as fs

VERDICTS = ("holds", "partly", "fails")


@dataclass
class Result:
    """One experiment's outcome: what was measured, against what, the verdict and the figure's file name."""

    name: str
    prediction: str
    measurement: str
    reference: str
    verdict: str
    figure: str
    value: float = float("nan")
    seconds: float = 0.0


def grade(holds: bool, partly: bool) -> str:
    """The verdict from two computed conditions: ``holds`` if the strict one is met, else ``partly``/``fails``."""
    return "holds" if holds else ("partly" if partly else "fails")


def clusters_split(quick: bool):
    """The shared clusters problem: ``(train, test)``, a stratified split of two noisy Gaussian clusters."""
    full = fs.datasets.gaussian_clusters(n=36 if quick else 90, dim=5, seed=0, separation=2.5, noise=0.6)
    return full.split(1 / 3, seed=0)


def clusters(quick: bool, n=None, seed=0):
    if n is None:
        return clusters_split(quick)[0]
    return fs.datasets.gaussian_clusters(n=n, dim=5, seed=seed, separation=3.0, noise=0.5)


def digits(quick: bool):
    data = fs.datasets.digits(3, 8)
    # full: 100 images and a 64-8-8-1 net (585 coordinates), ~1 min per run to t = 2000 with ε = 1e-5; the
    # 160-image 64-16-16-1 net (1,297 coordinates) took 640 s to reach t = 20, too slow for ten runs
    n = 30 if quick else 100
    idx = np.random.default_rng(0).permutation(data.n)[:n]
    return data.subset(np.sort(idx))


def widths(quick: bool, d=5):
    return (d, 8, 1) if quick else (d, 16, 16, 1)


def t1_of(quick: bool):
    return 200.0 if quick else 2000.0


def run(
    model_name: str,
    lam: float,
    problem: str,
    quick: bool,
    seed: int = 0,
    scale: float = 0.5,
    rho_k: tuple | None = None,
    t1: float | None = None,
):
    """One cached flow run ``(model, net, data, trajectory)`` shared between experiments."""
    return _run_cached(model_name, float(lam), problem, bool(quick), int(seed), float(scale), rho_k, t1)


@functools.lru_cache(maxsize=64)  # a full reproduce run shares fewer than 30 flows between experiments
def _run_cached(model_name, lam, problem, quick, seed, scale, rho_k, t1):
    if problem == "clusters":
        data = clusters(quick)
        net = fs.Network(widths(quick))
    elif problem == "digits":
        data = digits(quick)
        net = fs.Network((64, 6, 1) if quick else (64, 8, 8, 1))
    else:  # pragma: no cover - internal
        raise ValueError(problem)
    model = fs.load_model(model_name, lam=lam)
    s0 = model.init(net, seed=seed, scale=scale)
    if rho_k is not None:
        s0 = model.state(V=s0.V, rho_k=list(rho_k) + [1.0] * (net.depth - len(rho_k)))
    t1 = t1 or (t1_of(quick) / (2 if problem == "digits" and quick else 1))
    ts = np.concatenate([[0.0], np.geomspace(1e-2, t1, 40 if quick else 120)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traj = fs.simulate(model, net, data, s0, t1=t1, ts=ts, progress=False)
    return model, net, data, traj


def save(fig, out: Path, name: str) -> str:
    fname = f"{name}.png"
    fig.tight_layout()
    fig.savefig(out / fname, dpi=110)
    return fname


def log_ts(traj):
    return np.maximum(np.asarray(traj.ts), 1e-3)
