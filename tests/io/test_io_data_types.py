"""Data are read as what they are (issue 14, items 2, 7, 11): complex, object and string
data are refused at inspection from every format, ragged CSV rows too, a truncated file is
refused before the first pass, and no error repeats the content of the file."""

from __future__ import annotations

import io

import numpy as np
import pytest
from io_helpers import dataset, put_bytes

from nlsq_tasks.io import inspect_data, open_source
from nlsq_tasks.io.inspect import DataTypeError

SECRET = "hunter2-TOP-SECRET-value"


def _npz(path, **members):
    np.savez(path, **members)
    return str(path)


@pytest.mark.parametrize("bad, word", [
    (np.arange(10) + 1j, "complex numbers"),
    (np.array([str(i) for i in range(10)]), "strings"),
    (np.array([str(i).encode() for i in range(10)]), "bytes"),
    (np.arange(10).astype("datetime64[s]"), "datetimes"),
])
def test_npz_member_that_is_not_real_is_refused_naming_file_and_key(tmp_path, bad, word):
    uri = _npz(tmp_path / "d.npz", x=np.arange(10.0), y=bad)
    with pytest.raises(DataTypeError, match=rf"d\.npz: y_key='y' holds {word}"):
        inspect_data(uri)
    with pytest.raises(DataTypeError):  # every path in: the sources inspect first
        open_source(uri)


def test_complex_npy_is_refused_not_truncated_to_its_real_part(tmp_path):
    np.save(tmp_path / "c.npy", np.column_stack([np.arange(5.0), np.arange(5.0)]) + 1j)
    with pytest.raises(DataTypeError, match=r"c\.npy: columns='all' holds complex numbers \(dtype complex128\)"):
        inspect_data(str(tmp_path / "c.npy"))


def test_structured_npy_string_field_is_refused(tmp_path):
    rec = np.zeros(4, dtype=[("x", "f8"), ("y", "U8")])
    np.save(tmp_path / "r.npy", rec)
    with pytest.raises(DataTypeError, match="y_key='y' holds strings"):
        inspect_data(str(tmp_path / "r.npy"))


def test_object_npy_is_refused_without_unpickling(tmp_path):
    np.save(tmp_path / "o.npy", np.array([[1, None], [2, 3]], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="Python objects"):
        inspect_data(str(tmp_path / "o.npy"))


def test_parquet_string_column_is_refused(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1.0, 2.0], "y": ["1.0", "2.0"]}), tmp_path / "s.parquet")
    with pytest.raises(DataTypeError, match=r"s\.parquet: y_key='y' holds strings"):
        inspect_data(str(tmp_path / "s.parquet"))
    pq.write_table(pa.table({"x": [1.0, 2.0], "y": [1, 2]}), tmp_path / "i.parquet")
    assert inspect_data(str(tmp_path / "i.parquet")).n_points == 2  # integers are numbers


@pytest.mark.parametrize("text, record, fields", [
    (b"x,y\n1,2\n3,4,5\n6,7\n", 1, 3),  # an extra column (numpy would drop it silently)
    (b"x,y\n1,2\n3\n", 1, 1),  # a missing one
    (b"x,y\n1,2\n3,4\n5,6,7", 2, 3),  # on the last line, without a final newline
    (b"x;y\n1;2\n3;4;\n", 1, 3),  # a trailing delimiter
])
def test_ragged_csv_rows_are_refused_at_inspection(tmp_path, text, record, fields):
    put_bytes(str(tmp_path / "r.csv"), text)
    with pytest.raises(ValueError, match=rf"r\.csv: record {record} \(line {record + 2}\) has {fields} fields but the header names 2"):
        inspect_data(str(tmp_path / "r.csv"))


def test_ragged_row_far_into_a_big_csv_is_found_across_blocks(tmp_path):
    from nlsq_tasks.io import inspect as insp

    rows = "".join(f"{i},{i}.5\n" for i in range(30_000))
    rows = rows.replace("25000,25000.5\n", "25000,25000.5,1\n")
    put_bytes(str(tmp_path / "big.csv"), ("x,y\n" + rows).encode())
    fs, path = __import__("fsspec").core.url_to_fs(str(tmp_path / "big.csv"))
    with pytest.raises(ValueError, match=r"record 25000 \(line 25002\) has 3 fields"):
        insp.csv_scan(fs, path, block=4096, where="big.csv")  # many blocks: lines cross block ends


