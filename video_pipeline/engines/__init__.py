"""Engines the Triton ``llm`` model drives: one async protocol, no Triton imports.

- :mod:`.types` — :class:`GenerationRequest`, :class:`VideoInput`,
  :class:`GenerationDelta` and the :class:`AsyncEngine` protocol.
- :mod:`.prompt` / :mod:`.sampling` — pure request -> prompt / SamplingParams logic.
- :mod:`.vllm_engine` — :class:`VllmEngine`, vLLM's ``AsyncLLM`` behind the protocol.
- :mod:`.background` — :class:`BackgroundEngine`, any engine on a loop thread
  for synchronous callers (Triton's ``execute``).
- :mod:`.tiny_model` — builds the tiny offline model tests run against.

Importing this package does not import vLLM; creating a :class:`VllmEngine` does.
"""

from video_pipeline.engines.background import BackgroundEngine, RequestHandle
from video_pipeline.engines.types import AsyncEngine, GenerationDelta, GenerationRequest, VideoInput
from video_pipeline.engines.vllm_engine import VllmEngine

__all__ = [
    "AsyncEngine",
    "BackgroundEngine",
    "GenerationDelta",
    "GenerationRequest",
    "RequestHandle",
    "VideoInput",
    "VllmEngine",
]
