"""Storage for nlsq_tasks, over fsspec (local paths, ``memory://``, ``s3://``...).

The only part of nlsq_tasks that imports fsspec/s3fs: data inspection, chunk sources,
the checkpoint store and the result store.
"""

from ._errors import (
    StorageError,
    StorageNotFoundError,
    StoragePermissionError,
    TransientStorageError,
    redact_options,
    redact_uri,
)
from ._fs import atomic_write_bytes, load_text, read_bytes
from .checkpoint_store import CheckpointStore
from .inspect import DataInfo, DataTypeError, inspect_data
from .policy import StoragePolicy, StoragePolicyError, check_glob, check_uri
from .result_store import IncompleteResultError, ResultStore, read_result
from .stack import load_stack, stack_size
from .table_store import read_table, write_table
from .sources import CsvChunkSource, FileChunkSource, ParquetChunkSource, RecordChunkSource, load_arrays, open_source

__all__ = [
    "CheckpointStore",
    "CsvChunkSource",
    "DataInfo",
    "DataTypeError",
    "FileChunkSource",
    "IncompleteResultError",
    "ParquetChunkSource",
    "RecordChunkSource",
    "ResultStore",
    "StorageError",
    "StorageNotFoundError",
    "StoragePermissionError",
    "StoragePolicy",
    "StoragePolicyError",
    "TransientStorageError",
    "atomic_write_bytes",
    "check_glob",
    "check_uri",
    "inspect_data",
    "load_arrays",
    "load_stack",
    "load_text",
    "open_source",
    "read_bytes",
    "read_result",
    "read_table",
    "stack_size",
    "redact_options",
    "redact_uri",
    "write_table",
]
