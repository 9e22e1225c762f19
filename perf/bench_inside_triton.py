"""Frames through the shim (old) vs container bytes to llm, decoded inside tritonserver (new), side by side.

    python perf/bench_inside_triton.py [--quick]      -> perf/RESULTS.md "Frames stay inside Triton"

One tritonserver (decoder, preprocessor, video_media, llm; tiny Qwen2-VL on vLLM CPU) and two
shims, each its own process on the same server: ``old`` (``TritonBackend(frames_through_shim=True)``:
video_media's frames come back to the shim, which sends them to llm) and ``new`` (the default: the
shim sends the container to llm once and gets text back). Per request: a streamed chat completion with
the video inline as a data: URL, 16 frames (``num_frames``), 8 tokens with ``ignore_eos``.

- ``cold``: every request's bytes are unique (a ``free`` box of random bytes appended, still a
  valid MP4), so the decoder's media cache never helps;
- ``repeat``: one data: URL, sent once unmeasured, then every time (the decoder's cache hits).

Measured per cell: time to first token (p50/p90, from sending to the first content chunk),
requests/s (requests / wall time of the cell), bytes the shim moved to and from tritonserver
per request (counted by the shim itself: gRPC payloads of video_media and llm), and the shim
process's peak RSS over the cell (tests.memory.PeakRss, sampled every 10 ms). The two shims'
cells alternate (old, new, new, old, ...) so machine load drifts evenly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perf.bench_vs_vllm import Cell, data_url, one, pct, salted  # noqa: E402
from perf.clips import clip_by_name, ensure_clips  # noqa: E402
from perf.results import replace_section  # noqa: E402
from tests.memory import PeakRss  # noqa: E402

logger = logging.getLogger(__name__)
MODEL = "tiny-qwen2-vl"
NUM_FRAMES = 16
MAX_TOKENS = 8
QUESTION = "What happens in the video?"
CLIP_360P = clip_by_name("h264-360p-10s")
CLIPS = {"360p-10s": CLIP_360P, "720p-60s": clip_by_name("h264-720p-60s")}
# Requests per cell by concurrency; c=16 gets one wave of 16 (fewer than the others relative to c).
REQUESTS = {1: 4, 4: 8, 16: 16}
QUICK_REQUESTS = {1: 2, 4: 4, 16: 16}
NOTE = ("Reading it: the shim's bytes per request are the container's alone on the new path (the issue's target: the container bytes or less), container + 2x the frames on the old one. The tiny model sizes frames to at most 50176 pixels, so 16 frames are only ~2.4 MB here; with a real model's pixel budget (100-300 MB of frames for long videos) the old path's extra copies grow with them while the new path's stay the container. At c=16 the shim's RSS is dominated by the data: URL bodies themselves (base64 JSON, ~22 MB each for the 720p clip), the same on both paths. Other engineers' jobs shared the 2 cores during the run (load average up to 8), so cold 720p cells (decode-bound, seconds each) are noisy: compare rows within a cell pair, not across runs.")


# --- the shim process ----------------------------------------------------------------------------

def serve_shim(triton_url: str, port: int, path: str, files_dir: str) -> None:
    """Runs one shim (``path`` old|new) that counts the bytes it moves to/from tritonserver."""
    import uvicorn

    from openai_frontend.app import create_app
    from openai_frontend.backend.triton import TritonBackend
    from openai_frontend.settings import Settings

    moved = {"bytes": 0, "requests": 0}

    class CountingBackend(TritonBackend):
        async def media(self, videos, options):  # type: ignore[no-untyped-def]
            frames, infos = await super().media(videos, options)
            moved["bytes"] += sum(len(v) for v in videos) + frames.nbytes  # the containers out, the frames back
            return frames, infos

        async def generate(self, request):  # type: ignore[no-untyped-def]
            moved["requests"] += 1
            moved["bytes"] += sum(len(v) for v in request.videos) + (
                0 if request.frames is None else request.frames.nbytes)
            async for delta in super().generate(request):
                yield delta

    settings = Settings(model_repository=str(ROOT / "model_repository"), port=port, files_dir=files_dir,
                        served_model_name=MODEL)
    app = create_app(settings, CountingBackend(triton_url, timeout_s=600, frames_through_shim=path == "old"))

    @app.get("/_bench/moved")
    async def _moved() -> dict[str, int]:
        return dict(moved)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


class ShimProcess:
    def __init__(self, triton_url: str, path: str, files_dir: str) -> None:
        from video_pipeline.launch import free_port

        self.path = path
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve-shim", triton_url, str(self.port), path,
                                      files_dir])
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.base}/_bench/moved", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"shim {path} did not start")
            time.sleep(0.2)

    def moved(self) -> dict[str, int]:
        return httpx.get(f"{self.base}/_bench/moved", timeout=10).json()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


# --- the client ------------------------------------------------------------------------------------

def body(url: str) -> dict:
    return {"model": MODEL, "stream": True, "stream_options": {"include_usage": True}, "max_tokens": MAX_TOKENS,
            "ignore_eos": True, "temperature": 0, "media_io_kwargs": {"video": {"num_frames": NUM_FRAMES}},
            "messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                                      {"type": "text", "text": QUESTION}]}]}


async def run_cell(cell: Cell, base: str, urls: list[str]) -> None:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for url in urls:
        queue.put_nowait(url)
    limits = httpx.Limits(max_connections=cell.concurrency + 2)
    async with httpx.AsyncClient(timeout=httpx.Timeout(900), limits=limits) as http:

        async def worker() -> None:
            while not queue.empty():
                url = queue.get_nowait()
                try:
                    cell.samples.append(await one(http, base, body(url)))
                except Exception as exc:  # noqa: BLE001 - a failed request is a result, recorded
                    cell.errors.append(str(exc)[:200])

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(cell.concurrency)))
        cell.wall = time.perf_counter() - started


def measure(shim: ShimProcess, cell: Cell, urls: list[str]) -> dict[str, float]:
    before = shim.moved()
    with PeakRss(shim.proc.pid) as rss:
        asyncio.run(run_cell(cell, shim.base, urls))
    after = shim.moved()
    n = max(1, after["requests"] - before["requests"])
    return {"bytes_per_request": (after["bytes"] - before["bytes"]) / n, "peak_rss": rss.peak}


def bench(quick: bool) -> tuple[list[dict], dict[str, int], str]:
    from video_pipeline.launch import TritonServer

    os.environ.setdefault("VLLM_CACHE_ROOT", str(ROOT / ".cache" / "vllm"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    ensure_clips(list(CLIPS.values()))
    clips = {name: spec.path.read_bytes() for name, spec in CLIPS.items()}
    per_cell = QUICK_REQUESTS if quick else REQUESTS
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = TritonServer(ROOT / "model_repository", ["video_decoder", "video_preprocessor", "video_media", "llm"],
                              log_path=Path(tmp) / "tritonserver.log", ready_timeout_s=600)
        server.start()
        shims = {}
        try:
            shims = {p: ShimProcess(server.grpc_url, p, str(Path(tmp) / f"files-{p}")) for p in ("old", "new")}
            warm = data_url(salted(clips["360p-10s"], "warm-up"))
            for shim in shims.values():  # first requests pay one-off costs (engine, allocator)
                asyncio.run(run_cell(Cell(shim.path, "warm", 1), shim.base, [warm]))
            flip = False
            for clip_name, clip in clips.items():
                for c, n in per_cell.items():
                    repeat_url = data_url(salted(clip, f"repeat-{clip_name}-{c}"))
                    for shim in shims.values():  # prime the decoder's cache for the repeat cells
                        asyncio.run(run_cell(Cell(shim.path, "prime", 1), shim.base, [repeat_url]))
                    order = ("new", "old") if flip else ("old", "new")
                    flip = not flip
                    for kind in ("cold", "repeat"):
                        for path in order:
                            urls = ([data_url(salted(clip, f"{path}-{clip_name}-{c}-{i}-{time.monotonic_ns()}"))
                                     for i in range(n)] if kind == "cold" else [repeat_url] * n)
                            cell = Cell(path, kind, c)
                            stats = measure(shims[path], cell, urls)
                            rows.append({"clip": clip_name, "path": path, "kind": kind, "c": c, "cell": cell, **stats})
                            logger.info("%s %s %s c=%d: ttft p50 %.3f s, %.2f req/s, %.1f MB/req, rss %.0f MB, "
                                        "errors %d", clip_name, path, kind, c,
                                        pct([s.ttft for s in cell.samples], 0.5) if cell.samples else -1,
                                        len(cell.samples) / cell.wall, stats["bytes_per_request"] / 1e6,
                                        stats["peak_rss"] / 1e6, len(cell.errors))
        finally:
            if any(r["cell"].errors for r in rows):
                logger.warning("tritonserver log tail:\n%s", server.log_tail(8000))
            for shim in shims.values():
                shim.stop()
            server.stop()
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return rows, {name: len(data) for name, data in clips.items()}, load


def markdown(rows: list[dict], sizes: dict[str, int], load_before: str, load_after: str, quick: bool) -> str:
    lines = [
        f"Run {time.strftime('%Y-%m-%d')} on {os.cpu_count()} shared cores, `python perf/bench_inside_triton.py"
        f"{' --quick' if quick else ''}`: one tritonserver (tiny Qwen2-VL on vLLM CPU), two shim processes on it. "
        "**old**: video_media's frames come back through the shim, which sends them to llm; **new**: the shim "
        "sends the container to llm once (llm runs video_media inside Triton through BLS) and gets text back. "
        f"Streamed chat completions, the video inline as a data: URL, {NUM_FRAMES} frames, {MAX_TOKENS} tokens. "
        "cold: unique bytes per request (no cache can help); repeat: one URL, primed once (decoder cache hits). "
        "Requests per cell: " + ", ".join(f"c={c}: {n}" for c, n in (QUICK_REQUESTS if quick else REQUESTS).items())
        + " (c=16 is a single wave). Shim MB/req: gRPC payload the shim sent to and received from tritonserver "
        "per request (videos and frames; text not counted); peak RSS: the shim process over the cell.",
        "",
        f"Machine load (`uptime`): before `{load_before}`; after `{load_after}`.",
        "",
        "Clips: " + ", ".join(f"{name} ({CLIPS[name].description}, {size / 1e6:.1f} MB)" for name, size in sizes.items()),
        "",
        "| clip | kind | c | path | shim MB/req | shim peak RSS (MB) | TTFT p50 (s) | TTFT p90 (s) | req/s | ok/errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cell = r["cell"]
        ttfts = [s.ttft for s in cell.samples]
        p50 = f"{pct(ttfts, 0.5):.3f}" if ttfts else "–"
        p90 = f"{pct(ttfts, 0.9):.3f}" if ttfts else "–"
        lines.append(f"| {r['clip']} | {r['kind']} | {r['c']} | {r['path']} | {r['bytes_per_request'] / 1e6:.2f} | "
                     f"{r['peak_rss'] / 1e6:.0f} | {p50} | {p90} | {len(cell.samples) / cell.wall:.2f} | "
                     f"{len(cell.samples)}/{len(cell.errors)} |")
    lines += ["", NOTE]
    errors = sorted({e for r in rows for e in r["cell"].errors})
    if errors:
        lines += ["", "Errors: " + "; ".join(errors[:5])]
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-shim":
        triton_url, port, path, files_dir = sys.argv[2:6]
        serve_shim(triton_url, int(port), path, files_dir)
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer requests per cell")
    parser.add_argument("--no-write", action="store_true", help="print, do not write perf/RESULTS.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    load_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    started = time.monotonic()
    rows, sizes, load_after = bench(args.quick)
    text = markdown(rows, sizes, load_before, load_after, args.quick)
    text += f"\n\nThe run took {time.monotonic() - started:.0f} s."
    if not args.no_write:
        replace_section(ROOT / "perf" / "RESULTS.md", "Frames stay inside Triton: old path vs new", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
