"""Named presets: a validated bundle of workflow settings, one YAML file each.

The built-in presets live in ``presets/*.yaml`` at the repository root (the source of
truth) and are shipped as package data (``nlsq_tasks._presets``), so they load the same
from a checkout and from an installed wheel. Reading them is configuration, the one kind
of file access the numerics allow themselves.

A preset is strict: an unknown key is an error that names the key and the closest valid
one (``tolerence`` -> did you mean ``tolerance``?), and every value is range-checked.
YAML 1.1 reads ``1e-8`` (no dot) as a string; numeric strings are accepted for float
fields for that reason. Counts must be integers.
"""

from __future__ import annotations

import difflib
import os
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError, field_validator, model_validator

from ..engine.loss import loss_names
from ..planning import SAMPLERS
from ..strategies import strategy_names
from .configs import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE
from .goals import OptimizationGoal
from .tolerances import calculate_adaptive_tolerances

PRESET_PACKAGE = "nlsq_tasks._presets"


class PresetError(ValueError):
    """A preset could not be found, parsed or validated; the message says which and why."""


def _reject_unknown_keys(model: type[BaseModel], data: Any, where: str) -> None:
    if not isinstance(data, dict):
        return
    valid = list(model.model_fields)
    for key in data:
        if key not in model.model_fields:
            close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown key {key!r} in {where}{hint} (valid keys: {', '.join(valid)})")


