"""One public planner, plans that run as they are, and results that round-trip through
their summary (nlsq_tasks.plan_fit, fit(plan=), FitResult.from_summary)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _api_cases import CHUNK, TIGHT, decay, decay_data

from nlsq_tasks import FitPlan, FitResult, fit, fit_source, plan_fit
from nlsq_tasks.api import FitInputError
from nlsq_tasks.engine import ArrayChunkSource, MemoryCheckpointSink
from nlsq_tasks.strategies import get_strategy, strategy_names
from nlsq_tasks.workflow import Preset, Strategy

P0 = [1.0, 1.0, 0.0]


def test_every_strategy_list_is_the_registry():
    assert [s.value for s in Strategy] == list(strategy_names())
    assert Preset.model_fields["strategy"].annotation.__args__ == ("auto",) + strategy_names()
    from flows.request import StrategyChoice

    assert [c.value for c in StrategyChoice] == ["auto", *strategy_names()]
    with pytest.raises(FitInputError, match="allowed: 'standard', 'chunked', 'streaming'"):
        plan_fit(n_points=100, n_params=3, strategy="sharded-someday")


def test_plan_round_trips_and_is_what_fit_records():
    x, y = decay_data()
    plan = plan_fit(decay, n_points=y.size, memory_limit_gb=1.0, n_starts=3, strategy="chunked", chunk_size=CHUNK)
    assert plan.n_params == 3 and plan.strategy == "chunked" and plan.executor == "local"
    assert FitPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    decided = fit(decay, x, y, p0=P0, memory_limit_gb=1.0, n_starts=3, strategy="chunked", chunk_size=CHUNK)
    assert decided.strategy_reason == plan.reason and decided.plan == plan.to_dict()
    given = fit(decay, x, y, p0=P0, plan=plan)
    np.testing.assert_array_equal(given.popt, decided.popt)
    assert given.plan == plan.to_dict() and given.strategy == "chunked"


def test_a_given_plan_is_not_decided_again():
    x, y = decay_data()
    # a plan a caller edited on purpose runs as written, although the budget would choose standard
    plan = plan_fit(decay, n_points=y.size, memory_limit_gb=64.0).replace(strategy="streaming", chunk_size=1000)
    res = fit(decay, x, y, p0=P0, plan=plan)
    assert res.strategy == "streaming" and res.checkpoints["passes"] >= 1
    with pytest.raises(FitInputError, match="do not pass strategy, ftol with it"):
        fit(decay, x, y, p0=P0, plan=plan, strategy="chunked", ftol=1e-9)
    with pytest.raises(FitInputError, match="the plan is for 2 parameters but the model has 3"):
        fit(decay, x, y, p0=P0, plan=plan_fit(n_points=y.size, n_params=2))
    with pytest.raises(FitInputError, match="unknown field"):
        FitPlan.from_dict({**plan.to_dict(), "strategi": "standard"})


def test_resume_false_starts_afresh():
    x, y = decay_data()
    sink = MemoryCheckpointSink()
    source = ArrayChunkSource(x, y, chunk_size=CHUNK)
    first = fit_source(decay, source, p0=P0, strategy="streaming", checkpoint=sink, **TIGHT)
    again = fit_source(decay, source, p0=P0, strategy="streaming", checkpoint=sink, resume=True, **TIGHT)
    fresh = fit_source(decay, source, p0=P0, strategy="streaming", checkpoint=sink, resume=False, **TIGHT)
    assert again.checkpoints["resumed"] and not fresh.checkpoints["resumed"]
    np.testing.assert_array_equal(fresh.popt, first.popt)


@pytest.mark.parametrize("strategy", strategy_names())
def test_result_round_trips_through_its_summary(strategy):
    x, y = decay_data()
    extra = {} if get_strategy(strategy).takes_covariance else {"chunk_size": CHUNK}
    res = fit(decay, x, y, p0=P0, sigma=np.full(y.size, 0.05), strategy=strategy, n_starts=2, validate=True,
              **extra)
    assert res.validation is not None and len(res.starts) == 2
    summary = json.loads(json.dumps(res.summary()))  # as stored: plain JSON
    back = FitResult.from_summary(summary)
    assert back == res
    np.testing.assert_array_equal(back.pcov, res.pcov)
    assert back.report() == res.report() and back.summary() == res.summary()
    assert back != FitResult.from_summary({**summary, "popt": [v + 1e-12 for v in summary["popt"]]})
