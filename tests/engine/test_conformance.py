"""Conformance suite: every strategy crossed with every capability, in SciPy's mixin style.

Each capability is a mixin; one test class per strategy is generated from the library's
own list of strategies, so a new strategy is tested by every mixin without a line here.
What a strategy must do is what the standard strategy does: same minimum, same error
bars, same statuses, same validation checks, the same progress event shape. A
capability a strategy does not have (a covariance ``sigma``; checkpoint/resume) must be
refused with an error naming the argument, or is skipped with the reason.

The pass interface has its own axis: every host executor (chunks evaluated anywhere,
partials yielded in chunk order) must give the streaming fit bit-identically.

Small problems (2,500 points, 1,000-point chunks, the shared models of ``_api_cases`` so
that compiled solvers are reused across test files) keep it fast.
"""

from __future__ import annotations

import concurrent.futures as cf

import dataclasses

import numpy as np
import pytest

from nlsq_tasks import fit, plan_fit
from nlsq_tasks._validate import FitInputError
from nlsq_tasks.engine.checkpoint import MemoryCheckpointSink
from nlsq_tasks.engine.loss import loss_names
from nlsq_tasks.engine.passes import ChunkPartial, SourceExecutor
from nlsq_tasks.workflow import Strategy

from _api_cases import CHUNK, TIGHT, decay, decay_data  # noqa: E402  (tests/engine is on sys.path)


def registered_strategies() -> list[str]:
    """The strategies the library offers (the registry, when there is one; else the enum)."""
    try:
        from nlsq_tasks.strategies import strategy_names

        return list(strategy_names())
    except ImportError:
        return [s.value for s in Strategy]


# What only some strategies can do (the rest must refuse clearly or are skipped).
COVARIANCE_SIGMA = {"standard"}
RESUMABLE = {"streaming"}
EVENT_KEYS = {"phase", "pass", "chunk", "n_chunks", "cost", "nit"}
P0 = [1.0, 1.0, 0.0]


class Interrupted(RuntimeError):
    pass


def _kw(strategy: str) -> dict:
    return {} if strategy == "standard" else {"chunk_size": CHUNK}


