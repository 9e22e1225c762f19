"""Head to head: our stack (tritonserver + shim) against vLLM's own OpenAI server, same engine and model.

    python perf/bench_vs_vllm.py [--clip h264-720p-60s] [--concurrency 1,4,16] [--quick]
                                                            -> perf/RESULTS.md "Head to head: vs vLLM serve"

Both servers run on this machine at once on the same tiny Qwen2-VL with the same engine
arguments (model_repository/llm/1/model.json), and the same 16 frames per video
(ours: the request's ``media_io_kwargs``; vLLM: ``--media-io-kwargs``, since it refuses
per-request ones unless trusted). Each request streams ``max_tokens`` tokens with
``ignore_eos``, so both generate the same number; the table shows the prompt tokens each
counted, to show the work was the same. Request kinds:

- ``data-url``: the video inline as base64, its bytes made unique per request (a ``free``
  box of random bytes appended, still a valid MP4), so no cache can help;
- ``http-url``: the same unique bytes served by a local HTTP server, fetched by the server;
- ``repeated``: the same data: URL every time (caches may help: vLLM's processor cache, ours);
- ``file-id``: ours only: the video uploaded once to /v1/files, referenced by id.

For each concurrency, the kinds and the two stacks are interleaved (the order alternates).
The client is a small async httpx loop (documented here, no other load tool speaks
OpenAI chat with video parts): time to first token = from sending to the first SSE chunk
with content; latency = to ``[DONE]``; requests/s = requests / wall time of the cell.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.server
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perf.clips import clip_by_name, ensure_clips  # noqa: E402
from perf.results import replace_section  # noqa: E402
from video_pipeline.launch import free_port  # noqa: E402
from video_pipeline.media.model_media import load_media_settings, served_model_folder  # noqa: E402

MODEL_JSON = ROOT / "model_repository" / "llm" / "1" / "model.json"
NUM_FRAMES = 16

def _model_video_bounds() -> tuple[int, int]:
    """The served model's video pixel bounds (its processor files), which our media models size within."""
    media = load_media_settings(served_model_folder(MODEL_JSON))
    return media.video_min_pixels, media.video_max_pixels


MIN_PIXELS, MAX_PIXELS = _model_video_bounds()
QUESTION = "Describe this video."


# --- servers ---------------------------------------------------------------------------------------

def engine_args() -> dict:
    args = json.loads(MODEL_JSON.read_text())
    args["model"] = str((MODEL_JSON.parent / args["model"]).resolve())
    return args


def vllm_command(port: int, media_dir: Path) -> list[str]:
    a = engine_args()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1", "--port", str(port),
           "--model", a["model"], "--served-model-name", a["served_model_name"],
           "--media-io-kwargs", json.dumps({"video": {"num_frames": NUM_FRAMES}}),
           # The same per-frame pixel budget as ours: the served model's bounds, which our decoder clamps to
           # (vLLM's video processor otherwise keeps 720p frames near full size: 7x the tokens).
           "--mm-processor-kwargs", json.dumps({"size": {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}}),
           "--allowed-local-media-path", str(media_dir), "--no-enable-log-requests"]
    for key in ("dtype", "seed", "max_model_len", "max_num_batched_tokens", "max_num_seqs", "kv_cache_memory_bytes"):
        cmd += [f"--{key.replace('_', '-')}", str(a[key])]
    cmd += ["--limit-mm-per-prompt", json.dumps(a["limit_mm_per_prompt"])]
    return cmd + (["--enforce-eager"] if a.get("enforce_eager") else [])


def ours_command(port: int) -> list[str]:
    return [sys.executable, "-m", "openai_frontend", "--port", str(port)]


@dataclass
class Server:
    name: str
    cmd: list[str]
    port: int
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env={**os.environ, **self.env}, stdout=self.log.open("wb"),
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, path: str, timeout_s: float = 900) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited; log: {self.log}\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.base + path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise RuntimeError(f"{self.name} not ready after {timeout_s:.0f} s; log: {self.log}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # SIGTERM: vLLM's engine processes must not be orphaned
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class ClipServer:
    """Serves ``/<salt>.mp4``: the clip with a ``free`` box of the salt appended (unique bytes per URL)."""

    def __init__(self, clip: bytes) -> None:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                body = salted(outer.clip, self.path.strip("/").removesuffix(".mp4"))
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.clip = clip
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, salt: str) -> str:
        return f"http://127.0.0.1:{self.port}/{salt}.mp4"


def salted(clip: bytes, salt: str) -> bytes:
    pad = salt.encode()
    return clip + (8 + len(pad)).to_bytes(4, "big") + b"free" + pad


# --- the client ------------------------------------------------------------------------------------

