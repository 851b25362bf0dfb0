"""What the experiments share: the result record and its verdict, the problems, cached flow runs, figures.

Figures are :class:`matplotlib.figure.Figure` objects built without ``pyplot``, so running the experiments
does not select a matplotlib backend (``savefig`` renders PNG files with Agg).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import jax.numpy as jnp
import numpy as np

import flowsim as fs

VERDICTS = ("holds", "partly", "fails")


# The data seeds of the full run: each experiment is repeated on each, its verdict reported per seed.
DATA_SEEDS = (0, 1, 2)


@dataclass
class Result:
    """One experiment's outcome: what was measured, against what, the verdict and the figure's file name.

    ``seeds`` holds ``(data seed, value, verdict)`` for every data seed run (the full run repeats each
    experiment on :data:`DATA_SEEDS`); the figure and the measurement text are those of the first seed.
    """

    name: str
    prediction: str
    measurement: str
    reference: str
    verdict: str
    figure: str
    value: float = float("nan")
    seconds: float = 0.0
    seeds: tuple = ()


def grade(holds: bool | np.bool_, partly: bool | np.bool_) -> str:
    """The verdict from two computed conditions: ``holds`` if the strict one is met, else ``partly``/``fails``."""
    return "holds" if bool(holds) else ("partly" if bool(partly) else "fails")


def spearman(a, b) -> float:
    """Spearman rank correlation with ties averaged; NaN when either side is constant."""
    from scipy.stats import rankdata

    if len(a) < 3:
        return float("nan")
    ra, rb = rankdata(a), rankdata(b)
    if np.std(ra) == 0 or np.std(rb) == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def median_verdict(verdicts) -> str:
    """The median of verdicts ordered holds > partly > fails (with three seeds: what the majority reached)."""
    ranks = sorted(VERDICTS.index(v) for v in verdicts)
    return VERDICTS[ranks[(len(ranks) - 1) // 2]]


def clusters_split(quick: bool, seed: int = 0):
    """The shared clusters problem: ``(train, test)``, a stratified split of two overlapping Gaussian clusters
    (overlapping enough that held-out errors differ between solutions)."""
    full = fs.datasets.gaussian_clusters(n=45 if quick else 90, dim=5, seed=seed, separation=2.0, noise=0.7)
    return full.split(1 / 3, seed=seed)


def separated(n: int, seed: int = 0):
    """Two well-separated Gaussian clusters of `n` points in dimension 5: data every regime can fit."""
    return fs.datasets.gaussian_clusters(n=n, dim=5, seed=seed, separation=3.0, noise=0.5)


def clusters(quick: bool, n=None, seed=0):
    """The shared clusters' training set, or with `n` the separated clusters of `n` points."""
    return clusters_split(quick, seed)[0] if n is None else separated(n, seed)


def digits_split(quick: bool, seed: int = 0):
    """Digits 3 vs 8: ``(train, test)``, a random subset of the bundled images split 2:1, projected onto the
    leading principal components of the training images (10 / 16) and scaled to unit rows.

    The projection keeps the problem a digits problem (the components carry most of the variance) while a
    network on it costs a tenth of one on the 64 raw pixels: the full run's hundreds of runs fit in minutes.
    """
    data = fs.datasets.digits(3, 8)
    n = 45 if quick else 150
    idx = np.random.default_rng(seed).permutation(data.n)[:n]
    train, test = data.subset(np.sort(idx)).split(1 / 3, seed=seed)
    mean = train.x.mean(0)
    basis = np.linalg.svd(train.x - mean, full_matrices=False)[2][: 10 if quick else 16].T

    def project(d):
        z = (d.x - mean) @ basis
        return fs.Dataset(z / np.linalg.norm(z, axis=1, keepdims=True), d.y)

    return project(train), project(test)


def problem(name: str, quick: bool, seed: int = 0):
    """``(net, train, test)`` of a named problem, ``"clusters"`` or ``"digits"``."""
    if name == "clusters":
        return (fs.Network(widths(quick)), *clusters_split(quick, seed))
    train, test = digits_split(quick, seed)
    return (fs.Network((train.x.shape[1], 6, 1) if quick else (train.x.shape[1], 8, 8, 1)), train, test)


