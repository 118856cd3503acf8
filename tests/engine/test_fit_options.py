"""fit()'s keyword-only options have one definition (nlsq_tasks._fit_options.FitOptions).

The front doors keep explicit keyword-only signatures for their readers; these tests make
those signatures, plan_fit's decision keywords, the batch front doors' accepted keywords and
fit()'s docstring agree with FitOptions, so none of them can drift from the others.
"""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest

from nlsq_tasks import fit, fit_source, plan_fit
from nlsq_tasks._fit_options import DECISIONS, OPTION_NAMES, SOLVER_OPTIONS, FitOptions
from nlsq_tasks._validate import FitTypeError

DEFAULTS = {f.name: f.default for f in dataclasses.fields(FitOptions)}


def _keyword_only(fn) -> dict:
    return {name: p.default for name, p in inspect.signature(fn).parameters.items() if p.kind is p.KEYWORD_ONLY}


@pytest.mark.parametrize("front_door", [fit, fit_source], ids=["fit", "fit_source"])
def test_front_door_signatures_are_the_options(front_door):
    assert _keyword_only(front_door) == DEFAULTS
    assert tuple(_keyword_only(front_door)) == OPTION_NAMES  # same order: the docs read alike


def test_plan_fit_takes_every_decision_and_nothing_else_of_fit():
    params = inspect.signature(plan_fit).parameters
    assert {name: params[name].default for name in DECISIONS} == {name: DEFAULTS[name] for name in DECISIONS}
    assert not (set(OPTION_NAMES) - set(DECISIONS)) & set(params)  # running options are not planned


def test_every_option_is_documented_in_fit():
    doc = inspect.getdoc(fit)
    missing = [name for name in OPTION_NAMES if f"{name} :" not in doc and f"{name}," not in doc]
    assert not missing, f"fit()'s docstring does not document {missing}"


def test_gather_refuses_a_misspelt_keyword_naming_the_valid_ones():
    with pytest.raises(FitTypeError, match="valid keyword arguments: .*max_nfev") as info:
        FitOptions.gather(DEFAULTS, {"max_nfe": 5}, "fit")
    assert info.value.field == "max_nfe"


def test_options_round_trip_through_keywords_and_split_into_decisions():
    options = FitOptions.gather({**DEFAULTS, "loss": "huber", "n_starts": 3, "resume": False}, {}, "fit")
    assert FitOptions(**options.keywords()) == options
    assert options.decisions() == {**{name: None for name in DECISIONS}, "loss": "huber", "n_starts": 3}
    assert options.given_decisions() == ["loss", "n_starts"]
    assert FitOptions.coerce({"loss": "huber"}, "fit") == FitOptions(loss="huber")


def test_batch_front_doors_take_the_solver_options():
    from nlsq_tasks.batch import fit_batch, fit_global

    x = np.linspace(0, 1, 20)
    ys = np.vstack([x, 2 * x])
    for front_door, args in ((fit_batch, ("linear", x, ys)), (fit_global, ("linear", [(x, ys[0]), (x, ys[1])], ["slope"]))):
        with pytest.raises(FitTypeError, match="valid keyword arguments: " + ", ".join(sorted(SOLVER_OPTIONS))):
            front_door(*args, n_starts=2)
