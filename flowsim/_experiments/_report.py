"""The report of ``flowsim reproduce``: the experiments in order, selection, running, and ``report.md``."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import flowsim as fs

from .._errors import InputError
from ._balance import exp_balance
from ._collapse import exp_collapse
from ._common import VERDICTS, Result
from ._critical import exp_critical
from ._margins import exp_margins
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
}


def select(only) -> list[str]:
    """The experiment names selected by ``only`` (None, a comma-separated string or a list); InputError if unknown."""
    if only is None:
        return list(EXPERIMENTS)
    names = only.split(",") if isinstance(only, str) else list(only)
    names = [n.strip() for n in names if n.strip()]
    bad = [n for n in names if n not in EXPERIMENTS]
    if bad or not names:
        raise InputError(
            f"argument `--only`: unknown experiment {', '.join(map(repr, bad)) or '(none)'}; "
            f"choose from {', '.join(EXPERIMENTS)}"
        )
    return names


def run_one(name: str, *, quick: bool = True, out="figures") -> Result:
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


def write_report(results: list[Result], out: Path, *, quick: bool, extras=()) -> Path:
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
        cells = [
            str(i),
            f"**{r.name}**: {r.prediction}",
            r.measurement,
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
