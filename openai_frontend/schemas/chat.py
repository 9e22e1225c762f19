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
from openai_frontend.schemas.common import (
    InputAudio,
    SamplingFields,
    Strict,
    audio_data_url,
    media_url,
    refuse_if,
    validate_part,
)
from openai_frontend.service import AudioRef, Conversation, EmbedsRef, ImageRef, Part, Turn, VideoRef

PART_TYPES = ("text", "image_url", "video_url", "input_audio", "audio_url", "image_embeds")


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
    input_audio: InputAudio


class AudioURL(Strict):
    url: str


class AudioURLPart(Strict):
    type: Literal["audio_url"]
    audio_url: AudioURL | str


class ImageEmbedsPart(Strict):
    type: Literal["image_embeds"]
    image_embeds: str | dict[str, str | list[float | int]] | None = None
    uuid: str | None = None


_PART_MODELS: dict[str, type[Strict]] = {"text": TextPart, "image_url": ImagePart, "video_url": VideoPart,
                                         "input_audio": InputAudioPart, "audio_url": AudioURLPart,
                                         "image_embeds": ImageEmbedsPart}


class ChatMessage(Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None  # accepted; chat templates do not use it


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

    def check_supported(self) -> None:
        refuse_if(bool(self.logprobs), "logprobs")
        refuse_if(self.top_logprobs is not None, "top_logprobs")
        refuse_if(self.response_format is not None and self.response_format.get("type") != "text",
                  "response_format", "supports only {\"type\": \"text\"}")
        refuse_if(self.stream_options is not None and not self.stream, "stream_options",
                  "is only allowed when stream is true")

    def generation_sampling(self) -> dict[str, Any]:
        max_tokens = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        return self.sampling(max_tokens, self.n)

    def conversation(self) -> Conversation:
        turns = []
        for i, message in enumerate(self.messages):
            where = f"messages[{i}]"
            if message.content is None:
                raise OpenAIError(400, f"{where}.content: required", param=f"{where}.content",
                                  code="missing_required_parameter")
            if isinstance(message.content, str):
                turns.append(Turn(message.role, message.content))
                continue
            parts = [_part(p, f"{where}.content[{j}]") for j, p in enumerate(message.content)]
            turns.append(Turn(message.role, parts))
        return Conversation(turns).with_video_audio(self.use_audio_in_video())


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
        return AudioRef(url=audio_data_url(part.input_audio, f"{where}.input_audio"), where=f"{where}.input_audio")
    if isinstance(part, AudioURLPart):
        aurl = part.audio_url if isinstance(part.audio_url, str) else part.audio_url.url
        return AudioRef(url=media_url(aurl, None, f"{where}.audio_url", where), where=f"{where}.audio_url")
    if isinstance(part, ImageEmbedsPart):
        return embeds_ref(part.image_embeds, part.uuid, where)
    raise OpenAIError(400, f"{where}.type: unsupported content part", param=f"{where}.type")