def test_a_dotenv_file_read_as_csv_never_echoes_its_content(tmp_path):
    """The hostile case of the issue: nlsq-flow run --data ./fake.env --format csv."""
    for text in (f"API_TOKEN={SECRET}\nOTHER=1\n", f"API_TOKEN {SECRET}\n", f"{SECRET}\n1,2\n", f"{SECRET}\n1\n2\n",
                 f"x,y\n1,{SECRET}\n", f"x,y\n1,2\n3,4\n{SECRET},5\n"):
        put_bytes(str(tmp_path / "fake.env"), text.encode())
        with pytest.raises(ValueError) as err:
            inspect_data(str(tmp_path / "fake.env"), format="csv")
        assert SECRET not in str(err.value) and "TOKEN" not in str(err.value), str(err.value)


def test_csv_text_cell_is_named_by_record_and_column(tmp_path):
    put_bytes(str(tmp_path / "t.csv"), b"x,y,sigma\n1,2,1\n3,four,1\n")
    with pytest.raises(DataTypeError, match=r"record 1 \(line 3\), column 1 \('y'\) holds text where a number belongs"):
        inspect_data(str(tmp_path / "t.csv"))
    put_bytes(str(tmp_path / "n.csv"), b"x,y\n1,nan\n2,inf\n3,-Infinity\n4,1e-3\n")
    assert inspect_data(str(tmp_path / "n.csv")).n_points == 4  # nan/inf are numbers (the fit refuses them later, naming the point)


@pytest.mark.parametrize("cut", [1, 5000, 23_000])
def test_truncated_npy_is_refused_at_inspection(tmp_path, cut):
    x, y, s = dataset(n=1000)
    buf = io.BytesIO()
    np.save(buf, np.column_stack([x, y, s]))
    put_bytes(str(tmp_path / "t.npy"), buf.getvalue()[:-cut])
    with pytest.raises(ValueError, match=r"t\.npy is truncated: its header announces shape \(1000, 3\) of float64"):
        inspect_data(str(tmp_path / "t.npy"))


def test_npz_member_longer_or_shorter_than_its_header_is_refused(tmp_path):
    import zipfile

    buf = io.BytesIO()
    np.save(buf, np.arange(100.0))
    member = buf.getvalue()
    for body, state in ((member[:-80], "truncated"), (member + b"\0" * 16, "longer than its header says")):
        with zipfile.ZipFile(tmp_path / "m.npz", "w") as zf:
            zf.writestr("x.npy", member)
            zf.writestr("y.npy", body)
        with pytest.raises(ValueError, match=rf"m\.npz, member 'y' is {state}"):
            inspect_data(str(tmp_path / "m.npz"))


def test_damaged_npy_header_is_described_not_quoted(tmp_path):
    head = b"\x93NUMPY\x01\x00" + (118).to_bytes(2, "little")
    text = ("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), '" + SECRET + "': 1}").ljust(117) + "\n"
    put_bytes(str(tmp_path / "h.npy"), head + text.encode() + b"\0" * 24)
    with pytest.raises(ValueError, match="the npy header is not valid") as err:
        inspect_data(str(tmp_path / "h.npy"))
    assert SECRET not in str(err.value)


def test_a_nan_deep_in_the_data_is_named_by_its_point_in_the_first_pass(tmp_path):
    """Item 7: the first pass checks every chunk as it reads it and names the point."""
    from nlsq_tasks import fit_source

    x = np.linspace(0, 1, 5000)
    y = 2 * x + 1
    y[4900] = np.nan
    np.savez(tmp_path / "n.npz", x=x, y=y)
    src = open_source(str(tmp_path / "n.npz"), chunk_size=1000)
    with pytest.raises(Exception, match=r"y is not finite.*at point 4900") as err:
        fit_source("a*x+b", src, p0=[1.0, 1.0], strategy="streaming")
    assert "Traceback" not in str(err.value)
