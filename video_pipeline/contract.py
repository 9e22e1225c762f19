"""The one place tensor names, data types and shapes live.

Every ``config.pbtxt`` in ``model_repository/`` must agree with this module
(``tests/unit/test_contract.py`` diffs them). Code refers to tensors through the
constants below, never through string literals.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- tensor names -----------------------------------------------------------
VIDEO = "video"  # BYTES [1]: raw container bytes (mp4/mov/mkv/webm/avi)
VIDEO_OPTIONS = "video_options"  # BYTES [1]: JSON sampling/preprocessing options (optional)
FRAMES = "frames"  # UINT8 [T,H,W,3]: sampled RGB frames
TIMESTAMPS = "timestamps"  # FP64 [T]: true presentation time of each frame, seconds from stream start
FRAME_INDICES = "frame_indices"  # INT64 [T]: index of each frame in the source's frame sequence
VIDEO_METADATA = "video_metadata"  # BYTES [1]: JSON source metadata and the sampling plan
VIDEO_FRAMES = "video_frames"  # UINT8 [T,H,W,3]: frames resized for the engine
VIDEO_INFO = "video_info"  # BYTES [1]: JSON metadata in the shape vLLM's Qwen-VL processors take


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
        Tensor(VIDEO, "TYPE_STRING", (1,)),
        Tensor(VIDEO_OPTIONS, "TYPE_STRING", (1,), optional=True),
    ),
    outputs=(
        Tensor(FRAMES, "TYPE_UINT8", _FRAMES_DIMS),
        Tensor(TIMESTAMPS, "TYPE_FP64", (-1,)),
        Tensor(FRAME_INDICES, "TYPE_INT64", (-1,)),
        Tensor(VIDEO_METADATA, "TYPE_STRING", (1,)),
    ),
)

VIDEO_PREPROCESSOR = ModelContract(
    name="video_preprocessor",
    inputs=(
        Tensor(FRAMES, "TYPE_UINT8", _FRAMES_DIMS),
        Tensor(TIMESTAMPS, "TYPE_FP64", (-1,)),
        Tensor(FRAME_INDICES, "TYPE_INT64", (-1,)),
        Tensor(VIDEO_METADATA, "TYPE_STRING", (1,)),
        Tensor(VIDEO_OPTIONS, "TYPE_STRING", (1,), optional=True),
    ),
    outputs=(
        Tensor(VIDEO_FRAMES, "TYPE_UINT8", _FRAMES_DIMS),
        Tensor(VIDEO_INFO, "TYPE_STRING", (1,)),
    ),
)

MODELS: dict[str, ModelContract] = {m.name: m for m in (VIDEO_DECODER, VIDEO_PREPROCESSOR)}
