"""From a request to library objects: preset, model, fit keywords and the storage layout.

Pure helpers used inside tasks (they do I/O only through :mod:`nlsq_tasks.io`). Every
error raised here is a ``ValueError`` (or a storage error) whose message names the request
field, the value and what is allowed; the flow turns it into a FAILED state before any
fit starts and before anything is written.

Storage layout under ``storage_uri`` (see :mod:`flows.ownership`)::

    runs/<run name>/  run.json, summary.json, params.npz, report.txt, request.json,
                      validation.json, fit.png, manifest.json (every file listed)
    checkpoints/      streaming checkpoints, one directory per problem (resume reads them),
                      and locks/ (who writes which problem's checkpoints now)
"""

from __future__ import annotations

import os
from typing import Any, Optional

from .request import DataFormat, DataSpec, FitSettings, redact  # noqa: F401  (redact re-exported for tasks)

RESULTS_DIR = "results"
CHECKPOINTS_DIR = "checkpoints"
VALIDATION_FILE = "validation.json"
PLOT_FILE = "fit.png"
REQUEST_FILE = "request.json"

# Override fields that fit() takes as keywords (explicit keyword > preset > adaptive);
# the others change the preset itself.
_FIT_KEYWORDS = ("ftol", "xtol", "gtol")
_PRESET_FIELDS = ("strategy", "tolerance", "n_starts", "chunk_size", "loss", "f_scale", "max_nfev", "devices",
                  "per_device_batch")


class RequestError(ValueError):
    """A request that cannot run; ``field`` names the offending request field."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}")


# -- paths ------------------------------------------------------------------------------
def join(uri: str, *names: str) -> str:
    out = uri.rstrip("/")
    for n in names:
        out += "/" + n.strip("/")
    return out


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in str(name)).strip(".")[:100] or "run"


def default_storage_uri(run_name: Optional[str] = None) -> str:
    """``NLSQ_STORAGE_ROOT``, else ``./nlsq_results``: one location for every run, so that
    re-running a killed fit with the same arguments finds its checkpoints (they are keyed by
    the problem, runs by their names). ``run_name`` is accepted and ignored (older callers)."""
    root = os.environ.get("NLSQ_STORAGE_ROOT")
    return root if root else os.path.abspath("nlsq_results")


def layout(storage_uri: str, run_dir: Optional[str] = None) -> dict[str, str]:
    """Where everything of one run goes; ``run_dir`` is the run's claimed directory
    (:func:`flows.ownership.claim_run_dir`), ``<storage_uri>/results`` for older callers."""
    results = run_dir or join(storage_uri, RESULTS_DIR)
    return {
        "storage_uri": storage_uri,
        "run_dir": results,
        "results_dir": results,
        "checkpoints_dir": join(storage_uri, CHECKPOINTS_DIR),
        "validation": join(results, VALIDATION_FILE),
        "plot": join(results, PLOT_FILE),
        "request": join(results, REQUEST_FILE),
    }


# -- the worker's storage policy -----------------------------------------------------------
def preset_is_location(spec: str) -> bool:
    """True when the preset spec is a path or URI (not a shipped preset's name)."""
    from nlsq_tasks.workflow import list_presets

    if spec.strip().lower() in list(list_presets()):
        return False
    return "://" in spec or spec.endswith((".yaml", ".yml")) or os.sep in spec


def check_policy(data_uri: Optional[str], preset_spec: Optional[str], storage_uri: str,
                 data_field: str = "data.uri") -> dict[str, Any]:
    """Every location of a request against the worker's storage policy (nothing is read):
    ``nlsq_tasks.io.StoragePolicyError`` names the field, the value and the setting."""
    from nlsq_tasks.io import StoragePolicy

    policy = StoragePolicy.from_env()
    if data_uri is not None:
        policy.check(data_uri, "data", data_field)
    if preset_spec and preset_is_location(preset_spec):
        policy.check(preset_spec, "preset", "preset")
    policy.check(storage_uri, "results", "storage_uri")
    return {"protocols": list(policy.protocols), "roots": list(policy.roots)}


def problem_key(model_spec: str, data_identity: str, preset: dict, settings: FitSettings, chunk_size: int) -> str:
    """What makes two runs the same problem (for the checkpoint lock): model, data content
    identity, preset, start point, bounds and chunk size; never a run name or a time."""
    import hashlib
    import json

    parts = [model_spec, data_identity, json.dumps(preset, sort_keys=True, default=str),
             json.dumps([settings.p0, settings.lower, settings.upper], default=str), str(int(chunk_size))]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:24]


# -- presets ----------------------------------------------------------------------------
def _preset_error(exc: BaseException) -> str:
    """The preset loader's message without the file's content: YAML errors keep their
    position but lose the quoted line, validation errors lose the offending value."""
    import re

    text = str(exc)
    m = re.search(r'in "<[^>]*>", line (\d+), column (\d+)', text)
    if m:
        head = text.split("\n", 1)[0]
        return f"{head.split(': ', 1)[-1] if 'YAML' in head else head} (line {m.group(1)}, column {m.group(2)})"
    return re.sub(r"\s*\(got [^\n]*\)", "", text)


