# Two commands do all the set-up on a fresh machine with python3 and pip only:
#   make run   - create .venv, install, run the demo fit flow on embedded defaults
#   make test  - create/update .venv with the test extra, run the whole suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test venv bench clean ui-check

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q -e '.[test,plot,parquet,dask]'
	rm -f $(VENV)/.installed-*; touch $(STAMP)

venv: $(STAMP)

run: venv
	$(VENV)/bin/nlsq-flow demo

# Worker processes for the suite (pytest-xdist); a test file runs whole on one worker, so its
# module fixtures (the NIST fits, a Prefect harness) are built once.
TEST_WORKERS ?= 2

test: venv
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25 tests

# The Prefect UI in headless Chromium (2-4 minutes; not part of `make test`). Needs Debian's
# browser: apt-get install -y chromium. Refreshes docs/screenshots.
ui-check: venv
	$(PY) -m pip install -q -e '.[ui-test]'
	$(PY) tests/e2e/ui_browser_check.py --screenshots docs/screenshots

bench: venv
	$(PY) bench/standard_vs_scipy.py

clean:
	rm -rf $(VENV) nlsq_checkpoints nlsq_results .nlsq_demo
