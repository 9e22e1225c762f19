"""Benchmark clips, generated once with PyAV's encoders into ``perf/.clips/`` (gitignored).

The content is synthetic but behaves like camera footage for an encoder: a
detailed background (gradients, blurred noise, fine grain) that pans, plus
textured blocks moving across it. That gives motion-compensated P/B frames and
ordinary bitrates, unlike a flat colour that compresses to almost nothing and
decodes unrealistically fast.

Frames are written directly as yuv420p planes, so generation costs little more
than encoding. A clip is regenerated only when its file is missing or its spec
(stored next to it as ``<name>.json``) changed.
"""

from __future__ import annotations

import json
import logging
import os
import time
import zlib
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

logger = logging.getLogger(__name__)

CLIP_DIR = Path(__file__).resolve().parent / ".clips"


@dataclass(frozen=True)
class ClipSpec:
    """One benchmark clip: what it is and how to encode it."""

    name: str
    codec: str  # FFmpeg encoder name
    suffix: str  # container, chosen by file extension
    width: int
    height: int
    fps: int
    seconds: float
    gop: int  # frames between keyframes
    options: dict[str, str] = field(default_factory=dict)
    description: str = ""

    @property
    def path(self) -> Path:
        return CLIP_DIR / f"{self.name}{self.suffix}"

    @property
    def num_frames(self) -> int:
        return int(round(self.seconds * self.fps))

    @property
    def gop_seconds(self) -> float:
        return self.gop / self.fps


def _x264(gop: int) -> dict[str, str]:
    # superfast keeps x264's 3 B-frames (ultrafast turns them off); scenecut=0 keeps GOPs exactly `gop` long.
    return {
        "preset": "superfast",
        "crf": "23",
        "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=3",
    }


_H264_1080P = dict(
    codec="libx264", suffix=".mp4", width=1920, height=1080, fps=30, gop=250, options=_x264(250)
)
CLIPS: tuple[ClipSpec, ...] = (
    ClipSpec(
        name="h264-720p-60s",
        codec="libx264",
        suffix=".mp4",
        width=1280,
        height=720,
        fps=30,
        seconds=60,
        gop=250,
        options=_x264(250),
        description="H.264 720p30, 60 s, 250-frame GOP, 3 B-frames",
    ),
    ClipSpec(
        name="h264-1080p-60s",
        seconds=60,
        description="H.264 1080p30, 60 s, 250-frame GOP, 3 B-frames",
        **_H264_1080P,
    ),
    ClipSpec(
        name="h264-1080p-5min",
        seconds=300,
        description="H.264 1080p30, 5 min, 250-frame GOP, 3 B-frames",
        **_H264_1080P,
    ),
    ClipSpec(
        name="hevc-4k-12s",
        codec="libx265",
        suffix=".mp4",
        width=3840,
        height=2160,
        fps=30,
        seconds=12,
        gop=120,
        options={
            "preset": "ultrafast",
            "crf": "28",
            "x265-params": "keyint=120:min-keyint=120:scenecut=0:bframes=3:log-level=error",
            "tag": "hvc1",
        },
        description="HEVC 2160p30, 12 s, 120-frame GOP, 3 B-frames",
    ),
    ClipSpec(
        name="vp9-720p-30s",
        codec="libvpx-vp9",
        suffix=".webm",
        width=1280,
        height=720,
        fps=30,
        seconds=30,
        gop=120,
        options={"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0", "row-mt": "1"},
        description="VP9 720p30, 30 s, 120-frame GOP, realtime cpu-used 8",
    ),
)


#: Clips the serving benchmarks use beside the decode benchmark's set (bench_decode runs CLIPS only).
SERVING_CLIPS: tuple[ClipSpec, ...] = (
    ClipSpec(name="h264-360p-10s", codec="libx264", suffix=".mp4", width=640, height=360, fps=30, seconds=10,
             gop=250, options={"preset": "superfast", "crf": "23",
                               "x264-params": "keyint=250:min-keyint=250:scenecut=0:bframes=3"},
             description="H.264 360p30, 10 s, 250-frame GOP, 3 B-frames"),
    # The clips above have one slice per encoder thread (PyAV asks x264 for slice threads); phone and web H.264 is
    # mostly one slice per frame, where a decoder's extra threads can only be frame threads.
    ClipSpec(name="h264-360p-10s-1slice", codec="libx264", suffix=".mp4", width=640, height=360, fps=30, seconds=10,
             gop=250, options={"preset": "superfast", "crf": "23",
                               "x264-params": "keyint=250:min-keyint=250:scenecut=0:bframes=3:sliced-threads=0"},
             description="H.264 360p30, 10 s, 250-frame GOP, 3 B-frames, 1 slice per frame"),
    ClipSpec(name="h264-720p-60s-1slice", codec="libx264", suffix=".mp4", width=1280, height=720, fps=30, seconds=60,
             gop=250, options={"preset": "superfast", "crf": "23",
                               "x264-params": "keyint=250:min-keyint=250:scenecut=0:bframes=3:sliced-threads=0"},
             description="H.264 720p30, 60 s, 250-frame GOP, 3 B-frames, 1 slice per frame"),
)