class CheckpointSettings(BaseModel):
    """When streaming and chunked fits save their state."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: StrictBool = False
    every_chunks: StrictInt = Field(100, ge=1)
    every_passes: StrictInt = Field(1, ge=1)
    keep_last: StrictInt = Field(2, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _unknown_keys(cls, data: Any) -> Any:
        _reject_unknown_keys(cls, data, "checkpoint")
        return data


# The YAML key users write is `validate`; as a field it shadows pydantic's deprecated
# BaseModel.validate classmethod, which is what we want, so that one warning is silenced.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "validate"', category=UserWarning)

    class Preset(BaseModel):
        """Workflow settings by name (see ``presets/*.yaml``).

        ``tolerance`` None means adaptive (:func:`calculate_adaptive_tolerances` with ``goal``).
        ``goal`` QUALITY implies ``validate: true``.
        """

        model_config = ConfigDict(extra="forbid", frozen=True)

        name: str = Field(min_length=1, max_length=64)
        description: str = ""
        strategy: Literal[("auto",) + strategy_names()] = "auto"  # type: ignore[valid-type]
        tolerance: Optional[float] = Field(None, gt=0.0, le=1e-2)
        goal: Optional[OptimizationGoal] = None
        n_starts: StrictInt = Field(1, ge=1, le=1000)
        multistart_sampler: Literal[SAMPLERS] = "sobol"  # type: ignore[valid-type]
        seed: Optional[StrictInt] = Field(0, ge=0)
        chunk_size: Optional[StrictInt] = Field(None, ge=MIN_CHUNK_SIZE, le=MAX_CHUNK_SIZE)
        checkpoint: CheckpointSettings = CheckpointSettings()
        validate: StrictBool = False  # noqa: A003 (the YAML key users write)
        max_nfev: Optional[StrictInt] = Field(None, ge=1)
        loss: Literal[loss_names()] = "linear"  # type: ignore[valid-type]
        f_scale: float = Field(1.0, gt=0.0, allow_inf_nan=False)
        # At most this many devices for one fit's passes (None: every visible one).
        devices: Optional[StrictInt] = Field(None, ge=1)
        # At most this many points per tile each device folds in a sharded fit (None: the
        # MultiGPUConfig's per_device_batch_size on GPUs, else the strategy's tile).
        per_device_batch: Optional[StrictInt] = Field(None, ge=1)

        @model_validator(mode="before")
        @classmethod
        def _unknown_keys(cls, data: Any) -> Any:
            _reject_unknown_keys(cls, data, "preset")
            return data

        @field_validator("goal", mode="before")
        @classmethod
        def _parse_goal(cls, value: Any) -> Any:
            if value is None or isinstance(value, OptimizationGoal):
                return value
            if isinstance(value, str):
                return OptimizationGoal.parse(value)
            raise ValueError(f"goal must be a goal name such as 'quality', got {value!r}")

        @model_validator(mode="after")
        def _quality_validates(self) -> "Preset":
            if self.goal is OptimizationGoal.QUALITY and not self.validate:
                if "validate" in self.model_fields_set:
                    raise ValueError("validate: false contradicts goal: quality (QUALITY always runs the validation pass)")
                object.__setattr__(self, "validate", True)
            return self

        # -- behaviour ---------------------------------------------------------------------
        @property
        def multistart(self) -> bool:
            return self.n_starts > 1

        def tolerances(self, n_points: int) -> dict[str, float]:
            """``{'gtol', 'ftol', 'xtol'}``: the fixed tolerance, or the adaptive one for ``n_points`` and the goal."""
            if self.tolerance is not None:
                from ._checks import check_int

                check_int("n_points", n_points, minimum=1)
                return {"gtol": self.tolerance, "ftol": self.tolerance, "xtol": self.tolerance}
            return calculate_adaptive_tolerances(n_points, self.goal)

        def to_dict(self) -> dict[str, Any]:
            """Plain data (goal as its lower-case name), suitable for YAML, JSON and Prefect parameters."""
            d = self.model_dump()
            d["goal"] = None if self.goal is None else self.goal.name.lower()
            return d

        # -- construction ------------------------------------------------------------------
        @classmethod
        def from_yaml_text(cls, text: str, source: str = "<string>") -> "Preset":
            """Parse and validate YAML ``text``; ``source`` (a path or URI) appears in errors and,
            when the YAML has no ``name``, gives the name (its file stem)."""
            if not isinstance(text, str):
                raise TypeError(f"text must be the YAML document as a str, got {type(text).__name__}")
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise PresetError(f"preset {source} is not valid YAML: {exc}") from None
            if not isinstance(data, dict):
                raise PresetError(f"preset {source} must be a YAML mapping of settings, got {type(data).__name__}")
            if "name" not in data and source != "<string>":
                data["name"] = Path(str(source)).stem
            try:
                return cls.model_validate(data)
            except ValidationError as exc:
                raise PresetError(f"invalid preset {source}:\n{_describe(exc)}") from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(preset)"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg} (got {err.get('input')!r})" if err["loc"] else f"  {msg}")
    return "\n".join(lines)


# -- the built-ins ---------------------------------------------------------------------
def _builtin_files() -> dict[str, Any]:
    """Built-in preset name -> readable file (Path or importlib Traversable)."""
    candidates: list[Any] = []
    try:
        candidates.append(resources.files(PRESET_PACKAGE))
    except (ModuleNotFoundError, TypeError):
        pass
    # A checkout: presets/ at the repository root, next to the package.
    candidates.append(Path(__file__).resolve().parents[2] / "presets")
    for root in candidates:
        try:
            found = {e.name[: -len(".yaml")]: e for e in root.iterdir() if e.name.endswith(".yaml")}
        except (FileNotFoundError, NotADirectoryError, OSError):
            continue
        if found:
            return dict(sorted(found.items()))
    return {}


def list_presets() -> list[str]:
    """Names of the built-in presets, sorted."""
    return list(_builtin_files())


def load_preset(name_or_path: str | os.PathLike) -> Preset:
    """A built-in preset by name (``"quality"``), or a user's YAML file by path.

    A string is read as a path when it ends in ``.yaml``/``.yml`` or contains a path
    separator. Unknown names raise PresetError (a ValueError) listing the valid ones.
    """
    if isinstance(name_or_path, Preset):
        return name_or_path
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(
            f"name_or_path must be a preset name or a path to a YAML file, got {name_or_path!r} "
            f"({type(name_or_path).__name__})"
        )
    text = os.fspath(name_or_path)
    is_path = isinstance(name_or_path, os.PathLike) or text.endswith((".yaml", ".yml")) or os.sep in text or "/" in text
    if is_path:
        path = Path(text).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"preset file {str(path)!r} does not exist")
        return Preset.from_yaml_text(path.read_text(), source=str(path))
    builtins = _builtin_files()
    key = text.strip().lower()
    if key not in builtins:
        close = difflib.get_close_matches(key, list(builtins), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise PresetError(
            f"unknown preset {text!r}; valid presets are: {', '.join(builtins) or '(none found)'}.{hint} "
            "A path to a YAML file (ending in .yaml) is also accepted."
        )
    return Preset.from_yaml_text(builtins[key].read_text(), source=f"built-in preset {key!r}")
