# Two entry points for a fresh machine: `make demo` (set up + main job) and `make test` (set up + test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of PyTorch; CUDA users: see README ("Install").
TORCH_SPEC ?= torch==2.13.0
# Extra options of `egtr demo`, e.g. make demo DEMO_ARGS="--quick" (CI) or DEMO_ARGS="--restart".
DEMO_ARGS ?=

.PHONY: setup demo test lint docs clean

$(BIN)/egtr: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[all,dev,docs]"
	touch $(BIN)/egtr

setup: $(BIN)/egtr

demo: setup
	$(BIN)/egtr demo $(DEMO_ARGS)

# The files run in parallel, one worker process per core (pytest-xdist), the longest first (tests/conftest.py).
test: setup lint docs
	$(BIN)/python -m pytest -q -n auto --dist loadfile --no-loadscope-reorder --durations=15 tests

# The documentation site (mkdocs.yml) into site/; --strict: a broken link or docstring reference fails the build.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# Style and types, clean on every commit (CI runs them through `make test`).
lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src

clean:
	rm -rf $(VENV) demo_out .pytest_cache site
