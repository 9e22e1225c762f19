"""Fakes shared by the test layers (one place, so they do not drift apart)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from openai_frontend.backend.base import Delta, LlmRequest
from video_pipeline.media.packing import pack

# The tiny model's video_preprocessor parameters (model_repository/video_preprocessor/config.pbtxt).
MEDIA_PARAMETERS = {"default_patch_factor": "28", "model_min_pixels": "3136", "model_max_pixels": "50176"}


@dataclass
class FakeBackend:
    """An in-memory :class:`~openai_frontend.backend.base.Backend` that records what it is asked.

    ``media`` answers each video with ``num_frames`` (default 4) frames of 56x84 and the
    video_info the real preprocessor would give; ``generate`` streams ``chunks`` per choice
    (one whole-text response per choice when not streaming), then ``finish_reason``.
    """

    chunks: list[str] = field(default_factory=lambda: ["Hello", " world", "!"])
    finish_reason: str = "stop"
    prompt_tokens: int = 20
    is_ready: bool = True
    media_error: BaseException | None = None
    generate_error: BaseException | None = None
    error_after: int | None = None  # raise generate_error after this many deltas (mid-stream)
    hang_after: int | None = None  # stop producing after this many deltas until cancelled
    media_calls: list[tuple[list[bytes], list[dict[str, Any]]]] = field(default_factory=list)
    requests: list[LlmRequest] = field(default_factory=list)
    closed_early: int = 0
    finished: int = 0
    closed: bool = False

    async def ready(self) -> bool:
        return self.is_ready

    async def media_parameters(self) -> dict[str, str]:
        return dict(MEDIA_PARAMETERS)

    async def media(self, videos: list[bytes], options: list[dict[str, Any]]) -> tuple[np.ndarray, list[dict]]:
        self.media_calls.append((list(videos), [dict(o) for o in options]))
        if self.media_error is not None:
            raise self.media_error
        clips, infos = [], []
        for i, opts in enumerate(options):
            t = int(opts.get("num_frames") or 4)
            clips.append(np.full((t, 56, 84, 3), i, dtype=np.uint8))
            infos.append({"num_frames": t, "height": 56, "width": 84, "fps": 10.0, "duration": 4.0,
                          "total_num_frames": 40, "frames_indices": list(range(t)), "video_backend": "pyav",
                          "do_sample_frames": False, "num_video_tokens": math.ceil(t / 2) * 6})
        return pack(clips), infos

    def video_tokens(self, request: LlmRequest) -> int:
        return sum(int(i.get("num_video_tokens", 0)) for i in request.infos)

    async def generate(self, request: LlmRequest) -> AsyncIterator[Delta]:
        self.requests.append(request)
        if self.generate_error is not None and self.error_after is None:
            raise self.generate_error
        video = self.video_tokens(request)
        sent = 0
        done = False
        try:
            for index in range(request.n):
                if self.hang_after == 0:
                    await asyncio.Event().wait()  # never answers (a long prefill) until cancelled
                if not request.stream:
                    yield Delta("".join(self.chunks), index, self.finish_reason, self.prompt_tokens,
                                len(self.chunks), video)
                    continue
                for k, text in enumerate(self.chunks):
                    if self.error_after is not None and sent >= self.error_after:
                        raise self.generate_error or RuntimeError("boom")
                    if self.hang_after is not None and sent >= self.hang_after:
                        await asyncio.Event().wait()  # until cancelled
                    last = k == len(self.chunks) - 1
                    yield Delta(text, index, self.finish_reason if last else None, self.prompt_tokens, k + 1, video)
                    sent += 1
            done = True
        finally:
            if done:
                self.finished += 1
            else:
                self.closed_early += 1

    async def close(self) -> None:
        self.closed = True


class FakeDns:
    """A resolver for media hosts: ``{host: [first answer, second answer, ...]}`` (the last one repeats),
    recording the hosts it was asked for."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        answers = self.table.get(host)
        if answers is None:
            raise OSError(f"no such host {host}")
        return answers[min(self.calls.count(host) - 1, len(answers) - 1)]
