"""Per-request logic of the Triton models, as plain callables on numpy dicts.

Each step validates its configuration at construction (model load) and its
inputs per request, raising typed errors from :mod:`video_pipeline.errors`.
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any

import numpy as np

from video_pipeline import contract as C
from video_pipeline.errors import InvalidInput
from video_pipeline.media.decode import decode_video
from video_pipeline.media.options import DecodeLimits, VideoOptions
from video_pipeline.media.preprocess import preprocess

Inputs = dict[str, "np.ndarray | None"]


def _scalar_bytes(inputs: Inputs, name: str, required: bool = True) -> bytes | None:
    arr = inputs.get(name)
    if arr is None:
        if required:
            raise InvalidInput(f"missing input tensor '{name}'")
        return None
    if arr.size != 1:
        raise InvalidInput(f"input '{name}' must hold exactly one element, got {arr.size}")
    value = arr.reshape(-1)[0]
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray, np.bytes_)):
        return bytes(value)
    raise InvalidInput(f"input '{name}' must be BYTES")


def _json_bytes(obj: Any) -> np.ndarray:
    return np.array([json.dumps(obj, separators=(",", ":")).encode()], dtype=np.object_)


def _options(inputs: Inputs, defaults: dict[str, Any]) -> VideoOptions:
    raw = _scalar_bytes(inputs, C.VIDEO_OPTIONS, required=False)
    if raw is None or raw.strip() == b"":
        return VideoOptions.from_dict(dict(defaults))
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"video_options is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput("video_options must be a JSON object")
    return VideoOptions.from_dict({**defaults, **data})


_DEFAULTABLE = ("fps", "max_frames", "min_pixels", "max_pixels", "patch_factor")
# Keys Triton itself reads from a model's parameters.
_TRITON_KEYS = {"EXECUTION_ENV_PATH"}


def _check_params(params: dict[str, str], allowed: set[str]) -> None:
    """Unknown config.pbtxt parameters fail the model load instead of being ignored."""
    unknown = sorted(set(params) - allowed - _TRITON_KEYS)
    if unknown:
        raise InvalidInput(f"unknown parameter(s) {unknown}; known: {sorted(allowed)}")


def _option_defaults(params: dict[str, str]) -> dict[str, Any]:
    """Model-level defaults for per-request options (e.g. the model's patch factor)."""
    out: dict[str, Any] = {}
    for key in _DEFAULTABLE:
        if params.get(f"default_{key}"):
            out[key] = params[f"default_{key}"]
    VideoOptions.from_dict(out)  # fail the model load on bad defaults
    return out


class DecoderStep:
    """``video_decoder``: container bytes -> sampled RGB frames + timestamps + metadata."""

    def __init__(self, params: dict[str, str]) -> None:
        _check_params(params, {f.name for f in fields(DecodeLimits)} | {f"default_{k}" for k in _DEFAULTABLE})
        self.limits = DecodeLimits.from_params(params)
        self.defaults = _option_defaults(params)

    def __call__(self, inputs: Inputs) -> dict[str, np.ndarray]:
        data = _scalar_bytes(inputs, C.VIDEO)
        options = _options(inputs, self.defaults)
        video = decode_video(data, options, self.limits)
        return {
            C.FRAMES: video.frames,
            C.TIMESTAMPS: video.timestamps,
            C.FRAME_INDICES: video.frame_indices,
            C.VIDEO_METADATA: _json_bytes(video.metadata),
        }


class PreprocessorStep:
    """``video_preprocessor``: frames -> frames sized for the engine + engine metadata."""

    def __init__(self, params: dict[str, str]) -> None:
        _check_params(params, {f"default_{k}" for k in _DEFAULTABLE})
        self.defaults = _option_defaults(params)

    def __call__(self, inputs: Inputs) -> dict[str, np.ndarray]:
        frames = inputs.get(C.FRAMES)
        if frames is None:
            raise InvalidInput(f"missing input tensor '{C.FRAMES}'")
        raw_meta = _scalar_bytes(inputs, C.VIDEO_METADATA)
        try:
            metadata = json.loads(raw_meta) if raw_meta else {}
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"video_metadata is not valid JSON: {exc}") from None
        timestamps = inputs.get(C.TIMESTAMPS)
        indices = inputs.get(C.FRAME_INDICES)
        if timestamps is None or indices is None:
            raise InvalidInput("timestamps and frame_indices are required")
        options = _options(inputs, self.defaults)
        sized, info = preprocess(frames, timestamps.reshape(-1), indices.reshape(-1), metadata, options)
        return {C.VIDEO_FRAMES: sized, C.VIDEO_INFO: _json_bytes(info)}
