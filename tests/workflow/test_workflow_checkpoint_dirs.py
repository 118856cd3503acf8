"""create_checkpoint_directory: timestamped, absolute, created, unique within one second."""

import os
import re
import threading
from pathlib import Path

import pytest

from nlsq_tasks.workflow import create_checkpoint_directory

STAMP = re.compile(r"^\d{8}_\d{6}(_\d+)?$")


def test_default_base_is_cwd_nlsq_checkpoints(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = create_checkpoint_directory()
    assert isinstance(path, str) and os.path.isabs(path)
    p = Path(path)
    assert p.is_dir() and p.parent == tmp_path / "nlsq_checkpoints"
    assert STAMP.match(p.name)


def test_custom_base_str_and_path(tmp_path):
    a = Path(create_checkpoint_directory(str(tmp_path / "a" / "b")))
    b = Path(create_checkpoint_directory(tmp_path / "c"))
    assert a.parent == tmp_path / "a" / "b" and b.parent == tmp_path / "c"
    assert a.is_dir() and b.is_dir()


def test_relative_base_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert create_checkpoint_directory("rel").startswith(str(tmp_path))


def test_same_second_calls_get_distinct_directories(tmp_path):
    paths = [create_checkpoint_directory(tmp_path) for _ in range(20)]
    assert len(set(paths)) == 20
    # 20 calls take far less than 20 seconds, so suffixes must have been used
    assert any(re.search(r"_\d{6}_\d+$", p) for p in paths)


def test_concurrent_calls_never_share(tmp_path):
    out, lock = [], threading.Lock()

    def work():
        for _ in range(10):
            p = create_checkpoint_directory(tmp_path)
            with lock:
                out.append(p)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 40 == len(set(out))


def test_bad_base_dir():
    with pytest.raises(TypeError, match="base_dir"):
        create_checkpoint_directory(42)
    with pytest.raises(ValueError, match="base_dir"):
        create_checkpoint_directory("  ")
