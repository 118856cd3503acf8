"""fit() and fit_source(): results against SciPy across strategies and capabilities, and
the routing decisions the front door records on the result.

The matrix follows SciPy's ``optimize/tests/test_lsq_*`` layout: one mixin per
capability, crossed with one class per strategy, each case compared with
``scipy.optimize.curve_fit(method='trf')`` (popt to 1e-6 relative, pcov to 1e-4 of the
parameter errors).
"""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

scipy_optimize = pytest.importorskip("scipy.optimize")

from nlsq_tasks import FitResult, fit, fit_source  # noqa: E402
from nlsq_tasks.engine.checkpoint import MemoryCheckpointSink  # noqa: E402
from nlsq_tasks.engine.sources import ArrayChunkSource  # noqa: E402

from _api_cases import CHUNK, N, TIGHT, decay, decay_data, decay_np, plane, plane_np  # noqa: E402


def assert_matches(res: FitResult, popt, pcov):
    np.testing.assert_allclose(res.popt, popt, rtol=1e-6, atol=1e-12)
    d = np.sqrt(np.outer(np.diag(pcov), np.diag(pcov)))
    # pcov to 1e-4 of the errors: diagonal relative, off-diagonal as correlation differences
    np.testing.assert_allclose(np.diag(res.pcov), np.diag(pcov), rtol=1e-4)
    assert np.max(np.abs(res.pcov - pcov) / d) < 1e-4


# -- the capability x strategy matrix ------------------------------------------------------
class _Strategy:
    strategy: str

    def run(self, f, x, y, p0, **kw):
        extra = {} if self.strategy == "standard" else {"chunk_size": CHUNK}
        res = fit(f, x, y, p0=p0, strategy=self.strategy, **extra, **TIGHT, **kw)
        assert res.strategy == self.strategy
        assert res.success, res.message
        return res


class BoundsMixin:
    def test_bounds(self):
        x, y = decay_data()
        bounds = ([0.0, 0.0, 0.0], [10.0, 5.0, 0.45])  # c's optimum (0.5) lies outside: c sits on 0.45
        res = self.run(decay, x, y, [1.0, 1.0, 0.1], bounds=bounds)
        assert res.active_bounds.tolist() == [0, 0, 1]
        assert_matches(res, *scipy_optimize.curve_fit(decay_np, x, y, p0=[1.0, 1.0, 0.1], bounds=bounds, method="trf", **TIGHT))


class Sigma1DMixin:
    def test_sigma_1d(self):
        x, y = decay_data()
        sigma = 0.02 + 0.1 * x / x.max()
        res = self.run(decay, x, y, [1.0, 1.0, 0.0], sigma=sigma)
        assert_matches(res, *scipy_optimize.curve_fit(decay_np, x, y, p0=[1.0, 1.0, 0.0], sigma=sigma, method="trf", **TIGHT))


class AbsoluteSigmaMixin:
    def test_absolute_sigma(self):
        x, y = decay_data()
        sigma = np.full_like(x, 0.05)
        res = self.run(decay, x, y, [1.0, 1.0, 0.0], sigma=sigma, absolute_sigma=True)
        popt, pcov = scipy_optimize.curve_fit(
            decay_np, x, y, p0=[1.0, 1.0, 0.0], sigma=sigma, absolute_sigma=True, method="trf", **TIGHT
        )
        assert_matches(res, popt, pcov)
        rel = fit(decay, x, y, p0=[1.0, 1.0, 0.0], sigma=sigma, strategy=self.strategy,
                  **({} if self.strategy == "standard" else {"chunk_size": CHUNK}), **TIGHT)
        # relative sigma rescales pcov by the reduced chi-square
        np.testing.assert_allclose(rel.pcov, res.pcov * res.redchi, rtol=1e-6)


