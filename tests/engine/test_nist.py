"""NIST StRD nonlinear regression: certified digits reproduced from both starting points.

Each problem is fitted through the user's entry point as a user would, with no options:
``nlsq_tasks.fit(f, x, y, p0=start)`` (workflow "auto", which routes these small problems to
the standard strategy, default tolerances and max_nfev). The LRE table is printed at the end
of the test session (terminal summary) and with ``pytest -s``.

Requirement: parameter LRE >= 6 on every problem from both starts.
"""

from __future__ import annotations

import numpy as np
import pytest

import nlsq_tasks  # noqa: F401  (float64)
from nlsq_tasks import fit

from run_summary import write_summary_section  # tests/ is on sys.path (tests/conftest.py)
from nist import MODELS, available, lre, parse_dat  # tests/engine is on sys.path (rootdir import mode)

FILES = available()
pytestmark = pytest.mark.skipif(len(FILES) == 0, reason="NIST data folder (../shared/data/nist) not present")

ROWS: dict[tuple[str, str], dict] = {}  # (problem, start) -> row


def _fit(problem, start):
    res = fit(MODELS[problem.name], problem.x, problem.y, p0=start)
    assert res.strategy == "standard" and len(res.starts) <= 1  # one start: the table measures the solver
    return res


@pytest.fixture(scope="module")
def results():
    out = {}
    for path in FILES:
        prob = parse_dat(path)
        for label, start in (("start1", prob.start1), ("start2", prob.start2)):
            res = _fit(prob, start)
            row = {
                "lre_params": float(lre(res.popt, prob.certified).min()),
                "lre_stderr": float(lre(res.perr, prob.certified_sd).min()),
                "lre_rss": float(lre(2 * res.cost, prob.certified_rss)),
                "status": res.status.name,
                "nfev": res.nfev,
            }
            out[(prob.name, label)] = row
            ROWS[(prob.name, label)] = row
    print("\n" + format_table(ROWS))
    write_summary_section("NIST StRD accuracy", format_table(ROWS))  # printed at the end of the run
    return out


def format_table(rows) -> str:
    names = sorted({k[0] for k in rows})
    head = f"{'problem':<10} | {'start 1: params  stderr  rss  status  nfev':<44} | start 2: params  stderr  rss  status  nfev"
    lines = ["NIST StRD LRE (digits), nlsq_tasks.fit(f, x, y, p0=start), no options", head, "-" * len(head)]
    for n in names:
        cells = []
        for s in ("start1", "start2"):
            r = rows.get((n, s))
            cells.append(
                "-" if r is None else
                f"{r['lre_params']:6.1f} {r['lre_stderr']:7.1f} {r['lre_rss']:5.1f}  {r['status']:<9}{r['nfev']:5d}"
            )  # fmt: skip
        lines.append(f"{n:<10} | {cells[0]:<44} | {cells[1]}")
    return "\n".join(lines)


def test_all_sixteen_files_parse():
    assert len(FILES) == 16
    for path in FILES:
        prob = parse_dat(path)
        p = len(prob.certified)
        assert p == len(prob.start1) == len(prob.start2) == len(prob.certified_sd) >= 2
        assert prob.name in MODELS and prob.y.size >= 6 and np.all(np.isfinite(prob.y))
        # the certified solution reproduces the certified residual sum of squares
        f = np.asarray(MODELS[prob.name](prob.x, *prob.certified))
        assert np.sum((f - prob.y) ** 2) == pytest.approx(prob.certified_rss, rel=1e-6)


def test_start2_accuracy(results):
    lres = [r["lre_params"] for (n, s), r in results.items() if s == "start2"]
    assert len(lres) == 16
    assert min(lres) >= 6, lres


def test_start1_accuracy(results):
    lres = [r["lre_params"] for (n, s), r in results.items() if s == "start1"]
    assert len(lres) == 16
    assert min(lres) >= 6, lres
