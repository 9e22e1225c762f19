"""The one place tensor names, data types and shapes live.

Every ``config.pbtxt`` in ``model_repository/`` must agree with this module
(``tests/unit/test_contract.py`` diffs them). Code refers to tensors through the
constants below, never through string literals.
"""

from __future__ import annotations

import functools
import json
import typing
from collections.abc import Iterable, Mapping
from dataclasses import Field, asdict, dataclass, field, fields, replace
from typing import Any, Self

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
MEDIA_PATH = "path"  # video_options key: the video's file under video_decoder's media_root (its "video" element
# empty): config parameter media_root, or env VLT_DECODER_MEDIA_ROOT when that is empty; neither: paths refused
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


# --- JSON payloads -----------------------------------------------------------------------------------------
# The JSON objects in video_options, video_metadata and video_info, one frozen dataclass each: a field's name is
# its JSON key, written nowhere else (tests/unit/test_contract.py scans the code for keys spelled outside this
# module), and to_dict / from_dict are the one serializer pair. None is "absent": to_dict leaves it out and
# from_dict reads a missing key as None, so a partial document (a test's, an older model's, a client's calling
# llm directly) reads as it is, and a payload with only some fields set is that part of a document:
# {**doc, **VideoMetadata(num_frames=8).to_dict()} sets one key. Values stay as the JSON gave them; the code
# that uses one checks it (media.options.VideoOptions checks and coerces the sampling options).

_DEFAULTABLE = {"defaultable": True}  # VideoOptionsDoc: config.pbtxt "default_<key>" may set its default
_WHERE = {"where": True}  # VideoOptionsDoc: where the video is or what its bytes are, not how to sample it
_VLLM = {"vllm": True}  # VideoInfo: a key vLLM's Qwen-VL processors read from a pre-sampled video's metadata
_DECODER = {"decoder": True}  # SamplingPlan: the decoder's part, every key present (null: does not apply)


class _Payload:
    """A JSON object as a frozen dataclass: the base of the payloads below."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: every field that is not None, under its own name, in field order."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)  # type: ignore[arg-type]
                if getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """The payload of a JSON object; keys it does not know are skipped, missing ones are None."""
        if not isinstance(data, Mapping):
            raise TypeError(f"a {cls.__name__} is a JSON object, not {type(data).__name__}")
        kwargs: dict[str, Any] = {}
        for name, nested in _fields_of(cls).items():
            value = data.get(name)
            if nested is not None:  # a payload inside: parsed too (anything but an object reads as absent)
                value = nested.from_dict(value) if isinstance(value, Mapping) else None
            kwargs[name] = value
        return cls(**kwargs)

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """Its JSON keys, in field order."""
        return _keys(cls)


def _keys(cls: type, mark: Mapping[str, bool] | None = None) -> tuple[str, ...]:
    """The JSON keys of a payload class, only those whose field carries ``mark`` when given."""
    return tuple(f.name for f in fields(cls) if mark is None or _marked(f, mark))


def _marked(f: Field[Any], mark: Mapping[str, bool]) -> bool:
    return all(f.metadata.get(k) == v for k, v in mark.items())


def _plain(value: Any) -> Any:
    return value.to_dict() if isinstance(value, _Payload) else value


@functools.cache
def _fields_of(cls: type) -> dict[str, type[_Payload] | None]:
    """Each field of a payload class, with the payload class it holds (None: a plain JSON value)."""
    hints = typing.get_type_hints(cls)
    out: dict[str, type[_Payload] | None] = {}
    for f in fields(cls):
        inner = [t for t in typing.get_args(hints[f.name]) if isinstance(t, type) and issubclass(t, _Payload)]
        out[f.name] = inner[0] if inner else None
    return out


def refuse_unknown(data: Mapping[Any, Any], known: Iterable[str], what: str = "video option") -> None:
    """InvalidInput naming the keys of ``data`` that are not ``known`` (and the known ones), if any."""
    known = sorted(known)
    unknown = sorted(str(k) for k in set(data) - set(known))
    if unknown:
        from video_pipeline.errors import InvalidInput  # errors imports this module

        raise InvalidInput(f"unknown {what}(s): {', '.join(unknown)}; known: {', '.join(known)}")


@dataclass(frozen=True)
class VideoOptionsDoc(_Payload):
    """One video_options element as a client sends it: None is "not given", so the media models' defaults
    apply (an operator's config.pbtxt default_<key>, the served model's frame cap). Unknown keys are refused.
    media.options.VideoOptions is the same sampling options resolved: checked, defaults filled in."""

    num_frames: int | None = None  # exactly this many frames (with fps: at most this many)
    fps: float | None = field(default=None, metadata=_DEFAULTABLE)  # one frame every 1/fps s
    max_frames: int | None = field(default=None, metadata=_DEFAULTABLE)  # cap of fps sampling
    start: float | None = None  # the window sampled, seconds: [start, end)
    end: float | None = None
    mode: str | None = None  # exact | keyframe
    keyframe_tolerance: float | None = None  # keyframe mode: how far (s) a keyframe may stand in
    min_pixels: int | None = field(default=None, metadata=_DEFAULTABLE)  # the pixel budget, as the model reads it
    max_pixels: int | None = field(default=None, metadata=_DEFAULTABLE)
    patch_factor: int | None = None  # must equal the served model's patch size x merge when given
    resize: bool | None = None  # false: the decoder keeps the native size
    path: str | None = field(default=None, metadata=_WHERE)  # MEDIA_PATH
    frame_list: bool | None = field(default=None, metadata=_WHERE)  # FRAME_LIST
    uuid: str | None = field(default=None, metadata=_WHERE)  # MEDIA_UUID

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """A client's options document; InvalidInput for anything but an object, or a key it does not know."""
        if not isinstance(data, Mapping):
            from video_pipeline.errors import InvalidInput  # errors imports this module

            raise InvalidInput(f"video options must be a JSON object, got {type(data).__name__}")
        refuse_unknown(data, cls.keys())
        return super().from_dict(data)

    @classmethod
    def defaultable(cls) -> tuple[str, ...]:
        """The options whose default an operator may set (video_decoder's, video_preprocessor's
        config.pbtxt parameter ``default_<key>``)."""
        return _keys(cls, _DEFAULTABLE)

    def sampling(self) -> VideoOptionsDoc:
        """Only how to sample and size the video (no path, frame_list or uuid)."""
        return replace(self, **dict.fromkeys(_keys(type(self), _WHERE)))


