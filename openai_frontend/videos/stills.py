"""Stills of a finished video, made from its mp4 with PyAV: OpenAI's download variants and the remix's frame.

* ``thumbnail``: the middle frame at the video's size, as WebP (OpenAI serves ``thumbnail`` as WebP);
* ``spritesheet``: up to :data:`MAX_TILES` frames evenly spaced from the first to the last, each
  scaled so its longer side is at most :data:`MAX_TILE_SIDE` (never enlarged), in a grid read left to
  right, top to bottom, as JPEG (OpenAI serves ``spritesheet`` as JPEG); :func:`sheet_layout` says
  which frames and where, from the job's frame count and size alone;
* :func:`first_frame_png`: the frame a remix starts from.

Pure functions on mp4 bytes (our own outputs, H.264 in mp4); no HTTP, no store.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_TILES = 16
MAX_TILE_SIDE = 256
WEBP_QUALITY = 85
JPEG_QUALITY = 85


@dataclass(frozen=True)
class Variant:
    """One downloadable asset of a video: its media type and the file name suffix it is stored and sent with."""

    name: str
    media_type: str
    suffix: str


#: What ``GET /v1/videos/{id}/content?variant=`` serves (the OpenAI SDK's literal values).
VIDEO = Variant("video", "video/mp4", "mp4")
VARIANTS = {v.name: v for v in (VIDEO, Variant("thumbnail", "image/webp", "webp"),
                                Variant("spritesheet", "image/jpeg", "jpg"))}
#: The variants made from the mp4 (stored beside it once asked for).
STILLS = tuple(v for v in VARIANTS.values() if v is not VIDEO)


@dataclass(frozen=True)
class SheetLayout:
    """Where each sampled frame sits in a spritesheet."""

    frames: tuple[int, ...]  # the frame indices, in tile order
    columns: int
    rows: int
    tile_width: int
    tile_height: int

    @property
    def width(self) -> int:
        return self.columns * self.tile_width

    @property
    def height(self) -> int:
        return self.rows * self.tile_height

    def headers(self) -> dict[str, str]:
        """The layout as response headers, so a client can find a frame's tile without decoding anything else."""
        return {"x-spritesheet-columns": str(self.columns), "x-spritesheet-rows": str(self.rows),
                "x-spritesheet-tile-width": str(self.tile_width), "x-spritesheet-tile-height": str(self.tile_height),
                "x-spritesheet-frames": ",".join(map(str, self.frames))}


def sheet_layout(num_frames: int, width: int, height: int) -> SheetLayout:
    """The spritesheet of a ``num_frames``-frame ``width`` x ``height`` video (see the module docstring)."""
    n = max(1, num_frames)
    count = min(n, MAX_TILES)
    frames = tuple(round(i * (n - 1) / (count - 1)) if count > 1 else 0 for i in range(count))
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    scale = min(1.0, MAX_TILE_SIDE / max(width, height, 1))
    return SheetLayout(frames, columns, rows, max(1, round(width * scale)), max(1, round(height * scale)))


def thumbnail(mp4: bytes, num_frames: int) -> bytes:
    """The middle frame of a ``num_frames``-frame mp4, as WebP."""
    middle, first = _frames(mp4, [max(0, num_frames - 1) // 2, 0])
    if first is None:
        raise ValueError("the video has no frames")
    return _encode(middle if middle is not None else first, "WEBP", quality=WEBP_QUALITY)


def spritesheet(mp4: bytes, layout: SheetLayout) -> bytes:
    """The frames of ``layout`` in its grid, as JPEG (tiles of frames the file lacks stay black)."""
    from PIL import Image

    sheet = Image.new("RGB", (layout.width, layout.height))
    tiles = _frames(mp4, list(layout.frames), (layout.tile_width, layout.tile_height))
    for i, tile in enumerate(tiles):
        if tile is not None:
            sheet.paste(tile, ((i % layout.columns) * layout.tile_width, (i // layout.columns) * layout.tile_height))
    return _encode(sheet, "JPEG", quality=JPEG_QUALITY)


def first_frame_png(mp4: bytes) -> bytes:
    """The first frame of an mp4 as PNG (lossless: the remix starts from exactly the pixels the video shows)."""
    (frame,) = _frames(mp4, [0])
    if frame is None:
        raise ValueError("the video has no frames")
    return _encode(frame, "PNG")


def _frames(mp4: bytes, wanted: list[int], size: tuple[int, int] | None = None) -> list[Any]:
    """PIL images of frames ``wanted`` (indices in decoding order; repeats allowed), scaled to ``size`` when
    given; None for an index past the last frame. Decodes once, keeping only the frames asked for."""
    import av
    from PIL import Image

    want = set(wanted)
    last = max(wanted, default=-1)
    found: dict[int, Any] = {}
    with av.open(io.BytesIO(mp4), mode="r") as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in want:
                image = Image.fromarray(np.asarray(frame.to_ndarray(format="rgb24")))
                found[index] = image if size is None or image.size == size else image.resize(size, Image.LANCZOS)
            if index >= last:
                break
    return [found.get(i) for i in wanted]


def _encode(image: Any, fmt: str, **options: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()
