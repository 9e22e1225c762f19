"""POST /v1/chat/completions: the request shapes we accept, and their conversation.

Content parts: ``text``, ``image_url`` and ``video_url`` (the vLLM/LMDeploy
shape ``{"type": "video_url", "video_url": {"url": ...}}``), with our own
``start``/``end`` seconds on a video part or inside its ``video_url``. As in vLLM, a media
part may carry a ``uuid`` (the item's cache identity), and a part with a ``uuid`` and no
media (``"image_url": null``) names media sent earlier with that uuid.

Audio: OpenAI's ``input_audio`` (``{"data": <base64>, "format": "wav"|"mp3"|...}``) and vLLM's
``audio_url`` (``{"url": ...}``: data:, http(s), file ids, confined file://), decoded by the llm
model at the rate of the model's feature extractor. ``mm_processor_kwargs.use_audio_in_video``
(vLLM's) sends each video's own audio track with it, for audio-visual models.

Files: OpenAI's ``{"type": "file", "file": {"file_id" | "file_data", "filename"}}`` part, read as the
video, image or audio the file is (the Files API's record of it, or the data's MIME type).

Tools: function ``tools``, ``tool_choice`` and ``parallel_tool_calls``; assistant messages replay their
``tool_calls`` and ``role: "tool"`` messages answer them by ``tool_call_id`` (openai_frontend.tools).

Embeddings: vLLM's ``image_embeds`` part (``{"type": "image_embeds", "image_embeds": <base64 tensor> |
{"image_embeds": ..., "image_grid_thw": ...}, "uuid": ...}``), only when the llm's model.json sets
``enable_mm_embeds``; the llm model decodes and checks the tensors (video_pipeline.media.embeds).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field

from openai_frontend.errors import OpenAIError
from openai_frontend.media.options import part_window
from openai_frontend.media.urls import file_data_url, stored_file_id
from openai_frontend.sampling import (
    Sampling,
    checked_logit_bias,
    logprobs_count,
    merged_structured_outputs,
    structured_from_format,
)
from openai_frontend.schemas.common import (
    InputAudio,
    SamplingFields,
    Strict,
    audio_data_url,
    media_url,
    media_uuid,
    refuse_if,
    template_kwargs,
    validate_part,
)
from openai_frontend.service import AudioRef, Conversation, EmbedsRef, FileRef, ImageRef, Part, Turn, VideoRef
from openai_frontend.tools import chat_tool_choice, chat_tools, tool_call_params, tool_content, tools_request
from video_pipeline.engines.sampling import STRUCTURED_OUTPUTS

PART_TYPES = ("text", "image_url", "video_url", "input_audio", "audio_url", "image_embeds", "file")


class TextPart(Strict):
    type: Literal["text"]
    text: str


class ImageURL(Strict):
    url: str
    detail: Literal["auto", "low", "high"] | None = None  # accepted; the model's processor decides


class ImagePart(Strict):
    type: Literal["image_url"]
    image_url: ImageURL | str | None = None
    uuid: str | None = None  # vLLM's: the item's cache identity; alone, it names cached media


class VideoURL(Strict):
    url: str
    start: float | None = None
    end: float | None = None


class VideoPart(Strict):
    type: Literal["video_url"]
    video_url: VideoURL | str | None = None
    start: float | None = None
    end: float | None = None
    uuid: str | None = None


class InputAudioPart(Strict):
    type: Literal["input_audio"]
    input_audio: InputAudio | None = None
    uuid: str | None = None  # as on image and video parts: alone, it names audio sent before with it


class AudioURL(Strict):
    url: str


class AudioURLPart(Strict):
    type: Literal["audio_url"]
    audio_url: AudioURL | str | None = None
    uuid: str | None = None


class ImageEmbedsPart(Strict):
    type: Literal["image_embeds"]
    image_embeds: str | dict[str, str | list[float | int]] | None = None
    uuid: str | None = None


class FileData(Strict):
    file_id: str | None = None
    file_data: str | None = None  # base64 (or a data: URL)
    filename: str | None = None


class FilePart(Strict):
    """OpenAI's file part: an uploaded file (or inline data), read as the video, image or audio it is."""

    type: Literal["file"]
    file: FileData


_PART_MODELS: dict[str, type[Strict]] = {"text": TextPart, "image_url": ImagePart, "video_url": VideoPart,
                                         "input_audio": InputAudioPart, "audio_url": AudioURLPart,
                                         "image_embeds": ImageEmbedsPart, "file": FilePart}