def test_error(net, V, test, sign: float = 1.0) -> float:
    """The fraction of held-out points misclassified by ``sign(ρ f(V; x))``, `sign` the sign of ρ."""
    f = np.sign(sign) * np.asarray(net.forward(V, jnp.asarray(test.x)))
    return float(np.mean(np.sign(f) != test.y))


def final_point(tr):
    """``(|ρ|, margins, sign of ρ)`` at the end of a run: ``(ρ, V)`` and ``(−ρ, V with V_L negated)`` are the same
    classifier, and a flow may end on either; the margins are those of the classifier ``ρ f``."""
    rho = float(tr.rho[-1])
    sign = 1.0 if rho >= 0 else -1.0
    return abs(rho), sign * np.asarray(tr.margins[-1]), sign


def fit_margins(net, V, data, margins):
    """The margins of the fitted samples, and a description of the stuck ones.

    A sample is *stuck* when its margin ``y_n f_n`` is below a tenth of the median margin: the flow has not fitted
    it (typically its last-hidden-layer units sit at a ReLU kink, where the gradient that would fit it is cut).
    One stuck sample would decide a minimum over all samples, so the statistics here are taken over the fitted
    ones, and the stuck ones are counted with the number of their last-hidden-layer pre-activations at a kink
    (``|z| ≤ 1e-4 max |z|``, i.e. within 10 ε of 0 at the default smoothing) and below it (the unit is off).

    **Returns:** ``(fitted margins, number stuck, text)``.
    """
    m = np.asarray(margins, dtype=float)
    if np.median(m) <= 0:  # not a fit at all: nothing to single out
        return m, 0, f"no fit (median margin {np.median(m):.1e})"
    stuck = m < 0.1 * np.median(m)
    text = "no stuck sample"
    if stuck.any():
        if net.depth == 1:
            text = f"{int(stuck.sum())} stuck (y_n f_n ≤ {m[stuck].max():.1e})"
        else:
            z = np.asarray(net.preactivations(V, jnp.asarray(data.x))[-1])
            tol = 1e-4 * np.abs(z).max()
            kinks = np.sum(np.abs(z[stuck]) <= tol, axis=1)
            dead = np.sum(z[stuck] < -tol, axis=1)
            text = (
                f"{int(stuck.sum())} stuck sample(s), y_n f_n ≤ {m[stuck].max():.1e}, with "
                f"{', '.join(map(str, kinks))} of {z.shape[1]} last-hidden units at a kink and "
                f"{', '.join(map(str, dead))} off"
            )
    return m[~stuck], int(stuck.sum()), text


def widths(quick: bool, d=5):
    # full: 5-12-12-1, ~10 s a run to steady state (5-16-16-1: ~25 s, too slow for three data seeds)
    return (d, 8, 1) if quick else (d, 12, 12, 1)


def t1_of(quick: bool, problem_name: str = "clusters"):
    """The end time of a problem's runs: 200 / 2000, and 100 for the quick digits."""
    return 100.0 if quick and problem_name == "digits" else (200.0 if quick else 2000.0)


def run(
    model_name: str,
    lam: float,
    problem: str,
    quick: bool,
    seed: int = 0,
    scale: float = 0.5,
    rho_k: tuple | None = None,
    t1: float | None = None,
    data_seed: int = 0,
):
    """One cached flow run ``(model, net, data, trajectory)`` shared between experiments; ``seed`` is the
    initial state's, ``data_seed`` the data's. Runs not cached yet are computed by `prefetch`."""
    key = _key(model_name, lam, problem, quick, seed, scale, rho_k, t1, data_seed)
    if key not in _RUNS:
        prefetch(model_name, problem, quick, (seed,), (lam,), scale=scale, rho_k=rho_k, t1=t1, data_seed=data_seed)
    return _RUNS[key]


# The cached runs, oldest first: one data seed of a full run shares fewer than 30 flows between experiments.
_RUNS: dict = {}
_MAX_RUNS = 64


def _key(model_name, lam, problem_name, quick, seed, scale, rho_k, t1, data_seed):
    return (model_name, float(lam), problem_name, bool(quick), int(seed), float(scale), rho_k, t1, int(data_seed))


