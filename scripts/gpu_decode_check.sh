#!/usr/bin/env bash
# NVDEC vs PyAV on one CUDA GPU (an H100/H200 takes 2-4 minutes): video_pipeline/media/gpu_decode.py.
#
# 1. tests/gpu/test_nvdec.py: small clips (H.264, H.264 with B-frames, HEVC, variable frame rate) whose frames
#    carry their index: NVDEC returns PyAV's frames, indices, timestamps and metadata.
# 2. A 60-s 1080p30 H.264 clip (250-frame GOPs, moving texture) encoded here with PyAV: for several sampling
#    options, the same frame indices and timestamps from both decoders, each frame's mean |NVDEC - PyAV|
#    within GPU_DECODE_TOLERANCE levels (default 8; neighbouring frames of the clip differ by 43-55), and
#    the decode time of each (best of 2, after a warm-up decode).
# Runs with the machine's own python3 (this repository's .venv is a CPU build for another Python).
#
# The machine needs torch with CUDA. What it lacks comes from .whl/ (git-ignored) as wheels, installed with
# --no-index --no-deps into a scratch folder put first on PYTHONPATH. Prepare them on a machine that reaches
# PyPI, for the GPU machine's Python (3.12) and platform; torchcodec's CUDA wheels are on PyTorch's index, one
# release per torch version (torchcodec's README has the table; pick the one built for the GPU machine's
# torch and CUDA, e.g. cu128, and check `python3 -c "import torch; print(torch.__version__)"` there first):
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 -d .whl --index-url https://download.pytorch.org/whl/cu128 torchcodec==0.8.1
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 -d .whl av==18.1.0 pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.0 pygments==2.21.0
#
# torchcodec loads FFmpeg's shared libraries (4 to 8) from the system. Where the machine has none, this script
# links the FFmpeg that PyAV's wheel bundles under the plain names (libavcodec.so.N ...) into a scratch folder
# on LD_LIBRARY_PATH and tries again (enough for demuxing; NVDEC itself comes with the NVIDIA driver).
#
# Then, from the repository root on the GPU machine (through the device tool: command
# "bash scripts/gpu_decode_check.sh", carry [".whl"], timeout_s 420):
#
#   bash scripts/gpu_decode_check.sh
#
# The log goes to $OUT/gpu_decode_check.log when OUT is set (else .cache/gpu_decode_check.log); each phase is
# stopped after GPU_DECODE_TIMEOUT seconds (default 200). The last line is "gpu_decode_check: N passed,
# N failed"; the exit status is 0 only when something passed and nothing failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LIMIT=${GPU_DECODE_TIMEOUT:-200}
SITE=${GPU_DECODE_SITE:-/tmp/vlt-gpu-decode-site}
LOG_DIR=${OUT:-$PWD/.cache}
mkdir -p "$LOG_DIR"
LOG=$LOG_DIR/gpu_decode_check.log
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PASSED=0
FAILED=0

summary() {  # [why]
  [ -n "${1:-}" ] && echo "gpu_decode_check: $1"
  echo "gpu_decode_check: $PASSED passed, $FAILED failed"
  [ "$FAILED" = 0 ] && [ "$PASSED" != 0 ]
}

install_wheels() {
  compgen -G ".whl/*.whl" >/dev/null || return 0
  rm -rf "$SITE" && mkdir -p "$SITE"
  # pip when the interpreter has it; wheels are zip files, so unpacking them is the fallback
  "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --target "$SITE" .whl/*.whl \
    || "$PY" -c "import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]" \
         "$SITE" .whl/*.whl \
    || return 1
  echo "gpu_decode_check: installed $(ls .whl/*.whl | xargs -n1 basename | tr '\n' ' ')into $SITE"
}

link_pyav_ffmpeg() {  # PyAV's bundled FFmpeg under the sonames torchcodec asks for
  "$PY" - "$WORK/ffmpeg" <<'EOF'
import os, re, sys
from pathlib import Path
import av
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
libs = Path(av.__file__).resolve().parent.parent / "av.libs"
n = 0
for f in sorted(libs.glob("*.so*")) if libs.is_dir() else []:
    m = re.match(r"(lib(?:avcodec|avformat|avutil|avfilter|avdevice|swscale|swresample))-[0-9a-f]+\.so\.(\d+)", f.name)
    if m:
        (out / f"{m[1]}.so.{m[2]}").unlink(missing_ok=True)
        os.symlink(f, out / f"{m[1]}.so.{m[2]}"); n += 1
print(f"linked {n} FFmpeg libraries from {libs}")
sys.exit(0 if n else 1)
EOF
}

