"""Checkpoint and resume of streaming fits: interrupted anywhere, a resumed fit ends
bit-identical to an uninterrupted one; foreign and corrupt checkpoints are handled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from _streaming_helpers import NAMES, OPTIONS, Config, FlakySource, Interrupted, exp_decay, exp_problem

from nlsq_tasks.engine.checkpoint import CheckpointError, CheckpointMismatchError, MemoryCheckpointSink
from nlsq_tasks.engine.sources import ArrayChunkSource
from nlsq_tasks.engine.streaming import run_streaming

CHUNK = 500  # 3000 points -> 6 chunks per pass; checkpoints every 2 chunks and at pass ends


@pytest.fixture(scope="module")
def data():
    return exp_problem(n=3000, seed=1)


@pytest.fixture(scope="module")
def reference(data):
    x, y, sigma, p0, lower, upper = data
    res = run_streaming(exp_decay, ArrayChunkSource(x, y, sigma, chunk_size=CHUNK), p0, lower, upper,
                        OPTIONS, NAMES, config=Config())
    assert res.success and res.checkpoints["passes"] >= 4
    return res


def _fit(data, source, sink, resume="auto", progress=None):
    x, y, sigma, p0, lower, upper = data
    return run_streaming(exp_decay, source, p0, lower, upper, OPTIONS, NAMES, config=Config(),
                         checkpoint=sink, resume=resume, progress=progress)


def _assert_same(res, ref):
    np.testing.assert_allclose(res.popt, ref.popt, rtol=1e-10, atol=0)
    np.testing.assert_array_equal(res.popt, ref.popt)  # same summation order: bit-identical
    assert res.cost == ref.cost and res.nit == ref.nit and res.nfev == ref.nfev


# chunk deliveries: 3 = mid pass 0; 6 = first chunk of pass 1; 13 = mid pass 2; 22 = late
@pytest.mark.parametrize("fail_at", [3, 6, 13, 22])
def test_interrupted_then_resumed_equals_uninterrupted(data, reference, fail_at):
    x, y, sigma = data[:3]
    sink = MemoryCheckpointSink()
    with pytest.raises(Interrupted):
        _fit(data, FlakySource(x, y, sigma, chunk_size=CHUNK, fail_at=fail_at), sink)
    assert sink.saved, "a checkpoint was written before the interruption"
    saved = sink.saved[-1][1]
    assert {"pass_index", "cursor", "trials", "acc/0", "fingerprint"} <= set(saved)
    events = []
    res = _fit(data, ArrayChunkSource(x, y, sigma, chunk_size=CHUNK), sink, progress=events.append)
    assert res.checkpoints["resumed"]
    _assert_same(res, reference)
    # it continued from the checkpoint (mid-pass cursor included) rather than starting over
    chunks_read = sum(e["phase"] == "pass" for e in events)
    assert chunks_read == 6 * reference.checkpoints["passes"] - (fail_at - fail_at % 2)


def test_adaptive_trials_resume_bit_identically(data, reference):
    x, y, sigma, p0, lower, upper = data
    cfg = Config(adaptive_trials=True)
    sink = MemoryCheckpointSink()
    with pytest.raises(Interrupted):
        run_streaming(exp_decay, FlakySource(x, y, sigma, chunk_size=CHUNK, fail_at=27), p0, lower, upper,
                      OPTIONS, NAMES, config=cfg, checkpoint=sink)
    res = run_streaming(exp_decay, ArrayChunkSource(x, y, sigma, chunk_size=CHUNK), p0, lower, upper,
                        OPTIONS, NAMES, config=cfg, checkpoint=sink)
    assert res.checkpoints["resumed"]
    _assert_same(res, reference)


def test_resume_modes_and_foreign_checkpoints(data, reference):
    x, y, sigma = data[:3]
    sink = MemoryCheckpointSink()
    with pytest.raises(CheckpointError, match="require"):
        _fit(data, ArrayChunkSource(x, y, sigma, chunk_size=CHUNK), sink, resume="require")
    with pytest.raises(Interrupted):
        _fit(data, FlakySource(x, y, sigma, chunk_size=CHUNK, fail_at=9), sink)
    other = ArrayChunkSource(x, y * 1.01, sigma, chunk_size=CHUNK)  # different data
    with pytest.raises(CheckpointMismatchError, match="different problem"):
        _fit(data, other, sink)
    fresh = _fit(data, ArrayChunkSource(x, y, sigma, chunk_size=CHUNK), sink, resume="never")
    assert not fresh.checkpoints["resumed"]
    _assert_same(fresh, reference)
    with pytest.raises(ValueError, match="resume="):
        _fit(data, ArrayChunkSource(x, y, sigma, chunk_size=CHUNK), sink, resume="maybe")


def test_truncated_latest_file_checkpoint_falls_back_to_previous_good(data, reference, tmp_path):
    io = pytest.importorskip("nlsq_tasks.io")
    x, y, sigma = data[:3]
    store = io.CheckpointStore(str(tmp_path / "ckpt"), keep_last=3)
    with pytest.raises(Interrupted):
        _fit(data, FlakySource(x, y, sigma, chunk_size=CHUNK, fail_at=16), store)
    files = sorted((tmp_path / "ckpt").rglob("ckpt-*.nlsqckpt"))
    assert len(files) >= 2
    blob = files[-1].read_bytes()
    files[-1].write_bytes(blob[: len(blob) // 2])  # a torn write of the newest checkpoint
    res = _fit(data, ArrayChunkSource(x, y, sigma, chunk_size=CHUNK), io.CheckpointStore(str(tmp_path / "ckpt")))
    assert res.checkpoints["resumed"]
    _assert_same(res, reference)
    # another problem at the same location starts afresh and leaves this one's checkpoints alone
    before = io.CheckpointStore(str(tmp_path / "ckpt")).list()
    other = ArrayChunkSource(x, y + 0.5, sigma, chunk_size=CHUNK)
    assert not _fit(data, other, io.CheckpointStore(str(tmp_path / "ckpt"))).checkpoints["resumed"]
    assert set(before) <= set(io.CheckpointStore(str(tmp_path / "ckpt")).list())


_CHILD = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, {helpers!r})
    import numpy as np
    from _streaming_helpers import NAMES, OPTIONS, Config, exp_decay, exp_problem
    from nlsq_tasks.engine.sources import ArrayChunkSource
    from nlsq_tasks.engine.streaming import run_streaming
    from nlsq_tasks.io import CheckpointStore

    class Killer(ArrayChunkSource):
        served = 0
        def chunks(self, start=0):
            for ch in super().chunks(start):
                if Killer.served == {kill_after}:
                    os.kill(os.getpid(), 9)  # SIGKILL: no cleanup, no final checkpoint
                Killer.served += 1
                yield ch

    x, y, sigma, p0, lower, upper = exp_problem(n=3000, seed=1)
    run_streaming(exp_decay, Killer(x, y, sigma, chunk_size={chunk}), p0, lower, upper, OPTIONS, NAMES,
                  config=Config(), checkpoint=CheckpointStore({store!r}))
    print("NOT KILLED")
    """
)


