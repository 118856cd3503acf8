"""Typed requests for the flows: what a user (or the Prefect UI form) may ask for.

A request is a pydantic model, so Prefect renders it as a form and rejects bad values
before a run starts. The form is laid out for a scientist: the data set, the model and
the preset first; the starting values and bounds by parameter name; everything else in
one "Advanced settings" section at the end, where every field is a plain typed input with
a default (``0`` or empty: "the preset's value") rather than a "float | None" picker.

Python callers keep the flat keywords they had (``goal=``, ``memory_limit_gb=``,
``storage_uri=``, ``overrides={...}``, lists for ``p0``/``lower``/``upper``): they are moved
into ``advanced`` on the way in, and read back through properties of the same names.

What a JSON schema cannot say ("p0 has as many values as the model has parameters",
"a parameter of that name exists") is checked while the request is validated, by
resolving the model: a wrong p0 fails the flow's parameter check in well under a second
with one message, before any task starts. The flow's first task checks again for callers
that bypass validation.

Credentials
-----------
fsspec options (``key``, ``secret``, ``endpoint_url``, ...) come from one of three places,
in increasing priority:

1. the environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``,
   instance roles): leave the fields empty;
2. ``storage_options``: a :class:`prefect.types.SecretDict`, for Python and CLI callers; it
   is shown as ``**********`` in stored flow-run parameters, logs and reprs. It is left out
   of the UI form (a raw JSON editor for secrets is the wrong tool there);
3. ``storage_options_block``: the name of a Prefect ``Secret`` block whose value is a JSON
   object of options: the form's one credential field, a plain text box for a name.

Resolved options are handed to fsspec inside tasks and never logged, put in artifacts or
written with results (results store a redacted copy of the request).
"""

from __future__ import annotations

import enum
import json
import math
import re
from typing import Any, Optional, Union

from prefect.types import SecretDict
from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator, model_validator

from nlsq_tasks.engine.loss import describe_losses
from nlsq_tasks.io import format_names
from nlsq_tasks.limits import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE
from nlsq_tasks.strategies import get_strategy
from nlsq_tasks.workflow import OptimizationGoal, Strategy

# Names a preset or registered model may have (also keeps them safe as path parts).
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")
# An import path ("pkg.mod:attr" or "pkg.mod.attr" with at least two dots and no
# operators): never accepted from a request, whatever the expression compiler would say.
_IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+(:[A-Za-z_]\w*)?$|^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

# A URI with a user[:password]@ part: refused by the form (JSON schema pattern, checked by the
# Prefect server before a run is created, so the value is never stored) and by pydantic.
_NO_USERINFO = r"^(?![a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*@)"
_URI_SCHEMA = {"pattern": _NO_USERINFO}


def _no_credentials(field: str, value: Optional[str]) -> Optional[str]:
    from nlsq_tasks.io.policy import has_credentials

    if isinstance(value, str) and has_credentials(value.strip()):
        from nlsq_tasks.io import redact_uri

        raise ValueError(
            f"{field}={redact_uri(value)!r}: credentials in a URI are refused (they would be stored with the "
            "run's parameters); put them in storage_options or a Prefect Secret block (storage_options_block)"
        )
    return value


class FailedFit(str, enum.Enum):
    """What a fit that did not succeed (not converged, non-finite, out of evaluations) does to the run."""

    FAIL = "fail"
    WARN = "warn"


# The model drop-down's entry that means "use the expression field".
EXPRESSION = "expression"
# The drop-downs' entry that means "whatever the preset says".
PRESET_DEFAULT = "preset"


def _str_enum(name: str, values, doc: str) -> type[enum.Enum]:
    """A str enum whose members are the library's own values, so the UI form cannot drift
    from what the engine accepts."""
    cls = enum.Enum(name, {v.upper(): v for v in values}, type=str, module=__name__)
    cls.__doc__ = doc
    return cls


DataFormat = _str_enum(
    "DataFormat",
    ["auto", *format_names()],
    "How a data file is laid out (`auto`: from the file name's suffix); the formats nlsq_tasks.io reads.",
)
Goal = _str_enum(
    "Goal",
    [PRESET_DEFAULT] + [g.name.lower() for g in OptimizationGoal],
    "What the fit should favour; `preset`: the preset's own goal.",
)
Loss = _str_enum("Loss", [PRESET_DEFAULT, *describe_losses()], "Robust loss applied to the weighted residuals.")
StrategyChoice = _str_enum(
    "StrategyChoice",
    ["auto"] + [s.value for s in Strategy],
    "A strategy to force (`auto`: let the preset and the memory budget decide).",
)


