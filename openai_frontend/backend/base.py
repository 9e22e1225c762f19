"""What the shim needs from the serving side, as one async protocol.

Implementations raise the core's typed errors (:mod:`video_pipeline.errors`):
``InvalidInput`` (400), ``MediaTooLarge`` (413), ``UnsupportedMedia`` (415),
``EngineUnavailable`` (503), ``PipelineError`` (500), with a message for the client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from video_pipeline.errors import PipelineError


@dataclass(frozen=True)
class LlmRequest:
    """One request to the ``llm`` model, in the shape of its tensors (video_pipeline.contract.LLM).

    Videos go one of two ways: as ``videos`` + ``video_options`` (what video_media takes: container
    bytes, an empty element with a "path", or a frame list), decoded by llm inside tritonserver; or
    already decoded (``frames`` + ``infos``, from :meth:`Backend.media`). In the first case llm's
    first response carries the video_info, and the service fills ``infos`` in place from it.
    """

    request_id: str
    messages: list[dict[str, Any]]  # parts: {"type": "text", "text"} | {"type": "video"} | {"type": "image"}
    sampling: dict[str, Any]
    stream: bool
    frames: np.ndarray | None = None  # packed UINT8 [T,H,W,3] of every video, in the order parts name them
    infos: list[dict[str, Any]] = field(default_factory=list)  # one video_info per video
    images: list[bytes] = field(default_factory=list)  # encoded images, in the order parts name them
    videos: list[bytes] = field(default_factory=list)  # for llm to decode: one video_media "video" element each
    video_options: list[dict[str, Any]] = field(default_factory=list)  # one video_options document per video
    video_parts: list[str] = field(default_factory=list)  # where each video sits in the body, for errors
    audios: list[bytes] = field(default_factory=list)  # encoded audio parts, for llm to decode, in order
    audio_parts: list[str] = field(default_factory=list)  # where each audio part sits in the body, for errors
    image_embeds: list[bytes] = field(default_factory=list)  # one JSON per image_embeds part (vLLM's payload)
    embeds_parts: list[str] = field(default_factory=list)  # where each image_embeds part sits, for errors
    prompt: str | None = None  # a raw prompt (llm's text_input, no chat template) instead of messages
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)  # extra chat-template variables
    tools: dict[str, Any] | None = None  # llm's `tools` document: tools, tool_choice, the vLLM tool parser

    @property
    def n(self) -> int:
        return int(self.sampling.get("n") or 1)


@dataclass(frozen=True)
class Delta:
    """One response of the ``llm`` model: a text delta (or a whole choice) and the token counts so far."""

    text: str
    index: int = 0
    finish_reason: str | None = None  # None until the choice ends, then stop|length|abort
    prompt_tokens: int = 0
    completion_tokens: int = 0  # of this choice, so far
    video_tokens: int = 0
    video_info: list[dict[str, Any]] | None = None  # set on the one response answering the request's videos
    # when the request asked for them: per new token {"id", "token", "logprob", "top": [{"id", "token", "logprob"}]}
    logprobs: list[dict[str, Any]] | None = None
    # calls the llm's tool parser found, OpenAI's shapes (streamed: delta calls with "index"; else whole calls)
    tool_calls: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class TokenizeRequest:
    """A request to the ``llm`` model's tokenizer (its ``tokenize`` input): a raw ``prompt`` or text-only chat
    ``messages`` (with ``chat_template_kwargs``), and vLLM's tokenize ``options`` (add_special_tokens,
    return_token_strs). Nothing is generated."""

    request_id: str
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)


class MediaFailed(PipelineError):
    """llm's media step refused the request's videos: ``error`` is the media model's typed error."""

    def __init__(self, error: PipelineError) -> None:
        super().__init__(str(error))
        self.error = error
        self.triton_code, self.http_status = error.triton_code, error.http_status


class Backend(Protocol):
    #: True: videos are decoded through :meth:`media` and their frames sent to llm (the older path, kept
    #: for benchmarks); False: llm gets the container bytes and decodes them inside tritonserver.
    frames_through_shim: bool

    async def ready(self) -> bool:
        """Whether every model the shim calls is loaded and ready."""
        ...

    async def describe_media(self) -> dict[str, Any]:
        """The video_preprocessor model's ``parameters`` (its config.pbtxt), ``media`` (the served
        model's effective media settings, MediaSettings.to_dict) and ``engine`` (max_model_len,
        limit_mm_per_prompt of the llm's model.json), for budgets and frame lists."""
        ...

    async def media(self, videos: list[bytes], options: list[dict[str, Any]]) -> tuple[np.ndarray, list[dict]]:
        """Containers -> packed engine-ready frames and one video_info per video (the video_media model)."""
        ...

    def generate(self, request: LlmRequest) -> AsyncIterator[Delta]:
        """Streams the llm model's responses; closing the iterator early cancels the request. With
        ``request.videos``, one delta carries ``video_info`` (before any text), and a media refusal
        raises :class:`MediaFailed`."""
        ...

    async def tokenize(self, request: TokenizeRequest) -> dict[str, Any]:
        """vLLM's TokenizeResponse (``count``, ``max_model_len``, ``tokens``, ``token_strs``) from the llm
        model's tokenizer and chat template: the prompt as generation would count it."""
        ...

    async def detokenize(self, token_ids: list[int], request_id: str) -> str:
        """The text of ``token_ids`` (the llm model's tokenizer)."""
        ...

    async def close(self) -> None:
        ...
