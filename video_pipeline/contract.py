"""The one place tensor names, data types and shapes live.

Every ``config.pbtxt`` in ``model_repository/`` must agree with this module
(``tests/unit/test_contract.py`` diffs them). Code refers to tensors through the
constants below, never through string literals.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- tensor names -----------------------------------------------------------
# Media tensors carry N >= 0 videos "packed" (video_pipeline.media.packing): frames of all
# videos concatenated along T on a shared canvas, one metadata JSON per video.
VIDEO = "video"  # BYTES [N]: raw container bytes (mp4/mov/mkv/webm/avi), one element per video
VIDEO_OPTIONS = "video_options"  # BYTES [1 or N]: JSON sampling/preprocessing options (optional)
FRAMES = "frames"  # UINT8 [T,H,W,3]: sampled RGB frames, packed
TIMESTAMPS = "timestamps"  # FP64 [T]: true presentation time of each frame, seconds from the first frame
FRAME_INDICES = "frame_indices"  # INT64 [T]: index of each frame in its video's frame sequence
VIDEO_METADATA = "video_metadata"  # BYTES [N]: JSON source metadata and sampling plan per video
VIDEO_FRAMES = "video_frames"  # UINT8 [T,H,W,3]: frames sized for the engine, packed
VIDEO_INFO = "video_info"  # BYTES [N]: JSON per video in the shape vLLM's Qwen-VL processors take


@dataclass(frozen=True)
class Tensor:
    """One input or output of a Triton model."""

    name: str
    dtype: str  # Triton's config spelling, e.g. "TYPE_UINT8"
    dims: tuple[int, ...]
    optional: bool = False


@dataclass(frozen=True)
class ModelContract:
    """The public interface of one model in ``model_repository/``."""

    name: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    decoupled: bool = False
    backend: str = "python"  # or "" for platform ensembles


_FRAMES_DIMS = (-1, -1, -1, 3)

VIDEO_DECODER = ModelContract(
    name="video_decoder",
    inputs=(
        Tensor(VIDEO, "TYPE_STRING", (-1,), optional=True),
        Tensor(VIDEO_OPTIONS, "TYPE_STRING", (-1,), optional=True),
    ),
    outputs=(
        Tensor(FRAMES, "TYPE_UINT8", _FRAMES_DIMS),
        Tensor(TIMESTAMPS, "TYPE_FP64", (-1,)),
        Tensor(FRAME_INDICES, "TYPE_INT64", (-1,)),
        Tensor(VIDEO_METADATA, "TYPE_STRING", (-1,)),
    ),
)

VIDEO_PREPROCESSOR = ModelContract(
    name="video_preprocessor",
    inputs=(
        Tensor(FRAMES, "TYPE_UINT8", _FRAMES_DIMS, optional=True),
        Tensor(TIMESTAMPS, "TYPE_FP64", (-1,), optional=True),
        Tensor(FRAME_INDICES, "TYPE_INT64", (-1,), optional=True),
        Tensor(VIDEO_METADATA, "TYPE_STRING", (-1,), optional=True),
        Tensor(VIDEO_OPTIONS, "TYPE_STRING", (-1,), optional=True),
    ),
    outputs=(
        Tensor(VIDEO_FRAMES, "TYPE_UINT8", _FRAMES_DIMS),
        Tensor(VIDEO_INFO, "TYPE_STRING", (-1,)),
    ),
)

MODELS: dict[str, ModelContract] = {m.name: m for m in (VIDEO_DECODER, VIDEO_PREPROCESSOR)}
