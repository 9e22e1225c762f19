"""Frames from the decoder -> what the served model's engine consumes.

Sizes frames as the model's processor would (:class:`MediaSettings`; a no-op when the
decoder already scaled them in FFmpeg's pixel path, so the processor passes them through
untouched) and describes them in the metadata shape vLLM's Qwen2/2.5/3-VL processors
accept, so the model sees the true timestamps.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import numpy as np

from video_pipeline.contract import SamplingPlan, VideoInfo, VideoMetadata
from video_pipeline.errors import InvalidInput
from video_pipeline.media.model_media import MediaSettings
from video_pipeline.media.options import VideoOptions
from video_pipeline.media.resize import resize_frames


def preprocess(
    frames: np.ndarray,
    timestamps: np.ndarray,
    frame_indices: np.ndarray,
    metadata: dict[str, Any],
    options: VideoOptions,
    media: MediaSettings | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Returns (frames sized for the engine, engine metadata)."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InvalidInput(f"frames must be uint8 (T,H,W,3), got {frames.dtype} {tuple(frames.shape)}")
    t = frames.shape[0]
    if t == 0:
        raise InvalidInput("no frames to preprocess")
    if len(timestamps) != t or len(frame_indices) != t:
        raise InvalidInput(
            f"{t} frames but {len(timestamps)} timestamps and {len(frame_indices)} frame indices"
        )
    meta = VideoMetadata.from_dict(metadata)
    # Size from the source's display size, as the decoder did: the same options then give the
    # same target and frames the decoder already scaled pass through untouched (never re-fitted).
    src_h = int(meta.height or frames.shape[1])
    src_w = int(meta.width or frames.shape[2])
    media = media or MediaSettings()
    h, w = media.video_size(t, src_h, src_w, options.min_pixels, options.max_pixels)
    sized = resize_frames(frames, h, w)
    fps = float(meta.fps or 0.0)
    if not fps > 0:
        # Engines need a positive rate to place frames in time; derive it from the timestamps.
        span = float(timestamps[-1] - timestamps[0]) if t > 1 else 0.0
        fps = (t - 1) / span if span > 0 else 1.0
    key = meta.cache_key
    # vLLM's multi_modal_uuids: the decoder's key (bytes + every option) and the size
    # decide these frames and this metadata, so equal uuids mean equal inputs and vLLM's
    # processor and prefix caches can reuse their work without hashing the frames.
    uuid = "vlt-" + hashlib.sha256(f"{key}:{h}x{w}".encode()).hexdigest()[:40] if isinstance(key, str) and key else None
    info = VideoInfo(
        # What vLLM's Qwen2.5/3-VL processors read from video metadata.
        fps=fps,
        duration=float(meta.duration or (timestamps[-1] if t else 0.0)),
        total_num_frames=int(meta.total_num_frames or t),
        frames_indices=[int(i) for i in frame_indices],
        video_backend="pyav" if meta.video_backend is None else str(meta.video_backend),
        do_sample_frames=False,
        # Our sampling plan, surfaced to clients.
        timestamps=[round(float(x), 6) for x in timestamps],
        width=int(w),
        height=int(h),
        num_frames=int(t),
        num_video_tokens=media.video_tokens(t, h, w),
        # How the frames were chosen and sized (defaults included), for the answer's sampling plan.
        sampling=_budget(meta.sampling or SamplingPlan(), media, options),
        cache=str(meta.cache) if meta.cache else None,
        uuid=uuid,
    )
    return sized, info.to_dict()


def _budget(plan: SamplingPlan, media: MediaSettings, options: VideoOptions) -> SamplingPlan:
    """``plan`` with the pixel budget that applied, defaults filled in, and what it counts (one frame or all)."""
    lo, hi = media.clamp_video_budget(options.min_pixels, options.max_pixels)
    return replace(plan, min_pixels=lo, max_pixels=hi, patch_factor=media.factor,
                   pixel_budget="per frame" if media.sizing == "frame" else
                   ("all frames together" if media.sizing == "clip" else "fixed size"))
