"""Chunk sources over fsspec: local files, ``memory://``, ``s3://`` (anything fsspec opens).

Each source satisfies :class:`nlsq_tasks.engine.sources.ChunkSource`: ``chunks(start)``
yields blocks of ``chunk_size`` points (the last one shorter), in file order, starting at
chunk ``start``; every pass reads the same bytes, so sums over a pass are reproducible.

How each format is read (memory held: O(chunk_size), except where noted):

* ``npy`` and *stored* npz members (``np.savez``): **ranged reads** -- chunk ``c`` is the byte
  range ``[base + c*m*r, base + (c+1)*m*r)`` of the file (``r`` bytes per record), fetched with
  ``fs.cat_file(path, start, end)`` (an HTTP Range GET on S3). Nothing else is read.
* *compressed* npz members (``np.savez_compressed``): DEFLATE has no random access, so each
  member is **decompressed as a stream**, sequentially, one stream per contiguous column;
  ``chunks(start)`` decompresses (and discards) the data before chunk ``start``.
* ``csv``: opening the source streams the file once to count records and to record the byte
  offset of every chunk start; a pass then reads each chunk's exact byte range and parses
  it with ``np.loadtxt``. ``chunks(start)`` seeks straight to its offset.
* ``parquet``: row groups are read one at a time (``ParquetFile.read_row_group`` over the
  fsspec file) and re-cut into chunks, so memory is O(row group + chunk_size).

A background thread reads ``readahead`` chunks ahead of the consumer
(:mod:`nlsq_tasks.io.readahead`); errors in it surface in the consumer.

``sample(n, seed)`` reads a few (at most 8) evenly spaced, seed-jittered blocks and draws
``n`` random points from them: a cheap, reproducible, spread-out subsample.
"""

from __future__ import annotations

import io
import hashlib
import math
import re
import zipfile
import zlib
from bisect import bisect_right
from typing import Any, Iterator

import numpy as np

from ..limits import DEFAULT_CHUNK_SIZE
from ..engine.sources import Chunk
from ._errors import scrub, storage_errors
from .inspect import DataInfo, Layout, _pyarrow_parquet, keys_repr, probe
from .readahead import read_ahead
from .retry import current_budget, with_retries

_SKIP_BLOCK = 1 << 20
_SAMPLE_BLOCKS = 8