@dataclass
class Sample:
    ttft: float
    latency: float
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Cell:
    stack: str
    kind: str
    concurrency: int
    samples: list[Sample] = field(default_factory=list)
    wall: float = 0.0
    errors: list[str] = field(default_factory=list)


def payload(model: str, url: str, max_tokens: int, ours: bool) -> dict:
    body = {"model": model, "stream": True, "stream_options": {"include_usage": True}, "max_tokens": max_tokens,
            "ignore_eos": True, "temperature": 0,
            "messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                                      {"type": "text", "text": QUESTION}]}]}
    if ours:
        body["media_io_kwargs"] = {"video": {"num_frames": NUM_FRAMES}}
    return body


async def one(http: httpx.AsyncClient, base: str, body: dict) -> Sample:
    started = time.perf_counter()
    ttft = None
    usage = {}
    async with http.stream("POST", base + "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if ttft is None and any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
                ttft = time.perf_counter() - started
            usage = chunk.get("usage") or usage
    latency = time.perf_counter() - started
    return Sample(ttft if ttft is not None else latency, latency, usage.get("prompt_tokens", 0),
                  usage.get("completion_tokens", 0))


async def run_cell(cell: Cell, base: str, urls: list[str], model: str, max_tokens: int) -> None:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for url in urls:
        queue.put_nowait(url)
    limits = httpx.Limits(max_connections=cell.concurrency + 2)
    async with httpx.AsyncClient(timeout=httpx.Timeout(600), limits=limits) as http:

        async def worker() -> None:
            while not queue.empty():
                url = queue.get_nowait()
                try:
                    cell.samples.append(await one(http, base, payload(model, url, max_tokens, cell.stack == "ours")))
                except Exception as exc:  # noqa: BLE001 - a failed request is a result, recorded
                    cell.errors.append(str(exc)[:200])

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(cell.concurrency)))
        cell.wall = time.perf_counter() - started


def data_url(data: bytes) -> str:
    return "data:video/mp4;base64," + base64.b64encode(data).decode()


def urls_for(kind: str, n: int, clip: bytes, clips: ClipServer, file_id: str, tag: str) -> list[str]:
    if kind == "data-url":
        return [data_url(salted(clip, f"{tag}-{i}")) for i in range(n)]
    if kind == "http-url":
        return [clips.url(f"{tag}-{i}") for i in range(n)]
    if kind == "repeated":
        return [data_url(clip)] * n
    return [file_id] * n


