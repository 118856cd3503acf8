"""The Prefect UI as a scientist sees it, in a real browser: a documented check, not a CI test.

What it does, on 127.0.0.1 only:

1. starts ``prefect server start`` (with its UI) in a temporary PREFECT_HOME;
2. creates the process pool and deploys ``infra/prefect.yaml`` exactly as the README says,
   then starts a process worker;
3. opens the deployment's **Custom run** form in headless Chromium (Debian's ``chromium``
   package, driven by Playwright for Python through ``executable_path``: no browser is
   downloaded), fills in the data file, the model, the preset and the starting values,
   and submits it;
4. waits on the run page for the run to complete, and asserts that the fit report and the
   plot image are visible on the run's Artifacts tab (the image really decoded: its natural
   width is > 0);
5. saves screenshots (form, run page, artifacts) when ``--screenshots DIR`` is given.

Run it (about 2-4 minutes on a 2-core machine)::

    apt-get install -y chromium          # Debian's browser; never a downloaded build
    make ui-check                        # installs the `ui-test` extra, runs this script
    # or: .venv/bin/python tests/e2e/ui_browser_check.py --screenshots docs/screenshots

Exit status 0 when every check passed; the last lines say what was seen.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _prefect_stack import REPO, PrefectStack  # noqa: E402

CHROMIUM = os.environ.get("NLSQ_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
DEPLOYMENT = "fast"
RUN_TIMEOUT_S = 420
TRUTH = (2.5, 1.3, 0.5)


class UIStack(PrefectStack):
    """The test stack with the server's UI switched on."""

    def _environment(self) -> dict:
        env = super()._environment()
        env["PREFECT_SERVER_UI_ENABLED"] = "true"
        # the worker's storage policy: the check's data and results live in its temporary folder
        env["NLSQ_STORAGE_ROOTS"] = str(self.root.parent)
        return env

    def start_server(self, attempts: int = 3) -> None:
        server = self.start_service("server", "server", "start", "--host", "127.0.0.1", "--port", str(self.port),
                                    "--analytics-off", "--no-scheduler")
        if not self._wait_healthy(server):
            raise RuntimeError(f"prefect server exited:\n{server.log.read_text()[-4000:]}")


def write_data(folder: Path, n: int = 20_000) -> Path:
    rng = np.random.default_rng(7)
    x = np.linspace(0.0, 5.0, n)
    y = TRUTH[0] * np.exp(-TRUTH[1] * x) + TRUTH[2] + rng.normal(0.0, 0.02, n)
    path = folder / "decay_20k.npz"
    np.savez(path, x=x, y=y, sigma=np.full(n, 0.02))
    return path


def deploy(stack: UIStack, worker_cwd: Path) -> str:
    stack.cli("work-pool", "create", "nlsq-local", "--type", "process")
    stack.cli("--no-prompt", "deploy", "--all", "--prefect-file", "infra/prefect.yaml")
    stack.start_service("worker", "worker", "start", "--pool", "nlsq-local", "--type", "process", cwd=worker_cwd)
    with stack.client() as client:
        return str(client.read_deployment_by_name(f"nlsq-fit/{DEPLOYMENT}").id)


def _field(page, label: str):
    """The form field whose label reads ``label`` (the schema's title, "(Optional)" aside)."""
    name = page.locator("span.schema-form-property__label").filter(
        has_text=re.compile(rf"^\s*{re.escape(label)}( \(Optional\))?\s*$")).first
    return name.locator("xpath=ancestor::div[contains(concat(' ', normalize-space(@class), ' '), "
                        "' schema-form-property ')][1]")


def _type(page, label: str, text: str) -> None:
    _field(page, label).locator("textarea, input").first.fill(text)


def _choose(page, label: str, option: str) -> None:
    """Pick ``option`` from the field's drop-down (it opens on click, or on the arrow key)."""
    _field(page, label).locator("button.p-select-button__control").first.click()
    options = page.locator(".p-select-option[role=option]")
    if not options.first.is_visible():
        page.keyboard.press("ArrowDown")
    options.filter(has_text=re.compile(rf"^\s*{re.escape(option)}\s*$")).first.click()


