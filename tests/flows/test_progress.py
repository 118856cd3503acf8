"""Progress that does not lie: a fraction of a known bound, never going back, plain words;
and a terminal bar that draws on a TTY only (no Prefect server needed)."""

from __future__ import annotations

import io
import math

from flows.progress import ProgressMeter, TerminalProgressBar, limits_from_plan


def _streaming_events(passes: int, n_chunks: int):
    for p in range(passes):
        for j in range(n_chunks):
            yield {"phase": "pass", "pass": p, "chunk": j, "n_chunks": n_chunks, "cost": 10.0 / (p + 1), "nit": p}
        yield {"phase": "pass_end", "pass": p, "chunk": n_chunks - 1, "n_chunks": n_chunks, "cost": 10.0 / (p + 1),
               "nit": p}


def test_streaming_progress_is_a_fraction_of_the_most_passes_and_never_goes_back():
    meter = ProgressMeter("pass", limit=11)  # max_passes 10, plus pass 0
    seen = [meter.update(e) for e in _streaming_events(4, 5)]
    assert all(b >= a for a, b in zip(seen, seen[1:]))
    assert seen[-1] == 4 / 11  # four whole passes of at most eleven
    assert meter.text == "pass 4 of at most 11, cost 2.5"
    assert meter.finish_text("FTOL", {"pass": 3, "cost": 2.5}) == "FTOL after 4 passes of at most 11, cost 2.5"


def test_multistart_refinements_are_segments_of_one_bar():
    meter = ProgressMeter("pass", limit=5, segments=2)
    first = [meter.update(e) for e in _streaming_events(3, 2)]
    second = [meter.update(e) for e in _streaming_events(2, 2)]  # the pass count starts again
    everything = first + second
    assert all(b >= a for a, b in zip(everything, everything[1:]))
    assert everything[-1] == (1 + 2 / 5) / 2
    assert meter.text.startswith("refinement 2 of 2: pass 2 of at most 5")


def test_in_memory_progress_counts_evaluations_and_hides_an_unknown_cost():
    meter = ProgressMeter("evaluation", limit=300)
    meter.update({"phase": "start", "pass": 0, "chunk": 0, "n_chunks": 1, "cost": math.nan, "nit": 0})
    assert meter.text == "iteration 0, evaluation 0 of at most 300"  # no "cost=nan"
    assert meter.update({"phase": "pass", "pass": 30, "nit": 12, "cost": 4.0}) == 0.1
    assert "pass pass" not in meter.text and meter.text.endswith("cost 4")


def test_limits_come_from_the_plan():
    assert limits_from_plan({"strategy": "streaming", "config": {"max_passes": 50}}, 3) == ("pass", 51, 1)
    assert limits_from_plan({"strategy": "streaming", "config": {"max_passes": 50}, "n_starts": 20}, 3) == ("pass", 51, 3)
    assert limits_from_plan({"strategy": "chunked"}, 3) == ("evaluation", 300, 1)
    assert limits_from_plan({"strategy": "standard"}, 3, max_nfev=40) == ("evaluation", 40, 1)


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_terminal_bar_draws_on_a_tty_with_time_per_pass_and_time_left():
    out = _Tty()
    bar = TerminalProgressBar(unit="pass", stream=out, min_interval=0.0)
    bar.t0 -= 10.0  # a run that has lasted 10 s: long enough for the estimates
    bar.update(0.1, "pass 1 of at most 10", step=1.0)
    bar._first_step = (bar._first_step[0] - 4.0, 1.0)  # the first pass ended 4 s ago
    bar.update(0.3, "pass 3 of at most 10", step=3.0)
    bar.close("FTOL after 4 passes of at most 11")
    text = out.getvalue()
    assert text.startswith("\r[") and text.endswith("\n")
    assert "/pass" in text and "left at most" in text and "FTOL after 4 passes" in text
    assert "100.0%" in text.rsplit("\r", 1)[-1]


def test_terminal_bar_is_silent_when_not_a_tty():
    out = io.StringIO()
    bar = TerminalProgressBar(unit="pass", stream=out, min_interval=0.0)
    bar.update(0.5, "pass 5", step=5.0)
    bar.close("done")
    assert out.getvalue() == ""