# --- report ----------------------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def markdown(cells: list[Cell], args: argparse.Namespace, clip_desc: str) -> str:
    lines = [
        f"`python perf/bench_vs_vllm.py --clip {args.clip} --concurrency {args.concurrency} --requests "
        f"{args.requests} --max-tokens {args.max_tokens}` on {os.cpu_count()} CPUs (load average "
        f"{os.getloadavg()[0]:.1f} at the end); both servers up at once, tiny Qwen2-VL, vLLM CPU engine with "
        f"the same engine arguments, {NUM_FRAMES} frames per video, {args.max_tokens} tokens per answer "
        f"(ignore_eos). Clip: {clip_desc}. Times in seconds.",
        "",
        "| c | kind | stack | TTFT p50 | TTFT p95 | latency p50 | latency p95 | req/s | prompt tokens | errors |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_key = {(c.concurrency, c.kind, c.stack): c for c in cells}
    for c in cells:
        if c.samples:
            t = [s.ttft for s in c.samples]
            lat = [s.latency for s in c.samples]
            tokens = sorted({s.prompt_tokens for s in c.samples})
            lines.append(f"| {c.concurrency} | {c.kind} | {c.stack} | {pct(t, .5):.3f} | {pct(t, .95):.3f} | "
                         f"{pct(lat, .5):.3f} | {pct(lat, .95):.3f} | {len(c.samples) / c.wall:.2f} | "
                         f"{'/'.join(map(str, tokens))} | {len(c.errors)} |")
        else:
            lines.append(f"| {c.concurrency} | {c.kind} | {c.stack} | - | - | - | - | - | - | {len(c.errors)} |")
    lines += ["", "Ours / vLLM (same kind and concurrency; TTFT and latency: < 1 is faster; req/s: > 1 is more):",
              "", "| c | kind | TTFT p50 | latency p50 | req/s |", "|---:|---|---:|---:|---:|"]
    for c in cells:
        theirs = by_key.get((c.concurrency, c.kind, "vllm"))
        if c.stack != "ours" or theirs is None or not c.samples or not theirs.samples:
            continue
        lines.append(
            f"| {c.concurrency} | {c.kind} | "
            f"{statistics.median(s.ttft for s in c.samples) / statistics.median(s.ttft for s in theirs.samples):.2f} | "
            f"{statistics.median(s.latency for s in c.samples) / statistics.median(s.latency for s in theirs.samples):.2f} | "
            f"{(len(c.samples) / c.wall) / (len(theirs.samples) / theirs.wall):.2f} |")
    tokens = {c.stack: {s.prompt_tokens for s in c.samples} for c in cells if c.samples}
    if len({min(t) for t in tokens.values() if t}) > 1:
        lines += ["", "The prompt tokens differ: our decoder sizes frames within the served model's pixel bounds "
                  f"(video_min_pixels..video_max_pixels = {MIN_PIXELS}..{MAX_PIXELS}, from its processor "
                  "config), while vLLM's video path kept its video processor's own, larger default size "
                  f"although it was started with `--mm-processor-kwargs` {{\"size\": ...}} of the same bounds. "
                  "So vLLM's times include a longer prefill; the decoder alone against vLLM's loader on identical "
                  "frames is in the \"Decode\" section."]
    errors = [f"- {c.stack} {c.kind} c={c.concurrency}: {c.errors[0]}" for c in cells if c.errors]
    if errors:
        lines += ["", "First error of each cell that had any:", "", *errors]
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default="h264-720p-60s")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--requests", type=int, default=0, help="requests per cell (default: max(8, c))")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--kinds", default="data-url,http-url,repeated,file-id")
    parser.add_argument("--quick", action="store_true", help="c=1,4 with 4 requests a cell (a smoke run)")
    parser.add_argument("--no-write", action="store_true", help="print, do not update perf/RESULTS.md")
    args = parser.parse_args()
    if args.quick:
        args.concurrency, args.requests = "1,4", 4
    spec = clip_by_name(args.clip)
    ensure_clips([spec])
    clip = spec.path.read_bytes()
    clips = ClipServer(clip)
    model = engine_args()["served_model_name"]
    work = Path(tempfile.mkdtemp(prefix="bench-vs-vllm-", dir=ROOT / ".cache"))
    cache_env = {"VLLM_CACHE_ROOT": str(ROOT / ".cache" / "vllm"), "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"}
    oport = free_port()
    ours = Server("ours", ours_command(oport), oport, {**cache_env, "VLT_FILES_DIR": str(work / "files"),
                                                         # exactly the clip server, as a user would allow one host
                                                         "VLT_ALLOWED_MEDIA_NETWORKS": f"127.0.0.1:{clips.port}",
                                                         "VLT_LOG_LEVEL": "warning"}, work / "ours.log")
    vport = free_port()
    vllm = Server("vllm", vllm_command(vport, work), vport, cache_env, work / "vllm.log")
    cells: list[Cell] = []
    try:
        for server in (ours, vllm):  # one at a time: two engines loading at once starve each other
            server.start()
            server.wait_ready("/health/ready" if server is ours else "/health")
        up = httpx.post(ours.base + "/v1/files", files={"file": ("clip.mp4", clip, "video/mp4")},
                        data={"purpose": "vision"}, timeout=300)
        up.raise_for_status()
        file_id = up.json()["id"]
        kinds = args.kinds.split(",")
        stacks = ("ours", "vllm")
        for server in stacks:  # warm both (first-request compile and caches), not measured
            base = (ours if server == "ours" else vllm).base
            asyncio.run(run_cell(Cell(server, "warm", 1), base, [data_url(salted(clip, "warm"))], model, 4))
        for ci, conc in enumerate(int(c) for c in args.concurrency.split(",")):
            n = args.requests or max(8, conc)
            for ki, kind in enumerate(kinds):
                order = stacks if (ci + ki) % 2 == 0 else stacks[::-1]
                for stack in order:
                    if kind == "file-id" and stack == "vllm":
                        continue
                    cell = Cell(stack, kind, conc)
                    base = ours.base if stack == "ours" else vllm.base
                    urls = urls_for(kind, n, clip, clips, file_id, f"{stack}-{conc}-{kind}")
                    asyncio.run(run_cell(cell, base, urls, model, args.max_tokens))
                    cells.append(cell)
                    t = [s.ttft for s in cell.samples] or [float("nan")]
                    print(f"c={conc:2d} {kind:9s} {stack:5s} ttft p50 {statistics.median(t):.3f} s, "
                          f"{len(cell.samples)}/{n} ok, {len(cell.samples) / cell.wall:.2f} req/s", flush=True)
    finally:
        for server in (ours, vllm):
            server.stop()
        clips.httpd.shutdown()
    body = markdown(cells, args, f"{spec.name} ({spec.description}, {len(clip) / 1e6:.1f} MB)")
    print(body)
    if not args.no_write:
        replace_section(ROOT / "perf" / "RESULTS.md", "Head to head: vs vLLM serve", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
