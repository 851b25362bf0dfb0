"""The report of ``flowsim reproduce``: the experiments in order, selection, running, and ``report.md``."""

from __future__ import annotations

import functools
import tempfile
import time
from pathlib import Path

import numpy as np

import flowsim as fs

from .._errors import InputError
from ._balance import exp_balance
from ._collapse import exp_collapse
from ._common import DATA_SEEDS, VERDICTS, Result, median_verdict
from ._critical import exp_critical
from ._margins import exp_margins
from ._min_norm import exp_min_norm
from ._norm_margin_error import exp_norm_margin_error
from ._rho_eq import exp_rho_eq
from ._sgd_noise import exp_sgd
from ._singular import exp_singular
from ._small_init import exp_small_init

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
    "min_norm": exp_min_norm,
}


def select(only, argument: str = "--only") -> list[str]:
    """The experiment names selected by ``only`` (None, a comma-separated string or a list); InputError naming
    `argument` if one is unknown."""
    if only is None:
        return list(EXPERIMENTS)
    names = only.split(",") if isinstance(only, str) else list(only)
    names = [n.strip() for n in names if n.strip()]
    bad = [n for n in names if n not in EXPERIMENTS]
    if bad or not names:
        raise InputError(
            f"argument `{argument}`: unknown experiment {', '.join(map(repr, bad)) or '(none)'}; "
            f"choose from {', '.join(EXPERIMENTS)}"
        )
    return names


def run_one(name: str, *, quick: bool = True, out="figures", seeds=None) -> Result:
    """Run one experiment on each data seed, writing the first seed's figure into ``out``.

    `seeds` defaults to ``(0,)`` in the quick run and :data:`DATA_SEEDS` in the full run. With several seeds the
    verdict is their median (holds > partly > fails) and ``Result.seeds`` lists each seed's value and verdict.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = tuple(seeds or ((0,) if quick else DATA_SEEDS))
    t0 = time.perf_counter()
    res = EXPERIMENTS[name](quick, out, seed=seeds[0])
    per_seed = [(seeds[0], res.value, res.verdict)]
    with tempfile.TemporaryDirectory() as tmp:  # the other seeds' figures are not kept
        for s in seeds[1:]:
            r = EXPERIMENTS[name](quick, Path(tmp), seed=s)
            per_seed.append((s, r.value, r.verdict))
    res.seeds = tuple(per_seed)
    res.verdict = median_verdict([v for *_, v in per_seed])
    res.seconds = time.perf_counter() - t0
    assert res.verdict in VERDICTS
    return res


def _robustness(r: Result) -> str:
    if len(r.seeds) < 2:
        return ""
    values = np.array([v for _, v, _ in r.seeds], dtype=float)
    each = ", ".join(f"{s}: {v:.3g} ({verdict})" for s, v, verdict in r.seeds)
    return f"; per data seed (value, verdict): {each}; spread {np.ptp(values):.2g}"


def extra_figures(out: Path, quick: bool, echo) -> list[str]:
    """The phase portraits of :func:`flowsim.plot.save_all`: the 2-D ones always, the deep one in the full run."""
    t0 = time.perf_counter()
    paths = fs.plot.save_all(out, quick=quick, deep=not quick)
    echo(f"      phase portraits: {len(paths)} figure(s) ({time.perf_counter() - t0:.1f} s)")
    return [Path(p).name for p in paths]


def write_report(results: list[Result], out: Path, *, quick: bool, extras=()) -> Path:
    lines = [
        f"# flowsim: predictions reproduced ({'quick' if quick else 'full'} run)",
        "",
        "Verdicts are computed from the measured numbers with the thresholds stated in the reference column."
        + (
            ""
            if quick
            else f" Each experiment ran on the data seeds {', '.join(map(str, DATA_SEEDS))}: the "
            "measurement and the figure are the first seed's, the verdict is the median over the seeds."
        ),
        "",
        "| # | prediction | measurement | reference | verdict | figure |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        i = list(EXPERIMENTS).index(r.name) + 1
        cells = [
            str(i),
            f"**{r.name}**: {r.prediction}",
            r.measurement + _robustness(r),
            r.reference,
            r.verdict,
            f"[{r.figure}]({r.figure})",
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if extras:
        lines += ["", "Phase portraits (`flowsim.plot.save_all`): " + ", ".join(f"[{e}]({e})" for e in extras)]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def reproduce(*, quick: bool = True, out="figures", only=None, echo=None) -> list[Result]:
    """Run the selected experiments, print a line for each, write the figures and ``report.md`` into ``out``."""
    names = select(only)
    echo = echo or functools.partial(print, flush=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for i, name in enumerate(names, 1):
        echo(f"[{i}/{len(names)}] {name} ...")
        r = run_one(name, quick=quick, out=out)
        results.append(r)
        echo(f"      {r.verdict:6s} {r.measurement} ({r.seconds:.1f} s)")
    extras = extra_figures(out, quick, echo) if only is None else []
    write_report(results, out, quick=quick, extras=extras)
    return results