class LossMixin:
    def test_robust_loss(self):
        x, y = decay_data()
        y = y.copy()
        y[::97] += 3.0  # outliers
        kw = {"loss": "soft_l1", "f_scale": 0.1}
        res = self.run(decay, x, y, [1.0, 1.0, 0.0], **kw)
        assert res.loss == "soft_l1"
        assert_matches(res, *scipy_optimize.curve_fit(decay_np, x, y, p0=[1.0, 1.0, 0.0], method="trf", **kw, **TIGHT))


class MultiFeatureMixin:
    def test_multi_feature_x(self):
        rng = np.random.default_rng(3)
        X = np.stack([np.linspace(0.0, 5.0, N), rng.uniform(-1.0, 1.0, N)])
        y = plane_np(X, 2.0, 1.3, 0.7) + 0.05 * rng.standard_normal(N)
        res = self.run(plane, X, y, [1.0, 1.0, 0.0])
        assert_matches(res, *scipy_optimize.curve_fit(plane_np, X, y, p0=[1.0, 1.0, 0.0], method="trf", **TIGHT))


class Sigma2DMixin:
    def test_sigma_covariance(self):
        n = 400
        x, y = decay_data(n=n, seed=5)
        i = np.arange(n)
        cov = 0.05**2 * 0.6 ** np.abs(i[:, None] - i[None, :])  # AR(1) correlated noise
        res = self.run(decay, x, y, [1.0, 1.0, 0.0], sigma=cov)
        assert_matches(res, *scipy_optimize.curve_fit(decay_np, x, y, p0=[1.0, 1.0, 0.0], sigma=cov, method="trf", **TIGHT))
        # statistics stay in the data's units: ssr is the plain sum of squared residuals
        f = decay_np(x, *res.popt)
        np.testing.assert_allclose(res.stats.ssr, np.sum((y - f) ** 2), rtol=1e-10)


def test_covariance_with_multistart_and_validation():
    """Multi-start and the validation pass see the covariance problem whitened."""
    n = 400
    x, y = decay_data(n=n, seed=5)
    i = np.arange(n)
    cov = 0.05**2 * 0.6 ** np.abs(i[:, None] - i[None, :])
    single = fit(decay, x, y, p0=[1.0, 1.0, 0.0], sigma=cov, **TIGHT)
    res = fit(decay, x, y, p0=[1.0, 1.0, 0.0], sigma=cov, n_starts=3, validate=True, **TIGHT)
    assert len(res.starts) == 3
    np.testing.assert_allclose(res.popt, single.popt, rtol=1e-7)
    np.testing.assert_allclose(res.pcov, single.pcov, rtol=1e-6)
    np.testing.assert_allclose(res.stats.ssr, single.stats.ssr, rtol=1e-8)
    assert res.validation is not None
    assert res.validation["perturbed_refits"].passed, str(res.validation)


class TestStandard(_Strategy, BoundsMixin, Sigma1DMixin, AbsoluteSigmaMixin, LossMixin, MultiFeatureMixin, Sigma2DMixin):
    strategy = "standard"


class TestChunked(_Strategy, BoundsMixin, Sigma1DMixin, AbsoluteSigmaMixin, LossMixin, MultiFeatureMixin):
    strategy = "chunked"


class TestStreaming(_Strategy, BoundsMixin, Sigma1DMixin, AbsoluteSigmaMixin, LossMixin, MultiFeatureMixin):
    strategy = "streaming"


# -- routing -------------------------------------------------------------------------------
def test_auto_routing_is_recorded():
    x, y = decay_data()
    res = fit(decay, x, y, p0=[1.0, 1.0, 0.0])
    assert res.strategy == "standard"
    assert res.workflow == "auto"
    assert "everything fits" in res.strategy_reason
    assert {"available_gb", "threshold_gb", "data_gb", "jacobian_gb", "peak_gb"} <= set(res.budget)
    assert res.tolerances == {"ftol": 1e-10, "xtol": 1e-10, "gtol": 1e-10}  # SMALL tier (1e3 <= n < 1e4)
    assert res.timings["total"] >= res.timings["prepare"] > 0


