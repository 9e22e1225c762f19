"""Frame lists (``data:video/jpeg;base64,<frame>,<frame>,...``) -> engine-ready frames.

The client already sampled these frames, so there is no container for the
decoder: the shim decodes the stills and runs the same preprocessing step the
video_preprocessor model runs (same pixel budget, patch factor and model pixel
bounds, read from that model's config), so the llm model sees them exactly as
it would see a decoded video.

As in vLLM, the frames are taken to be ``fps`` apart (``media_io_kwargs.video.fps``,
default 1). ``num_frames`` picks that many, spread uniformly; ``start``/``end``
select by those times.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from openai_frontend.media.urls import FrameList
from video_pipeline import contract as C
from video_pipeline.errors import InvalidInput, MediaTooLarge
from video_pipeline.media.options import VideoOptions
from video_pipeline.media.sampling import select_frames
from video_pipeline.steps import PreprocessorStep, json_tensor

DEFAULT_LIST_FPS = 1.0


def frame_list_to_video(frames: FrameList, options: dict[str, Any], step: PreprocessorStep,
                        ) -> tuple[np.ndarray, dict[str, Any]]:
    """(engine-sized frames [T,H,W,3], video_info) for one frame list, as video_media would answer."""
    if not frames.frames:
        raise InvalidInput("the frame list is empty")
    fps = float(options.get("fps") or DEFAULT_LIST_FPS)
    total = len(frames.frames)
    times = np.arange(total, dtype=np.float64) / fps
    # Sampling options in our semantics; fps sampling at the list's own rate keeps every frame.
    sampling = VideoOptions.from_dict({k: options[k] for k in ("num_frames", "fps", "max_frames", "start", "end")
                                       if options.get(k) is not None})
    if sampling.num_frames is None and sampling.fps is None:
        sampling = VideoOptions.from_dict({**sampling.to_dict(), "fps": fps})
    chosen = select_frames(times, 1.0 / fps, sampling)
    pictures = np.stack(_decode_all([frames.frames[i] for i in chosen], [int(i) for i in chosen]))
    height, width = int(pictures.shape[1]), int(pictures.shape[2])
    metadata = {
        "fps": fps,
        "duration": total / fps,
        "total_num_frames": total,
        "width": width,
        "height": height,
        "output_width": width,
        "output_height": height,
        "num_frames": int(len(chosen)),
        "video_backend": "jpeg_sequence",
    }
    pixel_options = {k: options[k] for k in ("min_pixels", "max_pixels") if options.get(k) is not None}
    out = step({
        C.FRAMES: pictures,
        C.TIMESTAMPS: times[chosen],
        C.FRAME_INDICES: chosen.astype(np.int64),
        C.VIDEO_METADATA: json_tensor([metadata]),
        C.VIDEO_OPTIONS: json_tensor([pixel_options]),
    })
    return out[C.VIDEO_FRAMES], json.loads(out[C.VIDEO_INFO][0])


def _decode_all(encoded: list[bytes], indices: list[int]) -> list[np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    out = []
    size = None
    for data, i in zip(encoded, indices, strict=True):
        try:
            with Image.open(io.BytesIO(data)) as img:
                img.load()
                rgb = np.asarray(img.convert("RGB"))
        except Image.DecompressionBombError as exc:
            raise MediaTooLarge(f"frame {i}: {exc}") from None
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise InvalidInput(f"frame {i} of the frame list is not a decodable image ({exc})") from None
        if size is None:
            size = rgb.shape
        elif rgb.shape != size:
            raise InvalidInput(f"frame {i} is {rgb.shape[1]}x{rgb.shape[0]} but frame 0 is {size[1]}x{size[0]}; "
                               "all frames of a list must have one size")
        out.append(rgb)
    return out
