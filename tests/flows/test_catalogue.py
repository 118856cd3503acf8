"""A catalogue of bad and hostile inputs (issue 14, item 9), table-driven, across the
library, the request, the flow's checks, a few whole flow runs and the CLI.

Each case asserts: the error type, that the message (or ``.field``) names the field, that no
traceback reaches the user (a library error is raised by our own code, not from inside JAX,
NumPy or Prefect; the CLI prints one line and no ``Traceback``), that no secret or file
content is repeated, and that nothing was written or lost (the workspace -- with an earlier
result and checkpoints in its storage -- is byte-identical afterwards).

Most cases stop at the front door and take milliseconds; four run a whole flow.
"""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pytest

SECRET = "s3cr3t-VALUE-never-shown"


# -- the workspace -----------------------------------------------------------------------------
@dataclass
class Workspace:
    root: Path

    def __getattr__(self, name: str) -> str:  # ws.good -> path of a data file by stem
        for p in (self.root / "data").iterdir():
            if p.name.split(".")[0] == name:
                return str(p)
        raise AttributeError(name)

    @property
    def storage(self) -> str:
        return str(self.root / "storage")


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("catalogue")
    d = root / "data"
    d.mkdir()
    x = np.linspace(0, 1, 200)
    y = 2 * x + 1
    np.savez(d / "good.npz", x=x, y=y, sigma=np.full(200, 0.1))
    np.savez(d / "complex.npz", x=x, y=y + 1j)
    np.savez(d / "strings.npz", x=x, y=np.array([str(v) for v in y]))
    np.save(d / "objects.npy", np.array([[1, None]] * 5, dtype=object), allow_pickle=True)
    buf = io.BytesIO()
    np.save(buf, np.column_stack([x, y]))
    (d / "trunc.npy").write_bytes(buf.getvalue()[:-100])
    (d / "ragged.csv").write_text("x,y\n1,2\n3,4,5\n")
    (d / "text.csv").write_text("x,y\n1,2\n3,abc\n")
    (d / "fake.env").write_text(f"API_TOKEN={SECRET}\nDB_PASSWORD={SECRET}\n")
    (d / "data.bin").write_bytes(b"\x00\x01")
    np.save(d / "wide.npy", np.zeros((10, 5)))
    (d / "bad_preset.yaml").write_text(f"API_TOKEN={SECRET}\n")
    (d / "evil_preset.yaml").write_text(f"name: x\nstrategy: warp\nnote: {SECRET}\n")
    (d / "broken_preset.yaml").write_text(f"API_KEY: {SECRET}: more\n")
    (d / "value_preset.yaml").write_text(f"name: x\nstrategy: {SECRET}\n")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"x": [1.0, 2.0], "y": ["1", "2"]}), d / "strcol.parquet")
    except ImportError:
        pass
    # an earlier run's result and checkpoints: nothing may touch them
    old = root / "storage" / "runs" / "earlier-run"
    old.mkdir(parents=True)
    (old / "manifest.json").write_text('{"files": {"summary.json": {}}}')
    (old / "summary.json").write_text('{"success": true}')
    ck = root / "storage" / "checkpoints" / "p-0123456789abcdef0123"
    ck.mkdir(parents=True)
    (ck / "ckpt-0000000001-deadbeef.nlsqckpt").write_bytes(b"NLSQCKPT1\n{}\n")
    return Workspace(root)


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@pytest.fixture()
def allowed_roots(ws, monkeypatch):
    """The worker's policy for these cases: the workspace only."""
    monkeypatch.setenv("NLSQ_STORAGE_ROOTS", str(ws.root))
    monkeypatch.delenv("NLSQ_STORAGE_PROTOCOLS", raising=False)


# -- the cases -------------------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    layer: str  # library | request | check | flow | cli
    call: Callable[[Workspace], Any]
    error: type | tuple = Exception
    field: str = ""
    words: str = ""
    absent: tuple = (SECRET,)
    env: dict = dc_field(default_factory=dict)
    code: Optional[int] = None  # cli: the exit code


def _fit(**kw):
    def call(ws):
        from nlsq_tasks import fit

        x = np.linspace(0, 1, 50)
        args = {"f": "a*x+b", "xdata": x, "ydata": 2 * x + 1}
        args.update(kw)
        return fit(args.pop("f"), args.pop("xdata"), args.pop("ydata"), **args)

    return call


