"""CheckpointStore: round trip, atomicity under failure and SIGKILL, corruption fallback,
foreign fingerprints, rotation -- on local files, memory:// and S3 (moto)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap

import fsspec
import numpy as np
import pytest
from io_helpers import put_bytes

from nlsq_tasks.engine.checkpoint import CheckpointMismatchError, CheckpointSink
from nlsq_tasks.io import CheckpointStore
from nlsq_tasks.io.checkpoint_store import namespace


def _state(i: int) -> dict:
    rng = np.random.default_rng(i)
    return {
        "params": rng.normal(size=4),
        "JtJ": rng.normal(size=(4, 4)),
        "radius": float(i) + 0.5,
        "iteration": i,
        "cursor": np.int64(3 * i),
        "converged": False,
        "loss": "soft_l1",
        "rng": rng.bit_generator.state,  # nested dict with a 128-bit integer
        "limit": float("inf"),
    }


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            np.testing.assert_array_equal(a[k], b[k])
            assert a[k].dtype == b[k].dtype
        else:
            assert a[k] == b[k] and type(a[k]) is type(b[k]), k


def test_round_trip_and_protocol(store):
    base, so = store
    cs = CheckpointStore(f"{base}/ckpt", storage_options=so)
    assert isinstance(cs, CheckpointSink)
    assert cs.load_latest("fp") is None  # nothing there yet (the directory does not even exist)
    for i in range(1, 3):
        uri = cs.save(_state(i), fingerprint="fp")
        assert uri.startswith(f"{base}/ckpt/{namespace('fp')}/ckpt-{i:010d}-")
    _same(cs.load_latest("fp"), _state(2))
    assert CheckpointStore(f"{base}/ckpt", storage_options=so).load_latest("fp")["iteration"] == 2  # a fresh reader


def test_rotation_keeps_last(store):
    base, so = store
    cs = CheckpointStore(f"{base}/ckpt", storage_options=so, keep_last=2)
    for i in range(1, 6):
        cs.save(_state(i), fingerprint="fp")
    names = [u.rsplit("/", 1)[1] for u in cs.list()]
    assert [n[:15] for n in names] == ["ckpt-0000000004", "ckpt-0000000005"]
    assert cs.load_latest("fp")["iteration"] == 5
    assert cs.describe_latest()["seq"] == 5


def test_two_problems_never_touch_each_others_checkpoints(store):
    """One location, two problems, keep_last=1: each keeps its own newest checkpoint."""
    base, so = store
    cs = CheckpointStore(f"{base}/ckpt", storage_options=so, keep_last=1)
    for i in range(1, 4):
        cs.save(_state(i), fingerprint="problem-A")
        cs.save(_state(10 + i), fingerprint="problem-B")
    assert cs.load_latest("problem-A")["iteration"] == 3
    assert cs.load_latest("problem-B")["iteration"] == 13
    assert cs.load_latest("problem-C") is None  # a third problem starts fresh, deleting nothing
    assert len(cs.list()) == 2 and len(cs.list("problem-A")) == 1


def test_legacy_root_checkpoint_of_another_problem_is_refused(tmp_path):
    from nlsq_tasks.io.checkpoint_store import encode_state

    (tmp_path / "ckpt-0000000001-deadbeef.nlsqckpt").write_bytes(encode_state(_state(1), fingerprint="problem-A" * 4, seq=1))
    cs = CheckpointStore(str(tmp_path))
    assert cs.load_latest("problem-A" * 4)["iteration"] == 1  # written before namespacing: still resumable
    with pytest.raises(CheckpointMismatchError, match="belongs to a different problem") as err:
        cs.load_latest("problem-B" * 4)
    assert err.value.found == "problem-A" * 4
    assert "--no-resume on the nlsq-flow CLI" in str(err.value)  # the advice names the CLI flag too


def test_a_flipped_header_byte_is_damage_not_another_problem(tmp_path, caplog):
    cs = CheckpointStore(str(tmp_path), keep_last=5)
    cs.save(_state(1), fingerprint="fp-0123456789")
    newest = cs.save(_state(2), fingerprint="fp-0123456789")
    blob = bytearray(open(newest, "rb").read())
    at = blob.index(b"fp-0123456789") + 5
    blob[at] ^= 0x01  # one bit of the fingerprint in the header
    put_bytes(newest, bytes(blob))
    with caplog.at_level(logging.WARNING, logger="nlsq_tasks.io"):
        assert cs.load_latest("fp-0123456789")["iteration"] == 1
    assert "header checksum mismatch" in caplog.text


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty"])
def test_damaged_newest_is_skipped_with_warning(store, damage, caplog):
    base, so = store
    cs = CheckpointStore(f"{base}/ckpt", storage_options=so, keep_last=5)
    cs.save(_state(1), fingerprint="fp")
    newest = cs.save(_state(2), fingerprint="fp")
    fs, path = fsspec.core.url_to_fs(newest, **(so or {}))
    blob = fs.cat_file(path)
    bad = {
        "truncate": blob[: len(blob) // 2],
        "flip": blob[:-10] + bytes([blob[-10] ^ 0xFF]) + blob[-9:],
        "garbage": b"\x00" * 64,
        "empty": b"",
    }[damage]
    put_bytes(newest, bad, so)
    with caplog.at_level(logging.WARNING, logger="nlsq_tasks.io"):
        got = cs.load_latest("fp")
    assert got["iteration"] == 1  # fell back to the previous good one
    assert newest.rsplit("/", 1)[1] in caplog.text and "skipping damaged checkpoint" in caplog.text


def test_all_damaged_gives_none(tmp_path):
    cs = CheckpointStore(str(tmp_path))
    u = cs.save(_state(1), fingerprint="fp")
    put_bytes(u, b"NLSQCKPT1\n{not json")
    assert cs.load_latest("fp") is None


def test_failed_serialization_leaves_previous_intact(store):
    base, so = store
    cs = CheckpointStore(f"{base}/ckpt", storage_options=so)
    cs.save(_state(1), fingerprint="fp")
    before = cs.list()
    with pytest.raises(TypeError, match=r"state\['bad'\] has dtype object"):
        cs.save({**_state(2), "bad": np.array([object()])}, fingerprint="fp")
    with pytest.raises(TypeError, match=r"state\['f'\] is not JSON-serializable"):
        cs.save({"f": {"a": {1, 2}}}, fingerprint="fp")
    assert cs.list() == before
    assert cs.load_latest("fp")["iteration"] == 1


def test_temporary_leftovers_are_ignored_then_cleaned(tmp_path):
    cs = CheckpointStore(str(tmp_path))
    first = cs.save(_state(1), fingerprint="fp")
    ns = tmp_path / first.split("/")[-2]
    # what writers killed between write and rename leave behind: this host, a dead pid; and an
    # old-style name (no writer in it) which is ignored by readers and left alone
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    from nlsq_tasks.io._fs import _HOST

    killed = ns / f".ckpt-0000000002-deadbeef.nlsqckpt.tmp-{_HOST}.{dead}.0123456789ab"
    killed.write_bytes(b"NLSQCKPT1\n{")
    old_style = ns / ".ckpt-0000000002-deadbeef.nlsqckpt.tmp-123456789abc"
    old_style.write_bytes(b"NLSQCKPT1\n{")
    live = ns / f".ckpt-0000000009-deadbeef.nlsqckpt.tmp-{_HOST}.1.0123456789ab"  # pid 1 is alive
    live.write_bytes(b"x")
    assert cs.load_latest("fp")["iteration"] == 1
    assert cs.save(_state(2), fingerprint="fp").split("/")[-1].startswith("ckpt-0000000002-")
    assert not killed.exists()  # cleaned by the next write
    assert live.exists() and old_style.exists()  # a write in progress is never touched


_WRITER = textwrap.dedent(
    """
    import resource, signal, sys, numpy as np
    from nlsq_tasks.io import CheckpointStore
    cs = CheckpointStore(sys.argv[1])
    cs.save({"iteration": 1, "big": np.arange(1000.0)}, fingerprint="fp")
    # From here on the kernel kills this process (SIGXFSZ) as soon as a write would make a
    # file larger than 4 MB: a hard crash in the middle of writing the next checkpoint.
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20))
    cs.save({"iteration": 2, "big": np.arange(2_000_000.0)}, fingerprint="fp")
    print("not reached", flush=True)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file-size limits")
