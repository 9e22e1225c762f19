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


@dataclass(frozen=True)
class LlmRequest:
    """One request to the ``llm`` model, in the shape of its tensors (video_pipeline.contract.LLM)."""

    request_id: str
    messages: list[dict[str, Any]]  # parts: {"type": "text", "text"} | {"type": "video"} | {"type": "image"}
    sampling: dict[str, Any]
    stream: bool
    frames: np.ndarray | None = None  # packed UINT8 [T,H,W,3] of every video, in the order parts name them
    infos: list[dict[str, Any]] = field(default_factory=list)  # one video_info per video
    images: list[bytes] = field(default_factory=list)  # encoded images, in the order parts name them

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


class Backend(Protocol):
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
        """Streams the llm model's responses; closing the iterator early cancels the request."""
        ...

    async def close(self) -> None:
        ...
