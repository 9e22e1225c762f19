"""Video bytes -> sampled RGB frames on NVDEC (torchcodec on CUDA), with PyAV as reference and fallback.

The GPU path returns the same :class:`~video_pipeline.media.decode.DecodedVideo` as
:func:`~video_pipeline.media.decode.decode_video`: the same frames, timestamps, frame indices and
metadata keys, only ``video_backend`` says ``nvdec``. To make "the same frames" hold by
construction, the choice of frames is not redone: PyAV's index pass (demux only, no pixels, the
same budgets and typed errors) gives every frame's timestamp, :func:`sampling.select_frames` picks
from them, and torchcodec is asked for the frames *played at* those exact timestamps. Every
returned timestamp is checked against the one asked for; any disagreement, any torchcodec error,
a codec or pixel format NVDEC has no decoder for, a rotated video (torchcodec versions differ on
applying the display matrix) or a stream without trustworthy timestamps sends that video to PyAV
(:class:`NvdecUnavailable`): PyAV stays the reference, and the one that reports what is wrong with
a broken file.

Frames are sized with the served model's rule (:meth:`MediaSettings.video_size`) on the device
(bicubic, antialiased: close to FFmpeg's bicubic scaler, not bit-identical; colour conversion on
the GPU differs from swscale's by a level or two too), then copied to host memory as uint8 for the
tensor contract. ``keep_on_device=True`` leaves them as a CUDA tensor (T, H, W, 3): that helps only
an engine in the same process (an in-process vLLM, a test). Under Triton the decoder is its own
stub process and its outputs cross to the next model through shared memory as numpy arrays, so
the video_decoder model always takes host frames; what NVDEC saves there is CPU decode time.

``decode_backend`` (config.pbtxt of video_decoder): ``pyav`` (default), ``nvdec`` or ``auto``.
Both ``nvdec`` and ``auto`` use NVDEC where CUDA, torch and torchcodec are there and the stream's
codec has a GPU decoder, else PyAV; ``auto`` says why once per reason at INFO, ``nvdec`` at
WARNING (the operator asked for the GPU). torch and torchcodec are imported only when selected.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from video_pipeline.contract import VideoMetadata
from video_pipeline.errors import InvalidInput, MediaTooLarge
from video_pipeline.media import decode as _pyav
from video_pipeline.media.decode import DecodedVideo, Source, decode_video
from video_pipeline.media.model_media import MediaSettings
from video_pipeline.media.options import DecodeLimits, VideoOptions
from video_pipeline.media.sampling import select_frames, snap_to_keyframes

logger = logging.getLogger(__name__)

#: The video_decoder config parameter, and its values.
BACKEND_PARAM = "decode_backend"
BACKENDS = ("pyav", "nvdec", "auto")

# NVDEC (NVIDIA's Video Codec SDK support matrix, Turing and later, H100/H200 included): the codecs
# torchcodec's CUDA path decodes, with the smallest and largest coded sizes the hardware takes.
# Deliberately short: a codec left out only costs a PyAV decode.
NVDEC_CODECS: dict[str, tuple[int, int, int, int]] = {  # codec: (min w, min h, max w, max h)
    "h264": (48, 16, 4096, 4096),
    "hevc": (144, 144, 8192, 8192),
    "av1": (128, 128, 8192, 8192),
    "vp9": (128, 128, 8192, 8192),
}
# 8-bit 4:2:0 only: NVDEC has no H.264 4:4:4, and torchcodec's CUDA colour conversion takes NV12.
NVDEC_PIXEL_FORMATS = frozenset({"yuv420p", "yuvj420p", "nv12"})


class NvdecUnavailable(Exception):
    """This video (or this machine) cannot be decoded on NVDEC; ``reason`` says why. Not a request
    error: the caller decodes the video with PyAV instead."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FrameReader(Protocol):
    """What decodes the chosen frames on the device: torchcodec here, a fake in the unit tests."""

    def read(self, source: Source, stream_index: int, seconds: Sequence[float]) -> tuple[Any, np.ndarray]:
        """The frames of stream ``stream_index`` played at ``seconds`` (stream time, ascending) as a
        uint8 (N, 3, H, W) torch tensor in coded orientation, and each one's presentation time (s)."""
        ...


