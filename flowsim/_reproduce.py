"""The nine predictions of ``shared/theory.md``, one experiment each: a measured number, a reference, a verdict
computed from explicit thresholds, and a PNG figure.

Each experiment is a function ``(quick: bool, out: Path) -> Result``; :data:`EXPERIMENTS` lists them in order and
:func:`reproduce` runs a selection and writes ``report.md``. ``quick`` runs tiny networks and short times (the whole
set in a few minutes on two CPU cores); the full run uses larger data, longer times and more seeds.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import flowsim as fs  # noqa: E402
from ._errors import InputError  # noqa: E402
from ._sgd import stable_rank  # noqa: E402

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


# ---- shared problems and cached runs -------------------------------------------------------------------------

def _clusters_split(quick: bool):
    """The shared clusters problem: ``(train, test)``, a stratified split of two noisy Gaussian clusters."""
    full = fs.datasets.gaussian_clusters(n=36 if quick else 90, dim=5, seed=0, separation=2.5, noise=0.6)
    return full.split(1 / 3, seed=0)


def _clusters(quick: bool, n=None, seed=0):
    if n is None:
        return _clusters_split(quick)[0]
    return fs.datasets.gaussian_clusters(n=n, dim=5, seed=seed, separation=3.0, noise=0.5)


def _digits(quick: bool):
    data = fs.datasets.digits(3, 8)
    # full: 100 images and a 64-8-8-1 net (585 coordinates), ~1 min per run to t = 2000 with ε = 1e-5; the
    # 160-image 64-16-16-1 net (1,297 coordinates) took 640 s to reach t = 20, too slow for ten runs
    n = 30 if quick else 100
    idx = np.random.default_rng(0).permutation(data.n)[:n]
    return data.subset(np.sort(idx))


def _widths(quick: bool, d=5):
    return (d, 8, 1) if quick else (d, 16, 16, 1)


def _t1(quick: bool):
    return 200.0 if quick else 2000.0


def _run(model_name: str, lam: float, problem: str, quick: bool, seed: int = 0, scale: float = 0.5,
         rho_k: tuple | None = None, t1: float | None = None):
    """One cached flow run ``(model, net, data, trajectory)`` shared between experiments."""
    return _run_cached(model_name, float(lam), problem, bool(quick), int(seed), float(scale), rho_k, t1)


@functools.lru_cache(maxsize=None)
def _run_cached(model_name, lam, problem, quick, seed, scale, rho_k, t1):
    if problem == "clusters":
        data = _clusters(quick)
        net = fs.Network(_widths(quick))
    elif problem == "digits":
        data = _digits(quick)
        net = fs.Network((64, 6, 1) if quick else (64, 8, 8, 1))
    else:  # pragma: no cover - internal
        raise ValueError(problem)
    model = fs.load_model(model_name, lam=lam)
    s0 = model.init(net, key=seed, scale=scale)
    if rho_k is not None:
        s0 = model.state(V=s0.V, rho_k=list(rho_k) + [1.0] * (net.depth - len(rho_k)))
    t1 = t1 or (_t1(quick) / (2 if problem == "digits" and quick else 1))
    ts = np.concatenate([[0.0], np.geomspace(1e-2, t1, 40 if quick else 120)])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traj = fs.simulate(model, net, data, s0, t1=t1, ts=ts, progress=False)
    return model, net, data, traj


def _save(fig, out: Path, name: str) -> str:
    fname = f"{name}.png"
    fig.tight_layout()
    fig.savefig(out / fname, dpi=110)
    plt.close(fig)
    return fname


def _ts(traj):
    return np.maximum(np.asarray(traj.ts), 1e-3)


# ---- 1. rho tracks rho_eq, rho * y f -> 1 ----------------------------------------------------------------------

def exp_rho_eq(quick: bool, out: Path) -> Result:
    lam = 1e-2
    model, net, data, tr = _run("normalized", lam, "clusters", quick)
    rho, req = np.asarray(tr.rho), np.asarray(tr.rho_eq)
    prod = rho[:, None] * np.asarray(tr.margins)
    gap = abs(rho[-1] / req[-1] - 1.0)
    dev = float(np.median(np.abs(prod[-1] - 1.0)))
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    a.semilogx(_ts(tr), rho, label="ρ(t)")
    a.semilogx(_ts(tr), req, "--", label="ρ_eq(V(t))")
    a.set_xlabel("t"), a.set_ylabel("scale"), a.legend(), a.set_title(f"normalized, λ={lam}")
    b.semilogx(_ts(tr), np.median(prod, axis=1), label="median ρ y_n f_n")
    b.fill_between(_ts(tr), prod.min(1), prod.max(1), alpha=0.3, label="min–max")
    b.axhline(1.0, color="k", lw=0.8)
    b.set_ylim(-0.5, 1.5), b.set_xlabel("t"), b.legend()
    fig_name = _save(fig, out, "1_rho_eq")
    return Result(
        "rho_eq", "ρ tracks ρ_eq and settles with WD; ρ·y_n f_n → ≈1",
        f"|ρ/ρ_eq−1| = {gap:.2e} at t={tr.ts[-1]:.0f}; median |ρ y_n f_n − 1| = {dev:.3f}",
        "0 and 0 (holds: gap<1e-2 and median<0.1; partly: gap<0.1 and median<0.3)",
        grade(gap < 1e-2 and dev < 0.1, gap < 0.1 and dev < 0.3), fig_name, dev)


# ---- 2. margins equalize with WD ---------------------------------------------------------------------------

def _cv(m):
    return float(np.std(m) / max(abs(np.mean(m)), 1e-12))


def exp_margins(quick: bool, out: Path) -> Result:
    wd = 1e-1
    runs = {lam: _run("normalized", lam, "clusters", quick) for lam in (wd, 0.0)}
    cv = {lam: _cv(np.asarray(r[3].margins[-1])) for lam, r in runs.items()}
    ratio = cv[wd] / max(cv[0.0], 1e-12)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), sharey=True)
    for ax, (lam, (_, _, _, tr)) in zip(axes, runs.items()):
        idx = np.unique(np.geomspace(1, len(tr) - 1, 7).astype(int))
        m = np.asarray(tr.margins)
        lo, hi = m[idx].min(), m[idx].max()
        grid = np.linspace(lo - 0.05, hi + 0.05, 200)
        for j, i in enumerate(idx):
            bw = 0.05 * (hi - lo + 1e-9)
            dens = np.exp(-0.5 * ((grid[:, None] - m[i][None, :]) / bw) ** 2).sum(1)
            dens = 0.8 * dens / dens.max()
            ax.fill_between(grid, j, j + dens, alpha=0.6)
            ax.text(grid[0], j + 0.2, f"t={float(tr.ts[i]):.3g}", fontsize=7)
        ax.set_title(f"λ={lam}: CV of y_n f_n at end = {cv[lam]:.3f}")
        ax.set_xlabel("margin y_n f_n"), ax.set_yticks([])
    fig_name = _save(fig, out, "2_margin_ridges")
    return Result(
        "margins", "margins equalize under WD; spread stays wider without WD",
        f"normalized model: CV(y_n f_n) = std/mean at the end, λ={wd}: {cv[wd]:.3f}, λ=0 = {cv[0.0]:.3f} (ratio {ratio:.2f})",
        "ratio < 1 (holds: <0.8; partly: <1.0)", grade(ratio < 0.8, ratio < 1.0), fig_name, ratio)


# ---- 3. smaller rho <=> larger margin <=> lower test error -------------------------------------------------

def _spearman(a, b):
    """Spearman rank correlation with ties averaged; NaN when either side is constant."""
    from scipy.stats import rankdata

    ra, rb = rankdata(a), rankdata(b)
    if np.std(ra) == 0 or np.std(rb) == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def exp_norm_margin_error(quick: bool, out: Path) -> Result:
    _, test = _clusters_split(quick)
    configs = [("normalized", 1e-2, 0.5), ("normalized", 1e-1, 0.5)]
    configs += [("unnormalized", 0.0, sc) for sc in ((0.1, 4.0) if quick else (0.03, 0.1, 0.3, 1.0, 2.0, 4.0))]
    if not quick:
        configs += [("unnormalized", lam, 1.0) for lam in (1e-3, 1e-2)] + [("normalized", 1e-3, 0.5)]
    rows = []
    for name, lam, sc in configs:
        _, net, train, tr = _run(name, lam, "clusters", quick, scale=sc)
        f_test = np.asarray(net.forward(tr.final.V, jnp.asarray(test.x)))
        err = float(np.mean(np.sign(f_test) != test.y))
        rows.append((lam, sc, float(tr.rho[-1]), float(np.min(tr.margins[-1])), err, float(np.min(test.y * f_test))))
    rows = np.array(rows)
    c_rm = _spearman(rows[:, 2], rows[:, 3])
    c_me = _spearman(rows[:, 3], rows[:, 4])
    c_mt = _spearman(rows[:, 3], rows[:, 5])
    test_ok = c_me <= -0.5 if np.isfinite(c_me) else c_mt >= 0.5
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    for (name, lam, sc), r in zip(configs, rows):
        mk = "o" if name == "normalized" else "s"
        a.scatter(r[2], r[3], marker=mk)
        a.annotate(f"{name[:4]} λ={lam:g} s={sc:g}", (r[2], r[3]), fontsize=6)
        b.scatter(r[3], r[4], marker=mk)
    a.set_xlabel("final ρ"), a.set_ylabel("min train margin y_n f_n"), a.set_xscale("log")
    b.set_xlabel("min train margin"), b.set_ylabel(f"test error ({test.n} points)")
    fig_name = _save(fig, out, "3_norm_margin_error")
    return Result(
        "norm_margin_error", "smaller ρ ⇔ larger margin ⇔ lower test error",
        f"Spearman(ρ, min margin) = {c_rm:.2f}; Spearman(min margin, test error) = {c_me:.2f} "
        f"(test errors {', '.join(f'{e:.3f}' for e in rows[:, 4])}); Spearman(min margin, min test margin) = "
        f"{c_mt:.2f}; {len(rows)} runs (model × λ × init scale)",
        "−1, −1, +1 (holds: ρ–margin ≤ −0.8 and margin–test error ≤ −0.5, or, if the test errors are all equal, "
        "margin–test margin ≥ 0.5; partly: ρ–margin ≤ −0.5)",
        grade(c_rm <= -0.8 and test_ok, c_rm <= -0.5),
        fig_name, c_rm)


# ---- 4. normalized without WD is singular ------------------------------------------------------------------

def exp_singular(quick: bool, out: Path) -> Result:
    seeds = (0, 1) if quick else (0, 1, 2, 3)
    wd = 1e-1
    trs0 = [_run("normalized", 0.0, "digits", quick, seed=s)[3] for s in seeds]
    trsw = [_run("normalized", wd, "digits", quick, seed=s)[3] for s in seeds]

    def spread(trs):
        finals = np.array([float(t.rho[-1]) for t in trs])
        return float((finals.max() - finals.min()) / finals.mean())

    def drift(tr):
        r = np.asarray(tr.rho)
        half = int(np.searchsorted(np.asarray(tr.ts), tr.ts[-1] / 2))
        return float(abs(r[-1] - r[half]) / abs(r[-1]))

    s0, sw = spread(trs0), spread(trsw)
    d0, dw = max(map(drift, trs0)), max(map(drift, trsw))
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for s, t in zip(seeds, trs0):
        ax.loglog(_ts(t), np.asarray(t.rho), label=f"λ=0, init seed {s}")
    for s, t in zip(seeds, trsw):
        ax.loglog(_ts(t), np.asarray(t.rho), "--", label=f"λ={wd}, init seed {s}")
    ax.set_xlabel("t"), ax.set_ylabel("ρ"), ax.legend(fontsize=7), ax.set_title("normalized, digits 3/8")
    fig_name = _save(fig, out, "4_singular")
    measure = max(d0, s0)
    ref = max(dw, sw)
    return Result(
        "singular", "normalized without WD: ρ drifts / depends on the initial condition",
        f"λ=0: spread of final ρ over {len(seeds)} inits = {s0:.3f}, late drift = {d0:.1e}; "
        f"λ={wd}: spread {sw:.3f}, drift {dw:.1e}",
        "λ=0 ≫ WD (holds: max(spread, drift) > 0.05 and > 3× the WD value; partly: > 0.01)",
        grade(measure > 0.05 and measure > 3 * ref, measure > 0.01), fig_name, measure)


# ---- 5. no normalization, no WD: small init -> larger margin -----------------------------------------------

def exp_small_init(quick: bool, out: Path) -> Result:
    scales = (0.1, 4.0) if quick else (0.03, 0.1, 1.0, 4.0)
    runs = [_run("unnormalized", 0.0, "clusters", quick, seed=0, scale=s)[3] for s in scales]
    mins = [float(np.min(t.margins[-1])) for t in runs]
    means = [float(np.mean(t.margins[-1])) for t in runs]
    diff = mins[0] - mins[-1]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for s, t in zip(scales, runs):
        ax.semilogx(_ts(t), np.asarray(t.normalized_margin()), label=f"init scale {s}")
    ax.set_xlabel("t"), ax.set_ylabel("min_n y_n f_n (normalized)"), ax.legend(fontsize=8)
    ax.set_title("unnormalized, λ=0")
    fig_name = _save(fig, out, "5_small_init")
    return Result(
        "small_init", "no normalization, no WD: small initial scale ⇒ larger margin",
        f"min margin: scale {scales[0]} → {mins[0]:.4f}, scale {scales[-1]} → {mins[-1]:.4f}",
        "small > large (holds: min margin larger by > 1e-3; partly: mean margin larger)",
        grade(diff > 1e-3, means[0] > means[-1]), fig_name, diff)


# ---- 6. layer balance ----------------------------------------------------------------------------------------

def exp_balance(quick: bool, out: Path) -> Result:
    lam = 1e-2
    rk = (1.5, 0.5)
    def run(lam_):
        # the scales as integrated (enforce_balance=False): measure the law instead of imposing it
        model = fs.load_model("unnormalized", lam=lam_)
        data, net = _clusters(quick), fs.Network(_widths(quick))
        s0 = model.init(net, key=0, scale=0.75)
        s0 = model.state(V=s0.V, rho_k=list(rk) + [1.0] * (net.depth - len(rk)))
        ts = np.linspace(0.0, _t1(quick), 41)
        return model, fs.simulate(model, net, data, s0, t1=_t1(quick), ts=ts, rtol=1e-9, atol=1e-12,
                                  enforce_balance=False, progress=False)

    tr0 = run(0.0)[1]
    model, trw = run(lam)
    inv0 = np.asarray(tr0.rho_k[:, -1] ** 2 - tr0.rho_k[:, 0] ** 2)
    invw = np.asarray(trw.rho_k[:, -1] ** 2 - trw.rho_k[:, 0] ** 2)
    cons = float(np.max(np.abs(inv0 - inv0[0])) / abs(inv0[0]))
    t = np.asarray(trw.ts)
    keep = np.abs(invw) > 1e-8 * abs(invw[0])
    rate = float(np.polyfit(t[keep], np.log(np.abs(invw[keep])), 1)[0])
    ref = model.invariant_rate()  # -4 lambda
    rel = abs(rate / ref - 1.0)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(t, np.abs(inv0), label="λ=0")
    ax.semilogy(t, np.abs(invw), label=f"λ={lam}")
    ax.semilogy(t, abs(invw[0]) * np.exp(ref * t), "k:", label="e^{−4λt}")
    ax.set_xlabel("t"), ax.set_ylabel("|ρ_L² − ρ_1²|"), ax.legend(fontsize=8)
    fig_name = _save(fig, out, "6_balance")
    return Result(
        "balance", "ρ_k²−ρ_j² conserved without WD, decays at rate 4λ with WD",
        f"λ=0: max rel. change {cons:.1e}; λ={lam}: fitted rate {rate:.5f}",
        f"0 and {ref:.5f} (holds: change<1e-3, rate within 5%; partly: <1e-2, 20%)",
        grade(cons < 1e-3 and rel < 0.05, cons < 1e-2 and rel < 0.2), fig_name, rate)


# ---- 7. neural collapse ------------------------------------------------------------------------------------

def _collapse(net, V, data):
    h = np.asarray(net.features(V, jnp.asarray(data.x)))
    y = data.y
    mu = {c: h[y == c].mean(0) for c in (-1.0, 1.0)}
    g = h.mean(0)
    sw = sum(((h[y == c] - mu[c]) ** 2).sum() for c in mu) / len(h)
    sb = sum((y == c).mean() * ((mu[c] - g) ** 2).sum() for c in mu)
    nc1 = float(sw / max(sb, 1e-300))
    d = mu[1.0] - mu[-1.0]
    w = np.asarray(V[-1]).ravel()
    align = float(w @ d / (np.linalg.norm(w) * np.linalg.norm(d) + 1e-300))
    return nc1, align


def exp_collapse(quick: bool, out: Path) -> Result:
    lams = (0.0, 1e-1) if quick else (0.0, 1e-3, 1e-2, 1e-1)
    res = []
    for lam in lams:
        _, net, data, tr = _run("normalized", lam, "digits", quick)
        res.append((_collapse(net, tr.final.V, data), _collapse(net, tr.state(0).V, data)))
    nc1 = [r[0][0] for r in res]
    al = [r[0][1] for r in res]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    x = np.arange(len(lams))
    a.semilogy(x, nc1, "o-", label="end"), a.axhline(res[0][1][0], color="k", ls=":", label="init")
    a.set_xticks(x, [str(v) for v in lams]), a.set_xlabel("λ"), a.set_ylabel("tr Σ_W / tr Σ_B"), a.legend()
    b.plot(x, al, "o-"), b.set_xticks(x, [str(v) for v in lams]), b.set_xlabel("λ")
    b.set_ylabel("cos(V_L, μ₊ − μ₋)"), b.set_ylim(-1, 1.05)
    fig.suptitle("digits 3 vs 8, last hidden layer")
    fig_name = _save(fig, out, "7_collapse")
    falls, aligns = nc1[-1] < nc1[0], al[-1] > al[0]
    return Result(
        "collapse", "with WD: within-class variability falls; last layer aligns with class-mean difference",
        f"Σ_W/Σ_B: λ={lams[0]} → {nc1[0]:.3f}, λ={lams[-1]} → {nc1[-1]:.3f}; "
        f"alignment {al[0]:.3f} → {al[-1]:.3f} (digits 3/8, N={data.n})",
        "decreasing NC1, increasing alignment with λ (holds: both; partly: one, or alignment > 0.9 at largest λ)",
        grade(falls and aligns, falls or aligns or al[-1] > 0.9), fig_name, nc1[-1])


# ---- 8. critical-point relation ----------------------------------------------------------------------------

def critical_cosines(model, net, data, state, eps: float | None = None):
    """cos(λρV_k, Σ_n r_n ∂f_n/∂V_k) for every layer, the sum computed with ``jax.vjp`` of the forward pass.

    ``eps=None`` differentiates the exact ReLU (σ′ = 1[z > 0]); ``eps > 0`` the solver's smoothed σ′ (the
    Sotomayor–Teixeira regularization, whose limit is the Filippov flow that slides along switching surfaces).
    """

    x, y = jnp.asarray(data.x), jnp.asarray(data.y)
    V = tuple(state.V)
    f, pull = jax.vjp(lambda V_: net._forward(V_, x, eps), V)
    rho = state.rho
    r = y - rho * f
    G = pull(r)[0]
    out = []
    for Vk, Gk in zip(V, G):
        a = model.lam * rho * Vk
        out.append(float(jnp.vdot(a, Gk) / (jnp.linalg.norm(a) * jnp.linalg.norm(Gk) + 1e-300)))
    return out


def exp_critical(quick: bool, out: Path) -> Result:
    from ._integrate import DEFAULT_SMOOTHING

    model, net, data, tr = _run("normalized", 1e-2, "clusters", quick)
    cos = np.array([critical_cosines(model, net, data, tr.state(i)) for i in range(len(tr))])
    cos_s = np.array([critical_cosines(model, net, data, tr.state(i), DEFAULT_SMOOTHING) for i in range(len(tr))])
    worst, worst_s = float(cos[-1].min()), float(cos_s[-1].min())
    pinned = int(np.sum(np.abs(np.asarray(net.preactivations(tr.final.V, jnp.asarray(data.x))[-1])) < 10 * DEFAULT_SMOOTHING))
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for k in range(cos.shape[1]):
        ax.semilogx(_ts(tr), cos[:, k], label=f"layer {k + 1}, exact σ′")
        ax.semilogx(_ts(tr), cos_s[:, k], "--", label=f"layer {k + 1}, smoothed σ′ (ε={DEFAULT_SMOOTHING:g})")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xlabel("t"), ax.set_ylabel("cos(λρV_k, Σ r_n ∂f_n/∂V_k)"), ax.legend(fontsize=7)
    fig_name = _save(fig, out, "8_critical")
    return Result(
        "critical", "critical-point relation λρV_k = Σ r_n ∂f_n/∂V_k at the end",
        f"min cosine over layers at t={tr.ts[-1]:.0f}: {worst_s:.5f} with the solver's smoothed σ′ (Filippov), "
        f"{worst:.5f} with the exact ReLU σ′ ({pinned} hidden pre-activations of the last layer within 10ε of 0); t=0: {cos[0].min():.3f}",
        "1 (holds: both > 0.99; partly: smoothed > 0.99 or exact > 0.9)",
        grade(worst > 0.99 and worst_s > 0.99, worst_s > 0.99 or worst > 0.9), fig_name, worst_s)


# ---- 9. SGD fluctuation and stable rank vs batch size --------------------------------------------------------

def exp_sgd(quick: bool, out: Path) -> Result:
    lam = 5e-2
    data = _clusters(quick, n=32 if quick else 64)
    net = fs.Network((5, 16, 1) if quick else (5, 32, 32, 1))
    model = fs.load_model("unnormalized", lam=lam)
    s0 = model.init(net, key=0, scale=1.0)
    lr = 1e-3
    steps = 40000 if quick else 200000
    rec = 200
    batches = (2, 8, data.n) if quick else (1, 4, 16, data.n)
    stats = {}
    for b in batches:
        tr = fs.sgd(model, net, data, s0, lr=lr, steps=steps, batch_size=None if b == data.n else b, seed=0,
                    record_every=rec)
        ts, rho = np.asarray(tr.ts), np.asarray(tr.rho)
        W1 = np.asarray(tr.rho_k[-1, 0] * tr.V[0][-1])
        late = ts >= ts[-1] / 2
        trend = np.polyval(np.polyfit(ts[late], rho[late], 2), ts[late])
        fluct = float(np.std(rho[late] - trend) / np.mean(rho[late]))  # detrended: noise, not the slow decay
        stats[b] = (ts, rho, fluct, float(stable_rank(W1)))
    small, fullb = batches[0], batches[-1]
    f_ratio = stats[small][2] / max(stats[fullb][2], 1e-15)
    sr_small, sr_full = stats[small][3], stats[fullb][3]
    lower_rank = sr_small < 0.98 * sr_full
    fig, (a, b_) = plt.subplots(1, 2, figsize=(9, 3.6))
    for b in batches:
        a.plot(stats[b][0], stats[b][1], lw=0.8, label=f"batch {b}" + (" (full)" if b == data.n else ""))
    a.set_xlabel("t = lr·step"), a.set_ylabel("ρ"), a.legend(fontsize=8)
    b_.plot(batches, [stats[b][3] for b in batches], "o-"), b_.set_xscale("log")
    b_.set_xticks(batches, [str(b) for b in batches]), b_.minorticks_off()
    b_.set_xlabel("batch size"), b_.set_ylabel("stable rank of W_1 at end")
    fig.suptitle(f"unnormalized, λ={lam}, lr={lr}")
    fig_name = _save(fig, out, "9_sgd")
    return Result(
        "sgd", "SGD+WD, small batches: persistent fluctuation and lower-rank weights than full-batch GD",
        f"late detrended std(ρ)/mean(ρ): batch {small} → {stats[small][2]:.2e}, full → {stats[fullb][2]:.2e}; "
        f"stable rank W_1: {sr_small:.2f} vs {sr_full:.2f}",
        "fluctuation ratio ≫ 1, rank small < full (holds: ratio>10 and rank lower by >2%; partly: one of them)",
        grade(f_ratio > 10 and lower_rank, f_ratio > 10 or lower_rank), fig_name, f_ratio)


# ---- the report --------------------------------------------------------------------------------------------

EXPERIMENTS = {
    "rho_eq": exp_rho_eq,
    "margins": exp_margins,
    "norm_margin_error": exp_norm_margin_error,
    "singular": exp_singular,
    "small_init": exp_small_init,
    "balance": exp_balance,
    "collapse": exp_collapse,
    "critical": exp_critical,
    "sgd": exp_sgd,
}


def select(only) -> list[str]:
    """The experiment names selected by ``only`` (None, a comma-separated string or a list); InputError if unknown."""
    if only is None:
        return list(EXPERIMENTS)
    names = only.split(",") if isinstance(only, str) else list(only)
    names = [n.strip() for n in names if n.strip()]
    bad = [n for n in names if n not in EXPERIMENTS]
    if bad or not names:
        raise InputError(f"argument `--only`: unknown experiment {', '.join(map(repr, bad)) or '(none)'}; "
                         f"choose from {', '.join(EXPERIMENTS)}")
    return names


def run_one(name: str, quick: bool = True, out="figures") -> Result:
    """Run one experiment, writing its figure into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res = EXPERIMENTS[name](quick, out)
    res.seconds = time.perf_counter() - t0
    assert res.verdict in VERDICTS
    return res


