"""Stills of a generated video: the thumbnail, the spritesheet's layout and tiles, the remix's first frame."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from openai_frontend.videos.stills import MAX_TILES, first_frame_png, sheet_layout, spritesheet, thumbnail
from video_pipeline.generation.encode import encode_mp4


def ramp(num_frames: int, width: int = 64, height: int = 32) -> tuple[bytes, np.ndarray]:
    """An mp4 whose frame ``i`` is one flat grey level, ``i * 12``: a tile shows which frame it is."""
    frames = np.stack([np.full((height, width, 3), i * 12, dtype=np.uint8) for i in range(num_frames)])
    return encode_mp4(frames, 16), frames


def level(image: Image.Image, box: tuple[int, int, int, int] | None = None) -> float:
    return float(np.asarray(image.crop(box) if box else image, dtype=np.float32).mean())


@pytest.mark.parametrize(("num_frames", "columns", "rows", "frames"), [
    (1, 1, 1, (0,)),
    (5, 3, 2, (0, 1, 2, 3, 4)),
    (9, 3, 3, tuple(range(9))),
    (17, 4, 4, (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16)),
    (65, 4, 4, (0, 4, 9, 13, 17, 21, 26, 30, 34, 38, 43, 47, 51, 55, 60, 64)),
])
def test_sheet_layout_samples_at_most_16_frames_from_first_to_last_in_a_near_square_grid(
        num_frames, columns, rows, frames) -> None:
    layout = sheet_layout(num_frames, 64, 32)
    assert (layout.columns, layout.rows, layout.frames) == (columns, rows, frames)
    assert len(layout.frames) <= MAX_TILES and (layout.tile_width, layout.tile_height) == (64, 32)
    assert (layout.width, layout.height) == (columns * 64, rows * 32)


def test_sheet_layout_scales_big_frames_down_to_256_on_the_longer_side_and_never_up() -> None:
    big = sheet_layout(121, 1280, 704)
    assert (big.tile_width, big.tile_height, big.columns, big.rows) == (256, 141, 4, 4)
    assert big.headers()["x-spritesheet-tile-height"] == "141"
    assert (sheet_layout(9, 32, 32).tile_width, sheet_layout(9, 32, 32).tile_height) == (32, 32)


def test_spritesheet_puts_each_sampled_frame_in_its_tile_left_to_right_top_to_bottom() -> None:
    mp4, _ = ramp(9)
    layout = sheet_layout(9, 64, 32)
    sheet = Image.open(io.BytesIO(spritesheet(mp4, layout)))
    assert sheet.format == "JPEG" and sheet.size == (192, 96)
    for i, frame in enumerate(layout.frames):
        x, y = (i % layout.columns) * 64, (i // layout.columns) * 32
        assert abs(level(sheet, (x + 8, y + 8, x + 56, y + 24)) - frame * 12) < 4, (i, frame)


def test_thumbnail_is_the_middle_frame_as_webp_at_the_video_size() -> None:
    mp4, _ = ramp(9)
    thumb = Image.open(io.BytesIO(thumbnail(mp4, 9)))
    assert thumb.format == "WEBP" and thumb.size == (64, 32)
    assert abs(level(thumb) - 4 * 12) < 4


def test_first_frame_png_is_the_decoded_first_frame_pixel_for_pixel() -> None:
    import av

    mp4, _ = ramp(5)
    with av.open(io.BytesIO(mp4)) as container:
        decoded = next(container.decode(video=0)).to_ndarray(format="rgb24")
    image = Image.open(io.BytesIO(first_frame_png(mp4)))
    assert image.format == "PNG" and np.array_equal(np.asarray(image), decoded)
