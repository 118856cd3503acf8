"""Shared by the streaming, resume and validation tests: problems and misbehaving sources."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from nlsq_tasks.engine.options import SolverOptions
from nlsq_tasks.engine.sources import ArrayChunkSource, Chunk


def exp_decay(x, a, b, c):
    return a * jnp.exp(-b * x) + c


def exp_problem(n=6000, seed=0, noise=0.05):
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 5.0, n)
    sigma = noise * (1.0 + 0.5 * rng.random(n))
    y = 2.5 * np.exp(-1.3 * x) + 0.5 + sigma * rng.standard_normal(n)
    p0 = np.array([1.0, 0.5, 0.0])
    lower = np.array([0.0, 0.0, -1.0])
    upper = np.array([10.0, 5.0, 1.0])
    return x, y, sigma, p0, lower, upper


OPTIONS = SolverOptions()
NAMES = ["a", "b", "c"]


class Config:
    """Any object with StreamingConfig's attributes will do (the engine uses getattr)."""

    def __init__(self, **kw):
        self.n_trial_radii = 4
        self.checkpoint_every_chunks = 2
        self.warm_start = False
        self.warm_start_points = 1000
        self.max_passes = 200
        self.adaptive_trials = False  # these tests pin the K-trials-every-pass mode; the API default is adaptive
        self.__dict__.update(kw)


class Interrupted(RuntimeError):
    pass


class FlakySource(ArrayChunkSource):
    """Raises on the ``fail_at``-th chunk handed out (counting over all passes)."""

    def __init__(self, *a, fail_at=None, **kw):
        super().__init__(*a, **kw)
        self.fail_at = fail_at
        self.served = 0

    def chunks(self, start=0):
        for ch in super().chunks(start):
            if self.fail_at is not None and self.served == self.fail_at:
                raise Interrupted(f"simulated failure at chunk delivery {self.served}")
            self.served += 1
            yield ch


class EditedSource(ArrayChunkSource):
    """Replaces chunk ``index`` by ``edit(chunk)`` (None: stop the pass there)."""

    def __init__(self, *a, index=0, edit=None, **kw):
        super().__init__(*a, **kw)
        self.index, self.edit = index, edit

    def chunks(self, start=0):
        for j, ch in enumerate(super().chunks(start), start=start):
            if j == self.index:
                ch = self.edit(ch)
                if ch is None:
                    return
            yield ch


class EmptySource(ArrayChunkSource):
    def chunks(self, start=0):
        return iter(())


def with_nan(offset):
    def edit(ch):
        y = np.array(ch.y)
        y[offset] = np.nan
        return Chunk(ch.x, y, ch.sigma)

    return edit


def two_features(ch):
    return Chunk(np.vstack([ch.x, ch.x]), ch.y, ch.sigma)


def short_x(ch):
    return Chunk(ch.x[:-3], ch.y, ch.sigma)
