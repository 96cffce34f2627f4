# Quick start: `make run` (start the dashboard), `make test` (whole test suite) and `make test-fast`
# (every area's logic in under two minutes: the tests not marked slow, see pytest.ini).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8501
# localhost: only this machine can open the dashboard. HOST=0.0.0.0 shares it on the network.
HOST ?= localhost

.PHONY: run test test-fast venv bench clean worker

# The venv is rebuilt only when requirements.txt changes.
$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

venv: $(VENV)/.installed

run: venv
	$(PY) -m streamlit run app.py --server.address $(HOST) --server.port $(PORT)

# Two pytest-xdist workers, a file's tests together on one (tests/conftest.py schedules by file);
# PARALLEL= runs the suite serially.
PARALLEL ?= -n 2 --dist loadfile

test: venv
	$(PY) -m pytest $(PARALLEL)

test-fast: venv
	$(PY) -m pytest $(PARALLEL) -m "not slow"

# Workers without the dashboard: train the queued runs of runs/ (or $CXR_RUNS_DIR) as they come.
worker: venv
	$(PY) -m core worker

bench: venv
	$(PY) bench/first_paint.py
	$(PY) bench/estimate_accuracy.py
	$(PY) bench/throughput.py
	$(PY) bench/startup.py
	$(PY) bench/precision.py
	$(PY) bench/flops.py
	$(PY) bench/accuracy.py
	$(PY) bench/diagnose_latency.py
	$(PY) bench/clear_session.py
	$(PY) bench/ray_dispatch.py
	$(PY) bench/large_dataset.py
	$(PY) bench/studies.py
	$(PY) bench/epoch_metrics.py
	$(PY) bench/external_validation.py
	$(PY) bench/tta.py
	$(PY) bench/saliency_quality.py

# Uploads live in data/uploads (runs were trained on them); older versions kept them in .cache/uploads:
# those move over first, under the same names, where runs that name the old place find them.
clean:
	if [ -d .cache/uploads ]; then mkdir -p data/uploads && find .cache/uploads -maxdepth 1 -type f \
		-exec mv -n {} data/uploads/ \; ; fi
	rm -rf $(VENV) .cache .pytest_cache

# The README's screenshots, taken by the real-browser suites (tests/test_journey.py, test_studies_browser.py).
README_SHOTS := 01_home 02_dataset 03_train_live 07_train_stopped 08_runs_compare 09_evaluate_gradcam \
	10_diagnose_xray_heatmap 11_diagnose_photo_ood_warning 14_sweep_done studies_2_batch_size_answered \
	studies_3_train_cnn_layers runs_browser_2_filtered evaluate_1_intervals evaluate_4_model_card_export \
	curves_train_live
.PHONY: screenshots
screenshots: venv
	$(PY) -m pytest tests/test_journey.py tests/test_studies_browser.py tests/test_runs_browser.py \
		tests/test_evaluate_browser.py tests/test_curves.py -q
	for shot in $(README_SHOTS); do cp test-artifacts/screenshots/$$shot.png docs/screenshots/; done
