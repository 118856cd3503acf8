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

This module is the one definition of the losses: each is a ``rho`` function registered
below with ``@_loss(name, summary)``. The name list (:func:`loss_names`), the front door's and
the plan's checks, the presets' allowed values and the flow request's ``Loss`` drop-down
all derive from this table, so a new loss is one decorated function here and nothing
else (``tests/test_architecture.py`` makes that edit and checks every consumer).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax.numpy as jnp

EPS = float(jnp.finfo(jnp.float64).eps)


class Loss(NamedTuple):
    """A registered loss: ``rho(z) -> (rho, rho', rho'')`` for ``z >= 0`` (SciPy's definitions)."""

    name: str
    rho: Callable
    summary: str


_TABLE: dict[str, Loss] = {}


def _loss(name: str, summary: str):
    """Register the decorated ``rho`` under ``name`` (registration order is display order)."""

    def register(rho_fn: Callable) -> Callable:
        if name in _TABLE:
            raise ValueError(f"loss {name!r} is defined twice")
        _TABLE[name] = Loss(name, rho_fn, summary)
        return rho_fn

    return register


@_loss("linear", "rho(z) = z: ordinary least squares")
def _linear(z):
    return z, jnp.ones_like(z), jnp.zeros_like(z)


@_loss("soft_l1", "rho(z) = 2 (sqrt(1 + z) - 1): a smooth approximation of the l1 loss")
def _soft_l1(z):
    t = 1.0 + z
    return 2.0 * (jnp.sqrt(t) - 1.0), t**-0.5, -0.5 * t**-1.5


@_loss("huber", "rho(z) = z if z <= 1 else 2 sqrt(z) - 1: quadratic near zero, linear beyond")
def _huber(z):
    one, zero = jnp.ones_like(z), jnp.zeros_like(z)
    inner = z <= 1.0
    zs = jnp.where(inner, 1.0, z)  # keeps z**-0.5 finite in the unused branch
    return (
        jnp.where(inner, z, 2.0 * jnp.sqrt(zs) - 1.0),
        jnp.where(inner, one, zs**-0.5),
        jnp.where(inner, zero, -0.5 * zs**-1.5),
    )


@_loss("cauchy", "rho(z) = ln(1 + z): outliers weigh little")
def _cauchy(z):
    t = 1.0 + z
    return jnp.log1p(z), 1.0 / t, -1.0 / t**2


@_loss("arctan", "rho(z) = arctan(z): a cost bounded by pi/2 per point")
def _arctan(z):
    t = 1.0 + z**2
    return jnp.arctan(z), 1.0 / t, -2.0 * z / t**2


def loss_names() -> tuple[str, ...]:
    """The registered losses' names, in registration order."""
    return tuple(_TABLE)


def describe_losses() -> dict[str, str]:
    """``{name: summary}`` of every registered loss (for help texts and forms)."""
    return {name: loss.summary for name, loss in _TABLE.items()}


class LossTerms(NamedTuple):
    cost: jnp.ndarray  # 0.5 * c^2 rho(z), per point
    grad_w: jnp.ndarray  # rho'(z), per point
    hess_w: jnp.ndarray  # max(rho' + 2 rho'' r^2 / c^2, eps), per point


def rho(loss: str, z):
    """``(rho, rho', rho'')`` of ``z >= 0`` for a registered loss (SciPy's definitions)."""
    try:
        entry = _TABLE[loss]
    except KeyError:
        raise ValueError(f"loss={loss!r} is not one of {loss_names()}") from None
    return entry.rho(z)


def loss_terms(loss: str, f_scale, r) -> LossTerms:
    """Per-point cost and Gauss-Newton weights of residuals ``r`` (see module docstring)."""
    if loss == "linear":  # no scaling round trip: bit-identical to plain least squares
        one = jnp.ones_like(r)
        return LossTerms(0.5 * r * r, one, one)
    c2 = f_scale * f_scale
    z = r * r / c2
    r0, r1, r2 = rho(loss, z)
    w = r1 + 2.0 * r2 * z  # = rho' + 2 rho'' r^2 / c^2 with SciPy's rho'' / c^2
    return LossTerms(0.5 * c2 * r0, r1, jnp.maximum(w, EPS))
