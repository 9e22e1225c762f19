"""The fallback frame resizer (sizes themselves: tests/unit/test_model_media.py)."""

from __future__ import annotations

import numpy as np

from tests.videos import make_frame, read_index
from video_pipeline.media.resize import resize_frames


def test_resize_frames_returns_the_same_array_when_size_already_matches() -> None:
    frames = np.zeros((2, 56, 84, 3), dtype=np.uint8)
    assert resize_frames(frames, 56, 84) is frames


def test_resize_frames_returns_requested_shape_when_size_differs() -> None:
    frames = np.stack([make_frame(i, 61, 97) for i in (0, 5, 300)])
    out = resize_frames(frames, 224, 336)
    assert out.shape == (3, 224, 336, 3) and out.dtype == np.uint8
    assert [read_index(f) for f in out] == [0, 5, 300]


def test_resize_frames_downscales_content_faithfully_when_shrinking() -> None:
    frames = np.stack([make_frame(1234, 480, 640)])
    out = resize_frames(frames, 56, 84)
    assert read_index(out[0]) == 1234


def test_resize_frames_returns_empty_array_when_no_frames() -> None:
    out = resize_frames(np.zeros((0, 10, 10, 3), dtype=np.uint8), 28, 28)
    assert out.shape == (0, 28, 28, 3)