def test_small_memory_limit_forces_chunked_then_streaming():
    x, y = decay_data()
    ref = fit(decay, x, y, p0=[1.0, 1.0, 0.0], **TIGHT)
    # 0.01 GB: threshold 7.5 MB holds the data (40 kB) but not the solver's peak (> 64 MB) -> chunked
    chunked = fit(decay, x, y, p0=[1.0, 1.0, 0.0], memory_limit_gb=0.01, **TIGHT)
    assert chunked.strategy == "chunked"
    assert "the Jacobian does not fit" in chunked.strategy_reason
    assert chunked.budget["fits_in_memory"] is False and chunked.budget["data_fits"] is True
    # 1e-5 GB: threshold 8 kB, the data themselves do not fit -> streaming
    streamed = fit(decay, x, y, p0=[1.0, 1.0, 0.0], memory_limit_gb=1e-5, **TIGHT)
    assert streamed.strategy == "streaming"
    assert "the data do not fit" in streamed.strategy_reason
    for res in (chunked, streamed):
        np.testing.assert_allclose(res.popt, ref.popt, rtol=1e-7)


def test_presets_set_strategy_and_tolerances():
    x, y = decay_data()
    res = fit(decay, x, y, p0=[1.0, 1.0, 0.0], workflow="fast")
    assert (res.workflow, res.strategy, res.goal) == ("fast", "standard", "fast")
    assert res.tolerances == {"ftol": 1e-6, "xtol": 1e-6, "gtol": 1e-6}
    assert "preset 'fast'" in res.strategy_reason
    # an explicit tolerance beats the preset's
    res = fit(decay, x, y, p0=[1.0, 1.0, 0.0], workflow="fast", ftol=1e-9)
    assert res.tolerances == {"ftol": 1e-9, "xtol": 1e-6, "gtol": 1e-6}


def test_preset_yaml_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nstrategy: chunked\ntolerance: 1.0e-9\nchunk_size: 1000\n")
    x, y = decay_data()
    res = fit(decay, x, y, p0=[1.0, 1.0, 0.0], workflow=str(path))
    assert (res.workflow, res.strategy) == ("mine", "chunked")
    assert res.tolerances["ftol"] == 1e-9


def test_goal_sets_adaptive_tolerances_case_insensitively():
    x, y = decay_data()
    res = fit(decay, x, y, p0=[1.0, 1.0, 0.0], goal="FAST")
    assert res.goal == "fast"
    assert res.tolerances["gtol"] == 1e-9  # one tier looser than SMALL's 1e-10


def test_global_goal_is_robust_with_multistart():
    x, y = decay_data()
    res = fit(decay, x, y, p0=[1.0, 1.0, 0.0], goal="global", n_starts=4, seed=1)
    assert res.goal == "robust"
    assert len(res.starts) == 4
    assert "multi-start" in res.strategy_reason
    single = fit(decay, x, y, p0=[1.0, 1.0, 0.0], **TIGHT)
    np.testing.assert_allclose(res.popt, single.popt, rtol=1e-6)


def test_chunked_multistart_screens_then_refines():
    x, y = decay_data()
    res = fit(decay, x, y, p0=[1.0, 1.0, 0.0], strategy="chunked", chunk_size=CHUNK, n_starts=4, seed=1, **TIGHT)
    assert res.strategy == "chunked" and len(res.starts) == 4
    assert {s["stage"] for s in res.starts} == {"screen", "full"}
    ref = fit(decay, x, y, p0=[1.0, 1.0, 0.0], **TIGHT)
    np.testing.assert_allclose(res.popt, ref.popt, rtol=1e-6)


def test_in_memory_progress_reports_start_every_iteration_and_done():
    x, y = decay_data()
    events = []
    res = fit(decay, x, y, p0=[1.0, 1.0, 0.0], strategy="chunked", chunk_size=CHUNK, progress=events.append)
    assert [e["phase"] for e in events] == ["start"] + ["pass"] * res.nfev + ["done"]
    assert events[-1]["n_chunks"] == 3 and events[-1]["nit"] == res.nit and events[-1]["cost"] == res.cost


