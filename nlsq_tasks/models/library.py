"""The built-in models: JAX functions (float64, traceable) with guesses and default bounds.

=====================  ==================================================================  =================================
name                   function                                                            parameters
=====================  ==================================================================  =================================
constant               :math:`c`                                                           c
linear                 :math:`s x + i`                                                     slope, intercept
polynomial (degree d)  :math:`\\sum_{k=0}^{d} c_k x^k`                                       c0 ... cd
exponential            :math:`a e^{-r x} + c`                                              amplitude, rate, offset
double_exponential     :math:`a_1 e^{-r_1 x} + a_2 e^{-r_2 x} + c` (guess: r_1 > r_2)      amplitude1, rate1, amplitude2, rate2, offset
stretched_exponential  :math:`a e^{-(x/\\tau)^\\beta} + c` (x >= 0)                           amplitude, tau, beta, offset
power_law              :math:`a x^b` (x >= 0), ``offset=True`` adds :math:`+ c`             amplitude, exponent (, offset)
gaussian               :math:`A e^{-(x-\\mu)^2 / (2\\sigma^2)}` (A is the height)             amplitude, center, sigma (, offset)
lorentzian             :math:`A \\gamma^2 / ((x-\\mu)^2 + \\gamma^2)` (gamma = HWHM)           amplitude, center, gamma (, offset)
pseudo_voigt           :math:`A[\\eta L(x) + (1-\\eta) G(x)]`, L and G of the same FWHM        amplitude, center, fwhm, eta (, offset)
logistic               :math:`c + A / (1 + e^{-k (x - x_0)})`                              amplitude, rate, midpoint, offset
michaelis_menten       :math:`V x / (K + x)`                                               vmax, km
damped_sine            :math:`a e^{-x/\\tau} \\sin(2\\pi f x + \\phi) + c`                     amplitude, tau, frequency, phase, offset
=====================  ==================================================================  =================================

Peaks have no offset by default, so that sums of peaks stay identifiable; add one with
``get_model("gaussian", offset=True)`` (spec ``"gaussian:offset"``) or with ``+ constant``.

Numerical safety: widths and time constants go through :func:`_nonzero` (a width of exactly
0 would be 0/0), and fractional powers use the double-``where`` idiom so that the gradient
is finite at every ``x > 0`` even when other points sit at ``x = 0``. Points outside a
model's domain (``x < 0`` for power laws) give NaN, which the solver reports, rather than
a silently wrong number.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from . import _guess as g
from .base import Model

VERSION = "1"  # bump when a built-in's function or parametrisation changes (it is in the fingerprint)
_INF = np.inf
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


# -- safe pieces ---------------------------------------------------------------------------
def _nonzero(v):
    """``v``, with exact zeros replaced by the smallest normal float (avoids 0/0)."""
    v = jnp.asarray(v, dtype=jnp.result_type(v, float))
    return jnp.where(v == 0, jnp.finfo(v.dtype).tiny, v)


def _power(u, b):
    """:math:`u^b` for ``u >= 0`` with finite gradients at ``u > 0``; NaN for ``u < 0``."""
    pos = u > 0
    u_safe = jnp.where(pos, u, 1.0)
    at_zero = jnp.where(b > 0, 0.0, jnp.where(b == 0, 1.0, jnp.inf))
    return jnp.where(pos, jnp.exp(b * jnp.log(u_safe)), jnp.where(u == 0, at_zero, jnp.nan))


def _gauss(x, center, sigma):
    z = (x - center) / _nonzero(sigma)
    return jnp.exp(-0.5 * z * z)


def _lorentz(x, center, gamma):
    z = (x - center) / _nonzero(gamma)
    return 1.0 / (1.0 + z * z)


# -- model functions -----------------------------------------------------------------------
def constant_fn(x, c):
    return jnp.broadcast_to(c, jnp.shape(x)).astype(jnp.result_type(c, float))


def linear_fn(x, slope, intercept):
    return slope * x + intercept


def polynomial_fn(x, *coefs):
    out = jnp.broadcast_to(coefs[-1], jnp.shape(x)).astype(jnp.result_type(coefs[-1], float))
    for c in coefs[-2::-1]:  # Horner
        out = out * x + c
    return out


def exponential_fn(x, amplitude, rate, offset):
    return amplitude * jnp.exp(-rate * x) + offset


def double_exponential_fn(x, amplitude1, rate1, amplitude2, rate2, offset):
    return amplitude1 * jnp.exp(-rate1 * x) + amplitude2 * jnp.exp(-rate2 * x) + offset


def stretched_exponential_fn(x, amplitude, tau, beta, offset):
    return amplitude * jnp.exp(-_power(x / _nonzero(tau), beta)) + offset


def power_law_fn(x, amplitude, exponent):
    return amplitude * _power(x, exponent)


def power_law_offset_fn(x, amplitude, exponent, offset):
    return amplitude * _power(x, exponent) + offset


def gaussian_fn(x, amplitude, center, sigma):
    return amplitude * _gauss(x, center, sigma)


def gaussian_offset_fn(x, amplitude, center, sigma, offset):
    return amplitude * _gauss(x, center, sigma) + offset


def lorentzian_fn(x, amplitude, center, gamma):
    return amplitude * _lorentz(x, center, gamma)


def lorentzian_offset_fn(x, amplitude, center, gamma, offset):
    return amplitude * _lorentz(x, center, gamma) + offset


def pseudo_voigt_fn(x, amplitude, center, fwhm, eta):
    return amplitude * (eta * _lorentz(x, center, fwhm / 2) + (1 - eta) * _gauss(x, center, fwhm / _FWHM_PER_SIGMA))


def pseudo_voigt_offset_fn(x, amplitude, center, fwhm, eta, offset):
    return pseudo_voigt_fn(x, amplitude, center, fwhm, eta) + offset


def logistic_fn(x, amplitude, rate, midpoint, offset):
    return offset + amplitude * jax.nn.sigmoid(rate * (x - midpoint))  # sigmoid is overflow-safe


def michaelis_menten_fn(x, vmax, km):
    return vmax * x / _nonzero(km + x)


def damped_sine_fn(x, amplitude, tau, frequency, phase, offset):
    return amplitude * jnp.exp(-x / _nonzero(tau)) * jnp.sin(2 * jnp.pi * frequency * x + phase) + offset


# -- guesses (NumPy) -----------------------------------------------------------------------
def _guess_constant(x, y):
    return [np.median(y)]


def _guess_linear(x, y):
    xs, ys = g.sorted_1d(x, y)
    if np.ptp(xs) == 0:
        return [0.0, ys.mean()]
    xm = xs.mean()
    (slope, c), _ = g.lstsq_columns([xs - xm, np.ones_like(xs)], ys)
    return [slope, c - slope * xm]


def _guess_polynomial(degree):
    def guess(x, y):
        xs, ys = g.sorted_1d(x, y)
        if xs.size <= degree or np.ptp(xs) == 0:
            return [ys.mean()] + [0.0] * degree
        coef = np.polynomial.Polynomial.fit(xs, ys, degree).convert().coef  # scaled domain: well conditioned
        return np.pad(coef, (0, degree + 1 - coef.size))

    return guess


def _best_rate(dx, ys, rates):
    a, c, ssr = g.lstsq_offset(np.exp(-np.outer(rates, dx)), ys)
    k = int(np.argmin(ssr))
    return rates[k], a[k], c[k], ssr[k]


def _guess_exponential(x, y):
    xs, ys = g.sorted_1d(x, y)
    x0, dx = xs[0], xs - xs[0]  # shift so exp() stays representable; undo on the amplitude
    step = 10**0.1
    rate, *_ = _best_rate(dx, ys, np.logspace(-2, 2.5, 46) / g.span(xs))
    rate, a, c, _ = _best_rate(dx, ys, g.refine_log_grid(rate, step))
    return [a * math.exp(rate * x0), rate, c]


def _guess_double_exponential(x, y):
    xs, ys = g.sorted_1d(x, y)
    x0, dx = xs[0], xs - xs[0]
    ones = np.ones_like(dx)

    def search(fast_rates, slow_rates):
        best = (np.inf, None)
        for rf in fast_rates:  # bounded: grid sizes are fixed
            ef = np.exp(-rf * dx)
            for rs in slow_rates:
                if rs >= rf:
                    continue
                coef, ssr = g.lstsq_columns([ef, np.exp(-rs * dx), ones], ys)
                if ssr < best[0]:
                    best = (ssr, (rf, rs, coef))
        return best[1]

    coarse = np.logspace(-2, 2.5, 28) / g.span(xs)
    full = (dx, ys, ones)
    dx, ys = g.sorted_1d(dx, ys, g.COARSE_POINTS)  # the coarse grid looks at fewer points
    ones = np.ones_like(dx)
    rf, rs, _ = search(coarse, coarse)
    dx, ys, ones = full
    ratio = coarse[1] / coarse[0]
    rf, rs, (af, as_, c) = search(g.refine_log_grid(rf, ratio, 7), g.refine_log_grid(rs, ratio, 7))
    return [af * math.exp(rf * x0), rf, as_ * math.exp(rs * x0), rs, c]


def _guess_stretched(x, y):
    xs, ys = g.sorted_1d(x, y)
    keep = xs >= 0
    xs, ys = xs[keep], ys[keep]
    xmax = float(xs.max()) if xs.size and xs.max() > 0 else 1.0

    def search(taus, betas):
        best = (np.inf, None)
        for beta in betas:
            G = np.exp(-((np.outer(1 / taus, xs)) ** beta))
            a, c, ssr = g.lstsq_offset(G, ys)
            k = int(np.argmin(ssr))
            if ssr[k] < best[0]:
                best = (ssr[k], (a[k], taus[k], beta, c[k]))
        return best[1]

    taus = np.logspace(-2, 1, 31) * xmax
    a, tau, beta, c = search(taus, np.linspace(0.3, 2.0, 18))
    return list(search(g.refine_log_grid(tau, taus[1] / taus[0], 11), np.linspace(beta - 0.05, beta + 0.05, 5)))


def _guess_power_law(offset):
    def guess(x, y):
        xs, ys = g.sorted_1d(x, y)
        keep = xs > 0
        xs, ys = xs[keep], ys[keep]
        if xs.size < 2:
            raise ValueError("power law needs x > 0")
        logx = np.log(xs)

        def search(bs):
            G = np.exp(np.outer(bs, logx))
            if offset:
                a, c, ssr = g.lstsq_offset(G, ys)
            else:
                (a, ssr), c = g.lstsq_scale(G, ys), np.zeros(bs.size)
            k = int(np.argmin(ssr))
            return a[k], bs[k], c[k]

        a, b, c = search(np.linspace(-4, 4, 81))
        a, b, c = search(np.linspace(b - 0.1, b + 0.1, 41))
        return [a, b, c] if offset else [a, b]

    return guess


def _guess_peak(kind, offset):
    def guess(x, y):
        height, center, fwhm, base = g.peak_features(x, y)
        width = {"gaussian": fwhm / _FWHM_PER_SIGMA, "lorentzian": fwhm / 2, "pseudo_voigt": fwhm}[kind]
        p = [height, center, width] + ([0.5] if kind == "pseudo_voigt" else [])
        return p + ([base] if offset else [])

    return guess


def _sigmoid_np(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _guess_logistic(x, y):
    xs, ys = g.sorted_1d(x, y)
    T = g.span(xs)

    def search(xs, ys, rates, mids):
        R, M = np.meshgrid(rates, mids, indexing="ij")
        R, M = R.ravel(), M.ravel()
        a, c, ssr = g.lstsq_offset(_sigmoid_np(R[:, None] * (xs[None, :] - M[:, None])), ys)
        k = int(np.argmin(ssr))
        return a[k], R[k], M[k], c[k]

    rates = np.logspace(-0.5, 2.5, 31) / T
    mids = np.linspace(xs[0] - 0.25 * T, xs[-1] + 0.25 * T, 61)
    dm = mids[1] - mids[0]
    a, r, m, c = search(*g.sorted_1d(xs, ys, g.COARSE_POINTS), rates, mids)  # coarse grid on fewer points
    return list(search(xs, ys, g.refine_log_grid(r, rates[1] / rates[0], 11), np.linspace(m - dm, m + dm, 11)))


def _guess_michaelis_menten(x, y):
    xs, ys = g.sorted_1d(x, y)
    xmax = float(np.max(np.abs(xs))) or 1.0

    def search(kms):
        G = xs[None, :] / (kms[:, None] + xs[None, :])
        a, ssr = g.lstsq_scale(G, ys)
        k = int(np.argmin(ssr))
        return a[k], kms[k]

    kms = np.logspace(-2, 2, 41) * xmax
    vmax, km = search(kms)
    return list(search(g.refine_log_grid(km, kms[1] / kms[0])))


def _guess_damped_sine(x, y):
    xs, ys = g.sorted_1d(x, y)
    freq = g.dominant_frequency(xs, ys)
    x0, dx = xs[0], xs - xs[0]
    s, c = np.sin(2 * np.pi * freq * xs), np.cos(2 * np.pi * freq * xs)
    best = (np.inf, None)
    for tau in g.span(xs) * np.logspace(-1.5, 2, 36):
        e = np.exp(-dx / tau)
        coef, ssr = g.lstsq_columns([e * s, e * c, np.ones_like(xs)], ys)
        if ssr < best[0]:
            best = (ssr, (tau, coef))
    tau, (p, q, offset) = best[1]
    # a sin(t + phi) = (a cos phi) sin t + (a sin phi) cos t
    return [math.hypot(p, q) * math.exp(x0 / tau), tau, freq, math.atan2(q, p), offset]


# -- the table -----------------------------------------------------------------------------
def _builtin(name, fn, params, guess, bounds, fallback, formula, short, *, options=None, baseline=False):
    options = dict(options or {})
    opt_tokens = [str(v) for k, v in options.items() if k == "degree"] + [k for k, v in options.items() if v is True]
    spec = name + (":" + ",".join(opt_tokens) if opt_tokens else "")
    return Model(
        fn,
        params,
        name,
        guess=guess,
        bounds=bounds,
        identity=f"library:{spec}:v{VERSION}",
        formula=formula,
        n_features=1,
        spec=spec,
        fallback=fallback,
        baseline=baseline,
        short=short,
        _rebuild=(_rebuild_builtin, (name, tuple(sorted(options.items())))),
    )


def _rebuild_builtin(name, options):
    return BUILTINS[name](**dict(options))


def constant():
    return _builtin("constant", constant_fn, ["c"], _guess_constant, None, [0.0], "c", "c", baseline=True)


def linear():
    return _builtin(
        "linear", linear_fn, ["slope", "intercept"], _guess_linear, None, [1.0, 0.0], "slope*x + intercept", "lin",
        baseline=True,
    )


def polynomial(degree: int = 2):
    if isinstance(degree, bool) or not isinstance(degree, (int, np.integer)) or not 0 <= degree <= 20:
        raise ValueError(f"polynomial: degree={degree!r} is not allowed; use an integer from 0 to 20.")
    degree = int(degree)
    names = [f"c{k}" for k in range(degree + 1)]
    formula = " + ".join(["c0"] + [f"c{k}*x**{k}" if k > 1 else "c1*x" for k in range(1, degree + 1)])
    return _builtin(
        "polynomial", polynomial_fn, names, _guess_polynomial(degree), None, [0.0] * (degree + 1), formula, "poly",
        options={"degree": degree}, baseline=True,
    )


def exponential():
    return _builtin(
        "exponential", exponential_fn, ["amplitude", "rate", "offset"], _guess_exponential,
        ([-_INF, 0, -_INF], [_INF, _INF, _INF]), [1.0, 1.0, 0.0], "amplitude*exp(-rate*x) + offset", "exp",
    )


def double_exponential():
    return _builtin(
        "double_exponential", double_exponential_fn, ["amplitude1", "rate1", "amplitude2", "rate2", "offset"],
        _guess_double_exponential, ([-_INF, 0, -_INF, 0, -_INF], [_INF] * 5), [1.0, 1.0, 1.0, 0.1, 0.0],
        "amplitude1*exp(-rate1*x) + amplitude2*exp(-rate2*x) + offset", "dexp",
    )


def stretched_exponential():
    return _builtin(
        "stretched_exponential", stretched_exponential_fn, ["amplitude", "tau", "beta", "offset"], _guess_stretched,
        ([-_INF, 0, 0, -_INF], [_INF, _INF, 10.0, _INF]), [1.0, 1.0, 1.0, 0.0],
        "amplitude*exp(-(x/tau)**beta) + offset", "sexp",
    )


def power_law(offset: bool = False):
    names = ["amplitude", "exponent"] + (["offset"] if offset else [])
    return _builtin(
        "power_law", power_law_offset_fn if offset else power_law_fn, names, _guess_power_law(offset), None,
        [1.0, 1.0] + ([0.0] if offset else []), "amplitude*x**exponent" + (" + offset" if offset else ""), "pow",
        options={"offset": True} if offset else None,
    )


def _peak(name, fn, fn_off, names, lower, upper, fallback, formula, short, offset):
    return _builtin(
        name, fn_off if offset else fn, names + (["offset"] if offset else []), _guess_peak(name, offset),
        (lower + ([-_INF] if offset else []), upper + ([_INF] if offset else [])), fallback + ([0.0] if offset else []),
        formula + (" + offset" if offset else ""), short, options={"offset": True} if offset else None,
    )


def gaussian(offset: bool = False):
    return _peak(
        "gaussian", gaussian_fn, gaussian_offset_fn, ["amplitude", "center", "sigma"], [-_INF, -_INF, 0],
        [_INF] * 3, [1.0, 0.0, 1.0], "amplitude*exp(-(x-center)**2/(2*sigma**2))", "g", offset,
    )


def lorentzian(offset: bool = False):
    return _peak(
        "lorentzian", lorentzian_fn, lorentzian_offset_fn, ["amplitude", "center", "gamma"], [-_INF, -_INF, 0],
        [_INF] * 3, [1.0, 0.0, 1.0], "amplitude*gamma**2/((x-center)**2 + gamma**2)", "l", offset,
    )


def pseudo_voigt(offset: bool = False):
    return _peak(
        "pseudo_voigt", pseudo_voigt_fn, pseudo_voigt_offset_fn, ["amplitude", "center", "fwhm", "eta"],
        [-_INF, -_INF, 0, 0], [_INF, _INF, _INF, 1.0], [1.0, 0.0, 1.0, 0.5],
        "amplitude*(eta*L(x; center, fwhm) + (1-eta)*G(x; center, fwhm))", "pv", offset,
    )


def logistic():
    return _builtin(
        "logistic", logistic_fn, ["amplitude", "rate", "midpoint", "offset"], _guess_logistic, None,
        [1.0, 1.0, 0.0, 0.0], "offset + amplitude/(1 + exp(-rate*(x - midpoint)))", "logi",
    )


def michaelis_menten():
    return _builtin(
        "michaelis_menten", michaelis_menten_fn, ["vmax", "km"], _guess_michaelis_menten, ([-_INF, 0], [_INF, _INF]),
        [1.0, 1.0], "vmax*x/(km + x)", "mm",
    )


def damped_sine():
    return _builtin(
        "damped_sine", damped_sine_fn, ["amplitude", "tau", "frequency", "phase", "offset"], _guess_damped_sine,
        ([-_INF, 0, 0, -_INF, -_INF], [_INF] * 5), [1.0, 1.0, 1.0, 0.0, 0.0],
        "amplitude*exp(-x/tau)*sin(2*pi*frequency*x + phase) + offset", "ds",
    )


BUILTINS = {
    f.__name__: f
    for f in (
        constant, linear, polynomial, exponential, double_exponential, stretched_exponential, power_law,
        gaussian, lorentzian, pseudo_voigt, logistic, michaelis_menten, damped_sine,
    )
}
ALIASES = {"exponential_decay": "exponential", "poly": "polynomial", "line": "linear", "sine_damped": "damped_sine"}