@dataclass(frozen=True)
class SamplingPlan(_Payload):
    """How a video's frames were chosen and sized, defaults filled in: the "sampling" of video_metadata (the
    decoder's part, media.sampling.sampling_plan) and of video_info (the preprocessor adds its pixel budget)."""

    rule: str | None = field(default=None, metadata=_DECODER)  # num_frames | fps
    fps: float | None = field(default=None, metadata=_DECODER)  # the rate in force (null: the num_frames rule)
    num_frames: int | None = field(default=None, metadata=_DECODER)  # as asked
    max_frames: int | None = field(default=None, metadata=_DECODER)  # the cap in force (fps rule)
    capped_by: str | None = field(default=None, metadata=_DECODER)  # num_frames | max_frames | frames | null
    start: float | None = field(default=None, metadata=_DECODER)
    end: float | None = field(default=None, metadata=_DECODER)
    mode: str | None = field(default=None, metadata=_DECODER)  # exact | keyframe
    min_pixels: int | None = None  # the pixel budget that applied, the model's bounds filled in
    max_pixels: int | None = None
    pixel_budget: str | None = None  # per frame | all frames together | fixed size
    patch_factor: int | None = None  # the served model's patch size x merge

    def to_dict(self) -> dict[str, Any]:
        """Once the decoder planned (``rule`` set) every key of its part, nulls included; the rest when set."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None or (self.rule is not None and _marked(f, _DECODER))}


@dataclass(frozen=True)
class VideoMetadata(_Payload):
    """One video_metadata element: what video_decoder found in a video and took from it."""

    video_backend: str | None = None  # pyav | nvdec | jpeg_sequence (a frame list)
    container: str | None = None  # FFmpeg's demuxer name
    codec: str | None = None
    width: int | None = None  # display size of the source (its rotation applied)
    height: int | None = None
    rotation: int | None = None  # clockwise degrees the coded frames were turned
    fps: float | None = None  # of the source
    duration: float | None = None  # seconds
    total_num_frames: int | None = None  # of the source
    frames_indices: list[int] | None = None  # each sampled frame's index in the source
    output_width: int | None = None  # size of the video's frames in `frames`
    output_height: int | None = None
    mode: str | None = None  # exact | keyframe
    keyframe_snapped: list[bool] | None = None  # per frame: a keyframe (or a frame near one) stood in
    indexed: str | None = None  # whole | window: how much of the stream was indexed
    sampling: SamplingPlan | None = None
    cache: str | None = None  # hit | miss | off: whether the decoder's media cache served it
    cache_key: str | None = None  # that cache's key (bytes and every option); vLLM's uuid derives from it
    num_frames: int | None = None  # the video's frames in `frames` (packed)


@dataclass(frozen=True)
class VideoInfo(_Payload):
    """One video_info element: a video as the engine takes it, in the shape vLLM's Qwen-VL processors read
    (the _VLLM keys, engines.types.VideoInput.as_vllm), and its sampling plan for clients (video_plan)."""

    fps: float | None = field(default=None, metadata=_VLLM)  # of the source
    duration: float | None = field(default=None, metadata=_VLLM)
    total_num_frames: int | None = field(default=None, metadata=_VLLM)
    frames_indices: list[int] | None = field(default=None, metadata=_VLLM)
    video_backend: str | None = field(default=None, metadata=_VLLM)
    do_sample_frames: bool | None = field(default=None, metadata=_VLLM)  # false: already sampled
    timestamps: list[float] | None = None  # each frame's true time, seconds from the first frame
    width: int | None = None  # size of the video's frames in `video_frames`
    height: int | None = None
    num_frames: int | None = None
    num_video_tokens: int | None = None  # prompt tokens the video costs
    sampling: SamplingPlan | None = None
    cache: str | None = None  # hit | miss | off
    uuid: str | None = None  # vLLM's multi_modal_uuid of these frames
    audio: Mapping[str, Any] | None = None  # AUDIO_SPAN: media.audio's span of the video's own track

    @classmethod
    def vllm_keys(cls) -> tuple[str, ...]:
        """The keys vLLM's processors read from a pre-sampled video's metadata (all that reach the engine)."""
        return _keys(cls, _VLLM)
