"""io.write_table/read_table (Parquet and CSV, atomic, any fsspec URL) and .npz stacks."""

from __future__ import annotations

import numpy as np
import pytest

from nlsq_tasks.io import StorageError, load_stack, read_table, stack_size, write_table


@pytest.mark.parametrize("name", ["t.parquet", "t.csv"])
def test_table_round_trip_on_memory_fs(name):
    table = {"dataset": ["a", "b"], "success": np.array([True, False]), "x": np.array([0.1, np.nan]),
             "y": np.array([1e-300, np.inf]), "n": np.array([3, 4])}
    uri = f"memory://tables-{name}"
    write_table(table, uri)
    back = read_table(uri)
    assert list(back["dataset"]) == ["a", "b"] and list(back["success"]) == [True, False]
    np.testing.assert_array_equal(back["x"], table["x"])  # exact, nan included
    np.testing.assert_array_equal(back["y"], table["y"])
    np.testing.assert_array_equal(np.asarray(back["n"], float), [3.0, 4.0])


def test_table_errors():
    with pytest.raises(ValueError, match="suffix"):
        write_table({"a": [1]}, "memory://t.txt")
    with pytest.raises(ValueError, match="different lengths"):
        write_table({"a": [1], "b": [1, 2]}, "memory://t.csv")


def test_stack_rows_and_errors(tmp_path):
    x = np.linspace(0, 1, 5)
    y = np.arange(15.0).reshape(3, 5)
    np.savez(tmp_path / "s.npz", x=x, y=y, sigma=np.ones((3, 5)))
    assert stack_size(str(tmp_path / "s.npz")) == (3, 5)
    xs, ys, ss = load_stack(str(tmp_path / "s.npz"), (1, 3))
    np.testing.assert_array_equal(xs, x)  # shared x comes back as stored
    np.testing.assert_array_equal(ys, y[1:3])
    assert ss.shape == (2, 5)
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(StorageError, match="not a readable npz"):
        load_stack(str(tmp_path / "bad.npz"))
    with pytest.raises(StorageError, match="must be a .npz"):
        stack_size(str(tmp_path / "s.csv"))
    np.savez(tmp_path / "flat.npz", x=x, y=y[0])
    with pytest.raises(StorageError, match=r"\(K, n\) stack"):
        stack_size(str(tmp_path / "flat.npz"))
