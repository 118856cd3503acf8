"""The state machine behind :func:`~.streaming.run_streaming` (private).

A streaming run is a sequence of passes. Pass 0 evaluates the start point; every later
pass evaluates the K trial points proposed from the current trust-region state, then
*replays* the sequential update on them in order (see :meth:`StreamRun.end_pass`).

Everything a pass needs to continue is in :class:`StreamRun`, and
:meth:`StreamRun.to_state` / :meth:`StreamCore.restore` turn it into a flat dict of numpy
arrays and back without loss (float64 bytes are kept), which is what makes a resumed
fit bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import normal_eqs as _ne
from . import trust_region as _tr
from .sources import Chunk, ChunkSource
from .status import FitStatus

STATE_VERSION = 1


class ChunkError(ValueError):
    """A chunk of a source is unusable (named by its index)."""


# -- data checks ---------------------------------------------------------------------


def check_chunk(chunk: Chunk, j: int, source: ChunkSource, offset: int) -> None:
    """Raise :class:`ChunkError` naming chunk ``j`` when it cannot be used as is."""
    x, y, s = chunk.x, chunk.y, chunk.sigma
    y = np.asarray(y)
    if y.ndim != 1:
        raise ChunkError(f"chunk {j}: y has shape {y.shape}; allowed is 1-D (m,).")
    m = y.shape[0]
    x = np.asarray(x)
    feats = 1 if x.ndim == 1 else x.shape[0]
    if x.ndim not in (1, 2) or feats != source.n_features:
        raise ChunkError(f"chunk {j}: x has shape {x.shape}, i.e. {feats} feature(s); the source (and earlier chunks) "
                         f"have n_features={source.n_features}. Chunk shapes may not change within a source.")
    if x.shape[-1] != m:
        raise ChunkError(f"chunk {j}: x holds {x.shape[-1]} points but y holds {m}; they must match.")
    if m > source.chunk_size:
        raise ChunkError(f"chunk {j}: {m} points, more than the source's chunk_size={source.chunk_size}.")
    if m == 0:
        raise ChunkError(f"chunk {j}: empty chunk; a source yields chunks of at least one point.")
    if (s is None) == source.has_sigma:
        raise ChunkError(f"chunk {j}: sigma is {'missing' if s is None else 'present'} but the source says "
                         f"has_sigma={source.has_sigma}.")
    for name, a in (("x", x), ("y", y)) + ((("sigma", np.asarray(s)),) if s is not None else ()):
        if a.shape[-1] != m:
            raise ChunkError(f"chunk {j}: {name} holds {a.shape[-1]} points, y holds {m}.")
        ok = np.isfinite(a)
        if not ok.all():
            bad = int(np.argwhere(~ok)[0][-1])
            raise ChunkError(f"chunk {j}: {name} is not finite (value {a.reshape(-1, m)[:, bad].tolist()}) at point "
                             f"{offset + bad} (offset {bad} in the chunk). Clean the data or drop those points.")
    if s is not None and not np.all(np.asarray(s) > 0):
        bad = int(np.argmin(np.asarray(s) > 0))
        raise ChunkError(f"chunk {j}: sigma={float(np.asarray(s)[bad])} at point {offset + bad}; sigma must be > 0.")


def pad_chunk(chunk: Chunk, m: int):
    """Pad to ``m`` points (edge values for x so the model stays finite) and build the mask."""
    k = int(np.asarray(chunk.y).shape[0])
    pad = m - k
    x = np.asarray(chunk.x, dtype=np.float64)
    y = np.asarray(chunk.y, dtype=np.float64)
    s = np.ones(k) if chunk.sigma is None else np.asarray(chunk.sigma, dtype=np.float64)
    if pad:
        x = np.pad(x, ((0, pad),) if x.ndim == 1 else ((0, 0), (0, pad)), mode="edge")
        y = np.pad(y, (0, pad))
        s = np.pad(s, (0, pad), constant_values=1.0)
    return x, y, s, np.arange(m) < k


# -- compiled pieces (cached per model and loss, so re-fits reuse the compilation) ----------


@functools.lru_cache(maxsize=32)
def _accumulate_fn(fn: Callable, loss: str, f_scale: float):
    """acc + sum over the chunk of the normal equations at each of the K parameter rows."""

    def one(p, x, y, s, mask):
        return _ne.chunk_normal_eqs(fn, loss, f_scale, p, x, y, s, mask)

    def acc_step(acc, params, x, y, s, mask):
        neq = jax.vmap(one, in_axes=(0, None, None, None, None))(params, x, y, s, mask)
        return jax.tree_util.tree_map(jnp.add, acc, neq)

    return jax.jit(acc_step)


def _zeros_like_struct(struct):
    return jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), struct)


# -- the run ---------------------------------------------------------------------------


class StreamCore:
    """What does not change during a run: model, data shape, bounds, options, K."""

    def __init__(self, fn, source: ChunkSource, lower, upper, options, K: int):
        self.fn, self.source, self.options, self.K = fn, source, options, K
        self.lower = jnp.asarray(lower)
        self.upper = jnp.asarray(upper)
        self.m = int(source.chunk_size)
        self.acc_fn = _accumulate_fn(fn, options.loss, float(options.f_scale))
        P = int(np.asarray(lower).size)
        x_shape = (self.m,) if source.n_features == 1 else (source.n_features, self.m)
        sd = jax.ShapeDtypeStruct
        self.neq_struct = jax.eval_shape(
            lambda p: _ne.chunk_normal_eqs(fn, options.loss, float(options.f_scale), p, jnp.zeros(x_shape),
                                           jnp.zeros(self.m), jnp.ones(self.m), jnp.ones(self.m, bool)),
            sd((P,), jnp.float64))
        self.tr_struct = jax.eval_shape(
            lambda p, n: _tr.tr_init(p, n, self.lower, self.upper, options), sd((P,), jnp.float64), self.neq_struct)
        self.P = P

    def acc_zeros(self, k: int):
        return jax.tree_util.tree_map(lambda a: jnp.zeros((k,) + a.shape, a.dtype), self.neq_struct)

    def fresh(self, p_start, fingerprint: str, warm: dict) -> "StreamRun":
        run = StreamRun(self, fingerprint)
        run.warm = dict(warm)
        run.begin_pass0(np.asarray(p_start, dtype=np.float64))
        return run

    def restore(self, state: dict) -> "StreamRun":
        if int(state.get("version", -1)) != STATE_VERSION:
            from .checkpoint import CheckpointError

            raise CheckpointError(f"checkpoint state version {state.get('version')} is not {STATE_VERSION}.")
        run = StreamRun(self, str(state["fingerprint"]))
        run.load(state)
        return run


class StreamRun:
    """The mutable progress of a run: TR state, the pass's trials, partial sums, cursor."""

    def __init__(self, core: StreamCore, fingerprint: str):
        self.core = core
        self.fingerprint = fingerprint
        self.pass_index = 0  # passes completed
        self.cursor = 0  # next chunk of the current pass
        self.points_seen = 0
        self.tr = None  # TRState at the current point (None during pass 0)
        self.cur_neq = None  # normal equations at the current point
        self.trials = None  # (k, P) parameter rows evaluated in this pass
        self.acc = None
        self.done = False
        self.stop_status = int(FitStatus.RUNNING)
        self.warm: dict = {}
        self.n_trial_evals = 0  # trial points actually evaluated (K per pass)

    # -- a pass ---------------------------------------------------------------------
    def begin_pass0(self, p_start):
        self.trials = p_start[None, :]
        self.acc = self.core.acc_zeros(1)
        self.cursor = self.points_seen = 0

    def begin_pass(self):
        """Propose K trial points from the current state (the radii successive rejections would give)."""
        c = self.core
        rows = []
        for k in range(c.K):
            st_k = _tr.radius_schedule(self.tr, k)
            step = _tr.tr_propose(st_k, c.lower, c.upper, c.options)
            rows.append(np.asarray(self.tr.x + step) if hasattr(self.tr, "x") else np.asarray(step))
        self.trials = np.stack(rows)
        self.acc = c.acc_zeros(c.K)
        self.cursor = self.points_seen = 0

    def add_chunk(self, chunk: Chunk):
        x, y, s, mask = pad_chunk(chunk, self.core.m)
        self.acc = self.core.acc_fn(self.acc, jnp.asarray(self.trials), x, y, s, mask)
        self.cursor += 1
        self.points_seen += int(mask.sum())

    @property
    def current_cost(self) -> float:
        if self.cur_neq is not None:
            return float(self.cur_neq.cost)
        return math.nan

    @property
    def nit(self) -> int:
        return int(self.tr.nit) if self.tr is not None and hasattr(self.tr, "nit") else 0

    def end_pass(self, max_evals: int):
        c = self.core
        neqs = [jax.tree_util.tree_map(lambda a, i=i: a[i], self.acc) for i in range(self.trials.shape[0])]
        self.n_trial_evals += len(neqs)
        if self.tr is None:  # pass 0: the start point
            self.cur_neq = neqs[0]
            self.tr = _tr.tr_init(jnp.asarray(self.trials[0]), neqs[0], c.lower, c.upper, c.options)
        else:
            st = self.tr
            for k, neq in enumerate(neqs):
                step = _tr.tr_propose(st, c.lower, c.upper, c.options)
                if not np.array_equal(np.asarray(st.x + step), self.trials[k]):
                    break  # the schedule did not predict this radius: propose afresh next pass
                x_before = np.asarray(st.x)
                st = _tr.tr_update(st, step, neq, c.lower, c.upper, c.options)
                if not np.array_equal(np.asarray(st.x), x_before):  # accepted
                    self.cur_neq = neq
                    break
                if _finished(st):
                    break
            self.tr = st
        self.pass_index += 1
        if _finished(self.tr):
            self.done = True
            self.stop_status = int(self.tr.status)
        else:
            self.begin_pass()

    def stop(self, status: FitStatus):
        self.done = True
        self.stop_status = int(status)

    # -- result ---------------------------------------------------------------------
    def finalize(self, param_names):
        from .finalize import finalize_result

        return finalize_result(self.tr, self.cur_neq, self.core.lower, self.core.upper, self.core.options,
                               list(param_names), status=FitStatus(self.stop_status))

    # -- checkpoint state -------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        st: dict[str, Any] = {
            "version": STATE_VERSION,
            "fingerprint": self.fingerprint,
            "pass_index": self.pass_index,
            "cursor": self.cursor,
            "points_seen": self.points_seen,
            "done": int(self.done),
            "stop_status": self.stop_status,
            "n_trial_evals": self.n_trial_evals,
            "trials": np.asarray(self.trials),
            "has_tr": int(self.tr is not None),
        }
        for k, v in self.warm.items():
            st["warm/" + k] = v
        for i, leaf in enumerate(jax.tree_util.tree_leaves(self.acc)):
            st[f"acc/{i}"] = np.asarray(leaf)
        if self.tr is not None:
            for i, leaf in enumerate(jax.tree_util.tree_leaves(self.tr)):
                st[f"tr/{i}"] = np.asarray(leaf)
            for i, leaf in enumerate(jax.tree_util.tree_leaves(self.cur_neq)):
                st[f"cur/{i}"] = np.asarray(leaf)
        return st

    def load(self, st: dict[str, Any]):
        c = self.core
        self.pass_index = int(st["pass_index"])
        self.cursor = int(st["cursor"])
        self.points_seen = int(st["points_seen"])
        self.done = bool(int(st["done"]))
        self.stop_status = int(st["stop_status"])
        self.n_trial_evals = int(st["n_trial_evals"])
        self.trials = np.asarray(st["trials"], dtype=np.float64)
        self.warm = {k[5:]: v for k, v in st.items() if k.startswith("warm/")}
        acc_def = jax.tree_util.tree_structure(c.acc_zeros(self.trials.shape[0]))
        self.acc = jax.tree_util.tree_unflatten(acc_def, [jnp.asarray(st[f"acc/{i}"]) for i in range(acc_def.num_leaves)])
        if int(st["has_tr"]):
            tr_def = jax.tree_util.tree_structure(c.tr_struct)
            self.tr = jax.tree_util.tree_unflatten(tr_def, [jnp.asarray(st[f"tr/{i}"]) for i in range(tr_def.num_leaves)])
            ne_def = jax.tree_util.tree_structure(c.neq_struct)
            self.cur_neq = jax.tree_util.tree_unflatten(ne_def, [jnp.asarray(st[f"cur/{i}"]) for i in range(ne_def.num_leaves)])


def _finished(st) -> bool:
    return int(st.status) != int(FitStatus.RUNNING)
