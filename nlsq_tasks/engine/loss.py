"""Robust loss functions, with SciPy ``least_squares`` semantics.

A loss is a function :math:`\\rho(z)` of the squared scaled residual
:math:`z = (r / c)^2`, where :math:`c` is ``f_scale``. The cost of a fit is

.. math::

    F(p) = \\tfrac12 \\sum_i c^2 \\rho\\big((r_i/c)^2\\big).

Its gradient is :math:`\\sum_i \\rho'(z_i) r_i \\nabla r_i` and the Gauss-Newton
approximation of its Hessian uses, per point, the weight
:math:`w_i = \\rho'(z_i) + 2 \\rho''(z_i) r_i^2 / c^2` clipped from below at machine
epsilon (SciPy's ``scale_for_robust_loss_function``). We therefore return, per point,

- ``cost_i`` = :math:`\\tfrac12 c^2 \\rho(z_i)`,
- ``grad_w`` = :math:`\\rho'(z_i)` (so that :math:`J^T(\\rho' r)` is the gradient),
- ``hess_w`` = :math:`\\max(w_i, \\epsilon)` (so that :math:`J^T \\mathrm{diag}(w) J` is the
  Gauss-Newton matrix SciPy builds from its rescaled Jacobian :math:`\\sqrt{w} J`).

Every branch is selected with ``jnp.where`` on safe inputs: nothing that may be inf is
ever multiplied by a mask.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp

from .options import LOSSES

EPS = float(jnp.finfo(jnp.float64).eps)


class LossTerms(NamedTuple):
    cost: jnp.ndarray  # 0.5 * c^2 rho(z), per point
    grad_w: jnp.ndarray  # rho'(z), per point
    hess_w: jnp.ndarray  # max(rho' + 2 rho'' r^2 / c^2, eps), per point


def rho(loss: str, z):
    """``(rho, rho', rho'')`` of ``z >= 0`` for a named loss (SciPy's definitions)."""
    one, zero = jnp.ones_like(z), jnp.zeros_like(z)
    if loss == "linear":
        return z, one, zero
    if loss == "soft_l1":
        t = 1.0 + z
        return 2.0 * (jnp.sqrt(t) - 1.0), t**-0.5, -0.5 * t**-1.5
    if loss == "huber":
        inner = z <= 1.0
        zs = jnp.where(inner, 1.0, z)  # keeps z**-0.5 finite in the unused branch
        return (
            jnp.where(inner, z, 2.0 * jnp.sqrt(zs) - 1.0),
            jnp.where(inner, one, zs**-0.5),
            jnp.where(inner, zero, -0.5 * zs**-1.5),
        )
    if loss == "cauchy":
        t = 1.0 + z
        return jnp.log1p(z), 1.0 / t, -1.0 / t**2
    if loss == "arctan":
        t = 1.0 + z**2
        return jnp.arctan(z), 1.0 / t, -2.0 * z / t**2
    raise ValueError(f"loss={loss!r} is not one of {LOSSES}")


def loss_terms(loss: str, f_scale, r) -> LossTerms:
    """Per-point cost and Gauss-Newton weights of residuals ``r`` (see module docstring)."""
    if loss == "linear":
        one = jnp.ones_like(r)
        return LossTerms(0.5 * r * r, one, one)
    c2 = f_scale * f_scale
    z = r * r / c2
    r0, r1, r2 = rho(loss, z)
    w = r1 + 2.0 * r2 * z  # = rho' + 2 rho'' r^2 / c^2 with SciPy's rho'' / c^2
    return LossTerms(0.5 * c2 * r0, r1, jnp.maximum(w, EPS))