# -- the choices the form offers ------------------------------------------------------------
def _shipped_presets() -> dict[str, str]:
    """Shipped preset names and their one-line descriptions."""
    from nlsq_tasks.workflow import list_presets, load_preset

    return {name: load_preset(name).description for name in list_presets()}


def _builtin_models() -> dict[str, str]:
    """Built-in model names (plus the `exponential_decay` alias the docs use) -> formula, whose
    names are the model's parameters (what p0 and the bounds may name)."""
    from nlsq_tasks.models import get_model, list_models

    names = ["exponential_decay"] + [n for n in list_models() if n != "exponential_decay"]
    out = {}
    for n in names:
        try:
            m = get_model(n)
        except Exception:  # a registered name that takes options: not offered in the form
            continue
        out[n] = m.formula
    return out


PRESETS = _shipped_presets()
BUILTIN_MODELS = _builtin_models()
MODEL_CHOICES = list(BUILTIN_MODELS) + [EXPRESSION]


def _preset_help() -> str:
    # Blank lines between items: both UIs join single newlines into one line.
    lines = "\n\n".join(f"- `{n}`: {d.rstrip('.')}." for n, d in PRESETS.items())
    return f"How the fit is planned and how hard it tries:\n\n{lines}"


def _model_help() -> str:
    lines = "; ".join(f"`{n}`: `{f}`" for n, f in BUILTIN_MODELS.items())
    return (f"A built-in model, or `{EXPRESSION}` to type your own in the next field. The formulas name the "
            f"parameters (`exponential_decay` is another name for `exponential`): {lines}.")


# -- parameter values by name -------------------------------------------------------------
_NUMBER_WORDS = {"inf": math.inf, "+inf": math.inf, "infinity": math.inf, "+infinity": math.inf,
                 "-inf": -math.inf, "-infinity": -math.inf}


def _number(text: str, field: str) -> float:
    t = text.strip().lower()
    if t in _NUMBER_WORDS:
        return _NUMBER_WORDS[t]
    try:
        return float(t)
    except ValueError:
        raise ValueError(f"{field}: {text.strip()!r} is not a number (use e.g. 2.5, 1e-3, -inf or inf)") from None


