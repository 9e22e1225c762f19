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
import json
import logging
from pathlib import Path
from typing import Any

from openai_frontend.errors import OpenAIError
from openai_frontend.files.upload import sniff
from openai_frontend.settings import Settings, env_name
from video_pipeline import contract as C
from video_pipeline.errors import InvalidInput, MediaTooLarge, PipelineError, UnsupportedMedia
from video_pipeline.media.audio import probe_audio
from video_pipeline.media.facts import (
    VideoFacts,
    estimate_video_tokens,
    frame_size_excess,
    probe_image,
    probe_video,
    video_excess,
)
from video_pipeline.media.model_media import MediaSettings
from video_pipeline.media.options import DecodeLimits, VideoOptions
from video_pipeline.steps import PreprocessorStep, json_tensor, video_options

logger = logging.getLogger(__name__)


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


# --- headers, before decoding (video_pipeline.media.facts, shared with the decoder) ----------------------

IMAGE_FORMATS = "PNG, JPEG, WebP, GIF or BMP"
_IMAGE_KINDS = {"PNG", "JPEG", "MPO", "WEBP", "GIF", "BMP"}  # PIL's names (MPO: a JPEG with more pictures)
# A budget the shim leaves to video_decoder (its config.pbtxt): the header check here binds only the shim's own.
_UNBOUNDED = 2**62
# The limits facts.video_excess can find with header_limits, as the words, unit and setting of a refusal.
_EXCESS_WORDS = {
    "max_frame_pixels": ("pixels per frame", "max_frame_pixels"),
    "max_duration_s": ("s", "max_video_duration_s"),
}


def header_limits(settings: Settings) -> DecodeLimits:
    """The shim's budgets as the decoder's limits object: frame pixels and duration; the rest unbounded."""
    return DecodeLimits(max_input_bytes=_UNBOUNDED, max_width=_UNBOUNDED, max_height=_UNBOUNDED,
                        max_frame_pixels=settings.max_frame_pixels, max_duration_s=settings.max_video_duration_s,
                        max_total_frames=_UNBOUNDED, max_streams=_UNBOUNDED)


def header_facts(data: bytes | Path, limits: DecodeLimits) -> VideoFacts | None:
    """The header facts of a video; None when its header cannot be read, or not within the probe's time
    limit (the decoder then gives its own, precise refusal)."""
    try:
        return probe_video(data, limits)
    except PipelineError as exc:
        logger.debug("probe failed: %s", exc)
        return None


def check_video(facts: VideoFacts, limits: DecodeLimits, where: str) -> None:
    """413 naming the setting when the header passes one of :func:`header_limits`."""
    excess = video_excess(facts, limits)
    if excess is None:
        return
    unit, setting = _EXCESS_WORDS[excess.limit]
    if excess.limit == "max_frame_pixels":
        what = f"the video's frames are {facts.width}x{facts.height} = {int(excess.value)} pixels"
        limit: Any = int(excess.allowed)
    else:
        what, limit = f"the video lasts {excess.value:.1f} s", f"{excess.allowed:g}"
    raise limit_error(413, where, what, limit, unit, setting)


def check_image(data: bytes, settings: Settings, where: str) -> None:
    """An image must be one of the formats engines read, within the pixel budget (header only)."""
    try:
        image = probe_image(data, "the data")
    except MediaTooLarge as exc:  # PIL's own refusal of a huge declared size
        raise _bomb(exc, settings, where) from None
    except InvalidInput as exc:
        found = sniff(data[:64])
        if found is not None and found[0] == "image":
            raise OpenAIError(400, f"{where}: {exc}; its header says {found[1]}, its data does not follow",
                              param=where, code="invalid_image") from None
        what = f"a {found[0]} ({found[1]})" if found else "no image format we know"
        raise OpenAIError(415, f"{where}: the data is {what}; images must be {IMAGE_FORMATS}", param=where,
                          code="unsupported_media") from None
    if image.format not in _IMAGE_KINDS:
        raise OpenAIError(415, f"{where}: the data is a {image.format} image; images must be {IMAGE_FORMATS}",
                          param=where, code="unsupported_media")
    check_pixels(image.width, image.height, settings, where, "the image")


def check_pixels(width: int, height: int, settings: Settings, where: str, what: str) -> None:
    if frame_size_excess(width, height, header_limits(settings)) is not None:
        raise limit_error(413, where, f"{what} is {width}x{height} = {width * height} pixels",
                          settings.max_frame_pixels, "pixels per frame", "max_frame_pixels")


def _bomb(exc: MediaTooLarge, settings: Settings, where: str) -> OpenAIError:
    """PIL's own refusal of a huge declared size (it checks while reading the header), as a budget error."""
    return limit_error(413, where, str(exc), settings.max_frame_pixels, "pixels per frame", "max_frame_pixels")


def frame_list_size(frames: list[bytes], settings: Settings, where: str) -> tuple[int, int]:
    """(width, height) of a frame list's stills from their headers, each checked against the pixel budget."""
    size = (0, 0)
    for i, data in enumerate(frames):
        what = f"frame {i} of the frame list"
        try:
            image = probe_image(data, what)
        except MediaTooLarge as exc:
            raise _bomb(exc, settings, where) from None
        except InvalidInput:
            continue  # decoding names the broken frame
        size = (image.width, image.height)
        check_pixels(image.width, image.height, settings, where, what)
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
    limits = header_limits(settings)
    for where, data, opts in videos:
        if isinstance(data, (bytes, bytearray, Path)):
            facts = header_facts(data if isinstance(data, Path) else bytes(data), limits)
            if facts is None:
                continue
            check_video(facts, limits, where)
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
