"""The nlsq-flow console script, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


from flow_helpers import write_npz

BIN = Path(sys.executable).with_name("nlsq-flow")


def _cli(*args, env=None, timeout=600):
    exe = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "flows.cli"]
    return subprocess.run(exe + [str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def _cli_on_a_terminal(*args, env=None, timeout=600):
    """The console script with stderr on a pseudo-terminal (as in a shell), stdout piped."""
    import pty
    import select

    exe = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "flows.cli"]
    master, slave = pty.openpty()
    proc = subprocess.Popen(exe + [str(a) for a in args], stdout=subprocess.PIPE, stderr=slave,
                            stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    os.close(slave)
    chunks = []
    while True:  # drain the terminal while the command runs, or it blocks on a full buffer
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the other end closed
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    stdout = proc.communicate(timeout=timeout)[0]
    os.close(master)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout.decode(), b"".join(chunks).decode(errors="replace"))


def test_presets_lists_and_shows(capsys):
    from flows.cli import main
    from nlsq_tasks.workflow import list_presets

    out = _cli("presets")  # once as a console script
    assert out.returncode == 0, out.stderr
    listed = [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
    assert listed == list_presets()
    assert main(["presets", "quality"]) == 0
    shown = capsys.readouterr().out
    assert "n_starts: 20" in shown and "validate: true" in shown
    assert main(["presets", "no_such"]) == 2
    assert "unknown preset" in capsys.readouterr().err


def test_demo_on_a_fresh_home_then_inspect(tmp_path):
    """`make run`'s command: no server configured, no PREFECT_HOME -> Prefect's temporary local server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["HOME"] = str(tmp_path / "home")  # nothing from the developer's ~/.prefect
    exe = [str(BIN)] if BIN.exists() else [sys.executable, "-m", "flows.cli"]
    demo_dir = tmp_path / "demo"
    out = subprocess.run(exe + ["demo", "--n", "20000", "--dir", str(demo_dir)], capture_output=True, text=True,
                         timeout=600, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "[[Variables]]" in out.stdout and "results:" in out.stdout
    results = Path(next(line.split(": ", 1)[1] for line in out.stdout.splitlines() if line.startswith("results:")))
    assert (results / "manifest.json").exists()
    assert (demo_dir / "prefect_home").is_dir()  # PREFECT_HOME pointed into the demo directory
    assert "Concurrency limits" not in out.stderr
    assert "\r[" not in out.stderr  # no progress bar when stderr is not a terminal

    shown = _cli("inspect", results.parent)
    assert shown.returncode == 0, shown.stderr
    assert "manifest: created" in shown.stdout and "a " in shown.stdout and "status: " in shown.stdout


def test_run_and_inspect_checkpoints(tmp_path, prefect_api_url):
    data = write_npz(tmp_path / "d.npz", 3000)
    storage = tmp_path / "out"
    out = _cli_on_a_terminal("run", "--data", data, "--model", "a*exp(-b*x) + c", "--p0", 1, 1, 0, "--preset",
                             "streaming", "--chunk-size", 1000, "--storage", storage, "--sigma", "sigma",
                             "--absolute-sigma", "--no-plot", "--json", env={"PREFECT_API_URL": prefect_api_url})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["strategy"] == "streaming" and result["success"]
    # on a terminal: a bar redrawn in place, by pass, closed at 100 % with how the fit ended
    bar = out.stderr.replace("\r\n", "\n")  # the terminal turns each newline into CR LF
    assert "\r[" in bar and "pass 1 of at most" in bar and "chunk " in bar, bar[-2000:]
    final = bar.rsplit("\r", 1)[-1]
    assert "100.0%" in final and f"{result['status']} after" in final, final
    shown = _cli("inspect", storage / "checkpoints")
    assert shown.returncode == 0 and "checkpoints at" in shown.stdout and "fingerprint" in shown.stdout


def test_run_rejects_a_bad_request_without_running(capsys):
    from flows.cli import main

    assert main(["run", "--data", "x.npz", "--model", "os.system", "--memory-limit-gb", "-3"]) == 2
    err = capsys.readouterr().err
    assert "memory_limit_gb" in err and "import path" in err


def test_inspect_nothing_there(tmp_path, capsys):
    from flows.cli import main

    assert main(["inspect", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_fit_that_does_not_succeed_sets_the_exit_code(tmp_path, prefect_api_url):
    """Issue 14, item 3: exit 1 by default, 3 with --on-failed-fit warn; one line, no traceback."""
    data = write_npz(tmp_path / "d.npz", 2000)
    args = ["run", "--data", data, "--model", "a*exp(-b*x) + c", "--p0", 50, 9, -20, "--preset", "standard",
            "--max-nfev", 2, "--no-plot", "--storage", tmp_path / "out"]
    env = {"PREFECT_API_URL": prefect_api_url}
    failed = _cli(*args, env=env)
    assert failed.returncode == 1, failed.stderr[-3000:]
    assert "did not succeed" in failed.stderr and "Traceback" not in failed.stderr + failed.stdout
    warned = _cli(*args, "--on-failed-fit", "warn", "--json", env=env)
    assert warned.returncode == 3, warned.stderr[-3000:]
    assert json.loads(warned.stdout)["fit_failed"] is True and "completed with warnings" in warned.stderr
    assert len(list((tmp_path / "out" / "runs").iterdir())) == 2  # both results kept, side by side
