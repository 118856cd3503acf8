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

import hashlib
import io
import json
import re
import struct
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ._errors import StorageError, scrub, storage_errors
from ._fs import protocol, resolve, to_uri

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
    """The registered format (:mod:`.formats`) named by ``format``, else by the file's extension."""
    from .formats import extensions, format_names, format_of_extension, get_format

    if format is not None:
        return get_format(format).name
    spec = format_of_extension(uri)
    if spec is not None:
        return spec.name
    raise ValueError(
        f"cannot tell the format of {uri!r} from its extension; pass format= one of {', '.join(format_names())} "
        f"(extensions: {', '.join(extensions())})"
    )


# Kinds of numbers a fit can use: bool, signed/unsigned integers, floats. Complex numbers,
# strings, bytes, objects, datetimes and records are refused at inspection: converting them
# would drop an imaginary part or guess at text.
_REAL_KINDS = frozenset("biuf")
_KIND_WORDS = {"c": "complex numbers", "U": "strings", "S": "bytes", "O": "Python objects (pickle)",
               "M": "datetimes", "m": "time deltas", "V": "raw records"}
# A column name is shown in an error only when it looks like a name: this keeps the content
# of a file that is not data (a .env file read as CSV) out of messages and logs.
_SHOWABLE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_ .\-]{0,63}$")


class DataTypeError(ValueError):
    """The data are not real numbers (complex, strings, objects...); names the file and column."""


def require_real(dtype: np.dtype, where: str, role: str, key: Any) -> None:
    """Refuse a dtype that is not bool/integer/float, naming the file, role and key."""
    dtype = np.dtype(dtype)
    if dtype.kind not in _REAL_KINDS:
        what = _KIND_WORDS.get(dtype.kind, f"dtype {dtype}")
        raise DataTypeError(
            f"{where}: {role}={key!r} holds {what} (dtype {dtype}); only real numbers (float, integer, bool) "
            "can be fitted -- convert them first (e.g. fit the real and imaginary parts as separate data sets)"
        )


class _Unshown(list):
    """Column names that are matched but never printed (a one-name CSV header)."""


def showable(names: Sequence) -> list:
    if isinstance(names, _Unshown):
        return []
    """The names that may be printed (see ``_SHOWABLE_NAME``); ints (npy columns) always."""
    return [n for n in names if isinstance(n, (int, np.integer)) or (isinstance(n, str) and _SHOWABLE_NAME.match(n))]


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
    avail = names if isinstance(names, _Unshown) else list(names)
    xs = _as_list(default_x if x_key is None else x_key)
    y = default_y if y_key is None else y_key

    def missing(role, k):
        shown = showable(avail)
        hidden = len(avail) - len(shown)
        more = f" (and {hidden} name(s) not shown: they do not look like column names)" if hidden else ""
        return ValueError(f"{role}={k!r} is not in {what}; available: {shown}{more}")

    for role, k in [("x_key", x) for x in xs] + [("y_key", y)]:
        if k not in avail:
            raise missing(role, k)
    if sigma_key is False:
        sig = None
    elif sigma_key is None:
        sig = default_sigma if default_sigma in avail and default_sigma not in xs and default_sigma != y else None
    else:
        if sigma_key not in avail:
            raise missing("sigma_key", sigma_key)
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
    if len(raw) < pre + hlen:
        raise ValueError(f"the npy header is cut short ({len(raw)} of {pre + hlen} bytes)")
    fp = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:  # (3, 0): utf-8 field names; numpy has no public reader for it
            shape, fortran, dtype = np.lib.format._read_array_header(fp, version)  # noqa: SLF001
    except (ValueError, SyntaxError, TypeError, KeyError, UnicodeDecodeError):
        # numpy's own message quotes the header text: never repeat file content
        raise ValueError("the npy header is not valid (not written by numpy.save, or damaged)") from None
    if dtype.hasobject:
        raise ValueError("npy arrays of Python objects are not supported (they need pickle)")
    return tuple(shape), bool(fortran), dtype, base + pre + hlen


