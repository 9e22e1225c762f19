"""OpenAI-side media knobs -> the ``video_options`` JSON of the video_media model.

Accepted, as vLLM and LMDeploy take them (in the body, or via the OpenAI SDK's
``extra_body``):

- ``media_io_kwargs = {"video": {"num_frames": 16, "fps": 2}}`` (how frames are sampled);
- ``mm_processor_kwargs`` flat as vLLM takes it (``{"min_pixels", "max_pixels", "fps",
  "do_sample_frames", "size": {"shortest_edge", "longest_edge"}}``) or per modality as
  LMDeploy does (``{"video": {...}, "image": {...}}``);
- per part: ``start`` / ``end`` seconds, on the part or inside ``video_url``.

Nothing a client sets is dropped: settings from both objects are combined, and
one setting given twice with different values (``media_io_kwargs.video.fps`` 2 and
``mm_processor_kwargs.fps`` 1, or ``min_pixels`` beside ``size.shortest_edge``) is
a 400 naming both. ``num_frames`` with ``fps`` is the video_options rule: fps
sampling capped at num_frames (whichever gives fewer frames, as vLLM's loader).
``num_frames: -1`` (vLLM: "every frame") means our default fps sampling. A part's
``start``/``end`` are its own keys and apply on top. Every answer's
``video_plan`` shows the sampling that applied, defaults included.
Image budgets are accepted but not applied: images reach the engine encoded and
its processor sizes them with the model's defaults.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from openai_frontend.errors import OpenAIError, bad_request
from video_pipeline.contract import VideoOptionsDoc

# media_io_kwargs.video keys we apply: vLLM's names, which are the video_options keys too.
_IO_VIDEO_KEYS = {"num_frames", "fps", "max_frames"}
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
    for key, value in video_io.items():
        if key not in _IO_VIDEO_KEYS or value is None:
            continue
        _check_number(key, value, "media_io_kwargs.video")
        if key in out and out[key] != value:
            raise OpenAIError(400, f"media_io_kwargs.video.{key} is {value!r} but {where}.{key} is {out[key]!r}; "
                              "give it once", param=f"media_io_kwargs.video.{key}", code="conflicting_parameters")
        out[key] = value
    doc = VideoOptionsDoc.from_dict(out)
    # vLLM's "-1 = every frame" for num_frames: our default fps sampling with its cap is the closest.
    if doc.num_frames == -1:
        doc = replace(doc, num_frames=None)
    for key, value in doc.to_dict().items():
        _check_number(key, value, where)
    return doc.to_dict()


def part_window(start: Any, end: Any, where: str) -> dict[str, Any]:
    """``start``/``end`` seconds of one video part (its video_options window), validated."""
    for key, value in (("start", start), ("end", end)):  # the part's own fields
        if value is None:
            continue
        _check_number(key, value, where)
        if value < 0:
            raise bad_request(f"{where}.{key} must be >= 0 seconds, got {value}", f"{where}.{key}")
    window = VideoOptionsDoc(start=None if start is None else float(start), end=None if end is None else float(end))
    if window.start is not None and window.end is not None and window.end <= window.start:
        raise bad_request(f"{where}: end ({window.end}) must be greater than start ({window.start})", where)
    return window.to_dict()


def _processor_video(proc: dict[str, Any], where: str) -> dict[str, Any]:
    known = _PROC_VIDEO_KEYS | _PROC_IGNORED | {"size"}
    _check_keys(proc, known, where)
    out = {k: proc[k] for k in _PROC_VIDEO_KEYS if proc.get(k) is not None}
    size = proc.get("size")
    if size is not None:
        # transformers' newer spelling of the pixel budget
        size = _object(size, f"{where}.size")
        _check_keys(size, {"shortest_edge", "longest_edge"}, f"{where}.size")
        for edge, ours in (("shortest_edge", "min_pixels"), ("longest_edge", "max_pixels")):
            if size.get(edge) is None:
                continue
            if out.get(ours) is not None and out[ours] != size[edge]:
                raise OpenAIError(400, f"{where}.size.{edge} is {size[edge]!r} but {where}.{ours} is {out[ours]!r}; "
                                  "give the budget once", param=f"{where}.size.{edge}", code="conflicting_parameters")
            out[ours] = size[edge]
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