def _inspect(name, **kw):
    def call(ws):
        from nlsq_tasks.io import inspect_data

        return inspect_data(getattr(ws, name) if not name.startswith("/") else name, **kw)

    return call


def _request(**changes):
    def call(ws):
        from flows import FitRequest

        payload = {"data": {"uri": ws.good}, "model": "a*x+b", "storage_uri": ws.storage}
        for k, v in changes.items():
            v = v.format(ws=ws.root) if isinstance(v, str) and "{ws}" in v else v
            if k.startswith("data."):
                payload["data"][k[5:]] = v
            else:
                payload[k] = v
        return FitRequest.model_validate(payload)

    return call


def _batch(**data):
    def call(ws):
        from flows import BatchFitRequest

        return BatchFitRequest.model_validate({"data": data, "model": "a*x+b", "storage_uri": ws.storage})

    return call


def _policy(data=None, preset=None, storage=None, glob=None):
    def call(ws):
        from nlsq_tasks.io import check_glob

        from flows.resolve import check_policy

        if glob is not None:
            return check_glob(glob.format(ws=ws.root))
        return check_policy(None if data is None else data.format(ws=ws.root, good=ws.good), preset,
                            (storage or "{ws}/storage").format(ws=ws.root))

    return call


def _resolve(fn_name, *args):
    def call(ws):
        from flows import resolve as R
        from flows.request import FitSettings

        if fn_name == "preset":
            return R.load_request_preset(args[0].format(d=ws.root / "data"))
        if fn_name == "model":
            return R.resolve_request_model(args[0])
        settings = FitSettings.model_validate({"model": "a*x+b", **args[0]})
        return R.check_parameters(settings, ["a", "b"])

    return call


def _flow(**changes):
    def call(ws):
        from flows import fit_flow

        return fit_flow(_request(**changes)(ws), return_state=True)

    return call


def _cli(*argv):
    def call(ws):
        from flows.cli import main

        return main([a.format(ws=ws.root, good=ws.good, storage=ws.storage) for a in argv])

    return call


