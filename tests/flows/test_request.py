"""The typed request: what the Prefect UI form shows and what it refuses (no server needed)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from flows import BatchFitRequest, FitRequest


def _ok(**extra):
    return {"data": {"uri": "d.npz"}, "model": "a*exp(-b*x) + c", **extra}


def test_schema_renders_a_form_with_enums_ranges_and_descriptions():
    from nlsq_tasks.workflow import list_presets

    schema = FitRequest.model_json_schema()
    defs = schema["$defs"]
    assert defs["Goal"]["enum"] == ["fast", "robust", "global", "memory_efficient", "quality"]
    assert defs["DataFormat"]["enum"] == ["auto", "npy", "npz", "csv", "parquet"]
    assert sorted(defs["PresetName"]["enum"]) == sorted(list_presets())
    mem = schema["properties"]["memory_limit_gb"]["anyOf"][0]
    assert mem["exclusiveMinimum"] == 0
    assert "Import paths are not accepted" in schema["properties"]["model"]["description"]
    secret = defs["DataSpec"]["properties"]["storage_options"]
    assert secret.get("writeOnly") is True, secret


@pytest.mark.parametrize(
    "change, field",
    [
        ({"memory_limit_gb": 0}, "memory_limit_gb"),
        ({"goal": "fastest"}, "goal"),
        ({"overrides": {"chunk_size": 10}}, "chunk_size"),
        ({"overrides": {"tolerence": 1e-8}}, "tolerence"),
        ({"p0": [1.0, float("nan"), 0.0]}, "p0"),
        ({"p0": [1, 1, 0], "lower": [0, 0]}, "lower"),
        ({"lower": [0, 5, 0], "upper": [1, 1, 1]}, "lower[1]=5.0 must be < upper[1]=1.0"),
        ({"model": "subprocess.run"}, "import path"),
        ({"model": "mypkg.models:decay"}, "import path"),
        ({"preset": "  "}, "preset"),
    ],
)
def test_bad_values_are_refused_with_the_field_named(change, field):
    with pytest.raises(ValidationError) as info:
        FitRequest.model_validate(_ok(**change))
    assert field in str(info.value)


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
        assert defs["Goal"]["enum"][-1] == "quality" and "PresetName" in defs


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
