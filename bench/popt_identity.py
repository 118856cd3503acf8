"""Record, then compare, popt of a fixed set of fits through the public front doors.

A structural change (planning, registry, result plumbing) must change no number:

    python bench/popt_identity.py record /tmp/popt_before.npz   # at the start commit
    python bench/popt_identity.py compare /tmp/popt_before.npz  # after the change

``compare`` prints one line per case and exits 1 unless every popt (and pcov) is
bit-identical. The cases cross the three strategies with sigma (1-D, covariance),
bounds, robust losses, 2-D x, multi-start, the QUALITY pass and a preset.
"""

from __future__ import annotations

import sys

import jax.numpy as jnp
import numpy as np

from nlsq_tasks import curve_fit, fit, fit_source
from nlsq_tasks.engine import ArrayChunkSource


def decay(x, a, b, c):
    return a * jnp.exp(-b * x) + c


def plane(X, a, b, c):
    return a * jnp.exp(-b * X[0]) + c * X[1]


def cases():
    rng = np.random.default_rng(0)
    n = 5000
    x = np.linspace(0.0, 5.0, n)
    y = 2.0 * np.exp(-1.3 * x) + 0.5 + 0.05 * rng.standard_normal(n)
    s = 0.05 + 0.01 * rng.random(n)
    X = np.vstack([x, rng.random(n)])
    Y = 2.0 * np.exp(-1.3 * X[0]) + 0.7 * X[1] + 0.05 * rng.standard_normal(n)
    yo = y.copy()
    yo[::50] += 3.0  # outliers for the robust losses
    m = 200
    xc = np.linspace(0, 4, m)
    cov = 0.01 * np.exp(-np.abs(xc[:, None] - xc[None, :]) / 0.3) + 1e-4 * np.eye(m)
    yc = 2.0 * np.exp(-1.3 * xc) + 0.5 + np.linalg.cholesky(cov) @ rng.standard_normal(m)
    xg = np.linspace(-5, 5, 3000)
    yg = 3.0 * np.exp(-((xg - 0.4) ** 2) / (2 * 0.8**2)) + 0.02 * rng.standard_normal(3000)
    p0 = [1.0, 1.0, 0.0]
    yield "standard", lambda: fit(decay, x, y, p0=p0)
    yield "standard_sigma", lambda: fit(decay, x, y, p0=p0, sigma=s, absolute_sigma=True)
    yield "standard_bounds", lambda: fit(decay, x, y, p0=p0, bounds=([0, 0, -1], [5, 1.2, 1]))
    yield "builtin_gaussian", lambda: fit("gaussian", xg, yg)
    yield "expression", lambda: fit("a*exp(-b*x)+c", x, y, p0=p0)
    yield "chunked", lambda: fit(decay, x, y, p0=p0, strategy="chunked", chunk_size=1000)
    yield "chunked_sigma", lambda: fit(decay, x, y, p0=p0, sigma=s, strategy="chunked", chunk_size=1500)
    yield "streaming", lambda: fit(decay, x, y, p0=p0, strategy="streaming", chunk_size=1000)
    yield "fit_source", lambda: fit_source(decay, ArrayChunkSource(x, y, s, chunk_size=1000), p0=p0,
                                           strategy="streaming")
    yield "fit_source_small", lambda: fit_source(decay, ArrayChunkSource(x, y, None, chunk_size=1000), p0=p0)
    yield "plane_2d", lambda: fit(plane, X, Y, p0=p0)
    yield "plane_2d_chunked", lambda: fit(plane, X, Y, p0=p0, strategy="chunked", chunk_size=1000)
    for loss in ("soft_l1", "huber", "cauchy", "arctan"):
        yield f"loss_{loss}", lambda loss=loss: fit(decay, x, yo, p0=p0, loss=loss, f_scale=0.1)
    yield "streaming_huber", lambda: fit(decay, x, yo, p0=p0, loss="huber", strategy="streaming", chunk_size=1000)
    yield "covariance", lambda: fit(decay, xc, yc, p0=p0, sigma=cov)
    yield "covariance_multistart", lambda: fit(decay, xc, yc, p0=p0, sigma=cov, n_starts=4)
    yield "multistart", lambda: fit(decay, x, y, p0=p0, n_starts=6, seed=3)
    yield "multistart_chunked", lambda: fit(decay, x, y, p0=p0, n_starts=4, strategy="chunked", chunk_size=1000)
    yield "multistart_streaming", lambda: fit(decay, x, y, p0=p0, n_starts=3, strategy="streaming", chunk_size=1000)
    yield "goal_quality", lambda: fit(decay, x, y, p0=p0, goal="quality")
    yield "goal_robust", lambda: fit(decay, x, yo, p0=p0, goal="robust")
    yield "preset_fast", lambda: fit(decay, x, y, p0=p0, workflow="fast")
    yield "preset_quality", lambda: fit(decay, x, y, p0=p0, workflow="quality")
    yield "curve_fit", lambda: curve_fit(decay, x, y, p0=p0)
    yield "curve_fit_lm", lambda: curve_fit(decay, x, y, p0=p0, method="lm", sigma=s)


def run() -> dict[str, np.ndarray]:
    out = {}
    for name, make in cases():
        r = make()
        popt, pcov = (r[0], r[1]) if isinstance(r, tuple) else (r.popt, r.pcov)
        out[name + ":popt"] = np.asarray(popt)
        out[name + ":pcov"] = np.asarray(pcov)
        print(f"{name:<24} {np.asarray(popt)}", flush=True)
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("record", "compare"):
        print(__doc__)
        return 2
    got = run()
    if argv[1] == "record":
        np.savez(argv[2], **got)
        print(f"recorded {len(got) // 2} cases in {argv[2]}")
        return 0
    want = dict(np.load(argv[2]))
    bad = [k for k in want if k not in got or not np.array_equal(want[k], got[k], equal_nan=True)]
    missing = sorted(set(got) - set(want))
    for k in bad:
        print(f"DIFFERENT {k}: before {want[k].ravel()[:4]} after {got.get(k, np.array([])).ravel()[:4]}")
    print(f"{len(want) // 2} cases compared: {len(bad)} different, {len(missing)} new")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
