"""The fallback resizer, for frames that reach the preprocessor at another size than the model's.

Which size that is, is the served model's rule: :mod:`video_pipeline.media.model_media`.
"""

from __future__ import annotations

import numpy as np


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