def clip_by_name(name: str) -> ClipSpec:
    for spec in (*CLIPS, *SERVING_CLIPS):
        if spec.name == name:
            return spec
    raise KeyError(f"unknown clip {name!r}; known: {', '.join(s.name for s in (*CLIPS, *SERVING_CLIPS))}")


def ensure_clips(specs: tuple[ClipSpec, ...] | list[ClipSpec] = CLIPS) -> float:
    """Generates the clips that are missing or stale; returns the seconds spent generating."""
    CLIP_DIR.mkdir(parents=True, exist_ok=True)
    spent = 0.0
    for spec in specs:
        if _is_current(spec):
            continue
        t0 = time.perf_counter()
        _generate(spec)
        took = time.perf_counter() - t0
        spent += took
        logger.info(
            "generated %s (%d frames, %.1f MB) in %.1f s",
            spec.path.name,
            spec.num_frames,
            spec.path.stat().st_size / 1e6,
            took,
        )
    return spent


def _spec_path(spec: ClipSpec) -> Path:
    return spec.path.with_suffix(spec.path.suffix + ".json")


def _is_current(spec: ClipSpec) -> bool:
    try:
        return spec.path.stat().st_size > 0 and json.loads(_spec_path(spec).read_text()) == asdict(spec)
    except (OSError, ValueError):
        return False


def _generate(spec: ClipSpec) -> None:
    tmp = spec.path.with_name(spec.path.stem + ".tmp" + spec.suffix)
    scene = _Scene(spec.width, spec.height, seed=zlib.crc32(spec.name.encode()))
    options = dict(spec.options)
    tag = options.pop("tag", None)
    with av.open(str(tmp), mode="w") as out:
        stream = out.add_stream(spec.codec, rate=spec.fps)
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        stream.codec_context.gop_size = spec.gop
        stream.options = options
        if tag:
            stream.codec_tag = tag
        for i in range(spec.num_frames):
            frame = av.VideoFrame.from_ndarray(scene.frame(i, spec.fps), format="yuv420p")
            frame.pts = i
            frame.time_base = Fraction(1, spec.fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    os.replace(tmp, spec.path)
    _spec_path(spec).write_text(json.dumps(asdict(spec), indent=1))


class _Scene:
    """A panning, textured background with moving blocks, produced as packed yuv420p planes."""

    def __init__(self, width: int, height: int, seed: int) -> None:
        import cv2  # opencv-python-headless is in the venv through vLLM

        rng = np.random.default_rng(seed)
        self.w, self.h = width, height
        self.pad = max(64, width // 8) // 2 * 2
        bw, bh = width + 2 * self.pad, height + 2 * self.pad
        yy, xx = np.mgrid[0:bh, 0:bw].astype(np.float32)
        luma = 120 + 50 * np.sin(xx / 131.0) * np.cos(yy / 97.0) + 25 * np.sin((xx + yy) / 53.0)
        blobs = cv2.resize(
            rng.normal(0, 1, (bh // 16, bw // 16)).astype(np.float32), (bw, bh), interpolation=cv2.INTER_CUBIC
        )
        luma += 30 * blobs + rng.normal(0, 4, (bh, bw)).astype(np.float32)
        self.y = np.clip(luma, 16, 235).astype(np.uint8)
        cu = cv2.resize(
            rng.normal(0, 1, (bh // 64, bw // 64)).astype(np.float32),
            (bw // 2, bh // 2),
            interpolation=cv2.INTER_CUBIC,
        )
        cv_ = cv2.resize(
            rng.normal(0, 1, (bh // 64, bw // 64)).astype(np.float32),
            (bw // 2, bh // 2),
            interpolation=cv2.INTER_CUBIC,
        )
        self.u = np.clip(128 + 12 * cu, 16, 240).astype(np.uint8)
        self.v = np.clip(128 + 12 * cv_, 16, 240).astype(np.uint8)
        size = max(32, height // 6) // 2 * 2
        self.blocks = [
            (
                rng.integers(40, 220, (size, size), dtype=np.uint8),
                rng.uniform(0.2, 1.0, 2),
                rng.uniform(0, 6.28, 2),
            )
            for _ in range(4)
        ]
        self.size = size
        self.buf = np.empty((height * 3 // 2, width), dtype=np.uint8)

    def frame(self, i: int, fps: int) -> np.ndarray:
        t = i / fps
        # Pan on even offsets so the chroma planes move with the luma.
        ox = int(self.pad + self.pad * 0.9 * np.sin(0.21 * t)) // 2 * 2
        oy = int(self.pad + self.pad * 0.9 * np.sin(0.13 * t + 1.0)) // 2 * 2
        h, w = self.h, self.w
        y = self.buf[:h]
        y[:] = self.y[oy : oy + h, ox : ox + w]
        s = self.size
        for tex, speed, phase in self.blocks:
            bx = int((0.5 + 0.45 * np.sin(speed[0] * t + phase[0])) * (w - s))
            by = int((0.5 + 0.45 * np.sin(speed[1] * t + phase[1])) * (h - s))
            y[by : by + s, bx : bx + s] = tex
        uv = self.buf[h:].reshape(2, h // 2, w // 2)
        uv[0] = self.u[oy // 2 : oy // 2 + h // 2, ox // 2 : ox // 2 + w // 2]
        uv[1] = self.v[oy // 2 : oy // 2 + h // 2, ox // 2 : ox // 2 + w // 2]
        return self.buf
