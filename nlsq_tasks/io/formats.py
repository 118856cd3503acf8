"""The data-format registry: what ``inspect_data``, ``open_source`` and the flow's request
form accept.

A format is a :class:`DataFormat` registered once: its ``name``, the file ``extensions``
that select it, ``layout`` (read the metadata: points, features, sigma, dtype and where
each column lives, without reading the data) and ``source`` (the chunk source class that
serves chunks from that layout). The built-in formats (npy, npz, csv, parquet) are
registered below; their readers live in :mod:`.inspect` (metadata) and :mod:`.sources`
(chunks). A new format is one module under ``nlsq_tasks/io/`` that defines both and calls
:func:`register_format`, plus its import in ``nlsq_tasks/io/__init__.py``; every list of
formats (``format_names()``, the request's ``DataFormat`` enum, the CLI's ``--format``)
follows.

``layout(fs, path, x_key, y_key, sigma_key, where=..., size=..., chunk_size=...)`` returns
``(n_points, n_features, has_sigma, dtype, keys, columns, detail)``; ``source(layout,
chunk_size, readahead, storage_options)`` is a :class:`~nlsq_tasks.engine.sources.ChunkSource`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["DataFormat", "register_format", "format_names", "get_format", "format_of_extension"]


@dataclass(frozen=True)
class DataFormat:
    name: str
    extensions: tuple[str, ...]
    layout: Callable[..., tuple]
    source: Callable[..., Any]
    aliases: tuple[str, ...] = ()


_REGISTRY: dict[str, DataFormat] = {}


def register_format(spec: DataFormat) -> DataFormat:
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"data format {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def format_names() -> tuple[str, ...]:
    """Registered format names, in registration order."""
    return tuple(_REGISTRY)


def get_format(name: str) -> DataFormat:
    """The format called ``name`` (or one of its aliases, e.g. ``pq``); ValueError listing the allowed ones."""
    key = str(name).lower().lstrip(".")
    for spec in _REGISTRY.values():
        if key == spec.name or key in spec.aliases:
            return spec
    raise ValueError(f"format={name!r} is not supported; allowed: {', '.join(_REGISTRY)}")


def format_of_extension(filename: str) -> DataFormat | None:
    name = filename.split("?", 1)[0].rstrip("/").lower()
    for spec in _REGISTRY.values():
        if any(name.endswith(ext) for ext in spec.extensions):
            return spec
    return None


def extensions() -> list[str]:
    return sorted(ext for spec in _REGISTRY.values() for ext in spec.extensions)


# -- the built-in formats (readers in .inspect and .sources) ---------------------------------
def register_builtin_formats() -> None:
    from . import inspect as I
    from . import sources as S

    register_format(DataFormat(
        "npy", (".npy",), lambda fs, path, x, y, s, *, where, size, chunk_size: I._npy_layout(fs, path, x, y, s, where, size),
        S.RecordChunkSource))
    register_format(DataFormat(
        "npz", (".npz",), lambda fs, path, x, y, s, *, where, size, chunk_size: I._npz_layout(fs, path, x, y, s, where, size),
        S.RecordChunkSource))
    register_format(DataFormat(
        "csv", (".csv", ".tsv", ".txt"),
        lambda fs, path, x, y, s, *, where, size, chunk_size: I._csv_layout(fs, path, x, y, s, chunk_size, where),
        S.CsvChunkSource))
    register_format(DataFormat(
        "parquet", (".parquet", ".pq"),
        lambda fs, path, x, y, s, *, where, size, chunk_size: I._parquet_layout(fs, path, x, y, s, where),
        S.ParquetChunkSource, aliases=("pq",)))
