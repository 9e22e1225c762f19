# One entry point for people and CI. `make test` and `make serve` work on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# PYTEST_WORKERS=2: `make test` in two processes (pytest-xdist, each module whole in one of them; each
# process starts its own session stack when it first needs one). 0, the default: one process, as CI runs it
# (two on 2 cores reach a load of ~19, under which tritonserver 2.51 once never finished loading llm).
PYTEST_WORKERS ?= 0

TINY := .tiny/qwen2_vl


.PHONY: setup tiny-model test unit e2e fuzz lint serve bench-decode perf-triton chaos range-soak clean

setup:
	bash scripts/setup.sh

## The tiny random-weight Qwen2-VL and Wan pipeline the tests and the default server use (built offline, ~5 s each).
tiny-model: setup
	$(PY) scripts/build_tiny_model.py --arch qwen2_vl --out $(TINY)
	$(PY) scripts/build_tiny_wan.py --out .tiny/wan

## Set up (if needed) and run the whole test suite: unit, then end-to-end on a real tritonserver.
test: setup
	$(PY) -m pytest -ra --durations=25 $(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS) --dist loadscope) $(PYTEST_ARGS)

unit: setup
	$(PY) -m pytest -ra tests/unit $(PYTEST_ARGS)

e2e: setup
	$(PY) -m pytest -ra tests/e2e $(PYTEST_ARGS)

## Longer fuzzing of the shim's request parsing than the suite's bounded run: random, FUZZ_EXAMPLES per
## property (the suite runs 250, seeded). Any 5xx fails with the body that caused it.
FUZZ_EXAMPLES ?= 20000
fuzz: setup
	VLT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) VLT_FUZZ_RANDOM=1 $(PY) -m pytest -ra -p no:cacheprovider --timeout=0 \
	  tests/frontend/test_fuzz_requests.py $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check video_pipeline openai_frontend model_repository tests perf scripts

## Set up (if needed) and serve this repository on the tiny model: the OpenAI-compatible API on
## http://127.0.0.1:8080/v1 (SERVE_ARGS: more flags, see `python -m openai_frontend --help`), with
## tritonserver behind it on loopback ports 8000 HTTP, 8001 gRPC, 8002 metrics.
SERVE_ARGS ?=
serve: tiny-model
	VLLM_CACHE_ROOT=$(CURDIR)/.cache/vllm HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 \
	$(PY) -m openai_frontend --model-repository model_repository --port 8080 \
	  --triton-http-port 8000 --triton-grpc-port 8001 --triton-metrics-port 8002 $(SERVE_ARGS)

## Decoder vs peers (vLLM's OpenCV loader, decord, qwen-vl-utils, naive PyAV) -> perf/RESULTS.md
bench-decode: setup
	$(VENV)/bin/pip install -q -r requirements/perf.txt
	$(PY) perf/bench_decode.py

## perf_analyzer recipes for every model -> perf/RESULTS.md "perf_analyzer"
perf-triton: tiny-model
	$(PY) scripts/install_perf_analyzer.py
	$(PY) perf/perf_analyzer_recipes.py

## Fault tests and a soak on the real stack (kill -9 of tritonserver and of the shim, disconnect, full tmpfs,
## CHAOS_SOAK_S seconds at concurrency 16 with bad inputs; memory of every process sampled, the baseline taken
## CHAOS_WARMUP_S into the load) -> perf/RESULTS.md "Faults and soak". Not in `make test`.
CHAOS_SOAK_S ?= 300
CHAOS_WARMUP_S ?= 120
CHAOS_ARGS ?=
chaos: tiny-model
	$(PY) perf/chaos.py --soak-s $(CHAOS_SOAK_S) --soak-warmup-s $(CHAOS_WARMUP_S) $(CHAOS_ARGS)

## 50,000 invalid and unsatisfiable Range requests to GET /v1/files/{id}/content on the shim alone (no tritonserver):
## its open descriptors and RSS every 5,000 -> perf/RESULTS.md "Bad Range soak". Not in `make test`.
RANGE_SOAK_ARGS ?=
range-soak: setup
	$(PY) perf/range_fd_soak.py $(RANGE_SOAK_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