class TorchcodecReader:
    """torchcodec's ``VideoDecoder`` on a CUDA device (NVDEC decodes, NPP converts to RGB)."""

    def __init__(self, device: str = "cuda") -> None:
        self.device = device

    def read(self, source: Source, stream_index: int, seconds: Sequence[float]) -> tuple[Any, np.ndarray]:
        from torchcodec.decoders import VideoDecoder

        data: Any = str(source) if isinstance(source, (str, Path)) else bytes(source)
        # "exact": torchcodec scans the packets once (no decoding), so a time maps to its frame
        # even with a variable frame rate; the frames come back in the order asked.
        decoder = VideoDecoder(data, stream_index=stream_index, device=self.device, seek_mode="exact",
                               dimension_order="NCHW")
        batch = decoder.get_frames_played_at(list(seconds))
        return batch.data, batch.pts_seconds.cpu().numpy().astype(np.float64)


def nvdec_unavailable(device: str = "cuda") -> str | None:
    """Why this process cannot decode on NVDEC (None: it can): torch with CUDA and torchcodec."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    try:
        import torchcodec.decoders  # noqa: F401 - loads its FFmpeg libraries: fails early, here
    except Exception as exc:  # noqa: BLE001 - ImportError, or OSError/RuntimeError for missing FFmpeg libraries
        return f"torchcodec cannot be imported ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
    return None


def codec_unsupported(codec: str, pixel_format: str | None, width: int, height: int) -> str | None:
    """Why NVDEC has no decoder for this stream (None: it has one)."""
    bounds = NVDEC_CODECS.get(codec)
    if bounds is None:
        return f"no NVDEC decoder for codec {codec}"
    if pixel_format not in NVDEC_PIXEL_FORMATS:
        return f"NVDEC path takes 8-bit 4:2:0 only, not {pixel_format} ({codec})"
    min_w, min_h, max_w, max_h = bounds
    if not (min_w <= width <= max_w and min_h <= height <= max_h):
        return f"{codec} frame size {width}x{height} is outside NVDEC's {min_w}x{min_h}..{max_w}x{max_h}"
    return None


class NvdecDecoder:
    """Decodes one video on the GPU, or raises :class:`NvdecUnavailable` (the caller uses PyAV)."""

    name = "nvdec"

    def __init__(self, reader: FrameReader | None = None, device: str = "cuda", keep_on_device: bool = False) -> None:
        self.device = device
        self.reader = reader if reader is not None else TorchcodecReader(device)
        self.keep_on_device = keep_on_device

    def decode(
        self, source: Source, options: VideoOptions | None = None, limits: DecodeLimits | None = None,
        media: MediaSettings | None = None,
    ) -> DecodedVideo:
        """Like :func:`decode_video` (same errors for bad input and budgets), frames from NVDEC."""
        options = options or VideoOptions()
        limits = limits or DecodeLimits()
        media = media or MediaSettings()
        options.check_limits(limits)
        deadline = _pyav._Deadline(limits.decode_timeout_s)
        plan = _plan(source, options, limits, media, deadline)
        try:
            frames, pts = self.reader.read(source, plan.stream_index, plan.seconds)
        except (InvalidInput, MediaTooLarge):
            raise
        except Exception as exc:  # noqa: BLE001 - torchcodec raises RuntimeError/ValueError/IndexError
            raise NvdecUnavailable(f"torchcodec failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
                                   if str(exc) else f"torchcodec failed ({type(exc).__name__})") from None
        _check_frames(frames, pts, plan)
        deadline.check()
        try:
            out = _resize_nhwc(frames, plan.out_h, plan.out_w)
            if not self.keep_on_device:
                out = out.cpu().numpy()
        except RuntimeError as exc:  # torch.cuda.OutOfMemoryError included: the CPU path has its own budget
            raise NvdecUnavailable(f"resizing on the device failed ({type(exc).__name__})") from None
        deadline.check()
        return DecodedVideo(frames=out, timestamps=plan.timestamps, frame_indices=plan.frame_indices,
                            metadata=plan.metadata)


@dataclass
class _Plan:
    stream_index: int  # the video stream decode_video decodes (attached pictures skipped)
    seconds: list[float]  # stream time of each chosen frame (what the reader is asked for)
    tolerance: float  # half a time-base tick: a returned pts further off is another frame
    coded_h: int
    coded_w: int
    out_h: int
    out_w: int
    timestamps: np.ndarray
    frame_indices: np.ndarray
    metadata: dict[str, Any]


def _plan(source: Source, options: VideoOptions, limits: DecodeLimits, media: MediaSettings,
          deadline: Any) -> _Plan:
    """PyAV's validation and index pass, then exactly decode_video's choice of frames and metadata.

    Containers are opened as decode_video opens them (a window first, the whole video where the
    window index is refused), so budgets and bad input fail with the same typed errors.
    """
    with _pyav._open(source, limits) as container:
        stream = _pyav._video_stream(container, limits)
        cc = stream.codec_context
        pix_fmt = getattr(getattr(cc, "format", None), "name", None)
        reason = codec_unsupported(cc.name, pix_fmt, int(cc.width), int(cc.height))
        if reason:
            raise NvdecUnavailable(reason)
        # Only a decoded frame carries the display matrix (see decode._frame_rotation): one frame on the CPU.
        try:
            rotation = _pyav._first_frame_rotation(container, stream)
        except InvalidInput as exc:
            raise NvdecUnavailable(f"the first frame does not decode ({exc})") from None
        if rotation:
            raise NvdecUnavailable(f"the video is displayed rotated ({rotation} degrees)")
    if options.start is not None or options.end is not None:
        with _pyav._open(source, limits) as container:
            stream = _pyav._video_stream(container, limits)
            index = _pyav._build_window_index(container, stream, limits, deadline, options.start, options.end)
            if index is not None:
                return _plan_indexed(container, stream, index, options, limits, media)
    with _pyav._open(source, limits) as container:
        stream = _pyav._video_stream(container, limits)
        index = _pyav._build_index(container, stream, limits, deadline)
        return _plan_indexed(container, stream, index, options, limits, media)


def _plan_indexed(container: Any, stream: Any, index: Any, options: VideoOptions, limits: DecodeLimits,
                  media: MediaSettings) -> _Plan:
    """decode._decode_indexed up to the decoding: the same samples, sizes, budget and metadata."""
    if not index.has_pts:
        raise NvdecUnavailable("the stream's timestamps cannot address frames")
    cc = stream.codec_context
    tb = stream.time_base or Fraction(1, 90000)
    pts0 = int(index.pts[0]) if index.pts0 is None else index.pts0
    times = (index.pts - pts0).astype(np.float64) * float(tb)
    frame_duration = _pyav._frame_duration(stream, times)
    chosen = select_frames(times, frame_duration, options)
    snapped = np.zeros(len(chosen), dtype=bool)
    if options.mode == "keyframe":
        chosen, snapped = snap_to_keyframes(
            times, chosen, np.flatnonzero(index.key), options.keyframe_tolerance,
            cheap=np.flatnonzero(index.cost <= _pyav._CHEAP_DEPTH), cost=index.cost,
        )
    coded_h, coded_w = int(cc.height), int(cc.width)
    if options.resize:
        out_h, out_w = media.video_size(max(1, len(chosen)), coded_h, coded_w, options.min_pixels,
                                        options.max_pixels)
    else:
        out_h, out_w = coded_h, coded_w
    nbytes = len(chosen) * out_h * out_w * 3
    if nbytes > limits.max_output_bytes:
        raise MediaTooLarge(f"{len(chosen)} frames of {out_w}x{out_h} need {nbytes} bytes; "
                            f"the limit is {limits.max_output_bytes}")
    ordinals = _pyav._ordinals(index, times, chosen)
    metadata = _pyav.sampled_metadata(
        VideoMetadata(video_backend=NvdecDecoder.name, width=coded_w, height=coded_h, rotation=0,
                      output_width=int(out_w), output_height=int(out_h)),
        container, stream, index, times, frame_duration, ordinals, snapped, options)
    return _Plan(
        stream_index=int(stream.index),
        # pts x time base, exact in Fraction, then one rounding: torchcodec rounds it back to this pts.
        seconds=[float(int(p) * tb) for p in index.pts[chosen]],
        tolerance=float(tb) / 2,
        coded_h=coded_h, coded_w=coded_w, out_h=out_h, out_w=out_w,
        timestamps=times[chosen].astype(np.float64),
        frame_indices=ordinals.astype(np.int64),
        metadata=metadata,
    )


def _check_frames(frames: Any, pts: np.ndarray, plan: _Plan) -> None:
    """The reader's frames are the ones asked for, at the coded size, or the video goes to PyAV."""
    shape = tuple(frames.shape)
    if len(shape) != 4 or shape[0] != len(plan.seconds) or shape[1] != 3:
        raise NvdecUnavailable(f"torchcodec returned frames of shape {shape} for {len(plan.seconds)} frames")
    if (shape[2], shape[3]) != (plan.coded_h, plan.coded_w):
        raise NvdecUnavailable(f"torchcodec returned {shape[3]}x{shape[2]} frames; the stream codes "
                               f"{plan.coded_w}x{plan.coded_h}")
    off = np.abs(np.asarray(pts, dtype=np.float64) - np.asarray(plan.seconds, dtype=np.float64))
    if len(off) != len(plan.seconds) or (len(off) and float(off.max()) > plan.tolerance + 1e-9):
        worst = int(np.argmax(off)) if len(off) else 0
        raise NvdecUnavailable(f"torchcodec returned another frame than the index names (frame {worst}: "
                               f"{float(pts[worst]) if len(off) else None} s for {plan.seconds[worst]} s)")


