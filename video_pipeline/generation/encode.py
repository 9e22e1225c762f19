"""Generated frames -> an H.264 mp4 (PyAV), and the reference image -> a PIL image."""

from __future__ import annotations

import io
import os
import tempfile
from fractions import Fraction

import numpy as np

from video_pipeline.errors import InvalidInput, MediaTooLarge

#: x264 settings: visually lossless for generated video, and a moov atom up front so players (and
#: Range requests) can start before the whole file has arrived; pipeline.json's "encoder" overrides
#: any of them. The same seed gives the same frames; their mp4 is the same file almost always, but
#: x264 here (even with threads=1) now and then rounds a few pixels of a small video differently.
X264_OPTIONS = {"crf": "18", "preset": "medium", "movflags": "+faststart"}


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Pipeline output (float in [0, 1], or uint8) -> uint8 RGB ``[T, H, W, 3]``."""
    arr = np.asarray(frames)
    if arr.ndim == 5:  # [batch, T, H, W, 3]: one video per request here
        arr = arr[0]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected frames [T, H, W, 3], got shape {arr.shape}")
    if arr.dtype != np.uint8:
        arr = (np.clip(arr.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return np.ascontiguousarray(arr)


def encode_mp4(frames: np.ndarray, fps: int | float | Fraction, options: dict[str, str] | None = None) -> bytes:
    """uint8 RGB frames ``[T, H, W, 3]`` -> mp4 bytes (H.264, yuv420p) at ``fps``."""
    import av

    t, h, w, _ = frames.shape
    if t == 0 or h % 2 or w % 2:
        raise InvalidInput(f"cannot encode {t} frame(s) of {w}x{h}: H.264 needs at least one frame of even size")
    opts = {**X264_OPTIONS, **(options or {})}
    movflags = opts.pop("movflags", "")
    # A real file, not BytesIO: +faststart rewrites the file by name once the moov atom is known.
    fd, path = tempfile.mkstemp(prefix="vlt-gen-", suffix=".mp4")
    os.close(fd)
    try:
        with av.open(path, mode="w", format="mp4", options={"movflags": movflags} if movflags else {}) as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.options = opts
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)


def load_image(data: bytes, where: str = "input_reference") -> object:
    """Encoded image bytes -> an RGB ``PIL.Image``; refuses what is not an image and decompression bombs."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise MediaTooLarge(f"{where}: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidInput(f"{where}: not a decodable image ({exc})") from None


def probe_mp4(data: bytes) -> dict[str, object]:
    """What a player sees in an mp4: container, codec, size, frame rate and the frames it decodes."""
    import av

    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        decoded = sum(1 for _ in container.decode(stream))
        return {"container": container.format.name, "codec": stream.codec_context.name, "width": stream.width,
                "height": stream.height, "fps": stream.average_rate, "frames": decoded,
                "pix_fmt": stream.codec_context.pix_fmt}
