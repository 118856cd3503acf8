"""fit_global equals the same model written out by hand as one concatenated fit."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from nlsq_tasks import fit, fit_global


def decay(x, a, b, c):
    return a * jnp.exp(-b * x) + c


def _sets(seed=0):
    """Three decays with one common rate b, different amplitudes and offsets, ragged lengths."""
    rng = np.random.default_rng(seed)
    out = []
    for n, a, c in ((40, 2.0, 0.3), (65, 1.2, -0.1), (31, 3.1, 0.8)):
        x = np.sort(rng.uniform(0, 5, n))
        y = a * np.exp(-0.7 * x) + c + 0.02 * rng.standard_normal(n)
        out.append((x, y, np.full(n, 0.02)))
    return out


def concatenated(x2, b, a0, c0, a1, c1, a2, c2):
    """The same model by hand: x2[0] is x, x2[1] the set index."""
    x, k = x2[0], x2[1]
    a = jnp.where(k == 0, a0, jnp.where(k == 1, a1, a2))
    c = jnp.where(k == 0, c0, jnp.where(k == 1, c1, c2))
    return a * jnp.exp(-b * x) + c


def test_global_fit_equals_the_concatenated_fit():
    sets = _sets()
    theta0 = np.array([1.0, 1.5, 0.0, 1.0, 0.0, 2.0, 0.5])  # b, then (a, c) per set
    g = fit_global(decay, sets, shared=["b"], p0=theta0)
    assert g.param_names == ["b", "a[0]", "c[0]", "a[1]", "c[1]", "a[2]", "c[2]"]

    x2 = np.concatenate([np.stack([x, np.full(x.size, i, float)]) for i, (x, _, _) in enumerate(sets)], axis=1)
    y = np.concatenate([s[1] for s in sets])
    sigma = np.concatenate([s[2] for s in sets])
    by_hand = fit(concatenated, x2, y, p0=theta0, sigma=sigma)

    assert g.success and by_hand.success
    np.testing.assert_allclose(g.popt, by_hand.popt, rtol=1e-10)
    np.testing.assert_allclose(g.pcov, by_hand.pcov, rtol=1e-8, atol=1e-14 * np.abs(by_hand.pcov).max())
    assert g.nfev == by_hand.nfev and g.n_points == by_hand.n_points == 136
    np.testing.assert_allclose([g.chi2, g.r2], [by_hand.chi2, by_hand.r2], rtol=1e-10)
    assert abs(g.popt[0] - 0.7) < 0.05
    # the shared rate is correlated with the per-set parameters: the covariance keeps it
    assert np.abs(g.correlation[0, 1:]).max() > 0.1, g.correlation[0]

    vals, errs = g.per_set()
    assert vals.shape == (3, 2) and np.allclose(vals[:, 0], g.popt[[1, 3, 5]])
    assert set(g.shared()) == {"b"}
    text = g.report()
    assert "[[Shared parameters]]" in text and "[[Per-set parameters]] (3 sets)" in text


def test_global_fit_from_guesses_and_bad_shared_name():
    sets = [(x, y) for x, y, _ in _sets(seed=2)]
    g = fit_global("exponential_decay", sets, shared=["rate"])  # parameters: amplitude, rate, offset
    assert g.success and abs(g.shared()["rate"][0] - 0.7) < 0.05
    with pytest.raises(ValueError, match="shared") as e:
        fit_global(decay, sets, shared=["nope"])
    assert e.value.field == "shared"
