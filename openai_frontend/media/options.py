"""OpenAI-side media knobs -> the ``video_options`` JSON of the video_media model.

Accepted, as vLLM and LMDeploy take them (in the body, or via the OpenAI SDK's
``extra_body``):

- ``media_io_kwargs = {"video": {"num_frames": 16, "fps": 2}}`` (how frames are sampled);
- ``mm_processor_kwargs`` flat as vLLM takes it (``{"min_pixels", "max_pixels", "fps",
  "do_sample_frames", "size": {"shortest_edge", "longest_edge"}}``) or per modality as
  LMDeploy does (``{"video": {...}, "image": {...}}``);
- per part: ``start`` / ``end`` seconds, on the part or inside ``video_url``.

Precedence: the part's window, then media_io_kwargs, then mm_processor_kwargs.
Image budgets are accepted but not applied: images reach the engine encoded and
its processor sizes them with the model's defaults.
"""

from __future__ import annotations

import math
from typing import Any

from openai_frontend.errors import OpenAIError, bad_request

# media_io_kwargs.video keys -> video_options keys (ours keep their names).
_IO_VIDEO_KEYS = {"num_frames": "num_frames", "fps": "fps", "max_frames": "max_frames"}
# vLLM's loader keys that describe how to decode, which our decoder decides itself.
_IO_VIDEO_IGNORED = {"backend", "video_backend"}
_PROC_VIDEO_KEYS = {"min_pixels", "max_pixels", "fps", "num_frames", "max_frames"}
_PROC_IGNORED = {"do_sample_frames"}  # we always sample, before the engine
_PROC_IMAGE_KEYS = {"min_pixels", "max_pixels", "size"}


def video_defaults(media_io_kwargs: Any, mm_processor_kwargs: Any) -> dict[str, Any]:
    """Request-level ``video_options`` (may be empty) from the two kwargs objects."""
    out: dict[str, Any] = {}
    proc = _object(mm_processor_kwargs, "mm_processor_kwargs")
    if set(proc) & {"video", "image"}:  # LMDeploy's per-modality form
        extra = sorted(set(proc) - {"video", "image"})
        if extra:
            raise bad_request(f"mm_processor_kwargs mixes per-modality and flat keys: {extra}", "mm_processor_kwargs")
        _check_keys(_object(proc.get("image"), "mm_processor_kwargs.image"), _PROC_IMAGE_KEYS,
                    "mm_processor_kwargs.image")
        proc = _object(proc.get("video"), "mm_processor_kwargs.video")
        where = "mm_processor_kwargs.video"
    else:
        where = "mm_processor_kwargs"
    out.update(_processor_video(proc, where))
    io = _object(media_io_kwargs, "media_io_kwargs")
    unknown = sorted(set(io) - {"video", "image"})
    if unknown:
        raise bad_request(f"media_io_kwargs takes 'video' (and 'image'), got {unknown}", "media_io_kwargs")
    video_io = _object(io.get("video"), "media_io_kwargs.video")
    _check_keys(video_io, set(_IO_VIDEO_KEYS) | _IO_VIDEO_IGNORED, "media_io_kwargs.video")
    sampling = {ours: video_io[k] for k, ours in _IO_VIDEO_KEYS.items() if video_io.get(k) is not None}
    if sampling:
        # Sampling given here replaces any the processor kwargs named (vLLM's precedence:
        # fps and num_frames interact, so a request that names one means it alone).
        for key in ("num_frames", "fps"):
            out.pop(key, None)
        out.update(sampling)
    # vLLM's "-1 = every frame" for num_frames: our default fps sampling with its cap is the closest.
    if out.get("num_frames") == -1:
        out.pop("num_frames")
    for key, value in out.items():
        _check_number(key, value, where if key in proc else "media_io_kwargs.video")
    return out


def part_window(start: Any, end: Any, where: str) -> dict[str, Any]:
    """``start``/``end`` seconds of one video part, validated."""
    out: dict[str, Any] = {}
    for key, value in (("start", start), ("end", end)):
        if value is None:
            continue
        _check_number(key, value, where)
        if value < 0:
            raise bad_request(f"{where}.{key} must be >= 0 seconds, got {value}", f"{where}.{key}")
        out[key] = float(value)
    if "start" in out and "end" in out and out["end"] <= out["start"]:
        raise bad_request(f"{where}: end ({out['end']}) must be greater than start ({out['start']})", where)
    return out


def _processor_video(proc: dict[str, Any], where: str) -> dict[str, Any]:
    known = _PROC_VIDEO_KEYS | _PROC_IGNORED | {"size"}
    _check_keys(proc, known, where)
    out = {k: proc[k] for k in _PROC_VIDEO_KEYS if proc.get(k) is not None}
    size = proc.get("size")
    if size is not None:
        # transformers' newer spelling of the pixel budget
        size = _object(size, f"{where}.size")
        _check_keys(size, {"shortest_edge", "longest_edge"}, f"{where}.size")
        if size.get("shortest_edge") is not None:
            out.setdefault("min_pixels", size["shortest_edge"])
        if size.get("longest_edge") is not None:
            out.setdefault("max_pixels", size["longest_edge"])
    return out


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request(f"{where} must be an object", where)
    return value


def _check_keys(obj: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(obj) - known)
    if unknown:
        raise OpenAIError(400, f"{where}: unsupported key(s) {unknown}; supported: {sorted(known)}",
                          param=f"{where}.{unknown[0]}", code="unsupported_parameter")


def _check_number(key: str, value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad_request(f"{where}.{key} must be a number, got {value!r}", f"{where}.{key}")
