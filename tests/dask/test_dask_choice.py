"""Executor choices and the residency rule (pure), and the single-chunk read workers use."""

from __future__ import annotations

import numpy as np
import pytest

from nlsq_tasks.dask import ExecutorChoiceError, decide_residency, parse_executor


@pytest.mark.parametrize("text, kind, address, n", [
    ("local", "local", None, None),
    (" LOCAL ", "local", None, None),
    ("local-cluster:2", "local-cluster", None, 2),
    ("tcp://10.0.0.5:8786", "address", "tcp://10.0.0.5:8786", None),
    ("tls://scheduler:8786", "address", "tls://scheduler:8786", None),
])
def test_choices_parse(text, kind, address, n):
    c = parse_executor(text)
    assert (c.kind, c.address, c.n_workers) == (kind, address, n)
    assert parse_executor(str(c)) == c  # the recorded form parses back to the same choice


@pytest.mark.parametrize("bad", ["dask", "local-cluster:0", "local-cluster:x", "http://host:8786", "tcp://", 3, None])
def test_bad_choice_names_field_value_and_allowed(bad):
    with pytest.raises(ExecutorChoiceError) as err:
        parse_executor(bad, field="request.executor")
    msg = str(err.value)
    assert "request.executor" in msg and repr(bad) in msg and "local-cluster:N" in msg and "tcp://" in msg


def test_residency_rule():
    gb = 10**9
    mem = {"tcp://a:1": 4 * gb, "tcp://b:1": 4 * gb}
    keep, why = decide_residency(3 * gb, mem)
    assert keep and "resident" in why and "8 GB" in why
    keep, why = decide_residency(5 * gb, mem)  # over half of the 8 GB
    assert not keep and "reads its chunks from storage" in why
    keep, why = decide_residency(1, {"tcp://a:1": 0})  # unlimited worker: memory unknown
    assert not keep and "no memory limit" in why
    assert decide_residency(100 * gb, mem, resident=True) == (True, "resident=True was asked for")
    with pytest.raises(ValueError, match="resident='yes'"):
        decide_residency(1, mem, resident="yes")


@pytest.mark.parametrize("fmt", ["npy", "parquet", "csv", "npz-compressed"])
def test_read_chunk_is_the_pass_chunk(tmp_path, fmt):
    import sys
    from pathlib import Path

    sys.path.append(str(Path(__file__).resolve().parents[1] / "io"))
    from io_helpers import dataset, write

    from nlsq_tasks.io import open_source

    x, y, s = dataset(1003)
    uri, keys = write(fmt, str(tmp_path), None, x, y, s)
    src = open_source(uri, sigma_key=keys.pop("sigma_key", "sigma" if fmt != "npy" else 2), chunk_size=300, **keys)
    for j, chunk in enumerate(src.chunks()):
        one = src.read_chunk(j)
        for a, b in zip(one, chunk):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(IndexError, match="chunk 4 is outside"):
        src.read_chunk(4)
