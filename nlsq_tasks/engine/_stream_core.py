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

from ._compiler import COMPILER_OPTIONS
from . import normal_eqs as _ne
from . import trust_region as _tr
from .passes import ChunkPartial, LeastSquaresFactorPass, NormalEquationsPass, SourceExecutor, merge_moments, zeros
from .passes.host import stacked_combine_jit
from .passes.host import pad_chunk  # noqa: F401  (re-exported: older imports)
from .sources import Chunk, ChunkSource
from .status import FitStatus

STATE_VERSION = 3  # 2: y statistics as mergeable (count, mean, M2); 3: the pass mode (normal equations / TSQR)


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


@functools.partial(jax.jit, static_argnums=(1,), compiler_options=COMPILER_OPTIONS)
def _schedule_and_propose(state, k, lower, upper, settings):
    sched = _tr.radius_schedule(state, k, lower, upper, settings)
    props = jax.vmap(_tr.tr_propose, in_axes=(0, None, None, None))(sched, lower, upper, settings)
    return sched, props


_tr_init = jax.jit(_tr.tr_init, compiler_options=COMPILER_OPTIONS)
_continue = jax.jit(lambda p, neq, lower, upper, settings, before: _tr.continue_state(
    _tr.tr_init(p, neq, lower, upper, settings), before), compiler_options=COMPILER_OPTIONS)
_tr_update = jax.jit(_tr.tr_update, compiler_options=COMPILER_OPTIONS)


def _index(tree, i):
    return jax.tree_util.tree_map(lambda a: a[i], tree)


def _leaves_to_state(prefix: str, tree, out: dict):
    for i, leaf in enumerate(jax.tree_util.tree_leaves(tree)):
        out[f"{prefix}/{i}"] = np.asarray(leaf)


def _state_to_tree(prefix: str, struct, st: dict):
    treedef = jax.tree_util.tree_structure(struct)
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(st[f"{prefix}/{i}"]) for i in range(treedef.num_leaves)])


# -- the run ---------------------------------------------------------------------------


class StreamCore:
    """What does not change during a run: model, data layout, bounds, options, K."""

    def __init__(self, fn, source: ChunkSource, lower, upper, options, K: int, adaptive: bool = False):
        self.fn, self.source, self.options, self.K = fn, source, options, int(K)
        self.adaptive = bool(adaptive)
        self.lower = jnp.asarray(lower, jnp.float64)
        self.upper = jnp.asarray(upper, jnp.float64)
        self.P = int(self.lower.shape[0])
        self.m = int(source.chunk_size)
        self.has_sigma = bool(source.has_sigma)
        self.settings = _tr.as_settings(options, self.P)
        self.f_scale = jnp.asarray(float(options.f_scale), jnp.float64)
        # the fast pass while J is well conditioned, then (for good) the TSQR factor of J
        self.reductions = {"gram": NormalEquationsPass(fn, options.loss), "qr": LeastSquaresFactorPass(fn, options.loss)}
        self.combines = {k: stacked_combine_jit(r) for k, r in self.reductions.items()}
        self._executors: dict = {}
        x_shape = (self.m,) if source.n_features == 1 else (source.n_features, self.m)
        sd = jax.ShapeDtypeStruct
        self.neq_struct = jax.eval_shape(
            lambda p: _ne.chunk_normal_eqs(fn, options.loss, self.f_scale, p, jnp.zeros(x_shape), jnp.zeros(self.m),
                                           jnp.ones(self.m) if self.has_sigma else None, jnp.ones(self.m, bool)),
            sd((self.P,), jnp.float64))
        self.tr_struct = jax.eval_shape(
            lambda p, n: _tr.tr_init(p, n, self.lower, self.upper, self.settings), sd((self.P,), jnp.float64),
            self.neq_struct)

    def acc_zeros(self, k: int, mode: str = "gram"):
        return zeros(self.reductions[mode], k, self.P)

    def executor(self, factory=None, mode: str = "gram"):
        """The pass executor over the source for the pass ``mode`` (chunks vetted by
        :func:`check_chunk`); ``factory`` defaults to the in-process :class:`~.passes.SourceExecutor`."""
        if mode not in self._executors:
            make = SourceExecutor if factory is None else factory
            self._executors[mode] = make(self.reductions[mode], self.source, float(self.options.f_scale), check_chunk)
        return self._executors[mode]

    def fresh(self, p_start, fingerprint: str, warm: dict) -> "StreamRun":
        run = StreamRun(self, fingerprint)
        run.warm = dict(warm)
        run.trials = np.asarray(p_start, dtype=np.float64)[None, :]
        run.acc = self.acc_zeros(1)
        return run

    def restore(self, state: dict) -> "StreamRun":
        if int(state.get("version", -1)) != STATE_VERSION:
            from .checkpoint import CheckpointError

            raise CheckpointError(f"checkpoint state version {state.get('version')} is not {STATE_VERSION}.")
        run = StreamRun(self, str(state["fingerprint"]))
        run.load(state)
        # A state that was forged or damaged in a way its checksums cannot see (written so)
        # must not steer passes: the parameters and the accepted point must be finite.
        bad = [name for name, a in (("trials", run.trials), ("p", None if run.tr is None else run.tr.p),
                                    ("cost", None if run.tr is None else run.tr.neq.cost))
               if a is not None and not np.all(np.isfinite(np.asarray(a)))]
        if bad and not run.done:  # a finished state is only reported (a NONFINITE end is one)
            from .checkpoint import CheckpointError

            raise CheckpointError(
                f"the checkpoint holds non-finite state ({', '.join(bad)}); it cannot be resumed. Start afresh "
                "(library: resume='never'; CLI: --no-resume; request: resume=false) or remove that checkpoint."
            )
        return run