def prefetch(model_name, problem_name, quick, seeds, lams, *, scale=0.5, rho_k=None, t1=None, data_seed=0):
    """Compute the runs of every initial-state seed in `seeds` × every λ in `lams` into `run`'s cache, as one
    sweep: its members run in parallel over the devices, each the very program ``simulate`` runs (the
    trajectories are those `run` would compute one by one)."""
    missing = [
        (s, lam) for s in seeds for lam in lams
        if _key(model_name, lam, problem_name, quick, s, scale, rho_k, t1, data_seed) not in _RUNS
    ]  # fmt: skip
    if not missing:
        return
    net, data, _ = problem(problem_name, quick, data_seed)
    model = fs.load_model(model_name, lam=missing[0][1])
    states = []
    for s, _ in missing:
        s0 = model.init(net, seed=s, scale=scale)
        if rho_k is not None:
            s0 = model.state(V=s0.V, rho_k=list(rho_k) + [1.0] * (net.depth - len(rho_k)))
        states.append(s0)
    t1_ = t1 or t1_of(quick, problem_name)
    ts = np.concatenate([[0.0], np.geomspace(1e-2, t1_, 40 if quick else 120)])
    # One member per pair: the whole State × λ grid when every pair is missing, else one sweep per λ.
    if len(missing) == len(seeds) * len(lams):
        groups = [(list(lams), list(range(len(missing))))]
    else:
        lam_of = [lam for _, lam in missing]
        groups = [([lam], [i for i in range(len(missing)) if lam_of[i] == lam]) for lam in dict.fromkeys(lam_of)]
    for group_lams, rows in groups:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            states_ = [states[i] for i in rows[:: len(group_lams)]]
            res = fs.sweep(model, net, data, states_, t1=t1_, ts=ts, lam=[float(v) for v in group_lams])
        for j, i in enumerate(rows):
            s, lam = missing[i]
            key = _key(model_name, lam, problem_name, quick, s, scale, rho_k, t1, data_seed)
            _RUNS[key] = (fs.load_model(model_name, lam=float(lam)), net, data, res.trajectory(j))
    while len(_RUNS) > _MAX_RUNS:
        del _RUNS[next(iter(_RUNS))]


# The steady-state test of the experiments' sweeps, ‖ẋ‖ ≤ STEADY_TOL (1 + ‖x‖). The default, 1e-6, stops the
# normalized flows on their slow plateaus (measured: at t ≈ 2–11, a state still moving, on 5-12-12-1 nets).
STEADY_TOL = 1e-9
# Their rtol: end states to ~1e-4, far inside what the experiments resolve. Measured on the min_norm members
# (one hidden layer, t1 = 100): rtol 1e-5 takes 40% fewer steps than the default 1e-6, and 1e-4 takes *more*
# (steps across kinks are rejected).
FINAL_RTOL = 1e-5


def final_sweep(model, net, data, states, *, t1: float, ts=None, lam=None, scale=None, seed=None):
    """A sweep to steady state (capped at `t1`), members in parallel over the devices; warns, not raises, on
    failures."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fs.sweep(
            model, net, data, states, t1=t1, ts=ts, lam=lam, scale=scale, seed=seed, steady_state=True,
            steady_tol=STEADY_TOL, rtol=FINAL_RTOL, throw=False,
        )  # fmt: skip


def plain_log_ticks(ax):
    """Log axes labelled at 1, 2 and 5 times the powers of ten, in plain numbers: the default minor labels
    (2×10¹, 3×10¹, …) collide on ranges of a decade or two."""
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, LogLocator, NullFormatter

    for axis, lim in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        if isinstance(axis.get_major_locator(), FixedLocator):  # ticks set by hand stay
            continue
        if axis.get_scale() == "log" and min(lim) > 0 and max(lim) / min(lim) < 100:  # wider: decades suffice
            axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(FormatStrFormatter("%g"))
            axis.set_minor_formatter(NullFormatter())


def save(fig, out: Path, name: str, title: str | None = None) -> str:
    """Write `fig` as ``out/name.png``; `title`, the prediction tested, goes on top."""
    fname = f"{name}.png"
    if title:
        fig.suptitle(title, fontsize=10)
    for ax in fig.axes:
        plain_log_ticks(ax)
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(out / fname, dpi=110)
    return fname


def log_ts(traj):
    return np.maximum(np.asarray(traj.ts), 1e-3)
