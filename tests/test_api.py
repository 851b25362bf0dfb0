"""flowsim (the public namespace): one API style on every entry point, and a package that installs whole."""

import configparser
import inspect
from pathlib import Path

import pytest

import flowsim as fs

ROOT = Path(__file__).resolve().parents[1]

# The problem arguments of each entry point; everything after them is keyword-only.
PROBLEM = {
    fs.simulate: ("model", "net", "data", "state"),
    fs.sweep: ("model", "net", "data", "states"),
    fs.sgd: ("model", "net", "data", "state"),
    fs.compare: ("flow", "run"),
    fs.convergence_order: ("flow", "runs"),
    fs.plot.phase_portrait: ("model", "data"),
    fs.plot.deep_portrait: ("model", "net", "data"),
    fs.Model.init: ("self", "net"),
    fs.load_model: ("name",),
    fs.reproduce: (),
}


@pytest.mark.parametrize("fn", list(PROBLEM), ids=lambda fn: fn.__qualname__)
def test_problem_arguments_positional_everything_else_keyword_only(fn):
    params = list(inspect.signature(fn).parameters.values())
    positional = tuple(p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD)
    assert positional == PROBLEM[fn]
    rest = [p for p in params if p.kind is not p.POSITIONAL_OR_KEYWORD]
    assert rest and all(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in rest)


def test_one_name_for_seeds():
    for fn in (fs.Model.init, fs.sgd, fs.datasets.gaussian_clusters, fs.Dataset.split):
        assert "seed" in inspect.signature(fn).parameters, fn
    assert inspect.signature(fs.Model.init).parameters["key"].default is None  # the deprecated alias of seed


def test_every_exported_name_exists():
    for name in fs.__all__:
        assert hasattr(fs, name), name
    for name in fs.plot.__all__:
        assert hasattr(fs.plot, name), name
    assert fs.__version__


def test_reproduce_rejects_bad_arguments_before_running(tmp_path):
    """fs.reproduce (what `flowsim reproduce` runs) names the bad argument and writes nothing."""
    out = tmp_path / "out"
    with pytest.raises(fs.InputError, match="argument `only`.*rho_eq"):
        fs.reproduce(out=out, only="rho_eq,nonsense")
    with pytest.raises(fs.InputError, match="argument `only`"):
        fs.reproduce(out=out, only=[])
    with pytest.raises(fs.InputError, match="argument `quick`"):
        fs.reproduce(quick="yes", out=out)
    with pytest.raises(fs.InputError, match="argument `out`"):
        fs.reproduce(out=3)
    assert not out.exists()


def test_setup_cfg_installs_every_package():
    """A non-editable install ships every folder of flowsim (setup.cfg lists the packages by name)."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "flowsim").rglob("__init__.py")}
    assert found | {"flowsim.models"} == listed