def test_crash_mid_write_leaves_previous_checkpoint(tmp_path, caplog):
    """A real crash: the writer process is killed by the kernel halfway through a write."""
    proc = subprocess.run([sys.executable, "-c", _WRITER, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGXFSZ, proc.stderr
    leftovers = [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]
    assert len(leftovers) == 1 and leftovers[0].stat().st_size == 4 << 20  # the crash hit mid-write
    with caplog.at_level(logging.WARNING, logger="nlsq_tasks.io"):
        state = CheckpointStore(str(tmp_path)).load_latest("fp")
    assert state["iteration"] == 1
    assert "skipping" not in caplog.text  # no damaged checkpoint was ever visible under a final name
    assert len(list(tmp_path.rglob("ckpt-*.nlsqckpt"))) == 1


def test_default_location_uses_workflow_directory(tmp_path, monkeypatch):
    workflow = pytest.importorskip("nlsq_tasks.workflow")
    if not hasattr(workflow, "create_checkpoint_directory"):
        pytest.skip("nlsq_tasks.workflow.create_checkpoint_directory is not available yet")
    monkeypatch.chdir(tmp_path)
    cs = CheckpointStore()
    cs.save(_state(1), fingerprint="fp")
    assert len(list(tmp_path.rglob("ckpt-*.nlsqckpt"))) == 1  # under the working directory
    assert cs.load_latest("fp")["iteration"] == 1


def test_keep_last_validated():
    with pytest.raises(ValueError, match="keep_last=0 must be an integer >= 1"):
        CheckpointStore("memory://x", keep_last=0)
