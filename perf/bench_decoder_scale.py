"""Decoder scale: 4 concurrent decodes of one clip through video_decoder against 4 processes of vLLM's loader.

    python perf/bench_decoder_scale.py [--clip h264-720p-60s] [--frames 16] [--per-client 3] [--no-write]
                                                            -> perf/RESULTS.md "Decoder scale"

Ours: ``tritonserver`` started by the launcher (video_pipeline.launch) with only
``video_decoder`` loaded, once per scale: the launcher's default (instances and FFmpeg
threads chosen from the usable cores), config.pbtxt as it is (2 instances, FFmpeg picks its
threads), and forced variants. Four client threads (one gRPC client each) send
``--per-client`` requests each for ``--frames`` frames spread uniformly over the clip, the
clip read by path under the decoder's media_root (as the shim hands over uploaded files),
so no video bytes cross gRPC. Each request changes ``max_frames`` (>= frames: the output is
the same) so every one misses the media cache. The decoder returns frames at the served
model's size (it scales while converting to RGB).

vLLM: 4 processes of its registered "opencv" loader (``VideoBackend.load_bytes(data,
num_frames=N)``, as vLLM's server calls it for ``--media-io-kwargs '{"video":
{"num_frames": N, "video_backend": "opencv"}}'``), the clip's bytes in memory, each
process decoding ``--per-client`` times after a common start; it returns native-size
frames (vLLM's processor resizes them afterwards, not timed here). OpenCV keeps its own
thread pool (vLLM's default).

Throughput = decodes / wall time from the common start to the last decode; latency = one
decode as its caller saw it. Before the concurrent runs each stack decodes once alone
(c=1 latency). The machine's cores and `uptime` load are written beside the numbers.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perf.clips import clip_by_name, ensure_clips  # noqa: E402
from perf.results import machine_load, publish  # noqa: E402

logger = logging.getLogger(__name__)
CONCURRENCY = 4
SECTION = "Decoder scale"


@dataclass
class Result:
    name: str
    scale: str
    single: float  # one decode alone, s
    latencies: list[float]
    wall: float

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.wall


# --- ours ------------------------------------------------------------------------------------------

def run_ours(name: str, clip: Path, frames: int, per_client: int, **scale: object) -> Result:
    import numpy as np
    import tritonclient.grpc as grpcclient

    from video_pipeline import contract as C
    from video_pipeline.launch import TritonServer
    from video_pipeline.steps import MEDIA_ROOT_ENV

    counter = iter(range(10**6))
    lock = threading.Lock()

    def request(client: grpcclient.InferenceServerClient) -> float:
        with lock:
            bust = next(counter)  # a fresh cache key, the same frames
        opts = {"num_frames": frames, "max_frames": 10_000 - bust, "path": clip.name}
        inputs = [grpcclient.InferInput(C.VIDEO, [1], "BYTES"), grpcclient.InferInput(C.VIDEO_OPTIONS, [1], "BYTES")]
        inputs[0].set_data_from_numpy(np.array([b""], dtype=np.object_))
        inputs[1].set_data_from_numpy(np.array([json.dumps(opts).encode()], dtype=np.object_))
        started = time.perf_counter()
        result = client.infer(C.VIDEO_DECODER.name, inputs)
        took = time.perf_counter() - started
        got = result.as_numpy(C.FRAMES).shape[0]
        if got != frames:
            raise RuntimeError(f"video_decoder returned {got} frames, expected {frames}")
        return took

    log = Path(tempfile.mkstemp(prefix="bench-decoder-scale-", suffix=".log")[1])
    with TritonServer(ROOT / "model_repository", ["video_decoder"], log_path=log,
                      env={MEDIA_ROOT_ENV: str(clip.parent)}, **scale) as server:
        cfg = _decoder_config(server.http_url)
        count = cfg["instance_group"][0]["count"]
        threads = cfg.get("parameters", {}).get("threads", {}).get("string_value") or "0 (FFmpeg picks)"
        clients = [grpcclient.InferenceServerClient(server.grpc_url) for _ in range(CONCURRENCY)]
        try:
            for c in clients:  # first call of each connection and instance, unmeasured
                request(c)
            single = statistics.median(request(clients[0]) for _ in range(2))
            latencies: list[float] = []
            barrier = threading.Barrier(CONCURRENCY + 1)

            def worker(c: grpcclient.InferenceServerClient) -> None:
                barrier.wait()
                for _ in range(per_client):
                    took = request(c)
                    with lock:
                        latencies.append(took)

            workers = [threading.Thread(target=worker, args=(c,)) for c in clients]
            for w in workers:
                w.start()
            barrier.wait()
            started = time.perf_counter()
            for w in workers:
                w.join()
            wall = time.perf_counter() - started
        finally:
            for c in clients:
                c.close()
    log.unlink(missing_ok=True)
    return Result(name, f"{count} instance(s) x {threads} thread(s)", single, latencies, wall)


def _decoder_config(http_url: str) -> dict:
    import urllib.request

    with urllib.request.urlopen(f"http://{http_url}/v2/models/video_decoder/config", timeout=10) as resp:
        return json.loads(resp.read())


# --- vLLM's loader ---------------------------------------------------------------------------------

def _vllm_process(clip: str, frames: int, per_client: int, ready: mp.Barrier, out: mp.Queue) -> None:
    from vllm.multimodal.video import VIDEO_LOADER_REGISTRY

    loader = VIDEO_LOADER_REGISTRY.load("opencv")
    data = Path(clip).read_bytes()
    loader.load_bytes(data, num_frames=frames)  # first call (imports, cv2 init), unmeasured
    ready.wait()
    times = []
    for _ in range(per_client):
        started = time.perf_counter()
        got, _meta = loader.load_bytes(data, num_frames=frames)
        times.append(time.perf_counter() - started)
        if len(got) != frames:
            raise RuntimeError(f"vLLM's loader returned {len(got)} frames, expected {frames}")
    out.put((times, time.perf_counter()))


def _vllm_single(clip: str, frames: int, out: mp.Queue) -> None:
    from vllm.multimodal.video import VIDEO_LOADER_REGISTRY

    loader = VIDEO_LOADER_REGISTRY.load("opencv")
    data = Path(clip).read_bytes()
    loader.load_bytes(data, num_frames=frames)
    times = []
    for _ in range(2):
        started = time.perf_counter()
        loader.load_bytes(data, num_frames=frames)
        times.append(time.perf_counter() - started)
    out.put(statistics.median(times))


def run_vllm(clip: Path, frames: int, per_client: int) -> Result:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    p = ctx.Process(target=_vllm_single, args=(str(clip), frames, out))
    p.start()
    single = out.get(timeout=600)
    p.join()
    ready = ctx.Barrier(CONCURRENCY + 1)
    procs = [ctx.Process(target=_vllm_process, args=(str(clip), frames, per_client, ready, out))
             for _ in range(CONCURRENCY)]
    for p in procs:
        p.start()
    ready.wait(timeout=600)
    started = time.perf_counter()
    results = [out.get(timeout=900) for _ in procs]
    for p in procs:
        p.join()
    latencies = [t for times, _end in results for t in times]
    wall = max(end for _times, end in results) - started  # perf_counter is system-wide on Linux
    return Result("vLLM loader (opencv)", f"{CONCURRENCY} processes", single, latencies, wall)


# --- report ----------------------------------------------------------------------------------------

def markdown(results: list[Result], args: argparse.Namespace, clip_desc: str, cores: int, load: str) -> str:
    lines = [
        f"`python perf/bench_decoder_scale.py --clip {args.clip} --frames {args.frames} --per-client "
        f"{args.per_client}` on this {os.cpu_count()}-CPU machine ({cores} usable cores; "
        f"`uptime` at the end, the benchmark's own load included: {load}). {CONCURRENCY} concurrent decodes of one clip, {args.per_client} each "
        f"({CONCURRENCY * args.per_client} in all), {args.frames} frames spread uniformly over it; every decode "
        f"a cache miss. Clip: {clip_desc}. Ours returns frames at the served model's size, vLLM's loader at the "
        "native size (its processor resizes later, untimed).",
        "",
        "| stack | scale | 1 decode alone, s | decodes/s at 4 | latency p50 at 4, s | latency max at 4, s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r.name} | {r.scale} | {r.single:.2f} | {r.throughput:.2f} | "
                     f"{statistics.median(r.latencies):.2f} | {max(r.latencies):.2f} |")
    peer = next((r for r in results if r.name.startswith("vLLM")), None)
    default = next((r for r in results if r.name.startswith("ours, launcher default")), None)
    if peer and default:
        lines += ["", f"Launcher default / vLLM's loader: throughput {default.throughput / peer.throughput:.2f}x, "
                  f"one decode alone {default.single / peer.single:.2f}x the time."]
    as_is = next((r for r in results if r.name.startswith("ours, config.pbtxt")), None)
    if default and as_is and as_is.throughput > default.throughput * 1.1:
        lines += ["", f"Here FFmpeg's own thread count (config.pbtxt as is) gave {as_is.throughput / default.throughput:.2f}x "
                  "the launcher default's throughput. On a machine shared with other work, more runnable threads "
                  "also take a larger share of the cores from the other processes, so rerun this on a quiet "
                  "machine before drawing a conclusion about the thread choice."]
    lines += ["", "On 2 cores the launcher picks 2 instances x 1 FFmpeg thread (one decode per core, no thread "
              "oversubscription when both are busy); on a bigger machine min(cores, 8) instances x "
              "max(1, cores // instances) threads (video_pipeline/launch.py, decoder_scale)."]
    return "\n".join(lines)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default="h264-720p-60s")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--per-client", type=int, default=3, help="decodes per client (4 clients)")
    parser.add_argument("--no-write", action="store_true", help="print, do not update perf/RESULTS.md")
    args = parser.parse_args()
    from video_pipeline.launch import usable_cores

    spec = clip_by_name(args.clip)
    ensure_clips([spec])
    cores = usable_cores()
    work = Path(tempfile.mkdtemp(prefix="bench-decoder-scale-", dir=ROOT / ".cache"))
    try:
        clip = work / spec.path.name
        shutil.copyfile(spec.path, clip)  # the decoder's media_root holds only this clip
        runs = [
            ("ours, launcher default", {"decoder_scale": "cores", "decoder_instances": 0, "decoder_threads": 0}),
            ("ours, config.pbtxt as is", {"decoder_scale": "config"}),
            ("ours, 4 instances", {"decoder_scale": "cores", "decoder_instances": 4, "decoder_threads": 0}),
            ("ours, 1 instance", {"decoder_scale": "cores", "decoder_instances": 1, "decoder_threads": 0}),
        ]
        results = []
        for name, scale in runs:
            results.append(run_ours(name, clip, args.frames, args.per_client, **scale))
            r = results[-1]
            logger.info("%s (%s): alone %.2f s, %.2f decodes/s at %d", name, r.scale, r.single, r.throughput,
                        CONCURRENCY)
        results.append(run_vllm(clip, args.frames, args.per_client))
        r = results[-1]
        logger.info("%s: alone %.2f s, %.2f decodes/s at %d", r.name, r.single, r.throughput, CONCURRENCY)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    body = markdown(results, args, f"{spec.name} ({spec.description}, {spec.path.stat().st_size / 1e6:.1f} MB)",
                    cores, machine_load())
    publish(SECTION, body, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
