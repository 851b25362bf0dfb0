"""flowsim.cli: the `flowsim` command — `reproduce` (selection, errors, exit status) and `simulate`."""

import re
import subprocess
import sys
from pathlib import Path

from flowsim import _experiments as R
from flowsim.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def _rows(report: Path):
    lines = [ln for ln in report.read_text(encoding="utf-8").splitlines() if re.match(r"^\| \d+ \|", ln)]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", ln)[1:-1]] for ln in lines]


def test_list_prints_the_experiments(capsys):
    assert main(["reproduce", "--list"]) == 0
    assert capsys.readouterr().out.split() == list(R.EXPERIMENTS)


def test_only_one_experiment(tmp_path, capsys):
    assert main(["reproduce", "--quick", "--out", str(tmp_path), "--only", "balance"]) == 0
    (row,) = _rows(tmp_path / "report.md")
    assert "balance" in row[1] and row[4] in R.VERDICTS
    assert (tmp_path / "6_balance.png").read_bytes()[:8] == PNG and row[5] == "[6_balance.png](6_balance.png)"
    out = capsys.readouterr().out
    assert "[1/1] balance" in out and "report:" in out


def test_bad_only_name_fails_clearly(tmp_path, capsys):
    assert main(["reproduce", "--quick", "--out", str(tmp_path), "--only", "rho_eq,nonsense"]) == 2
    err = capsys.readouterr().err
    assert "nonsense" in err and "choose from" in err and "rho_eq" in err
    assert not (tmp_path / "report.md").exists()


def test_bad_only_name_exit_status_from_console(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "flowsim.cli", "reproduce", "--quick", "--out", str(tmp_path), "--only", "bogus"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "bogus" in proc.stderr


def test_simulate_command(tmp_path, capsys):
    png = tmp_path / "run.png"
    assert (
        main(
            [
                "simulate",
                "--model",
                "normalized",
                "--lam",
                "0.01",
                "--widths",
                "5,1",
                "--activation",
                "linear",
                "--n",
                "12",
                "--t1",
                "20",
                "--out",
                str(png),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "rho_eq" in out and "margins" in out
    assert png.read_bytes()[:8] == PNG


def test_simulate_bad_input(capsys):
    assert main(["simulate", "--widths", "5,8,2", "--t1", "1"]) == 2
    assert "error" in capsys.readouterr().err
