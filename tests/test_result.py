"""flowsim._solver._result: sweep result files written atomically, read back exactly, and validated on load."""

import numpy as np
import pytest

import flowsim as fs
import flowsim._solver._result as _result


def _tiny_result(version=_result.FORMAT_VERSION):
    """A small valid sweep result built without running a sweep (no JAX compilation)."""
    import xarray as xr

    net = fs.Network((2, 2, 1))
    model = fs.load_model("unnormalized")
    time_axis = np.array([0.0, 0.5, 1.0])
    attrs = {
        "format": _result.FORMAT,
        "format_version": version,
        "sweep_hash": "x",
        "model": model.name,
        "loss": model.loss,
        "per_layer": 1,
        "depth": net.depth,
        "solver": "tsit5",
        "smoothing": 0.0,
        "rtol": 1e-6,
        "atol": 1e-9,
        "t1": 1.0,
        "max_steps": 100,
        "balance_law": 1,
        "balance_enforced": 1,
    }
    ds = _result.empty_dataset(xr, net, model, 2, time_axis, 4, np.arange(2), np.zeros(2), None, None, attrs)
    ds["rho"].values[:] = 1.0
    ds["status"].values[:] = 0
    ds["t_final"].values[:] = 1.0
    return fs.SweepResult(ds)


# Merged with the former round trip of a computed sweep: the file reads back identical, with no temporary file.
def test_save_then_load_round_trips(tmp_path):
    res = _tiny_result()
    res.ds["margins"].values[:] = np.arange(24.0).reshape(2, 3, 4)
    path = tmp_path / "res.nc"
    res.save(path)
    back = fs.load(path)
    assert back.complete and len(back) == 2
    assert back.ds.identical(res.ds)
    np.testing.assert_array_equal(back.ds["rho"].values, res.ds["rho"].values)
    t0, t1 = res.trajectory(1), back.trajectory(1)
    np.testing.assert_array_equal(np.asarray(t0.margins), np.asarray(t1.margins))
    assert t1.stats.status == "ok" and t1.stats.method == "tsit5" and t1.stats.t_final == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["res.nc"]  # no temporary file left behind


def test_load_missing_file(tmp_path):
    with pytest.raises(fs.ResultFileError, match="does not exist") as excinfo:
        fs.load(tmp_path / "nope.nc")
    assert isinstance(excinfo.value, fs.FlowsimError) and isinstance(excinfo.value, OSError)


@pytest.mark.parametrize("keep", [0, 8, 0.5, 0.9])
def test_load_truncated_file(tmp_path, keep):
    path = tmp_path / "res.nc"
    _tiny_result().save(path)
    raw = path.read_bytes()
    cut = keep if isinstance(keep, int) else int(keep * len(raw))
    path.write_bytes(raw[:cut])
    with pytest.raises(fs.ResultFileError, match="not a readable netCDF file"):
        fs.load(path)


def test_load_garbage_and_foreign_files(tmp_path):
    import xarray as xr

    junk = tmp_path / "junk.nc"
    junk.write_bytes(b"not a netcdf file at all" * 10)
    with pytest.raises(fs.ResultFileError, match="not a readable netCDF"):
        fs.load(junk)
    foreign = tmp_path / "foreign.nc"
    xr.Dataset({"a": ("t", np.arange(3.0))}).to_netcdf(foreign, engine="netcdf4")
    with pytest.raises(fs.ResultFileError, match="not a flowsim sweep file"):
        fs.load(foreign)


@pytest.mark.parametrize("version", [_result.FORMAT_VERSION + 1, 0])
def test_load_wrong_format_version(tmp_path, version):
    path = tmp_path / "res.nc"
    _tiny_result(version=version).save(path)
    with pytest.raises(fs.ResultFileError, match="format version"):
        fs.load(path)


def test_load_missing_variable(tmp_path):
    res = _tiny_result()
    path = tmp_path / "res.nc"
    fs.SweepResult(res.ds.drop_vars("rho_eq")).save(path)
    with pytest.raises(fs.ResultFileError, match="rho_eq"):
        fs.load(path)


def test_failed_save_leaves_the_old_file_intact(tmp_path, monkeypatch):
    import xarray as xr

    path = tmp_path / "res.nc"
    _tiny_result().save(path)
    before = path.read_bytes()

    def broken(self, target, *args, **kwargs):
        with open(target, "wb") as fh:  # a half-written file, then the disk fills up
            fh.write(b"CDF\x01 partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", broken)
    with pytest.raises(OSError, match="No space"):
        _tiny_result().save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res.nc"]
    assert fs.load(path).complete