def _shot(page, path: Path, height: int | None = None) -> None:
    """A small PNG of the page (half size, 256 colours): good enough to read, light in the repository."""
    import io

    from PIL import Image

    size = page.viewport_size
    if height:
        page.set_viewport_size({"width": size["width"], "height": height})
    png = page.screenshot(full_page=False)
    if height:
        page.set_viewport_size(size)
    img = Image.open(io.BytesIO(png)).convert("RGB")
    img = img.resize((img.width // 2, img.height // 2), Image.LANCZOS)
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def browse(base: str, deployment_id: str, data: Path, results: Path, shots: Path | None, seen: list[str]) -> None:
    """The user's part: fill the Custom run form, submit, watch the run page, open the artifacts."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(f"{base}/deployments/deployment/{deployment_id}/run")
        expect(page.get_by_text("Data file", exact=True).first).to_be_visible()
        # -- fill the form as a user would: data, model, preset, starting values
        _type(page, "Data file", str(data))
        _choose(page, "Model", "exponential_decay")
        _choose(page, "Preset", "fast")
        _type(page, "Starting values", "amplitude=2, rate=1, offset=0")
        _type(page, "Upper bounds", "rate=inf, offset=10")
        if shots:
            page.get_by_text("Parameters", exact=True).first.scroll_into_view_if_needed()
            _shot(page, shots / "ui-form.png", height=2300)
        # the advanced section is collapsed until asked for
        expect(_field(page, "Results location")).to_have_count(0)
        page.get_by_role("button", name="Change settings", exact=True).first.click()
        _type(page, "Results location", str(results))
        seen.append("form: data, model, preset, starting values filled; advanced section opened for the "
                    "results location")
        page.get_by_role("button", name="Submit").click()
        # The UI confirms with a toast that links to the new run (or opens the run itself).
        run_link = page.locator("a[href*='/runs/flow-run/']").first
        run_link.wait_for(timeout=60_000)
        if "/runs/flow-run/" not in page.url:
            page.goto(base + run_link.get_attribute("href").removeprefix(base))
        seen.append(f"run page: {page.url}")
        # -- wait for the run to finish (reloading the page as a user would)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline:
            if page.get_by_text("Completed", exact=True).count() or page.get_by_text("Failed", exact=True).count():
                break
            time.sleep(3)
            page.reload()
        expect(page.get_by_text("Completed", exact=True).first).to_be_visible(timeout=5_000)
        title = page.locator("h1, .page-heading, [class*=breadcrumb]").first.inner_text()
        seen.append(f"run state: Completed; page heading: {' '.join(title.split())!r}")
        if shots:
            _shot(page, shots / "ui-run.png")
        # the log ends with one line that says how the fit went and where the results are
        outcome = page.get_by_text(re.compile(r"^fit converged \(")).first
        outcome.scroll_into_view_if_needed()
        expect(outcome).to_be_visible()
        seen.append(f"log: {outcome.inner_text()!r}")
        if shots:
            _shot(page, shots / "ui-logs.png")
        # -- the Artifacts tab: the report and the plot, visible
        page.locator("li.p-tab, [role=tab]").filter(has_text=re.compile(r"^\s*Artifacts\s*$")).first.click()
        page.wait_for_timeout(1500)
        if shots:
            page.locator("li.p-tab").filter(has_text=re.compile(r"^\s*Artifacts\s*$")).first.scroll_into_view_if_needed()
            _shot(page, shots / "ui-artifacts.png")
        # the run's artifacts are cards; the report opens with one click and shows the plot inline
        page.get_by_text(re.compile(r"^nlsq-report-")).first.click()
        page.wait_for_url("**/artifacts/**", timeout=30_000)
        heading = page.get_by_role("heading", name=re.compile("^Fit report")).first
        expect(heading).to_be_visible()
        img = page.locator("img[src^='data:image/png']").first
        expect(img).to_be_visible()
        width = img.evaluate("el => el.naturalWidth")
        assert width > 0, "the plot image did not decode"
        seen.append(f"report artifact: heading {heading.inner_text()!r} and the plot ({width} px wide) visible")
        if shots:
            _shot(page, shots / "ui-report.png", height=1500)
        page.go_back()
        page.locator("li.p-tab").filter(has_text=re.compile(r"^\s*Artifacts\s*$")).first.click()
        page.get_by_text(re.compile(r"^nlsq-plot-")).first.click()
        page.wait_for_url("**/artifacts/**", timeout=30_000)
        expect(page.locator("img[src^='data:image/png']").first).to_be_visible()
        seen.append("plot artifact: the plot visible")
        browser.close()


def run_check(shots: Path | None, keep: bool, server: str | None = None, deployment_id: str | None = None) -> int:
    root = Path(tempfile.mkdtemp(prefix="nlsq-ui-check-"))
    data = write_data(root)
    results = root / "results"
    stack = UIStack(root / "stack")
    seen: list[str] = []
    try:
        if server is None:
            stack.start_server()
            deployment_id = deploy(stack, root)
            server = stack.api_url.removesuffix("/api")
            seen.append(f"server {server}: local deployments applied, process worker polling")
        browse(server, deployment_id, data, results, shots, seen)
        stored = sorted(results.glob("runs/*/manifest.json"))  # <location>/runs/<run name>/
        assert len(stored) == 1, f"expected one run's results under {results}, found {stored}"
        seen.append(f"results stored in {stored[0].parent}")
        print("\n".join(["UI check passed:"] + [f"  - {s}" for s in seen]))
        return 0
    except Exception as exc:
        print("\n".join(["UI check FAILED:"] + [f"  - {s}" for s in seen] + [f"  ! {type(exc).__name__}: {exc}"]))
        print(stack.dump_logs()[-6000:])
        return 1
    finally:
        stack.stop()
        if not keep:
            import shutil

            shutil.rmtree(root, ignore_errors=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--screenshots", type=Path, help="folder for ui-form.png, ui-run.png, ui-artifacts.png")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (server logs, results)")
    p.add_argument("--server", help="use this running server (with deployments and a worker) instead of starting one")
    p.add_argument("--deployment-id", help="with --server: the id of its nlsq-fit/fast deployment")
    args = p.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"no browser at {CHROMIUM}: apt-get install -y chromium (or set NLSQ_CHROMIUM)", file=sys.stderr)
        return 2
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)
    os.chdir(REPO)
    return run_check(args.screenshots, args.keep, args.server, args.deployment_id)


if __name__ == "__main__":
    sys.exit(main())