def test_killed_process_resumes_from_its_file_checkpoints(data, reference, tmp_path):
    pytest.importorskip("nlsq_tasks.io")
    from nlsq_tasks.io import CheckpointStore

    store = str(tmp_path / "killed")
    code = _CHILD.format(helpers=str(Path(__file__).parent), kill_after=11, chunk=CHUNK, store=store)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    assert "NOT KILLED" not in proc.stdout
    assert list((tmp_path / "killed").rglob("ckpt-*.nlsqckpt"))
    x, y, sigma = data[:3]
    res = _fit(data, ArrayChunkSource(x, y, sigma, chunk_size=CHUNK), CheckpointStore(store), resume="require")
    assert res.checkpoints["resumed"]
    _assert_same(res, reference)


@pytest.mark.parametrize("key", ["trials", "tr/0"])
def test_a_forged_non_finite_state_is_refused(data, key):
    """A checkpoint whose parameters are NaN (forged, or damaged before it was checksummed)
    must not run passes: it is refused, naming what is not finite and how to start afresh."""
    x, y, sigma = data[:3]
    sink = MemoryCheckpointSink()
    with pytest.raises(Interrupted):
        _fit(data, FlakySource(x, y, sigma, chunk_size=CHUNK, fail_at=13), sink)
    fp, state = sink.saved[-1]
    state[key] = np.full_like(np.asarray(state[key], dtype=float), np.nan)
    with pytest.raises(CheckpointError, match=r"non-finite state \((trials|p)[,)].*--no-resume"):
        _fit(data, ArrayChunkSource(x, y, sigma, chunk_size=CHUNK), sink)
