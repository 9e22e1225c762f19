"""perf_analyzer recipes for every Triton model, run against a real tritonserver.

    python perf/perf_analyzer_recipes.py [--quick]      (make perf-triton)

Starts tritonserver with the whole repository on free loopback ports, writes
perf_analyzer ``--input-data`` files holding a real generated H.264 clip
(BYTES as base64 of Triton's wire format: 4-byte little-endian length +
payload; UINT8 frames as base64 of raw bytes), runs each recipe, and writes
the exact command lines and their results to the "perf_analyzer" section of
perf/RESULTS.md. The commands printed there run as they are against any
server started with ``make serve`` (add ``-u 127.0.0.1:8001``).
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime
import io
import json
import os
import platform
import shlex
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perf.results import replace_section  # noqa: E402
from tests.videos import ClipSpec, make_video  # noqa: E402
from video_pipeline.contract import config_parameters  # noqa: E402
from video_pipeline.launch import TritonServer  # noqa: E402
from video_pipeline.steps import DecoderStep, PreprocessorStep  # noqa: E402

PERF_ANALYZER = Path(sys.prefix) / "bin" / "perf_analyzer"
INPUTS = ROOT / "perf" / ".pa_inputs"
MESSAGES = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Describe the video."}]}]
OPTIONS = {"num_frames": 16}


def _bytes_b64(*items: bytes) -> dict:
    wire = b"".join(struct.pack("<I", len(x)) + x for x in items)
    return {"b64": base64.b64encode(wire).decode(), "shape": [len(items)]}


def _raw_b64(arr: np.ndarray) -> dict:
    return {"b64": base64.b64encode(np.ascontiguousarray(arr).tobytes()).decode()}


def input_files(folder: Path, clip: bytes) -> dict[str, Path]:
    """One --input-data file per recipe, built from the same clip."""
    opts = json.dumps(OPTIONS).encode()
    decoded = DecoderStep(_params("video_decoder"))(
        {"video": np.array([clip], dtype=object), "video_options": np.array([opts], dtype=object)}
    )
    meta = [bytes(m) for m in decoded["video_metadata"]]
    data = {
        "video_decoder": {"video": _bytes_b64(clip), "video_options": _bytes_b64(opts)},
        "video_preprocessor": {
            "frames": {**_raw_b64(decoded["frames"]), "shape": list(decoded["frames"].shape)},
            "timestamps": {
                **_raw_b64(decoded["timestamps"].astype("<f8")),
                "shape": [len(decoded["timestamps"])],
            },
            "frame_indices": {
                **_raw_b64(decoded["frame_indices"].astype("<i8")),
                "shape": [len(decoded["frame_indices"])],
            },
            "video_metadata": _bytes_b64(*meta),
            "video_options": _bytes_b64(opts),
        },
        "video_media": {"video": _bytes_b64(clip), "video_options": _bytes_b64(opts)},
        "video_llm": {
            "video": _bytes_b64(clip),
            "video_options": _bytes_b64(opts),
            "messages": _bytes_b64(json.dumps(MESSAGES).encode()),
            "sampling_parameters": _bytes_b64(json.dumps({"max_tokens": 32, "temperature": 0}).encode()),
            "stream": {"content": [True], "shape": [1]},
        },
        # llm given the container bytes: it runs video_media inside Triton (BLS), frames never leave it
        "llm": {
            "video": _bytes_b64(clip),
            "video_options": _bytes_b64(opts),
            "messages": _bytes_b64(json.dumps(MESSAGES).encode()),
            "sampling_parameters": _bytes_b64(json.dumps({"max_tokens": 32, "temperature": 0}).encode()),
            "stream": {"content": [True], "shape": [1]},
        },
    }
    PreprocessorStep(_params("video_preprocessor"))  # the recipe's parameters load
    out = {}
    for model, inputs in data.items():
        path = folder / f"{model}.json"
        path.write_text(json.dumps({"data": [inputs]}))
        out[model] = path
    return out


def _params(model: str) -> dict[str, str]:
    return config_parameters((ROOT / "model_repository" / model / "config.pbtxt").read_text())


def recipe(model: str, data: Path, url: str, csv_path: Path, quick: bool) -> list[str]:
    cmd = [
        str(PERF_ANALYZER),
        "-m",
        model,
        "-i",
        "grpc",
        "-u",
        url,
        "--input-data",
        str(data),
        "--concurrency-range",
        "1:2" if quick else "1:4:1",
        "--measurement-mode",
        "count_windows",
        "--measurement-request-count",
        "10" if quick else "30",
        "--stability-percentage",
        "50",
        "--max-trials",
        "6",
        "-f",
        str(csv_path),
    ]
    if model in ("video_llm", "llm"):
        cmd.append("--streaming")
    return cmd


def run(quick: bool) -> str:
    if not PERF_ANALYZER.exists():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "install_perf_analyzer.py")], check=True)
    clip = make_video(ClipSpec(width=640, height=360, fps=30, num_frames=300, gop=250, bframes=True))
    rows = []
    tmp = INPUTS
    tmp.mkdir(parents=True, exist_ok=True)
    with TritonServer(
        ROOT / "model_repository",
        ["video_decoder", "video_preprocessor", "video_media", "llm", "video_llm"],
        ready_timeout_s=600,
    ) as server:
        files = input_files(Path(tmp), clip)
        for model, data in files.items():
            csv_path = Path(tmp) / f"{model}.csv"
            cmd = recipe(model, data, server.grpc_url, csv_path, quick)
            print("$", shlex.join(cmd), flush=True)
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if proc.returncode != 0 or not csv_path.exists():
                rows.append((model, shlex.join(cmd), None, (proc.stdout + proc.stderr)[-800:], server.grpc_url))
                continue
            with csv_path.open() as f:
                rows.append((model, shlex.join(cmd), list(csv.DictReader(f)), "", server.grpc_url))
    return _markdown(rows, clip, quick)


def _markdown(rows: list, clip: bytes, quick: bool) -> str:
    lines = [
        f"Run {datetime.date.today()} on {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        f"tritonserver 2.51 (pytriton wheel), perf_analyzer 2.51, the tiny Qwen2-VL model on vLLM CPU. "
        f"Input: one generated 10-s 640x360 H.264 clip (250-frame GOP, B-frames, {len(clip)} bytes), "
        f"video_options {json.dumps(OPTIONS)}; video_llm and llm (given the clip's bytes: it decodes them "
        "inside Triton through BLS) ask for 32 tokens. "
        f"Command: `python perf/perf_analyzer_recipes.py{' --quick' if quick else ''}` (or `make perf-triton`); "
        "it leaves its input files in perf/.pa_inputs/ so the commands below run as they are against `make serve`.",
        "",
        "| model | concurrency | infer/s | p50 latency (ms) | p95 latency (ms) |",
        "|---|---|---|---|---|",
    ]
    for model, _cmd, table, err, _url in rows:
        if table is None:
            lines.append(f"| {model} | – | failed | – | {err.splitlines()[-1] if err else ''} |")
            continue
        for r in table:
            lines.append(
                f"| {model} | {r['Concurrency']} | {float(r['Inferences/Second']):.2f} | "
                f"{int(r['p50 latency']) / 1000:.1f} | {int(r['p95 latency']) / 1000:.1f} |"
            )
    lines += ["", "Exact commands (input files are regenerated by the script):", "", "```"]
    lines += [
        cmd.replace(str(PERF_ANALYZER), "perf_analyzer").replace(str(ROOT) + "/", "").replace(url, "127.0.0.1:8001")
        for _m, cmd, _t, _e, url in rows
    ]
    lines += ["```", "", "video_llm and llm latency is to the last response of the stream (end to end)."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer requests and concurrency levels")
    args = parser.parse_args()
    body = run(args.quick)
    replace_section(ROOT / "perf" / "RESULTS.md", "perf_analyzer", body)
    print(body)
    return 0


if __name__ == "__main__":
    io.DEFAULT_BUFFER_SIZE = 1 << 16
    sys.exit(main())
