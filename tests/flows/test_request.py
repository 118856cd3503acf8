"""The typed request: what the Prefect UI form shows and what it refuses (no server needed)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from flows import BatchFitRequest, FitRequest


def _ok(**extra):
    return {"data": {"uri": "d.npz"}, "model": "a*exp(-b*x) + c", **extra}


def _walk(schema: dict):
    """Every (name, property schema) of the form, nested models included."""
    for defn in [schema, *schema.get("$defs", {}).values()]:
        for name, prop in (defn.get("properties") or {}).items():
            yield name, prop


def test_schema_renders_a_short_form_with_plain_fields_labels_and_help():
    from nlsq_tasks.workflow import list_presets

    schema = FitRequest.model_json_schema()
    defs = schema["$defs"]
    props = schema["properties"]
    # data, model and preset first; everything else in one advanced section at the end
    order = sorted(props, key=lambda k: props[k].get("position", 0))
    assert order[:4] == ["data", "model", "expression", "preset"] and order[-1] == "advanced"
    data_fields = list(defs["DataSpec"]["properties"])
    assert data_fields[0] == "uri" and data_fields[-1] == "storage_options_block"
    # no "float | None" type pickers, no raw JSON editor for secrets; the one switch is the
    # collapsed advanced section ("Preset as it is" by default, or "Change settings")
    pickers = [name for name, prop in _walk(schema) if "anyOf" in prop or "oneOf" in prop]
    assert pickers == ["advanced"], pickers
    assert [m.get("title") for m in props["advanced"]["anyOf"]] == ["Preset as it is", "Change settings"]
    assert props["advanced"]["default"] is None
    assert "storage_options\"" not in json.dumps(schema)
    # drop-downs with every choice, and the word on each in the help under it
    assert props["model"]["enum"][0] == "exponential_decay" and props["model"]["enum"][-1] == "expression"
    assert "gaussian" in props["model"]["enum"]
    assert props["preset"]["enum"] == list(list_presets())
    for name in list_presets():
        assert f"`{name}`: " in props["preset"]["description"]
    assert defs["Goal"]["enum"] == ["preset", "fast", "robust", "global", "memory_efficient", "quality"]
    # every field has a label and help; code is in backticks (markdown would eat a*b*c)
    for name, prop in _walk(schema):
        assert prop.get("title") or "$ref" in prop, name
        assert prop.get("description"), name
        for chunk in prop["description"].split("`")[::2]:  # outside backticks
            assert "*" not in chunk and "<" not in chunk, (name, prop["description"])
    adv = defs["AdvancedSettings"]["properties"]
    assert adv["memory_limit_gb"] == {**adv["memory_limit_gb"], "type": "number", "minimum": 0, "default": 0.0}
    assert adv["ftol"]["title"] == "Cost tolerance (ftol)"
    assert "Import paths are not accepted" in props["expression"]["description"]


def test_parameters_by_name_in_any_order_with_infinite_bounds():
    req = FitRequest.model_validate({"data": {"uri": "d.npz"}, "model": "exponential_decay",
                                     "p0": "offset=0.5, amplitude=2, rate=1", "lower": "rate=0",
                                     "upper": "amplitude=inf, offset=1e3"})
    inf = float("inf")
    assert req.p0 == [2.0, 1.0, 0.5]
    assert req.lower == [-inf, 0.0, -inf] and req.upper == [inf, inf, 1000.0]
    again = FitRequest.model_validate(json.loads(req.model_dump_json()))  # JSON has no inf: text keeps it
    assert (again.p0, again.lower, again.upper) == (req.p0, req.lower, req.upper)
    ui = FitRequest.model_validate({"data": {"uri": "d.npz", "x": "", "sigma": ""}, "model": "expression",
                                    "expression": "a*exp(-b*x) + c", "p0": "1, 1, 0", "lower": "-inf, 0, -inf",
                                    "advanced": None})
    assert ui.model == "a*exp(-b*x) + c" and ui.p0 == [1.0, 1.0, 0.0] and ui.data.x is None


@pytest.mark.parametrize(
    "change, message",
    [
        ({"p0": "1, 2"}, "p0 has 2 values but model 'exponential_decay' has 3 parameters (amplitude, rate, offset)"),
        ({"p0": "amp=1, rate=1, offset=0"}, "'amp' is not a parameter of model 'exponential_decay'"),
        ({"p0": "amplitude=1"}, "p0: no value for rate, offset"),
        ({"lower": "rate=x"}, "lower[rate]: 'x' is not a number"),
        ({"upper": "1, rate=2"}, "by name"),
        ({"model": "expression"}, "the expression field is empty"),
        ({"advanced": {"memory_limit_gb": -5}}, "greater than or equal to 0"),
        ({"advanced": {"chunk_size": 10}}, "chunk_size=10 is too small"),
    ],
)
def test_form_values_that_cannot_run_say_why(change, message):
    with pytest.raises(ValidationError) as info:
        FitRequest.model_validate({"data": {"uri": "d.npz"}, "model": "exponential_decay", **change})
    assert message in str(info.value)


def test_credentials_are_masked_in_every_dump_but_usable_inside_tasks():
    secret = {"key": "AKIAEXAMPLE", "secret": "s3cr3t-value", "client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}}
    req = FitRequest.model_validate(_ok(data={"uri": "s3://b/d.npz", "storage_options": secret},
                                        storage={"storage_options": secret}))
    for text in (req.model_dump_json(), repr(req), str(req), json.dumps(req.redacted())):
        assert "s3cr3t-value" not in text and "AKIAEXAMPLE" not in text
    assert req.data.resolved_options() == secret
    assert req.storage.resolved_options() == secret


def test_overrides_keep_only_what_was_set():
    req = FitRequest.model_validate(_ok(overrides={"tolerance": 1e-9, "strategy": "auto", "n_starts": 4}))
    assert req.overrides.as_updates() == {"n_starts": 4, "ftol": 1e-9, "xtol": 1e-9, "gtol": 1e-9}
    # the form's zeros and "preset" mean "the preset's value"
    assert FitRequest.model_validate(_ok(advanced={"goal": "preset", "ftol": 0, "loss": "preset"})).overrides.as_updates() == {}
    assert FitRequest.model_validate(_ok(goal="quality")).goal_name == "quality"


def test_batch_request_builds_one_data_spec_per_uri():
    req = BatchFitRequest.model_validate({"data": {"uris": ["a.npz", "b.csv"], "x": "t", "y": "v"},
                                          "model": "a*x + b", "max_concurrency": 3})
    one = req.data.one("b.csv")
    assert (one.uri, one.x, one.y) == ("b.csv", "t", "v")
    with pytest.raises(ValidationError, match="max_concurrency"):
        BatchFitRequest.model_validate({"data": {"uris": ["a"]}, "model": "a*x", "max_concurrency": 0})


def test_prefect_builds_the_deployment_form_from_the_flow_signature():
    """What `prefect deploy` stores as the parameter schema the UI renders."""
    from prefect.utilities.callables import parameter_schema

    from flows import batch_fit_flow, fit_flow

    for flow_obj, model_name in ((fit_flow, "FitRequest"), (batch_fit_flow, "BatchFitRequest")):
        schema = parameter_schema(flow_obj.fn).model_dump()
        assert schema["required"] == ["request"]
        assert schema["properties"]["request"]["$ref"].endswith(model_name)
        defs = schema["definitions"]
        assert defs["Goal"]["enum"][-1] == "quality" and "AdvancedSettings" in defs


def test_registered_models_are_found_by_name_and_import_paths_never_are():
    import jax.numpy as jnp

    from flows import register_model, registered_models, unregister_model
    from flows.resolve import RequestError, resolve_request_model

    def lab_decay(x, amp, rate):
        return amp * jnp.exp(-rate * x)

    register_model("lab-decay", lab_decay)
    try:
        assert "lab-decay" in registered_models()
        assert list(resolve_request_model("lab-decay").param_names) == ["amp", "rate"]
        FitRequest.model_validate(_ok(model="lab-decay"))
    finally:
        unregister_model("lab-decay")
    # gone from the registry: the same string is now only an expression ("lab - decay")
    assert list(resolve_request_model("lab-decay").param_names) != ["amp", "rate"]
    with pytest.raises(RequestError, match="model"):
        resolve_request_model("__import__('os')")
    with pytest.raises(ValueError, match="not allowed"):
        register_model("os.system", lab_decay)


def test_refusals_reach_the_log_as_one_line_without_prefect_traceback():
    """Prefect's engine wrapper logs a traceback when a deployment run ends FAILED; for a refused
    request (already logged once) it is dropped, for invalid parameters it becomes one line."""
    import logging
    import sys

    from prefect.exceptions import FailedRun, ParameterTypeError

    from flows.fit_flow import _RefusalsWithoutTraceback

    def record(exc):
        try:
            raise exc
        except Exception:
            return logging.LogRecord("prefect.flow_runs", logging.ERROR, __file__, 1,
                                     "Engine execution exited with unexpected exception", (), sys.exc_info())

    keep = _RefusalsWithoutTraceback()
    assert keep.filter(record(FailedRun("request refused: preset: unknown preset 'x'"))) is False
    bad = record(ParameterTypeError("Flow run received invalid parameters:\n - request: p0 has 2 values"))
    assert keep.filter(bad) is True and bad.exc_info is None and "p0 has 2 values" in bad.getMessage()
    other = record(RuntimeError("a real crash"))
    assert keep.filter(other) is True and other.exc_info is not None  # real errors keep their traceback
    assert any(isinstance(f, _RefusalsWithoutTraceback)
                                       for f in logging.getLogger("prefect.flow_runs").filters)
