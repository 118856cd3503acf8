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

from . import small_linalg
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


def is_finite(neq) -> jnp.ndarray:
    """True when cost, gradient and Gauss-Newton matrix (or its factor) are all finite."""
    mat = neq.R if isinstance(neq, LeastSquaresFactor) else neq.JtJ
    return jnp.isfinite(neq.cost) & jnp.all(jnp.isfinite(mat)) & jnp.all(jnp.isfinite(neq.Jtr))


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


# -- the triangular factor of J (TSQR) ---------------------------------------------------------
class LeastSquaresFactor(NamedTuple):
    """What the trust-region step needs, with :math:`J`'s conditioning rather than its square.

    ``R`` (``p x p``) and ``qtr`` satisfy :math:`R^T R = J^T W J` and :math:`R^T q = J^T \\tilde r`
    (``R`` is triangular when it comes from a QR of the data; any square root of the Gram
    matrix otherwise). ``grad`` is the cost's gradient :math:`J^T \\tilde r` itself. The
    statistics are the plain sums of :class:`NormalEquations`.
    """

    cost: jnp.ndarray
    R: jnp.ndarray
    qtr: jnp.ndarray
    grad: jnp.ndarray
    chi2: jnp.ndarray
    ssr: jnp.ndarray
    sum_y: jnp.ndarray
    sum_y2: jnp.ndarray
    count: jnp.ndarray

    @property
    def JtJ(self):  # the Gram matrix, for consumers that want it (formed only on request; batched too)
        return self.R.swapaxes(-1, -2) @ self.R

    @property
    def Jtr(self):
        return self.grad


def householder_r(a):
    """The ``n x n`` triangular factor of a QR of ``a`` (``m x n``), by Householder
    reflections written as plain array ops (a ``fori_loop`` over columns).

    Not ``jnp.linalg.qr``: on CPU that calls LAPACK through a threaded BLAS, which on a
    shared machine was measured 100x slower for an 8192 x 9 tile (50 ms vs 0.3 ms with one
    thread); these ops stay inside XLA's own fused kernels. Rows beyond ``m`` are zero when
    ``m < n``.
    """
    m, n = a.shape
    if m < n:
        a = jnp.concatenate([a, jnp.zeros((n - m, n), a.dtype)])
        m = n
    rows = jnp.arange(m)

    def reflect(k, a):
        col = lax.dynamic_index_in_dim(a, k, axis=1, keepdims=False)
        x = jnp.where(rows >= k, col, 0.0)
        norm = jnp.sqrt(jnp.sum(x * x))
        alpha = jnp.where(col[k] >= 0, -norm, norm)
        v = x - jnp.where(rows == k, alpha, 0.0)
        vtv = jnp.sum(v * v)
        scale = jnp.where(vtv > 0, 2.0 / jnp.where(vtv > 0, vtv, 1.0), 0.0)
        return a - v[:, None] * ((v @ a) * scale)[None, :]

    a = lax.fori_loop(0, n, reflect, a)
    return jnp.triu(a[:n])


def _factor_rows(r_aug_rows, p: int):
    out = householder_r(r_aug_rows)
    return out[:p, :p], out[:p, p]


def chunk_factor(fn, loss: str, f_scale, params, x, y, sigma, mask) -> LeastSquaresFactor:
    """:class:`LeastSquaresFactor` of one block: QR of the (loss-rescaled) ``[J | r]``."""
    r, d, jt = weighted_residuals(fn, params, x, y, sigma, mask)
    yy = jnp.where(mask, y, 0.0)
    terms = loss_terms(loss, f_scale, r)
    if loss == "linear":
        rows, rhs, grad = jt, r, jt @ r
    else:  # SciPy's rescaling: J -> sqrt(w) J, r -> rho' r / sqrt(w)
        sw = jnp.sqrt(terms.hess_w)
        rows, rhs, grad = jt * sw[None, :], terms.grad_w * r / sw, jt @ (terms.grad_w * r)
    p = params.shape[0]
    R, qtr = _factor_rows(jnp.concatenate([rows, rhs[None, :]]).T, p)
    return LeastSquaresFactor(
        cost=jnp.sum(jnp.where(mask, terms.cost, 0.0)), R=R, qtr=qtr, grad=grad,
        chi2=jnp.sum(r * r), ssr=jnp.sum(d * d), sum_y=jnp.sum(yy), sum_y2=jnp.sum(yy * yy),
        count=jnp.sum(mask.astype(params.dtype)),
    )


