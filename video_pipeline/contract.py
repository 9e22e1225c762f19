"""The one place tensor names, data types and shapes live.

Every ``config.pbtxt`` in ``model_repository/`` must agree with this module
(``tests/unit/test_contract.py`` diffs them). Code refers to tensors through the
constants below, never through string literals.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

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
IMAGE_EMBEDS = "image_embeds"  # BYTES [E]: one JSON per image_embeds part, vLLM's payload for it (a base64
# torch.save/.npy tensor, or an object of those and numeric arrays: Qwen-VL's image_grid_thw); "{}" with the
# image part's uuid names embeddings sent before with it. Instead of `image`, never with it; only when the
# llm's model.json sets enable_mm_embeds (vLLM's --enable-mm-embeds). llm errors name "image_embeds <i>".
USE_AUDIO_IN_VIDEO = "use_audio_in_video"  # llm `messages` video-part key (bool): the video's own audio track
# goes to the engine with it, over the window its frames cover (vLLM's mm_processor_kwargs.use_audio_in_video);
# the track's span is in that video's video_info under AUDIO_SPAN
AUDIO_SPAN = "audio"  # video_info key: {"start", "end", "sampling_rate", "num_samples", ...} of the video's track
SAMPLING_PARAMETERS = "sampling_parameters"  # BYTES [1]: JSON (max_tokens, temperature, top_p, seed, ...)
STREAM = "stream"  # BOOL [1]: stream deltas (true) or one response per choice at the end
CHAT_TEMPLATE_KWARGS = "chat_template_kwargs"  # BYTES [1]: JSON object, with `messages`: extra variables for
# the model's chat template (vLLM's chat_template_kwargs: enable_thinking, add_vision_id, add_generation_prompt
# (default true), continue_final_message ...); "chat_template" and "tokenize" are refused, as vLLM refuses them
TOKENIZE = "tokenize"  # BYTES [1]: JSON options {"add_special_tokens", "return_token_strs"} ({} : defaults); with
# text_input or messages (text only) nothing is generated: one response holds only `tokens`
TOKENS = "tokens"  # BYTES [1]: the answer to `tokenize`, vLLM's /tokenize shape as JSON:
# {"count", "max_model_len", "tokens": [ids...], "token_strs"?}; messages count as generation counts them
TOKEN_IDS = "token_ids"  # INT64 [-1]: alone: detokenize them; one response whose text_output is their text
TOOLS = "tools"  # BYTES [1]: JSON, with `messages`: {"tools": [OpenAI chat tools] (given to the chat template),
# "tool_choice": "none"|"auto"|"required"|{"type": "function", "function": {"name"}}, "parallel_tool_calls",
# "tool_call_parser": a vLLM --tool-call-parser name or null} (video_pipeline.engines.tools)
ABORT_REQUEST_ID = "abort_request_id"  # BYTES [1]: stop the running llm request with this id, nothing else
TEXT_OUTPUT = "text_output"  # BYTES [1]: text delta (stream) or the whole text
FINISH_REASON = "finish_reason"  # BYTES [1]: "" until the choice ends, then stop|length|abort
CHOICE_INDEX = "choice_index"  # UINT32 [1]: which of the n choices this response belongs to
NUM_INPUT_TOKENS = "num_input_tokens"  # UINT32 [1]: prompt tokens
NUM_OUTPUT_TOKENS = "num_output_tokens"  # UINT32 [1]: tokens generated so far for this choice
NUM_VIDEO_TOKENS = "num_video_tokens"  # UINT32 [1]: prompt tokens that stand for video
LOGPROBS = "logprobs"  # BYTES [1]: only when sampling_parameters ask for "logprobs": JSON, one entry per new token
# of the response (all of its text's tokens when not streaming): {"id", "token", "logprob", "top": [{"id",
# "token", "logprob"}, ...]}, top entries most likely first
TOOL_CALLS = "tool_calls"  # BYTES [1]: beside text_output when `tools` parse the output and calls were found:
# JSON list in OpenAI's shapes (streamed: delta calls with "index"; else whole {"id", "type", "function"}); the
# text_output then holds only the content around them, and finish_reason is "tool_calls" as vLLM sets it
# llm given `video` (container bytes, paths, frame lists) runs video_media itself (BLS, inside Triton) and
# answers first one response holding only `video_info` (the JSON per video video_media gives), then text.
# Its media errors are about the videos (ErrorDoc.kind "video", with the index when the decoder knows it).

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
        Tensor(IMAGE_EMBEDS, "TYPE_STRING", (-1,), optional=True),
        Tensor(CHAT_TEMPLATE_KWARGS, "TYPE_STRING", (1,), optional=True),
        Tensor(TOKENIZE, "TYPE_STRING", (1,), optional=True),
        Tensor(TOKEN_IDS, "TYPE_INT64", (-1,), optional=True),
        Tensor(TOOLS, "TYPE_STRING", (1,), optional=True),
    ),
    # video_info: only in the one response that answers a `video` input's media (never with text);
    # tokens: only in the one response that answers a `tokenize` request;
    # logprobs: beside text_output when the request's sampling_parameters ask for them
    outputs=(*_LLM_OUTPUTS, Tensor(VIDEO_INFO, "TYPE_STRING", (-1,)), Tensor(TOKENS, "TYPE_STRING", (1,)),
             Tensor(LOGPROBS, "TYPE_STRING", (1,)), Tensor(TOOL_CALLS, "TYPE_STRING", (1,))),
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

# --- errors across the boundary ----------------------------------------------
# A Triton error carries a message and a code, and the code does not survive the way to the shim: a gRPC
# stream's in-band errors have no status, and 2.51's BLS responses read INTERNAL whatever the model said
# (pb_utils.TritonError takes nothing else). So every error our models answer is its readable message, then
# ERROR_MARK, then one JSON object, the ErrorDoc, the one place the error's structure travels:
#   video 1: no decoder for the video codec (vp9) #vlt-error {"message": "video 1: no decoder for the video
#   codec (vp9)", "error": "UnsupportedMedia", "triton_code": "UNSUPPORTED", "status": 415, "code": null,
#   "param": null, "kind": "video", "index": 1, "transient": false}
# Triton clients can show the text before the mark as it is, or read the document (parse_error). An
# ensemble puts its own words in front ("in ensemble 'video_media', ..."); the document is unchanged.
ERROR_MARK = " #vlt-error "


@dataclass(frozen=True)
class ErrorDoc:
    """One error of our models as data (video_pipeline.errors.PipelineError.to_doc / errors.from_doc)."""

    message: str  # what the client reads, naming the item ("video 1: ...") when there is one
    error: str = "PipelineError"  # its class in video_pipeline.errors (InvalidInput, MediaTooLarge, ...)
    triton_code: str = "INTERNAL"  # pb_utils.TritonError's code name (INVALID_ARG, UNSUPPORTED, UNAVAILABLE ...)
    status: int = 500  # the HTTP status the OpenAI shim answers
    code: str | None = None  # OpenAI's error code (invalid_value, invalid_type, context_length_exceeded ...)
    param: str | None = None  # the request parameter at fault, as the model names it (temperature, max_tokens)
    kind: str | None = None  # the media item it is about: video | image | audio | image_embeds
    index: int | None = None  # which item of that kind, counted in request order (None: not one of them)
    transient: bool = False  # the same request may succeed later (the engine or server was unavailable)

    def encode(self) -> str:
        """The Triton error message: the readable text, ERROR_MARK, the JSON document (its "#" escaped, so the
        last ERROR_MARK of a message is always the document's, whatever the text quotes)."""
        document = json.dumps(asdict(self), separators=(",", ":")).replace("#", "\\u0023")
        return f"{self.message}{ERROR_MARK}{document}"


_ERROR_FIELDS = {f.name for f in fields(ErrorDoc)}


def parse_error(message: str) -> ErrorDoc | None:
    """The document in a Triton error message our models wrote; None for any other message (Triton's own)."""
    at = message.rfind(ERROR_MARK)
    if at < 0:
        return None
    try:
        raw = json.loads(message[at + len(ERROR_MARK):])
    except ValueError:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("message"), str):
        return None
    return ErrorDoc(**{k: v for k, v in raw.items() if k in _ERROR_FIELDS})  # fields a newer model added: skipped


def config_parameters(config_text: str) -> dict[str, str]:
    """The ``parameters`` of a config.pbtxt's text, as strings (parsed as a ModelConfig message)."""
    from video_pipeline import model_config

    return model_config.parameters(model_config.parse(config_text))
