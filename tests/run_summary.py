"""Sections printed at the end of the test run, whoever ran the test.

Tests may run in pytest-xdist workers, whose terminal summary nobody sees. A test writes a
section as a file into one directory shared by the whole run (the controller makes it before
the workers start; they inherit the variable) and the controller prints them all.
"""

import os
import tempfile
from pathlib import Path

SUMMARY_DIR_VARIABLE = "NLSQ_TEST_SUMMARY_DIR"


def pytest_configure(config):
    if not os.environ.get(SUMMARY_DIR_VARIABLE):
        os.environ[SUMMARY_DIR_VARIABLE] = tempfile.mkdtemp(prefix="nlsq-test-summary-")


def write_summary_section(title: str, text: str) -> None:
    """Print ``text`` under ``title`` at the end of the test run (once, by the controller)."""
    directory = os.environ.get(SUMMARY_DIR_VARIABLE)
    if directory:
        Path(directory, title + ".txt").write_text(text)


def pytest_terminal_summary(terminalreporter, config):
    if hasattr(config, "workerinput"):  # an xdist worker: the controller prints
        return
    directory = os.environ.get(SUMMARY_DIR_VARIABLE)
    for path in sorted(Path(directory).glob("*.txt")) if directory else ():
        terminalreporter.write_sep("=", path.stem)
        terminalreporter.write_line(path.read_text())
