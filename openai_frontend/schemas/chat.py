"""POST /v1/chat/completions: the request shapes we accept, and their conversation.

Content parts: ``text``, ``image_url`` and ``video_url`` (the vLLM/LMDeploy
shape ``{"type": "video_url", "video_url": {"url": ...}}``), with our own
``start``/``end`` seconds on a video part or inside its ``video_url``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from openai_frontend.errors import OpenAIError
from openai_frontend.media.options import part_window
from openai_frontend.schemas.common import SamplingFields, Strict, refuse_if, validate_part
from openai_frontend.service import Conversation, ImageRef, Part, Turn, VideoRef

PART_TYPES = ("text", "image_url", "video_url")


class TextPart(Strict):
    type: Literal["text"]
    text: str


class ImageURL(Strict):
    url: str
    detail: Literal["auto", "low", "high"] | None = None  # accepted; the model's processor decides


class ImagePart(Strict):
    type: Literal["image_url"]
    image_url: ImageURL | str


class VideoURL(Strict):
    url: str
    start: float | None = None
    end: float | None = None


class VideoPart(Strict):
    type: Literal["video_url"]
    video_url: VideoURL | str
    start: float | None = None
    end: float | None = None


_PART_MODELS: dict[str, type[Strict]] = {"text": TextPart, "image_url": ImagePart, "video_url": VideoPart}


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
        return Conversation(turns)


def _part(raw: Any, where: str) -> Part:
    part = validate_part(raw, where, _PART_MODELS, PART_TYPES)
    if isinstance(part, TextPart):
        return part.text
    if isinstance(part, ImagePart):
        url = part.image_url if isinstance(part.image_url, str) else part.image_url.url
        return ImageRef(url=url, where=f"{where}.image_url")
    if isinstance(part, VideoPart):
        inner = part.video_url
        url = inner if isinstance(inner, str) else inner.url
        start = part.start if part.start is not None else (None if isinstance(inner, str) else inner.start)
        end = part.end if part.end is not None else (None if isinstance(inner, str) else inner.end)
        return VideoRef(url=url, where=f"{where}.video_url", window=part_window(start, end, where))
    raise OpenAIError(400, f"{where}.type: unsupported content part", param=f"{where}.type")