def test_quality_preset_runs_multistart_and_validation():
    x, y = decay_data()
    res = fit(decay, x, y, p0=[1.0, 1.0, 0.0], workflow="quality")
    assert (res.workflow, res.goal, res.strategy) == ("quality", "quality", "standard")
    assert res.tolerances == {"ftol": 1e-10, "xtol": 1e-10, "gtol": 1e-10}
    assert len(res.starts) == 20
    assert res.validation is not None and res.validation.passed, str(res.validation)
    assert "[[Validation]]" in res.report()


def test_multistart_escapes_a_local_minimum():
    # a sine whose frequency from p0=1 converges to a wrong local minimum
    x = np.linspace(0.0, 10.0, 2000)
    y = np.sin(3.1 * x)

    def sine(x, w):
        return jnp.sin(w * x)

    one = fit(sine, x, y, p0=[1.0], bounds=([0.1], [5.0]))
    many = fit(sine, x, y, p0=[1.0], bounds=([0.1], [5.0]), n_starts=16)
    assert abs(many.popt[0] - 3.1) < 1e-6
    assert many.cost < one.cost


def test_validate_attaches_a_report():
    x, y = decay_data()
    res = fit(decay, x, y, p0=[1.0, 1.0, 0.0], validate=True)
    assert res.validation is not None and res.validation.passed, str(res.validation)
    assert "validation" in res.timings
    wrong = fit(lambda x, a, c: a * x + c, x, y, validate=True)  # a line through an exponential
    assert not wrong.validation.passed
    assert any("residual_runs" in r for r in wrong.validation.reasons)


def test_nan_policy_omit_drops_points():
    x, y = decay_data()
    y_bad = y.copy()
    y_bad[[5, 50, 500]] = np.nan
    res = fit(decay, x, y_bad, p0=[1.0, 1.0, 0.0], nan_policy="omit", **TIGHT)
    keep = np.isfinite(y_bad)
    ref = fit(decay, x[keep], y[keep], p0=[1.0, 1.0, 0.0], **TIGHT)
    assert res.n_points == N - 3
    np.testing.assert_allclose(res.popt, ref.popt, rtol=1e-10)
    assert any("dropped 3 point" in w for w in res.warnings)


def test_default_p0_is_ones_for_a_plain_callable():
    x, y = decay_data()
    res = fit(decay, x, y, **TIGHT)
    popt, _ = scipy_optimize.curve_fit(decay_np, x, y, **TIGHT)
    np.testing.assert_allclose(res.popt, popt, rtol=1e-6)


def test_builtin_model_guess_and_default_bounds():
    x, y = decay_data()
    res = fit("exponential", x, y, **TIGHT)  # no p0: the model's guess; no bounds: rate >= 0
    assert res.param_names == ["amplitude", "rate", "offset"]
    assert res.lower.tolist() == [-np.inf, 0.0, -np.inf]
    ref = fit(decay, x, y, p0=[1.0, 1.0, 0.0], **TIGHT)
    np.testing.assert_allclose(res.popt, ref.popt, rtol=1e-6)
    # p0 outside the model's own bounds says where those bounds came from
    from nlsq_tasks._validate import FitInputError

    with pytest.raises(FitInputError, match="model's default bounds"):
        fit("exponential", x, y, p0=[1.0, -1.0, 0.0])


def test_result_unpacks_like_scipy():
    x, y = decay_data()
    popt, pcov = fit(decay, x, y, p0=[1.0, 1.0, 0.0])
    assert popt.shape == (3,) and pcov.shape == (3, 3)


def test_param_names_from_the_signature_appear_in_the_report():
    x, y = decay_data()
    res = fit(decay, x, y, p0=[1.0, 1.0, 0.0])
    assert res.param_names == ["a", "b", "c"]
    assert "strategy:" in res.report() and "b:" in res.report()


