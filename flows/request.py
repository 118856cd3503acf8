"""Typed requests for the flows: what a user (or the Prefect UI form) may ask for.

A request is a pydantic model, so Prefect renders it as a form (enums become drop-downs,
ranges and descriptions come from the fields) and rejects bad values before a run starts.
Everything that can be checked without touching data or storage is checked here; the
rest (the preset file, the model expression, the data file, the bucket) is checked by
the flow's first tasks, before any fit and before anything is written.

Credentials
-----------
fsspec options (``key``, ``secret``, ``endpoint_url``, ...) come from one of three places,
in increasing priority:

1. the environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``,
   instance roles): leave both fields below empty;
2. ``storage_options``: a :class:`prefect.types.SecretDict`; it is shown as ``**********``
   in the stored flow-run parameters, logs and reprs. Use it for local runs;
3. ``storage_options_block``: the name of a Prefect ``Secret`` block whose value is a
   JSON object of options. Use this for deployments: the UI then carries only the name.

Resolved options are handed to fsspec inside tasks and never logged, put in artifacts or
written with results (results store a redacted copy of the request).
"""

from __future__ import annotations

import enum
import json
import re
from typing import Any, Optional, Union

from prefect.types import SecretDict
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nlsq_tasks.engine.options import LOSSES
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


class DataFormat(str, enum.Enum):
    """How a data file is laid out (``auto``: from the file name's suffix)."""

    AUTO = "auto"
    NPY = "npy"
    NPZ = "npz"
    CSV = "csv"
    PARQUET = "parquet"


def _str_enum(name: str, values, doc: str) -> type[enum.Enum]:
    """A str enum whose members are the library's own values, so the UI form cannot drift
    from what the engine accepts."""
    cls = enum.Enum(name, {v.upper(): v for v in values}, type=str, module=__name__)
    cls.__doc__ = doc
    return cls


Goal = _str_enum(
    "Goal",
    [g.name.lower() for g in OptimizationGoal],
    "What the fit should favour (see ``nlsq_tasks.workflow.OptimizationGoal``).",
)
Loss = _str_enum("Loss", LOSSES, "Robust loss applied to the weighted residuals.")
StrategyChoice = _str_enum(
    "StrategyChoice",
    ["auto"] + [s.value for s in Strategy],
    "A strategy to force (``auto``: let the preset and the memory budget decide).",
)


def _shipped_preset_names() -> list[str]:
    try:
        from nlsq_tasks.workflow import list_presets

        names = list(list_presets())
    except Exception:  # the preset module may not be importable in a partial install
        names = []
    return names or ["auto", "standard", "quality", "fast", "large_robust", "streaming", "hpc_distributed"]


# The shipped presets as an enum, so the UI shows a drop-down; a path or URI to a user's
# YAML preset is accepted as a plain string next to it.
PresetName = enum.Enum("PresetName", {n.upper(): n for n in _shipped_preset_names()}, type=str)


