"""Per-request budgets, checked before the work they protect wherever the facts allow it.

- before any download: frames asked per video (``max_video_frames``); the count of media
  items is checked by the service (``max_videos``, ``max_images``);
- while downloading: bytes of each item (``max_media_bytes``) and of the whole request
  (``max_request_media_bytes``), counted as the bytes arrive;
- before decoding: a header probe of each video (frame size, duration), image (size) and audio
  part (an audio track, its duration, ``max_audio_duration_s``; bytes, ``max_audio_bytes``), and
  an estimate of the video tokens against the model's context;
- after decoding, before the engine: the exact video tokens against the context.

Every refusal is a 4xx naming the limit, the actual value and the setting; the decoder's own
budgets (config.pbtxt of video_decoder) stay in force behind these.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openai_frontend.errors import OpenAIError
from openai_frontend.files.upload import sniff
from openai_frontend.settings import Settings, env_name
from video_pipeline import contract as C
from video_pipeline.errors import InvalidInput, UnsupportedMedia
from video_pipeline.media.audio import probe_audio
from video_pipeline.media.model_media import MediaSettings
from video_pipeline.media.options import VideoOptions
from video_pipeline.media.sampling import target_times
from video_pipeline.steps import PreprocessorStep, json_tensor, video_options

logger = logging.getLogger(__name__)

# Bounds the header probe: PyAV stops FFmpeg's stream analysis at this deadline (a file with
# a thousand streams analyses for seconds otherwise); what it learnt by then is enough.
PROBE_TIMEOUT_S = 2.0
IMAGE_FORMATS = "PNG, JPEG, WebP, GIF or BMP"
_IMAGE_KINDS = {"PNG", "JPEG", "MPO", "WEBP", "GIF", "BMP"}  # PIL's names (MPO: a JPEG with more pictures)


def limit_error(status: int, where: str | None, what: str, limit: Any, unit: str, setting: str,
                code: str = "media_too_large") -> OpenAIError:
    """``<where>: <what>; the limit is <limit> <unit> (VLT_<SETTING>)`` — the one shape of every budget error."""
    prefix = f"{where}: " if where else ""
    return OpenAIError(status, f"{prefix}{what}; the limit is {limit} {unit} ({env_name(setting)})",
                       param=where, code=code)


class RequestBudget:
    """What one request may still spend: media bytes in total, and download slots."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.media_bytes = 0
        self.fetch_slots = asyncio.Semaphore(settings.fetch_concurrency_per_request)

    def spend(self, n: int, where: str) -> None:
        """Counts ``n`` more bytes of media; 413 once the request's total passes its limit."""
        self.media_bytes += n
        cap = self.settings.max_request_media_bytes
        if self.media_bytes > cap:
            raise limit_error(413, where, f"the request's media add up to more than {cap} bytes "
                              f"({self.media_bytes} so far)", cap, "bytes", "max_request_media_bytes")


# --- options, before any download ---------------------------------------------------------------


def resolved_options(options: dict[str, Any], step: PreprocessorStep, where: str) -> VideoOptions:
    """A part's video options as the media models will read them (model defaults, pixel bounds)."""
    try:
        return video_options({C.VIDEO_OPTIONS: json_tensor([options])}, 1, step.defaults, step.media)[0]
    except InvalidInput as exc:
        raise OpenAIError(400, f"{where}: {exc}", param=where, code="invalid_value") from None


def check_frames_asked(opts: VideoOptions, settings: Settings, where: str) -> None:
    if opts.frame_cap > settings.max_video_frames:
        raise limit_error(413, where, f"up to {opts.frame_cap} frames asked for one video", settings.max_video_frames,
                          "frames per video", "max_video_frames")


# --- headers, before decoding ------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoFacts:
    """What a container's header says about its first video stream."""

    width: int
    height: int
    duration: float | None  # seconds
    fps: float | None


def probe_video(data: bytes | Path) -> VideoFacts | None:
    """The header facts of a video, without decoding it; None when PyAV cannot tell (the decoder
    then gives its own, precise refusal)."""
    import av

    try:
        source = str(data) if isinstance(data, Path) else io.BytesIO(data)
        with av.open(source, mode="r", metadata_errors="ignore", timeout=PROBE_TIMEOUT_S) as container:
            streams = [s for s in container.streams.video
                       if not int(s.disposition) & int(av.stream.Disposition.attached_pic)]
            if not streams:
                return None
            stream = streams[0]
            width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
            if width <= 0 or height <= 0:
                return None
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1e6
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else None
            return VideoFacts(width, height, duration, fps if fps and math.isfinite(fps) and fps > 0 else None)
    except Exception as exc:  # noqa: BLE001 - any failure to probe leaves the verdict to the decoder
        logger.debug("probe failed: %s", exc)
        return None


