# One entry point for people and CI. `make test` and `make serve` work on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test unit e2e lint serve bench-decode clean

setup:
	bash scripts/setup.sh

## Set up (if needed) and run the whole test suite: unit, then end-to-end on a real tritonserver.
test: setup
	$(PY) -m pytest -ra $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest -ra tests/unit $(PYTEST_ARGS)

e2e: setup
	$(PY) -m pytest -ra tests/e2e $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check video_pipeline openai_frontend model_repository tests perf scripts

## Set up (if needed) and start tritonserver with this repository on loopback ports 8000/8001/8002.
serve: setup
	$(PY) -m video_pipeline.launch --model-repository model_repository

## Decoder vs peers (vLLM's OpenCV loader, decord, qwen-vl-utils, naive PyAV) -> perf/RESULTS.md
bench-decode: setup
	$(VENV)/bin/pip install -q -r requirements/perf.txt
	$(PY) perf/bench_decode.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