class ChatMessage(Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None  # accepted; chat templates do not use it
    tool_calls: list[Any] | None = None  # an assistant's calls, replayed (openai_frontend.tools)
    tool_call_id: str | None = None  # a tool message: the call it answers
    refusal: str | None = None  # accepted when a client replays one of our answers


class StreamOptions(Strict):
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None  # vLLM: usage on every chunk
    include_obfuscation: bool | None = None  # accepted; no obfuscation padding is sent


class ChatCompletionRequest(SamplingFields):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    logit_bias: dict[str, float] | None = None
    # vLLM's extras: its structured_outputs object (json / regex / choice / grammar / json_object ...),
    # and the tokens sampling may (or may not) pick
    structured_outputs: dict[str, Any] | None = None
    allowed_token_ids: list[int] | None = None
    bad_words: list[str] | None = None
    # vLLM's chat extras: variables for the model's chat template, and how it ends the prompt
    chat_template_kwargs: dict[str, Any] | None = None
    add_generation_prompt: bool | None = None
    continue_final_message: bool | None = None
    # function tools (openai_frontend.tools); parallel_tool_calls is a SamplingFields field
    tools: list[Any] | None = None
    tool_choice: Any = None

    def check_supported(self) -> None:
        refuse_if(self.stream_options is not None and not self.stream, "stream_options",
                  "is only allowed when stream is true")

    def generation_sampling(self) -> dict[str, Any]:
        newer = self.max_completion_tokens is not None  # it wins over the deprecated max_tokens, as in OpenAI's API
        max_tokens = self.max_completion_tokens if newer else self.max_tokens
        # the llm's refusals of max_tokens name the field the client set
        sampling = Sampling(self.sampling(max_tokens, self.n),
                            {"max_tokens": "max_completion_tokens" if newer else "max_tokens"})
        # response_format and vLLM's structured_outputs, as vLLM merges them; vLLM compiles the constraint
        constraint = None if self.response_format is None else structured_from_format(
            self.response_format, "response_format", "json_schema")
        sampling.put(STRUCTURED_OUTPUTS, merged_structured_outputs(self.structured_outputs, constraint),
                     "response_format" if constraint is not None else STRUCTURED_OUTPUTS)
        sampling.put("logprobs", logprobs_count(self.logprobs, self.top_logprobs),
                     "top_logprobs" if self.top_logprobs is not None else "logprobs")
        sampling.put("logit_bias", checked_logit_bias(self.logit_bias), "logit_bias")
        sampling.put("allowed_token_ids", self.allowed_token_ids, "allowed_token_ids")
        sampling.put("bad_words", self.bad_words, "bad_words")
        return sampling

    def conversation(self) -> Conversation:
        tool_defs = chat_tools(self.tools) if self.tools is not None else []
        tools = tools_request(tool_defs, chat_tool_choice(self.tool_choice, tool_defs), self.parallel_tool_calls)
        turns = []
        for i, message in enumerate(self.messages):
            where = f"messages[{i}]"
            if message.role == "tool" or message.tool_calls is not None or message.tool_call_id is not None:
                turns.append(_tool_turn(message, where))
                continue
            if message.content is None:
                raise OpenAIError(400, f"{where}.content: required", param=f"{where}.content",
                                  code="missing_required_parameter")
            if isinstance(message.content, str):
                turns.append(Turn(message.role, message.content))
                continue
            parts = [_part(p, f"{where}.content[{j}]") for j, p in enumerate(message.content)]
            turns.append(Turn(message.role, parts))
        return Conversation(turns, template_kwargs(self.chat_template_kwargs, self.add_generation_prompt,
                                                   self.continue_final_message),
                            tools=tools).with_video_audio(self.use_audio_in_video())


def _tool_turn(message: ChatMessage, where: str) -> Turn:
    """A tool message (the result of the call its tool_call_id names), or an assistant's replayed calls."""
    if message.role == "tool":
        if message.tool_calls is not None:
            raise OpenAIError(400, f"{where}.tool_calls: only assistant messages carry tool_calls",
                              param=f"{where}.tool_calls", code="invalid_value")
        if not message.tool_call_id:
            raise OpenAIError(400, f"{where}.tool_call_id: required (the id of the call this message answers)",
                              param=f"{where}.tool_call_id", code="missing_required_parameter")
        if message.content is None:
            raise OpenAIError(400, f"{where}.content: required", param=f"{where}.content",
                              code="missing_required_parameter")
        return Turn("tool", tool_content(message.content, f"{where}.content"), {"tool_call_id": message.tool_call_id})
    if message.tool_call_id is not None:
        raise OpenAIError(400, f"{where}.tool_call_id: only tool messages carry a tool_call_id",
                          param=f"{where}.tool_call_id", code="invalid_value")
    if message.role != "assistant":
        raise OpenAIError(400, f"{where}.tool_calls: only assistant messages carry tool_calls",
                          param=f"{where}.tool_calls", code="invalid_value")
    calls = tool_call_params(message.tool_calls, f"{where}.tool_calls")
    if message.content is None and not calls:
        raise OpenAIError(400, f"{where}.content: required (or give tool_calls)", param=f"{where}.content",
                          code="missing_required_parameter")
    content = "" if message.content is None else tool_content(message.content, f"{where}.content")
    return Turn("assistant", content, {"tool_calls": calls} if calls else {})


def embeds_ref(payload: str | dict[str, Any] | None, uuid: str | None, where: str) -> EmbedsRef:
    """An ``image_embeds`` part as the llm model takes it (one JSON document: vLLM's payload); a part
    with a uuid and no payload names embeddings sent before with that uuid."""
    param = f"{where}.image_embeds"
    if uuid is not None and not uuid:
        raise OpenAIError(400, f"{where}.uuid: must not be empty", param=f"{where}.uuid", code="invalid_value")
    if payload is None or payload == "" or payload == {}:
        if uuid is None:
            raise OpenAIError(400, f"{param}: required (or give a uuid of embeddings sent before)", param=param,
                              code="missing_required_parameter")
        return EmbedsRef(document=b"{}", where=param, uuid=uuid)
    if isinstance(payload, dict) and "image_embeds" not in payload:
        raise OpenAIError(400, f"{param}.image_embeds: required", param=f"{param}.image_embeds",
                          code="missing_required_parameter")
    return EmbedsRef(document=json.dumps(payload, separators=(",", ":")).encode(), where=param, uuid=uuid)


def _part(raw: Any, where: str) -> Part:
    part = validate_part(raw, where, _PART_MODELS, PART_TYPES)
    if isinstance(part, TextPart):
        return part.text
    if isinstance(part, ImagePart):
        inner = part.image_url
        url = "" if inner is None else inner if isinstance(inner, str) else inner.url
        return ImageRef(url=media_url(url, part.uuid, f"{where}.image_url", where), where=f"{where}.image_url",
                        uuid=part.uuid)
    if isinstance(part, VideoPart):
        vinner = part.video_url
        url = "" if vinner is None else vinner if isinstance(vinner, str) else vinner.url
        start = part.start if part.start is not None else (getattr(vinner, "start", None))
        end = part.end if part.end is not None else (getattr(vinner, "end", None))
        return VideoRef(url=media_url(url, part.uuid, f"{where}.video_url", where), where=f"{where}.video_url",
                        window=part_window(start, end, where), uuid=part.uuid)
    if isinstance(part, InputAudioPart):
        if part.input_audio is None:
            return AudioRef(url=media_url("", part.uuid, f"{where}.input_audio", where), where=f"{where}.input_audio",
                            uuid=part.uuid)
        return AudioRef(url=audio_data_url(part.input_audio, f"{where}.input_audio"), where=f"{where}.input_audio",
                        uuid=media_uuid(part.uuid, where))
    if isinstance(part, AudioURLPart):
        aurl = part.audio_url if isinstance(part.audio_url, str) or part.audio_url is None else part.audio_url.url
        return AudioRef(url=media_url(aurl or "", part.uuid, f"{where}.audio_url", where), where=f"{where}.audio_url",
                        uuid=part.uuid)
    if isinstance(part, ImageEmbedsPart):
        return embeds_ref(part.image_embeds, part.uuid, where)
    if isinstance(part, FilePart):
        return file_ref(part.file.file_id, part.file.file_data, part.file.filename, f"{where}.file")
    raise OpenAIError(400, f"{where}.type: unsupported content part", param=f"{where}.type")


def file_ref(file_id: str | None, file_data: str | None, filename: str | None, where: str) -> FileRef:
    """A file part (exactly one of ``file_id``, ``file_data``) as the service resolves it: by the file's type."""
    if (file_id is None) == (file_data is None):
        raise OpenAIError(400, f"{where}: give exactly one of file_id or file_data", param=f"{where}.file_id",
                          code="missing_required_parameter" if file_id is None else "invalid_value")
    if file_id is not None:
        return FileRef(url=stored_file_id(file_id, f"{where}.file_id"), where=f"{where}.file_id")
    if not file_data:
        raise OpenAIError(400, f"{where}.file_data: must not be empty", param=f"{where}.file_data",
                          code="invalid_value")
    return FileRef(url=file_data_url(file_data, filename, f"{where}.file_data"), where=f"{where}.file_data")