def _expect_size(where: str, have: int, header_end: int, shape, dtype: np.dtype, what: str = "file") -> None:
    """The stored bytes must be exactly what the header announces (a truncated file fails here,
    at inspection, and not chunks into the first pass)."""
    need = header_end + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if have != need:
        state = "truncated" if have < need else "longer than its header says"
        raise ValueError(
            f"{where} is {state}: its header announces shape {tuple(shape)} of {dtype} "
            f"({need - header_end} data bytes after a {header_end}-byte header), but the {what} has {have} bytes"
        )


def _npy_layout(fs, path, x_key, y_key, sigma_key, where="the npy file", file_size=None):
    shape, fortran, dtype, off = parse_npy_header(lambda a, b: fs.cat_file(path, start=a, end=b))
    if file_size is not None:
        _expect_size(where, int(file_size), off, shape, dtype)
    if dtype.names:  # structured records: fields by name
        if len(shape) != 1:
            raise ValueError(f"a structured npy array must be 1-D, got shape {shape}")
        xs, y, sig = _choose(dtype.names, x_key, y_key, sigma_key, "x", "y", "sigma", "the npy fields")
        for role, name in [("x_key", m) for m in xs] + [("y_key", y)] + ([("sigma_key", sig)] if sig else []):
            require_real(dtype[name], where, role, name)
        n = shape[0]
        groups = [{"base": off, "record": dtype, "take": [(i, name) for i, name in enumerate(xs + [y] + ([sig] if sig else []))]}]
        cols = list(dtype.names)
        vdtype = str(dtype[y])
    else:
        if len(shape) != 2:
            raise ValueError(f"an npy data file must be 2-D (n, columns), got shape {shape}; see nlsq_tasks.io.inspect")
        n, c = shape
        require_real(dtype, where, "columns", "all")
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
def _npz_layout(fs, path, x_key, y_key, sigma_key, where="the npz file", file_size=None):
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
                if file_size is not None and start + zi.file_size > int(file_size):
                    raise ValueError(f"{where} is truncated: member {name!r} ends at byte {start + zi.file_size}, "
                                     f"the file has {file_size} bytes")
                _expect_size(f"{where}, member {name!r}", zi.file_size, hdr[3] - start, hdr[0], hdr[2], "member")
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
                _expect_size(f"{where}, member {name!r}", zi.file_size, hdr[3], hdr[0], hdr[2], "member")
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
        require_real(dt, where, role, name)
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


# Bytes a numeric CSV record may hold: digits, sign, point, exponent, the letters of nan/inf/
# infinity, blanks and the delimiter (added per file). Anything else is text where a number
# belongs, refused at inspection with its record and column (never its content).
_NUMERIC_BYTES = np.zeros(256, bool)
for _c in b"0123456789+-.eE \t\r\nnaifNAIFtyTY":
    _NUMERIC_BYTES[_c] = True
_BLANK_BYTES = np.zeros(256, bool)
for _c in b" \t\r\n":
    _BLANK_BYTES[_c] = True


