"""What goes into an engine and what comes out: plain dataclasses, no vLLM.

A :class:`GenerationRequest` is built by the Triton ``llm`` model (or a test)
from tensors; an engine turns it into a stream of :class:`GenerationDelta`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from video_pipeline.contract import VideoInfo
from video_pipeline.errors import InvalidInput

#: Metadata keys vLLM's Qwen2.5-VL / Qwen3-VL processors read for a pre-sampled video.
VIDEO_METADATA_KEYS = VideoInfo.vllm_keys()
#: What a video's metadata means when it leaves them out: sampled already, by PyAV.
_METADATA_DEFAULTS = VideoInfo(video_backend="pyav", do_sample_frames=False).to_dict()


@dataclass(frozen=True)
class AudioInput:
    """One decoded audio item: mono float32 samples at ``sampling_rate`` (the feature extractor's)."""

    samples: np.ndarray  # float32 (N,)
    sampling_rate: int

    def __post_init__(self) -> None:
        if not isinstance(self.samples, np.ndarray) or self.samples.dtype != np.float32 or self.samples.ndim != 1:
            raise InvalidInput("audio samples must be a float32 numpy array (N,)")
        if self.samples.shape[0] < 1:
            raise InvalidInput("audio samples are empty")
        rate = self.sampling_rate
        if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
            raise InvalidInput(f"audio sampling_rate must be a positive integer, got {rate!r}")

    def as_vllm(self) -> tuple[np.ndarray, int]:
        """The ``(samples, rate)`` item of vLLM's ``multi_modal_data["audio"]`` (no resampling follows)."""
        return self.samples, self.sampling_rate


@dataclass(frozen=True)
class VideoInput:
    """One pre-sampled video: frames plus the metadata the model needs for timestamps.

    ``metadata`` holds ``fps`` (of the source), ``duration`` (seconds),
    ``total_num_frames`` (of the source), ``frames_indices`` (index of each
    frame in the source, one per frame), ``video_backend`` and
    ``do_sample_frames`` (False: the frames are already sampled, the model's
    processor must not sample again). :meth:`from_frames` fills it for frames
    taken at a constant rate.
    """

    frames: np.ndarray  # uint8 (T, H, W, 3)
    metadata: Mapping[str, Any]
    audio: AudioInput | None = None  # the video's own track over its window (use_audio_in_video)

    def __post_init__(self) -> None:
        _check_pixels(self.frames, ndim=4, what="video frames")
        if self.frames.shape[0] < 1:
            raise InvalidInput("a video needs at least one frame")
        full = {**_METADATA_DEFAULTS, **self.metadata}
        info = VideoInfo.from_dict(full)
        missing = [k for k in VIDEO_METADATA_KEYS if k not in _METADATA_DEFAULTS and getattr(info, k) is None]
        if missing:
            raise InvalidInput(f"video metadata lacks {', '.join(missing)}")
        fps = info.fps
        if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0:
            raise InvalidInput(f"video metadata fps must be a positive number, got {fps!r}")
        if len(info.frames_indices) != self.frames.shape[0]:  # type: ignore[arg-type]
            raise InvalidInput(
                f"video metadata has {len(info.frames_indices)} frames_indices "  # type: ignore[arg-type]
                f"for {self.frames.shape[0]} frames"
            )
        object.__setattr__(self, "metadata", full)

    @classmethod
    def from_frames(cls, frames: np.ndarray, fps: float, *, source_fps: float | None = None) -> VideoInput:
        """Metadata for frames sampled at ``fps`` from a source at ``source_fps`` (default: the same)."""
        source_fps = source_fps or fps
        count = int(frames.shape[0])
        step = source_fps / fps
        indices = [int(round(i * step)) for i in range(count)]
        metadata = VideoInfo(fps=float(source_fps), duration=count / fps,
                             total_num_frames=indices[-1] + 1 if indices else 0, frames_indices=indices)
        return cls(frames=frames, metadata=metadata.to_dict())

    def as_vllm(self) -> tuple[np.ndarray, dict[str, Any]]:
        """The ``(frames, metadata)`` item vLLM's ``multi_modal_data["video"]`` takes for every family.

        Only the keys vLLM reads are passed; extra keys (our sampling plan) stay behind. vLLM
        drops the metadata for models that need none (Qwen2-VL, LLaVA-OneVision, InternVL).
        """
        return self.frames, {k: self.metadata[k] for k in VIDEO_METADATA_KEYS}


@dataclass(frozen=True)
class GenerationRequest:
    """One generation: a raw ``prompt`` or chat ``messages``, media, sampling settings.

    ``messages`` follow OpenAI's shape: ``{"role": ..., "content": str | [part, ...]}``
    with parts ``{"type": "text", "text": ...}``, ``{"type": "video"}``,
    ``{"type": "image"}``. Video parts take ``videos`` in order, image parts
    ``images``. A raw ``prompt`` must already hold the model's placeholders.
    ``sampling`` holds user-facing sampling parameters (see
    :mod:`video_pipeline.engines.sampling`). ``stream`` False asks for one
    delta per choice at the end instead of a stream.
    """

    request_id: str
    prompt: str | None = None
    messages: Sequence[Mapping[str, Any]] | None = None
    videos: Sequence[VideoInput] = ()
    images: Sequence[np.ndarray] = ()
    # per image: vLLM's multi_modal_uuid for it (derived from its content), or None: vLLM hashes it
    image_uuids: Sequence[str | None] = ()
    audios: Sequence[AudioInput] = ()  # audio parts, in order
    audio_uuids: Sequence[str | None] = ()  # per audio part: vLLM's multi_modal_uuid (its content's), or None
    # image_embeds parts instead of images (never both, as in vLLM): per part its checked tensors
    # (video_pipeline.media.embeds.decode_part), in the order image parts appear
    image_embeds: Sequence[Mapping[str, Any]] = ()
    sampling: Mapping[str, Any] = field(default_factory=dict)
    stream: bool = True
    chat_template_kwargs: Mapping[str, Any] = field(default_factory=dict)
    # OpenAI chat tool definitions, given to the chat template (as vLLM's server gives them)
    tools: Sequence[Mapping[str, Any]] = ()
    # how the output is read for tool calls (video_pipeline.engines.tools.tool_calling_of); None: it is not
    tool_calling: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.request_id, str) or not self.request_id:
            raise InvalidInput("request_id must be a non-empty string")
        if (self.prompt is None) == (self.messages is None):
            raise InvalidInput("give exactly one of prompt or messages")
        if self.prompt is not None and not isinstance(self.prompt, str):
            raise InvalidInput("prompt must be a string")
        for video in self.videos:
            if not isinstance(video, VideoInput):
                raise InvalidInput("videos must be VideoInput items")
        for image in self.images:
            _check_pixels(image, ndim=3, what="image")
        if not isinstance(self.sampling, Mapping):
            raise InvalidInput("sampling parameters must be a JSON object")
        object.__setattr__(self, "videos", tuple(self.videos))
        object.__setattr__(self, "images", tuple(self.images))
        if self.images and self.image_embeds:
            raise InvalidInput("mixing raw image and embedding inputs is not allowed")
        object.__setattr__(self, "image_embeds", tuple(self.image_embeds))
        items = len(self.images) + len(self.image_embeds)
        if self.image_uuids and len(self.image_uuids) != items:
            raise InvalidInput(f"image_uuids has {len(self.image_uuids)} entries for {items} image(s)")
        object.__setattr__(self, "image_uuids", tuple(self.image_uuids))
        for audio in self.audios:
            if not isinstance(audio, AudioInput):
                raise InvalidInput("audios must be AudioInput items")
        object.__setattr__(self, "audios", tuple(self.audios))
        if self.audio_uuids and len(self.audio_uuids) != len(self.audios):
            raise InvalidInput(f"audio_uuids has {len(self.audio_uuids)} entries for {len(self.audios)} audio item(s)")
        object.__setattr__(self, "audio_uuids", tuple(self.audio_uuids))
        tracks = [v.audio is not None for v in self.videos]
        if any(tracks) and not all(tracks):
            raise InvalidInput("use_audio_in_video needs the audio track of every video of the request")
        if any(tracks) and self.audios:
            raise InvalidInput("use_audio_in_video cannot be combined with audio parts in one request")

    @property
    def use_audio_in_video(self) -> bool:
        """True when the videos carry their own audio tracks (vLLM's use_audio_in_video)."""
        return any(v.audio is not None for v in self.videos)

