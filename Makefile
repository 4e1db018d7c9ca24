# The two Quickstart commands: `make up` runs the lab stack, `make test` runs every test.
# Tests run torch single-threaded: the suite runs API, workers and pytest side by side on two
# cores, and OpenMP threads that outnumber the cores spin against each other.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned here (the CPU wheel on local disk); pyproject keeps a range.
TORCH_PIN ?= torch==2.13.0

$(BIN)/bolab: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH_PIN)"
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

.PHONY: install up test test-fast lint bench golden
install: $(BIN)/bolab

up: install
	$(BIN)/bolab up

test: install
	$(BIN)/ruff check .
	OMP_NUM_THREADS=1 $(BIN)/pytest -q

# The inner loop: the engine, and the routes in process on one real Redis (no worker, no uvicorn).
test-fast: install
	$(BIN)/ruff check .
	OMP_NUM_THREADS=1 $(BIN)/pytest -q -m fast

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python bench/engine.py

# Pin the golden runs again (tests/test_golden.py) after bumping bo_engine.NUMERICS_VERSION.
golden: install
	OMP_NUM_THREADS=1 $(BIN)/python -m tests.golden
