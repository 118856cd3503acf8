"""NumPy building blocks for data-driven starting points.

Most built-in models are linear in some parameters once the others are fixed
(``a e^{-bx} + c`` is linear in ``a, c`` for fixed ``b``). For those we use *variable
projection on a grid*: for every candidate of the nonlinear parameters solve the linear
least-squares problem in closed form and keep the candidate with the smallest residual.
That is robust to noise (it uses all the points) and cannot diverge. Peak-shaped models
use features of a lightly smoothed copy of the data instead (height, position, width at
half height). Every loop and grid here has a fixed size.
"""

from __future__ import annotations

import numpy as np

MAX_POINTS = 2000  # guesses look at an evenly spaced subsample of at most this many points
COARSE_POINTS = 400  # coarse 2-D grids look at fewer still; the refinement uses MAX_POINTS


def sorted_1d(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """1-D data sorted by x, thinned to at most ``max_points`` (every k-th point)."""
    if x.ndim != 1:
        raise ValueError("this model expects 1-D x")
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    if x.size > max_points:
        step = -(-x.size // max_points)  # a fixed stride keeps uniformly sampled data uniform (FFT path)
        x, y = x[::step], y[::step]
    return x, y


def smooth(y: np.ndarray, width: int | None = None) -> np.ndarray:
    """Moving average over ``width`` points (default ~2% of the points), edges renormalised."""
    n = y.size
    w = max(1, n // 50) if width is None else max(1, int(width))
    if w <= 1 or n < 3:
        return y.copy()
    w = min(w | 1, n if n % 2 else n - 1)
    kernel = np.ones(w)
    return np.convolve(y, kernel, mode="same") / np.convolve(np.ones(n), kernel, mode="same")


def span(x: np.ndarray) -> float:
    s = float(np.ptp(x)) if x.size else 0.0
    return s if s > 0 else 1.0


def lstsq_offset(G: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each row ``g`` of ``G`` (candidates x points) the best ``a g + c``: returns a, c, SSR.

    Closed form: :math:`a = \\mathrm{cov}(g, y) / \\mathrm{var}(g)`, :math:`c = \\bar y - a \\bar g`,
    :math:`SSR = n\\,(\\mathrm{var}(y) - \\mathrm{cov}^2/\\mathrm{var}(g))`. Rows that are
    non-finite or constant get SSR = inf.
    """
    gm = G.mean(axis=1, keepdims=True)
    Gc = G - gm
    yc = y - y.mean()
    var = (Gc * Gc).sum(axis=1)
    cov = Gc @ yc
    ok = np.isfinite(var) & np.isfinite(cov) & (var > 1e-300)
    a = np.where(ok, cov / np.where(ok, var, 1.0), 0.0)
    c = y.mean() - a * gm[:, 0]
    ssr = np.where(ok, (yc @ yc) - a * cov, np.inf)
    return a, c, np.where(np.isfinite(ssr), ssr, np.inf)


def lstsq_scale(G: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row ``g`` of ``G`` the best ``a g`` (no offset): returns a, SSR."""
    gg = (G * G).sum(axis=1)
    gy = G @ y
    ok = np.isfinite(gg) & np.isfinite(gy) & (gg > 1e-300)
    a = np.where(ok, gy / np.where(ok, gg, 1.0), 0.0)
    ssr = np.where(ok, y @ y - a * gy, np.inf)
    return a, ssr


def lstsq_columns(cols: list[np.ndarray], y: np.ndarray) -> tuple[np.ndarray, float]:
    """Ordinary least squares on a few columns: coefficients and SSR (inf when ill-posed)."""
    A = np.stack(cols, axis=1)
    if not np.all(np.isfinite(A)):
        return np.zeros(len(cols)), np.inf
    scale = np.sqrt((A * A).sum(axis=0))
    scale = np.where(scale > 0, scale, 1.0)
    coef, *_ = np.linalg.lstsq(A / scale, y, rcond=None)
    coef = coef / scale
    r = y - A @ coef
    return coef, float(r @ r)


def refine_log_grid(best: float, ratio: float, n: int = 21) -> np.ndarray:
    """A finer log-spaced grid around ``best`` covering one coarse step either side."""
    return best * np.logspace(-np.log10(ratio), np.log10(ratio), n)


def peak_features(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """Signed height above the baseline, position, full width at half height, baseline.

    The baseline is a low percentile of the smoothed data (high for a dip); the half-height
    crossings are searched outwards from the extremum and linearly interpolated; the width is
    twice the narrower half width. When a side has no crossing (peak at the edge) the other
    side's half width is mirrored.
    """
    xs, ys = sorted_1d(x, y)
    n = xs.size
    s = smooth(ys)
    med = float(np.median(s))
    sign = 1.0 if (s.max() - med) >= (med - s.min()) else -1.0
    base = float(np.percentile(s, 10 if sign > 0 else 90))
    h = sign * (s - base)
    i = int(np.argmax(h))
    height = float(h[i])
    center = float(xs[i])
    if not height > 0 or n < 3:
        return sign * max(height, 0.0), center, span(xs) / 4, base
    half = height / 2
    left = right = None
    j = i
    while j > 0 and h[j] > half:  # bounded by i steps
        j -= 1
    if h[j] <= half and j < i:
        left = xs[j] + (half - h[j]) * (xs[j + 1] - xs[j]) / (h[j + 1] - h[j])
    j = i
    while j < n - 1 and h[j] > half:  # bounded by n - i steps
        j += 1
    if h[j] <= half and j > i:
        right = xs[j - 1] + (h[j - 1] - half) * (xs[j] - xs[j - 1]) / (h[j - 1] - h[j])
    if left is None and right is None:
        fwhm = span(xs) / 2
    elif left is None:
        fwhm = 2 * (right - center)
    elif right is None:
        fwhm = 2 * (center - left)
    else:
        # The narrower side: a blended neighbour widens one side only (NIST Gauss3).
        fwhm = 2 * min(right - center, center - left)
    min_width = 2 * float(np.min(np.diff(xs)[np.diff(xs) > 0], initial=span(xs) / max(n, 1)))
    return sign * height, center, max(float(fwhm), min_width), base


def dominant_frequency(x: np.ndarray, y: np.ndarray) -> float:
    """The frequency (cycles per unit x) with the largest periodogram power.

    Uniformly sampled data use a zero-padded FFT; otherwise the Schuster periodogram
    :math:`P(f) = |\\sum_i y_i e^{-2\\pi i f x_i}|^2` on a grid up to the mean Nyquist rate.
    Both are refined on a fine grid around the peak.
    """
    xs, ys = sorted_1d(x, y, max_points=2048)
    yc = ys - ys.mean()
    n, T = xs.size, span(xs)
    dx = np.diff(xs)
    if n >= 8 and np.all(dx > 0) and np.ptp(dx) <= 1e-6 * dx.mean():
        m = 8 * n
        power = np.abs(np.fft.rfft(yc, m)) ** 2
        freqs = np.fft.rfftfreq(m, d=dx.mean())
        power[0] = 0.0
        f0 = float(freqs[int(np.argmax(power))])
    else:
        fmax = 0.5 * n / T
        freqs = np.linspace(0.5 / T, fmax, int(min(2048, max(64, 4 * n))))
        power = np.abs(np.exp(-2j * np.pi * np.outer(freqs, xs)) @ yc) ** 2
        f0 = float(freqs[int(np.argmax(power))])
    df = 1.0 / (4 * T)
    fine = np.linspace(max(f0 - df, 1e-12), f0 + df, 41)
    power = np.abs(np.exp(-2j * np.pi * np.outer(fine, xs)) @ yc) ** 2
    return float(fine[int(np.argmax(power))])
