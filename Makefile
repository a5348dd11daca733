# The README's two commands. PYTHON may name another interpreter (e.g. a venv's).
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install demo test lint

install:
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e ".[dev]"

# Trains and tests SSAD offline on the bundled demo subset of MVTec AD bottle.
demo: install
	$(PYTHON) -m anomalib_ssad.demo

# Lint, then the default (fast) test suite; pytest's exit code 5 (no tests collected) counts as failure.
test: install lint
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check anomalib_ssad tests benchmarks
	$(PYTHON) -m ruff format --check anomalib_ssad tests benchmarks
