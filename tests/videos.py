"""Test videos generated in memory with PyAV, each frame carrying its own index.

Every frame is a 4x4 grid of flat cells, which survives lossy coding, odd
sizes, chroma subsampling and resizing:

    +-----+-----+-----+-----+
    | RED | d5  | d4  | d3  |   RED: orientation marker (top-left of the coded frame)
    +-----+-----+-----+-----+   d5..d0: the frame index in base 4, one gray level per digit
    | d2  | d1  | d0  | chk |   chk: sum of the digits mod 4 (catches a misread cell)
    +-----+-----+-----+-----+
    | mid gray ...          |   the rest: neutral gray, so the marker is the only colour
    +-----------------------+

:func:`read_index` finds the marker, turns the frame back to coded orientation
and reads the digits; :func:`read_orientation` says how the frame was turned.
So a test can check exactly which frames a decoder returned, in which
orientation, whatever its size.

:func:`make_video` is cached per process (one pytest session), so a clip used by
many tests is encoded once.

Rotation is written as a real display matrix with PyAV's
``VideoStream.set_display_rotation`` (mp4/mov/mkv/webm all store it), so no
committed rotated file is needed. Variable frame rate clips get explicit frame
pts in a 1/1000 time base. Odd sizes use 4:4:4 for x264/x265 (their 4:2:0 needs
even sides); libvpx handles odd 4:2:0 itself; mpeg4 and SVT-AV1 refuse odd sizes.
"""

from __future__ import annotations

import functools
import io
import os
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np

GRID = 4
LEVELS = (32, 96, 160, 224)  # base-4 digit -> gray; 64 apart, far beyond coding noise
DIGITS = 6  # indices up to 4**6 - 1 = 4095
MID_GRAY = 128
MAX_INDEX = 4**DIGITS - 1

# SVT-AV1 logs its whole configuration to stderr on every stream unless told otherwise.
os.environ.setdefault("SVT_LOG", "1")

VIDEO_CODECS = ("libx264", "libx265", "libvpx-vp9", "libvpx", "libsvtav1", "mpeg4")
CONTAINERS = {"mp4": "mp4", "mov": "mov", "mkv": "matroska", "webm": "webm", "avi": "avi"}
AUDIO_CODECS = {"aac": "aac", "opus": "libopus"}


@dataclass(frozen=True)
class ClipSpec:
    """What to generate. Hashable, so clips can be cached by spec."""

    codec: str = "libx264"
    container: str = "mp4"  # a key of CONTAINERS
    width: int = 128
    height: int = 96
    fps: int = 25
    num_frames: int = 50
    gop: int = 10  # keyframe interval in frames
    bframes: bool = False
    audio: str | None = None  # "aac" | "opus"
    # Counterclockwise degrees stored in the display matrix (PyAV's convention; a phone held
    # upright writes -90, i.e. "turn the coded picture 90 degrees clockwise to show it").
    rotation: int = 0
    pts_ms: tuple[int, ...] | None = None  # variable frame rate: each frame's time in ms (time_base 1/1000)
    faststart: bool = False  # mp4/mov: index (moov) before the media data
    extra_video_streams: int = 0  # more copies of the video stream (to test stream-count limits)

    def __post_init__(self) -> None:
        if self.container not in CONTAINERS:
            raise ValueError(f"container must be one of {sorted(CONTAINERS)}")
        if self.audio is not None and self.audio not in AUDIO_CODECS:
            raise ValueError(f"audio must be one of {sorted(AUDIO_CODECS)}")
        if self.pts_ms is not None and len(self.pts_ms) != self.num_frames:
            raise ValueError("pts_ms needs one timestamp per frame")
        if self.num_frames - 1 > MAX_INDEX:
            raise ValueError(f"at most {MAX_INDEX + 1} frames can carry their index")

    @property
    def times(self) -> np.ndarray:
        """Each frame's presentation time in seconds, from the first frame."""
        if self.pts_ms is not None:
            pts = np.asarray(self.pts_ms, dtype=np.float64)
            return (pts - pts[0]) / 1000.0
        return np.arange(self.num_frames, dtype=np.float64) / self.fps

    @property
    def keyframes(self) -> np.ndarray:
        """Indices of the frames requested as keyframes (scene-cut detection is off)."""
        return np.arange(0, self.num_frames, self.gop)


