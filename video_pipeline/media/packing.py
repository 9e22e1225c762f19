"""Several videos in one tensor: concatenated along T on a shared canvas.

Triton tensors are rectangular, but one request may carry videos of different
sizes. The media tensors therefore hold N videos *packed*: frames of all videos
concatenated along T on a canvas as large as the largest of them (each video
top-left aligned, zero padding), with one metadata JSON per video giving its own
``num_frames``, ``height`` and ``width``. With one video (the common case) the
packed tensor is that video's frames, untouched.
"""

from __future__ import annotations

import numpy as np

from video_pipeline.errors import InvalidInput


def pack(videos: list[np.ndarray]) -> np.ndarray:
    """(T_i, H_i, W_i, 3) uint8 arrays -> (sum T_i, max H, max W, 3)."""
    if not videos:
        return np.zeros((0, 0, 0, 3), dtype=np.uint8)
    if len(videos) == 1:
        return videos[0]
    h = max(v.shape[1] for v in videos)
    w = max(v.shape[2] for v in videos)
    out = np.zeros((sum(v.shape[0] for v in videos), h, w, 3), dtype=np.uint8)
    t = 0
    for v in videos:
        out[t : t + v.shape[0], : v.shape[1], : v.shape[2]] = v
        t += v.shape[0]
    return out


def unpack(packed: np.ndarray, shapes: list[tuple[int, int, int]]) -> list[np.ndarray]:
    """Inverse of :func:`pack` given each video's (T, H, W); views, no copies."""
    if packed.ndim != 4 or packed.shape[-1] != 3:
        raise InvalidInput(f"packed frames must be (T,H,W,3), got {tuple(packed.shape)}")
    total = sum(s[0] for s in shapes)
    if total != packed.shape[0]:
        raise InvalidInput(f"metadata describes {total} frames but the tensor holds {packed.shape[0]}")
    out = []
    t = 0
    for n, h, w in shapes:
        if h > packed.shape[1] or w > packed.shape[2]:
            raise InvalidInput(f"a video of {w}x{h} does not fit the {packed.shape[2]}x{packed.shape[1]} canvas")
        out.append(packed[t : t + n, :h, :w])
        t += n
    return out


def split(values: np.ndarray, counts: list[int]) -> list[np.ndarray]:
    """Splits a concatenated per-frame vector (timestamps, indices) by frame counts."""
    if sum(counts) != len(values):
        raise InvalidInput(f"expected {sum(counts)} per-frame values, got {len(values)}")
    return np.split(values, np.cumsum(counts)[:-1]) if counts else []