CASES = [
    # -- library: fit() --------------------------------------------------------------------------------
    Case("fit-p0-2d", "library", _fit(p0=[[1.0, 2.0]]), ValueError, "p0", "flat sequence"),
    Case("fit-p0-count", "library", _fit(p0=[1.0, 2.0, 3.0]), ValueError, "p0", "3 entries but the model has 2"),
    Case("fit-p0-nan", "library", _fit(p0=[float("nan"), 1.0]), ValueError, "p0", "finite"),
    Case("fit-p0-outside-bounds", "library", _fit(p0=[5.0, 0.5], bounds=([0, 0], [1, 1])), ValueError, "p0", "upper bound"),
    Case("fit-memory-str", "library", _fit(memory_limit_gb="4"), TypeError, "memory_limit_gb", "str"),
    Case("fit-memory-nan", "library", _fit(memory_limit_gb=float("nan")), ValueError, "memory_limit_gb", "nan"),
    Case("fit-memory-negative", "library", _fit(memory_limit_gb=-1.0), ValueError, "memory_limit_gb", "> 0"),
    Case("fit-complex-y", "library", _fit(ydata=np.ones(50) + 1j), TypeError, "ydata", "real numbers"),
    Case("fit-length-mismatch", "library", _fit(ydata=np.ones(10)), ValueError, "xdata", "same length"),
    Case("fit-sigma-zero", "library", _fit(sigma=np.zeros(50)), ValueError, "sigma", "> 0"),
    Case("fit-sigma-shape", "library", _fit(sigma=np.ones(3)), ValueError, "sigma", "shape"),
    Case("fit-unknown-keyword", "library", _fit(colour="red"), TypeError, "colour", "unexpected keyword"),
    Case("fit-unknown-workflow", "library", _fit(workflow="nope"), ValueError, "workflow", "unknown preset"),
    Case("fit-unknown-goal", "library", _fit(goal="fastest"), ValueError, "goal", "allowed"),
    Case("fit-bounds-crossed", "library", _fit(bounds=([1, 1], [0, 0])), ValueError, "bounds", "strictly less"),
    Case("fit-method", "library", _fit(method="simplex"), ValueError, "method", "allowed"),
    Case("fit-nan-data", "library", _fit(ydata=np.r_[np.ones(49), np.nan]), ValueError, "ydata", "first at index 49"),
    Case("fit-strategy", "library", _fit(strategy="warp"), ValueError, "strategy", "allowed"),
    Case("fit-dunder-model", "library", _fit(f="__import__('os').system('id')"), ValueError, "f", "dunder"),
    Case("fit-overflowing-model", "library", _fit(f="a*x**999999999", xdata=np.linspace(0.5, 2, 50), p0=[1.0]),
         ValueError, "p0", "at point"),
    Case("fit-max-nfev-zero", "library", _fit(max_nfev=0), ValueError, "max_nfev", ">= 1"),
    # -- library: reading data -------------------------------------------------------------------------
    Case("io-complex-npz", "library", _inspect("complex"), ValueError, "y_key", "complex numbers"),
    Case("io-string-npz", "library", _inspect("strings"), ValueError, "y_key", "strings"),
    Case("io-object-npy", "library", _inspect("objects"), ValueError, "objects.npy", "Python objects"),
    Case("io-string-parquet", "library", _inspect("strcol"), ValueError, "y_key", "strings"),
    Case("io-ragged-csv", "library", _inspect("ragged"), ValueError, "record 1", "3 fields"),
    Case("io-text-csv", "library", _inspect("text"), ValueError, "column 1", "text where a number belongs",
         absent=("abc",)),
    Case("io-truncated-npy", "library", _inspect("trunc"), ValueError, "trunc.npy", "truncated"),
    Case("io-dotenv-as-csv", "library", _inspect("fake", format="csv"), ValueError, "fake.env", "",
         absent=(SECRET, "API_TOKEN", "DB_PASSWORD")),
    Case("io-format", "library", _inspect("good", format="hdf5"), ValueError, "format", "allowed"),
    Case("io-missing-key", "library", _inspect("good", y_key="Y"), ValueError, "y_key", "available"),
    Case("io-wide-npy", "library", _inspect("wide"), ValueError, "x_key", "5 columns"),
    Case("io-unknown-extension", "library", _inspect("data"), ValueError, "format", "cannot tell"),
    Case("io-missing-file", "library", _inspect("/nonexistent/d.npz"), FileNotFoundError, "/nonexistent/d.npz", "not found"),
    Case("io-chunk-size", "library", lambda ws: __import__("nlsq_tasks.io", fromlist=["x"]).open_source(ws.good, chunk_size=0),
         ValueError, "chunk_size", "positive"),
    Case("io-keep-last", "library", lambda ws: __import__("nlsq_tasks.io", fromlist=["x"]).CheckpointStore(
        ws.storage + "/checkpoints", keep_last=0), ValueError, "keep_last", ">= 1"),
    # -- request (pydantic; the Prefect form and API run the same checks) -----------------------------------
    Case("req-uri-credentials", "request", _request(**{"data.uri": f"s3://AKIA:{SECRET}@bucket/d.npz"}), ValueError,
         "data.uri", "credentials in a URI are refused"),
    Case("req-storage-credentials", "request", _request(storage_uri=f"http://user:{SECRET}@host/x"), ValueError,
         "storage_uri", "credentials"),
    Case("req-preset-credentials", "request", _request(preset=f"https://u:{SECRET}@h/p.yaml"), ValueError, "preset",
         "credentials"),
    Case("req-memory-nan", "request", _request(memory_limit_gb=float("nan")), ValueError, "memory_limit_gb", "finite"),
    Case("req-memory-text", "request", _request(memory_limit_gb="four"), ValueError, "memory_limit_gb", "number"),
    Case("req-memory-zero", "request", _request(memory_limit_gb=0), ValueError, "memory_limit_gb", "positive number of GB"),
    Case("req-import-path", "request", _request(model="os.system"), ValueError, "model", "import path"),
    Case("req-empty-model", "request", _request(model=""), ValueError, "model", "at least 1"),
    Case("req-p0-nan", "request", _request(p0=[float("nan"), 1.0]), ValueError, "p0", "not finite"),
    Case("req-bounds-crossed", "request", _request(lower=[1, 1], upper=[0, 2]), ValueError, "lower", "must be <"),
    Case("req-bounds-length", "request", _request(p0=[1, 1], lower=[0]), ValueError, "lower", "has 2 parameters (a, b)"),
    Case("req-chunk-size", "request", _request(overrides={"chunk_size": 10}), ValueError, "advanced.chunk_size", "1000"),
    Case("req-tolerance", "request", _request(overrides={"tolerance": 2}), ValueError, "advanced.tolerance", "less than 1"),
    Case("req-unknown-override", "request", _request(overrides={"speed": 11}), ValueError, "advanced.speed", "not permitted"),
    Case("req-goal", "request", _request(goal="fastest"), ValueError, "goal", "fast"),
    Case("req-on-failed-fit", "request", _request(on_failed_fit="ignore"), ValueError, "on_failed_fit", "fail"),
    Case("req-retries", "request", _request(storage_retries=-1), ValueError, "storage_retries", "greater than or equal"),
    Case("req-timeout", "request", _request(storage_timeout_s=0), ValueError, "storage_timeout_s", "greater than 0"),
    Case("req-extra-field", "request", _request(colour="red"), ValueError, "colour", "not permitted"),
    Case("req-format", "request", _request(**{"data.format": "hdf5"}), ValueError, "data.format", "npy"),
    Case("req-block-name", "request", _request(storage={"storage_options_block": "Bad Name!"}), ValueError,
         "storage.storage_options_block", "pattern"),
    Case("req-batch-glob-credentials", "request", _batch(glob=f"s3://k:{SECRET}@b/*.npz"), ValueError, "data.glob",
         "credentials"),
    Case("req-batch-nothing", "request", _batch(), ValueError, "data", "a glob or a stack file"),
    # -- the flow's first checks (storage policy, preset, model, parameters) ---------------------------
    Case("policy-etc-passwd", "check", _policy(data="/etc/passwd"), ValueError, "data.uri", "NLSQ_STORAGE_ROOTS"),
    Case("policy-dotdot", "check", _policy(data="{ws}/data/../../../etc/hosts"), ValueError, "data.uri", "outside"),
    Case("policy-http-data", "check", _policy(data="http://127.0.0.1:9/d.csv"), ValueError, "data.uri",
         "NLSQ_STORAGE_PROTOCOLS"),
    Case("policy-ftp", "check", _policy(data="ftp://h/d.csv"), ValueError, "data.uri", "protocol 'ftp'"),
    Case("policy-http-results", "check", _policy(data="{good}", storage="http://127.0.0.1:9/put"), ValueError,
         "storage_uri", "read-only", env={"NLSQ_STORAGE_PROTOCOLS": "file,http"}),
    Case("policy-storage-outside", "check", _policy(data="{good}", storage="/var/tmp/elsewhere"), ValueError,
         "storage_uri", "outside"),
    Case("policy-preset-outside", "check", _policy(data="{good}", preset="/etc/nlsq/p.yaml"), ValueError, "preset",
         "outside"),
    Case("policy-glob", "check", _policy(glob="/etc/*"), ValueError, "data.glob", "outside"),
    Case("check-unknown-preset", "check", _resolve("preset", "no_such_preset"), ValueError, "preset", "unknown preset"),
    Case("check-preset-not-yaml-mapping", "check", _resolve("preset", "{d}/bad_preset.yaml"), ValueError, "preset",
         "not valid", absent=(SECRET, "API_TOKEN")),
    Case("check-preset-bad-value", "check", _resolve("preset", "{d}/evil_preset.yaml"), ValueError, "preset",
         "strategy", absent=(SECRET,)),
    Case("check-preset-broken-yaml", "check", _resolve("preset", "{d}/broken_preset.yaml"), ValueError, "preset",
         "line 1, column", absent=(SECRET,)),
    Case("check-preset-secret-value", "check", _resolve("preset", "{d}/value_preset.yaml"), ValueError, "preset",
         "strategy", absent=(SECRET,)),
    Case("check-unsafe-model", "check", _resolve("model", "a*x.__class__"), ValueError, "model", "dunder"),
    Case("check-p0-beyond-bound", "check", _resolve("params", {"p0": [2, 0], "lower": [0, 0], "upper": [1, 1]}),
         ValueError, "p0", "upper bound"),
    Case("check-lower-count", "check", _resolve("params", {"lower": [0, 0, 0]}), ValueError, "lower", "2 parameters"),
    # -- whole flow runs: FAILED, the field named, nothing written ----------------------------------------
    Case("flow-ragged-csv", "flow", _flow(**{"data.uri": "{ws}/data/ragged.csv"}), None, "record 1", "fields"),
    Case("flow-p0-beyond-bounds", "flow", _flow(p0=[5, 0], lower=[0, 0], upper=[1, 1]), None, "p0", "upper bound"),
    Case("flow-outside-policy", "flow", _flow(**{"data.uri": "/etc/hostname"}), None, "data.uri", "NLSQ_STORAGE_ROOTS"),
    Case("flow-complex-data", "flow", _flow(**{"data.uri": "{ws}/data/complex.npz"}), None, "y_key", "complex"),
    # -- the CLI: one line, an exit code, no traceback --------------------------------------------------------
    Case("cli-memory-nan", "cli", _cli("run", "--data", "{good}", "--model", "a*x+b", "--memory-limit-gb", "nan"),
         None, "memory_limit_gb", "finite", code=2),
    Case("cli-uri-credentials", "cli", _cli("run", "--data", f"s3://AKIA:{SECRET}@b/d.npz", "--model", "a*x+b"),
         None, "data.uri", "credentials", code=2),
    Case("cli-outside-roots", "cli", _cli("run", "--data", "/etc/hostname", "--format", "csv", "--model", "a*x+b",
                                          "--storage", "{storage}"), None, "data.uri", "NLSQ_STORAGE_ROOTS", code=2),
    Case("cli-import-path", "cli", _cli("run", "--data", "{good}", "--model", "os.system"), None, "model",
         "import path", code=2),
    Case("cli-http-storage", "cli", _cli("run", "--data", "{good}", "--model", "a*x+b", "--storage", "http://127.0.0.1:9/x"),
         None, "storage_uri", "read-only", env={"NLSQ_STORAGE_PROTOCOLS": "file,http"}, code=2),
    Case("cli-demo-negative-n", "cli", _cli("demo", "--n", "-5", "--dir", "{ws}/demo"), None, "--n", "outside", code=2),
    Case("cli-inspect-incomplete", "cli", _cli("inspect", "{ws}/storage/runs/earlier-run"), None, "INCOMPLETE",
         "manifest", code=1),
    Case("cli-inspect-nothing", "cli", _cli("inspect", "{ws}/data/nothing-here"), None, "nothing-here", "does not exist",
         code=2),
]