@dataclass(frozen=True)
class TokenLogprob:
    """One generated token's log probability, and the most likely tokens at its position."""

    token_id: int
    token: str  # its text
    logprob: float  # <= 0
    top: tuple[tuple[int, str, float], ...] = ()  # (id, text, logprob), most likely first

    def to_json(self) -> dict[str, Any]:
        """The llm model's ``logprobs`` entry: ``{"id", "token", "logprob", "top": [{"id", "token", "logprob"}]}``."""
        return {"id": self.token_id, "token": self.token, "logprob": self.logprob,
                "top": [{"id": i, "token": t, "logprob": lp} for i, t, lp in self.top]}


@dataclass(frozen=True)
class GenerationDelta:
    """New output of one choice since its previous delta.

    Streams merge tokens when the consumer lags: a delta may carry several
    tokens, and the last delta of a choice may carry none (only
    ``finish_reason``). Counts are totals so far, not increments.
    ``logprobs`` (when the request asked for them) holds one entry per token of
    ``token_ids``.
    """

    index: int  # choice index, 0 .. n-1
    text: str
    token_ids: tuple[int, ...]
    finish_reason: str | None  # "stop", "length", "abort" on the choice's last delta, else None
    stop_reason: int | str | None  # the stop string or token id that ended it, if any
    prompt_tokens: int
    completion_tokens: int  # tokens generated for this choice so far
    video_tokens: int  # video placeholder tokens in the prompt (all videos)
    image_tokens: int  # image placeholder tokens in the prompt (all images)
    logprobs: tuple[TokenLogprob, ...] | None = None  # None: not asked for

    @property
    def finished(self) -> bool:
        """True on the last delta of this choice."""
        return self.finish_reason is not None


class AsyncEngine(Protocol):
    """What the Triton ``llm`` model needs from an engine; vLLM's and test fakes implement it."""

    def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationDelta, None]:
        """Stream deltas for ``request``; raises :mod:`video_pipeline.errors` types."""
        ...

    async def abort(self, request_id: str) -> None:
        """Stop a running request; its stream ends with finish_reason "abort"."""
        ...

    async def check_health(self) -> None:
        """Raise :class:`~video_pipeline.errors.EngineUnavailable` if the engine is dead."""
        ...

    def shutdown(self) -> None:
        """Stop the engine and its processes."""
        ...


def _check_pixels(array: Any, *, ndim: int, what: str) -> None:
    if not isinstance(array, np.ndarray):
        raise InvalidInput(f"{what} must be a numpy array")
    if array.dtype != np.uint8 or array.ndim != ndim or array.shape[-1] != 3:
        shape = "(T, H, W, 3)" if ndim == 4 else "(H, W, 3)"
        raise InvalidInput(f"{what} must be uint8 {shape}, got {array.dtype} {array.shape}")
    if 0 in array.shape:
        raise InvalidInput(f"{what} is empty: shape {array.shape}")
