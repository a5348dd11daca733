# The README's two commands. PYTHON may name another interpreter (e.g. a venv's).
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# anomalib's console script beside the interpreter (works for a venv that is not activated)
ANOMALIB = $(shell $(PYTHON) -c "import pathlib, sys; print(pathlib.Path(sys.executable).with_name('anomalib'))")

.PHONY: install demo test lint

install:
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e ".[dev]"

# Trains and tests SSAD offline on the bundled demo subset of MVTec AD bottle; prints image/pixel AUROC and
# writes anomaly-map images under results/SSAD/MVTecAD/bottle/latest/images/.
demo: install
	$(ANOMALIB) train --config configs/ssad/demo_bottle.yaml

# Lint, then the default test suite (slow tests deselected). pytest's exit code 5 (no test collected) fails
# the target like any other failure.
test: install lint
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check anomalib_ssad tests benchmarks
	$(PYTHON) -m ruff format --check anomalib_ssad tests benchmarks