class StorageCredentials(BaseModel):
    """Where fsspec credentials come from; empty fields mean "from the environment"."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # a value may hold a credential

    storage_options: SecretDict = Field(
        default_factory=lambda: SecretDict({}),
        description="fsspec options (key, secret, endpoint_url, client_kwargs...). Kept secret: "
        "never logged, never in artifacts or stored results. Prefer storage_options_block for deployments.",
        json_schema_extra={"writeOnly": True},  # JSON Schema's mark for a value that is never read back
    )
    storage_options_block: Optional[str] = Field(
        None,
        description="Name of a Prefect Secret block whose value is a JSON object of fsspec options "
        "(merged over storage_options).",
        pattern=r"^[a-z0-9][a-z0-9\-]{0,63}$",
    )

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


class DataSpec(StorageCredentials):
    """One data set: its URI, layout and the names of its x/y/sigma columns or keys."""

    uri: str = Field(
        ...,
        min_length=1,
        description="Local path or fsspec URL (file://, s3://bucket/key, memory://...) of a .npy, .npz, .csv or .parquet file. "
        "The worker's storage policy (NLSQ_STORAGE_PROTOCOLS, NLSQ_STORAGE_ROOTS) says which places are allowed; "
        "credentials never go in the URI.",
        examples=["./data.npz", "s3://bucket/run42/data.npz"],
        json_schema_extra=_URI_SCHEMA,
    )
    format: DataFormat = Field(DataFormat.AUTO, description="File layout; auto reads it from the suffix.")
    x: Optional[Union[int, str, list[Union[int, str]]]] = Field(
        None, description="x column/key: a name (npz member, csv/parquet column), a column index (npy), "
        "or a list of them for several features. Empty: 'x' (npy: column 0).",
    )
    y: Optional[Union[int, str]] = Field(None, description="y column/key. Empty: 'y' (npy: column 1).")
    sigma: Optional[Union[int, str]] = Field(
        None, description="Per-point sigma column/key. Empty: the file's 'sigma' (npy: column 2 of 3) if it has one."
    )
    ignore_sigma: bool = Field(False, description="Fit unweighted even if the file has a sigma column.")

    @field_validator("uri")
    @classmethod
    def _uri_without_credentials(cls, v: str) -> str:
        return _no_credentials("data.uri", v)

    @field_validator("x", "y", "sigma")
    @classmethod
    def _empty_is_default(cls, v: Any) -> Any:
        return None if v == "" or v == [] else v


class BatchDataSpec(StorageCredentials):
    """Many data sets of the same layout: a list of URIs, a glob over an fsspec URL, or one
    .npz file holding a stack (y of shape (K, n))."""

    uris: list[str] = Field(default_factory=list, max_length=10_000, description="Data set URIs.")
    glob: Optional[str] = Field(
        None, description="A glob over an fsspec URL, e.g. s3://bucket/runs/*.npz (added to uris)."
    )
    stack: Optional[str] = Field(
        None, description="One .npz file holding many data sets: y (K, n), x (n,) or (K, n), optional sigma. "
        "Used instead of uris/glob.",
    )
    format: DataFormat = DataFormat.AUTO
    x: Optional[Union[int, str, list[Union[int, str]]]] = Field(None, description="As DataSpec.x.")
    y: Optional[Union[int, str]] = Field(None, description="As DataSpec.y.")
    sigma: Optional[Union[int, str]] = Field(None, description="As DataSpec.sigma.")
    ignore_sigma: bool = False

    @field_validator("uris")
    @classmethod
    def _uris_without_credentials(cls, v: list[str]) -> list[str]:
        for i, u in enumerate(v):
            _no_credentials(f"data.uris[{i}]", u)
        return v

    @field_validator("glob")
    @classmethod
    def _glob_without_credentials(cls, v: Optional[str]) -> Optional[str]:
        return _no_credentials("data.glob", v)

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


class PresetOverrides(BaseModel):
    """Inline changes to the preset; empty fields keep the preset's values."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # a value may hold a credential

    strategy: StrategyChoice = Field(StrategyChoice.AUTO, description="Force a strategy (auto: preset, then memory budget).")
    tolerance: Optional[float] = Field(None, gt=0, lt=1, description="Sets ftol = xtol = gtol.")
    ftol: Optional[float] = Field(None, gt=0, lt=1)
    xtol: Optional[float] = Field(None, gt=0, lt=1)
    gtol: Optional[float] = Field(None, gt=0, lt=1)
    max_nfev: Optional[int] = Field(None, ge=1, le=1_000_000, description="Bound on function evaluations (streaming: passes).")
    n_starts: Optional[int] = Field(None, ge=1, le=1000, description="Multi-start count (1: a single start).")
    chunk_size: Optional[int] = Field(None, ge=1_000, le=1_000_000, description="Points per chunk (chunked and streaming).")
    devices: Optional[int] = Field(None, ge=1, le=4096, description="At most this many devices (GPUs) for one fit; empty: all.")
    loss: Optional[Loss] = Field(None, description="Robust loss.")
    f_scale: Optional[float] = Field(None, gt=0, description="Soft margin between inlier and outlier residuals.")
    validate_fit: Optional[bool] = Field(None, description="Run the QUALITY validation pass whatever the goal.")
    checkpoint_every: Optional[int] = Field(
        None, ge=1, le=1_000_000, description="Streaming: also checkpoint every N chunks within a pass (always at pass ends)."
    )

    def as_updates(self) -> dict[str, Any]:
        """Only what the user set, with the enums as their values."""
        out: dict[str, Any] = {}
        for name, value in self.model_dump(exclude_none=True).items():
            if name == "strategy" and value == StrategyChoice.AUTO:
                continue
            out[name] = value.value if isinstance(value, enum.Enum) else value
        tol = out.pop("tolerance", None)
        if tol is not None:
            for k in ("ftol", "xtol", "gtol"):
                out.setdefault(k, tol)
        return out


