"""What is in a data file, read from its metadata only.

Supported formats (chosen by extension, or by ``format=``) and their layouts:

``npy``
    A 2-D array of shape ``(n, c)``, one row per point. Columns are chosen by index:
    ``x_key`` (an int, or a list of ints for k features), ``y_key``, ``sigma_key``.
    Defaults: x = column 0, y = column 1, sigma = column 2 when there are exactly 3
    columns. C order (rows contiguous) and Fortran order (columns contiguous, e.g.
    ``np.save(f, np.asfortranarray(table))``) are both read with ranged reads.
    A *structured* 1-D array is also accepted; its fields are chosen by name like CSV
    columns (defaults ``x``, ``y``, ``sigma``).
``npz``
    Members chosen by name (defaults ``x``, ``y``, ``sigma``). ``x`` may be ``(n,)``,
    ``(k, n)`` (SciPy layout) or ``(n, k)``; ``x_key`` may also list k 1-D members.
    Metadata comes from the zip central directory and each member's npy header.
``csv``
    A header line with column names, then one record per line (no blank lines except at the
    end, no comments, numbers only). Delimiter: ``,`` unless the header has none and has a
    tab or ``;`` (then that one), or whitespace. Columns chosen by name (defaults as npz).
    *The number of records is found by streaming the file once in 4 MiB blocks and counting
    newlines* -- CSV has no metadata; every other format is read from its header or footer.
``parquet``
    Columns by name (defaults as npz), from the footer metadata (needs ``pyarrow``).

``sigma_key=None`` means "the column/member named ``sigma`` if there is one";
``sigma_key=False`` ignores sigma; an explicit name must exist.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ._errors import StorageError, scrub, storage_errors
from ._fs import protocol, resolve, to_uri

FORMATS = ("npy", "npz", "csv", "parquet")
_EXTENSIONS = {".npy": "npy", ".npz": "npz", ".csv": "csv", ".tsv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet"}
_CSV_BLOCK = 4 << 20
_MAX_HEADER_BYTES = 1 << 20


@dataclass
class DataInfo:
    """Metadata of a data set (nothing but headers was read; CSV: see the module notes).

    ``nbytes`` is what x, y and sigma take in memory as float64 (what a non-chunked fit
    would hold); ``file_size`` is the size of the stored file."""

    uri: str
    format: str
    n_points: int
    n_features: int
    dtype: str
    nbytes: int
    has_sigma: bool
    keys: dict[str, Any]
    columns: list[str]
    file_size: int
    compressed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Layout:
    """Everything a source needs to read the data: the :class:`DataInfo` plus
    format-specific placement (byte offsets, record dtypes, zip members, row groups)."""

    info: DataInfo
    fs: Any
    path: str
    stamp: str
    detail: dict[str, Any] = field(default_factory=dict)


def detect_format(uri: str, format: str | None = None) -> str:
    if format is not None:
        fmt = str(format).lower().lstrip(".")
        if fmt == "pq":
            fmt = "parquet"
        if fmt not in FORMATS:
            raise ValueError(f"format={format!r} is not supported; allowed: {', '.join(FORMATS)}")
        return fmt
    name = uri.split("?", 1)[0].rstrip("/").lower()
    for ext, fmt in _EXTENSIONS.items():
        if name.endswith(ext):
            return fmt
    raise ValueError(
        f"cannot tell the format of {uri!r} from its extension; pass format= one of {', '.join(FORMATS)} "
        f"(extensions: {', '.join(sorted(_EXTENSIONS))})"
    )


def _stamp(info: Mapping[str, Any]) -> str:
    """Modification identity: an ETag when the store has one, else a modification time."""
    for k in ("ETag", "etag", "md5Hash", "generation"):
        if info.get(k):
            return f"{k}={str(info[k]).strip(chr(34))}"
    for k in ("mtime", "LastModified", "last_modified", "updated", "created"):
        if info.get(k) is not None:
            v = info[k]
            return f"{k}={v.isoformat() if hasattr(v, 'isoformat') else v}"
    return "unstamped"


# -- key handling ---------------------------------------------------------------------------
def _as_list(key) -> list:
    return list(key) if isinstance(key, (list, tuple)) else [key]


def _choose(names: Sequence, x_key, y_key, sigma_key, default_x, default_y, default_sigma, what: str):
    """Resolve the roles against the available ``names`` (column names or indices)."""
    avail = list(names)
    xs = _as_list(default_x if x_key is None else x_key)
    y = default_y if y_key is None else y_key
    for role, k in [("x_key", x) for x in xs] + [("y_key", y)]:
        if k not in avail:
            raise ValueError(f"{role}={k!r} is not in {what}; available: {avail}")
    if sigma_key is False:
        sig = None
    elif sigma_key is None:
        sig = default_sigma if default_sigma in avail and default_sigma not in xs and default_sigma != y else None
    else:
        if sigma_key not in avail:
            raise ValueError(f"sigma_key={sigma_key!r} is not in {what}; available: {avail}")
        sig = sigma_key
    return xs, y, sig


# -- npy ------------------------------------------------------------------------------------
def parse_npy_header(fetch, base: int = 0):
    """``(shape, fortran_order, dtype, data_offset)`` of the npy file whose bytes
    ``[a, b)`` are ``fetch(a, b)``, starting at ``base``. Reads at most the header."""
    head = fetch(base, base + 12)
    if len(head) < 10 or head[:6] != b"\x93NUMPY":
        raise ValueError("not an npy file (bad magic)")
    major = head[6]
    if major == 1:
        hlen, pre = struct.unpack("<H", head[8:10])[0], 10
    elif major in (2, 3):
        hlen, pre = struct.unpack("<I", head[8:12])[0], 12
    else:
        raise ValueError(f"unsupported npy format version {major}")
    if hlen > _MAX_HEADER_BYTES:
        raise ValueError(f"npy header of {hlen} bytes is implausibly large")
    raw = fetch(base, base + pre + hlen)
    fp = io.BytesIO(raw)
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
    else:  # (3, 0): utf-8 field names; numpy has no public reader for it
        shape, fortran, dtype = np.lib.format._read_array_header(fp, version)  # noqa: SLF001
    if dtype.hasobject:
        raise ValueError("npy arrays of Python objects are not supported (they need pickle)")
    return tuple(shape), bool(fortran), dtype, base + pre + hlen


def _npy_layout(fs, path, x_key, y_key, sigma_key):
    shape, fortran, dtype, off = parse_npy_header(lambda a, b: fs.cat_file(path, start=a, end=b))
    if dtype.names:  # structured records: fields by name
        if len(shape) != 1:
            raise ValueError(f"a structured npy array must be 1-D, got shape {shape}")
        xs, y, sig = _choose(dtype.names, x_key, y_key, sigma_key, "x", "y", "sigma", "the npy fields")
        n = shape[0]
        groups = [{"base": off, "record": dtype, "take": [(i, name) for i, name in enumerate(xs + [y] + ([sig] if sig else []))]}]
        cols = list(dtype.names)
        vdtype = str(dtype[y])
    else:
        if len(shape) != 2:
            raise ValueError(f"an npy data file must be 2-D (n, columns), got shape {shape}; see nlsq_tasks.io.inspect")
        n, c = shape
        if x_key is None and y_key is None and c > 3:
            raise ValueError(f"the npy file has {c} columns; pass x_key (a column index or a list) and y_key")
        xs, y, sig = _choose(range(c), x_key, y_key, sigma_key, 0, 1, 2 if c == 3 else -1, f"the {c} npy columns")
        roles = xs + [y] + ([sig] if sig is not None else [])
        isz = dtype.itemsize
        if fortran:  # each column is contiguous: one record group per column
            groups = [{"base": off + col * n * isz, "record": dtype, "take": [(i, None)]} for i, col in enumerate(roles)]
        else:  # a row is one record of c values
            groups = [{"base": off, "record": np.dtype((dtype, (c,))), "take": [(i, col) for i, col in enumerate(roles)]}]
        cols = [str(i) for i in range(c)]
        vdtype = str(dtype)
    keys = {"x": xs if len(xs) > 1 else xs[0], "y": y, "sigma": sig}
    return n, len(xs), sig is not None, vdtype, keys, cols, {"groups": groups, "stored": True}


# -- npz ------------------------------------------------------------------------------------
def _npz_layout(fs, path, x_key, y_key, sigma_key):
    with fs.open(path, "rb") as f, zipfile.ZipFile(f) as zf:
        infos = {i.filename[:-4] if i.filename.endswith(".npy") else i.filename: i for i in zf.infolist()}
        xs, y, sig = _choose(infos, x_key, y_key, sigma_key, "x", "y", "sigma", "the npz members")
        headers, compressed = {}, False
        for name in dict.fromkeys(xs + [y] + ([sig] if sig else [])):
            zi = infos[name]
            if zi.compress_type == zipfile.ZIP_STORED:
                # Local file header: 30 fixed bytes, then the name and the extra field.
                lh = fs.cat_file(path, start=zi.header_offset, end=zi.header_offset + 30)
                if lh[:4] != b"PK\x03\x04":
                    raise ValueError(f"npz member {name!r}: bad local header")
                nlen, elen = struct.unpack("<HH", lh[26:30])
                start = zi.header_offset + 30 + nlen + elen
                hdr = parse_npy_header(lambda a, b: fs.cat_file(path, start=a, end=b), start)
                headers[name] = (hdr, True, start)
            else:
                compressed = True
                with zf.open(zi) as m:  # decompress just as far as the npy header goes
                    buf = bytearray()

                    def fetch(a, b, m=m, buf=buf):
                        for _ in range(64):
                            if len(buf) >= b:
                                break
                            more = m.read(b - len(buf))
                            if not more:
                                break
                            buf.extend(more)
                        return bytes(buf[a:b])

                    hdr = parse_npy_header(fetch)
                headers[name] = (hdr, False, 0)
    (yshape, _, ydt, _), _, _ = headers[y]
    if len(yshape) != 1:
        raise ValueError(f"npz member y_key={y!r} must be 1-D, got shape {yshape}")
    n = yshape[0]
    groups, col = [], 0

    def add(member, shape, fortran, dt, off, stored):
        """Append the record groups of one member; ``col`` counts logical columns."""
        nonlocal col
        if len(shape) == 1 or (len(shape) == 2 and 1 in shape and max(shape) == n):
            groups.append({"member": member, "stored": stored, "base": off, "record": dt, "take": [(col, None)]})
            col += 1
            return
        # Feature r of point j sits at element r*n + j for (k, n) C order and (n, k) Fortran
        # order (each feature contiguous), else at j*k + r (each point's k values contiguous).
        # A square member follows SciPy's (k, n) convention.
        points_first = shape[0] == n and shape[1] != n
        k = shape[1] if points_first else shape[0]
        if fortran == points_first:  # feature-contiguous
            for r in range(k):
                base = off + r * n * dt.itemsize
                groups.append({"member": member, "stored": stored, "base": base, "record": dt, "take": [(col, None)]})
                col += 1
        else:
            rec = np.dtype((dt, (k,)))
            groups.append({"member": member, "stored": stored, "base": off, "record": rec, "take": [(col + r, r) for r in range(k)]})
            col += k

    n_features = 0
    for role, name in [("x_key", m) for m in xs] + [("y_key", y)] + ([("sigma_key", sig)] if sig else []):
        (shape, fortran, dt, hoff), stored, start = headers[name]
        if dt.names or dt.hasobject:
            raise ValueError(f"npz member {role}={name!r} must hold numbers, got dtype {dt}")
        ok = (len(shape) == 1 and shape[0] == n) or (len(shape) == 2 and n in shape and role == "x_key" and len(xs) == 1)
        if not ok:
            raise ValueError(f"npz member {role}={name!r} has shape {shape}; expected ({n},) to match y" + (" or (k, n)" if role == "x_key" else ""))
        before = col
        add(infos[name].filename, shape, fortran, dt, hoff, stored)
        if role == "x_key":
            n_features += col - before
    keys = {"x": xs if len(xs) > 1 else xs[0], "y": y, "sigma": sig}
    return n, n_features, sig is not None, str(ydt), keys, list(infos), {"groups": groups, "stored": not compressed, "compressed": compressed}


# -- csv ------------------------------------------------------------------------------------
def _split_header(line: str) -> tuple[list[str], str | None]:
    line = line.lstrip("\ufeff").rstrip("\r\n")
    for d in (",", "\t", ";"):
        if d in line:
            return [c.strip().strip('"').strip("'") for c in line.split(d)], d
    return line.split(), None


def csv_scan(fs, path, chunk_size: int | None = None, block: int = _CSV_BLOCK):
    """One streaming pass: ``(header_bytes, n_records, chunk_offsets)``.

    ``chunk_offsets[c]`` is the byte offset where record ``c * chunk_size`` starts (only when
    ``chunk_size`` is given). Records = non-blank lines after the header; trailing blank
    lines are ignored. A bounded loop: one iteration per block of the file."""
    size = fs.size(path)
    max_blocks = size // block + 2
    header_end = None
    newlines = 0  # newlines seen after the header
    trailing_nl = 0  # newlines inside the whitespace at the current end of the data
    any_data_after = False
    offsets = [] if chunk_size else None
    pos = 0
    with fs.open(path, "rb", block_size=block) as f:
        for _ in range(max_blocks):
            buf = f.read(block)
            if not buf:
                break
            nl = np.flatnonzero(np.frombuffer(buf, np.uint8) == 10)
            if header_end is None:
                if len(nl) == 0:
                    if pos + len(buf) > _MAX_HEADER_BYTES:
                        raise ValueError("no newline in the first MiB: not a CSV file with a header line")
                    pos += len(buf)
                    continue
                header_end = pos + int(nl[0]) + 1
                if offsets is not None:
                    offsets.append(header_end)
                nl = nl[1:]
                data = buf[int(header_end - pos):]
            else:
                data = buf
            if offsets is not None and len(nl):
                # Record r starts right after the (r)-th newline following the header (1-based).
                first = newlines + 1
                ks = np.arange(-(-first // chunk_size) * chunk_size, newlines + len(nl) + 1, chunk_size)
                ks = ks[ks >= first]
                offsets.extend((pos + nl[ks - first] + 1).tolist())
            newlines += len(nl)
            stripped = data.rstrip()
            if stripped:
                any_data_after = True
                trailing_nl = data[len(stripped):].count(b"\n")
            else:
                trailing_nl += data.count(b"\n")
            pos += len(buf)
    if header_end is None:
        if pos == 0:
            raise ValueError("the CSV file is empty (a header line with column names is required)")
        header_end = pos  # a header without newline and no data
    n = newlines - trailing_nl + 1 if any_data_after else 0
    if offsets is not None:
        offsets = [o for i, o in enumerate(offsets) if i * chunk_size < n]
    with fs.open(path, "rb") as f:
        header = f.read(min(header_end, _MAX_HEADER_BYTES))
    return header, n, offsets


def _csv_layout(fs, path, x_key, y_key, sigma_key, chunk_size=None):
    header, n, offsets = csv_scan(fs, path, chunk_size)
    names, delim = _split_header(header.decode("utf-8", errors="replace"))
    try:
        float(names[0])
        raise ValueError(f"the first line of the CSV file looks like data ({names}); a header line with column names is required")
    except ValueError as exc:
        if "header line" in str(exc):
            raise
    xs, y, sig = _choose(names, x_key, y_key, sigma_key, "x", "y", "sigma", "the CSV columns")
    usecols = [names.index(c) for c in xs + [y] + ([sig] if sig else [])]
    keys = {"x": xs if len(xs) > 1 else xs[0], "y": y, "sigma": sig}
    detail = {"delimiter": delim, "usecols": usecols, "data_start": len(header), "chunk_offsets": offsets, "n_columns": len(names)}
    return n, len(xs), sig is not None, "float64", keys, names, detail


# -- parquet --------------------------------------------------------------------------------
def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError("reading parquet needs pyarrow: pip install 'nlsq-flows[parquet]' (or pyarrow)") from None
    return pq


def _parquet_layout(fs, path, x_key, y_key, sigma_key):
    pq = _pyarrow_parquet()
    with fs.open(path, "rb") as f:
        md = pq.ParquetFile(f).metadata
    schema = md.schema.to_arrow_schema()
    names = list(schema.names)
    xs, y, sig = _choose(names, x_key, y_key, sigma_key, "x", "y", "sigma", "the parquet columns")
    rows = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
    keys = {"x": xs if len(xs) > 1 else xs[0], "y": y, "sigma": sig}
    detail = {"columns": xs + [y] + ([sig] if sig else []), "row_groups": rows}
    return md.num_rows, len(xs), sig is not None, str(schema.field(y).type), keys, names, detail


# -- front ----------------------------------------------------------------------------------
def probe(uri, format=None, x_key=None, y_key=None, sigma_key=None, storage_options=None, csv_chunk_size=None) -> Layout:
    """Read the metadata of ``uri`` and decide how to read it (used by inspect and sources)."""
    uri = to_uri(uri)
    fmt = detect_format(uri, format)
    fs, path = resolve(uri, storage_options)
    with storage_errors(uri, "inspect", storage_options):
        st = fs.info(path)
        if st.get("type") == "directory":
            raise StorageError(f"{scrub(uri, storage_options)} is a directory, not a {fmt} file")
        try:
            if fmt == "npy":
                parts = _npy_layout(fs, path, x_key, y_key, sigma_key)
            elif fmt == "npz":
                parts = _npz_layout(fs, path, x_key, y_key, sigma_key)
            elif fmt == "csv":
                parts = _csv_layout(fs, path, x_key, y_key, sigma_key, csv_chunk_size)
            else:
                parts = _parquet_layout(fs, path, x_key, y_key, sigma_key)
        except (zipfile.BadZipFile, struct.error, UnicodeDecodeError, SyntaxError) as exc:
            raise ValueError(f"{scrub(uri, storage_options)} is not a readable {fmt} file: {exc}") from None
        except ValueError as exc:
            if "available:" in str(exc) or "pass x_key" in str(exc):
                raise ValueError(f"{scrub(uri, storage_options)}: {exc}") from None
            raise ValueError(f"{scrub(uri, storage_options)} is not a readable {fmt} file: {exc}") from None
    n, k, has_sigma, dtype, keys, columns, detail = parts
    if n < 1:
        raise ValueError(f"{scrub(uri, storage_options)} holds no data points")
    info = DataInfo(
        uri=scrub(uri, storage_options),
        format=fmt,
        n_points=int(n),
        n_features=int(k),
        dtype=dtype,
        nbytes=int(n) * (k + 1 + int(has_sigma)) * 8,
        has_sigma=has_sigma,
        keys=keys,
        columns=[str(c) for c in columns],
        file_size=int(st.get("size") or 0),
        compressed=bool(detail.get("compressed", False)),
    )
    return Layout(info=info, fs=fs, path=path, stamp=f"{protocol(fs)}|size={info.file_size}|{_stamp(st)}", detail=detail)


def inspect_data(uri, format=None, x_key=None, y_key=None, sigma_key=None, storage_options=None) -> DataInfo:
    """Metadata of the data at ``uri`` (see the module docstring for layouts and keys)."""
    return probe(uri, format, x_key, y_key, sigma_key, storage_options).info


def keys_repr(keys: Mapping[str, Any]) -> str:
    return json.dumps(keys, sort_keys=True, default=str)