# -- fit_source ----------------------------------------------------------------------------
def test_fit_source_in_memory_and_streaming_agree_with_fit():
    x, y = decay_data()
    ref = fit(decay, x, y, p0=[1.0, 1.0, 0.0], **TIGHT)
    src = ArrayChunkSource(x, y, chunk_size=CHUNK)
    small = fit_source(decay, src, p0=[1.0, 1.0, 0.0], **TIGHT)
    assert small.strategy == "standard"  # the selector says the data fit: read once, solve in memory
    events = []
    streamed = fit_source(
        decay, src, p0=[1.0, 1.0, 0.0], memory_limit_gb=1e-5, progress=events.append,
        checkpoint=MemoryCheckpointSink(), **TIGHT,
    )
    assert streamed.strategy == "streaming"
    assert events and {"phase", "pass", "chunk", "n_chunks"} <= set(events[0])
    for res in (small, streamed):
        np.testing.assert_allclose(res.popt, ref.popt, rtol=1e-7)


def test_fit_source_omits_nan_points_out_of_core():
    x, y = decay_data()
    y_bad = y.copy()
    y_bad[[3, 1500, 1501, 2499]] = np.nan
    keep = np.isfinite(y_bad)
    ref = fit(decay, x[keep], y[keep], p0=[1.0, 1.0, 0.0], **TIGHT)
    src = ArrayChunkSource(x, y_bad, chunk_size=CHUNK)
    res = fit_source(decay, src, p0=[1.0, 1.0, 0.0], nan_policy="omit", memory_limit_gb=1e-5, **TIGHT)
    assert res.strategy == "streaming" and res.n_points == N - 4
    assert any("dropped 4 point" in w for w in res.warnings)
    np.testing.assert_allclose(res.popt, ref.popt, rtol=1e-7)


def test_finite_source_rechunks_in_order():
    from nlsq_tasks.api import FiniteSource

    x = np.arange(5500.0)
    y = x.copy()
    y[[0, 999, 1000, 2500]] = np.inf
    src = FiniteSource(ArrayChunkSource(np.stack([x, -x]), y, chunk_size=CHUNK))
    assert (src.n_points, src.omitted, src.n_features) == (5496, 4, 2)
    chunks = list(src.chunks())
    assert [c.y.shape[0] for c in chunks] == [1000] * 5 + [496]
    np.testing.assert_array_equal(np.concatenate([c.y for c in chunks]), y[np.isfinite(y)])
    np.testing.assert_array_equal(np.concatenate([c.x for c in chunks], axis=1)[1], -y[np.isfinite(y)])
    later = list(src.chunks(start=4))  # resuming mid-pass yields the same tail
    assert len(later) == 2 and np.array_equal(later[0].y, chunks[4].y)


def test_fit_source_rejects_a_non_source():
    from nlsq_tasks._validate import FitTypeError

    with pytest.raises(FitTypeError, match="ChunkSource"):
        fit_source(decay, object(), p0=[1.0, 1.0, 0.0])


# -- certified values ----------------------------------------------------------------------
NIST = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "nist"


def _nist(name):
    path = NIST / f"{name}.dat"
    if not path.is_file():
        pytest.skip(f"NIST data not found at {path}")
    lines = path.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip().startswith("Data:") and "y" in ln and "x" in ln)
    data = np.array([[float(v) for v in ln.split()] for ln in lines[start + 1 :] if ln.strip()])
    return data[:, 1], data[:, 0]


def test_nist_misra1a_certified_values_through_an_expression():
    x, y = _nist("Misra1a")
    res = fit("b1*(1-exp(-b2*x))", x, y, p0=[500.0, 1e-4], workflow="standard", ftol=1e-14, xtol=1e-14, gtol=1e-14)
    np.testing.assert_allclose(res.popt, [2.3894212918e02, 5.5015643181e-04], rtol=1e-7)
    np.testing.assert_allclose(res.perr, [2.7070075241e00, 7.2668688436e-06], rtol=1e-5)
    np.testing.assert_allclose(res.stats.ssr, 1.2455138894e-01, rtol=1e-8)