class _CsvRecordCheck:
    """Streaming checks of the records after the header, block by block (vectorised):
    only numeric bytes, and every non-blank record with as many fields as the header."""

    def __init__(self, where: str, names: list[str], delim: str | None):
        self.where, self.names = where, names
        self.delim = None if delim is None else ord(delim)
        self.allowed = _NUMERIC_BYTES.copy()
        if self.delim is not None:
            self.allowed[self.delim] = True
        self.want = len(names) - 1  # delimiters per record
        self.record = 0  # index of the record the next byte belongs to
        self.carry_delims = 0  # delimiters of the unfinished record so far
        self.carry_text = 0  # non-blank bytes of the unfinished record so far

    def _column(self, k: int) -> str:
        # The name only once the header looks like a table's (two or more names); a
        # one-token first line (a secret in a .env file) is never repeated.
        if len(self.names) > 1 and k < len(self.names) and showable([self.names[k]]):
            return f"column {k} ({self.names[k]!r})"
        return f"column {k}"

    def feed(self, data: bytes, final: bool = False) -> None:
        arr = np.frombuffer(data, np.uint8)
        nl = np.flatnonzero(arr == 10)
        bad = np.flatnonzero(~self.allowed[arr])
        if len(bad):
            i = int(bad[0])
            before = int(np.searchsorted(nl, i))
            line_start = int(nl[before - 1]) + 1 if before else 0
            col = (self.carry_delims if not before else 0) + (
                int(np.count_nonzero(arr[line_start:i] == self.delim)) if self.delim is not None else 0)
            raise DataTypeError(
                f"{self.where}: record {self.record + before} (line {self.record + before + 2}), {self._column(col)} "
                "holds text where a number belongs; only numbers (and nan/inf) can be fitted"
            )
        if self.delim is None:  # whitespace-separated: numpy's parser checks the field count
            self.record += len(nl)
            return
        ends = np.concatenate([nl, [len(arr)]]) if final else nl
        d_cum = np.searchsorted(np.flatnonzero(arr == self.delim), ends)
        t_cum = np.cumsum(~_BLANK_BYTES[arr])[ends - 1] if len(arr) else np.zeros(len(ends), int)
        t_cum = np.where(ends > 0, t_cum, 0)
        delims = np.diff(np.concatenate([[0], d_cum]))
        text = np.diff(np.concatenate([[0], t_cum]))
        if len(ends):
            delims[0] += self.carry_delims
            text[0] += self.carry_text
        wrong = np.flatnonzero((delims != self.want) & (text > 0))
        if len(wrong):
            r = int(wrong[0])
            raise ValueError(
                f"{self.where}: record {self.record + r} (line {self.record + r + 2}) has {int(delims[r]) + 1} fields "
                f"but the header names {self.want + 1} columns; every record needs one value per column"
            )
        if not final:
            last = int(nl[-1]) + 1 if len(nl) else 0
            tail = arr[last:]
            self.carry_delims = (0 if len(nl) else self.carry_delims) + int(np.count_nonzero(tail == self.delim))
            self.carry_text = (0 if len(nl) else self.carry_text) + int(np.count_nonzero(~_BLANK_BYTES[tail]))
        self.record += len(nl)


def _csv_header(raw: bytes, where: str) -> tuple[list[str], str | None]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{where}: the header line is not UTF-8 text (a binary file?)") from None
    names, delim = _split_header(text)
    if not names or not any(names):
        raise ValueError(f"{where}: the header line is empty; a header line with column names is required")
    try:
        float(names[0])
    except ValueError:
        return names, delim
    raise ValueError(f"{where}: the first line looks like data, not column names; a header line with column names is required")


def csv_scan(fs, path, chunk_size: int | None = None, block: int = _CSV_BLOCK, where: str = "the CSV file"):
    """One streaming pass: ``(header_bytes, n_records, chunk_offsets, names, delimiter)``.

    ``chunk_offsets[c]`` is the byte offset where record ``c * chunk_size`` starts (only when
    ``chunk_size`` is given). Records = non-blank lines after the header; trailing blank
    lines are ignored. The same pass checks every record (:class:`_CsvRecordCheck`), so text
    or a ragged row is refused here, at inspection. A bounded loop: one iteration per block."""
    size = fs.size(path)
    max_blocks = size // block + 2
    header_end = None
    head = bytearray()
    check = None
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
                        raise ValueError(f"{where}: no newline in the first MiB: not a CSV file with a header line")
                    head.extend(buf)
                    pos += len(buf)
                    continue
                header_end = pos + int(nl[0]) + 1
                head.extend(buf[: int(nl[0]) + 1])
                names, delim = _csv_header(bytes(head), where)
                check = _CsvRecordCheck(where, names, delim)
                if offsets is not None:
                    offsets.append(header_end)
                nl = nl[1:]
                data = buf[int(header_end - pos):]
            else:
                data = buf
            check.feed(data)
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
            raise ValueError(f"{where} is empty (a header line with column names is required)")
        header_end = pos  # a header without newline and no data
        names, delim = _csv_header(bytes(head), where)
    else:
        check.feed(b"", final=True)
    n = newlines - trailing_nl + 1 if any_data_after else 0
    if offsets is not None:
        offsets = [o for i, o in enumerate(offsets) if i * chunk_size < n]
    return bytes(head[:header_end]), n, offsets, names, delim


def _csv_layout(fs, path, x_key, y_key, sigma_key, chunk_size=None, where="the CSV file"):
    header, n, offsets, names, delim = csv_scan(fs, path, chunk_size, where=where)
    if n < 1:  # before naming columns: a one-line file may be anything but data
        raise ValueError(f"{where} holds no data points (no records after its header line)")
    xs, y, sig = _choose(names if len(names) > 1 else _Unshown(names), x_key, y_key, sigma_key,
                         "x", "y", "sigma", "the CSV columns")
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


