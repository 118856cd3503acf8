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
    scrub,
    storage_errors,
)
from ._fs import atomic_write_bytes, is_local, is_object_store, load_text, protocol, read_bytes, resolve, write_bytes_atomic
from .checkpoint_store import CheckpointStore
from .formats import DataFormat, format_names, register_builtin_formats, register_format
from .inspect import DataInfo, DataTypeError, inspect_data
from .policy import StoragePolicy, StoragePolicyError, check_glob, check_uri
from .result_store import IncompleteResultError, ResultStore, read_result, read_result_files
from .stack import load_stack, stack_size
from .table_store import read_table, write_table
from .sources import CsvChunkSource, FileChunkSource, ParquetChunkSource, RecordChunkSource, load_arrays, open_source

register_builtin_formats()

__all__ = [
    "CheckpointStore",
    "CsvChunkSource",
    "DataFormat",
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
    "format_names",
    "register_format",
    "is_local",
    "is_object_store",
    "scrub",
    "write_bytes_atomic",
    "protocol",
    "resolve",
    "storage_errors",
    "inspect_data",
    "load_arrays",
    "load_stack",
    "load_text",
    "open_source",
    "read_bytes",
    "read_result",
    "read_table",
    "stack_size",
    "read_result_files",
    "redact_options",
    "redact_uri",
    "write_table",
]
