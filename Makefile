# Quick start: `make run` (start the dashboard) and `make test` (whole test suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8501
# localhost: only this machine can open the dashboard. HOST=0.0.0.0 shares it on the network.
HOST ?= localhost

.PHONY: run test venv bench clean

# The venv is rebuilt only when requirements.txt changes.
$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

venv: $(VENV)/.installed

run: venv
	$(PY) -m streamlit run app.py --server.address $(HOST) --server.port $(PORT)

test: venv
	$(PY) -m pytest

bench: venv
	$(PY) bench/throughput.py
	$(PY) bench/accuracy.py
	$(PY) bench/diagnose_latency.py

clean:
	rm -rf $(VENV) .cache .pytest_cache

# Screenshots of every page for the docs: the real-browser journey suite, saving to docs/screenshots/.
.PHONY: screenshots
screenshots: venv
	SCREENSHOT_DIR=docs/screenshots $(PY) -m pytest tests/test_journey.py -q
