"""Helpers shared by the flow tests (a uniquely named module: every test folder has a conftest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TRUE = (2.5, 0.7, 0.3)
NOISE = 0.05


def decay_arrays(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 10.0, n)
    y = TRUE[0] * np.exp(-TRUE[1] * x) + TRUE[2] + rng.normal(0.0, NOISE, n)
    return x, y, np.full(n, NOISE)


def write_npz(path: Path, n: int, seed: int = 0) -> Path:
    x, y, s = decay_arrays(n, seed)
    np.savez(path, x=x, y=y, sigma=s)
    return path


def flow_run_artifacts(flow_run_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )


def flow_run_logs(flow_run_id, until: str | None = None, wait_s: float = 30.0) -> list[str]:
    """The run's log messages. Prefect ships logs in batches: flush them first, and with
    ``until``, read again (bounded) until a message starting with it has arrived."""
    import time

    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # sends what is queued and waits for it
    deadline = time.monotonic() + wait_s
    while True:
        out = _read_logs(flow_run_id)
        if until is None or any(m.startswith(until) for m in out) or time.monotonic() > deadline:
            return out
        time.sleep(0.5)


def _read_logs(flow_run_id) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    out = []
    with get_client(sync_client=True) as client:
        offset = 0
        for _ in range(100):  # bounded paging
            page = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                                    limit=200, offset=offset)
            out += [lg.message for lg in page]
            if len(page) < 200:
                break
            offset += 200
    return out


def read_flow_run(flow_run_id):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id)


def failure_message(state) -> str:
    """The exception text of a failed state (what the UI shows)."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc} | {state.message}"
    return state.message or ""
