"""ResultStore / read_result / atomic_write_bytes / load_text on every back end."""

from __future__ import annotations

import json

import fsspec
import numpy as np
import pytest
from io_helpers import put_bytes

from nlsq_tasks.engine.result import FitResult, FitStatistics
from nlsq_tasks.engine.status import FitStatus
from nlsq_tasks.io import (
    IncompleteResultError, ResultStore, StorageError, atomic_write_bytes, load_text, read_result, read_result_files,
)


def _result(scale: float = 1.0) -> FitResult:
    return FitResult(
        popt=np.array([2.5, -0.75, 1e-3]) * scale,
        pcov=np.array([[0.04, 0.001, 0.0], [0.001, 0.09, 0.0], [0.0, 0.0, np.inf]]),
        status=FitStatus.FTOL,
        nfev=12,
        njev=9,
        nit=8,
        cost=0.5 * 97.0,
        stats=FitStatistics(n_points=100, n_params=3, chi2=97.0, ssr=3.1, sst=40.0),
        param_names=["amplitude", "rate", "offset"],
        lower=np.array([0.0, -np.inf, -np.inf]),
        upper=np.array([np.inf, np.inf, np.inf]),
        strategy="chunked",
    )


def test_write_then_read_verifies(store):
    base, so = store
    res = _result()
    written = ResultStore(f"{base}/run1", storage_options=so).write(res, extra_files={"fit.png": b"\x89PNG fake"})
    assert set(written) == {"summary.json", "params.npz", "report.txt", "fit.png", "manifest.json"}
    assert read_result(f"{base}/run1", storage_options=so) == res  # the FitResult itself, equal field by field
    got = read_result_files(f"{base}/run1", storage_options=so)
    assert got["summary"] == json.loads(json.dumps(res.summary()))
    assert got["summary"]["statistics"]["chi2"] == 97.0 and got["summary"]["pcov"][2][2] == "inf"
    np.testing.assert_array_equal(got["params"]["popt"], res.popt)
    np.testing.assert_array_equal(got["params"]["perr"], res.perr)
    assert got["params"]["param_names"].tolist() == res.param_names
    assert got["report"] == res.report() and "[[Variables]]" in got["report"]
    assert got["extras"] == {"fit.png": b"\x89PNG fake"}
    assert got["manifest"]["status"] == "FTOL" and got["manifest"]["success"] is True
    assert set(got["manifest"]["files"]) == {"summary.json", "params.npz", "report.txt", "fit.png"}


def test_no_manifest_means_incomplete(store):
    base, so = store
    put_bytes(f"{base}/half/summary.json", b"{}", so)
    with pytest.raises(IncompleteResultError, match="has no manifest.json: the result is incomplete"):
        read_result(f"{base}/half", storage_options=so)


def test_tampered_file_is_refused(store):
    base, so = store
    ResultStore(f"{base}/r", storage_options=so).write(_result())
    put_bytes(f"{base}/r/report.txt", b"edited by hand", so)
    with pytest.raises(IncompleteResultError, match="report.txt does not match the manifest"):
        read_result(f"{base}/r", storage_options=so)


def test_failure_mid_write_leaves_no_manifest(tmp_path):
    """report.txt cannot be written (a directory is in the way): no manifest may appear,
    and an earlier result's manifest in that place is withdrawn first."""
    target = tmp_path / "r"
    ResultStore(str(target)).write(_result())
    assert read_result(str(target)).popt[0] == 2.5
    (target / "report.txt").unlink()
    (target / "report.txt").mkdir()
    with pytest.raises(StorageError, match="could not write the result to"):
        ResultStore(str(target)).write(_result(scale=2.0))
    assert not (target / "manifest.json").exists()
    assert json.loads((target / "summary.json").read_text())["popt"][0] == 5.0  # written before the failure
    with pytest.raises(IncompleteResultError):
        read_result(str(target))


def test_manifest_is_the_last_file_written(tmp_path):
    ResultStore(str(tmp_path / "r")).write(_result(), extra_files={"a.bin": b"1" * 1000})
    files = sorted((tmp_path / "r").iterdir(), key=lambda p: p.stat().st_mtime_ns)
    assert files[-1].name == "manifest.json"
    assert not [p for p in (tmp_path / "r").iterdir() if ".tmp-" in p.name]


def test_bad_extra_names(tmp_path):
    rs = ResultStore(str(tmp_path))
    for name in ["../escape", "sub/dir.png", ".hidden", "manifest.json", "report.txt"]:
        with pytest.raises(ValueError, match=r"extra_files name .* is not allowed"):
            rs.write(_result(), extra_files={name: b"x"})
    with pytest.raises(TypeError, match=r"extra_files\['p.png'\] must be bytes"):
        rs.write(_result(), extra_files={"p.png": "text"})
    assert not list(tmp_path.iterdir())  # validation happens before anything is written


def test_atomic_write_and_load_text(store):
    base, so = store
    uri = f"{base}/presets/fast.yaml"
    atomic_write_bytes(uri, b"name: fast\ntol: 1e-6\n", so)
    atomic_write_bytes(uri, "name: fast\ntol: 1e-8\n".encode(), so)  # replaces in one step
    assert load_text(uri, so) == "name: fast\ntol: 1e-8\n"
    fs, path = fsspec.core.url_to_fs(uri, **(so or {}))
    assert [p for p in fs.ls(path.rsplit("/", 1)[0], detail=False) if ".tmp-" in p] == []
