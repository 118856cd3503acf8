"""Fixtures of the end-to-end tests: a Prefect server per test module (see _prefect_stack.py)."""

from __future__ import annotations

import sys

import pytest

from _prefect_stack import PrefectStack


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    # A failing e2e test shows the tails of the server, worker and CLI logs in its report.
    report = yield
    stack = getattr(item, "funcargs", {}).get("prefect_stack")
    if report.failed and isinstance(stack, PrefectStack):
        report.sections.append(("prefect stack logs", stack.dump_logs()))
    return report


@pytest.fixture(scope="module")
def prefect_stack(tmp_path_factory):
    stack = PrefectStack(tmp_path_factory.mktemp("prefect-stack"))
    try:
        try:
            stack.start_server()
        except BaseException:
            print(stack.dump_logs(), file=sys.stderr)
            raise
        yield stack
    finally:
        stack.stop()
