"""The fit plot: PNG bytes with a smooth fitted curve, multi-feature x plotted against x[0]."""

import numpy as np
import pytest

from flows.plotting import render_fit_png

pytest.importorskip("matplotlib")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_png_with_a_dense_curve():
    rng = np.random.default_rng(0)
    x = np.sort(rng.uniform(0, 10, 300))
    f = lambda t: 2 * np.exp(-0.5 * t) + 0.3  # noqa: E731
    y = f(x) + rng.normal(0, 0.05, x.size)
    grid = np.linspace(0, 10, 600)
    png = render_fit_png(x, y, f(x), "exp", curve=(grid, f(grid)))
    assert png.startswith(PNG_MAGIC) and len(png) > 5000


def test_png_for_two_feature_x():
    x = np.vstack([np.linspace(0, 1, 50), np.linspace(1, 2, 50)])
    y = x[0] + x[1]
    assert render_fit_png(x, y, y, "plane").startswith(PNG_MAGIC)
