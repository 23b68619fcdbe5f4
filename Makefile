# sentiment_ops: `make demo` sets everything up and runs the main job; `make test` runs the tests.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.13.0 is a CPU build on this machine's disk; a bare `torch` can pull a multi-GB
# CUDA build. For GPUs see docs/install.md.
TORCH ?= torch==2.13.0

.PHONY: setup demo test test-fast lint typecheck docs bench-accuracy bench-serve clean

$(BIN)/sentops: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	@touch $@

setup: $(BIN)/sentops

# The main job on embedded defaults: the whole closed loop against a real server.
demo: setup
	$(BIN)/sentops demo

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not integration"

lint: setup
	$(BIN)/ruff check sentiment_ops tests benchmarks
	$(BIN)/ruff format --check sentiment_ops tests benchmarks

typecheck: setup
	$(BIN)/mypy sentiment_ops

docs: setup
	$(BIN)/python -m sentiment_ops.cli.docgen --write

bench-accuracy: setup
	$(BIN)/python benchmarks/accuracy.py

# Serving load (docs/benchmarks.md): BENCH_HOME holds a trained, registered model (copied,
# never written). The load generator is wrk, from Debian's packages.
BENCH_HOME ?= $(HOME)/.sentops
bench-serve: setup
	command -v wrk >/dev/null || (apt-get install -y wrk || sudo apt-get install -y wrk)
	flock /tmp/sentops-bench.lock $(BIN)/python benchmarks/serve_load.py --home $(BENCH_HOME) --seconds 20

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
