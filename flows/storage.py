"""Checks on a storage location before a fit, without writing anything.

A bad bucket or wrong credentials must fail the flow *before* the fit (minutes or hours)
and before any file exists. On object stores we ask for the bucket (``info``), which needs
valid credentials and an existing bucket; locally we find the nearest existing ancestor and
check it is a writable directory. Nothing is created: the first write (atomic, through
``nlsq_tasks.io``) makes the directories it needs.
"""

from __future__ import annotations

import os
from typing import Any, Optional


def check_writable_location(uri: str, storage_options: Optional[dict] = None) -> dict[str, Any]:
    """``{"uri", "protocol", "exists"}``; raises a storage error or ValueError naming ``storage_uri``."""
    from nlsq_tasks.io import StorageError, is_local, protocol, resolve
    from nlsq_tasks.io.retry import with_retries

    fs, path = resolve(uri, storage_options)
    proto = protocol(fs)
    if is_local(fs):
        probe = os.path.abspath(path)
        for _ in range(256):  # bounded walk up to the root
            if os.path.exists(probe):
                break
            parent = os.path.dirname(probe)
            if parent == probe:
                break
            probe = parent
        if not os.path.isdir(probe):
            raise ValueError(f"storage_uri={uri!r}: {probe!r} exists and is not a directory")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise ValueError(f"storage_uri={uri!r}: the directory {probe!r} is not writable")
        return {"uri": uri, "protocol": proto, "exists": os.path.isdir(os.path.abspath(path))}
    from nlsq_tasks.io import StorageNotFoundError

    bucket = path.split("/", 1)[0]
    if proto in ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"):
        # info on the bucket: fails on a missing bucket and on refused credentials.
        try:
            info = with_retries(lambda: fs.info(bucket), uri, "reach the storage location", storage_options)
        except StorageNotFoundError as exc:
            raise StorageNotFoundError(
                f"storage_uri: the bucket '{bucket}' does not exist (or these credentials cannot see it); "
                f"create it first, or choose another storage_uri ({exc})"
            ) from None
        if info.get("type") not in ("directory", None):
            raise StorageError(f"storage_uri: {bucket!r} is not a bucket")
    exists = with_retries(lambda: fs.exists(path), uri, "reach the storage location", storage_options)
    return {"uri": uri, "protocol": proto, "exists": bool(exists)}
