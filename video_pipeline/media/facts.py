"""What a medium's header says, and whether that is within limits: one place for the decoder,
the shim's budgets and the Files API, so that they agree by construction.

- :func:`open_container` / :func:`video_stream` / :func:`facts_of`: a container opened from bytes or a
  path (its size checked first, FFmpeg's header analysis bounded by a time limit), its first real
  video stream, and the :class:`VideoFacts` of its header; :func:`probe_video` is the three in one.
- :func:`video_excess` / :func:`check_video`: the header against a :class:`DecodeLimits` (frame size,
  declared frame count, declared duration); the first finds the limit passed, the second raises.
- :func:`open_image` / :func:`probe_image` / :func:`check_frame_size`: a still's header with PIL (its
  decompression-bomb guard included) and its size against the same limits.
- :func:`estimate_video_tokens`: the tokens the media models will make of a video, from its facts.

Every refusal is a typed error of :mod:`video_pipeline.errors`: :class:`MediaTooLarge` for a limit,
:class:`InvalidInput` for what cannot be read, :class:`UnsupportedMedia` for what we do not handle.
Nothing here decodes a picture of a video.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av

from video_pipeline.errors import DecodeTimeout, InvalidInput, MediaTooLarge, UnsupportedMedia
from video_pipeline.media.model_media import MediaSettings
from video_pipeline.media.options import DecodeLimits, VideoOptions
from video_pipeline.media.sampling import target_times

Source = bytes | bytearray | memoryview | str | os.PathLike

#: Seconds FFmpeg may spend opening and analysing a header for a probe: a file with a thousand streams
#: analyses for seconds otherwise. What it learnt by then is kept (an interrupted analysis is no error).
PROBE_TIMEOUT_S = 2.0


# --- containers ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoFacts:
    """What a container's header says about its first video stream (nothing decoded)."""

    container: str  # FFmpeg's demuxer, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    codec: str
    width: int  # coded size: the display rotation is only known from a decoded frame
    height: int
    duration: float | None  # seconds, as declared (the stream's, else the container's)
    fps: float | None  # the average (else guessed) rate; None when unknown
    frames: int | None  # the declared frame count; None when undeclared
    streams: int  # all streams of the container
    has_audio: bool


class open_container:  # lower case: used like open()
    """Opens a container from bytes or a path, mapping FFmpeg's errors to ours.

    The input's size is checked against ``limits.max_input_bytes`` before FFmpeg reads a byte.
    ``timeout``: seconds FFmpeg may spend opening the file and analysing its streams (None:
    ``limits.decode_timeout_s``, where 0 is no limit); past it, :class:`DecodeTimeout`. Reading packets
    later is not bounded here.
    """

    def __init__(self, source: Source, limits: DecodeLimits, timeout: float | None = None) -> None:
        if isinstance(source, (bytes, bytearray, memoryview)):
            size = len(source)
            self._file: Any = io.BytesIO(source)
        else:
            path = os.fspath(source)
            try:
                size = os.path.getsize(path)
            except OSError as exc:
                raise InvalidInput(f"cannot read the video file: {exc.strerror}") from None
            self._file = path
        if size == 0:
            raise InvalidInput("the video is empty (0 bytes)")
        if size > limits.max_input_bytes:
            raise MediaTooLarge(f"the video has {size} bytes; the limit is {limits.max_input_bytes}")
        self.seconds = limits.decode_timeout_s if timeout is None else timeout
        self.container: Any = None

    def __enter__(self) -> Any:
        # FFmpeg checks the time limit while it reads a file; an interrupted stream analysis keeps
        # what it learnt (no error), an interrupted header read raises ExitError.
        timeout = (self.seconds, None) if self.seconds > 0 else None
        try:
            self.container = av.open(self._file, mode="r", metadata_errors="ignore", timeout=timeout)
        except av.ExitError:
            raise DecodeTimeout(f"opening the video took longer than the {self.seconds:g} s limit") from None
        except av.FFmpegError as exc:
            raise InvalidInput(f"not a decodable video container ({ffmpeg_reason(exc)})") from None
        except (UnicodeDecodeError, ValueError, OSError) as exc:
            raise InvalidInput(f"not a decodable video container ({exc})") from None
        return self.container

    def __exit__(self, *exc: object) -> None:
        if self.container is not None:
            self.container.close()


def ffmpeg_reason(exc: Exception) -> str:
    """FFmpeg's own words for an error, for a message."""
    msg = getattr(exc, "strerror", None) or str(exc)
    return str(msg).strip() or type(exc).__name__