def load_request_preset(spec: str, storage_options: Optional[dict] = None):
    """A shipped preset by name, or a user's YAML preset by local path or fsspec URI."""
    from nlsq_tasks.workflow import list_presets, load_preset

    names = list(list_presets())
    if spec.strip().lower() in names:
        return load_preset(spec)
    looks_like_file = "://" in spec or spec.endswith((".yaml", ".yml")) or os.sep in spec
    if not looks_like_file:
        raise RequestError("preset", f"unknown preset {spec!r}; allowed: {', '.join(names)}, or the path/URI of a YAML preset file")
    if "://" in spec and not spec.startswith("file://"):
        from nlsq_tasks.io import load_text
        from nlsq_tasks.workflow import Preset

        text = load_text(spec, storage_options)
        try:
            return Preset.from_yaml_text(text, source=spec)
        except Exception as exc:
            raise RequestError("preset", f"the YAML preset at {spec} is not valid: {_preset_error(exc)}") from None
    path = spec[len("file://"):] if spec.startswith("file://") else spec
    if not os.path.exists(path):
        raise RequestError("preset", f"preset file {path!r} does not exist")
    try:
        return load_preset(path)
    except FileNotFoundError:
        raise RequestError("preset", f"preset file {path!r} does not exist") from None
    except Exception as exc:
        raise RequestError("preset", f"the YAML preset at {path} is not valid: {_preset_error(exc)}") from None


def apply_overrides(preset: Any, settings: FitSettings):
    """The preset with the request's inline overrides (validated again as a whole)."""
    from nlsq_tasks.workflow import Preset

    updates = settings.overrides.as_updates()
    data = preset.to_dict()
    tol = settings.overrides.tolerance
    for key in _PRESET_FIELDS:
        if key == "tolerance":
            if tol:  # 0: the preset's
                data["tolerance"] = tol
        elif key in updates:
            data[key] = updates[key]
    if settings.overrides.validate_fit:  # False: as the preset says
        data["validate"] = True
    if settings.overrides.checkpoint_every:  # 0: the preset's
        data["checkpoint"] = {**data.get("checkpoint", {}), "enabled": True,
                              "every_chunks": settings.overrides.checkpoint_every}
    try:
        return Preset.model_validate(data)
    except Exception as exc:
        raise RequestError("overrides", f"they make preset {data.get('name')!r} invalid: {exc}") from None


def preset_name(preset: Any, spec: str) -> str:
    return str(getattr(preset, "name", None) or spec)


# -- models -----------------------------------------------------------------------------
def resolve_request_model(spec: str):
    """A registered name, a built-in name or a whitelisted expression -> ``Model``."""
    from nlsq_tasks.models import resolve_model

    try:
        return resolve_model(spec)  # registered names first (the one registry), then built-ins, expressions
    except Exception as exc:  # UnsafeExpressionError, SyntaxError, KeyError...
        raise RequestError("model", f"{spec!r} is not a usable model: {type(exc).__name__}: {exc}") from None


def check_parameters(settings: FitSettings, param_names: list[str]) -> None:
    """p0, lower and upper against the model: one value per parameter, p0 within the bounds
    (checked here, in the first check, not in the fit task)."""
    import math

    n = len(param_names)
    for field in ("p0", "lower", "upper"):
        values = getattr(settings, field)
        if values is not None and len(values) != n:
            raise RequestError(
                field, f"has {len(values)} values but the model has {n} parameters ({', '.join(param_names)})"
            )
    if settings.p0 is None:
        return
    lower = settings.lower or [-math.inf] * n
    upper = settings.upper or [math.inf] * n
    for name, v, lo, hi in zip(param_names, settings.p0, lower, upper):
        if not lo <= v <= hi:
            side, bound = ("lower", lo) if v < lo else ("upper", hi)
            raise RequestError(
                "p0", f"parameter '{name}' = {v!r} is beyond its {side} bound {bound!r} (allowed: {lo!r} <= {name} <= {hi!r})"
            )


# -- fit keywords -----------------------------------------------------------------------
def bounds_of(settings: FitSettings, n_params: int):
    import math

    if settings.lower is None and settings.upper is None:
        return (-math.inf, math.inf)
    lower = settings.lower if settings.lower is not None else [-math.inf] * n_params
    upper = settings.upper if settings.upper is not None else [math.inf] * n_params
    return (lower, upper)


def fit_keywords(settings: FitSettings) -> dict[str, Any]:
    """Inline overrides that fit() takes as keywords."""
    updates = settings.overrides.as_updates()
    return {k: v for k, v in updates.items() if k in _FIT_KEYWORDS}


def data_keywords(data: DataSpec) -> dict[str, Any]:
    """How nlsq_tasks.io reads this data set (format and the x/y/sigma names)."""
    fmt = None if data.format == DataFormat.AUTO else data.format.value
    # None: the format's default (nlsq_tasks.io's rule: 'x', 'y', and 'sigma' when the file
    # has one; npy columns 0, 1, 2); sigma_key False ignores a sigma column.
    sigma = False if data.ignore_sigma else data.sigma
    return {"format": fmt, "x_key": data.x, "y_key": data.y, "sigma_key": sigma}
