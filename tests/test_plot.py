"""flowsim.plot: drawing the portraits (phase portraits, deep networks, the project's figures), and no
matplotlib backend chosen by importing flowsim."""

import subprocess
import sys

import pytest
from matplotlib.figure import Figure

import flowsim as fs
from flowsim import plot as fplot

TIGHT = dict(rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module")
def chain_data():
    return fplot.default_data("chain")


def test_phase_portrait_figures(tmp_path, chain_data):
    fig = fplot.phase_portrait(fs.load_model("unnormalized", lam=0.0), chain_data, n_trajectories=16, grid=15, **TIGHT)
    assert isinstance(fig, Figure)
    ax, bar = fig.axes  # the panel and the colour bar of the trajectories
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "saddle" in labels and "continuum of equilibria (degenerate)" in labels
    assert bar.get_ylabel() == r"trajectory colour: final $\rho_1$"
    assert ax.get_title().startswith(r"Phase portrait in ($\rho_1, \rho_2$): unnormalized, $\lambda = 0$")
    assert ax.get_xlabel() == r"signed scale of layer 1 $\rho_1$"
    fig.savefig(tmp_path / "b.png", dpi=60)
    assert (tmp_path / "b.png").stat().st_size > 1000
    # into a given Axes; the angle chart
    fig2 = Figure()
    ax2 = fig2.add_subplot()
    out = fplot.phase_portrait(fs.load_model("normalized", lam=1.0), n_trajectories=9, grid=15, ax=ax2, **TIGHT)
    assert out is fig2
    labels = [t.get_text() for t in ax2.get_legend().get_texts()]
    assert "stable node" in labels and "saddle" in labels
    assert fig2.axes[1].get_ylabel() == r"trajectory colour: final $\theta$"
    assert ax2.get_xlabel() == r"direction angle $\theta$" and ax2.get_ylabel() == r"scale $\rho$"
    # without trajectories or with colorbar=False, no colour bar
    fig3 = fplot.phase_portrait(fs.load_model("normalized", lam=1.0), n_trajectories=9, grid=15, colorbar=False)
    assert len(fig3.axes) == 1


def test_phase_portrait_rejects_bad_input(chain_data):
    model = fs.load_model("unnormalized")
    with pytest.raises(fs.InputError, match="n_trajectories"):
        fplot.phase_portrait(model, chain_data, n_trajectories=-1)
    with pytest.raises(fs.InputError, match="n_trajectories"):
        fplot.phase_portrait(model, chain_data, n_trajectories=2.5)
    with pytest.raises(fs.InputError, match="domain"):
        fplot.phase_portrait(model, chain_data, domain=((1, 0), (0, 1)))
    with pytest.raises(fs.InputError, match="t1"):
        fplot.phase_portrait(model, chain_data, t1=-1.0)
    with pytest.raises(fs.InputError, match="flowsim.Model"):
        fplot.phase_portrait("unnormalized")


@pytest.mark.slow
def test_deep_portrait_linear_net(tmp_path):
    data = fs.datasets.gaussian_clusters(n=12, dim=3, seed=0)
    net = fs.Network((3, 4, 1), activation="linear")
    fig = fplot.deep_portrait(
        fs.load_model("normalized", lam=0.05), net, data, scales=(0.2, 2.0), seeds=(1,), t1=5.0, n_save=40
    )
    assert isinstance(fig, Figure)
    ax, bar = fig.axes  # the panel and the colour bar of the initial scales
    assert ax.get_yscale() == "log" and len(ax.lines) >= 2 * 4
    assert bar.get_ylabel() == r"run colour: initial scale $\rho(0)$" and ax.get_ylabel() == r"overall scale $\rho$"
    with pytest.raises(fs.InputError, match="`x`"):
        fplot.deep_portrait(fs.load_model("normalized"), net, data, x="nope")


@pytest.mark.slow
def test_save_all_writes_pngs(tmp_path):
    paths = fplot.save_all(tmp_path, quick=True, dpi=50, deep=False)  # deep_portrait is tested above
    names = {p.name for p in paths}
    assert {"phase_normalized.png", "phase_unnormalized.png"} <= names
    for p in paths:
        assert p.exists() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_importing_flowsim_selects_no_matplotlib_backend():
    """No module of the library switches matplotlib's backend on import (users' notebooks and GUIs keep theirs)."""
    code = (
        "import importlib, pkgutil, matplotlib\n"
        "matplotlib.use('svg')\n"
        "import flowsim\n"
        "for m in pkgutil.walk_packages(flowsim.__path__, 'flowsim.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(matplotlib.get_backend())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "svg"


def test_analysis_names_are_still_published_under_plot():
    from flowsim import _analysis

    for name in (
        "Continuum",
        "Curve",
        "Equilibrium",
        "Nullcline",
        "Reduced2D",
        "classify",
        "default_data",
        "interpolable_data",
        "reduced_model",
    ):
        assert getattr(fplot, name) is getattr(_analysis, name) and name in fplot.__all__
