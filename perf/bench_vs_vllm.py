"""Head to head: our stack (tritonserver + shim) against vLLM's own OpenAI server, same engine and model.

    python perf/bench_vs_vllm.py [--clip h264-720p-60s] [--concurrency 1,4,16] [--quick]
                                                            -> perf/RESULTS.md "Head to head: vs vLLM serve"

Both servers run on this machine at once on the same tiny Qwen2-VL with the same engine
arguments (model_repository/llm/1/model.json) and see the same frames: 16 per video,
sampled uniformly over the clip, sized by the same processor files (the model folder both
read). Ours: the request's ``media_io_kwargs``. vLLM: ``--media-io-kwargs '{"video":
{"num_frames": 16, "video_backend": "opencv"}}'``. The ``video_backend`` is needed: vLLM
0.32 picks its ``qwen2_vl`` loader for a model whose video processor is
``Qwen2VLVideoProcessor``, and that loader ignores ``num_frames`` (it samples at 2 fps,
120 frames of a 60-s clip: 7x the tokens); the plain ``opencv`` loader honours it. Frame
size needs no flag: vLLM's processor reads the same ``video_preprocessor_config.json`` our
media models size frames from (``--mm-processor-kwargs`` was never the cause).

Every row shows both stacks' prompt tokens; the run fails (exit 1, nothing written) when
they differ by more than 5%, checked once after warm-up and again over every request.
Each request streams ``max_tokens`` tokens with ``ignore_eos``, so both generate the same
number. Request kinds:

- ``data-url``: the video inline as base64, its bytes made unique per request (a ``free``
  box of random bytes appended, still a valid MP4): cold, no cache can help;
- ``http-url``: the same unique bytes served by a local HTTP server, fetched by the server;
- ``file-id``: ours only: a distinct upload per request (cold), referenced by id;
- ``repeated``: one data: URL, sent once unmeasured and then every time (caches may help:
  vLLM's processor cache, our media cache);
- ``file-id-repeat``: ours only: one uploaded file, primed once, then every time.

For each concurrency, the kinds and the two stacks are interleaved (the order alternates).
The client is a small async httpx loop (no other load tool speaks OpenAI chat with video
parts): time to first token = from sending to the first SSE chunk with content; latency =
to ``[DONE]``; requests/s = requests / wall time of the cell.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.server
import json
import logging
import os
import shutil
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

logger = logging.getLogger(__name__)
MODEL_JSON = ROOT / "model_repository" / "llm" / "1" / "model.json"
NUM_FRAMES = 16
# Prompt tokens of the two stacks may differ by at most this fraction (of the larger).
TOKEN_TOLERANCE = 0.05
# Requests per cell by concurrency (--requests overrides): a cell's wall time stays near 10-30 s here.
DEFAULT_REQUESTS = {1: 8, 4: 8, 16: 16}  # c=1 medians of 4 swung with one slow request
COLD_KINDS = ("data-url", "http-url", "file-id")
REPEAT_KINDS = ("repeated", "file-id-repeat")
OURS_ONLY = ("file-id", "file-id-repeat")

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
           # The uniform loader: vLLM's default for Qwen2VLVideoProcessor ("qwen2_vl") ignores num_frames.
           "--media-io-kwargs", json.dumps({"video": {"num_frames": NUM_FRAMES, "video_backend": "opencv"}}),
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


def urls_for(kind: str, n: int, clip: bytes, clips: ClipServer, file_ids: list[str], tag: str) -> list[str]:
    """The ``n`` URLs (or file ids) of one cell; ``file_ids``: distinct uploads, the first one kept for repeats."""
    if kind == "data-url":
        return [data_url(salted(clip, f"{tag}-{i}")) for i in range(n)]
    if kind == "http-url":
        return [clips.url(f"{tag}-{i}") for i in range(n)]
    if kind == "repeated":
        return [data_url(salted(clip, "repeated"))] * n
    if kind == "file-id":
        return [file_ids.pop() for _ in range(n)]
    return [REPEAT_FILE[0]] * n


REPEAT_FILE: list[str] = []


def upload(base: str, data: bytes) -> str:
    r = httpx.post(base + "/v1/files", files={"file": ("clip.mp4", data, "video/mp4")}, data={"purpose": "vision"},
                   timeout=300)
    r.raise_for_status()
    return r.json()["id"]


def token_gap(ours: set[int], theirs: set[int]) -> float:
    """The largest relative difference between any prompt-token count of one stack and any of the other."""
    if not ours or not theirs:
        return 0.0
    return max(abs(a - b) / max(a, b) for a in ours for b in theirs)


class TokenMismatch(RuntimeError):
    """The two stacks counted different prompts: the comparison would not be like for like."""


def check_tokens(ours: set[int], theirs: set[int], where: str) -> None:
    gap = token_gap(ours, theirs)
    if gap > TOKEN_TOLERANCE:
        raise TokenMismatch(f"prompt tokens differ by {gap:.1%} (> {TOKEN_TOLERANCE:.0%}) {where}: ours "
                            f"{sorted(ours)}, vLLM {sorted(theirs)}; the two servers did not see the same frames")


# --- report ----------------------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def _tokens(cell: Cell | None) -> set[int]:
    return {s.prompt_tokens for s in cell.samples} if cell else set()


def _fmt(tokens: set[int]) -> str:
    return "/".join(map(str, sorted(tokens))) or "-"


def markdown(cells: list[Cell], args: argparse.Namespace, clip_desc: str, reference: dict[str, set[int]],
             load: str) -> str:
    counts = ", ".join(f"c={c}: {n}" for c, n in requests_per_cell(args).items())
    lines = [
        f"`python perf/bench_vs_vllm.py --clip {args.clip} --concurrency {args.concurrency} --max-tokens "
        f"{args.max_tokens}{f' --requests {args.requests}' if args.requests else ''}` on {os.cpu_count()} CPUs "
        f"(`uptime` at the end, the benchmark's own load included: {load}); both servers up at once, tiny Qwen2-VL, vLLM CPU "
        f"engine with the same engine arguments, {NUM_FRAMES} frames per video on both sides (vLLM: "
        f"`--media-io-kwargs '{{\"video\": {{\"num_frames\": {NUM_FRAMES}, \"video_backend\": \"opencv\"}}}}'`), "
        f"frames sized by the model's processor files on both sides, {args.max_tokens} tokens per answer "
        f"(ignore_eos). Requests per cell: {counts}. Clip: {clip_desc}. Times in seconds.",
        "",
        "Cold (a distinct video every request):",
        "",
        *_table([c for c in cells if c.kind in COLD_KINDS], cells, reference),
        "",
        "Repeats (the same video every request, primed by one unmeasured request):",
        "",
        *_table([c for c in cells if c.kind in REPEAT_KINDS], cells, reference),
        "",
        "Ours / vLLM (same kind and concurrency; TTFT: < 1 is faster; req/s: > 1 is more; file ids against "
        "vLLM's data URLs):",
        "", "| c | kind | TTFT p50 | TTFT p90 | req/s |", "|---:|---|---:|---:|---:|",
    ]
    by_key = {(c.concurrency, c.kind, c.stack): c for c in cells}
    for c in cells:
        peer = {"file-id": "data-url", "file-id-repeat": "repeated"}.get(c.kind, c.kind)
        theirs = by_key.get((c.concurrency, peer, "vllm"))
        if c.stack != "ours" or theirs is None or not c.samples or not theirs.samples:
            continue
        mine_t, their_t = [s.ttft for s in c.samples], [s.ttft for s in theirs.samples]
        lines.append(f"| {c.concurrency} | {c.kind} | {pct(mine_t, .5) / pct(their_t, .5):.2f} | "
                     f"{pct(mine_t, .9) / pct(their_t, .9):.2f} | "
                     f"{(len(c.samples) / c.wall) / (len(theirs.samples) / theirs.wall):.2f} |")
    gap = token_gap(reference["ours"] | {t for c in cells if c.stack == "ours" for t in _tokens(c)},
                    reference["vllm"] | {t for c in cells if c.stack == "vllm" for t in _tokens(c)})
    lines += ["", f"Prompt tokens: the largest gap between the stacks over every request is {gap:.1%} (the run fails "
              f"above {TOKEN_TOLERANCE:.0%}). Frame size: the served model's bounds "
              f"(video_min_pixels..video_max_pixels = {MIN_PIXELS}..{MAX_PIXELS} per frame, from its processor "
              "files) on both sides."]
    errors = [f"- {c.stack} {c.kind} c={c.concurrency}: {c.errors[0]}" for c in cells if c.errors]
    if errors:
        lines += ["", "First error of each cell that had any:", "", *errors]
    return "\n".join(lines)


def _table(rows: list[Cell], cells: list[Cell], reference: dict[str, set[int]]) -> list[str]:
    out = ["| c | kind | stack | n | TTFT p50 | TTFT p90 | latency p50 | req/s | prompt tokens ours | "
           "prompt tokens vLLM | errors |",
           "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    by_key = {(c.concurrency, c.kind, c.stack): c for c in cells}
    for c in rows:
        both = {stack: _tokens(by_key.get((c.concurrency, c.kind, stack))) or reference[stack]
                for stack in ("ours", "vllm")}
        if c.samples:
            t = [s.ttft for s in c.samples]
            lat = [s.latency for s in c.samples]
            out.append(f"| {c.concurrency} | {c.kind} | {c.stack} | {len(c.samples)} | {pct(t, .5):.3f} | "
                       f"{pct(t, .9):.3f} | {pct(lat, .5):.3f} | {len(c.samples) / c.wall:.2f} | "
                       f"{_fmt(both['ours'])} | {_fmt(both['vllm'])} | {len(c.errors)} |")
        else:
            out.append(f"| {c.concurrency} | {c.kind} | {c.stack} | 0 | - | - | - | - | {_fmt(both['ours'])} | "
                       f"{_fmt(both['vllm'])} | {len(c.errors)} |")
    return out


def requests_per_cell(args: argparse.Namespace) -> dict[int, int]:
    return {c: args.requests or DEFAULT_REQUESTS.get(c, max(8, c)) for c in map(int, args.concurrency.split(","))}


# --- main ------------------------------------------------------------------------------------------

def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default="h264-720p-60s")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--requests", type=int, default=0,
                        help=f"requests per cell (default by concurrency: {DEFAULT_REQUESTS})")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--kinds", default=",".join(COLD_KINDS + REPEAT_KINDS))
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
    kinds = args.kinds.split(",")
    per_cell = requests_per_cell(args)
    cells: list[Cell] = []
    reference: dict[str, set[int]] = {}
    try:
        for server in (ours, vllm):  # one at a time: two engines loading at once starve each other
            server.start()
            server.wait_ready("/health/ready" if server is ours else "/health")
        cold_files = sum(n for c, n in per_cell.items()) if "file-id" in kinds else 0
        file_ids = [upload(ours.base, salted(clip, f"file-{i}")) for i in range(cold_files)]
        REPEAT_FILE.append(upload(ours.base, salted(clip, "file-repeat")))
        stacks = ("ours", "vllm")
        for stack in stacks:  # warm both (first-request costs), unmeasured; their prompt tokens are the reference
            base = (ours if stack == "ours" else vllm).base
            warm = Cell(stack, "warm", 1)
            asyncio.run(run_cell(warm, base, [data_url(salted(clip, "warm")), data_url(salted(clip, "repeated"))],
                                 model, 4))
            if warm.errors:
                raise RuntimeError(f"{stack}: the warm-up request failed: {warm.errors[0]}")
            reference[stack] = _tokens(warm)
        if "file-id-repeat" in kinds:
            prime = Cell("ours", "file-id-repeat", 1)
            asyncio.run(run_cell(prime, ours.base, [REPEAT_FILE[0]], model, 4))
            reference["ours"] |= _tokens(prime)
        check_tokens(reference["ours"], reference["vllm"], "on the warm-up requests")
        logger.info("prompt tokens agree: ours %s, vLLM %s", sorted(reference["ours"]), sorted(reference["vllm"]))
        for ci, conc in enumerate(per_cell):
            n = per_cell[conc]
            for ki, kind in enumerate(kinds):
                order = stacks if (ci + ki) % 2 == 0 else stacks[::-1]
                for stack in order:
                    if kind in OURS_ONLY and stack == "vllm":
                        continue
                    cell = Cell(stack, kind, conc)
                    base = ours.base if stack == "ours" else vllm.base
                    urls = urls_for(kind, n, clip, clips, file_ids, f"{stack}-{conc}-{kind}")
                    asyncio.run(run_cell(cell, base, urls, model, args.max_tokens))
                    cells.append(cell)
                    t = [s.ttft for s in cell.samples] or [float("nan")]
                    logger.info("c=%2d %-14s %-5s ttft p50 %.3f s, %d/%d ok, %.2f req/s, prompt tokens %s", conc,
                                kind, stack, statistics.median(t), len(cell.samples), n,
                                len(cell.samples) / cell.wall, _fmt(_tokens(cell)))
    except TokenMismatch as exc:
        logger.error("FAILED: %s", exc)
        return 1
    finally:
        for server in (ours, vllm):
            server.stop()
        clips.httpd.shutdown()
        shutil.rmtree(work / "files", ignore_errors=True)  # hundreds of MB of uploads; the logs stay
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    body = markdown(cells, args, f"{spec.name} ({spec.description}, {len(clip) / 1e6:.1f} MB)", reference, load)
    print(body)
    try:
        check_tokens({t for c in cells if c.stack == "ours" for t in _tokens(c)} | reference["ours"],
                     {t for c in cells if c.stack == "vllm" for t in _tokens(c)} | reference["vllm"],
                     "over the measured requests")
    except TokenMismatch as exc:
        logger.error("FAILED: %s; perf/RESULTS.md not updated", exc)
        return 1
    if not args.no_write:
        # one section per clip: the 60-s 720p clip keeps the section's first name
        title = "Head to head: vs vLLM serve" + ("" if spec.name == "h264-720p-60s" else f" ({spec.name})")
        replace_section(ROOT / "perf" / "RESULTS.md", title, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
