# Two set-up commands (see README): `make demo` runs the main job on the embedded default data,
# `make test` runs the test suite. Both create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export RAY_AUTH_MODE ?= disabled
export DVC_NO_ANALYTICS ?= 1
export PYTHONUNBUFFERED ?= 1

.PHONY: demo test lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU build of torch, pinned: an unpinned torch pulls gigabytes of CUDA packages.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ldeq demo

# Two pytest-xdist workers: the tests of the session Ray cluster run in order on one of them, each other test module
# is one unit of work (tests/conftest.py); TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup --no-loadscope-reorder)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy ldeq_core ldeq_shared serve

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
