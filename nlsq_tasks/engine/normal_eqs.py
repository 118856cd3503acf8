"""Fused data passes: cost, normal equations and fit statistics in one sweep.

For parameters :math:`p` and a block of points, with weighted residuals
:math:`r_i = (f(x_i, p) - y_i)/\\sigma_i` (or :math:`r = L^{-1}(f - y)` for a covariance
:math:`\\Sigma = L L^T`), Jacobian :math:`J_{ij} = \\partial r_i / \\partial p_j` and the loss
weights of :mod:`.loss`, one evaluation produces

.. math::

    F = \\tfrac12 \\sum_i c^2 \\rho(z_i), \\qquad
    J^T W J = \\sum_i w_i \\nabla r_i \\nabla r_i^T, \\qquad
    J^T \\tilde r = \\sum_i \\rho'(z_i)\\, r_i \\nabla r_i,

together with :math:`\\chi^2 = \\sum r_i^2`, the unweighted :math:`\\sum (f_i - y_i)^2`,
:math:`\\sum y_i`, :math:`\\sum y_i^2` and the point count. All are plain sums over points, so
blocks combine with :func:`add_normal_eqs` and a whole data set is a fold over its chunks.
Every trial point of the trust-region loop is evaluated by one such pass: when it is
accepted, its normal equations are already there (no second pass for the Jacobian).

The Jacobian of a block is formed in forward mode (one JVP per parameter, batched with
``vmap``) as a ``(p, m)`` array, and :math:`J^T W J` is one ``(p, m) @ (m, p)`` product.
:func:`data_pass` walks the data in tiles of ``tile`` points inside a ``lax.scan`` so that
the ``(p, tile)`` Jacobian stays in cache, whatever the data size.

Padding/masking: ``mask`` marks real points. Padded points may hold anything (even values
where the model is not finite): their contributions are removed with ``jnp.where``.

Streaming usage: call :func:`chunk_normal_eqs` (jitted, possibly ``vmap``-ed over a
``(k, p)`` stack of trial parameters) on every chunk of a pass and fold with
:func:`add_normal_eqs`; start from :func:`zero_normal_eqs`. For large ``|mean(y)|``,
``sum_y2 - sum_y**2/count`` cancels; prefer accumulating ``y - y_shift`` where it matters.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.linalg import solve_triangular

from .loss import loss_terms


class NormalEquations(NamedTuple):
    cost: jnp.ndarray  # robust cost 0.5 * sum c^2 rho(z)
    JtJ: jnp.ndarray  # (p, p) loss-rescaled Gauss-Newton matrix
    Jtr: jnp.ndarray  # (p,) gradient of the cost
    chi2: jnp.ndarray  # sum of squared weighted residuals (no loss)
    ssr: jnp.ndarray  # sum of squared unweighted residuals
    sum_y: jnp.ndarray
    sum_y2: jnp.ndarray
    count: jnp.ndarray  # number of real points (float)


def zero_normal_eqs(n_params: int, dtype=jnp.float64) -> NormalEquations:
    z = jnp.zeros((), dtype)
    return NormalEquations(z, jnp.zeros((n_params, n_params), dtype), jnp.zeros((n_params,), dtype), z, z, z, z, z)


def add_normal_eqs(a: NormalEquations, b: NormalEquations) -> NormalEquations:
    return NormalEquations(*(u + v for u, v in zip(a, b)))


def is_finite(neq: NormalEquations) -> jnp.ndarray:
    """True when cost, gradient and Gauss-Newton matrix are all finite."""
    return jnp.isfinite(neq.cost) & jnp.all(jnp.isfinite(neq.JtJ)) & jnp.all(jnp.isfinite(neq.Jtr))


def _model_and_jacobian(fn: Callable, params, x):
    """``f (m,)`` and its parameter Jacobian transposed, ``(p, m)``, by batched JVPs."""
    n_params = params.shape[0]

    def model(p):
        return jnp.broadcast_to(fn(x, *[p[i] for i in range(n_params)]), x.shape[-1:]).astype(p.dtype)

    def along(t):
        return jax.jvp(model, (params,), (t,))

    f, jt = jax.vmap(along, out_axes=(None, 0))(jnp.eye(n_params, dtype=params.dtype))
    return f, jt


def weighted_residuals(fn, params, x, y, sigma, mask):
    """``(r, d, jt)`` of one block: weighted residuals :math:`r = (f - y)/\\sigma` (or
    :math:`L^{-1}(f - y)`), raw residuals :math:`d = f - y` and the weighted Jacobian
    transposed ``(p, m)``; padded points (``~mask``) are zero in all three."""
    f, jt = _model_and_jacobian(fn, params, x)
    d = f - y
    if sigma is None:
        r = d
    elif sigma.ndim == 1:
        w = 1.0 / sigma  # SciPy multiplies by 1/sigma
        r = w * d
        jt = jt * w[None, :]
    else:
        r = solve_triangular(sigma, d, lower=True)
        jt = solve_triangular(sigma, jt.T, lower=True).T
    r = jnp.where(mask, r, 0.0)
    d = jnp.where(mask, d, 0.0)
    jt = jnp.where(mask[None, :], jt, 0.0)
    return r, d, jt


# Up to this many points a block's products are written as element-wise products and sums:
# a K-batched (vmap) matrix product of (p, m) by (m, p) runs on XLA:CPU as K tiny GEMM calls
# (measured 7x slower than the fused element-wise form at K = 1e4, m = 128, p = 3); above it
# the GEMM wins.
ELEMENTWISE_MAX_POINTS = 1024


def _gram(a, b):
    """``a @ b.T`` for ``(p, m)`` and ``(q, m)`` blocks."""
    if a.shape[-1] <= ELEMENTWISE_MAX_POINTS:
        return jnp.sum(a[:, None, :] * b[None, :, :], axis=-1)
    return a @ b.T


def chunk_normal_eqs(fn, loss: str, f_scale, params, x, y, sigma, mask) -> NormalEquations:
    """Normal equations and statistics of one block of points (pure, jittable, vmappable).

    ``x`` is ``(m,)`` or ``(k, m)``; ``y`` and ``mask`` are ``(m,)``; ``sigma`` is None,
    ``(m,)`` standard deviations, or the ``(m, m)`` lower Cholesky factor ``L`` of the
    covariance (whitening :math:`r = L^{-1}(f - y)`, whole data set as one block only).
    """
    r, d, jt = weighted_residuals(fn, params, x, y, sigma, mask)
    yy = jnp.where(mask, y, 0.0)
    terms = loss_terms(loss, f_scale, r)
    if loss == "linear":
        jtj = _gram(jt, jt)
        jtr = _gram(jt, r[None, :])[:, 0]
    else:
        jtj = _gram(jt * terms.hess_w[None, :], jt)
        jtr = _gram(jt, (terms.grad_w * r)[None, :])[:, 0]
    return NormalEquations(
        cost=jnp.sum(jnp.where(mask, terms.cost, 0.0)),
        JtJ=jtj,
        Jtr=jtr,
        chi2=jnp.sum(r * r),
        ssr=jnp.sum(d * d),
        sum_y=jnp.sum(yy),
        sum_y2=jnp.sum(yy * yy),
        count=jnp.sum(mask.astype(params.dtype)),
    )


def data_pass(fn, loss: str, f_scale, params, x, y, sigma, n_valid, tile: int) -> NormalEquations:
    """The normal equations over ``N = len(y)`` points (``index >= n_valid`` is padding), in
    tiles of ``tile`` points: :func:`~.passes.in_memory.tiled_pass` of
    :class:`~.passes.NormalEquationsPass` (kept here as the short name the loop, the batch
    solver and the benches call)."""
    from .passes.in_memory import tiled_pass
    from .passes.reductions import NormalEquationsPass

    return tiled_pass(NormalEquationsPass(fn, loss), params, x, y, sigma, n_valid, tile, f_scale)


def centered_sum_squares(y, n_valid, mean) -> jnp.ndarray:
    """:math:`\\sum (y_i - \\bar y)^2` over the real points (two-pass, no cancellation)."""
    mask = jnp.arange(y.shape[0]) < n_valid
    return jnp.sum(jnp.where(mask, (y - mean) ** 2, 0.0))
