"""open_source / load_arrays: exact chunking, ranged reads, read-ahead, sampling."""

from __future__ import annotations

import threading
import time

import fsspec
import numpy as np
import pytest
from fsspec.implementations.memory import MemoryFileSystem
from io_helpers import FORMATS, dataset, put_bytes, write

from nlsq_tasks.engine.sources import ChunkSource
from nlsq_tasks.io import load_arrays, open_source
from nlsq_tasks.io.readahead import read_ahead


def _needs(fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")


def _cols(chunk):
    return np.vstack([np.atleast_2d(chunk.x), chunk.y] + ([chunk.sigma] if chunk.sigma is not None else []))


@pytest.mark.parametrize("fmt", FORMATS)
def test_chunks_reassemble_exactly(store, fmt):
    _needs(fmt)
    base, so = store
    x, y, s = dataset(n=1003)
    uri, keys = write(fmt, base, so, x, y, s)
    src = open_source(uri, chunk_size=100, storage_options=so, **keys)
    assert isinstance(src, ChunkSource)
    chunks = list(src.chunks())
    assert [len(c.y) for c in chunks] == [100] * 10 + [3]
    assert all(c.y.dtype == np.float64 for c in chunks)
    np.testing.assert_array_equal(np.concatenate([c.x for c in chunks]), x)
    np.testing.assert_array_equal(np.concatenate([c.y for c in chunks]), y)
    np.testing.assert_array_equal(np.concatenate([c.sigma for c in chunks]), s)
    # start=k begins at chunk k, and a second pass gives the same bytes
    for k in (0, 4, 10, 11):
        again = list(src.chunks(start=k))
        assert len(again) == 11 - k
        for a, b in zip(again, chunks[k:]):
            np.testing.assert_array_equal(_cols(a), _cols(b))


@pytest.mark.parametrize("fmt", FORMATS)
def test_multi_feature_chunks(tmp_path, fmt):
    _needs(fmt)
    x, y, s = dataset(n=257, k=3)
    uri, keys = write(fmt, str(tmp_path), None, x, y, s)
    src = open_source(uri, chunk_size=64, **keys)
    chunks = list(src.chunks())
    assert chunks[0].x.shape == (3, 64) and chunks[-1].x.shape == (3, 1)
    np.testing.assert_array_equal(np.concatenate([c.x for c in chunks], axis=1), x)
    np.testing.assert_array_equal(np.concatenate([c.sigma for c in chunks]), s)
    lx, ly, ls = load_arrays(uri, **keys)
    np.testing.assert_array_equal(lx, x)
    np.testing.assert_array_equal(ly, y)
    np.testing.assert_array_equal(ls, s)


@pytest.mark.parametrize("layout", ["kn", "nk", "kn_fortran", "nk_fortran", "members"])
@pytest.mark.parametrize("save", [np.savez, np.savez_compressed])
def test_npz_x_layouts_read_exactly(tmp_path, layout, save):
    x, y, _ = dataset(n=301, k=2)
    members = {
        "kn": {"x": x},
        "nk": {"x": x.T.copy()},
        "kn_fortran": {"x": np.asfortranarray(x)},
        "nk_fortran": {"x": np.asfortranarray(x.T)},
        "members": {"a": x[0], "b": x[1]},
    }[layout]
    save(tmp_path / "d.npz", y=y.astype(">f4"), **members)
    keys = {"x_key": ["a", "b"]} if layout == "members" else {}
    got = list(open_source(str(tmp_path / "d.npz"), chunk_size=50, **keys).chunks(start=2))
    np.testing.assert_array_equal(np.concatenate([c.x for c in got], axis=1), x[:, 100:])
    np.testing.assert_array_equal(np.concatenate([c.y for c in got]), y.astype(">f4")[100:].astype(np.float64))


def test_structured_npy_chunks(tmp_path):
    rec = np.zeros(130, dtype=[("t", "<f4"), ("signal", ">f8"), ("sigma", "<f8")])
    rec["t"], rec["signal"], rec["sigma"] = np.arange(130), np.sin(np.arange(130)), 1.5
    np.save(tmp_path / "s.npy", rec)
    src = open_source(str(tmp_path / "s.npy"), x_key="t", y_key="signal", chunk_size=60)
    got = list(src.chunks(1))
    np.testing.assert_array_equal(np.concatenate([c.y for c in got]), rec["signal"][60:])
    np.testing.assert_array_equal(np.concatenate([c.x for c in got]), rec["t"][60:].astype(float))


# -- ranged reads -----------------------------------------------------------------------------
class CountingMemoryFS(MemoryFileSystem):
    """The real in-memory file system, recording every byte range requested."""

    protocol = ("countingmem",)
    requests: list = []
    opens: list = []

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol("memory://" + path[len("countingmem://") :] if path.startswith("countingmem://") else path)

    def cat_file(self, path, start=None, end=None, **kw):
        data = super().cat_file(path, start=start, end=end, **kw)
        CountingMemoryFS.requests.append((start, end, len(data)))
        return data

    def _open(self, path, mode="rb", **kw):
        CountingMemoryFS.opens.append((path, mode))
        return super()._open(path, mode, **kw)


@pytest.fixture()
def counting_fs():
    fsspec.register_implementation("countingmem", CountingMemoryFS, clobber=True)
    CountingMemoryFS.requests.clear()
    CountingMemoryFS.opens.clear()
    yield CountingMemoryFS
    MemoryFileSystem().rm("/counting", recursive=True)


@pytest.mark.parametrize("fmt", ["npy", "npz"])
def test_npy_and_stored_npz_use_ranged_reads_only(counting_fs, fmt):
    n, chunk = 200_000, 10_000
    x, y, s = dataset(n=n)
    uri, _ = write(fmt, "countingmem://counting", None, x, y, s)
    file_size = len(MemoryFileSystem().cat_file(uri.replace("countingmem://", "memory://")))
    src = open_source(uri, chunk_size=chunk)
    counting_fs.requests.clear()
    counting_fs.opens.clear()
    total = sum(len(c.y) for c in src.chunks(start=3))
    assert total == n - 3 * chunk
    per_chunk = chunk * 3 * 8
    assert counting_fs.requests, "no ranged reads were made"
    assert max(r[2] for r in counting_fs.requests) <= per_chunk  # never more than one chunk per request
    assert sum(r[2] for r in counting_fs.requests) <= file_size - 3 * per_chunk  # chunks 0..2 never read
    if fmt == "npy":
        assert not [o for o in counting_fs.opens if o[0].endswith(".npy")]  # no streaming handle at all


def test_sample_reads_little(counting_fs):
    n = 200_000
    x, y, s = dataset(n=n)
    uri, _ = write("npy", "countingmem://counting", None, x, y, s)
    src = open_source(uri, chunk_size=50_000)
    counting_fs.requests.clear()
    smp = src.sample(500, seed=3)
    assert len(smp.y) == 500
    assert sum(r[2] for r in counting_fs.requests) <= 2 * 500 * 3 * 8 + 8 * 3 * 8 * 2


# -- sampling ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_sample_reproducible_and_from_the_data(tmp_path, fmt):
    _needs(fmt)
    x, y, s = dataset(n=5000)
    uri, keys = write(fmt, str(tmp_path), None, x, y, s)
    src = open_source(uri, chunk_size=1000, **keys)
    a, b, c = src.sample(200, seed=1), src.sample(200, seed=1), src.sample(200, seed=2)
    np.testing.assert_array_equal(_cols(a), _cols(b))
    assert not np.array_equal(a.y, c.y)
    assert 150 <= len(a.y) <= 200  # CSV places its blocks by byte position: about n
    pos = np.searchsorted(np.sort(y), a.y)
    order = np.argsort(y)
    idx = order[pos]
    np.testing.assert_array_equal(x[idx], a.x)  # every sampled (x, y, sigma) is a row of the data
    np.testing.assert_array_equal(s[idx], a.sigma)
    assert idx.max() - idx.min() > 2500  # spread over the file, not one block
    full = src.sample(10_000, seed=0)
    assert len(full.y) == 5000


# -- read-ahead ---------------------------------------------------------------------------------
def test_read_ahead_propagates_errors_in_order():
    def produce():
        yield 1
        yield 2
        raise KeyError("disk on fire")

    got = []
    with pytest.raises(KeyError, match="disk on fire"):
        for item in read_ahead(produce, depth=2):
            got.append(item)
    assert got == [1, 2]


@pytest.mark.parametrize("depth", [0, 2])
def test_read_ahead_enforces_the_announced_count(depth):
    with pytest.raises(RuntimeError, match="more than the 3 items it announced"):
        list(read_ahead(lambda: iter(range(10)), depth=depth, max_items=3))
    assert list(read_ahead(lambda: iter(range(3)), depth=depth, max_items=3)) == [0, 1, 2]


def test_read_ahead_stops_thread_when_abandoned():
    closed = threading.Event()

    def produce():
        try:
            for i in range(10**9):
                yield i
        finally:
            closed.set()

    it = read_ahead(produce, depth=2, name="nlsq-test-abandon")
    assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
    it.close()
    assert closed.wait(5.0), "the producer was not closed"
    deadline = time.monotonic() + 5
    while any(t.name == "nlsq-test-abandon" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(t.name == "nlsq-test-abandon" for t in threading.enumerate())


def test_truncated_npy_error_surfaces_through_read_ahead(store):
    base, so = store
    x, y, s = dataset(n=1000)
    uri, _ = write("npy", base, so, x, y, s)
    fs, path = fsspec.core.url_to_fs(uri, **(so or {}))
    data = fs.cat_file(path)
    with pytest.raises(ValueError, match=r"is truncated: its header announces shape \(1000, 3\)"):
        put_bytes(uri, data[: len(data) - 5000], so)  # the header still says 1000 rows
        open_source(uri, chunk_size=100, storage_options=so)  # refused at inspection
    put_bytes(uri, data, so)
    src = open_source(uri, chunk_size=100, storage_options=so, readahead=3)
    put_bytes(uri, data[: len(data) - 5000], so)  # truncated after it was opened: found by the reads
    good = []
    with pytest.raises(ValueError, match="truncated"):
        for c in src.chunks():
            good.append(c)
    assert len(good) == 7  # rows 0..699 are intact; chunk 7 ends past the data


def test_csv_bad_line_names_the_records(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("x,y\n" + "".join(f"{i},{i}\n" for i in range(250)).replace("130,130", "130,oops"))
    with pytest.raises(ValueError, match=r"record 130 \(line 132\), column 1 \('y'\) holds text") as err:
        open_source(str(p), chunk_size=100)  # at inspection, and without the text itself
    assert "oops" not in str(err.value)
    p.write_text("x,y\n" + "".join(f"{i},{i}\n" for i in range(250)).replace("130,130\n", "130,130\n\n"))
    with pytest.raises(ValueError, match="expected 100 records"):
        list(open_source(str(p), chunk_size=100).chunks())


def test_fingerprint_tracks_content_and_keys(store):
    base, so = store
    x, y, s = dataset(n=100)
    uri, _ = write("npz", base, so, x, y, s)
    f1 = open_source(uri, storage_options=so).fingerprint()
    assert f1 == open_source(uri, storage_options=so).fingerprint()
    assert f1 != open_source(uri, storage_options=so, sigma_key=False).fingerprint()
    time.sleep(0.01)
    write("npz", base, so, x, y + 1.0, s, name="data")
    f2 = open_source(uri, storage_options=so).fingerprint()
    assert f2 != f1 and uri in f2
    if so:
        assert so["secret"] not in f2 and so["key"] not in f2
    write("npz", base, so, x, y + 1.0, s, name="data")  # the same bytes again: a new mtime only
    assert open_source(uri, storage_options=so).fingerprint() == f2


def test_fingerprint_of_a_large_file_ignores_mtime_and_sees_sampled_changes(tmp_path):
    import os

    x, y, s = dataset(n=200_000)
    uri, _ = write("npy", str(tmp_path), None, x, y, s)
    f1 = open_source(uri).fingerprint()
    os.utime(uri, (1, 1))  # touched: same content
    assert open_source(uri).fingerprint() == f1
    data = bytearray(open(uri, "rb").read())
    data[-8] ^= 0x01  # last value changed
    open(uri, "wb").write(bytes(data))
    assert open_source(uri).fingerprint() != f1


def test_argument_errors(tmp_path):
    x, y, s = dataset(n=10)
    uri, _ = write("npy", str(tmp_path), None, x, y, s)
    with pytest.raises(ValueError, match="chunk_size=0 must be a positive integer"):
        open_source(uri, chunk_size=0)
    with pytest.raises(ValueError, match="readahead=-1"):
        open_source(uri, readahead=-1)
    with pytest.raises(ValueError, match="start=5 is outside"):
        open_source(uri, chunk_size=5).chunks(5)
    assert open_source(uri, chunk_size=10**9).chunk_size == 10


def test_damaged_compressed_npz_is_reported(tmp_path):
    x, y, s = dataset(n=20_000)
    np.savez_compressed(tmp_path / "d.npz", x=x, y=y)
    blob = bytearray((tmp_path / "d.npz").read_bytes())
    mid = len(blob) // 4  # inside the deflate stream of the first member
    blob[mid : mid + 64] = bytes(64)
    (tmp_path / "d.npz").write_bytes(bytes(blob))
    src = open_source(str(tmp_path / "d.npz"), chunk_size=1000)
    with pytest.raises(ValueError, match=r"d\.npz is damaged"):
        list(src.chunks())
