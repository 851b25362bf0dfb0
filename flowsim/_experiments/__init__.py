"""The experiments of ``flowsim reproduce``: one module per prediction of ``theory.md``, each a function
``(quick: bool, out: Path) -> Result`` with a measured number, a reference, a verdict computed from explicit
thresholds and a PNG figure; :mod:`._report` runs a selection and writes ``report.md``.

``quick`` runs tiny networks and short times (the whole set in a few minutes on two CPU cores); the full run
uses larger data, longer times and more seeds.
"""

from ._common import VERDICTS as VERDICTS, Result as Result, grade as grade
from ._report import (
    EXPERIMENTS as EXPERIMENTS,
    extra_figures as extra_figures,
    reproduce as reproduce,
    run_one as run_one,
    select as select,
    write_report as write_report,
)
