# Two commands (see README): `make main` runs the main job, `make test` the test suite.
# Both create .venv on first use with the CPU build of torch (no CUDA download) and
# fairmtl with its dev extras. GPU users: `make TORCH_SPEC=torch main`, or install your
# own torch and then `pip install -e '.[dev]'`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: main test test-slow toy multimnist lint clean-venv

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

main: multimnist

# The main job: STL baselines + 16 methods on MultiMNIST (2 seeds), then the table and plots.
multimnist: $(BIN)/.installed
	$(BIN)/fairmtl suite multimnist --config cpu --seeds 0,1 --out results

toy: $(BIN)/.installed
	$(BIN)/fairmtl toy --out results/toy

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m slow

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src/fairmtl

clean-venv:
	rm -rf $(VENV)
