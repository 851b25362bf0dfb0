"""flowsim.cli: the `flowsim` command — `reproduce` (selection, errors, exit status) and `simulate`."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import flowsim as fs
from flowsim import _experiments as R
from flowsim.cli import main
from helpers import QUARTIC_REGIME_FILE

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


# ---- simulate's options ----------------------------------------------------------------------------
class _Stop(Exception):
    pass


@pytest.fixture
def captured(monkeypatch):
    """Replace fs.simulate by a recorder that stops the command before any solve: what would have run."""
    calls = []

    def fake(model, net, data, state, **kwargs):
        calls.append(dict(model=model, net=net, data=data, state=state, **kwargs))
        raise fs.SolveError("stopped by the test")

    monkeypatch.setattr(fs, "simulate", fake)
    return calls


def test_simulate_passes_solver_options_and_separate_seeds(captured, capsys):
    argv = ["simulate", "--solver", "tsit5", "--smoothing", "1e-3", "--rtol", "1e-5", "--loss", "logistic"]
    argv += ["--data-seed", "3", "--init-seed", "4", "--widths", "16,16", "--scale", "2"]
    assert main(argv) == 1  # the recorder's SolveError: a failed run, not a usage error
    assert "stopped by the test" in capsys.readouterr().err
    (call,) = captured
    assert (call["solver"], call["smoothing"], call["rtol"]) == ("tsit5", 1e-3, 1e-5)
    assert call["model"].loss == "logistic" and call["net"].widths == (5, 16, 16, 1)
    data = fs.datasets.gaussian_clusters(n=40, dim=5, seed=3)
    np.testing.assert_array_equal(np.asarray(call["data"].x), np.asarray(data.x))
    s0 = call["model"].init(call["net"], seed=4, scale=2.0)
    np.testing.assert_array_equal(np.asarray(call["state"].V[0]), np.asarray(s0.V[0]))


def test_simulate_defaults(captured):
    assert main(["simulate"]) == 1
    (call,) = captured
    assert (call["solver"], call["smoothing"], call["rtol"]) == ("rosenbrock", "auto", 1e-6)
    assert call["model"].name == "normalized" and call["model"].loss == "square" and call["net"].widths == (5, 8, 1)


def test_simulate_smoothing_none_is_the_raw_field(captured):
    assert main(["simulate", "--smoothing", "none"]) == 1 and main(["simulate", "--smoothing", "0"]) == 1
    assert captured[0]["smoothing"] is None and captured[1]["smoothing"] == 0.0  # 0: the exact flow


def test_simulate_smoothing_zero_runs_the_exact_flow(capsys):
    assert main(["simulate", "--smoothing", "0", "--t1", "0.5"]) == 0
    assert "crossings" in capsys.readouterr().out


def test_simulate_seed_is_a_deprecated_alias_of_both_seeds(captured, capsys):
    assert main(["simulate", "--seed", "7"]) == 1
    assert "--seed is deprecated" in capsys.readouterr().err
    assert main(["simulate", "--seed", "7", "--init-seed", "1"]) == 1  # the specific flag wins
    data7 = np.asarray(fs.datasets.gaussian_clusters(n=40, dim=5, seed=7).x)
    for call, init_seed in zip(captured, (7, 1)):
        np.testing.assert_array_equal(np.asarray(call["data"].x), data7)
        s0 = call["model"].init(call["net"], seed=init_seed, scale=0.5)
        np.testing.assert_array_equal(np.asarray(call["state"].V[0]), np.asarray(s0.V[0]))


def test_simulate_input_width_is_the_datas_dimension(captured):
    """The first width is the data's: digits work with the default widths; a full list must start with it."""
    assert main(["simulate", "--data", "digits", "--n", "12"]) == 1
    assert main(["simulate", "--data", "digits", "--widths", "16,4"]) == 1
    assert main(["simulate", "--data", "digits", "--widths", "64,16,1"]) == 1
    assert main(["simulate", "--widths", "5,8,1"]) == 1  # the form before: all the widths, d_0 matching
    assert main(["simulate", "--widths", "3,8,1"]) == 1  # clusters take their dimension from it
    assert main(["simulate", "--dim", "7"]) == 1
    widths = [c["net"].widths for c in captured]
    assert widths == [(64, 8, 1), (64, 16, 4, 1), (64, 16, 1), (5, 8, 1), (3, 8, 1), (7, 8, 1)]
    assert captured[0]["data"].n == 12 and captured[4]["data"].dim == 3


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "digits", "--widths", "5,8,1"], "dimension 64; give only the hidden widths (--widths 8)"),
        (["--dim", "4", "--widths", "5,8,1"], "dimension 4"),
        (["--data", "digits", "--widths", "5,1"], "start the list with 64"),
        (["--data", "digits", "--dim", "5"], "dimension 64"),
    ],
)
def test_simulate_widths_that_do_not_fit_the_data_fail_clearly(captured, capsys, argv, message):
    assert main(["simulate", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flowsim simulate: error:") and message in err
    assert not captured


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--solver", "bdf"], "argument --solver: invalid choice: 'bdf'"),
        (["--loss", "hinge"], "argument --loss: invalid choice: 'hinge'"),
        (["--model", "nonsense"], "argument --model: invalid choice: 'nonsense' (choose from normalized"),
        (["--model", "missing.py"], "argument --model: invalid choice: 'missing.py' (choose from"),
        (["--rtol", "0"], "argument --rtol: '0': expected a number > 0"),
        (["--rtol", "tight"], "argument --rtol: 'tight': expected a number"),
        (["--smoothing", "-0.001"], "argument --smoothing: '-0.001': expected a number >= 0"),
        (["--lam", "-1"], "argument --lam: '-1': expected a number >= 0"),
        (["--t1", "inf"], "argument --t1: 'inf': expected a finite number"),
        (["--widths", "8,x"], "argument --widths: '8,x': expected comma-separated integers"),
        (["--widths", "0"], "argument --widths: '0': expected widths >= 1"),
        (["--n", "0"], "argument --n: '0': expected an integer >= 1"),
        (["--init-seed", "1.5"], "argument --init-seed: invalid int value: '1.5'"),
        (["--data", "mnist"], "argument --data: invalid choice: 'mnist'"),
    ],
)
def test_simulate_bad_values_exit_2_with_a_clear_message(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        main(["simulate", *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "flowsim simulate: error: " + message in err


def test_simulate_help_lists_the_choices(capsys):
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    out = capsys.readouterr().out
    assert "{" + ",".join(fs.available_models()) + "}" in out
    assert "{rosenbrock,tsit5,dopri5,dopri8,kvaerno5}" in out and "{square,exponential,logistic}" in out


def test_simulate_a_regime_file_with_options(tmp_path, capsys):
    """End to end: a regime of one's own from a file, a diffrax solver, a tolerance and another loss."""
    path = tmp_path / "quartic.py"
    path.write_text(QUARTIC_REGIME_FILE, encoding="utf-8")
    argv = ["simulate", "--model", str(path), "--lam", "0.1", "--activation", "linear", "--widths", "3,1"]
    argv += ["--n", "12", "--t1", "2", "--solver", "tsit5", "--rtol", "1e-5", "--loss", "exponential"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Model('quartic', lam=0.1, loss='exponential')" in out and "net (3, 1) linear" in out
    assert "method=tsit5" in out and "rtol=1e-05" in out and "status=ok" in out