def video_stream(container: Any, limits: DecodeLimits) -> Any:
    """The container's first video stream that is a video (not cover art), with a decoder and a frame size.

    :class:`MediaTooLarge` for more streams than ``limits.max_streams``; :class:`UnsupportedMedia` for
    audio only, a still image or a codec without a decoder; :class:`InvalidInput` otherwise.
    """
    n = len(container.streams)
    if n > limits.max_streams:
        raise MediaTooLarge(f"the container has {n} streams; the limit is {limits.max_streams}")
    candidates = [
        s for s in container.streams.video if not (int(s.disposition) & int(av.stream.Disposition.attached_pic))
    ]
    if not candidates:
        if container.streams.audio:
            raise UnsupportedMedia("the file has no video stream (audio only)")
        raise InvalidInput("the file has no video stream")
    fmt = container.format.name
    if fmt == "image2" or fmt.endswith("_pipe"):
        # FFmpeg opens a still image (a PNG or JPEG named .mp4) as a one-frame "video".
        raise UnsupportedMedia(f"the file is a still image ({fmt}), not a video")
    stream = candidates[0]
    try:
        cc = stream.codec_context
    except Exception:  # noqa: BLE001 - PyAV raises assorted errors for unknown codecs
        cc = None
    if cc is None or not cc.is_decoder:
        raise UnsupportedMedia(f"no decoder for the video codec ({_codec_name(stream)})")
    if int(cc.width or 0) <= 0 or int(cc.height or 0) <= 0:
        raise InvalidInput("the video stream declares no frame size (corrupt header)")
    return stream


def _codec_name(stream: Any) -> str:
    try:
        return str(stream.codec_tag)
    except Exception:  # noqa: BLE001
        return "unknown"


def declared_duration(container: Any, stream: Any) -> float | None:
    """Seconds the header declares: the stream's duration, else the container's; None when neither."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1e6
    return None


def h264_slices(stream: Any, packet: Any) -> int:
    """Coded slices in one H.264 ``packet`` of ``stream`` (length-prefixed NAL units as MP4/MKV carry them,
    else Annex B start codes); 1 for other codecs or anything unreadable. Only a threading hint."""
    if stream.codec_context.name != "h264":
        return 1
    try:
        data = bytes(packet)
        extradata = stream.codec_context.extradata or b""
    except Exception:  # noqa: BLE001 - a hint, never an error
        return 1
    if extradata[:1] == b"\x01" and len(extradata) > 4:  # avcC: NAL units behind 1-4 byte lengths
        size, types, at = (extradata[4] & 3) + 1, [], 0
        while at + size < len(data) and len(types) < _MAX_NALS:
            length = int.from_bytes(data[at:at + size], "big")
            types.append(data[at + size] & 0x1F)
            at += size + length
    else:  # Annex B: each NAL unit after 00 00 01
        types = [data[at + 3] & 0x1F for at in _start_codes(data)]
    return max(1, sum(1 for t in types if t in (1, 5)))  # coded slices (IDR or not)


def _start_codes(data: bytes) -> list[int]:
    found, at = [], data.find(b"\x00\x00\x01")
    while 0 <= at < len(data) - 3 and len(found) < _MAX_NALS:
        found.append(at)
        at = data.find(b"\x00\x00\x01", at + 3)
    return found


_MAX_NALS = 256  # more NAL units in one packet than any encoder writes: stop counting


def facts_of(container: Any, stream: Any) -> VideoFacts:
    """The header facts of ``stream`` (from :func:`video_stream`) in an open ``container``."""
    cc = stream.codec_context
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else None
    duration = declared_duration(container, stream)
    return VideoFacts(
        container=container.format.name,
        codec=cc.name,
        width=int(cc.width),
        height=int(cc.height),
        duration=duration if duration is not None and math.isfinite(duration) else None,
        fps=fps if fps is not None and math.isfinite(fps) and fps > 0 else None,
        frames=int(stream.frames or 0) or None,
        streams=len(container.streams),
        has_audio=bool(container.streams.audio),
    )


def probe_video(source: Source, limits: DecodeLimits | None = None, timeout: float = PROBE_TIMEOUT_S) -> VideoFacts:
    """The header facts of a video in memory or on disk, within ``timeout`` seconds of header analysis.

    Checks the input's size and stream count against ``limits`` (what bounds the probe's own work);
    :func:`check_video` checks the facts. Raises the errors of :class:`open_container` and :func:`video_stream`.
    """
    limits = limits or DecodeLimits()
    with open_container(source, limits, timeout=timeout) as container:
        return facts_of(container, video_stream(container, limits))


# --- limits -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Excess:
    """One limit a medium passes: the :class:`DecodeLimits` field, the value found and the limit."""

    limit: str
    value: float
    allowed: float


def frame_size_excess(width: int, height: int, limits: DecodeLimits) -> Excess | None:
    """The frame-size limit (width, height, pixels) a ``width`` x ``height`` picture passes, if any."""
    if width > limits.max_width:
        return Excess("max_width", width, limits.max_width)
    if height > limits.max_height:
        return Excess("max_height", height, limits.max_height)
    if width * height > limits.max_frame_pixels:
        return Excess("max_frame_pixels", width * height, limits.max_frame_pixels)
    return None


def video_excess(facts: VideoFacts, limits: DecodeLimits) -> Excess | None:
    """The first limit a video's header passes (frame size, declared frames, declared duration), if any."""
    excess = frame_size_excess(facts.width, facts.height, limits)
    if excess is not None:
        return excess
    if facts.frames is not None and facts.frames > limits.max_total_frames:
        return Excess("max_total_frames", facts.frames, limits.max_total_frames)
    if facts.duration is not None and facts.duration > limits.max_duration_s:
        return Excess("max_duration_s", facts.duration, limits.max_duration_s)
    return None


