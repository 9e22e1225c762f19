"""Pixel-budget sizing (Qwen-VL style) and the fallback frame resizer."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tests.videos import make_frame, read_index
from video_pipeline.errors import InvalidInput
from video_pipeline.media.options import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, DEFAULT_PATCH_FACTOR
from video_pipeline.media.resize import MAX_ASPECT_RATIO, fit_pixel_budget, resize_frames

SIZES = [1, 2, 15, 27, 28, 29, 61, 97, 120, 240, 333, 480, 720, 1080, 1920, 2160, 3840, 4321, 7680]
BUDGETS = [
    (DEFAULT_PATCH_FACTOR, DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS),  # Qwen-VL video defaults
    (28, 4 * 28 * 28, 16384 * 28 * 28),  # Qwen-VL image defaults
    (28, 4 * 28 * 28, 64 * 28 * 28),  # a small budget
    (14, 16 * 14 * 14, 256 * 14 * 14),
    (32, 4 * 32 * 32, 300 * 32 * 32),
]


def _cases() -> list[tuple[int, int, int, int, int]]:
    return [
        (h, w, *budget)
        for (h, w), budget in itertools.product(itertools.product(SIZES, SIZES), BUDGETS)
        if max(h, w) / min(h, w) <= MAX_ASPECT_RATIO
    ]


def test_fit_pixel_budget_returns_factor_multiples_within_budget_when_sizes_vary() -> None:
    failures = []
    for h, w, factor, lo, hi in _cases():
        oh, ow = fit_pixel_budget(h, w, factor, lo, hi)
        if oh % factor or ow % factor or not lo <= oh * ow <= hi:
            failures.append((h, w, factor, lo, hi, oh, ow))
    assert not failures, failures[:10]


def test_fit_pixel_budget_stays_within_budget_when_frame_is_very_thin() -> None:
    # The short side clamps up to one factor; that used to push the area over max_pixels
    # (28x2464 for a budget of 50176), and the engine's processor then resized again.
    oh, ow = fit_pixel_budget(15, 1849, 28, 4 * 784, 64 * 784)
    assert oh == 28 and ow % 28 == 0 and oh * ow <= 64 * 784
    oh, ow = fit_pixel_budget(1849, 15, 28, 4 * 784, 64 * 784)
    assert ow == 28 and oh % 28 == 0 and oh * ow <= 64 * 784


def test_fit_pixel_budget_is_a_fixed_point_when_applied_to_its_own_output() -> None:
    # The engine's processor runs the same math on our frames: it must not resize them again.
    for h, w, factor, lo, hi in _cases():
        oh, ow = fit_pixel_budget(h, w, factor, lo, hi)
        if max(oh, ow) / min(oh, ow) <= MAX_ASPECT_RATIO:
            assert fit_pixel_budget(oh, ow, factor, lo, hi) == (oh, ow), (h, w, factor, lo, hi)


@pytest.mark.parametrize(
    ("h", "w"), [(96, 128), (61, 97), (1080, 1920), (1920, 1080), (480, 640), (100, 1000)]
)
def test_fit_pixel_budget_keeps_aspect_ratio_within_one_factor_when_resizing(h: int, w: int) -> None:
    f = DEFAULT_PATCH_FACTOR
    oh, ow = fit_pixel_budget(h, w, f, DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS)
    # Both sides are one common scale of the input, each rounded to the factor: the ranges of
    # scales each side allows must overlap.
    lo = max((oh - f) / h, (ow - f) / w)
    hi = min((oh + f) / h, (ow + f) / w)
    assert lo <= hi, (oh, ow)


def test_fit_pixel_budget_rounds_to_factor_when_already_within_budget() -> None:
    assert fit_pixel_budget(480, 640, 28, DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS) == (476, 644)


def test_fit_pixel_budget_downscales_when_over_max_pixels() -> None:
    oh, ow = fit_pixel_budget(2160, 3840, 28, DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS)
    assert oh * ow <= DEFAULT_MAX_PIXELS and oh < 2160
    assert abs(ow / oh - 16 / 9) < 0.1


def test_fit_pixel_budget_upscales_when_under_min_pixels() -> None:
    oh, ow = fit_pixel_budget(61, 97, 28, DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS)
    assert oh * ow >= DEFAULT_MIN_PIXELS and oh > 61


def test_fit_pixel_budget_raises_invalid_input_when_aspect_ratio_is_extreme() -> None:
    with pytest.raises(InvalidInput, match="aspect ratio"):
        fit_pixel_budget(10, 2010, 28, DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS)


@pytest.mark.parametrize(("h", "w"), [(0, 10), (10, 0), (-1, 5)])
def test_fit_pixel_budget_raises_invalid_input_when_size_is_empty(h: int, w: int) -> None:
    with pytest.raises(InvalidInput, match="empty"):
        fit_pixel_budget(h, w, 28, DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS)


# --- resize_frames ---------------------------------------------------------------------


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
