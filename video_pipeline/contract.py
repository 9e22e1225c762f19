"""The one place tensor names, data types and shapes live.

Every ``config.pbtxt`` in ``model_repository/`` must agree with this module
(``tests/unit/test_contract.py`` diffs them). Code refers to tensors through the
constants below, never through string literals.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# --- tensor names -----------------------------------------------------------
# Media tensors carry N >= 0 videos "packed" (video_pipeline.media.packing): frames of all
# videos concatenated along T on a shared canvas, one metadata JSON per video.
VIDEO = "video"  # BYTES [N]: raw container bytes (mp4/mov/mkv/webm/avi), one element per video
VIDEO_OPTIONS = "video_options"  # BYTES [1 or N]: JSON sampling/preprocessing options (optional); with N,
# an element's "path" names that video's file under video_decoder's media_root (its "video" element empty)
FRAME_LIST = "frame_list"  # video_options key: true when that "video" element is a frame list, a client's
# own stills (JPEG/PNG/WebP) in order, each as a 4-byte little-endian length then its bytes (Triton's BYTES
# serialisation; video_pipeline.media.frame_list). Sampled by the request's fps (default 1), num_frames,
# start/end, never by the decoder's defaults; sized by video_preprocessor like any video.
MEDIA_UUID = "uuid"  # video_options key and llm `messages` image-part key: the client's media uuid as the
# shim namespaces it ("<tenant tag>:<uuid>"). video_decoder records it as an alias of the video's content;
# an empty "video" element with a uuid is served from the cache (InvalidInput when nothing is cached).
FRAMES = "frames"  # UINT8 [T,H,W,3]: sampled RGB frames, packed
TIMESTAMPS = "timestamps"  # FP64 [T]: true presentation time of each frame, seconds from the first frame
FRAME_INDICES = "frame_indices"  # INT64 [T]: index of each frame in its video's frame sequence
VIDEO_METADATA = "video_metadata"  # BYTES [N]: JSON source metadata and sampling plan per video
VIDEO_FRAMES = "video_frames"  # UINT8 [T,H,W,3]: frames sized for the engine, packed
VIDEO_INFO = "video_info"  # BYTES [N]: JSON per video in the shape vLLM's Qwen-VL processors take

# llm: vllm_backend's names where they fit, so Triton's own tools can talk to it.
TEXT_INPUT = "text_input"  # BYTES [1]: a raw prompt, used verbatim (no chat template)
MESSAGES = "messages"  # BYTES [1]: JSON chat messages; the model's own chat template is applied
IMAGE = "image"  # BYTES [M]: encoded images (PNG/JPEG/WebP...), in the order image parts appear
AUDIO = "audio"  # BYTES [A]: encoded audio (WAV/MP3/FLAC/OGG/M4A... any container PyAV opens), in the order
# audio parts appear; llm decodes each to mono float32 at the model's feature-extractor rate
USE_AUDIO_IN_VIDEO = "use_audio_in_video"  # llm `messages` video-part key (bool): the video's own audio track
# goes to the engine with it, over the window its frames cover (vLLM's mm_processor_kwargs.use_audio_in_video);
# the track's span is in that video's video_info under AUDIO_SPAN
AUDIO_SPAN = "audio"  # video_info key: {"start", "end", "sampling_rate", "num_samples", ...} of the video's track
SAMPLING_PARAMETERS = "sampling_parameters"  # BYTES [1]: JSON (max_tokens, temperature, top_p, seed, ...)
STREAM = "stream"  # BOOL [1]: stream deltas (true) or one response per choice at the end
ABORT_REQUEST_ID = "abort_request_id"  # BYTES [1]: stop the running llm request with this id, nothing else
TEXT_OUTPUT = "text_output"  # BYTES [1]: text delta (stream) or the whole text
FINISH_REASON = "finish_reason"  # BYTES [1]: "" until the choice ends, then stop|length|abort
CHOICE_INDEX = "choice_index"  # UINT32 [1]: which of the n choices this response belongs to
NUM_INPUT_TOKENS = "num_input_tokens"  # UINT32 [1]: prompt tokens
NUM_OUTPUT_TOKENS = "num_output_tokens"  # UINT32 [1]: tokens generated so far for this choice
NUM_VIDEO_TOKENS = "num_video_tokens"  # UINT32 [1]: prompt tokens that stand for video
# llm given `video` (container bytes, paths, frame lists) runs video_media itself (BLS, inside Triton) and
# answers first one response holding only `video_info` (the JSON per video video_media gives), then text.
# Its media errors carry MEDIA_ERROR_PREFIX and the media model's Triton code, because a gRPC stream's
# in-band errors have no status: "media [UNSUPPORTED]: no decoder for the video codec (vp9)".
MEDIA_ERROR_PREFIX = "media"
# A request parameter (bool) asking the media models to write their errors that way too: BLS responses
# lose the error code in 2.51 (every error reads INTERNAL), so llm's BLS call sets it.
ERROR_CODE_IN_MESSAGE = "error_code_in_message"
_MEDIA_ERROR = re.compile(r"^media \[([A-Z_]+)\]: (.*)$", re.DOTALL)

# video_generator: a diffusers text/image-to-video pipeline (video_pipeline.generation).
PROMPT = "prompt"  # BYTES [1]: what to generate
GENERATION_PARAMETERS = "generation_parameters"  # BYTES [1]: JSON (width, height, num_frames, fps, seed, ...)
DESCRIBE = "describe"  # BOOL [1]: alone: answer the model's capabilities JSON in generation_info
STEP = "step"  # UINT32 [1]: denoising steps done so far
NUM_STEPS = "num_steps"  # UINT32 [1]: denoising steps in all
GENERATION_INFO = "generation_info"  # BYTES [1]: JSON: stage while running; the video's facts at the end


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
    backend: str = "python"  # "" for ensembles (platform "ensemble")


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
        # alone: answer the effective media settings and engine limits as one video_info element
        Tensor(DESCRIBE, "TYPE_BOOL", (1,), optional=True),
    ),
    outputs=(
        Tensor(VIDEO_FRAMES, "TYPE_UINT8", _FRAMES_DIMS),
        Tensor(VIDEO_INFO, "TYPE_STRING", (-1,)),
    ),
)

_LLM_INPUTS = (
    Tensor(TEXT_INPUT, "TYPE_STRING", (1,), optional=True),
    Tensor(MESSAGES, "TYPE_STRING", (1,), optional=True),
    Tensor(IMAGE, "TYPE_STRING", (-1,), optional=True),
    Tensor(SAMPLING_PARAMETERS, "TYPE_STRING", (1,), optional=True),
    Tensor(STREAM, "TYPE_BOOL", (1,), optional=True),
)
_LLM_OUTPUTS = (
    Tensor(TEXT_OUTPUT, "TYPE_STRING", (1,)),
    Tensor(FINISH_REASON, "TYPE_STRING", (1,)),
    Tensor(CHOICE_INDEX, "TYPE_UINT32", (1,)),
    Tensor(NUM_INPUT_TOKENS, "TYPE_UINT32", (1,)),
    Tensor(NUM_OUTPUT_TOKENS, "TYPE_UINT32", (1,)),
    Tensor(NUM_VIDEO_TOKENS, "TYPE_UINT32", (1,)),
)

LLM = ModelContract(
    name="llm",
    inputs=(
        *_LLM_INPUTS[:2],
        Tensor(VIDEO_FRAMES, "TYPE_UINT8", _FRAMES_DIMS, optional=True),
        Tensor(VIDEO_INFO, "TYPE_STRING", (-1,), optional=True),
        *_LLM_INPUTS[2:],
        Tensor(ABORT_REQUEST_ID, "TYPE_STRING", (1,), optional=True),
        # instead of video_frames + video_info: what video_media takes; llm decodes it inside Triton
        Tensor(VIDEO, "TYPE_STRING", (-1,), optional=True),
        Tensor(VIDEO_OPTIONS, "TYPE_STRING", (-1,), optional=True),
        Tensor(AUDIO, "TYPE_STRING", (-1,), optional=True),
    ),
    # video_info: only in the one response that answers a `video` input's media (never with text)
    outputs=(*_LLM_OUTPUTS, Tensor(VIDEO_INFO, "TYPE_STRING", (-1,))),
    decoupled=True,
)

_MEDIA_INPUTS = VIDEO_DECODER.inputs

# Decoupled: progress responses (step i of n) while denoising, then one holding the mp4 in `video`.
VIDEO_GENERATOR = ModelContract(
    name="video_generator",
    inputs=(
        Tensor(PROMPT, "TYPE_STRING", (1,), optional=True),
        Tensor(GENERATION_PARAMETERS, "TYPE_STRING", (1,), optional=True),
        Tensor(IMAGE, "TYPE_STRING", (1,), optional=True),
        Tensor(ABORT_REQUEST_ID, "TYPE_STRING", (1,), optional=True),
        Tensor(DESCRIBE, "TYPE_BOOL", (1,), optional=True),
    ),
    outputs=(
        Tensor(VIDEO, "TYPE_STRING", (1,)),
        Tensor(STEP, "TYPE_UINT32", (1,)),
        Tensor(NUM_STEPS, "TYPE_UINT32", (1,)),
        Tensor(GENERATION_INFO, "TYPE_STRING", (1,)),
    ),
    decoupled=True,
)

VIDEO_MEDIA = ModelContract(
    name="video_media",
    inputs=_MEDIA_INPUTS,
    outputs=VIDEO_PREPROCESSOR.outputs,
    backend="",
)

# Decoupled because its llm step is (Triton infers that for ensembles; the config does not say it).
VIDEO_LLM = ModelContract(
    name="video_llm",
    inputs=(*_MEDIA_INPUTS, *_LLM_INPUTS),
    outputs=_LLM_OUTPUTS,
    backend="",
)

MODELS: dict[str, ModelContract] = {
    m.name: m for m in (VIDEO_DECODER, VIDEO_PREPROCESSOR, LLM, VIDEO_MEDIA, VIDEO_LLM, VIDEO_GENERATOR)
}


def media_error_message(code: str, message: str) -> str:
    """An llm error that came from its media step, in the shape :func:`parse_media_error` reads."""
    return f"{MEDIA_ERROR_PREFIX} [{code}]: {message}"


def parse_media_error(message: str) -> tuple[str, str] | None:
    """(Triton code name, the media model's message) of an llm media error, None for any other error."""
    m = _MEDIA_ERROR.match(message)
    return (m[1], m[2]) if m else None


_PARAMETER = re.compile(r'parameters:\s*\{\s*key:\s*"([^"]+)"\s*value:\s*\{\s*string_value:\s*"([^"]*)"')


def config_parameters(config_text: str) -> dict[str, str]:
    """The ``parameters`` of a config.pbtxt in this repository's one-line style, as strings."""
    return dict(_PARAMETER.findall(config_text))
