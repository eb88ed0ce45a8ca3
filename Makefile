# gan_cli: `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install test test-fast lint format train demo tensorboard bench clean

help:  ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/gan-train: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,optuna,mlflow,wandb,export]'
	touch $@

install: $(BIN)/gan-train  ## create .venv (if missing) and install the package, editable, with dev tools, Optuna, MLflow, W&B and ONNX

test: install  ## lint, type-check and run every test
	$(BIN)/ruff check gan_cli tests bench
	$(BIN)/ruff format --check gan_cli tests bench
	$(BIN)/mypy gan_cli bench
	OMP_NUM_THREADS=1 $(BIN)/pytest -q -n 2 $(ARGS)

test-fast: install  ## the tests not marked slow
	OMP_NUM_THREADS=1 $(BIN)/pytest -q -n 2 -m "not slow" $(ARGS)

lint: install  ## ruff lint and format check
	$(BIN)/ruff check gan_cli tests bench
	$(BIN)/ruff format --check gan_cli tests bench

format: install  ## format the code and fix what ruff can
	$(BIN)/ruff format gan_cli tests bench
	$(BIN)/ruff check --fix gan_cli tests bench

train: install  ## train the default experiment (DCGAN on MNIST; downloads MNIST on first use)
	$(BIN)/gan-train $(ARGS)

demo: install  ## one-minute run on the 8-Gaussian ring, no download
	$(BIN)/gan-train experiment=gaussians_demo $(ARGS)

tensorboard: install  ## open TensorBoard on outputs/
	$(BIN)/tensorboard --logdir outputs $(ARGS)

bench: install  ## CPU benchmarks (DATA=path to the data sets, default ./data)
	$(BIN)/python bench/epoch_time.py --data $(or $(DATA),./data)
	$(BIN)/python bench/throughput.py --data $(or $(DATA),./data)

clean:  ## remove caches and build files (keeps .venv and outputs/)
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