def test_the_catalogue_is_big_and_covers_every_layer():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)
    assert {c.layer for c in CASES} == {"library", "request", "check", "flow", "cli"}


def _innermost_file(tb) -> str:
    for _ in range(10_000):  # bounded walk to the innermost frame
        if tb.tb_next is None:
            break
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename


_OURS = (os.sep + "nlsq_tasks" + os.sep, os.sep + "flows" + os.sep, os.sep + "pydantic" + os.sep)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, ws, allowed_roots, monkeypatch, capsys, request):
    if case.id == "io-string-parquet":
        pytest.importorskip("pyarrow")
    if case.layer == "flow":
        request.getfixturevalue("prefect_harness")
    for k, v in case.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(ws.root)
    before = _snapshot(ws.root)

    if case.layer == "cli":
        try:
            code = case.call(ws)
        except SystemExit as exc:  # argparse refuses before the command runs
            code = exc.code
        out, err = capsys.readouterr()
        text = out + err
        assert code == case.code, text
        assert "Traceback" not in text
    elif case.layer == "flow":
        state = case.call(ws)
        assert state.is_failed(), state
        from flow_helpers import failure_message

        text = failure_message(state)
        assert "Traceback" not in text
    else:
        with pytest.raises(case.error) as info:
            case.call(ws)
        exc = info.value
        text = str(exc)
        named = getattr(exc, "field", None) == case.field
        assert named or case.field in text, text
        assert "Traceback" not in text
        origin = _innermost_file(info.tb)
        assert any(part in origin for part in _OURS), f"raised from {origin}, not at the front door"
    if case.layer in ("cli", "flow"):
        assert case.field in text, text
    assert case.words in text, text
    for secret in case.absent:
        assert secret not in text, text
    assert _snapshot(ws.root) == before, "a refused input wrote, changed or deleted files"
