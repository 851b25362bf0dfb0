"""flowsim._experiments: the verdicts, and the quick reproduce run end to end (through the command line), with
verdicts and numbers that can fail."""

import math
import re
from pathlib import Path

import numpy as np
import pytest

import flowsim as fs
from flowsim import _experiments as R
from flowsim._experiments._common import Result, final_point, fit_margins, median_verdict
from flowsim._experiments._critical import critical_cosines, filippov_cosines
from flowsim._experiments._min_norm import final_rho_stats
from flowsim._experiments._small_init import plateau_time
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
    assert len(R.EXPERIMENTS) == 10 and list(R.EXPERIMENTS)[-1] == "min_norm"


def test_median_verdict_is_what_the_majority_reached():
    assert median_verdict(["holds", "fails", "holds"]) == "holds"
    assert median_verdict(["holds", "fails", "partly"]) == "partly"
    assert median_verdict(["fails", "fails", "holds"]) == "fails"
    assert median_verdict(["partly"]) == "partly"


def test_fit_margins_leaves_out_and_describes_stuck_samples():
    net = fs.Network((2, 3, 1))
    V = [np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]), np.array([[1.0, 1.0, 1.0]])]
    data = fs.Dataset(np.array([[1.0, 2.0], [2.0, 1.0], [0.0, 0.0]]), np.array([1.0, 1.0, 1.0]))
    fitted, stuck, text = fit_margins(net, V, data, [0.5, 0.6, 1e-6])
    assert stuck == 1 and sorted(fitted) == [0.5, 0.6]
    # the third sample is the origin: all three of its last-hidden pre-activations are 0, at the kink
    assert "1 stuck" in text and "3 of 3" in text
    fitted, stuck, text = fit_margins(net, V, data, [0.5, 0.6, 0.55])
    assert stuck == 0 and len(fitted) == 3 and text == "no stuck sample"
    fitted, stuck, text = fit_margins(net, V, data, [-0.5, -0.1, 0.2])  # no fit at all: nothing singled out
    assert stuck == 0 and len(fitted) == 3 and "no fit" in text


def test_final_point_takes_the_classifier_with_positive_scale():
    class Tr:
        rho = np.array([1.0, -2.0])
        margins = np.array([[0.1, 0.2], [-0.3, -0.5]])

    rho, margins, sign = final_point(Tr)
    assert rho == 2.0 and sign == -1.0 and list(margins) == [0.3, 0.5]


def test_min_norm_statistics():
    frac, spread = final_rho_stats([2.0, 2.01, 2.03, 4.0])
    assert frac == 0.5 and spread == 2.0  # 2.0 and 2.01 lie within 1% of the smallest; 2.03 does not


def test_plateau_time_is_when_the_loss_halves():
    ts = np.array([0.0, 1.0, 2.0, 3.0])
    assert plateau_time(ts, [10.0, 9.0, 5.0, 1.0]) == 2.0
    assert plateau_time(ts, [10.0, 9.0, 8.0, 7.0]) == float("inf")


def test_filippov_cosines_equal_the_exact_relu_ones_off_the_kinks():
    """With nothing pinned the Filippov selection is σ′ = 1[z > 0]: the gated backward pass must reproduce the
    plain ReLU cosines, which a finite difference of the loss checks independently."""
    data = fs.datasets.gaussian_clusters(n=12, dim=3, seed=1)
    net = fs.Network((3, 4, 4, 1))
    model = fs.load_model("normalized", lam=1e-2)
    state = model.init(net, seed=3, scale=0.7)
    # the only zeros at this tolerance are second-layer pre-activations of samples whose first layer is all
    # off (a_1 = 0): their σ′ multiplies 0 and cannot change the sums
    cos_f, _ = filippov_cosines(model, net, data, state, tol=1e-12)
    np.testing.assert_allclose(cos_f, critical_cosines(model, net, data, state), rtol=1e-12)
    # the first layer's sum Σ r_n ∂f_n/∂V_1 by central differences of ½ Σ (y − ρ f)² along V_1
    x, y, rho = np.asarray(data.x), np.asarray(data.y), float(state.rho)
    V = [np.asarray(v) for v in state.V]

    def half_loss(V1):
        f = np.maximum(np.maximum(x @ V1.T, 0) @ V[1].T, 0) @ V[2].T
        return 0.5 * np.sum((y - rho * f[:, 0]) ** 2)

    G = np.zeros_like(V[0])
    for idx in np.ndindex(V[0].shape):
        e = np.zeros_like(V[0])
        e[idx] = 1e-6
        G[idx] = -(half_loss(V[0] + e) - half_loss(V[0] - e)) / 2e-6 / rho  # = Σ r_n ∂f_n/∂V_1
    a = model.lam * rho * V[0]
    assert np.vdot(a, G) / (np.linalg.norm(a) * np.linalg.norm(G)) == pytest.approx(cos_f[0], abs=1e-7)


def test_run_one_repeats_on_data_seeds_and_reports_each(tmp_path, monkeypatch):
    """The full run's robustness: one row per experiment, each seed's value and verdict, the median verdict."""
    verdicts = {0: "holds", 1: "fails", 2: "partly"}

    def fake(quick, out, seed=0):
        (out / "fake.png").write_bytes(PNG + bytes(2000))
        return Result("rho_eq", "p", f"measured on seed {seed}", "r", verdicts[seed], "fake.png", float(seed))

    monkeypatch.setitem(R.EXPERIMENTS, "rho_eq", fake)
    res = R.run_one("rho_eq", quick=False, out=tmp_path)
    assert res.seeds == ((0, 0.0, "holds"), (1, 1.0, "fails"), (2, 2.0, "partly"))
    assert res.verdict == "partly" and res.measurement == "measured on seed 0"
    R.write_report([res], tmp_path, quick=False)
    (row,) = _rows(tmp_path / "report.md")
    assert row[4] == "partly" and "0: 0 (holds), 1: 1 (fails), 2: 2 (partly); spread 2" in row[2]


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
    rows = _check_report(tmp_path, 10)
    assert [r[0] for r in rows] == [str(i) for i in range(1, 11)]
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
    assert by_name["critical"].verdict == "holds"  # with the Filippov selection on the pinned pre-activations
    assert by_name["margins"].value == pytest.approx(1.0)  # the margins' CV grows with λ
    # the headline claim's ensemble: fractions of runs at the smallest ρ, one per regime, all measured
    m = by_name["min_norm"]
    compared = "runs fitting the training set (of 32) within 1% of their smallest ρ"
    assert 0 < m.value <= 1 and m.measurement.count(compared) == 3
    assert by_name["sgd"].value > 1.0  # late fluctuation of ρ, batch 2 over full batch
    for name in ("phase_normalized.png", "phase_unnormalized.png"):  # the 2-D phase portraits, by reproduce
        assert (tmp_path / name).read_bytes()[:8] == PNG
        assert f"[{name}]({name})" in (tmp_path / "report.md").read_text(encoding="utf-8")
