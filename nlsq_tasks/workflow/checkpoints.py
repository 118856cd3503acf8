"""Timestamped checkpoint directories on the local file system.

``create_checkpoint_directory()`` makes ``./nlsq_checkpoints/YYYYMMDD_HHMMSS`` and returns its
absolute path. Two calls in the same second must not share a directory (two fits would
overwrite each other's checkpoints), so the directory is claimed with
``mkdir(exist_ok=False)``, which is atomic, and on collision the next suffix ``_1``, ``_2``...
is tried. Checkpoints on object stores go through :mod:`nlsq_tasks.io` instead.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

DEFAULT_CHECKPOINT_BASE = "nlsq_checkpoints"
MAX_SUFFIX = 10_000  # bounded: more than this many fits started in one second is an error


def create_checkpoint_directory(base_dir: str | os.PathLike | None = None) -> str:
    """Create and return (absolute, as str) a fresh ``base_dir/YYYYMMDD_HHMMSS[_N]`` directory.

    ``base_dir`` defaults to ``./nlsq_checkpoints`` and is created if missing.
    """
    if base_dir is None:
        base_dir = DEFAULT_CHECKPOINT_BASE
    if not isinstance(base_dir, (str, os.PathLike)):
        raise TypeError(f"base_dir must be a path (str or os.PathLike) or None, got {base_dir!r} ({type(base_dir).__name__})")
    if isinstance(base_dir, str) and not base_dir.strip():
        raise ValueError("base_dir must be a non-empty path or None, got ''")
    base = Path(base_dir).expanduser().resolve()
    base.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    for i in range(MAX_SUFFIX):
        candidate = base / (stamp if i == 0 else f"{stamp}_{i}")
        try:
            candidate.mkdir(exist_ok=False)
        except FileExistsError:
            continue
        return str(candidate)
    raise RuntimeError(f"could not create a unique checkpoint directory under {base} after {MAX_SUFFIX} attempts")
