"""Pixel-budget sizing for vision-language models, and the fallback resizer.

The size math mirrors what Qwen-VL processors expect: both sides a multiple of
the patch factor (patch size x spatial merge), aspect ratio kept as closely as
the factor allows, area inside [min_pixels, max_pixels].
"""

from __future__ import annotations

import math

import numpy as np

from video_pipeline.errors import InvalidInput

# Qwen-VL processors refuse aspect ratios beyond this.
MAX_ASPECT_RATIO = 200


def fit_pixel_budget(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Returns (height, width): multiples of ``factor``, area within the budget, aspect kept."""
    if height < 1 or width < 1:
        raise InvalidInput(f"frame size {width}x{height} is empty")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise InvalidInput(
            f"frame aspect ratio {max(height, width) / min(height, width):.0f}:1 exceeds {MAX_ASPECT_RATIO}:1"
        )
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        scale = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / scale / factor) * factor)
        w = max(factor, math.floor(width / scale / factor) * factor)
        if h * w > max_pixels:
            # A very thin frame's short side was raised to one factor, pushing the area back
            # over the budget (Qwen's smart_resize has the same slip and then resizes our
            # output again): take the excess from the long side.
            if h <= w:
                w = max(factor, max_pixels // (h * factor) * factor)
            else:
                h = max(factor, max_pixels // (w * factor) * factor)
    elif h * w < min_pixels:
        scale = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * scale / factor) * factor
        w = math.ceil(width * scale / factor) * factor
    return int(h), int(w)


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resizes (T,H,W,3) uint8 frames with bicubic filtering; a no-op when already that size."""
    if frames.shape[1] == height and frames.shape[2] == width:
        return frames
    out = np.empty((frames.shape[0], height, width, 3), dtype=np.uint8)
    if frames.shape[0] == 0:
        return out
    import av  # FFmpeg's scaler: faster than PIL and already a dependency

    for i, frame in enumerate(frames):
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        out[i] = vf.reformat(width=width, height=height, interpolation="BICUBIC").to_ndarray()
    return out