main() {
  echo "gpu_decode_check: $(date -u +%FT%TZ) in $PWD, limit ${LIMIT}s per phase"
  install_wheels || { FAILED=1; summary "could not install .whl/*.whl"; return 1; }
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" - <<'EOF'
import importlib, sys
print("python", sys.version.split()[0])
for name in ("torch", "torchvision", "torchcodec", "av", "pytest"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as exc:  # noqa: BLE001 - a report, not a check
        print(name, "missing:", type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
EOF
  probe='from video_pipeline.media.gpu_decode import nvdec_unavailable as u; r = u(); print("nvdec:", r or "available"); raise SystemExit(r is not None)'
  if ! "$PY" -c "$probe"; then
    if link_pyav_ffmpeg; then
      export LD_LIBRARY_PATH="$WORK/ffmpeg${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      echo "gpu_decode_check: retrying with PyAV's FFmpeg on LD_LIBRARY_PATH"
    fi
    "$PY" -c "$probe" || { FAILED=1; summary "NVDEC unavailable (see the reason above)"; return 1; }
  fi
  PASSED=$((PASSED + 1))  # the probe

  # SIGINT first: pytest then stops like on Ctrl-C and still writes its report of what ran
  timeout -s INT -k 20 "$LIMIT" "$PY" -m pytest tests/gpu/test_nvdec.py -q -rA -p no:cacheprovider \
    -o log_cli=true --log-cli-level=INFO --junitxml="$WORK/junit.xml"
  local rc=$?
  if [ -s "$WORK/junit.xml" ]; then
    read -r p f < <("$PY" - "$WORK/junit.xml" "$rc" <<'EOF'
import sys
import xml.etree.ElementTree as ET
suite = ET.parse(sys.argv[1]).getroot()
suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
tests, failures, errors, skipped = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
print(tests - failures - errors - skipped, failures + errors + (sys.argv[2] in ("124", "137")))
EOF
)
    PASSED=$((PASSED + p)); FAILED=$((FAILED + f))
  else
    echo "gpu_decode_check: pytest wrote no report (exit status $rc)"; FAILED=$((FAILED + 1))
  fi

  timeout -k 20 "$LIMIT" "$PY" - "$WORK" <<'EOF' > "$WORK/bench.out"
import logging, os, sys, time
from fractions import Fraction
import av
import numpy as np
from video_pipeline.media.decode import decode_video
from video_pipeline.media.gpu_decode import NvdecDecoder
from video_pipeline.media.options import VideoOptions

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
tol = float(os.environ.get("GPU_DECODE_TOLERANCE", "8"))
path = os.path.join(sys.argv[1], "clip_1080p_60s.mp4")
W, H, FPS, SECONDS = 1920, 1080, 30, 60
t0 = time.perf_counter()
rng = np.random.default_rng(0)
# Moving texture (every frame differs from its neighbours by far more than the tolerance) on a gradient.
base = (rng.integers(0, 256, (H // 8 + 1, W // 8 + 1, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)[:H, :W])
ramp = np.linspace(0, 255, W, dtype=np.float32)[None, :, None]
with av.open(path, "w") as out:
    s = out.add_stream("libx264", rate=FPS)
    s.width, s.height, s.pix_fmt = W, H, "yuv420p"
    s.options = {"preset": "veryfast", "crf": "23", "g": "250", "keyint_min": "250", "sc_threshold": "0"}
    s.time_base = Fraction(1, FPS)
    for i in range(FPS * SECONDS):
        img = np.roll(base, (3 * i, 7 * i), axis=(0, 1)) // 2 + (ramp * ((i % 60) / 120)).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = i
        for p in s.encode(frame):
            out.mux(p)
    for p in s.encode():
        out.mux(p)
print(f"clip: {W}x{H} {FPS} fps {SECONDS} s, {os.path.getsize(path) / 1e6:.1f} MB, encoded in "
      f"{time.perf_counter() - t0:.1f} s", flush=True)
video = open(path, "rb").read()
gpu = NvdecDecoder()
gpu.decode(video, VideoOptions(num_frames=2))  # CUDA context, NVDEC and NPP set up once
cases = [{}, {"num_frames": 32}, {"fps": 10, "max_frames": 600}, {"fps": 2, "start": 20, "end": 30},
         {"mode": "keyframe", "num_frames": 16}, {"num_frames": 8, "resize": False}]
ok = bad = 0
for case in cases:
    opts = VideoOptions.from_dict(case)
    times = {}
    for name, fn in (("pyav", lambda: decode_video(video, opts)), ("nvdec", lambda: gpu.decode(video, opts))):
        best = float("inf")
        for _ in range(2):
            t = time.perf_counter(); res = fn(); best = min(best, time.perf_counter() - t)
        times[name] = (best, res)
    (tp, ref), (tg, got) = times["pyav"], times["nvdec"]
    problems = []
    if got.metadata.get("video_backend") != "nvdec":
        problems.append("not decoded on NVDEC")
    if not np.array_equal(got.frame_indices, ref.frame_indices):
        problems.append(f"frame indices differ: {got.frame_indices[:8].tolist()} vs {ref.frame_indices[:8].tolist()}")
    if not np.array_equal(got.timestamps, ref.timestamps):
        problems.append("timestamps differ")
    if got.frames.shape != ref.frames.shape:
        problems.append(f"shapes differ: {got.frames.shape} vs {ref.frames.shape}")
        worst = float("inf")
    else:
        diff = np.abs(got.frames.astype(np.int16) - ref.frames.astype(np.int16)).reshape(len(got.frames), -1)
        per = diff.mean(axis=1)
        worst = float(per.max())
        if worst > tol:
            problems.append(f"frame {int(per.argmax())}: mean abs diff {worst:.2f} > {tol:g}")
    n = len(ref.frames)
    print(f"{'PASS' if not problems else 'FAIL'} {case}: {n} frames {ref.frames.shape[2]}x{ref.frames.shape[1]}, "
          f"worst mean abs diff {worst:.2f}; pyav {tp:.2f} s ({n / tp:.0f} frames/s), nvdec {tg:.2f} s "
          f"({n / tg:.0f} frames/s), speedup x{tp / tg:.2f}" + ("; " + "; ".join(problems) if problems else ""),
          flush=True)
    ok, bad = ok + (not problems), bad + bool(problems)
print(f"BENCH {ok} {bad}")
EOF
  rc=$?
  cat "$WORK/bench.out"
  read -r _ p f < <(grep '^BENCH ' "$WORK/bench.out" || echo "BENCH 0 1")
  [ "$rc" = 0 ] || [ "$f" != 0 ] || { echo "gpu_decode_check: the benchmark exited with status $rc"; f=1; }
  PASSED=$((PASSED + p)); FAILED=$((FAILED + f))
  summary
}

main 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