def extra_figures(out: Path, quick: bool, echo) -> list[str]:
    """The phase portraits of :func:`flowsim.plot.save_all`: the 2-D ones always, the deep one in the full run."""
    t0 = time.perf_counter()
    paths = fs.plot.save_all(out, quick=quick, deep=not quick)
    echo(f"      phase portraits: {len(paths)} figure(s) ({time.perf_counter() - t0:.1f} s)")
    return [Path(p).name for p in paths]


def write_report(results: list[Result], out: Path, quick: bool, extras=()) -> Path:
    lines = [
        f"# flowsim: predictions reproduced ({'quick' if quick else 'full'} run)",
        "",
        "Verdicts are computed from the measured numbers with the thresholds stated in the reference column.",
        "",
        "| # | prediction | measurement | reference | verdict | figure |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        i = list(EXPERIMENTS).index(r.name) + 1
        cells = [str(i), f"**{r.name}**: {r.prediction}", r.measurement, r.reference, r.verdict,
                 f"[{r.figure}]({r.figure})"]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if extras:
        lines += ["", "Phase portraits (`flowsim.plot.save_all`): " + ", ".join(f"[{e}]({e})" for e in extras)]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def reproduce(quick: bool = True, out="figures", only=None, echo=None) -> list[Result]:
    """Run the selected experiments, print a line for each, write the figures and ``report.md`` into ``out``."""
    names = select(only)
    echo = echo or functools.partial(print, flush=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for i, name in enumerate(names, 1):
        echo(f"[{i}/{len(names)}] {name} ...")
        r = run_one(name, quick, out)
        results.append(r)
        echo(f"      {r.verdict:6s} {r.measurement} ({r.seconds:.1f} s)")
    extras = extra_figures(out, quick, echo) if only is None else []
    write_report(results, out, quick, extras)
    return results
