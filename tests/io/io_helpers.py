"""Writers of test data sets in every supported format, onto any fsspec URI."""

from __future__ import annotations

import io

import numpy as np

FORMATS = ["npy", "npy-fortran", "npz", "npz-compressed", "csv", "parquet"]


def put_bytes(uri: str, data: bytes, storage_options=None) -> None:
    """Place a test file with a plain fsspec write (not through the code under test)."""
    import fsspec

    with fsspec.open(uri, "wb", **(storage_options or {})) as f:
        f.write(data)


def dataset(n: int = 1003, k: int = 1, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n) if k == 1 else rng.normal(size=(k, n))
    y = rng.normal(size=n)
    sigma = rng.uniform(0.5, 2.0, size=n)
    return x, y, sigma


def encode(fmt: str, x, y, sigma=None, row_group_size: int = 97) -> tuple[bytes, str, dict]:
    """``(file bytes, extension, open_source keys)`` of the data in format ``fmt``."""
    xs = [x] if x.ndim == 1 else list(x)
    cols = xs + [y] + ([sigma] if sigma is not None else [])
    names = (["x"] if len(xs) == 1 else [f"x{i}" for i in range(len(xs))]) + ["y"] + (["sigma"] if sigma is not None else [])
    keys = {} if len(xs) == 1 else {"x_key": names[: len(xs)]}
    buf = io.BytesIO()
    if fmt in ("npy", "npy-fortran"):
        table = np.column_stack(cols)
        np.save(buf, np.asfortranarray(table) if fmt == "npy-fortran" else table)
        keys = {} if len(xs) == 1 else {"x_key": list(range(len(xs))), "y_key": len(xs)}
        if sigma is not None and len(xs) > 1:
            keys["sigma_key"] = len(xs) + 1
        return buf.getvalue(), "npy", keys
    if fmt in ("npz", "npz-compressed"):
        members = {"x": x, "y": y} | ({"sigma": sigma} if sigma is not None else {})
        (np.savez_compressed if fmt == "npz-compressed" else np.savez)(buf, **members)
        return buf.getvalue(), "npz", {}
    if fmt == "csv":
        text = ",".join(names) + "\n" + "".join(",".join(repr(float(v)) for v in row) + "\n" for row in zip(*cols))
        return text.encode(), "csv", keys
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table(dict(zip(names, cols))), buf, row_group_size=row_group_size)
        return buf.getvalue(), "parquet", keys
    raise ValueError(fmt)


def write(fmt: str, base: str, storage_options, x, y, sigma=None, name: str = "data", **kw) -> tuple[str, dict]:
    data, ext, keys = encode(fmt, x, y, sigma, **kw)
    uri = f"{base.rstrip('/')}/{name}.{ext}"
    put_bytes(uri, data, storage_options)
    return uri, keys
