#!/usr/bin/env bash
# GPU smoke test: runs tests/gpu/ on one CUDA GPU (an H100/H200 takes 2-5 minutes) with the machine's own
# python3: this repository's .venv is not used (it is a CPU build for another Python).
#
# The machine needs torch with CUDA and transformers 5; vLLM is optional (compared where it imports). What it
# lacks comes from .whl/ (git-ignored) as wheels, installed with --no-index --no-deps into a scratch folder
# put first on PYTHONPATH. Prepare them on a machine that reaches PyPI, for the GPU machine's Python (3.12
# here; av 15+ wheels are manylinux_2_28 only, so that is the platform to ask for):
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 -d .whl av==18.1.0 pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.0 pygments==2.21.0
#
# Then, from the repository root on the GPU machine (through the device tool: command
# "bash scripts/gpu_check.sh", carry [".whl"], timeout_s 540):
#
#   bash scripts/gpu_check.sh
#
# The log goes to $OUT/gpu_check.log when OUT is set (else .cache/gpu_check.log); pytest is stopped after
# GPU_CHECK_TIMEOUT seconds (default 420). The last line is "gpu_check: N passed, N failed, N skipped";
# the exit status is 0 only when something passed and nothing failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LIMIT=${GPU_CHECK_TIMEOUT:-420}
SITE=${GPU_CHECK_SITE:-/tmp/vlt-gpu-site}
LOG_DIR=${OUT:-$PWD/.cache}
mkdir -p "$LOG_DIR"
LOG=$LOG_DIR/gpu_check.log
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

summary() {  # passed failed skipped [why]
  [ -n "${4:-}" ] && echo "gpu_check: $4"
  echo "gpu_check: $1 passed, $2 failed, $3 skipped"
  [ "$2" = 0 ] && [ "$1" != 0 ]
}

main() {
  echo "gpu_check: $(date -u +%FT%TZ) in $PWD, limit ${LIMIT}s"
  if compgen -G ".whl/*.whl" >/dev/null; then
    rm -rf "$SITE" && mkdir -p "$SITE"
    # pip when the interpreter has it; wheels are zip files, so unpacking them is the fallback
    "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --target "$SITE" .whl/*.whl \
      || "$PY" -c "import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]" \
           "$SITE" .whl/*.whl \
      || { summary 0 1 0 "could not install .whl/*.whl"; return 1; }
    echo "gpu_check: installed $(ls .whl/*.whl | xargs -n1 basename | tr '\n' ' ')into $SITE"
  fi
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 TOKENIZERS_PARALLELISM=false
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" - <<'EOF' || { summary 0 1 0 "no usable CUDA device (torch.cuda.is_available() is False, or torch is missing)"; return 1; }
import importlib, sys
print("python", sys.version.split()[0])
for name in ("torch", "torchvision", "transformers", "tokenizers", "av", "pytest", "vllm"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as exc:  # noqa: BLE001 - a report, not a check
        print(name, "missing:", type(exc).__name__, exc)
try:
    import vllm
    from video_pipeline.engines.versions import SUPPORTED_VLLM, is_supported
    print("vllm supported:", is_supported(vllm.__version__), "(supported: vllm" + SUPPORTED_VLLM + ")")
except Exception:  # noqa: BLE001
    pass
import torch
print("cuda", torch.version.cuda, "devices", torch.cuda.device_count())
sys.exit(0 if torch.cuda.is_available() else 1)
EOF
  # SIGINT first: pytest then stops like on Ctrl-C and still writes its report of what ran
  timeout -s INT -k 30 "$LIMIT" "$PY" -m pytest tests/gpu -v -rA -p no:cacheprovider -o log_cli=true \
    --log-cli-level=INFO --junitxml="$WORK/junit.xml"
  local rc=$?
  [ "$rc" = 124 ] || [ "$rc" = 137 ] && echo "gpu_check: pytest ran past ${LIMIT}s and was stopped"
  if [ ! -s "$WORK/junit.xml" ]; then
    summary 0 1 0 "pytest wrote no report (exit status $rc)"
    return 1
  fi
  # pytest's own counts, from its report; a run cut short by the timeout counts as one more failure
  read -r passed failed skipped < <("$PY" - "$WORK/junit.xml" "$rc" <<'EOF'
import sys
import xml.etree.ElementTree as ET
suite = ET.parse(sys.argv[1]).getroot()
suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
tests, failures, errors, skipped = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
stopped = sys.argv[2] in ("124", "137")
print(tests - failures - errors - skipped, failures + errors + stopped, skipped)
EOF
)
  summary "$passed" "$failed" "$skipped"
}

main 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
