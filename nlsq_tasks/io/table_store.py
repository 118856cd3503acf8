"""Tables of many fits on storage: Parquet (the ``parquet`` extra) or CSV, written atomically.

A table is ``{column: values}`` with equal lengths (what
:meth:`~nlsq_tasks.batch.BatchFitResult.to_table` returns), or anything with ``to_table()``.
The format follows the suffix (``.parquet``/``.pq`` or ``.csv``) unless given. Each write
is one atomic object (see :mod:`._fs`), so a reader never sees half a table.

CSV has no types: numbers are written with ``repr`` (round-trip exact floats, ``nan``,
``inf``), and :func:`read_table` reads back every column that parses as numbers as float
(``success`` as bool).
"""

from __future__ import annotations

import csv
import io
from typing import Any, Mapping

import numpy as np

from ._fs import atomic_write_bytes, read_bytes, to_uri

FORMATS = ("parquet", "csv")


def table_format(uri: str, format: str | None = None) -> str:
    if format is not None:
        if format not in FORMATS:
            raise ValueError(f"format={format!r} is not valid; allowed: {', '.join(map(repr, FORMATS))}")
        return format
    low = to_uri(uri).lower()
    if low.endswith((".parquet", ".pq")):
        return "parquet"
    if low.endswith(".csv"):
        return "csv"
    raise ValueError(f"cannot tell the table format of {uri!r} from its suffix; use .parquet or .csv, or pass format=")


def _columns(table: Any) -> dict[str, Any]:
    cols = table.to_table() if hasattr(table, "to_table") else table
    if not isinstance(cols, Mapping) or not cols:
        raise TypeError("table must be a non-empty {column: values} mapping or have to_table()")
    lengths = {k: len(v) for k, v in cols.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"table columns have different lengths: {lengths}")
    return dict(cols)


def _arrow(cols: Mapping[str, Any]):
    try:
        import pyarrow as pa
    except ImportError as exc:
        raise ImportError("writing Parquet needs pyarrow: pip install 'nlsq-flows[parquet]'") from exc
    return pa.table({k: (np.asarray(v) if isinstance(v, np.ndarray) else list(v)) for k, v in cols.items()})


def table_bytes(table: Any, format: str) -> bytes:
    """The encoded table (Parquet or CSV)."""
    cols = _columns(table)
    if format == "parquet":
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(_arrow(cols), buf)
        return buf.getvalue()
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    names = list(cols)
    w.writerow(names)
    columns = [np.asarray(cols[n]).tolist() if isinstance(cols[n], np.ndarray) else list(cols[n]) for n in names]
    for row in zip(*columns):
        w.writerow([repr(v) if isinstance(v, float) else v for v in row])
    return text.getvalue().encode()


def write_table(table: Any, uri: Any, *, format: str | None = None,
                storage_options: Mapping[str, Any] | None = None) -> str:
    """Write ``table`` to ``uri`` (Parquet or CSV) atomically; returns the URI written."""
    fmt = table_format(to_uri(uri), format)
    return atomic_write_bytes(uri, table_bytes(table, fmt), storage_options)


def _parse_column(values: list[str]) -> Any:
    if values and all(v in ("True", "False") for v in values):
        return np.array([v == "True" for v in values])
    try:
        return np.array([float(v) for v in values])
    except ValueError:
        return values


def read_table(uri: Any, *, format: str | None = None, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A table written by :func:`write_table`, as ``{column: numpy array or list of str}``."""
    fmt = table_format(to_uri(uri), format)
    data = read_bytes(uri, storage_options)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        t = pq.read_table(io.BytesIO(data))
        return {name: (t.column(name).to_numpy(zero_copy_only=False)) for name in t.column_names}
    rows = list(csv.reader(io.StringIO(data.decode())))
    if not rows:
        return {}
    names, body = rows[0], rows[1:]
    return {n: _parse_column([r[j] for r in body]) for j, n in enumerate(names)}
