"""flowsim._experiments: the verdicts, and the quick reproduce run end to end (through the command line), with
verdicts and numbers that can fail."""

import math
import re
from pathlib import Path

import pytest

import flowsim as fs
from flowsim import _experiments as R
from flowsim.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def _rows(report: Path):
    lines = [ln for ln in report.read_text(encoding="utf-8").splitlines() if re.match(r"^\| \d+ \|", ln)]
    rows = []
    for ln in lines:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]]
        rows.append(cells)
    return rows


def _check_report(out: Path, n: int):
    report = out / "report.md"
    assert report.is_file()
    rows = _rows(report)
    assert len(rows) == n
    for cells in rows:
        assert len(cells) == 6, cells
        assert cells[4] in R.VERDICTS
        fig = re.fullmatch(r"\[(.+)\]\((.+)\)", cells[5])
        assert fig, cells[5]
        path = out / fig.group(2)
        assert path.is_file() and path.stat().st_size > 1000
        assert path.read_bytes()[:8] == PNG
    return rows


def test_grade_is_computed():
    assert R.grade(True, True) == "holds"
    assert R.grade(False, True) == "partly"
    assert R.grade(False, False) == "fails"
    assert len(R.EXPERIMENTS) == 9


def test_select_names_and_rejects_unknown_ones():
    assert R.select(None) == list(R.EXPERIMENTS)
    assert R.select("balance, sgd") == ["balance", "sgd"] and R.select(["critical"]) == ["critical"]
    for bad in ("nonsense", "", ["rho_eq", "x"]):
        with pytest.raises(fs.InputError, match="choose from"):
            R.select(bad)


@pytest.mark.slow
def test_reproduce_quick_end_to_end(tmp_path, monkeypatch, capsys):
    """`flowsim reproduce --quick` writes one row per prediction with its figure, and the robust predictions hold
    on the quick problems: ρ settles at ρ_eq, the balance law is exact, small initializations give larger
    margins, the critical-point relation holds with the solver's σ′, and small batches fluctuate more."""
    results = []
    run = R.reproduce
    monkeypatch.setattr(R, "reproduce", lambda **kw: results.extend(run(**kw)) or results)
    assert main(["reproduce", "--quick", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = _check_report(tmp_path, 9)
    assert [r[0] for r in rows] == [str(i) for i in range(1, 10)]
    for name in R.EXPERIMENTS:
        assert f"] {name} ..." in out
    by_name = {r.name: r for r in results}
    assert list(by_name) == list(R.EXPERIMENTS)
    for r, cells in zip(results, rows):
        assert f"**{r.name}**" in cells[1] and cells[4] == r.verdict  # the table shows the computed verdicts
        assert math.isfinite(r.value) and r.seconds > 0, r
    counts = ", ".join(f"{sum(r.verdict == v for r in results)} {v}" for v in R.VERDICTS)
    assert counts in out
    assert by_name["rho_eq"].verdict == "holds" and by_name["rho_eq"].value < 0.1  # median |ρ y_n f_n − 1|
    assert by_name["balance"].verdict == "holds" and by_name["balance"].value == pytest.approx(-0.04, rel=0.05)
    assert by_name["small_init"].verdict == "holds" and by_name["small_init"].value > 1e-3
    assert by_name["critical"].value > 0.99  # smoothed σ′: the relation holds on the solver's Filippov flow
    assert by_name["sgd"].value > 1.0  # late fluctuation of ρ, batch 2 over full batch
    for name in ("phase_normalized.png", "phase_unnormalized.png"):  # the 2-D phase portraits, by reproduce
        assert (tmp_path / name).read_bytes()[:8] == PNG
        assert f"[{name}]({name})" in (tmp_path / "report.md").read_text(encoding="utf-8")