def check_video(facts: VideoFacts, settings: Settings, where: str) -> None:
    pixels = facts.width * facts.height
    if pixels > settings.max_frame_pixels:
        raise limit_error(413, where, f"the video's frames are {facts.width}x{facts.height} = {pixels} pixels",
                          settings.max_frame_pixels, "pixels per frame", "max_frame_pixels")
    if facts.duration is not None and facts.duration > settings.max_video_duration_s:
        raise limit_error(413, where, f"the video lasts {facts.duration:.1f} s", f"{settings.max_video_duration_s:g}",
                          "s", "max_video_duration_s")


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


def check_image(data: bytes, settings: Settings, where: str) -> None:
    """An image must be one of the formats engines read, within the pixel budget (header only)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:  # identifies the format and reads the header, decodes nothing
            kind, (width, height) = img.format, img.size
    except Image.DecompressionBombError as exc:
        raise bomb(exc, settings, where, "the image") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        found = sniff(data[:64])
        if found is not None and found[0] == "image":
            why = "" if isinstance(exc, UnidentifiedImageError) else f" ({exc})"
            raise OpenAIError(400, f"{where}: not a decodable image: its header says {found[1]}, its data does not "
                              f"follow{why}", param=where, code="invalid_image") from None
        what = f"a {found[0]} ({found[1]})" if found else "no image format we know"
        raise OpenAIError(415, f"{where}: the data is {what}; images must be {IMAGE_FORMATS}", param=where,
                          code="unsupported_media") from None
    if kind not in _IMAGE_KINDS:
        raise OpenAIError(415, f"{where}: the data is a {kind} image; images must be {IMAGE_FORMATS}", param=where,
                          code="unsupported_media")
    check_pixels(width, height, settings, where, "the image")


def check_pixels(width: int, height: int, settings: Settings, where: str, what: str) -> None:
    if width * height > settings.max_frame_pixels:
        raise limit_error(413, where, f"{what} is {width}x{height} = {width * height} pixels",
                          settings.max_frame_pixels, "pixels per frame", "max_frame_pixels")


def bomb(exc: Exception, settings: Settings, where: str, what: str) -> OpenAIError:
    """PIL's own refusal of a huge declared size (it checks while reading the header)."""
    return limit_error(413, where, f"{what} declares a decompression bomb's size ({exc})", settings.max_frame_pixels,
                       "pixels per frame", "max_frame_pixels")


def frame_list_size(frames: list[bytes], settings: Settings, where: str) -> tuple[int, int]:
    """(width, height) of a frame list's stills from their headers, each checked against the pixel budget."""
    from PIL import Image, UnidentifiedImageError

    size = (0, 0)
    for i, data in enumerate(frames):
        try:
            with Image.open(io.BytesIO(data)) as img:
                size = img.size
        except Image.DecompressionBombError as exc:
            raise bomb(exc, settings, where, f"frame {i} of the frame list") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            continue  # decoding names the broken frame
        check_pixels(size[0], size[1], settings, where, f"frame {i} of the frame list")
    return size


# --- the model's context -------------------------------------------------------------------------


def context_tokens(settings: Settings, engine: dict[str, Any] | None = None) -> int | None:
    """The model's context in tokens: the setting, else the llm's max_model_len (as video_preprocessor's
    describe reports it from model.json, else read from <model_repository>/llm/1/model.json); None: unknown."""
    if settings.max_context_tokens:
        return settings.max_context_tokens
    value = (engine or {}).get("max_model_len")
    if isinstance(value, int) and value > 0:
        return value
    try:
        args = json.loads((Path(settings.model_repository) / "llm" / "1" / "model.json").read_text())
        value = int(args.get("max_model_len") or 0)
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return value if value > 0 else None


def media_limit(settings: Settings, engine: dict[str, Any], modality: str) -> tuple[int, str]:
    """How many items of ``modality`` one request may carry, and the setting that says so: the
    shim's own cap, or the engine's ``limit_mm_per_prompt`` from model.json when it is lower (vLLM
    would refuse the request after the media were decoded)."""
    ours = settings.max_videos if modality == "video" else settings.max_images
    where = env_name("max_videos" if modality == "video" else "max_images")
    limit = (engine.get("limit_mm_per_prompt") or {}).get(modality)
    if isinstance(limit, dict):  # vLLM's newer form: {"count": N, ...}
        limit = limit.get("count")
    if isinstance(limit, int) and not isinstance(limit, bool) and 0 <= limit < ours:
        return limit, f"limit_mm_per_prompt.{modality} of the llm's model.json"
    return ours, where


