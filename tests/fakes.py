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

# What video_preprocessor's describe answers for the tiny test model (its processor files).
TINY_MEDIA = {"family": "qwen2_vl", "sizing": "frame", "patch_size": 14, "merge_size": 2, "temporal_patch_size": 2,
              "video_min_pixels": 3136, "video_max_pixels": 50176, "image_min_pixels": 3136,
              "image_max_pixels": 50176}
TINY_ENGINE = {"max_model_len": 16384, "limit_mm_per_prompt": {"video": 4, "image": 4}}


@dataclass
class FakeBackend:
    """An in-memory :class:`~openai_frontend.backend.base.Backend` that records what it is asked.

    ``media`` answers each video with ``num_frames`` (default 4) frames of 56x84 and the
    video_info the real preprocessor would give (a frame list is decoded and sized for real, as
    video_decoder + video_preprocessor do); ``generate`` streams ``chunks`` per choice (one
    whole-text response per choice when not streaming), then ``finish_reason``. Given
    ``request.videos`` it first decodes them as llm would (recorded in ``media_calls`` too) and
    answers their video_info, or raises ``media_error`` as llm's MediaFailed.
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
    frames_through_shim: bool = False

    async def ready(self) -> bool:
        return self.is_ready

    engine: dict[str, Any] = field(default_factory=lambda: dict(TINY_ENGINE))

    async def describe_media(self) -> dict[str, Any]:
        from video_pipeline.media.model_media import MediaSettings

        return {"parameters": {"served_model": "../llm/1/model.json"},
                "media": MediaSettings(**TINY_MEDIA).to_dict(), "engine": dict(self.engine)}

    async def media(self, videos: list[bytes], options: list[dict[str, Any]]) -> tuple[np.ndarray, list[dict]]:
        self.media_calls.append((list(videos), [dict(o) for o in options]))
        if self.media_error is not None:
            raise self.media_error
        clips, infos = [], []
        for i, (data, opts) in enumerate(zip(videos, options, strict=True)):
            if opts.get("frame_list"):
                clip, info = _frame_list(data, opts)
            else:
                t = int(opts.get("num_frames") or 4)
                clip = np.full((t, 56, 84, 3), i, dtype=np.uint8)
                info = {"num_frames": t, "height": 56, "width": 84, "fps": 10.0, "duration": 4.0,
                        "total_num_frames": 40, "frames_indices": list(range(t)), "video_backend": "pyav",
                        "do_sample_frames": False, "num_video_tokens": math.ceil(t / 2) * 6}
            clips.append(clip)
            infos.append(info)
        return pack(clips), infos

    def video_tokens(self, request: LlmRequest) -> int:
        return sum(int(i.get("num_video_tokens", 0)) for i in request.infos)

    async def generate(self, request: LlmRequest) -> AsyncIterator[Delta]:
        from openai_frontend.backend.base import MediaFailed
        from video_pipeline.errors import PipelineError

        self.requests.append(request)
        if self.generate_error is not None and self.error_after is None:
            raise self.generate_error
        sent = 0
        done = False
        try:
            if request.videos:  # what llm does inside tritonserver: decode, then answer the plan first
                try:
                    _, infos = await self.media(request.videos, request.video_options)
                except PipelineError as exc:
                    raise MediaFailed(exc) from None
                yield Delta("", video_info=infos)
            video = self.video_tokens(request)
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

    tokenize_requests: list[Any] = field(default_factory=list)  # TokenizeRequest of tokenize(), in order

    async def tokenize(self, request: Any) -> dict[str, Any]:
        """A word per token: id i is the i-th word of the prompt (each message's text joined)."""
        self.tokenize_requests.append(request)
        if self.generate_error is not None:
            raise self.generate_error
        text = request.prompt if request.prompt is not None else " ".join(
            m["content"] if isinstance(m["content"], str) else " ".join(p.get("text", "") for p in m["content"])
            for m in request.messages)
        ids = list(range(len(text.split())))
        doc: dict[str, Any] = {"count": len(ids), "max_model_len": self.engine["max_model_len"], "tokens": ids}
        if request.options.get("return_token_strs"):
            doc["token_strs"] = text.split()
        return doc

    async def detokenize(self, token_ids: list[int], request_id: str) -> str:
        self.tokenize_requests.append(list(token_ids))
        return " ".join(f"w{t}" for t in token_ids)

    aborts: list[str] = field(default_factory=list)  # request ids of abort(), in order

    async def abort(self, request_id: str) -> None:
        """What TritonBackend.abort does: asks llm to stop ``request_id``; recorded here."""
        self.aborts.append(request_id)


def fake_pool(n: int = 3, **pool_args: Any) -> Any:
    """A :class:`~openai_frontend.backend.pool.TritonPool` over ``n`` FakeBackends named
    ``triton-<i>:8001``; its ``fakes`` attribute maps each URL to its FakeBackend."""
    from openai_frontend.backend.pool import TritonPool

    fakes = {f"triton-{i}:8001": FakeBackend() for i in range(n)}
    pool = TritonPool(fakes, **pool_args)
    pool.fakes = fakes  # type: ignore[attr-defined]
    return pool


def _frame_list(data: bytes, options: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """A frame list decoded and sized as video_decoder + video_preprocessor do, for the tiny model."""
    from video_pipeline import contract as C
    from video_pipeline.media import frame_list
    from video_pipeline.media.model_media import MediaSettings
    from video_pipeline.steps import PreprocessorStep, json_tensor

    d = frame_list.decode_frame_list(frame_list.split(data), options)
    step = PreprocessorStep({}, media=MediaSettings(**TINY_MEDIA), engine=TINY_ENGINE)
    out = step({C.FRAMES: d.frames, C.TIMESTAMPS: d.timestamps, C.FRAME_INDICES: d.frame_indices,
                C.VIDEO_METADATA: json_tensor([{**d.metadata, "num_frames": int(d.frames.shape[0])}]),
                C.VIDEO_OPTIONS: json_tensor([{k: v for k, v in options.items() if k != C.FRAME_LIST}])})
    import json

    return out[C.VIDEO_FRAMES], json.loads(out[C.VIDEO_INFO][0])


# --- video generation -------------------------------------------------------------------------------

def tiny_wan_capabilities(**changes: Any) -> Any:
    """What the tiny Wan pipeline (model_repository/video_generator/1/pipeline.json) says it takes."""
    from video_pipeline.generation.params import Capabilities

    caps = {
        "model": "tiny-wan", "text_to_video": True, "image_to_video": True,
        "supported": ("flow_shift", "guidance_scale", "negative_prompt", "num_inference_steps"),
        "call_parameters": ("attention_kwargs", "max_sequence_length"), "size_multiple": 32, "frame_step": 4,
        "min_size": 32, "max_width": 512, "max_height": 512, "max_frames": 65, "max_inference_steps": 100,
        "default_width": 64, "default_height": 64, "default_num_frames": 9, "default_fps": 16,
        "default_inference_steps": 4,
    }
    return Capabilities(**{**caps, **changes})


@dataclass
class FakeVideoBackend:
    """An in-memory :class:`~openai_frontend.videos.backend.VideoBackend`: one progress event per step
    (``step_s`` apart), then a real mp4 of solid frames of the requested size, count and fps.

    ``hold`` (an :class:`asyncio.Event` made on first use when ``hold_at`` is set) stops a generation
    after ``hold_at`` steps until it is set; ``error`` fails every generation.
    """

    capabilities_: Any = None
    step_s: float = 0.0
    hold_at: int | None = None
    error: BaseException | None = None
    available: bool = True
    requests: list[Any] = field(default_factory=list)
    finished: int = 0
    closed_early: int = 0  # cancelled, or failed

    def __post_init__(self) -> None:
        self.capabilities_ = self.capabilities_ or tiny_wan_capabilities()
        self.released: asyncio.Event | None = None

    async def capabilities(self) -> Any:
        from video_pipeline.errors import EngineUnavailable

        if not self.available:
            raise EngineUnavailable("tritonserver cannot serve the request: video_generator is not ready")
        return self.capabilities_

    def release(self) -> None:
        """Lets held generations go on; callable from any thread (tests run apps on their own loop)."""
        self.hold_at = None
        if self.released is not None:
            self._loop.call_soon_threadsafe(self.released.set)

    async def generate(self, request: Any) -> AsyncIterator[Any]:
        from openai_frontend.videos.backend import VideoEvent
        from video_pipeline.generation.encode import encode_mp4

        self.requests.append(request)
        p = request.params
        done = False
        try:
            if self.error is not None:
                raise self.error
            yield VideoEvent(0, p.num_inference_steps, "started")
            for step in range(1, p.num_inference_steps + 1):
                if self.hold_at is not None and step > self.hold_at:
                    if self.released is None:
                        self.released, self._loop = asyncio.Event(), asyncio.get_running_loop()
                    await self.released.wait()
                await asyncio.sleep(self.step_s)
                yield VideoEvent(step, p.num_inference_steps, "decoding" if step == p.num_inference_steps
                                 else "denoising")
            frames = np.full((p.num_frames, p.height, p.width, 3), p.seed % 256, dtype=np.uint8)
            video = await asyncio.to_thread(encode_mp4, frames, p.fps)
            info = {"width": p.width, "height": p.height, "num_frames": p.num_frames, "fps": p.fps, "seed": p.seed,
                    "seconds": f"{p.num_frames / p.fps:g}", "image_to_video": request.image is not None,
                    "inference_s": 0.01}
            done = True
            yield VideoEvent(p.num_inference_steps, p.num_inference_steps, "", video, info)
        finally:
            if done:
                self.finished += 1
            else:
                self.closed_early += 1


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