class FitSettings(BaseModel):
    """Everything about a fit except which data: shared by single and batch requests."""

    model_config = ConfigDict(extra="forbid", use_enum_values=False, hide_input_in_errors=True)

    model: str = Field(
        ...,
        min_length=1,
        max_length=2000,
        description="A built-in model name (e.g. exponential_decay), an expression in x such as "
        "'a*exp(-b*x) + c', or a name the deployment registered. Import paths are not accepted.",
        examples=["exponential_decay", "a*exp(-b*x) + c"],
    )
    p0: Optional[list[float]] = Field(None, max_length=1000, description="Initial parameters; empty: the model's guess.")
    lower: Optional[list[float]] = Field(None, max_length=1000, description="Lower bounds (-inf allowed); empty: unbounded.")
    upper: Optional[list[float]] = Field(None, max_length=1000, description="Upper bounds (inf allowed); empty: unbounded.")
    absolute_sigma: bool = Field(False, description="sigma is absolute (pcov not rescaled by the reduced chi-square).")
    preset: Union[PresetName, str] = Field(
        "auto",
        description="A shipped preset name, or the path/URI of a YAML preset file.",
    )
    overrides: PresetOverrides = Field(default_factory=PresetOverrides, description="Inline changes to the preset.")
    goal: Optional[Goal] = Field(None, description="Optimization goal; quality also runs the validation pass.")
    memory_limit_gb: Optional[float] = Field(
        None, gt=0, le=100_000, allow_inf_nan=False,
        description="Memory to plan for, in GB (default: detected free memory); a finite number in (0, 100000].",
    )
    storage_uri: Optional[str] = Field(
        None,
        description="Where checkpoints and results go (local dir or fsspec URL). Each run writes its results under "
        "<storage_uri>/runs/<run name>/; checkpoints go to <storage_uri>/checkpoints/, one directory per problem. "
        "Default: NLSQ_STORAGE_ROOT, or ./nlsq_results on the worker.",
        json_schema_extra=_URI_SCHEMA,
    )
    storage: StorageCredentials = Field(
        default_factory=StorageCredentials, description="Credentials for storage_uri (default: the environment)."
    )
    resume: bool = Field(True, description="Streaming: continue from the checkpoints under <storage_uri>/checkpoints.")
    plot: bool = Field(True, description="Write a PNG of data, fit and residuals (needs matplotlib).")
    executor: str = Field(
        "local",
        description="Where the passes run: 'local' (the flow's worker), 'local-cluster:N' (a temporary Dask "
                    "cluster of N worker processes) or a Dask scheduler address 'tcp://host:8786'. Dask workers read "
                    "their own chunks of the data and keep them in memory when the cluster holds them. A batch runs "
                    "its fit tasks there (prefect-dask).",
        examples=["local", "local-cluster:2", "tcp://scheduler:8786"],
    )
    on_failed_fit: FailedFit = Field(
        FailedFit.FAIL,
        title="When the fit fails",
        description="A fit that did not succeed (not converged, non-finite model, out of evaluations) still stores its "
        "result. 'fail': the run ends FAILED (the CLI exits 1). 'warn': the run ends COMPLETED in a state named "
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

    @field_validator("executor")
    @classmethod
    def _executor_choice(cls, v: str) -> str:
        from nlsq_tasks.dask import ExecutorChoiceError, parse_executor

        try:
            return str(parse_executor(v))
        except ExecutorChoiceError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("preset", mode="before")
    @classmethod
    def _preset_name_or_path(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.strip()
            if not v:
                raise ValueError("preset must be a preset name or a path/URI to a YAML preset, got ''")
            _no_credentials("preset", v)
        return v

    @field_validator("storage_uri")
    @classmethod
    def _storage_without_credentials(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not v.strip():
            raise ValueError("storage_uri must be a path or URI, or left empty for the default")
        return _no_credentials("storage_uri", v)

    @model_validator(mode="after")
    def _bounds_agree(self) -> "FitSettings":
        for side in ("lower", "upper"):
            values = getattr(self, side)
            if values is not None and self.p0 is not None and len(values) != len(self.p0):
                raise ValueError(f"{side} has {len(values)} values but p0 has {len(self.p0)}; they must have the same length")
        if self.lower is not None and self.upper is not None:
            if len(self.lower) != len(self.upper):
                raise ValueError(f"lower has {len(self.lower)} values and upper {len(self.upper)}; they must match")
            bad = [i for i, (lo, hi) in enumerate(zip(self.lower, self.upper)) if not lo < hi]
            if bad:
                i = bad[0]
                raise ValueError(f"bounds: lower[{i}]={self.lower[i]} must be < upper[{i}]={self.upper[i]}")
        if self.p0 is not None:
            import math

            bad = [i for i, v in enumerate(self.p0) if not math.isfinite(v)]
            if bad:
                raise ValueError(f"p0[{bad[0]}]={self.p0[bad[0]]} is not finite; p0 must be finite numbers")
        return self

    @property
    def preset_spec(self) -> str:
        return self.preset.value if isinstance(self.preset, enum.Enum) else str(self.preset)

    @property
    def goal_name(self) -> Optional[str]:
        return None if self.goal is None else self.goal.value


class FitRequest(FitSettings):
    """One fit: a model on one data set, planned by a preset and a memory budget."""

    data: DataSpec = Field(..., description="The data set to fit.")

    def redacted(self) -> dict[str, Any]:
        """The request as JSON-safe data with every credential replaced (for results and artifacts)."""
        return _redact(self.model_dump(mode="json"))


class BatchFitRequest(FitSettings):
    """One model on many data sets; each gets its own result directory under storage_uri."""

    data: BatchDataSpec = Field(..., description="The data sets to fit.")
    max_concurrency: int = Field(2, ge=1, le=64, description="How many batches run at once.")
    batch_size: Optional[int] = Field(
        None, ge=1, le=1_000_000,
        description="Data sets per batch task (one compiled fit_batch each). Empty: enough for about 100 tasks "
        "in all, at least 100 data sets per task.",
    )
    global_shared: Optional[list[str]] = Field(
        None, max_length=100,
        description="Parameter names shared by every data set: one global fit across the listed data sets "
        "instead of one fit per data set.",
    )

    def redacted(self) -> dict[str, Any]:
        return _redact(self.model_dump(mode="json"))


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