def available(codec: str, container: str) -> str | None:
    """None if this FFmpeg build can encode ``codec`` into ``container``; else why not."""
    try:
        av.codec.Codec(codec, "w")
    except Exception:  # noqa: BLE001 - PyAV raises several error types for unknown codecs
        return f"this FFmpeg build has no {codec} encoder"
    if CONTAINERS[container] not in av.formats_available:
        return f"this FFmpeg build has no {container} muxer"
    return None


# --- the frame pattern ----------------------------------------------------------


def _bounds(n: int) -> list[int]:
    return [round(i * n / GRID) for i in range(GRID + 1)]


def _digits(index: int) -> list[int]:
    return [(index // 4**p) % 4 for p in reversed(range(DIGITS))]


def make_frame(index: int, height: int, width: int) -> np.ndarray:
    """The (height, width, 3) uint8 RGB picture that encodes ``index``."""
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f"index {index} out of range")
    digits = _digits(index)
    cells = [(255, 0, 0)] + [(LEVELS[d],) * 3 for d in digits] + [(LEVELS[sum(digits) % 4],) * 3]
    cells += [(MID_GRAY,) * 3] * (GRID * GRID - len(cells))
    img = np.empty((height, width, 3), dtype=np.uint8)
    ys, xs = _bounds(height), _bounds(width)
    for k, color in enumerate(cells):
        r, c = divmod(k, GRID)
        img[ys[r] : ys[r + 1], xs[c] : xs[c + 1]] = color
    return img


def _cell_means(frame: np.ndarray) -> np.ndarray:
    """(GRID, GRID, 3) mean colour of the central half of each cell (edges bleed when coded)."""
    h, w = frame.shape[:2]
    out = np.empty((GRID, GRID, 3), dtype=np.float64)
    for r in range(GRID):
        for c in range(GRID):
            y0, y1 = (
                int((r + 0.25) * h / GRID),
                max(int((r + 0.75) * h / GRID), int((r + 0.25) * h / GRID) + 1),
            )
            x0, x1 = (
                int((c + 0.25) * w / GRID),
                max(int((c + 0.75) * w / GRID), int((c + 0.25) * w / GRID) + 1),
            )
            out[r, c] = frame[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)
    return out


def read_orientation(frame_rgb: np.ndarray) -> int:
    """How many quarter turns counterclockwise (np.rot90's k) the coded picture was turned."""
    means = _cell_means(frame_rgb)
    redness = means[..., 0] - (means[..., 1] + means[..., 2]) / 2
    # Where the top-left marker lands after k counterclockwise quarter turns.
    corners = {0: (0, 0), 1: (GRID - 1, 0), 2: (GRID - 1, GRID - 1), 3: (0, GRID - 1)}
    k = max(corners, key=lambda q: redness[corners[q]])
    if redness[corners[k]] < 100:
        raise ValueError("no orientation marker in this frame: not a test-pattern frame")
    return k


def read_index(frame_rgb: np.ndarray) -> int:
    """The index a :func:`make_frame` picture encodes, in any orientation and at any size."""
    upright = np.rot90(frame_rgb, k=-read_orientation(frame_rgb))
    cells = _cell_means(upright).mean(axis=2).reshape(-1)
    levels = np.asarray(LEVELS, dtype=np.float64)
    values = [int(np.argmin(np.abs(levels - v))) for v in cells[1 : DIGITS + 2]]
    digits, check = values[:DIGITS], values[DIGITS]
    if sum(digits) % 4 != check:
        raise ValueError(f"frame index checksum mismatch (cells read as {values})")
    return int(sum(d * 4**p for d, p in zip(digits, reversed(range(DIGITS)), strict=True)))


def read_indices(frames: np.ndarray) -> list[int]:
    """:func:`read_index` for each frame of a (T, H, W, 3) array."""
    return [read_index(f) for f in frames]


# --- encoding -------------------------------------------------------------------


def _video_options(spec: ClipSpec) -> dict[str, str]:
    g = spec.gop
    if spec.codec == "libx264":
        bf = 3 if spec.bframes else 0
        # scenecut=0 and min-keyint=keyint: keyframes exactly every `gop` frames.
        return {
            "preset": "ultrafast" if not spec.bframes else "veryfast",
            "x264-params": f"keyint={g}:min-keyint={g}:scenecut=0:bframes={bf}:b-adapt=0",
        }
    if spec.codec == "libx265":
        bf = 4 if spec.bframes else 0
        # x265's default open GOP: CRA keyframes whose leading B-frames reference the previous GOP.
        return {
            "preset": "ultrafast",
            "x265-params": f"keyint={g}:min-keyint={g}:scenecut=0:bframes={bf}:log-level=error",
        }
    if spec.codec in ("libvpx-vp9", "libvpx"):
        # B-frames have no VP8/VP9 equivalent; alt-ref (hidden, out-of-order) frames are the closest.
        # (The realtime deadline never makes them, hence "good" at the fastest speed.)
        if spec.bframes:
            extra = {"deadline": "good", "auto-alt-ref": "1", "lag-in-frames": "16"}
        else:
            extra = {"deadline": "realtime", "lag-in-frames": "0"}
        return {"cpu-used": "8", "g": str(g), "keyint_min": str(g), **extra}
    if spec.codec == "libsvtav1":
        pred = "2" if spec.bframes else "1"  # 2: random access (hierarchical), 1: low delay
        return {"preset": "12", "svtav1-params": f"keyint={g}:scd=0:pred-struct={pred}"}
    return {}


def _pix_fmt(spec: ClipSpec) -> str:
    if (spec.width % 2 or spec.height % 2) and spec.codec in ("libx264", "libx265", "mpeg4", "libsvtav1"):
        # These refuse 4:2:0 with odd sides; 4:4:4 has no subsampling to round. (libvpx pads itself.)
        if spec.codec in ("mpeg4", "libsvtav1"):
            raise ValueError(f"{spec.codec} cannot encode an odd frame size")
        return "yuv444p"
    return "yuv420p"


def _add_audio(container: av.container.OutputContainer, codec: str) -> av.audio.stream.AudioStream:
    # Streams must all exist before the first packet is muxed (the header is written then).
    astream = container.add_stream(codec, rate=48000)
    astream.layout = "mono"
    return astream


def _encode_audio(
    container: av.container.OutputContainer, astream: av.audio.stream.AudioStream, seconds: float
) -> None:
    """Encodes a mono 440 Hz tone of ``seconds`` (after the video; the muxer interleaves)."""
    rate = astream.codec_context.sample_rate
    codec = astream.codec_context.name
    frame_size = astream.codec_context.frame_size or 1024
    total = int(seconds * rate)
    t = 0
    while t < total:
        # Opus takes whole frames only; the last one runs a little past `seconds`.
        n = frame_size if codec == "libopus" else min(frame_size, total - t)
        samples = (0.2 * np.sin(2 * np.pi * 440 * (t + np.arange(n)) / rate)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = t
        frame.time_base = Fraction(1, rate)
        container.mux(astream.encode(frame))
        t += n
    container.mux(astream.encode(None))


@functools.cache
def make_video(spec: ClipSpec) -> bytes:
    """Encodes ``spec`` into container bytes (cached: call freely)."""
    reason = available(spec.codec, spec.container)
    if reason:
        raise ValueError(reason)
    if spec.faststart:
        # The mp4 muxer moves the index by rewriting the file by name, which a BytesIO has not.
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, f"clip.{spec.container}")
            _write(path, spec, {"movflags": "faststart"})
            with open(path, "rb") as f:
                return f.read()
    buf = io.BytesIO()
    _write(buf, spec, {})
    return buf.getvalue()


def _write(target: io.BytesIO | str, spec: ClipSpec, options: dict[str, str]) -> None:
    with av.open(target, mode="w", format=CONTAINERS[spec.container], options=options) as container:
        streams = []
        for _ in range(1 + spec.extra_video_streams):
            stream = container.add_stream(spec.codec, rate=spec.fps, options=_video_options(spec))
            stream.width, stream.height = spec.width, spec.height
            stream.pix_fmt = _pix_fmt(spec)
            stream.gop_size = spec.gop
            if spec.codec == "mpeg4":
                stream.codec_context.max_b_frames = 2 if spec.bframes else 0
            if spec.pts_ms is not None:
                stream.codec_context.time_base = Fraction(1, 1000)
            if spec.rotation:
                stream.set_display_rotation(spec.rotation)
            streams.append(stream)
        audio = _add_audio(container, AUDIO_CODECS[spec.audio]) if spec.audio is not None else None
        tb = Fraction(1, 1000) if spec.pts_ms is not None else Fraction(1, spec.fps)
        for i in range(spec.num_frames):
            frame = av.VideoFrame.from_ndarray(make_frame(i, spec.height, spec.width), format="rgb24")
            frame.pts = spec.pts_ms[i] if spec.pts_ms is not None else i
            frame.time_base = tb
            for stream in streams:
                container.mux(stream.encode(frame))
        for stream in streams:
            container.mux(stream.encode(None))
        if audio is not None:
            _encode_audio(container, audio, float(spec.times[-1]) + 1.0 / spec.fps)


@functools.cache
def make_audio_only(codec: str = "aac", container: str = "mp4", seconds: float = 0.5) -> bytes:
    """A file with one audio stream and no video (``codec`` a key of AUDIO_CODECS or an encoder name)."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=CONTAINERS.get(container, container)) as out:
        _encode_audio(out, _add_audio(out, AUDIO_CODECS.get(codec, codec)), seconds)
    return buf.getvalue()


@dataclass
class PacketFacts:
    """What the encoder actually wrote, read back by demuxing (no decoding)."""

    pts: list[int] = field(default_factory=list)  # decode order
    keyframes: list[int] = field(default_factory=list)  # presentation-order indices
    reordered: bool = False  # packets are not in presentation order: B-frames (or alt-refs) present


def inspect(data: bytes) -> PacketFacts:
    """Packet facts of the first video stream, for asserting on the clip itself."""
    out = PacketFacts()
    with av.open(io.BytesIO(data)) as container:
        keys = []
        for packet in container.demux(video=0):
            if packet.size == 0:
                continue
            out.pts.append(packet.pts if packet.pts is not None else packet.dts)
            keys.append(packet.is_keyframe)
    out.reordered = bool(np.any(np.diff(out.pts) < 0))
    order = np.argsort(out.pts, kind="stable")
    out.keyframes = [int(i) for i, k in enumerate(np.asarray(keys)[order]) if k]
    return out


def make_resolution_change(small: tuple[int, int] = (64, 64), num_small: int = 10,
                           big: tuple[int, int] = (640, 360), fps: int = 10) -> bytes:
    """An H.264 MPEG-TS whose stream changes resolution mid-way: ``num_small`` frames of ``small`` (w, h)
    then one of ``big``, coded by a second encoder (its own SPS in band) and muxed into the same stream, so
    the header declares only the small size. Frame ``i`` carries index ``i`` (see :func:`make_frame`)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mpegts") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = small
        stream.pix_fmt = "yuv420p"
        opts = {"bf": "0", "preset": "ultrafast", "tune": "zerolatency"}
        stream.options = {**opts, "g": "5"}
        for i in range(num_small):
            frame = av.VideoFrame.from_ndarray(make_frame(i, small[1], small[0]), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
        cc = av.CodecContext.create("libx264", "w")
        cc.width, cc.height = big
        cc.pix_fmt = "yuv420p"
        cc.time_base = stream.codec_context.time_base
        cc.framerate = Fraction(fps)
        cc.options = {**opts, "level": "6.2"}
        frame = av.VideoFrame.from_ndarray(make_frame(num_small, big[1], big[0]), format="rgb24")
        frame.pts = num_small
        for packet in [*cc.encode(frame), *cc.encode(None)]:
            packet.stream = stream
            out.mux(packet)
    return buf.getvalue()