def check_context(tokens: list[tuple[str, int]], context: int | None, *, estimated: bool) -> None:
    """400 when the videos alone need more tokens than the model's whole context."""
    total = sum(n for _, n in tokens)
    if context is None or total <= context:
        return
    about = "about " if estimated else ""
    each = ", ".join(f"{where}: {n}" for where, n in tokens)
    raise OpenAIError(
        400, f"the videos need {about}{total} tokens ({each}){' by their headers' if estimated else ''}, "
        f"more than the model's context of {context} tokens ({env_name('max_context_tokens')} or max_model_len); "
        "ask for fewer frames (media_io_kwargs.video.num_frames or fps) or fewer pixels (mm_processor_kwargs.max_pixels)",
        param=tokens[0][0], code="context_length_exceeded")


# --- every fetched item, before decoding ---------------------------------------------------------------


def check_media(videos: list[tuple[str, Any, VideoOptions]], images: list[tuple[str, bytes]],
                settings: Settings, media: MediaSettings) -> list[tuple[str, int]]:
    """Header checks of a request's fetched media (blocking: run it in a thread).

    ``videos`` are (where, container bytes, a container's local path, or a frame list, resolved
    options). Returns the
    estimated video tokens of each container whose header allows an estimate.
    """
    estimates = []
    for where, data, opts in videos:
        if isinstance(data, (bytes, bytearray, Path)):
            facts = probe_video(data if isinstance(data, Path) else bytes(data))
            if facts is None:
                continue
            check_video(facts, settings, where)
            tokens = estimate_video_tokens(facts, opts, media)
            if tokens is not None:
                estimates.append((where, tokens))
        else:  # a frame list: its stills are decoded here in the shim, at full size
            width, height = frame_list_size(data.frames, settings, where)
            decoded = min(len(data.frames), opts.frame_cap) * width * height * 3
            if decoded > settings.max_decoded_bytes:
                raise limit_error(413, where, f"decoding the frame list takes {decoded} bytes",
                                  settings.max_decoded_bytes, "bytes", "max_decoded_bytes")
    for where, data in images:
        check_image(data, settings, where)
    return estimates


# --- audio ---------------------------------------------------------------------------------------------


def check_audio_asked(audios: list[Any], video_tracks: list[str], media: MediaSettings, settings: Settings,
                      engine: dict[str, Any], model: str) -> None:
    """Before any download: the model must take audio at all (a feature extractor in its folder),
    and the request may carry no more audio parts than the limits allow."""
    if media.audio_sampling_rate is None:
        wheres = [a.where for a in audios] or video_tracks
        if wheres:
            what = "audio" if audios else "its videos' audio (mm_processor_kwargs.use_audio_in_video)"
            raise OpenAIError(400, f"{wheres[0]}: the model {model!r} takes no {what}: it has no audio feature "
                              "extractor", param=wheres[0], code="unsupported_modality")
    ours, where = settings.max_audios, env_name("max_audios")
    limit = (engine.get("limit_mm_per_prompt") or {}).get("audio")
    if isinstance(limit, dict):
        limit = limit.get("count")
    if isinstance(limit, int) and not isinstance(limit, bool) and 0 <= limit < ours:
        ours, where = limit, "limit_mm_per_prompt.audio of the llm's model.json"
    if len(audios) > ours:
        raise OpenAIError(400, f"the request has {len(audios)} audio parts; this server takes at most {ours} "
                          f"({where})", param="messages", code="too_many_media")
    if audios and video_tracks:
        raise OpenAIError(400, f"{audios[0].where}: audio parts cannot be combined with "
                          "mm_processor_kwargs.use_audio_in_video in one request", param=audios[0].where,
                          code="invalid_value")


def check_audio(items: list[tuple[str, bytes]], settings: Settings) -> None:
    """Each fetched audio part (blocking: run it in a thread): within the byte budget, audio at all
    (415 otherwise), and no longer than the duration budget by its header (llm enforces it again
    while decoding)."""
    for where, data in items:
        if not isinstance(data, (bytes, bytearray)):
            raise OpenAIError(400, f"{where}: audio must be a file or data, not a frame list", param=where,
                              code="invalid_value")
        if len(data) > settings.max_audio_bytes:
            raise limit_error(413, where, f"the audio is {len(data)} bytes", settings.max_audio_bytes, "bytes",
                              "max_audio_bytes")
        try:
            facts = probe_audio(bytes(data), "audio")
        except UnsupportedMedia as exc:
            raise OpenAIError(415, f"{where}: {str(exc).removeprefix('audio: ')}", param=where,
                              code="unsupported_media") from None
        if facts.duration is not None and facts.duration > settings.max_audio_duration_s:
            raise limit_error(413, where, f"the audio lasts {facts.duration:.1f} s",
                              f"{settings.max_audio_duration_s:g}", "s", "max_audio_duration_s")
