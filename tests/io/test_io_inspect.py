"""inspect_data: metadata only, every format, on local files, memory:// and S3 (moto)."""

from __future__ import annotations

import numpy as np
import pytest
from io_helpers import FORMATS, dataset, put_bytes, write

from nlsq_tasks.io import DataInfo, inspect_data


@pytest.mark.parametrize("fmt", FORMATS)
def test_inspect_every_format_every_store(store, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    base, so = store
    x, y, s = dataset(n=1003)
    uri, keys = write(fmt, base, so, x, y, s)
    info = inspect_data(uri, storage_options=so, **keys)
    assert isinstance(info, DataInfo)
    assert (info.n_points, info.n_features, info.has_sigma) == (1003, 1, True)
    assert info.format == uri.rsplit(".", 1)[1]
    assert info.nbytes == 1003 * 3 * 8
    assert info.file_size > 0
    assert info.compressed == (fmt == "npz-compressed")
    d = info.to_dict()
    assert d["n_points"] == 1003 and d["uri"] == uri


@pytest.mark.parametrize("fmt", FORMATS)
def test_inspect_multi_feature_x(tmp_path, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    x, y, s = dataset(n=501, k=3)
    uri, keys = write(fmt, str(tmp_path), None, x, y, None)
    info = inspect_data(uri, **keys)
    assert (info.n_points, info.n_features, info.has_sigma) == (501, 3, False)


def test_npz_x_layouts(tmp_path):
    x, y, _ = dataset(n=200, k=2)
    for name, arr in {"kn": x, "nk": x.T.copy(), "kn_fortran": np.asfortranarray(x)}.items():
        np.savez(tmp_path / f"{name}.npz", x=arr, y=y)
        info = inspect_data(str(tmp_path / f"{name}.npz"))
        assert (info.n_points, info.n_features) == (200, 2), name


def test_sigma_key_semantics(tmp_path):
    x, y, s = dataset(n=50)
    np.savez(tmp_path / "d.npz", x=x, y=y, sigma=s, err=s)
    p = str(tmp_path / "d.npz")
    assert inspect_data(p).has_sigma  # auto: the member named sigma
    assert not inspect_data(p, sigma_key=False).has_sigma
    assert inspect_data(p, sigma_key="err").keys["sigma"] == "err"
    with pytest.raises(ValueError, match=r"sigma_key='nope'.*available: \['x', 'y', 'sigma', 'err'\]"):
        inspect_data(p, sigma_key="nope")


def test_bad_keys_and_format_errors_name_the_field(tmp_path):
    x, y, s = dataset(n=20)
    uri, _ = write("csv", str(tmp_path), None, x, y, s)
    with pytest.raises(ValueError, match=r"y_key='Y'.*available: \['x', 'y', 'sigma'\]"):
        inspect_data(uri, y_key="Y")
    with pytest.raises(ValueError, match="format='hdf5' is not supported; allowed: npy, npz, csv, parquet"):
        inspect_data(uri, format="hdf5")
    put_bytes(str(tmp_path / "data.bin"), b"123")
    with pytest.raises(ValueError, match="cannot tell the format"):
        inspect_data(str(tmp_path / "data.bin"))
    np.save(tmp_path / "wide.npy", np.zeros((10, 5)))
    with pytest.raises(ValueError, match="has 5 columns; pass x_key"):
        inspect_data(str(tmp_path / "wide.npy"))
    assert inspect_data(str(tmp_path / "wide.npy"), x_key=[0, 1, 2], y_key=4).n_features == 3
    np.save(tmp_path / "flat.npy", np.zeros(10))
    with pytest.raises(ValueError, match="must be 2-D"):
        inspect_data(str(tmp_path / "flat.npy"))
    put_bytes(str(tmp_path / "junk.npz"), b"not a zip at all")
    with pytest.raises(ValueError, match="not a readable npz file"):
        inspect_data(str(tmp_path / "junk.npz"))


@pytest.mark.parametrize(
    "text, n",
    [
        (b"x,y\n1,2\n3,4\n", 2),
        (b"x,y\n1,2\n3,4", 2),  # no final newline
        (b"x,y\r\n1,2\r\n3,4\r\n\r\n\n", 2),  # CRLF and trailing blank lines
        (b"\xef\xbb\xbfx;y\n1;2\n", 1),  # BOM, semicolons
        (b"x\ty\n1\t2\n3\t4\n5\t6\n", 3),
        (b"x y\n1 2\n", 1),
        (b"x,y\n", None),  # header only: no points
    ],
)
def test_csv_record_count(tmp_path, text, n):
    p = tmp_path / "d.csv"
    p.write_bytes(text)
    if n is None:
        with pytest.raises(ValueError, match="no data points"):
            inspect_data(str(p))
    else:
        info = inspect_data(str(p))
        assert info.n_points == n and info.columns == ["x", "y"] and not info.has_sigma


def test_csv_count_spans_scan_blocks(tmp_path):
    # More than one 4 MiB scan block, so the count crosses block boundaries.
    n = 300_000
    p = tmp_path / "big.csv"
    p.write_bytes(b"x,y,pad\n" + b"".join(b"%d,%d,000\n" % (i, i) for i in range(n)))
    assert p.stat().st_size > 4 << 20
    assert inspect_data(str(p)).n_points == n


def test_structured_npy(tmp_path):
    rec = np.zeros(30, dtype=[("t", "<f4"), ("signal", ">f8"), ("sigma", "<f8")])
    rec["t"] = np.arange(30)
    np.save(tmp_path / "s.npy", rec)
    info = inspect_data(str(tmp_path / "s.npy"), x_key="t", y_key="signal")
    assert (info.n_points, info.has_sigma, info.columns) == (30, True, ["t", "signal", "sigma"])
