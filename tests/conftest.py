"""Settings for the whole test session.

The flows refuse request locations outside the worker's storage policy (nlsq_tasks.io.policy).
Tests keep their files under pytest's temporary directory, so the session allows the working
directory and the system temporary directory as roots (the policy's own tests set their own).
Child processes (CLI runs, Prefect servers and workers) inherit this setting.
"""

import os
import tempfile

os.environ.setdefault("NLSQ_STORAGE_ROOTS", ",".join([os.getcwd(), os.path.realpath(tempfile.gettempdir())]))


# Summaries printed at the end of the run (the NIST LRE table): see run_summary.py.
from run_summary import pytest_configure, pytest_terminal_summary  # noqa: E402,F401  (pytest hooks)