def zero_factor(n_params: int, dtype=jnp.float64) -> LeastSquaresFactor:
    z = jnp.zeros((), dtype)
    return LeastSquaresFactor(z, jnp.zeros((n_params, n_params), dtype), jnp.zeros((n_params,), dtype),
                              jnp.zeros((n_params,), dtype), z, z, z, z, z)


def combine_factors(a: LeastSquaresFactor, b: LeastSquaresFactor) -> LeastSquaresFactor:
    """``a`` then ``b``: QR of the stacked ``[[R_a, q_a], [R_b, q_b]]`` (TSQR's reduction step)."""
    p = a.R.shape[0]
    stacked = jnp.concatenate([jnp.concatenate([a.R, a.qtr[:, None]], axis=1),
                               jnp.concatenate([b.R, b.qtr[:, None]], axis=1)])
    R, qtr = _factor_rows(stacked, p)
    return LeastSquaresFactor(a.cost + b.cost, R, qtr, a.grad + b.grad, a.chi2 + b.chi2, a.ssr + b.ssr,
                              a.sum_y + b.sum_y, a.sum_y2 + b.sum_y2, a.count + b.count)


# Equilibrated Gram matrices with eigenvalue ratio below this are too ill-conditioned for the
# normal equations (cond(J) > 1e5: they would keep fewer than 6 of 16 digits); a driver that
# can switches its pass to the factor of J (TSQR) from then on.
GRAM_RCOND_MIN = 1e-10


def gram_factor(neq: NormalEquations):
    """``(LeastSquaresFactor, ill_conditioned)`` from the normal equations.

    :math:`S J^T J S = V \\Lambda V^T` with the Jacobi scaling :math:`S`, so
    :math:`R = \\Lambda^{1/2} V^T S^{-1}` and :math:`q = \\Lambda^{-1/2} V^T S J^T r` (zero
    eigenvalues dropped). Exact for well-conditioned problems; ``ill_conditioned`` says the
    eigenvalue ratio is below :data:`GRAM_RCOND_MIN`.
    """
    jtj = neq.JtJ
    dg = jnp.diag(jtj)
    s = jnp.where(dg > 0, 1.0 / jnp.sqrt(jnp.where(dg > 0, dg, 1.0)), 1.0)
    b = jtj * s[:, None] * s[None, :]
    finite = jnp.all(jnp.isfinite(b))
    lam, vec = small_linalg.eigh(jnp.where(finite, 0.5 * (b + b.T), jnp.eye(b.shape[0], dtype=b.dtype)))
    lam_max = jnp.max(lam)
    keep = lam > EPS_GRAM * jnp.maximum(lam_max, 0.0)
    root = jnp.sqrt(jnp.where(keep, lam, 0.0))
    R = (root[:, None] * vec.T) / s[None, :]
    qtr = jnp.where(keep, (vec.T @ (s * neq.Jtr)) / jnp.where(keep, root, 1.0), 0.0)
    R = jnp.where(finite, R, jnp.nan)
    ill = jnp.min(lam) < GRAM_RCOND_MIN * lam_max
    return LeastSquaresFactor(neq.cost, R, qtr, neq.Jtr, neq.chi2, neq.ssr, neq.sum_y, neq.sum_y2, neq.count), ill


EPS_GRAM = float(jnp.finfo(jnp.float64).eps) * 10.0


class Factored(NamedTuple):
    """A pass result already factored by :func:`as_factor` (so that a loop whose body hands
    it to both branches of a ``lax.cond``, which ``vmap`` evaluates both of, factors once)."""

    factor: LeastSquaresFactor
    ill: jnp.ndarray


def as_factor(neq):
    """``(factor, ill_conditioned)`` of either pass result (or of a :class:`Factored`)."""
    if isinstance(neq, Factored):
        return neq.factor, neq.ill
    if isinstance(neq, LeastSquaresFactor):
        return neq, jnp.asarray(False)
    return gram_factor(neq)