def _parquet_layout(fs, path, x_key, y_key, sigma_key, where="the parquet file"):
    pq = _pyarrow_parquet()
    import pyarrow as pa

    with fs.open(path, "rb") as f:
        md = pq.ParquetFile(f).metadata
    schema = md.schema.to_arrow_schema()
    names = list(schema.names)
    xs, y, sig = _choose(names, x_key, y_key, sigma_key, "x", "y", "sigma", "the parquet columns")
    for role, name in [("x_key", m) for m in xs] + [("y_key", y)] + ([("sigma_key", sig)] if sig else []):
        t = schema.field(name).type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
            what = "strings" if (pa.types.is_string(t) or pa.types.is_large_string(t)) else f"values of type {t}"
            raise DataTypeError(
                f"{where}: {role}={name!r} holds {what}; only real numbers (float, integer, bool) can be fitted"
            )
    rows = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
    keys = {"x": xs if len(xs) > 1 else xs[0], "y": y, "sigma": sig}
    detail = {"columns": xs + [y] + ([sig] if sig else []), "row_groups": rows}
    return md.num_rows, len(xs), sig is not None, str(schema.field(y).type), keys, names, detail


# -- front ----------------------------------------------------------------------------------
def probe(uri, format=None, x_key=None, y_key=None, sigma_key=None, storage_options=None, csv_chunk_size=None) -> Layout:
    """Read the metadata of ``uri`` and decide how to read it (used by inspect and sources);
    retried as a whole while the storage fault is transient (:mod:`nlsq_tasks.io.retry`)."""
    from .retry import with_retries

    return with_retries(lambda: _probe(uri, format, x_key, y_key, sigma_key, storage_options, csv_chunk_size),
                        str(uri), "inspect", storage_options)


def _probe(uri, format, x_key, y_key, sigma_key, storage_options, csv_chunk_size) -> Layout:
    uri = to_uri(uri)
    fmt = detect_format(uri, format)
    fs, path = resolve(uri, storage_options)
    where = scrub(uri, storage_options)
    with storage_errors(uri, "inspect", storage_options):
        st = fs.info(path)
        if st.get("type") == "directory":
            raise StorageError(f"{where} is a directory, not a {fmt} file")
        size = int(st.get("size") or 0)
        try:
            from .formats import get_format

            parts = get_format(fmt).layout(fs, path, x_key, y_key, sigma_key, where=where, size=size,
                                           chunk_size=csv_chunk_size)
        except DataTypeError:
            raise
        except (zipfile.BadZipFile, struct.error, UnicodeDecodeError, SyntaxError, EOFError, zlib.error):
            # the library's text may quote bytes of the file: say what, never echo content
            raise ValueError(f"{where} is not a readable {fmt} file (damaged, or another format)") from None
        except ValueError as exc:
            text = str(exc)
            if text.startswith(where):
                raise ValueError(text) from None
            if "available:" in text or "pass x_key" in text:
                raise ValueError(f"{where}: {text}") from None
            if _is_ours(exc):
                raise ValueError(f"{where} is not a readable {fmt} file: {text}") from None
            raise ValueError(f"{where} is not a readable {fmt} file (damaged, or another format)") from None
        except Exception as exc:  # pyarrow's ArrowInvalid and friends: their text may quote the file
            if type(exc).__module__.split(".")[0] != "pyarrow":
                raise
            raise ValueError(f"{where} is not a readable {fmt} file ({type(exc).__name__})") from None
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


def _is_ours(exc: BaseException) -> bool:
    """A ValueError raised by this module (its text is built from metadata, not content)."""
    tb = exc.__traceback__
    for _ in range(64):  # bounded walk to the innermost frame
        if tb is None or tb.tb_next is None:
            break
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename == __file__


def inspect_data(uri, format=None, x_key=None, y_key=None, sigma_key=None, storage_options=None) -> DataInfo:
    """Metadata of the data at ``uri`` (see the module docstring for layouts and keys)."""
    return probe(uri, format, x_key, y_key, sigma_key, storage_options).info


def keys_repr(keys: Mapping[str, Any]) -> str:
    return json.dumps(keys, sort_keys=True, default=str)