def _close(res, ref, rtol=1e-7):
    assert res.status == ref.status or (res.success and ref.success), (res.status, ref.status)
    np.testing.assert_allclose(res.popt, ref.popt, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(np.sqrt(np.diag(res.pcov)), np.sqrt(np.diag(ref.pcov)), rtol=1e-5)


class _Strategy:
    strategy: str

    def run(self, f, x, y, **kw):
        kw.setdefault("p0", P0)
        res = fit(f, x, y, strategy=self.strategy, **_kw(self.strategy), **TIGHT, **kw)
        assert res.strategy == self.strategy
        return res

    def reference(self, f, x, y, **kw):
        kw.setdefault("p0", P0)
        return fit(f, x, y, strategy="standard", **TIGHT, **kw)


class BoundsMixin:
    def test_bounds(self):
        x, y = decay_data()
        bounds = ([0.0, 0.0, 0.0], [10.0, 5.0, 0.45])  # c's optimum (0.5) is outside: c ends on 0.45
        res = self.run(decay, x, y, bounds=bounds)
        assert res.success, res.message
        assert res.active_bounds.tolist() == [0, 0, 1]
        _close(res, self.reference(decay, x, y, bounds=bounds))


class Sigma1DMixin:
    def test_sigma_1d(self):
        x, y = decay_data()
        sigma = 0.02 + 0.1 * x / x.max()
        res = self.run(decay, x, y, sigma=sigma, absolute_sigma=True)
        assert res.success, res.message
        _close(res, self.reference(decay, x, y, sigma=sigma, absolute_sigma=True))


class Sigma2DMixin:
    def test_sigma_covariance(self):
        n = 400
        x, y = decay_data(n=n, seed=5)
        i = np.arange(n)
        cov = 0.05**2 * 0.6 ** np.abs(i[:, None] - i[None, :])
        if self.strategy not in COVARIANCE_SIGMA:
            with pytest.raises(FitInputError, match="covariance") as err:
                self.run(decay, x, y, sigma=cov)
            assert err.value.field == "sigma"
            return
        res = self.run(decay, x, y, sigma=cov)
        assert res.success, res.message
        _close(res, self.reference(decay, x, y, sigma=cov))


class LossMixin:
    @pytest.mark.parametrize("loss", [name for name in loss_names() if name != "linear"])
    def test_robust_loss(self, loss):
        x, y = decay_data()
        y = y.copy()
        y[::97] += 3.0  # outliers
        res = self.run(decay, x, y, loss=loss, f_scale=0.1)
        assert res.success and res.loss == loss
        ref = self.reference(decay, x, y, loss=loss, f_scale=0.1)
        _close(res, ref)
        assert res.cost == pytest.approx(ref.cost, rel=1e-10)


class MultiStartMixin:
    def test_multistart(self):
        x, y = decay_data()
        res = self.run(decay, x, y, n_starts=3, seed=1)
        assert len(res.starts) == 3
        assert res.success, res.message
        _close(res, self.reference(decay, x, y))


class ValidationMixin:
    def test_validation_passes_a_good_fit(self):
        x, y = decay_data()
        res = self.run(decay, x, y, validate=True)
        ref = self.reference(decay, x, y, validate=True)
        assert res.validation is not None
        assert res.validation.passed, str(res.validation)
        assert [c.name for c in res.validation.checks] == [c.name for c in ref.validation.checks]

    def test_validation_fails_a_wrong_model(self):
        x = np.linspace(0.0, 5.0, 2500)
        y = np.sin(2.0 * x) + 0.01 * np.random.default_rng(0).standard_normal(x.size)
        res = self.run(decay, x, y, validate=True)  # a decay cannot follow a sine
        assert not res.validation.passed
        assert not res.validation["residual_runs"].passed


class ProgressMixin:
    def test_progress_events(self):
        x, y = decay_data()
        events = []
        res = self.run(decay, x, y, progress=events.append)
        assert len(events) >= 2
        for e in events:
            assert EVENT_KEYS <= set(e), e
            assert 0 <= e["chunk"] < e["n_chunks"]
        finite = [e["cost"] for e in events if np.isfinite(e["cost"])]
        assert finite and finite[-1] == pytest.approx(res.cost, rel=1e-12)
        assert events[-1]["nit"] == res.nit


class ResumeMixin:
    def test_interrupted_fit_resumes_bit_identically(self):
        if self.strategy not in RESUMABLE:
            pytest.skip(f"strategy {self.strategy!r} is not checkpointed (one compiled loop)")
        x, y = decay_data()
        # A cold start (no in-memory warm start on a subsample, which for these 2,500
        # points is the whole data and ends at the minimum): the fit takes several passes.
        plan = plan_fit(decay, n_points=len(y), strategy=self.strategy, **_kw(self.strategy), **TIGHT)
        plan = dataclasses.replace(plan, config={**plan.config, "warm_start": False})

        def run(**kw):
            return fit(decay, x, y, p0=P0, plan=plan, **kw)

        ref_events = []
        ref = run(checkpoint=MemoryCheckpointSink(), progress=ref_events.append)
        assert ref.checkpoints["passes"] >= 3, ref.checkpoints
        sink = MemoryCheckpointSink()
        seen = []

        def stop_midway(event):
            seen.append(event)
            if len(seen) == 7:  # in pass 2, mid-pass
                raise Interrupted("stop")

        with pytest.raises(Interrupted):
            run(checkpoint=sink, progress=stop_midway)
        assert sink.saved
        res = run(checkpoint=sink)
        assert res.checkpoints["resumed"]
        np.testing.assert_array_equal(res.popt, ref.popt)
        assert (res.cost, res.nfev, res.nit) == (ref.cost, ref.nfev, ref.nit)


CAPABILITIES = (BoundsMixin, Sigma1DMixin, Sigma2DMixin, LossMixin, MultiStartMixin, ValidationMixin, ProgressMixin,
                ResumeMixin)

for _name in registered_strategies():
    _cls = f"Test{_name.title().replace('_', '')}"
    globals()[_cls] = type(_cls, (_Strategy, *CAPABILITIES), {"strategy": _name})


# -- the host executor axis -----------------------------------------------------------------
class OutOfOrderExecutor(SourceExecutor):
    """Evaluates all chunks of a pass on a thread pool, last chunk first, and yields them in
    chunk order: what a cluster executor does when workers finish in any order."""

    def partials(self, params_stack, start=0, y_moments=False):
        params_stack = np.atleast_2d(np.asarray(params_stack, np.float64))
        chunks = list(enumerate(self.source.chunks(start), start=start))
        with cf.ThreadPoolExecutor(max_workers=2) as pool:
            futures = {j: pool.submit(self.chunk_partial, params_stack, ch, y_moments) for j, ch in reversed(chunks)}
            for j, _ in chunks:
                k, value, mom = futures[j].result()
                yield ChunkPartial(j, k, value, mom)


HOST_EXECUTORS = {"in-process": SourceExecutor, "out-of-order": OutOfOrderExecutor}


@pytest.mark.parametrize("name", sorted(HOST_EXECUTORS))
def test_host_executors_give_bit_identical_streaming_fits(name):
    from _streaming_helpers import NAMES, OPTIONS, Config, exp_decay, exp_problem
    from nlsq_tasks.engine.sources import ArrayChunkSource
    from nlsq_tasks.engine.streaming import run_streaming

    x, y, sigma, p0, lower, upper = exp_problem(n=3000)
    src = ArrayChunkSource(x, y, sigma, chunk_size=700)
    ref = run_streaming(exp_decay, src, p0, lower, upper, OPTIONS, NAMES, config=Config())
    res = run_streaming(exp_decay, src, p0, lower, upper, OPTIONS, NAMES, config=Config(),
                        executor=HOST_EXECUTORS[name])
    np.testing.assert_array_equal(res.popt, ref.popt)
    assert (res.cost, res.nfev, res.stats.sst) == (ref.cost, ref.nfev, ref.stats.sst)
