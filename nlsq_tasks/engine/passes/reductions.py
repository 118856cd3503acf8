"""What a pass computes: per-chunk partials and the fold that combines them.

A :class:`Reduction` is a monoid over chunks of data at given parameters:

- ``partial(params, x, y, sigma, mask, f_scale)``: the chunk's contribution (a pytree),
  pure and jittable; ``mask`` marks real points (padding contributes nothing);
- ``zero(n_params)``: the identity;
- ``combine(a, b)``: associative, **not** assumed commutative: ``a`` covers the chunks
  before ``b``. A pass is ``combine(...combine(combine(zero, c_0), c_1)..., c_last)``, always
  in chunk order, which is what makes results independent of who evaluated the chunks.

Reductions are frozen dataclasses (hashable: they are static arguments of compiled
passes). Three are defined here:

- :class:`NormalEquationsPass`: cost, :math:`J^T W J`, gradient and fit statistics
  (:mod:`..normal_eqs`) -- what the trust-region driver asks for while J is well conditioned;
- :class:`LeastSquaresFactorPass`: the same with the triangular factor of J by TSQR instead
  of :math:`J^T W J` -- what it asks for once the normal equations are too ill-conditioned;
- :class:`ResidualStatsPass`: the validation pass's sums (the TSQR factor of the loss-free J,
  :math:`J^T r`, :math:`\\chi^2`) plus order statistics of the residual signs (runs,
  lag-1 products). Those are not plain sums: chunks are glued at their boundary by
  ``combine`` (first/last sign and residual of each side), which is why the contract
  is a fold and never a ``+``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from .. import normal_eqs as _ne


class Reduction(Protocol):
    """The monoid a pass folds over chunks (see module docstring)."""

    def zero(self, n_params: int) -> Any: ...

    def combine(self, a: Any, b: Any) -> Any: ...

    def partial(self, params, x, y, sigma, mask, f_scale) -> Any: ...


def fold(reduction: Reduction, acc, partials):
    """``combine`` the partials into ``acc`` in the order given (chunk order)."""
    for part in partials:
        acc = reduction.combine(acc, part)
    return acc


def stacked_combine(reduction: Reduction):
    """``combine`` over a leading axis of K trial points (one accumulator per trial)."""
    return jax.vmap(reduction.combine)


@dataclass(frozen=True)
class NormalEquationsPass:
    """Cost, Gauss-Newton matrix, gradient and statistics (:class:`~..normal_eqs.NormalEquations`)."""

    fn: Callable
    loss: str = "linear"

    def zero(self, n_params: int):
        return _ne.zero_normal_eqs(n_params)

    def combine(self, a, b):
        return _ne.add_normal_eqs(a, b)

    def partial(self, params, x, y, sigma, mask, f_scale):
        return _ne.chunk_normal_eqs(self.fn, self.loss, f_scale, params, x, y, sigma, mask)


class ResidualStats(NamedTuple):
    """Sums of the validation pass. Residuals here are :math:`r = (y - f)/\\sigma` (data
    minus model, the sign users read plots with)."""

    R: jnp.ndarray  # triangular factor of J (TSQR): R^T R = J^T J, J's own conditioning
    Jtr: jnp.ndarray
    chi2: jnp.ndarray
    ssr: jnp.ndarray
    n: jnp.ndarray  # real points
    n_pos: jnp.ndarray
    n_neg: jnp.ndarray
    runs: jnp.ndarray  # runs of equal sign among the nonzero residuals
    lag1: jnp.ndarray  # sum of r_i r_{i+1} over consecutive points
    first_sign: jnp.ndarray  # sign of the first nonzero residual (0: none)
    last_sign: jnp.ndarray
    first_r: jnp.ndarray  # first and last residual (any value), for lag-1 across the seam
    last_r: jnp.ndarray


@dataclass(frozen=True)
class ResidualStatsPass:
    """The QUALITY validation's residual pass (loss-free normal equations and sign statistics)."""

    fn: Callable

    def zero(self, n_params: int) -> ResidualStats:
        z = jnp.zeros((), jnp.float64)
        return ResidualStats(jnp.zeros((n_params, n_params)), jnp.zeros(n_params), z, z, z, z, z, z, z, z, z, z, z)

    def combine(self, a: ResidualStats, b: ResidualStats) -> ResidualStats:
        both = (a.n > 0) & (b.n > 0)
        seam = (a.last_sign != 0) & (a.last_sign == b.first_sign)  # one run continues across the seam
        return ResidualStats(
            _ne.householder_r(jnp.concatenate([a.R, b.R])), a.Jtr + b.Jtr, a.chi2 + b.chi2, a.ssr + b.ssr, a.n + b.n,
            a.n_pos + b.n_pos, a.n_neg + b.n_neg,
            a.runs + b.runs - jnp.where(seam, 1.0, 0.0),
            a.lag1 + b.lag1 + jnp.where(both, a.last_r * b.first_r, 0.0),
            jnp.where(a.first_sign != 0, a.first_sign, b.first_sign),
            jnp.where(b.last_sign != 0, b.last_sign, a.last_sign),
            jnp.where(a.n > 0, a.first_r, b.first_r),
            jnp.where(b.n > 0, b.last_r, a.last_r),
        )

    def partial(self, params, x, y, sigma, mask, f_scale) -> ResidualStats:
        # A block's real points are contiguous (every layout masks a prefix, a suffix or both).
        r, d, jt = _ne.weighted_residuals(self.fn, params, x, y, sigma, mask)
        r = -r  # data minus model
        m = r.shape[0]
        s = jnp.where(mask, jnp.sign(r), 0.0)
        idx = jnp.arange(m)
        nz = s != 0
        # sign of the previous nonzero residual, for counting where a new run starts
        last_nz = jax.lax.cummax(jnp.where(nz, idx, -1), axis=0)
        prev = jnp.concatenate([jnp.full((1,), -1, last_nz.dtype), last_nz[:-1]])
        prev_sign = jnp.where(prev >= 0, s[jnp.maximum(prev, 0)], 0.0)
        first_nz = jnp.argmax(nz)
        last_nz_i = m - 1 - jnp.argmax(nz[::-1])
        first_real = jnp.argmax(mask)
        last_real = m - 1 - jnp.argmax(mask[::-1])
        pairs = mask[:-1] & mask[1:]
        return ResidualStats(
            R=_ne.householder_r(jt.T),
            Jtr=jt @ r,
            chi2=jnp.sum(r * r),
            ssr=jnp.sum(d * d),
            n=jnp.sum(mask.astype(jnp.float64)),
            n_pos=jnp.sum((s > 0).astype(jnp.float64)),
            n_neg=jnp.sum((s < 0).astype(jnp.float64)),
            runs=jnp.sum((nz & (prev_sign != s)).astype(jnp.float64)),
            lag1=jnp.sum(jnp.where(pairs, r[:-1] * r[1:], 0.0)),
            first_sign=s[first_nz],
            last_sign=s[last_nz_i],
            first_r=r[first_real],
            last_r=r[last_real],
        )


@dataclass(frozen=True)
class LeastSquaresFactorPass:
    """The triangular factor of J by TSQR (:class:`~..normal_eqs.LeastSquaresFactor`): each
    block's ``[J | r]`` is reduced by QR and ``combine`` takes the QR of two stacked factors,
    so the trust-region step sees the condition number of J, not its square."""

    fn: Callable
    loss: str = "linear"

    def zero(self, n_params: int):
        return _ne.zero_factor(n_params)

    def combine(self, a, b):
        return _ne.combine_factors(a, b)

    def partial(self, params, x, y, sigma, mask, f_scale):
        return _ne.chunk_factor(self.fn, self.loss, f_scale, params, x, y, sigma, mask)