class FileChunkSource:
    """Common part of every file source: identity, chunk arithmetic, read-ahead, sampling."""

    def __init__(self, layout: Layout, chunk_size: int, readahead: int, storage_options):
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size={chunk_size!r} must be a positive integer")
        info = layout.info
        self.info: DataInfo = info
        self.uri = info.uri
        self.format = info.format
        self.n_points = info.n_points
        self.n_features = info.n_features
        self.has_sigma = info.has_sigma
        self.chunk_size = int(max(1, min(int(chunk_size), info.n_points)))
        self.readahead = int(readahead)
        self._fs, self._path, self._stamp = layout.fs, layout.path, layout.stamp
        self._detail = layout.detail
        self._options = storage_options
        self._digest: str | None = None
        # the budget in force when the source was opened: its read-ahead thread reads with it
        self._budget = current_budget()

    # -- identity -------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """``format:uri|size|content sample digest|keys`` (no credentials, no mtime).

        The data's identity is its content: a touched file (new mtime, same bytes) is the
        same problem, a rewritten one is not. See :func:`content_digest` for what is read."""
        if self._digest is None:
            with storage_errors(self.uri, "read", self._options):
                self._digest = content_digest(self._fs, self._path, self.info.file_size)
        return f"{self.format}:{self.uri}|size={self.info.file_size}|sample-sha256={self._digest}|keys={keys_repr(self.info.keys)}"

    @property
    def n_chunks(self) -> int:
        return -(-self.n_points // self.chunk_size)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.uri!r}, n_points={self.n_points}, n_features={self.n_features}, "
            f"has_sigma={self.has_sigma}, chunk_size={self.chunk_size})"
        )

    # -- passes ---------------------------------------------------------------------------
    def chunks(self, start: int = 0) -> Iterator[Chunk]:
        start = int(start)
        if not 0 <= start <= self.n_chunks:
            raise ValueError(f"start={start} is outside the chunk range [0, {self.n_chunks}] of {self.uri}")
        return read_ahead(
            lambda: self._guarded(start), self.readahead, max_items=self.n_chunks - start, name=f"nlsq-readahead:{self.format}"
        )

    def read_chunk(self, index: int) -> Chunk:
        """Chunk ``index`` alone, read in the calling thread (no read-ahead): what a Dask
        worker reads for the chunks it was given (its byte range or row groups only)."""
        index = int(index)
        if not 0 <= index < self.n_chunks:
            raise IndexError(f"chunk {index} is outside [0, {self.n_chunks}) of {scrub(self.uri, self._options)}")
        it = self._guarded(index)
        try:
            return next(it)
        finally:
            it.close()

    def _guarded(self, start: int) -> Iterator[Chunk]:
        with storage_errors(self.uri, "read", self._options):
            try:
                yield from self._iter_chunks(start)
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise ValueError(f"{self.uri} is damaged: {type(exc).__name__}: {exc}") from None

    def _iter_chunks(self, start: int) -> Iterator[Chunk]:
        raise NotImplementedError

    def _assemble(self, cols: list[np.ndarray]) -> Chunk:
        k = self.n_features
        x = cols[0] if k == 1 else np.stack(cols[:k])
        return Chunk(x, cols[k], cols[k + 1] if self.has_sigma else None)

    # -- subsample ------------------------------------------------------------------------
    def _sample_blocks(self, n: int, seed: int) -> list[tuple[int, int]]:
        """Sorted, disjoint ``[lo, hi)`` row blocks, evenly spaced with seeded jitter."""
        rng = np.random.default_rng(seed)
        n_blocks = min(_SAMPLE_BLOCKS, n)
        seg = self.n_points // n_blocks
        length = min(seg, max(1, math.ceil(2 * n / n_blocks)))
        out = []
        for b in range(n_blocks):
            lo = b * seg + int(rng.integers(0, seg - length + 1))
            out.append((lo, lo + length))
        return out

    def sample(self, n: int, seed: int = 0) -> Chunk:
        n = int(n)
        if n < 1:
            raise ValueError(f"n={n} must be a positive number of points")
        with storage_errors(self.uri, "sample", self._options):
            if n >= self.n_points // 2:  # most of the data anyway: one sequential pass is cheaper
                parts = list(self._iter_chunks(0))
            else:
                parts = self._read_blocks(self._sample_blocks(n, seed))
        cols = [np.concatenate(c) for c in zip(*[_flat(p) for p in parts])]
        total = cols[0].shape[0]
        idx = np.sort(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False))
        return self._assemble([c[idx] for c in cols])

    def _read_blocks(self, blocks: list[tuple[int, int]]) -> list[Chunk]:
        raise NotImplementedError


_DIGEST_WHOLE = 1 << 20  # files up to 1 MiB are hashed whole
_DIGEST_EDGE = 64 << 10  # bigger ones: the first and last 64 KiB (headers, footers) ...
_DIGEST_BLOCK = 4 << 10  # ... and 16 blocks of 4 KiB spread evenly between them
_DIGEST_BLOCKS = 16


def content_digest(fs, path: str, size: int) -> str:
    """SHA-256 over the file's size and a fixed sample of its bytes (about 200 KiB at most,
    whatever the size; the whole file up to 1 MiB). Cheap on object stores (ranged reads),
    independent of modification times; a change confined to unsampled bytes of a large file
    is not seen (a checkpoint would then resume against the changed data)."""
    h = hashlib.sha256(f"size={size}".encode())
    if size <= _DIGEST_WHOLE:
        h.update(fs.cat_file(path))
        return h.hexdigest()
    ranges = [(0, _DIGEST_EDGE), (size - _DIGEST_EDGE, size)]
    span = size - 2 * _DIGEST_EDGE - _DIGEST_BLOCK
    ranges += [(_DIGEST_EDGE + span * i // (_DIGEST_BLOCKS - 1),) * 2 for i in range(_DIGEST_BLOCKS)]
    for a, b in ranges:
        b = b if b > a else a + _DIGEST_BLOCK
        h.update(fs.cat_file(path, start=a, end=b))
    return h.hexdigest()


def _flat(chunk: Chunk) -> list[np.ndarray]:
    xs = [chunk.x] if chunk.x.ndim == 1 else list(chunk.x)
    return xs + [chunk.y] + ([chunk.sigma] if chunk.sigma is not None else [])


# -- npy / npz: records at byte offsets -------------------------------------------------------
class _RangeReader:
    """Byte ranges of a file, one ranged request each (any order), each retried while the
    storage fault is transient."""

    def __init__(self, fs, path, uri: str = "", options=None, budget=None):
        self.fs, self.path = fs, path
        self.uri, self.options, self.budget = uri or path, options, budget

    def read(self, a: int, b: int) -> bytes:
        return with_retries(lambda: self.fs.cat_file(self.path, start=a, end=b), self.uri, "read", self.options,
                            self.budget)

    def close(self) -> None:
        pass


class _ZipStreamReader:
    """Byte ranges of a compressed zip member, decompressed sequentially.

    Forward jumps decompress and discard; a backward jump restarts the stream."""

    def __init__(self, fs, path, member):
        self.fs, self.path, self.member = fs, path, member
        self._f = self._zf = self._m = None
        self.pos = 0

    def _open(self):
        self.close()
        self._f = self.fs.open(self.path, "rb")
        self._zf = zipfile.ZipFile(self._f)
        self._m = self._zf.open(self.member)
        self.pos = 0

    def read(self, a: int, b: int) -> bytes:
        if self._m is None or a < self.pos:
            self._open()
        for _ in range((a - self.pos) // _SKIP_BLOCK + 2):
            if self.pos >= a:
                break
            got = self._m.read(min(_SKIP_BLOCK, a - self.pos))
            if not got:
                break
            self.pos += len(got)
        data = self._m.read(b - a)
        self.pos = a + len(data)
        return data

    def close(self) -> None:
        for h in (self._m, self._zf, self._f):
            if h is not None:
                h.close()
        self._f = self._zf = self._m = None


class RecordChunkSource(FileChunkSource):
    """npy files and npz archives: each role (x_i, y, sigma) is a field of a fixed-size
    record at ``base + row * record_size``; several roles may share one record."""

    def __init__(self, layout: Layout, chunk_size: int, readahead: int, storage_options):
        super().__init__(layout, chunk_size, readahead, storage_options)
        self._groups = layout.detail["groups"]
        self._n_cols = self.n_features + 1 + int(self.has_sigma)

    def _open_readers(self) -> list:
        shared = _RangeReader(self._fs, self._path, self.uri, self._options, self._budget)
        return [shared if g.get("stored", True) else _ZipStreamReader(self._fs, self._path, g["member"]) for g in self._groups]

    def _read_rows(self, readers, lo: int, hi: int) -> list[np.ndarray]:
        cols: list[Any] = [None] * self._n_cols
        for g, rd in zip(self._groups, readers):
            rec = g["record"]
            a, b = g["base"] + lo * rec.itemsize, g["base"] + hi * rec.itemsize
            raw = rd.read(a, b)
            if len(raw) != b - a:
                raise ValueError(
                    f"{self.uri} is truncated: rows {lo}..{hi} need bytes {a}..{b}, got {len(raw)} bytes"
                )
            recs = np.frombuffer(raw, dtype=rec)
            for col, sel in g["take"]:
                v = recs if sel is None else recs[sel] if isinstance(sel, str) else recs[:, sel]
                cols[col] = np.asarray(v, dtype=np.float64).copy() if v.dtype == np.float64 else v.astype(np.float64)
        return cols

    def _iter_chunks(self, start: int) -> Iterator[Chunk]:
        readers = self._open_readers()
        try:
            for c in range(start, self.n_chunks):
                lo = c * self.chunk_size
                yield self._assemble(self._read_rows(readers, lo, min(lo + self.chunk_size, self.n_points)))
        finally:
            for r in readers:
                r.close()

    def _read_blocks(self, blocks):
        readers = self._open_readers()
        try:
            return [self._assemble(self._read_rows(readers, lo, hi)) for lo, hi in blocks]
        finally:
            for r in readers:
                r.close()


# -- csv ---------------------------------------------------------------------------------------
class CsvChunkSource(FileChunkSource):
    """CSV with a header line; chunk byte ranges are known from the scan done at open."""

    def __init__(self, layout: Layout, chunk_size: int, readahead: int, storage_options):
        super().__init__(layout, chunk_size, readahead, storage_options)
        d = layout.detail
        self._offsets: list[int] = d["chunk_offsets"]
        self._size = layout.info.file_size
        self._delim, self._usecols = d["delimiter"], d["usecols"]
        self._data_start = d["data_start"]

    def _parse(self, data: bytes, expect: int | None, where: str) -> list[np.ndarray]:
        try:
            arr = np.loadtxt(
                io.StringIO(data.decode("utf-8")), delimiter=self._delim, usecols=self._usecols, ndmin=2, dtype=np.float64
            )
        except ValueError as exc:
            # numpy quotes the offending text; keep only its position (never file content)
            m = re.search(r"at row (\d+), column (\d+)", str(exc))
            at = f" (row {m.group(1)} of this block, column {m.group(2)})" if m else ""
            raise ValueError(f"{self.uri}, {where}: a record could not be read as numbers{at}") from None
        if expect is not None and arr.shape[0] != expect:
            raise ValueError(
                f"{self.uri}, {where}: expected {expect} records, parsed {arr.shape[0]} "
                "(blank or malformed lines inside the data?)"
            )
        return [np.ascontiguousarray(arr[:, j]) for j in range(arr.shape[1])]

    def _iter_chunks(self, start: int) -> Iterator[Chunk]:
        # Buffer about two chunks' worth of bytes per request (s3fs would otherwise use its
        # 50 MB default blocks): sequential, and memory stays O(chunk_size).
        # One ranged read per chunk (its byte range is known from the scan), retried while the
        # storage fault is transient; memory stays O(chunk_size).
        reader = _RangeReader(self._fs, self._path, self.uri, self._options, self._budget)
        for c in range(start, self.n_chunks):
            a = self._offsets[c]
            b = self._offsets[c + 1] if c + 1 < self.n_chunks else self._size
            lo = c * self.chunk_size
            m = min(self.chunk_size, self.n_points - lo)
            yield self._assemble(self._parse(reader.read(a, b), m, f"records {lo}..{lo + m}"))

    def _read_blocks(self, blocks):
        # Blocks are placed by byte position (records have no fixed size): a window of about
        # the block's share of bytes, starting after the first newline in it.
        span = self._size - self._data_start
        per_row = max(1.0, span / self.n_points)
        out = []
        with self._fs.open(self._path, "rb") as f:
            for lo, hi in blocks:
                a = self._data_start + int(lo * per_row)
                f.seek(a)
                data = f.read(int((hi - lo + 2) * per_row * 1.5) + 256)
                if a > self._data_start:
                    data = data[data.find(b"\n") + 1 :]
                cut = data.rfind(b"\n")
                at_eof = f.tell() >= self._size
                data = data if at_eof else data[: cut + 1]
                if data.strip():
                    out.append(self._assemble(self._parse(data, None, f"sample near byte {a}")))
        return out


# -- parquet -----------------------------------------------------------------------------------
class ParquetChunkSource(FileChunkSource):
    """Parquet row groups, re-cut into chunks of ``chunk_size`` rows."""

    def __init__(self, layout: Layout, chunk_size: int, readahead: int, storage_options):
        super().__init__(layout, chunk_size, readahead, storage_options)
        self._columns = layout.detail["columns"]
        rows = layout.detail["row_groups"]
        self._group_start = np.concatenate([[0], np.cumsum(rows)]).astype(int).tolist()

    def _group_cols(self, pf, g: int) -> list[np.ndarray]:
        tab = pf.read_row_group(g, columns=self._columns)
        return [np.asarray(tab.column(c).to_numpy(zero_copy_only=False), dtype=np.float64) for c in self._columns]

    def _iter_chunks(self, start: int) -> Iterator[Chunk]:
        pq = _pyarrow_parquet()
        lo = start * self.chunk_size
        if lo >= self.n_points:
            return
        g0 = bisect_right(self._group_start, lo) - 1
        skip = lo - self._group_start[g0]
        pending: list[list[np.ndarray]] = []
        held = 0
        with self._fs.open(self._path, "rb") as f:
            pf = pq.ParquetFile(f)
            for g in range(g0, len(self._group_start) - 1):
                cols = self._group_cols(pf, g)
                if skip:
                    cols, skip = [c[skip:] for c in cols], 0
                pending.append(cols)
                held += cols[0].shape[0]
                while held >= self.chunk_size:
                    merged = [np.concatenate(p) for p in zip(*pending)]
                    yield self._assemble([c[: self.chunk_size] for c in merged])
                    rest = [c[self.chunk_size :] for c in merged]
                    pending, held = [rest], rest[0].shape[0]
            if held:
                yield self._assemble([np.concatenate(p) for p in zip(*pending)])

    def _read_blocks(self, blocks):
        pq = _pyarrow_parquet()
        out = []
        with self._fs.open(self._path, "rb") as f:
            pf = pq.ParquetFile(f)
            for lo, hi in blocks:
                g0 = bisect_right(self._group_start, lo) - 1
                g1 = bisect_right(self._group_start, hi - 1) - 1
                cols = [np.concatenate(p) for p in zip(*[self._group_cols(pf, g) for g in range(g0, g1 + 1)])]
                off = lo - self._group_start[g0]
                out.append(self._assemble([c[off : off + hi - lo] for c in cols]))
        return out


# -- front -------------------------------------------------------------------------------------
def open_source(
    uri,
    format: str | None = None,
    x_key=None,
    y_key=None,
    sigma_key=None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    storage_options: dict | None = None,
    readahead: int = 2,
) -> FileChunkSource:
    """A :class:`~nlsq_tasks.engine.sources.ChunkSource` over the data at ``uri``.

    Layouts and keys are those of :func:`nlsq_tasks.io.inspect_data`; ``readahead`` is the
    number of chunks a background thread reads ahead (0: read in the consumer's thread)."""
    if not isinstance(chunk_size, (int, np.integer)) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r} must be a positive integer")
    if not isinstance(readahead, (int, np.integer)) or readahead < 0:
        raise ValueError(f"readahead={readahead!r} must be an integer >= 0")
    # CSV: the scan that counts records also indexes the chunk starts (hence chunk_size).
    layout = probe(uri, format, x_key, y_key, sigma_key, storage_options, csv_chunk_size=int(chunk_size))
    from .formats import get_format

    return get_format(layout.info.format).source(layout, int(chunk_size), int(readahead), storage_options)


def load_arrays(uri, format=None, x_key=None, y_key=None, sigma_key=None, storage_options=None):
    """``(x, y, sigma)`` as float64 arrays, for data that fits in memory (sigma may be None)."""
    src = open_source(uri, format, x_key, y_key, sigma_key, chunk_size=1 << 62, storage_options=storage_options, readahead=0)
    chunks = list(src.chunks())
    if len(chunks) != 1:  # defensive: chunk_size is clipped to n_points, so one chunk
        raise RuntimeError(f"load_arrays expected one chunk from {scrub(src.uri)}, got {len(chunks)}")
    return chunks[0].x, chunks[0].y, chunks[0].sigma
