"""`flowsim reproduce` and `flowsim simulate`: the report, its verdicts and its figures."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_only_one_experiment(tmp_path, capsys):
    assert main(["reproduce", "--quick", "--out", str(tmp_path), "--only", "balance"]) == 0
    rows = _check_report(tmp_path, 1)
    assert "balance" in rows[0][1]
    assert "[1/1] balance" in capsys.readouterr().out


def test_bad_only_name_fails_clearly(tmp_path, capsys):
    assert main(["reproduce", "--quick", "--out", str(tmp_path), "--only", "rho_eq,nonsense"]) == 2
    err = capsys.readouterr().err
    assert "nonsense" in err and "choose from" in err and "rho_eq" in err
    assert not (tmp_path / "report.md").exists()


def test_bad_only_name_exit_status_from_console(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "flowsim.cli", "reproduce", "--quick", "--out", str(tmp_path),
                           "--only", "bogus"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "bogus" in proc.stderr


def test_simulate_command(tmp_path, capsys):
    png = tmp_path / "run.png"
    assert main(["simulate", "--model", "normalized", "--lam", "0.01", "--widths", "5,1", "--activation", "linear",
                 "--n", "12", "--t1", "20", "--out", str(png)]) == 0
    out = capsys.readouterr().out
    assert "rho_eq" in out and "margins" in out
    assert png.read_bytes()[:8] == PNG


def test_simulate_bad_input(capsys):
    assert main(["simulate", "--widths", "5,8,2", "--t1", "1"]) == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.slow
def test_reproduce_quick_end_to_end(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "flowsim.cli", "reproduce", "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _check_report(tmp_path, 9)
    assert [r[0] for r in rows] == [str(i) for i in range(1, 10)]
    for name in R.EXPERIMENTS:
        assert f"] {name} ..." in proc.stdout
    for name in ("phase_normalized.png", "phase_unnormalized.png"):  # the 2-D phase portraits, by reproduce
        assert (tmp_path / name).read_bytes()[:8] == PNG
        assert f"[{name}]({name})" in (tmp_path / "report.md").read_text(encoding="utf-8")
