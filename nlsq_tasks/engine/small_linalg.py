"""Cholesky factorization and triangular solves for the ``p x p`` trust-region systems.

For a handful of parameters these are a few dozen flops, but XLA:CPU runs
``jnp.linalg.cholesky`` and ``solve_triangular`` as LAPACK calls, one call per matrix: with
a batch of ``K`` fits (``vmap``) that is ``K`` tiny calls per factorization, a dozen
factorizations per iteration, and the calls dominate the whole fit (measured: ~13 us per
fit and iteration at p = 3). Written out entry by entry for small ``p`` (static), the same
arithmetic becomes element-wise array operations that XLA fuses and vectorizes over the
batch, and a single fit saves the call overhead too.

The algorithms are the textbook ones LAPACK uses unblocked for such sizes (``potf2``,
forward/backward substitution): :math:`L_{jj} = \\sqrt{a_{jj} - \\sum_{k<j} L_{jk}^2}`,
:math:`L_{ij} = (a_{ij} - \\sum_{k<j} L_{ik} L_{jk}) / L_{jj}`. A matrix that is not positive
definite gives NaN entries (``sqrt`` of a negative, or a division by zero), as
``jnp.linalg.cholesky`` does, so callers test ``isfinite`` either way.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.scipy.linalg import cho_solve as _cho_solve
from jax.scipy.linalg import solve_triangular as _solve_triangular

UNROLL_MAX = 8  # above this the unrolled graph grows (p^3/6 terms) faster than the call overhead shrinks


def _rows(m):
    p = m.shape[-1]
    return [[m[..., i, j] for j in range(p)] for i in range(p)]


def cholesky(a):
    """Lower Cholesky factor of a symmetric positive definite ``a`` (last two axes)."""
    p = a.shape[-1]
    if p > UNROLL_MAX:
        return jnp.linalg.cholesky(a)
    a = _rows(0.5 * (a + jnp.swapaxes(a, -1, -2)))  # as jnp.linalg.cholesky's symmetrize_input
    low = [[None] * p for _ in range(p)]
    for j in range(p):
        s = a[j][j]
        for k in range(j):
            s = s - low[j][k] * low[j][k]
        d = jnp.sqrt(s)
        low[j][j] = d
        for i in range(j + 1, p):
            t = a[i][j]
            for k in range(j):
                t = t - low[i][k] * low[j][k]
            low[i][j] = t / d
    zero = jnp.zeros_like(a[0][0])
    return jnp.stack([jnp.stack([low[i][j] if j <= i else zero for j in range(p)], axis=-1) for i in range(p)], axis=-2)


def solve_lower(low, b):
    """``x`` with ``low @ x = b`` (``low`` lower triangular, ``b`` a vector)."""
    p = low.shape[-1]
    if p > UNROLL_MAX:
        return _solve_triangular(low, b, lower=True)
    m = _rows(low)
    x = []
    for i in range(p):
        t = b[..., i]
        for k in range(i):
            t = t - m[i][k] * x[k]
        x.append(t / m[i][i])
    return jnp.stack(x, axis=-1)


def solve_upper_t(low, b):
    """``x`` with ``low.T @ x = b`` (``low`` lower triangular, ``b`` a vector)."""
    p = low.shape[-1]
    m = _rows(low)
    x = [None] * p
    for i in reversed(range(p)):
        t = b[..., i]
        for k in range(i + 1, p):
            t = t - m[k][i] * x[k]
        x[i] = t / m[i][i]
    return jnp.stack(x, axis=-1)


def cho_solve(low, b):
    """``x`` with ``(low @ low.T) x = b``, given the lower Cholesky factor ``low``."""
    if low.shape[-1] > UNROLL_MAX:
        return _cho_solve((low, True), b)
    return solve_upper_t(low, solve_lower(low, b))