def check_frame_size(width: int, height: int, limits: DecodeLimits, what: str) -> None:
    """:class:`MediaTooLarge` naming ``what`` when a ``width`` x ``height`` picture passes a frame-size limit."""
    if frame_size_excess(width, height, limits) is not None:
        raise MediaTooLarge(f"{what} is {width}x{height}; the limit is {limits.max_width}x{limits.max_height} "
                            f"and {limits.max_frame_pixels} pixels")


def check_video(facts: VideoFacts, limits: DecodeLimits) -> None:
    """:class:`MediaTooLarge` when the header passes a limit (see :func:`video_excess`)."""
    excess = video_excess(facts, limits)
    if excess is None:
        return
    if excess.limit == "max_total_frames":
        raise MediaTooLarge(f"the video declares {facts.frames} frames; the limit is {limits.max_total_frames}")
    if excess.limit == "max_duration_s":
        raise MediaTooLarge(f"the video lasts {excess.value:.1f} s; the limit is {limits.max_duration_s:g} s")
    check_frame_size(facts.width, facts.height, limits, "the video's frame size")


# --- images ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageFacts:
    """What an image's header says."""

    format: str  # PIL's name: PNG, JPEG, MPO, WEBP, GIF, BMP, ...
    width: int
    height: int


@contextmanager
def open_image(data: bytes | Path, what: str = "the image") -> Iterator[Any]:
    """PIL's image of ``data`` (bytes or a path), its header read and its pixels not yet decoded.

    PIL's failures, while opening and in the ``with`` block (``load()``), come out typed, naming ``what``:
    :class:`MediaTooLarge` for PIL's decompression-bomb guard, :class:`InvalidInput` for anything unreadable.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(data if isinstance(data, Path) else io.BytesIO(data)) as img:
            yield img
    except Image.DecompressionBombError as exc:
        raise MediaTooLarge(f"{what} declares a decompression bomb's size ({exc})") from None
    except UnidentifiedImageError:
        raise InvalidInput(f"{what} is not a decodable image (no image decoder recognises its data)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidInput(f"{what} is not a decodable image ({exc})") from None


def probe_image(data: bytes | Path, what: str = "the image") -> ImageFacts:
    """The header facts of an image, decoding nothing (the errors of :func:`open_image`)."""
    with open_image(data, what) as img:
        return ImageFacts(str(img.format or ""), int(img.size[0]), int(img.size[1]))


# --- tokens ---------------------------------------------------------------------------------------------


def estimate_video_tokens(facts: VideoFacts, opts: VideoOptions, media: MediaSettings) -> int | None:
    """The video tokens the media models will produce, from the header (None when it cannot tell)."""
    if facts.duration is None or not facts.duration > 0 or facts.fps is None:
        return None
    start = opts.start or 0.0
    end = min(opts.end, facts.duration) if opts.end is not None else facts.duration
    if end <= start:
        return None  # the decoder names the empty window
    frame_duration = 1.0 / facts.fps
    available = max(1, math.floor((end - start) * facts.fps + 1e-6))
    frames = len(target_times(start, max(start, end - frame_duration), frame_duration, opts, available))
    try:
        h, w = media.video_size(frames, facts.height, facts.width, opts.min_pixels, opts.max_pixels)
    except InvalidInput:
        return None
    return media.video_tokens(frames, h, w)
