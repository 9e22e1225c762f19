"""Where a cold video request's time goes: Triton's own per-model statistics around client TTFTs.

    python perf/cold_breakdown.py [--clip h264-360p-10s] [--requests 6] [--threads 1,2] [--no-write]
                                                            -> perf/RESULTS.md "Cold path breakdown"

Our stack as bench_vs_vllm.py starts it (``python -m openai_frontend``: the launcher, tritonserver, the
shim), once per FFmpeg thread count in ``--threads`` (``VLT_DECODER_THREADS``; the instance count stays the
launcher's). After one unmeasured warm-up, ``--requests`` streamed chat completions one at a time, each a
distinct data: URL of the clip (a ``free`` box of unique bytes appended: every request misses every cache),
16 frames, 16 tokens. Triton's ``/v2/models/stats`` is read before and after; each model's mean queue and
execution time per request come from the difference. ``llm`` runs ``video_media`` (decoder, then
preprocessor) through BLS; ``llm`` itself is decoupled, so Triton's statistics time only its execute() call
(it returns at once and streams from its own loop) and cannot show the engine's share: the rest of the
client's TTFT (HTTP and the shim, gRPC, vLLM's processor, the vision encoder and prefill, the first token)
is shown as TTFT minus video_media.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perf.bench_vs_vllm import Cell, Server, data_url, engine_args, ours_command, run_cell, salted  # noqa: E402
from perf.clips import clip_by_name, ensure_clips  # noqa: E402
from perf.results import cpu_by_role, cpu_delta, machine_load, publish  # noqa: E402
from video_pipeline.launch import free_port  # noqa: E402

logger = logging.getLogger(__name__)
SECTION = "Cold path breakdown"
MODELS = ("video_decoder", "video_preprocessor", "video_media", "llm")


def model_stats(triton_http: str) -> dict[str, dict[str, int]]:
    """Per model: successful requests, their summed time, summed queue time and summed compute (ns)."""
    doc = httpx.get(f"http://{triton_http}/v2/models/stats", timeout=10).json()
    out: dict[str, dict[str, int]] = {}
    for m in doc.get("model_stats", []):
        s = m.get("inference_stats", {})
        out[m["name"]] = {
            "count": int(s.get("success", {}).get("count", 0)),
            "total": int(s.get("success", {}).get("ns", 0)),
            "queue": int(s.get("queue", {}).get("ns", 0)),
            "compute": sum(int(s.get(k, {}).get("ns", 0)) for k in ("compute_input", "compute_infer",
                                                                      "compute_output")),
        }
    return out


@dataclass
class Breakdown:
    threads: int
    ttft: list[float]
    per_model: dict[str, tuple[float, float]]  # name -> (mean queue s, mean total s) per request
    cpu: dict[str, float]  # process role -> CPU seconds per request (perf.results.cpu_by_role)


def measure(clip: bytes, threads: int, requests: int, work: Path) -> Breakdown:
    port, triton_http = free_port(), free_port()
    cmd = ours_command(port) + ["--triton-http-port", str(triton_http)]
    env = {"VLLM_CACHE_ROOT": str(ROOT / ".cache" / "vllm"), "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
           "VLT_FILES_DIR": str(work / f"files-{threads}"), "VLT_LOG_LEVEL": "warning",
           "VLT_DECODER_THREADS": str(threads)}
    server = Server(f"ours-threads-{threads}", cmd, port, env, work / f"ours-{threads}.log")
    model = engine_args()["served_model_name"]
    try:
        server.start()
        server.wait_ready("/health/ready")
        warm = Cell("ours", "warm", 1)
        asyncio.run(run_cell(warm, server.base, [data_url(salted(clip, f"warm-{threads}"))], model, 4))
        if warm.errors:
            raise RuntimeError(f"warm-up failed: {warm.errors[0]}")
        before = model_stats(f"127.0.0.1:{triton_http}")
        cpu_before = cpu_by_role(server.proc.pid)
        cell = Cell("ours", "data-url", 1)
        urls = [data_url(salted(clip, f"cold-{threads}-{i}")) for i in range(requests)]
        asyncio.run(run_cell(cell, server.base, urls, model, 16))
        if cell.errors:
            raise RuntimeError(f"a measured request failed: {cell.errors[0]}")
        after = model_stats(f"127.0.0.1:{triton_http}")
        cpu = {role: seconds / requests for role, seconds in cpu_delta(cpu_before, cpu_by_role(server.proc.pid)).items()}
    finally:
        server.stop()
    per_model = {}
    for name in MODELS:
        a, b = after.get(name), before.get(name, {"count": 0, "total": 0, "queue": 0})
        n = (a["count"] - b["count"]) if a else 0
        if n > 0:
            per_model[name] = ((a["queue"] - b["queue"]) / n / 1e9, (a["total"] - b["total"]) / n / 1e9)
    return Breakdown(threads, [s.ttft for s in cell.samples], per_model, cpu)


def markdown(rows: list[Breakdown], args: argparse.Namespace, clip_desc: str, load: str) -> str:
    lines = [
        f"`python perf/cold_breakdown.py --clip {args.clip} --requests {args.requests} --threads {args.threads}` on "
        f"{os.cpu_count()} CPUs (`uptime` at the end: {load}). Clip: {clip_desc}. One request at a time, each a "
        "distinct data: URL (no cache can help), 16 frames, 16 tokens; tiny Qwen2-VL on vLLM's CPU engine. Means per "
        "request from Triton's statistics (`/v2/models/stats`), in milliseconds. FFmpeg threads per decode: "
        "`VLT_DECODER_THREADS` (the launcher's default is max(1, cores // instances): 1 here). `llm` is decoupled: "
        "Triton times only its execute() call, so the engine's share is in the last column, TTFT - video_media "
        "(HTTP and the shim, gRPC, vLLM's processor, vision encoder and prefill, the first token).",
        "",
        "| FFmpeg threads | TTFT p50 | TTFT max | video_decoder | video_preprocessor | video_media (both + BLS) | "
        "rest of TTFT |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ms = {name: total * 1e3 for name, (_, total) in r.per_model.items()}
        ttft = statistics.median(r.ttft) * 1e3
        lines.append(f"| {r.threads} | {ttft:.0f} | {max(r.ttft) * 1e3:.0f} | {ms.get('video_decoder', 0):.0f} | "
                     f"{ms.get('video_preprocessor', 0):.0f} | {ms.get('video_media', 0):.0f} | "
                     f"{ttft - ms.get('video_media', 0):.0f} |")
    lines += ["", "Queue time per request (ms; waiting for a free instance): " + "; ".join(
        f"{r.threads} thread(s): " + ", ".join(f"{n} {q * 1e3:.1f}" for n, (q, _) in r.per_model.items()
                                               if n != "llm")
        for r in rows)]
    roles = [role for role in rows[0].cpu if any(r.cpu.get(role, 0) >= 0.0005 for r in rows)]
    lines += ["", "CPU time per request by process (ms, user + system, from /proc between the first and the last "
              "measured request; the wall time per request is about the TTFT plus 16 tokens):", "",
              "| FFmpeg threads | " + " | ".join(roles) + " | all |", "|---:|" + "---:|" * (len(roles) + 1)]
    for r in rows:
        lines.append(f"| {r.threads} | " + " | ".join(f"{r.cpu.get(role, 0) * 1e3:.0f}" for role in roles)
                     + f" | {sum(r.cpu.values()) * 1e3:.0f} |")
    if any("VLLM::Worker" in r.cpu for r in rows):
        lines += ["", "vLLM's worker is a process of its own on CPU (vLLM forces its multiprocess executor there), and "
                  "it busy-polls its shared-memory queue with sched_yield() for 1 s after each message "
                  "(vllm/distributed/device_communicators/shm_broadcast.py, SpinCondition, busy_loop_s=1): with "
                  "requests less than a second apart it stays runnable, so a decode wanting both cores shares them "
                  "with it (the same holds for `vllm serve`'s decode). GPU deployments at tensor-parallel 1 run "
                  "the worker in the engine process, without that loop."]
    return "\n".join(lines)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default="h264-360p-10s")
    parser.add_argument("--requests", type=int, default=6)
    parser.add_argument("--threads", default="1,2", help="FFmpeg threads per decode to compare (0: FFmpeg picks)")
    parser.add_argument("--no-write", action="store_true", help="print, do not update perf/RESULTS.md")
    args = parser.parse_args()
    spec = clip_by_name(args.clip)
    ensure_clips([spec])
    clip = spec.path.read_bytes()
    work = Path(tempfile.mkdtemp(prefix="cold-breakdown-", dir=ROOT / ".cache"))
    rows = []
    try:
        for threads in map(int, args.threads.split(",")):
            rows.append(measure(clip, threads, args.requests, work))
            logger.info("threads %d: ttft p50 %.3f s; %s", threads, statistics.median(rows[-1].ttft),
                        {n: round(t * 1e3) for n, (_, t) in rows[-1].per_model.items()})
    finally:
        for sub in work.glob("files-*"):
            shutil.rmtree(sub, ignore_errors=True)
    body = markdown(rows, args, f"{spec.name} ({spec.description}, {len(clip) / 1e6:.1f} MB)", machine_load())
    publish(SECTION, body, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
