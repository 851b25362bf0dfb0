"""``fs.reproduce``: the predictions of docs/theory.md from Python — what ``flowsim reproduce`` runs."""

from __future__ import annotations

import os
from collections.abc import Sequence

from ._errors import Checked, fail


def reproduce(
    *,
    quick: Checked[bool] = True,
    out: Checked[str | os.PathLike] = "figures",
    only: Checked[str | Sequence[str] | None] = None,
) -> list:
    """Run the experiments of `flowsim reproduce`, one per prediction, and write their figures and report.

    Each experiment measures one prediction of the theory (docs/theory.md, "The predictions"), compares the
    number with a reference, computes a verdict from thresholds stated beside it, and draws a figure. The
    command line `flowsim reproduce [--quick] [--out DIR] [--only NAMES]` runs exactly this function.

    **Arguments:**

    - `quick`: tiny networks, short times and one data seed (about 3 minutes for all of them on two CPU
      cores); ``False``: the full run, larger networks and longer times, every experiment repeated on the
      data seeds 0, 1 and 2 (the verdict is their median; each seed's value and verdict are reported).
    - `out`: the folder for the figures (one PNG per experiment) and `report.md`, created if needed.
    - `only`: the experiments to run, as a list of names or one comma-separated string: ``"rho_eq"``,
      ``"margins"``, ``"norm_margin_error"``, ``"singular"``, ``"small_init"``, ``"balance"``,
      ``"collapse"``, ``"critical"``, ``"sgd"``, ``"min_norm"``; default ``None``, all of them, plus the phase portraits
      of [`flowsim.plot.save_all`][flowsim.plot.save_all].

    **Returns:** the list of results, in the order run. Each has `name`, `prediction`, `measurement` (the
    measured numbers, as text), `reference` (what they are compared with, and the thresholds), `verdict`
    (``"holds"``, ``"partly"`` or ``"fails"``), `figure` (the PNG's file name in `out`), `value` (the main
    measured number), `seconds` (its run time) and `seeds` (``(data seed, value, verdict)`` for each seed run).

    **Raises:** [`flowsim.InputError`][flowsim.InputError] for an unknown experiment name or a bad argument,
    before anything runs.
    """
    from . import _experiments

    if not isinstance(quick, bool):
        raise fail("quick", quick, "True or False")
    if not isinstance(out, (str, os.PathLike)) or not os.fspath(out):
        raise fail("out", out, "the path of a folder")
    if only is not None:
        if not isinstance(only, (str, Sequence)) or not all(isinstance(n, str) for n in only):
            raise fail("only", only, "None, a list of experiment names or a comma-separated string")
        only = _experiments.select(only, argument="only")
    return _experiments.reproduce(quick=quick, out=out, only=only)
