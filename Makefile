# `make demo` and `make test` each set everything up on a fresh clone.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench
DEMO_DIR ?= runs/demo
# what the tests exercise: the optional teachers, curation, Ray and the viewer run for real in CI
TEST_EXTRAS := dev,serve,curate,transnetv2,ray,viewer

.PHONY: install demo test test-fast lint bench bench-noise bench-rl clean

$(STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	# torch and torchvision first, pinned here only (the package itself takes ranges)
	$(PYTHON) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PYTHON) -m pip install --quiet -e '.[$(TEST_EXTRAS)]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vstar demo --output-dir $(DEMO_DIR)

test: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(PYTHON) -m pytest -q

test-fast: $(STAMP)
	$(PYTHON) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

$(BENCH_STAMP): $(STAMP)
	$(PYTHON) -m pip install --quiet -e '.[$(TEST_EXTRAS),bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(PYTHON) bench/run_all.py

# controlled experiments (each under 15 minutes on 2 cores; figures go to bench/results.json)
bench-noise: $(STAMP)
	$(PYTHON) bench/experiment_noise.py
	$(PYTHON) bench/experiment_retrieval.py

bench-rl: $(STAMP)
	$(PYTHON) bench/experiment_rl.py

clean:
	rm -rf $(VENV) runs .pytest_cache
