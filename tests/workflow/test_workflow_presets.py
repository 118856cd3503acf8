"""Presets: every built-in loads and matches the reference table; validation errors help."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from nlsq_tasks.workflow import OptimizationGoal, Preset, PresetError, list_presets, load_preset

REPO = Path(__file__).resolve().parents[2]

# The reference's preset table: strategy, tolerance (None = adaptive), starts
TABLE = {
    "auto": ("auto", None, 1),
    "standard": ("standard", 1e-8, 1),
    "quality": ("standard", 1e-10, 20),
    "fast": ("standard", 1e-6, 1),
    "large_robust": ("chunked", 1e-8, 10),
    "streaming": ("streaming", 1e-7, 1),
    "hpc_distributed": ("streaming", 1e-6, 1),
}


def test_list_presets_is_the_presets_directory():
    assert list_presets() == sorted(TABLE)
    assert sorted(p.stem for p in (REPO / "presets").glob("*.yaml")) == sorted(TABLE)


@pytest.mark.parametrize("name", sorted(TABLE))
def test_builtin_matches_reference_table(name):
    p = load_preset(name)
    strategy, tol, starts = TABLE[name]
    assert isinstance(p, Preset) and p.name == name and p.description
    assert (p.strategy, p.tolerance, p.n_starts) == (strategy, tol, starts)
    assert p.multistart == (starts > 1)


def test_builtin_goals_and_flags():
    assert load_preset("quality").goal is OptimizationGoal.QUALITY and load_preset("quality").validate
    assert load_preset("fast").goal is OptimizationGoal.FAST
    assert load_preset("large_robust").goal is OptimizationGoal.ROBUST
    assert load_preset("hpc_distributed").checkpoint.enabled
    assert not load_preset("standard").validate and not load_preset("standard").checkpoint.enabled


def test_names_are_case_insensitive():
    assert load_preset("Quality") == load_preset("quality")


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as e:
        load_preset("qualty")
    msg = str(e.value)
    assert "'qualty'" in msg and "Did you mean 'quality'" in msg
    for name in TABLE:
        assert name in msg


def test_tolerances_fixed_or_adaptive():
    assert load_preset("standard").tolerances(10) == {"gtol": 1e-8, "ftol": 1e-8, "xtol": 1e-8}
    assert load_preset("auto").tolerances(5_000_000) == {"gtol": 1e-7, "ftol": 1e-7, "xtol": 1e-7}
    adaptive_quality = Preset(name="q", goal="quality")
    assert adaptive_quality.tolerances(5_000_000)["gtol"] == 1e-8
    with pytest.raises(ValueError, match="n_points"):
        load_preset("standard").tolerances(0)


def test_user_yaml_file_loads(tmp_path):
    f = tmp_path / "my_fit.yaml"
    f.write_text(
        "description: mine\nstrategy: chunked\ntolerance: 1e-9\nn_starts: 5\nmultistart_sampler: lhs\n"
        "chunk_size: 50000\nloss: soft_l1\nf_scale: 0.5\nmax_nfev: 200\n"
        "checkpoint:\n  enabled: true\n  every_chunks: 10\n  keep_last: 4\n"
    )
    for arg in (f, str(f)):
        p = load_preset(arg)
        assert p.name == "my_fit"  # from the file name when the YAML has none
        assert (p.strategy, p.tolerance, p.n_starts, p.multistart_sampler) == ("chunked", 1e-9, 5, "lhs")
        assert (p.chunk_size, p.loss, p.f_scale, p.max_nfev) == (50_000, "soft_l1", 0.5, 200)
        assert (p.checkpoint.enabled, p.checkpoint.every_chunks, p.checkpoint.every_passes, p.checkpoint.keep_last) == (True, 10, 1, 4)


def test_missing_user_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_preset(tmp_path / "nope.yaml")


def test_from_yaml_text_for_io():
    p = Preset.from_yaml_text("strategy: streaming\ntolerance: 1.0e-7\n", source="s3://bucket/presets/big.yaml")
    assert p.name == "big" and p.strategy == "streaming"
    with pytest.raises(PresetError, match="s3://bucket/x.yaml"):
        Preset.from_yaml_text("tolerance: [1", source="s3://bucket/x.yaml")
    with pytest.raises(PresetError, match="mapping"):
        Preset.from_yaml_text("- a\n- b\n", source="x.yaml")


@pytest.mark.parametrize("yaml_text, key, suggestion", [
    ("tolerence: 1.0e-8", "tolerance_typo", "tolerance"),
    ("n_start: 3", "n_start", "n_starts"),
    ("checkpoint:\n  enable: true", "enable", "enabled"),
    ("checkpoint:\n  every_chunk: 3", "every_chunk", "every_chunks"),
])
def test_unknown_key_names_key_and_closest(yaml_text, key, suggestion):
    with pytest.raises(PresetError) as e:
        Preset.from_yaml_text("name: t\n" + yaml_text)
    msg = str(e.value)
    typo = yaml_text.split(":")[0] if key == "tolerance_typo" else key
    assert f"unknown key {typo!r}" in msg
    assert f"did you mean {suggestion!r}" in msg


def test_direct_construction_rejects_unknown_keys_too():
    with pytest.raises(ValidationError, match="did you mean 'seed'"):
        Preset(name="x", sed=3)


@pytest.mark.parametrize("field, value", [
    ("tolerance", 0),
    ("tolerance", 0.5),
    ("tolerance", -1e-8),
    ("n_starts", 0),
    ("n_starts", 1001),
    ("n_starts", 2.5),
    ("n_starts", True),
    ("chunk_size", 999),
    ("chunk_size", 2_000_000),
    ("strategy", "magic"),
    ("multistart_sampler", "random"),
    ("loss", "l2"),
    ("f_scale", 0),
    ("f_scale", float("inf")),
    ("max_nfev", 0),
    ("seed", -1),
    ("goal", "best"),
    ("goal", 3),
    ("validate", "yes"),
    ("name", ""),
])
def test_values_are_range_checked(field, value):
    with pytest.raises(ValidationError) as e:
        Preset(**{"name": "x", field: value})
    assert field in str(e.value)


@pytest.mark.parametrize("field, value", [("every_chunks", 0), ("every_passes", 0), ("keep_last", 0), ("enabled", "on")])
def test_checkpoint_values_are_range_checked(field, value):
    with pytest.raises(ValidationError, match=field):
        Preset(name="x", checkpoint={field: value})


def test_quality_implies_validate():
    assert Preset(name="x", goal="quality").validate is True
    assert Preset(name="x", goal="fast").validate is False
    with pytest.raises(ValidationError, match="validate"):
        Preset(name="x", goal="quality", validate=False)


def test_to_dict_round_trips():
    for name in list_presets():
        p = load_preset(name)
        assert Preset(**p.to_dict()) == p


def test_presets_are_frozen():
    with pytest.raises(ValidationError):
        load_preset("standard").n_starts = 3
