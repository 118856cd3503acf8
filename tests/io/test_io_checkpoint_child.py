"""CheckpointStore.child: separate, independent locations for sub-problems (multi-start refinements)."""

import numpy as np
import pytest

from nlsq_tasks.io import CheckpointStore


def test_child_is_a_separate_store(tmp_path):
    parent = CheckpointStore(str(tmp_path / "ck"), keep_last=2)
    child = parent.child("refine-0")
    assert child.uri.rstrip("/").endswith("/ck/refine-0") and child.keep_last == 2
    child.save({"p": np.arange(3.0), "nit": 4}, fingerprint="fp-child")
    assert parent.load_latest("fp-parent") is None  # the child's file is not the parent's checkpoint
    state = child.load_latest("fp-child")
    np.testing.assert_array_equal(state["p"], np.arange(3.0))
    assert int(state["nit"]) == 4


@pytest.mark.parametrize("bad", ["", "a/b", ".hidden"])
def test_child_rejects_path_like_names(tmp_path, bad):
    with pytest.raises(ValueError, match="child name"):
        CheckpointStore(str(tmp_path)).child(bad)