def _resize_nhwc(frames: Any, height: int, width: int) -> Any:
    """(N, 3, H, W) uint8 -> (N, height, width, 3) uint8 on the frames' device: bicubic with antialias
    (FFmpeg's bicubic scaler widens its filter when shrinking too), chunked to bound float memory."""
    import torch
    import torch.nn.functional as F

    n, _, h, w = frames.shape
    if (h, w) == (height, width):
        return frames.permute(0, 2, 3, 1).contiguous()
    out = torch.empty((n, height, width, 3), dtype=torch.uint8, device=frames.device)
    step = max(1, (256 << 20) // max(1, 4 * 3 * max(h * w, height * width)))  # ~256 MiB of float32 per chunk
    for i in range(0, n, step):
        chunk = frames[i : i + step].float()
        sized = F.interpolate(chunk, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
        out[i : i + step] = sized.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return out


class DecodeBackend:
    """The decoder a video_decoder instance uses, chosen once at load (:func:`select_backend`).

    ``name`` is the backend in use (``pyav`` or ``nvdec``) and is part of every cache key, since
    the two can differ by a level in a pixel. A video NVDEC cannot take goes to PyAV; its
    metadata's ``video_backend`` says which one decoded it.
    """

    def __init__(self, mode: str, nvdec: NvdecDecoder | None = None,
                 pyav: Callable[..., DecodedVideo] = decode_video) -> None:
        self.mode = mode
        self.nvdec = nvdec
        self.name = nvdec.name if nvdec is not None else "pyav"
        self._pyav = pyav
        self._told: set[str] = set()
        self._lock = threading.Lock()

    def decode(self, source: Source, options: VideoOptions | None = None, limits: DecodeLimits | None = None,
               media: MediaSettings | None = None) -> DecodedVideo:
        """One video, on NVDEC where it can be, else with PyAV."""
        if self.nvdec is not None:
            try:
                return self.nvdec.decode(source, options, limits, media)
            except NvdecUnavailable as exc:
                self.fell_back(exc.reason)
        return self._pyav(source, options, limits, media)

    def fell_back(self, reason: str) -> None:
        """Logs a reason for decoding with PyAV, once per reason and backend."""
        with self._lock:
            if reason in self._told:
                return
            self._told.add(reason)
        level = logging.WARNING if self.mode == "nvdec" else logging.INFO
        logger.log(level, "decode_backend=%s: decoding with PyAV: %s (logged once)", self.mode, reason)

    def key(self) -> dict[str, Any]:
        """What of the backend decides a decode, for cache keys."""
        if self.nvdec is None:
            return {"name": "pyav"}
        return {"name": self.nvdec.name, "version": nvdec_version()}


def select_backend(mode: str, *, probe: Callable[[], str | None] = nvdec_unavailable,
                   make_nvdec: Callable[[], NvdecDecoder] = NvdecDecoder) -> DecodeBackend:
    """The backend for ``decode_backend`` = ``mode``; an unknown value fails the model load."""
    if mode not in BACKENDS:
        raise InvalidInput(f"{BACKEND_PARAM} must be one of {list(BACKENDS)}, got {mode!r}")
    if mode == "pyav":
        return DecodeBackend(mode)
    reason = probe()
    if reason is not None:
        backend = DecodeBackend(mode)
        backend.fell_back(reason)
        return backend
    return DecodeBackend(mode, make_nvdec())


@functools.cache
def nvdec_version() -> str:
    """This module's code and torch/torchcodec's versions: a cache folder never mixes decoders."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for dist in ("torch", "torchcodec"):
        try:
            digest.update(f"{dist}={importlib.metadata.version(dist)}".encode())
        except importlib.metadata.PackageNotFoundError:
            digest.update(f"{dist}=none".encode())
    return digest.hexdigest()[:16]