class StreamRun:
    """The mutable progress of a run: TR state, the pass's trials, partial sums, cursor.

    Pass 0 (``tr is None``) evaluates the start point and merges the chunks' y moments
    ``(count, mean, M2)`` in chunk order, for :math:`R^2` without the cancellation of
    :math:`\\sum y^2 - (\\sum y)^2/n`.
    """

    def __init__(self, core: StreamCore, fingerprint: str):
        self.core = core
        self.fingerprint = fingerprint
        self.pass_index = 0  # passes completed
        self.cursor = 0  # next chunk of the current pass
        self.points_seen = 0
        self.tr = None  # TRState at the current point (None during pass 0)
        self.sched = None  # the k scheduled states of this pass (stacked)
        self.props = None  # the k proposals of this pass (stacked)
        self.trials = None  # (k, P) parameter rows evaluated in this pass
        self.acc = None
        self.done = False
        self.warm: dict = {}
        self.n_trial_evals = 0  # trial points actually evaluated (k per pass)
        self.y_moments = (0.0, 0.0, 0.0)  # (count, mean, M2) of y, merged in chunk order
        self.first_try_accepted = 0  # the last iteration ended on its first try
        self.mode = "gram"  # which pass: normal equations, or "qr" (TSQR) once they were too ill-conditioned
        self.reeval = False  # this pass re-evaluates the current point with the TSQR pass

    # -- a pass ---------------------------------------------------------------------
    def begin_pass(self):
        """Propose the K trial points the sequential method would try after 0, 1, ... rejections."""
        c = self.core
        self.sched, self.props = _schedule_and_propose(self.tr, c.K, c.lower, c.upper, c.settings)
        # adaptive: after a first-try acceptance, bet on another one and evaluate one try
        k = 1 if (c.adaptive and self.first_try_accepted) else c.K
        self.trials = np.asarray(self.props.p_trial)[:k]
        self.acc = c.acc_zeros(k, self.mode)
        self.cursor = self.points_seen = 0

    def add_partial(self, part: ChunkPartial):
        """Fold the next chunk's partial (chunk ``self.cursor``) into the pass's sums."""
        if part.index != self.cursor:
            raise RuntimeError(f"pass executor yielded chunk {part.index}, expected chunk {self.cursor} "
                               "(partials must come in chunk order)")
        self.acc = self.core.combines[self.mode](self.acc, part.value)
        if self.tr is None:
            self.y_moments = merge_moments(self.y_moments, part.y_moments)
        self.cursor += 1
        self.points_seen += part.n_points

    @property
    def needs_y_moments(self) -> bool:
        return self.tr is None

    @property
    def current_cost(self) -> float:
        return float(self.tr.neq.cost) if self.tr is not None else math.nan

    @property
    def nit(self) -> int:
        return int(self.tr.nit) if self.tr is not None else 0

    def end_pass(self):
        """Replay the sequential update on this pass's tries, in order, until one ends the iteration."""
        c = self.core
        self.n_trial_evals += int(self.trials.shape[0])
        if self.tr is None:  # pass 0: the start point
            self.tr = _tr_init(jnp.asarray(self.trials[0]), _index(self.acc, 0), c.lower, c.upper, c.settings)
        elif self.reeval:  # the current point again, with the TSQR pass; the iteration carries on
            self.tr = _continue(jnp.asarray(self.trials[0]), _index(self.acc, 0), c.lower, c.upper, c.settings, self.tr)
            self.reeval = False
        else:
            st = self.tr
            nit0 = int(st.nit)
            self.first_try_accepted = 0
            for i in range(self.trials.shape[0]):  # bounded by K
                if i > 0 and not (np.array_equal(np.asarray(st.radius), np.asarray(self.sched.radius[i]))
                                  and np.array_equal(np.asarray(st.alpha), np.asarray(self.sched.alpha[i]))):
                    break  # the schedule did not predict this try (non-finite trial...): propose afresh
                st = _tr_update(st, _index(self.props, i), _index(self.acc, i), c.lower, c.upper, c.settings)
                if int(st.nit) > nit0 or _finished(st):
                    self.first_try_accepted = int(i == 0 and int(st.nit) > nit0)
                    break
            self.tr = st
        self.pass_index += 1
        if _finished(self.tr):
            self.done = True
        elif self.mode == "gram" and bool(self.tr.gram_ill):
            self.switch_to_qr()
        else:
            self.begin_pass()

    def switch_to_qr(self):
        """The normal equations are too ill-conditioned: re-evaluate the current point with
        the TSQR pass next, and use it from then on."""
        self.mode, self.reeval = "qr", True
        self.trials = np.asarray(self.tr.p, dtype=np.float64)[None, :]
        self.acc = self.core.acc_zeros(1, "qr")
        self.cursor = self.points_seen = 0
        self.first_try_accepted = 0

    def stop(self):
        self.done = True

    # -- result ---------------------------------------------------------------------
    def sst(self) -> float:
        return max(float(self.y_moments[2]), 0.0)

    # -- checkpoint state -------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        st: dict[str, Any] = {
            "version": STATE_VERSION,
            "fingerprint": self.fingerprint,
            "pass_index": self.pass_index,
            "cursor": self.cursor,
            "points_seen": self.points_seen,
            "done": int(self.done),
            "n_trial_evals": self.n_trial_evals,
            "trials": np.asarray(self.trials),
            "has_tr": int(self.tr is not None),
            "y_moments": np.asarray(self.y_moments, np.float64),
            "first_try_accepted": self.first_try_accepted,
            "mode": int(self.mode == "qr"),
            "reeval": int(self.reeval),
        }
        for k, v in self.warm.items():
            st["warm/" + k] = v
        _leaves_to_state("acc", self.acc, st)
        if self.tr is not None:
            _leaves_to_state("tr", self.tr, st)
            if not self.done:
                _leaves_to_state("sched", self.sched, st)
                _leaves_to_state("prop", self.props, st)
        return st

    def load(self, st: dict[str, Any]):
        c = self.core
        self.pass_index = int(st["pass_index"])
        self.cursor = int(st["cursor"])
        self.points_seen = int(st["points_seen"])
        self.done = bool(int(st["done"]))
        self.n_trial_evals = int(st["n_trial_evals"])
        self.trials = np.asarray(st["trials"], dtype=np.float64)
        self.y_moments = tuple(float(v) for v in np.asarray(st["y_moments"], np.float64))
        self.first_try_accepted = int(st["first_try_accepted"])
        self.warm = {k[5:]: v for k, v in st.items() if k.startswith("warm/")}
        self.mode = "qr" if int(st["mode"]) else "gram"
        self.reeval = bool(int(st["reeval"]))
        self.acc = _state_to_tree("acc", c.acc_zeros(self.trials.shape[0], self.mode), st)
        if int(st["has_tr"]):
            self.tr = _state_to_tree("tr", c.tr_struct, st)
            if not self.done:
                stacked = lambda s: jax.tree_util.tree_map(  # noqa: E731
                    lambda a: jax.ShapeDtypeStruct((c.K,) + a.shape, a.dtype), s)
                self.sched = _state_to_tree("sched", stacked(c.tr_struct), st)
                props_struct = jax.eval_shape(lambda s: _tr.tr_propose(s, c.lower, c.upper, c.settings), c.tr_struct)
                self.props = _state_to_tree("prop", stacked(props_struct), st)


def _finished(st) -> bool:
    return int(st.status) != int(FitStatus.RUNNING)