def parse_parameter_values(value: Any, field: str) -> Union[None, list[float], dict[str, float]]:
    """A list (by position), a dict (by name), or text: ``"amplitude=2.5, rate=1.3"`` or
    ``"2.5, 1.3, 0.5"`` (commas or spaces); ``-inf``/``inf`` allowed. Empty: None."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if text.startswith(("{", "[")):
            try:
                return parse_parameter_values(json.loads(text), field)
            except json.JSONDecodeError:
                pass
        parts = [p for p in re.split(r"[,;\s]+", text) if p] if "=" not in text else \
            [p.strip() for p in re.split(r"[,;]", text) if p.strip()]
        if all("=" in p for p in parts):
            named = {}
            for p in parts:
                name, _, num = p.partition("=")
                named[name.strip()] = _number(num, f"{field}[{name.strip()}]")
            return named
        if any("=" in p for p in parts):
            raise ValueError(f"{field}: give every value by name (`rate=1.3, offset=0`) or none ({text!r} mixes both)")
        return [_number(p, field) for p in parts]
    if isinstance(value, dict):
        if not value:
            return None
        return {str(k): _number(str(v), f"{field}[{k}]") if isinstance(v, str) else float(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if len(value) == 0:
            return None
        return [_number(v, field) if isinstance(v, str) else float(v) for v in value]
    raise ValueError(f"{field}: expected numbers by name or position, got {type(value).__name__}")


def format_parameter_values(values: Optional[list[float]]) -> str:
    """The text form of positional values (what the form shows and ``model_dump`` writes)."""
    if values is None:
        return ""
    return ", ".join("inf" if v == math.inf else "-inf" if v == -math.inf else repr(float(v)) for v in values)


def _param_help(field: str) -> str:
    what = {
        "p0": "Starting values. Empty: the model's own guess from the data.",
        "lower": "Lower bounds; a parameter not named has none. `-inf` means no bound.",
        "upper": "Upper bounds; a parameter not named has none. `inf` means no bound.",
    }[field]
    example = {"p0": "amplitude=2.5, rate=1.3, offset=0", "lower": "rate=0, offset=-inf",
               "upper": "rate=inf, amplitude=10"}[field]
    return (f"{what} By name, e.g. `{example}` (names are the model's parameters, listed with each model "
            "above), or as numbers in the model's parameter order, e.g. `2.5, 1.3, 0`.")


# -- credentials --------------------------------------------------------------------------------
class StorageCredentials(BaseModel):
    """Where fsspec credentials come from; empty means "from the environment"."""

    model_config = ConfigDict(
        extra="forbid", title="Credentials", hide_input_in_errors=True,  # a value may hold a credential
        # storage_options stays a Python/CLI field: the form offers the block name only.
        json_schema_extra=lambda s: s.get("properties", {}).pop("storage_options", None),
    )

    storage_options_block: str = Field(
        "",
        title="Credentials block",
        description="Name of a Prefect `Secret` block holding a JSON object of fsspec options (`key`, `secret`, "
        "`client_kwargs`, ...). Empty: credentials from the environment (`AWS_*` variables, instance roles).",
        pattern=r"^$|^[a-z0-9][a-z0-9\-]{0,63}$",
    )
    storage_options: SecretDict = Field(
        default_factory=lambda: SecretDict({}),
        title="Storage options (secret)",
        description="fsspec options for Python and CLI callers. Kept secret: never logged, never in artifacts or "
        "stored results.",
        json_schema_extra={"writeOnly": True},  # JSON Schema's mark for a value that is never read back
    )

    @field_validator("storage_options_block", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return "" if v is None else v

    @field_validator("storage_options", mode="before")
    @classmethod
    def _empty_options(cls, v: Any) -> Any:
        # An empty SecretDict dumps as "": read it back as no options.
        return {} if v is None or v == "" else v

    def resolved_options(self) -> dict[str, Any]:
        """The plain options dict for fsspec. Call it inside tasks only; never log the result."""
        options = dict(self.storage_options.get_secret_value() or {})
        if self.storage_options_block:
            from prefect.blocks.system import Secret

            value = Secret.load(self.storage_options_block).get()
            if isinstance(value, str):
                value = json.loads(value)
            if not isinstance(value, dict):
                raise ValueError(
                    f"storage_options_block {self.storage_options_block!r} must hold a JSON object of "
                    f"fsspec options, found a {type(value).__name__}"
                )
            options.update(value)
        return options


_CREDENTIAL_FIELDS = ("storage_options_block", "storage_options")

_X_HELP = ("x column or key: a name (npz member, csv/parquet column), a column index (npy), or several names "
           "separated by commas for several features. Empty: `x` (npy: column 0).")
_Y_HELP = "y column or key. Empty: `y` (npy: column 1)."
_SIGMA_HELP = "Per-point uncertainty column or key. Empty: the file's `sigma` if it has one (npy: column 2 of 3)."


def _column(v: Any) -> Any:
    """A key as typed in the form: "" -> None, "3" -> 3, "a,b" -> ["a", "b"]."""
    if v is None or v == "" or v == []:
        return None
    if isinstance(v, str):
        parts = [p.strip() for p in v.split(",") if p.strip()]
        parts = [int(p) if p.lstrip("-").isdigit() else p for p in parts]
        return parts if len(parts) > 1 else (parts[0] if parts else None)
    return v


def _columns_then_credentials(schema: dict) -> None:
    """A data spec's own fields first in the form, then the columns, the credentials last
    (pydantic lists inherited fields first)."""
    props = schema.get("properties", {})
    for name in (*_COLUMN_FIELDS, *_CREDENTIAL_FIELDS):
        if name in props:
            props[name] = props.pop(name)
    props.pop("storage_options", None)


class _Columns(StorageCredentials):
    """The x, y and sigma columns (or keys) of data files, and their credentials."""

    x: Union[int, str, list[Union[int, str]], None] = Field(
        None, title="x column", description=_X_HELP, json_schema_extra=lambda s: _plain_text(s, ""))
    y: Union[int, str, None] = Field(None, title="y column", description=_Y_HELP,
                                     json_schema_extra=lambda s: _plain_text(s, ""))
    sigma: Union[int, str, None] = Field(None, title="sigma column", description=_SIGMA_HELP,
                                         json_schema_extra=lambda s: _plain_text(s, ""))
    ignore_sigma: bool = Field(False, title="Ignore sigma",
                               description="Fit unweighted even if the data have a sigma column.")

    @field_validator("x", "y", "sigma", mode="before")
    @classmethod
    def _empty_is_default(cls, v: Any) -> Any:
        return _column(v)


_COLUMN_FIELDS = ("x", "y", "sigma", "ignore_sigma")


class DataSpec(_Columns):
    """One data set: its URI, layout and the names of its x/y/sigma columns or keys."""

    model_config = ConfigDict(title="Data set", json_schema_extra=_columns_then_credentials)

    uri: str = Field(
        ...,
        min_length=1,
        title="Data file",
        description="Local path or fsspec URL (`file://`, `s3://bucket/key`, `memory://`) of a .npy, .npz, .csv "
        "or .parquet file. The worker's storage policy (`NLSQ_STORAGE_PROTOCOLS`, `NLSQ_STORAGE_ROOTS`) says which "
        "places are allowed; credentials never go in the URI.",
        examples=["./data.npz", "s3://bucket/run42/data.npz"],
        json_schema_extra=_URI_SCHEMA,
    )
    format: DataFormat = Field(DataFormat.AUTO, title="File format", description="`auto`: from the file name's suffix.")

    @field_validator("uri")
    @classmethod
    def _uri_without_credentials(cls, v: str) -> str:
        return _no_credentials("data.uri", v)


def _plain_text(schema: dict, default: Any) -> None:
    """Render a union-typed field as one text box (the validator parses what is typed)."""
    for k in ("anyOf", "oneOf", "type"):
        schema.pop(k, None)
    schema.update(type="string", default=default)


def _plain_number(schema: dict, kind: str, default: Any, position: int) -> None:
    """An optional number rendered as a plain input with a default (0 means "automatic")."""
    bounds = next((m for m in schema.pop("anyOf", []) if m.get("type") == kind), {})
    schema.update({k: v for k, v in bounds.items() if k != "type"}, type=kind, default=default, position=position)


def _plain_list(schema: dict, position: int) -> None:
    """An optional list of names rendered as a plain list input (empty: none)."""
    items = next((m for m in schema.pop("anyOf", []) if m.get("type") == "array"), {"type": "array"})
    schema.update(items, default=[], position=position)


def _text_box(position: int):
    def extra(schema: dict) -> None:
        _plain_text(schema, "")
        schema["position"] = position
    return extra


class BatchDataSpec(_Columns):
    """Many data sets of the same layout: a list of URIs, a glob over an fsspec URL, or one
    .npz file holding a stack (y of shape (K, n))."""

    model_config = ConfigDict(title="Data sets", json_schema_extra=_columns_then_credentials)

    glob: str = Field(
        "", title="Files matching",
        description="A glob over a local path or fsspec URL, e.g. `s3://bucket/runs/*.npz` or `./runs/*.csv`.",
    )
    uris: list[str] = Field(default_factory=list, max_length=10_000, title="More data files",
                            description="Data files to fit besides the glob's matches (local paths or fsspec URLs).")
    stack: str = Field(
        "", title="Stack file",
        description="Instead of files: one .npz holding many data sets, `y` of shape (K, n), `x` of shape (n,) or "
        "(K, n), optional `sigma`.",
    )
    format: DataFormat = Field(DataFormat.AUTO, title="File format", description="`auto`: from each file name's suffix.")

    @field_validator("glob", "stack", mode="before")
    @classmethod
    def _none_is_empty_text(cls, v: Any) -> Any:
        return "" if v is None else v

    @field_validator("uris")
    @classmethod
    def _uris_without_credentials(cls, v: list[str]) -> list[str]:
        for i, u in enumerate(v):
            _no_credentials(f"data.uris[{i}]", u)
        return v

    @field_validator("glob", "stack")
    @classmethod
    def _glob_without_credentials(cls, v: str, info) -> str:
        return _no_credentials(f"data.{info.field_name}", v)

    @model_validator(mode="after")
    def _something_to_fit(self) -> "BatchDataSpec":
        if not self.uris and not self.glob and not self.stack:
            raise ValueError("data: give a list of uris, a glob or a stack file (all are empty)")
        if self.stack and (self.uris or self.glob):
            raise ValueError("data: give either a stack file or uris/glob, not both")
        return self

    def one(self, uri: str) -> DataSpec:
        return DataSpec(
            uri=uri, format=self.format, x=self.x, y=self.y, sigma=self.sigma, ignore_sigma=self.ignore_sigma,
            storage_options=self.storage_options, storage_options_block=self.storage_options_block,
        )


# -- advanced settings -------------------------------------------------------------------------------
_ZERO = "0 keeps the preset's value."


class AdvancedSettings(BaseModel):
    """Changes to the preset and where results go; 0, empty or `preset` keep the preset's values."""

    # The title labels the section's switch in the UI: "Preset as it is" | "Change settings".
    model_config = ConfigDict(extra="forbid", title="Change settings", hide_input_in_errors=True)

    goal: Goal = Field(Goal.PRESET, title="Goal",
                       description="What the fit favours. `quality` also runs the validation pass.")
    strategy: StrategyChoice = Field(
        StrategyChoice.AUTO, title="Strategy",
        description="`auto`: the preset's, else the memory budget's choice; "
        + "; ".join(f"`{s.value}`: {get_strategy(s.value).summary}" for s in Strategy) + ".",
    )
    tolerance: float = Field(0.0, ge=0, lt=1, title="Tolerance",
                             description=f"Sets the three tolerances below at once. {_ZERO}")
    ftol: float = Field(0.0, ge=0, lt=1, title="Cost tolerance (ftol)",
                        description=f"Stop when the relative change of the cost falls below this. {_ZERO}")
    xtol: float = Field(0.0, ge=0, lt=1, title="Step tolerance (xtol)",
                        description=f"Stop when the relative change of the parameters falls below this. {_ZERO}")
    gtol: float = Field(0.0, ge=0, lt=1, title="Gradient tolerance (gtol)",
                        description=f"Stop when the scaled gradient falls below this. {_ZERO}")
    max_nfev: int = Field(0, ge=0, le=1_000_000, title="Most iterations",
                          description=f"Bound on function evaluations (streaming: passes over the data). {_ZERO}")
    n_starts: int = Field(0, ge=0, le=1000, title="Starts",
                          description=f"Multi-start count; 1 is a single start from the starting values. {_ZERO}")
    chunk_size: int = Field(0, ge=0, le=MAX_CHUNK_SIZE, title="Points per chunk",
                            description="Chunked and streaming fits: at least 1000. 0: the plan's size.")
    devices: int = Field(0, ge=0, le=4096, title="Most devices",
                         description="At most this many devices (GPUs) for one fit. 0: all of them.")
    per_device_batch: int = Field(0, ge=0, le=MAX_CHUNK_SIZE, title="Most points per device batch",
                                  description="Sharded fits: at most this many points in each tile a device "
                                  "folds. 0: the GPU configuration's batch.")
    loss: Loss = Field(Loss.PRESET, title="Loss", description="Robust loss on the weighted residuals: "
                       + "; ".join(f"`{name}`: `{summary}`" for name, summary in describe_losses().items()) + ".")
    f_scale: float = Field(0.0, ge=0, title="Loss scale",
                           description=f"Soft margin between inlier and outlier residuals (robust losses). {_ZERO}")
    validate_fit: bool = Field(False, title="Always validate",
                               description="Run the validation pass even when the goal and preset do not ask for it.")
    checkpoint_every: int = Field(0, ge=0, le=1_000_000, title="Checkpoint every N chunks",
                                  description="Streaming: also checkpoint within a pass (always at pass ends). 0: the preset's.")
    memory_limit_gb: float = Field(0.0, ge=0, le=100_000, allow_inf_nan=False, title="Memory to plan for (GB)",
                                   description="0: the free memory detected on the worker.")
    absolute_sigma: bool = Field(False, title="Absolute sigma",
                                 description="sigma is absolute: the covariance is not rescaled by the reduced chi-square.")
    preset_file: str = Field("", title="Own preset file",
                             description="Path or URL of your own YAML preset; replaces the preset chosen above.")
    storage_uri: str = Field(
        "", title="Results location",
        description="Local folder or fsspec URL for results and checkpoints. Each run writes its results under "
        "`<location>/runs/<run name>/` (the run name is `<data set>-<model>-<time>`); checkpoints go to "
        "`<location>/checkpoints/`. Empty: `NLSQ_STORAGE_ROOT`, or `./nlsq_results` on the worker.",
        json_schema_extra=_URI_SCHEMA,
    )
    storage: StorageCredentials = Field(default_factory=StorageCredentials, title="Results credentials",
                                        description="Credentials for the results location (empty: the environment).")
    resume: bool = Field(True, title="Resume", description="Streaming: continue from the checkpoints in the results location.")
    plot: bool = Field(True, title="Plot", description="Draw data, fit and residuals (shown on the run page).")
    executor: str = Field(
        "local", title="Where the passes run",
        description="`local`: the flow's worker; `local-cluster:N`: a temporary Dask cluster of N worker processes; "
        "or a Dask scheduler address such as `tcp://scheduler:8786`. Dask workers read their own chunks of the data "
        "and keep them in memory when the cluster holds them. A batch runs its fit tasks there (prefect-dask).",
        examples=["local", "local-cluster:2", "tcp://scheduler:8786"],
    )

    on_failed_fit: FailedFit = Field(
        FailedFit.FAIL,
        title="When the fit fails",
        description="A fit that did not succeed (not converged, non-finite model, out of evaluations) still stores its "
        "result. `fail`: the run ends FAILED (the CLI exits 1). `warn`: the run ends COMPLETED in a state named "
        "'Completed with warnings' (the CLI exits 3).",
    )
    storage_retries: int = Field(
        3, ge=0, le=20, title="Storage retries",
        description="How many times a storage call that failed transiently (stall, refused connection, 5xx, "
        "throttling) is retried, with exponential backoff; permanent failures (missing, denied) are never retried.",
    )
    storage_timeout_s: float = Field(
        60.0, gt=0, le=3600, allow_inf_nan=False, title="Storage timeout (s)",
        description="Timeout of each storage call (connect and read) on remote storage; a stalled endpoint fails "
        "the call after this long, then it is retried.",
    )

    @field_validator("storage_uri", "preset_file")
    @classmethod
    def _paths_without_credentials(cls, v: str, info) -> str:
        return _no_credentials(info.field_name, v)

    @field_validator("executor")
    @classmethod
    def _executor_choice(cls, v: str) -> str:
        from nlsq_tasks.dask import ExecutorChoiceError, parse_executor

        try:
            return str(parse_executor(v))
        except ExecutorChoiceError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="before")
    @classmethod
    def _none_is_default(cls, data: Any) -> Any:
        # Python callers (and older requests) wrote None for "not set".
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if v is not None}
        return data

    @field_validator("chunk_size")
    @classmethod
    def _chunk_floor(cls, v: int) -> int:
        if 0 < v < MIN_CHUNK_SIZE:
            raise ValueError(f"chunk_size={v} is too small; use at least {MIN_CHUNK_SIZE} points, or 0 for the plan's size")
        return v

    @field_validator("validate_fit", mode="before")
    @classmethod
    def _validate_none(cls, v: Any) -> Any:
        return False if v is None else v

    def as_updates(self) -> dict[str, Any]:
        """Only what the user set (non-zero, not `preset`/`auto`), with the enums as their values."""
        out: dict[str, Any] = {}
        for name in ("strategy", "ftol", "xtol", "gtol", "max_nfev", "n_starts", "chunk_size", "devices",
                     "per_device_batch", "loss", "f_scale"):
            value = getattr(self, name)
            value = value.value if isinstance(value, enum.Enum) else value
            if value in (0, 0.0, PRESET_DEFAULT) or (name == "strategy" and value == "auto"):
                continue
            out[name] = value
        if self.tolerance:
            for k in ("ftol", "xtol", "gtol"):
                out.setdefault(k, self.tolerance)
        return out

    # Read as optional values by the flow (0 means "not set").
    @property
    def validate_requested(self) -> Optional[bool]:
        return True if self.validate_fit else None


