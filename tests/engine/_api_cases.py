"""Models and data shared by the front-door tests.

One set of function objects and one data size for all of them: the engine caches a
compiled solver per (function, loss, shapes), so sharing both across test files lets
each configuration compile once per session.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

N = 2500
CHUNK = 1000  # 2500 points: two full chunks and a partial one
TIGHT = {"ftol": 1e-12, "xtol": 1e-12, "gtol": 1e-12}


def decay(x, a, b, c):
    return a * jnp.exp(-b * x) + c


def decay_np(x, a, b, c):
    return a * np.exp(-b * x) + c


def plane(X, a, b, c):
    return a * jnp.exp(-b * X[0]) + c * X[1]


def plane_np(X, a, b, c):
    return a * np.exp(-b * X[0]) + c * X[1]


def decay_data(n=N, seed=0, noise=0.05):
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 5.0, n)
    y = 2.0 * np.exp(-1.3 * x) + 0.5 + noise * rng.standard_normal(n)
    return x, y