def _collapsed_section(schema: dict, position: int) -> None:
    """Render a section as collapsed: a two-way switch, "Preset as it is" (null, the default)
    or "Change settings" (the section's fields). Both Prefect UIs draw this switch for a
    nullable object, and it is the only collapsed form they offer; the section's own model
    reads null as "all defaults"."""
    ref = schema.pop("$ref")
    schema.pop("allOf", None)
    schema.update(position=position, default=None, anyOf=[
        {"type": "null", "title": "Preset as it is"},
        {"$ref": ref, "title": "Change settings"},
    ])


# Flat keywords Python callers may pass; they live in ``advanced``.
_ADVANCED_KEYS = set(AdvancedSettings.model_fields)


def _from_advanced(name: str) -> property:
    """A request's flat attribute (the name Python callers know) read from its advanced section."""
    return property(lambda self: getattr(self.advanced, name), doc=f"``advanced.{name}``")


class FitSettings(BaseModel):
    """Everything about a fit except which data: shared by single and batch requests."""

    model_config = ConfigDict(extra="forbid", use_enum_values=False, hide_input_in_errors=True)

    model: str = Field(
        ...,
        min_length=1,
        max_length=2000,
        title="Model",
        description=_model_help(),
        json_schema_extra={"enum": MODEL_CHOICES, "position": 1},
    )
    expression: str = Field(
        "",
        max_length=2000,
        title="Expression",
        description=f"With model `{EXPRESSION}`: a formula in `x`, e.g. `a*exp(-b*x) + c` (parameters are its other "
        "names, in order of appearance), a sum of built-ins such as `gaussian+gaussian+constant`, `polynomial:3`, or a "
        "model the deployment registered. Import paths are not accepted.",
        json_schema_extra={"position": 2},
    )
    preset: str = Field(
        "auto",
        title="Preset",
        description=_preset_help(),
        json_schema_extra={"enum": list(PRESETS), "position": 3},
    )
    p0: Optional[list[float]] = Field(None, title="Starting values", description=_param_help("p0"),
                                      json_schema_extra=_text_box(4))
    lower: Optional[list[float]] = Field(None, title="Lower bounds", description=_param_help("lower"),
                                         json_schema_extra=_text_box(5))
    upper: Optional[list[float]] = Field(None, title="Upper bounds", description=_param_help("upper"),
                                         json_schema_extra=_text_box(6))
    advanced: AdvancedSettings = Field(
        default_factory=AdvancedSettings, title="Advanced settings",
        description="Leave at `Preset as it is`, or choose `Change settings` to change the goal, tolerances, "
        "strategy, memory budget or where results go.",
        json_schema_extra=lambda s: _collapsed_section(s, 20),
    )

    # -- input: flat keywords, model/preset choices, parameters by name -----------------------------
    @model_validator(mode="before")
    @classmethod
    def _gather(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        advanced = data.pop("advanced", None) or {}
        advanced = dict(advanced.model_dump() if isinstance(advanced, BaseModel) else advanced)
        overrides = data.pop("overrides", None)
        if isinstance(overrides, BaseModel):
            overrides = overrides.model_dump()
        for k, v in (overrides or {}).items():
            advanced.setdefault(k, v)
        flat_memory = "memory_limit_gb" in data
        for k in list(data):
            if k in _ADVANCED_KEYS:
                advanced.setdefault(k, data.pop(k))
        # The form's 0 means "detected"; a Python caller's explicit 0 GB is a mistake.
        if advanced.get("memory_limit_gb") == 0 and flat_memory:
            raise ValueError("memory_limit_gb=0: give a positive number of GB, or leave it out for the free memory "
                             "detected on the worker")
        data["advanced"] = advanced
        model = data.get("model")
        if isinstance(model, str) and model.strip() == EXPRESSION:
            expression = str(data.get("expression") or "").strip()
            if not expression:
                raise ValueError("model: `expression` is chosen but the expression field is empty; type a formula "
                                 "in x such as `a*exp(-b*x) + c`, or choose a built-in model")
            data["model"] = expression
        return data

    @field_validator("model")
    @classmethod
    def _no_import_paths(cls, v: str) -> str:
        text = v.strip()
        if _IMPORT_PATH.match(text.replace(" ", "")):
            raise ValueError(
                f"model {text!r} looks like an import path; requests accept a built-in model name, an "
                "expression in x, or a name registered by the deployment (flows.register_model)"
            )
        return text

    @field_validator("preset", mode="before")
    @classmethod
    def _preset_name_or_path(cls, v: Any) -> Any:
        v = getattr(v, "value", v)
        if isinstance(v, str):
            v = v.strip()
            if not v:
                raise ValueError("preset must be a preset name or a path/URI to a YAML preset, got ''")
            _no_credentials("preset", v)
        return v

    @field_validator("p0", "lower", "upper", mode="before")
    @classmethod
    def _parse_values(cls, v: Any, info) -> Any:
        return parse_parameter_values(v, info.field_name)

    @field_serializer("p0", "lower", "upper")
    def _values_as_text(self, v: Optional[list[float]]) -> Optional[str]:
        # Text keeps -inf/inf through JSON (which has no infinity) and matches the form's field.
        return None if v is None else format_parameter_values(v)

    @model_validator(mode="wrap")
    @classmethod
    def _by_name(cls, data: Any, handler):
        """Named values become the model's parameter order; positional ones are counted."""
        named = {}
        if isinstance(data, dict):
            for field in ("p0", "lower", "upper"):
                if field in data:
                    parsed = parse_parameter_values(data[field], field)
                    if isinstance(parsed, dict):
                        named[field] = parsed
                        data = {**data, field: None}
        out = handler(data)
        if named or any(getattr(out, f) is not None for f in ("p0", "lower", "upper")):
            out._order_parameters(named)
        return out

    def _order_parameters(self, named: dict[str, dict[str, float]]) -> None:
        names = self.parameter_names(required=bool(named))
        if names is None:
            return
        n = len(names)
        for field, values in named.items():
            unknown = [k for k in values if k not in names]
            if unknown:
                raise ValueError(f"{field}: {unknown[0]!r} is not a parameter of model {self.model!r}; "
                                 f"its parameters are {', '.join(names)}")
            if field == "p0":
                missing = [k for k in names if k not in values]
                if missing:
                    raise ValueError(f"{field}: no value for {', '.join(missing)}; give all of {', '.join(names)} "
                                     "or leave the field empty for the model's guess")
                setattr(self, field, [float(values[k]) for k in names])
            else:
                edge = -math.inf if field == "lower" else math.inf
                setattr(self, field, [float(values.get(k, edge)) for k in names])
        for field in ("p0", "lower", "upper"):
            values = getattr(self, field)
            if values is not None and field not in named and len(values) != n:
                raise ValueError(f"{field} has {len(values)} values but model {self.model!r} has {n} parameters "
                                 f"({', '.join(names)}); give them in that order, or by name")
        self._check_values()

    def parameter_names(self, required: bool = False) -> Optional[list[str]]:
        """The model's parameter names, or None when it cannot be resolved here (then the flow's
        first task reports the model); ``required``: raise the model's error instead."""
        from .resolve import resolve_request_model

        try:
            return list(resolve_request_model(self.model).param_names)
        except ValueError:
            if required:
                raise
            return None

    def _check_values(self) -> None:
        if self.lower is not None and self.upper is not None:
            bad = [i for i, (lo, hi) in enumerate(zip(self.lower, self.upper)) if not lo < hi]
            if bad:
                i = bad[0]
                raise ValueError(f"bounds: lower[{i}]={self.lower[i]} must be < upper[{i}]={self.upper[i]}")
        if self.p0 is not None:
            bad = [i for i, v in enumerate(self.p0) if not math.isfinite(v)]
            if bad:
                raise ValueError(f"p0[{bad[0]}]={self.p0[bad[0]]} is not finite; starting values must be finite numbers")

    @model_validator(mode="after")
    def _bounds_agree(self) -> "FitSettings":
        for side in ("lower", "upper"):
            values = getattr(self, side)
            if values is not None and self.p0 is not None and len(values) != len(self.p0):
                raise ValueError(f"{side} has {len(values)} values but p0 has {len(self.p0)}; they must have the same length")
        if self.lower is not None and self.upper is not None and len(self.lower) != len(self.upper):
            raise ValueError(f"lower has {len(self.lower)} values and upper {len(self.upper)}; they must match")
        self._check_values()
        return self

    # -- what the flow reads (the names Python callers know) -------------------------------------
    @property
    def overrides(self) -> AdvancedSettings:
        return self.advanced

    @property
    def preset_spec(self) -> str:
        return self.advanced.preset_file.strip() or self.preset

    @property
    def goal(self) -> Optional[enum.Enum]:
        return None if self.advanced.goal == Goal.PRESET else self.advanced.goal

    @property
    def goal_name(self) -> Optional[str]:
        return None if self.goal is None else self.goal.value

    @property
    def memory_limit_gb(self) -> Optional[float]:
        return self.advanced.memory_limit_gb or None

    @property
    def storage_uri(self) -> Optional[str]:
        return self.advanced.storage_uri.strip() or None

    storage = _from_advanced("storage")
    resume = _from_advanced("resume")
    plot = _from_advanced("plot")
    absolute_sigma = _from_advanced("absolute_sigma")
    executor = _from_advanced("executor")
    on_failed_fit = _from_advanced("on_failed_fit")
    storage_retries = _from_advanced("storage_retries")
    storage_timeout_s = _from_advanced("storage_timeout_s")

    def redacted(self) -> dict[str, Any]:
        """The request as JSON-safe data with every credential replaced (for results and artifacts)."""
        return _redact(self.model_dump(mode="json"))


class FitRequest(FitSettings):
    """One fit: a model on one data set, planned by a preset and a memory budget."""

    model_config = ConfigDict(title="Fit request")

    data: DataSpec = Field(..., title="Data set", description="The file to fit and its columns.",
                           json_schema_extra={"position": 0})


class BatchFitRequest(FitSettings):
    """One model on many data sets; each gets its own result directory under the results location."""

    model_config = ConfigDict(title="Batch fit request")

    data: BatchDataSpec = Field(..., title="Data sets", description="The files to fit and their columns.",
                                json_schema_extra={"position": 0})
    max_concurrency: int = Field(2, ge=1, le=64, title="Batches at once",
                                 description="How many batch tasks run at the same time.",
                                 json_schema_extra={"position": 7})
    batch_size: Optional[int] = Field(
        None, ge=0, le=1_000_000, title="Data sets per batch task",
        description="One compiled fit of this many data sets per task. 0: enough for about 100 tasks in all, at "
        "least 100 data sets per task.",
        json_schema_extra=lambda s: _plain_number(s, "integer", 0, 8),
    )
    global_shared: Optional[list[str]] = Field(
        None, max_length=100, title="Shared parameters",
        description="Parameter names shared by every data set: one global fit across the data sets instead of one "
        "fit per data set. Empty: independent fits.",
        json_schema_extra=lambda s: _plain_list(s, 9),
    )

    @field_validator("batch_size", mode="before")
    @classmethod
    def _zero_is_auto(cls, v: Any) -> Any:
        return None if v in (0, "", None) else v

    @field_validator("global_shared", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [p.strip() for p in v.split(",") if p.strip()]
        return v or None


def redact(obj: Any) -> Any:
    """JSON-safe request data with every ``storage_options`` value replaced."""
    return _redact(obj)


def _redact(obj: Any) -> Any:
    # SecretDict already dumps as "**********"; this also drops the block *contents* we
    # never have here, and keeps block names (they are not secrets).
    if isinstance(obj, dict):
        return {k: ("**********" if k == "storage_options" and v else _redact(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_redact(v) for v in obj]
    return obj
