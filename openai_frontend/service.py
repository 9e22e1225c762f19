"""The one path every endpoint shares: a conversation -> media -> an llm request -> deltas.

Routers parse an OpenAI body into a :class:`Conversation` (schemas do that),
:meth:`Service.prepare` resolves and checks its media, and :meth:`Service.generate`
streams the llm model, which decodes the videos inside tritonserver (container
bytes, paths, and frame lists alike: the shim decodes no media). A dry run (and a
backend with ``frames_through_shim``) decodes through the video_media model instead.
Nothing here knows HTTP.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from openai_frontend.backend.base import Backend, Delta, LlmRequest, MediaFailed
from openai_frontend.budgets import (
    RequestBudget,
    check_audio,
    check_audio_asked,
    check_context,
    check_frames_asked,
    check_media,
    context_tokens,
    media_limit,
    resolved_options,
)
from openai_frontend.errors import OpenAIError, from_exception
from openai_frontend.media.frames import wire_video
from openai_frontend.media.urls import FrameList, Kind, MediaFetcher, StoredVideo, scoped_uuid
from openai_frontend.metrics import Metrics
from openai_frontend.retry import RetryPolicy
from openai_frontend.sampling import named_error
from openai_frontend.settings import Settings
from openai_frontend.tools import tools_for_llm
from video_pipeline import contract as C
from video_pipeline.contract import VideoInfo, VideoOptionsDoc
from video_pipeline.errors import EngineUnavailable, InvalidInput, PipelineError
from video_pipeline.media.model_media import MediaSettings
from video_pipeline.media.options import VideoOptions
from video_pipeline.steps import PreprocessorStep

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class VideoRef:
    """A video part: where it comes from, its own window (start/end), and where it sits in the body.

    ``uuid``: the client's media uuid (vLLM's part field); with an empty ``url`` the part names
    media cached under that uuid (vLLM's cache-hit shape)."""

    url: str
    where: str
    window: dict[str, float] = field(default_factory=dict)
    uuid: str | None = None
    audio: bool = False  # its own audio track goes with it (mm_processor_kwargs.use_audio_in_video)


@dataclass(frozen=True)
class ImageRef:
    url: str
    where: str
    uuid: str | None = None


@dataclass(frozen=True)
class AudioRef:
    """An audio part (input_audio as a data: URL, or audio_url): llm decodes it at the model's rate.
    ``uuid``: as on a video part (with an empty ``url``: audio sent before with that uuid)."""

    url: str
    where: str
    uuid: str | None = None


@dataclass(frozen=True)
class EmbedsRef:
    """An ``image_embeds`` part: vLLM's payload as one JSON ``document`` ("{}" with a ``uuid``: embeddings
    sent before with it), decoded and checked by the llm model. It stands where an image would."""

    document: bytes
    where: str
    uuid: str | None = None


@dataclass(frozen=True)
class FileRef:
    """A file part (chat's ``{"type": "file"}``, Responses' ``input_file``): a file id or a data: URL, read as
    the video, image or audio the file is (:meth:`Service.prepare` resolves it before anything else)."""

    url: str
    where: str
    audio: bool = False  # as on a video part, should the file be a video


Part = str | VideoRef | ImageRef | AudioRef | EmbedsRef | FileRef  # a str is a text part


@dataclass(frozen=True)
class Turn:
    role: str  # system | developer | user | assistant | tool
    content: str | list[Part]
    extra: dict[str, Any] = field(default_factory=dict)  # tool fields: an assistant's tool_calls, a tool_call_id


@dataclass(frozen=True)
class Conversation:
    turns: list[Turn]
    # extra chat-template variables (vLLM's chat_template_kwargs, with add_generation_prompt & co. merged in)
    template_kwargs: dict[str, Any] = field(default_factory=dict)
    tools: dict[str, Any] | None = None  # tools, tool_choice, parallel_tool_calls (openai_frontend.tools)

    def parts(self, kind: type) -> list[Any]:
        return [p for t in self.turns if isinstance(t.content, list) for p in t.content if isinstance(p, kind)]

    def with_video_audio(self, on: bool) -> Conversation:
        """The conversation with every video part taking its own audio track along (when ``on``)."""
        if not on:
            return self
        return replace(self, turns=[replace(t, content=t.content if isinstance(t.content, str) else
                                            [replace(p, audio=True) if isinstance(p, (VideoRef, FileRef)) else p
                                             for p in t.content])
                                    for t in self.turns])

    def llm_messages(self, scope: str = "") -> list[dict[str, Any]]:
        """The llm model's ``messages``: media parts become placeholders, filled in order; an image
        part with a uuid carries it, namespaced by ``scope`` (llm's image cache is keyed by it)."""
        out: list[dict[str, Any]] = []
        for turn in self.turns:
            if isinstance(turn.content, str):
                out.append({"role": turn.role, "content": turn.content, **turn.extra})
                continue
            parts: list[dict[str, Any]] = []
            for p in turn.content:
                if isinstance(p, str):
                    parts.append({"type": "text", "text": p})
                elif isinstance(p, AudioRef):
                    parts.append({"type": "audio", **({C.MEDIA_UUID: scoped_uuid(scope, p.uuid, p.where)}
                                                      if p.uuid is not None else {})})
                else:
                    part: dict[str, Any] = {"type": "video" if isinstance(p, VideoRef) else "image"}
                    if isinstance(p, (ImageRef, EmbedsRef)) and p.uuid is not None:
                        part[C.MEDIA_UUID] = scoped_uuid(scope, p.uuid, p.where)
                    if isinstance(p, VideoRef) and p.audio:
                        part[C.USE_AUDIO_IN_VIDEO] = True
                    parts.append(part)
            out.append({"role": turn.role, "content": parts, **turn.extra})
        return out


@dataclass
class Usage:
    """Token counts of one request, from the llm model's running counters."""

    prompt_tokens: int = 0
    video_tokens: int = 0
    per_choice: dict[int, int] = field(default_factory=dict)

    def add(self, delta: Delta) -> None:
        self.prompt_tokens = max(self.prompt_tokens, delta.prompt_tokens)
        self.video_tokens = max(self.video_tokens, delta.video_tokens)
        self.per_choice[delta.index] = max(self.per_choice.get(delta.index, 0), delta.completion_tokens)

    @property
    def completion_tokens(self) -> int:
        return sum(self.per_choice.values())

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Choice:
    index: int
    text: str = ""
    finish_reason: str | None = None
    logprobs: list[dict[str, Any]] | None = None  # its tokens' (Delta.logprobs), when asked for
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # the calls the llm's tool parser found


@dataclass
class Completion:
    """A whole (non-streamed) answer."""

    choices: list[Choice]
    usage: Usage


class Service:
    """Everything a request needs beyond its body: settings, backend, media fetching, metrics."""

    def __init__(self, settings: Settings, backend: Backend, fetcher: MediaFetcher, metrics: Metrics) -> None:
        self.settings = settings
        self.model_name = settings.model_name
        self.backend = backend
        self.fetcher = fetcher
        self.metrics = metrics
        self._preprocessor: PreprocessorStep | None = None

    async def prepare(self, conversation: Conversation, *, video_defaults: dict[str, Any], sampling: dict[str, Any],
                      stream: bool, request_id: str, scope: str = "",
                      attachments: Mapping[str, Path] | None = None, dry_run: bool = False) -> LlmRequest:
        """Fetches and checks every video and image of ``conversation`` into one llm request.

        ``scope`` is the tenant whose file ids the media may name; ``attachments`` are the file parts
        of a multipart request (field name -> staged file), named as ``form://<field name>``.
        ``dry_run`` (or a backend with ``frames_through_shim``): the videos are decoded now, through
        video_media, and the request's ``infos`` are their plan; else llm decodes them.
        """
        tools = tools_for_llm(conversation.tools, self.settings, sampling)  # refused before any download
        conversation = await self._typed_files(conversation, scope)
        videos: list[VideoRef] = conversation.parts(VideoRef)
        images: list[ImageRef] = conversation.parts(ImageRef)
        audios: list[AudioRef] = conversation.parts(AudioRef)
        embeds: list[EmbedsRef] = conversation.parts(EmbedsRef)
        s = self.settings
        step = await self._preprocessor_step() if videos or images or audios or embeds else None
        engine = step.engine if step is not None else {}
        visual: list[VideoRef | ImageRef | EmbedsRef] = [*videos, *images, *embeds]
        if step is not None and visual and not step.media.takes_visual:
            raise OpenAIError(400, f"{visual[0].where}: the model {self.model_name!r} takes no video or images "
                              f"(a {step.media.family} model: text and audio only)", param=visual[0].where,
                              code="unsupported_modality")
        if embeds:
            check_embeds_asked(embeds, images, engine)
        if step is not None:
            check_audio_asked(audios, [v.where for v in videos if v.audio], step.media, s, engine, self.model_name)
        for kind, items in (("video", videos), ("image", images or embeds)):
            most, where = media_limit(s, engine, kind)
            if len(items) > most:
                raise OpenAIError(400, f"the request has {len(items)} {kind}s; this server takes at most {most} "
                                  f"({where})", param="messages", code="too_many_media")
        context = context_tokens(s, engine)  # the model's context, for the video budget
        options = [{**video_defaults, **v.window} for v in videos]
        resolved = await self._check_options(videos, options)  # before any download
        budget = RequestBudget(s)
        fetched = await all_of([
            *(self._fetch(v, "video", scope, attachments, budget) for v in videos),
            *(self._fetch(i, "image", scope, attachments, budget) for i in images),
        ])
        audio_data = await all_of([self._fetch(a, "audio", scope, attachments, budget) for a in audios])
        video_data, image_data = fetched[: len(videos)], fetched[len(videos):]
        if videos or images:
            # Headers before decoding: sizes, durations, and whether the videos can fit the context at all.
            # Media named by uuid alone are in the caches: the decoder's answer is checked instead.
            estimates = await asyncio.to_thread(
                check_media, [(v.where, d.local if isinstance(d, StoredVideo) else d, o)
                              for v, d, o in zip(videos, video_data, resolved, strict=True) if d is not None],
                [(i.where, d) for i, d in zip(images, image_data, strict=True) if d is not None], s,
                step.media if step is not None else MediaSettings())
            check_context(estimates, context, estimated=True)
        if audios:
            await asyncio.to_thread(check_audio, [(a.where, d) for a, d in zip(audios, audio_data, strict=True)
                                                  if d is not None], s)
        wire = [_wire(v, d, o, scope) for v, d, o in zip(videos, video_data, options, strict=True)]
        if images:
            self.metrics.images.inc(len(images))
        common = {"request_id": request_id, "messages": conversation.llm_messages(scope), "sampling": sampling,
                  "chat_template_kwargs": dict(conversation.template_kwargs),
                  "tools": tools,
                  "stream": stream, "images": [bytes(b or b"") for b in image_data],  # type: ignore[arg-type]
                  "video_parts": [v.where for v in videos],
                  **({"audios": [bytes(d or b"") for d in audio_data],  # type: ignore[arg-type]
                      "audio_parts": [a.where for a in audios]}
                     if audios else {}),
                  **({"image_embeds": [e.document for e in embeds], "embeds_parts": [e.where for e in embeds]}
                     if embeds else {})}
        if not videos or not (dry_run or getattr(self.backend, "frames_through_shim", False)):
            return LlmRequest(**common, videos=[w for w, _ in wire], video_options=[o for _, o in wire])
        started = time.perf_counter()
        try:
            frames, infos = await self.backend.media([w for w, _ in wire], [o for _, o in wire])
        except PipelineError as exc:
            raise self._media_error(exc, common["video_parts"]) from None
        self.metrics.media_duration.observe(time.perf_counter() - started)
        self._decoded(common["video_parts"], infos, context)
        return LlmRequest(**common, frames=frames, infos=infos)

    async def _typed_files(self, conversation: Conversation, scope: str) -> Conversation:
        """Its file parts as the video, image or audio parts their files are."""
        if not conversation.parts(FileRef):
            return conversation

        async def typed(p: Part) -> Part:
            if not isinstance(p, FileRef):
                return p
            kind = await asyncio.to_thread(self.fetcher.kind_of, p.url, p.where, scope)
            if kind == "video":
                return VideoRef(url=p.url, where=p.where, audio=p.audio)
            return ImageRef(url=p.url, where=p.where) if kind == "image" else AudioRef(url=p.url, where=p.where)

        return replace(conversation, turns=[t if isinstance(t.content, str) else
                                            replace(t, content=[await typed(p) for p in t.content])
                                            for t in conversation.turns])

    async def _fetch(self, ref: VideoRef | ImageRef | AudioRef, kind: Kind, scope: str, attachments: Mapping[str, Path] | None,
                     budget: RequestBudget) -> bytes | FrameList | StoredVideo | None:
        """The part's media; None for a part named by its uuid alone (the caches hold it)."""
        if not ref.url and getattr(ref, "uuid", None) is not None:
            return None
        return await self.fetcher.fetch(ref.url, kind, ref.where, scope, attachments, budget)

    def _decoded(self, parts: list[str], infos: list[dict[str, Any]], context: int | None) -> None:
        """The media models' answer for a request's videos: refused when they cannot fit, counted."""
        docs = [VideoInfo.from_dict(i) for i in infos]
        check_context([(where, int(d.num_video_tokens or 0)) for where, d in zip(parts, docs, strict=True)],
                      context, estimated=False)
        self.metrics.videos.inc(len(docs))
        self.metrics.frames.inc(sum(int(d.num_frames or 0) for d in docs))
        for doc in docs:
            if doc.cache in ("hit", "miss", "off"):
                self.metrics.media_cache.labels(result=doc.cache).inc()

    async def _check_options(self, refs: list[VideoRef], options: list[dict[str, Any]]) -> list[VideoOptions]:
        """Each video's options as the media models will read them, refused early when out of budget."""
        if not refs:
            return []
        step = await self._preprocessor_step()
        resolved = [resolved_options(o, step, ref.where) for ref, o in zip(refs, options, strict=True)]
        for ref, opts in zip(refs, resolved, strict=True):
            check_frames_asked(opts, self.settings, ref.where)
        return resolved

    async def _preprocessor_step(self) -> PreprocessorStep:
        """The media settings of the served model (video_preprocessor's describe) as a local step: it
        resolves options and estimates tokens exactly as the media models do."""
        if self._preprocessor is None:
            described = await self.backend.describe_media()
            params = {k: v for k, v in described.get("parameters", {}).items() if k.startswith("default_")}
            self._preprocessor = PreprocessorStep(params, media=MediaSettings.from_dict(described["media"]),
                                                  engine=described.get("engine") or {})
        return self._preprocessor

    async def media_settings(self) -> dict[str, Any]:
        """The effective media settings and engine limits, as /v1/models shows them."""
        step = await self._preprocessor_step()
        return step.describe()

    @staticmethod
    def _media_error(exc: PipelineError, parts: list[str], audio_parts: list[str] | None = None,
                     embeds_parts: list[str] | None = None) -> OpenAIError:
        """The media model's refusal, naming the part it is about: the error says which item of which
        kind (its ``kind`` and ``index``: the videos in request order, and llm's audio and image_embeds
        parts); one about the videos of a request with one video names that video."""
        err = from_exception(exc)
        if err.status >= 500:
            return err
        items = {"video": parts, "audio": audio_parts or [], "image_embeds": embeds_parts or []}.get(
            exc.kind or "video", [])
        if exc.index is not None and exc.index < len(items):
            where, detail = items[exc.index], exc.detail
        elif exc.index is None and len(items) == 1:
            where, detail = items[0], err.message
        else:
            return err
        err.param = where
        err.message = f"{where}: {detail}"
        return err

    async def generate(self, request: LlmRequest) -> AsyncIterator[Delta]:
        """The llm model's deltas; an ``abort`` finish (server shutting down) becomes an error.

        When llm decodes the videos, its video_info response fills ``request.infos`` (and is not
        passed on), and a media refusal becomes the part's 4xx, as a dry run would answer it.
        A request tritonserver refuses as unavailable before any text arrived is sent again, as the
        retry policy allows (``triton_retries``), under a new request id: nothing was streamed yet."""
        policy = RetryPolicy(self.settings.triton_retries, self.settings.retry_backoff_s)
        for retry in itertools.count():
            attempt = request if retry == 0 else replace(request, request_id=f"{request.request_id}-retry{retry}")
            answered = False
            try:
                async with aclosing(self._generate_once(attempt)) as deltas:
                    async for delta in deltas:
                        answered = True
                        yield delta
                return
            except EngineUnavailable as exc:
                if answered or not exc.transient or retry >= policy.retries:
                    raise
                wait = policy.wait_s(retry)
                logger.warning("request %s: %s; trying again in %.2f s", request.request_id, exc, wait)
            await asyncio.sleep(wait)

    async def _generate_once(self, request: LlmRequest) -> AsyncIterator[Delta]:
        started = time.perf_counter()
        # Every layer closes the iterator it consumes: an async generator left suspended at a
        # yield is only closed by the garbage collector, and until then the Triton request runs.
        async with aclosing(self.backend.generate(request)) as deltas:
            try:
                async for delta in deltas:
                    if delta.video_info is not None:
                        self.metrics.media_duration.observe(time.perf_counter() - started)
                        step = await self._preprocessor_step()
                        self._decoded(request.video_parts, delta.video_info, context_tokens(self.settings, step.engine))
                        request.infos[:] = delta.video_info  # the routers hold this list: their video_plan
                        continue
                    if delta.finish_reason == "abort":
                        raise EngineUnavailable("generation was aborted by the server (shutting down?)",
                                                transient=False)
                    yield delta
            except MediaFailed as exc:
                raise self._media_error(exc.error, request.video_parts, request.audio_parts,
                                        request.embeds_parts) from None
            except InvalidInput as exc:  # a refused structured_outputs / logit_bias ...: named as the client sent it
                raise named_error(exc, request.sampling) from None

    async def start_stream(self, request: LlmRequest) -> AsyncIterator[Delta]:
        """The llm model's deltas once the first has arrived, so that errors the model finds
        before generating (bad sampling, a prompt too long) still become an HTTP error status."""
        deltas = self.generate(request)
        try:
            first = await deltas.__anext__()
        except StopAsyncIteration:
            return _empty()
        except BaseException:
            await deltas.aclose()
            raise
        return _chain(first, deltas)

    async def complete(self, request: LlmRequest) -> Completion:
        """The whole answer of a non-streamed request."""
        choices = {i: Choice(index=i) for i in range(request.n)}
        usage = Usage()
        async with aclosing(self.generate(request)) as deltas:
            async for delta in deltas:
                choice = choices.setdefault(delta.index, Choice(index=delta.index))
                choice.text += delta.text
                if delta.logprobs is not None:
                    choice.logprobs = (choice.logprobs or []) + delta.logprobs
                choice.tool_calls += delta.tool_calls or []
                if delta.finish_reason:
                    choice.finish_reason = delta.finish_reason
                usage.add(delta)
        self.observe(usage)
        return Completion(choices=[choices[i] for i in sorted(choices)], usage=usage)

    def observe(self, usage: Usage) -> None:
        self.metrics.video_tokens.inc(usage.video_tokens)
        self.metrics.prompt_tokens.inc(usage.prompt_tokens)
        self.metrics.completion_tokens.inc(usage.completion_tokens)


def _wire(ref: VideoRef, data: bytes | FrameList | StoredVideo | None, options: dict[str, Any],
          scope: str) -> tuple[bytes, dict[str, Any]]:
    """The video's ``video`` element and options document, with its tenant-scoped uuid if it has one:
    video_decoder records it as an alias of the content, or (an empty element) serves it from its cache."""
    element, doc = (b"", dict(options)) if data is None else wire_video(data, options)
    if ref.uuid is not None:
        doc.update(VideoOptionsDoc(uuid=scoped_uuid(scope, ref.uuid, ref.where)).to_dict())
    return element, doc


async def all_of(work: Sequence[Awaitable[T]]) -> list[T]:
    """Every result, run concurrently; the first failure cancels the rest."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _empty() -> AsyncIterator[Delta]:
    return
    yield  # an async generator that yields nothing


async def _chain(first: Delta, rest: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
    try:
        yield first
        async for delta in rest:
            yield delta
    finally:
        await rest.aclose()  # type: ignore[attr-defined]  # runs the backend's cancel on an early exit


def check_embeds_asked(embeds: list[EmbedsRef], images: list[ImageRef], engine: Mapping[str, Any]) -> None:
    """image_embeds parts need vLLM's enable_mm_embeds in the llm's model.json, and cannot be mixed
    with raw images in one request (as in vLLM); their tensors are checked by the llm model."""
    if not engine.get("enable_mm_embeds"):
        raise OpenAIError(400, f"{embeds[0].where}: embedding inputs are off on this server; the llm's model.json "
                          "must set \"enable_mm_embeds\": true (vLLM's --enable-mm-embeds)", param=embeds[0].where,
                          code="unsupported_modality")
    if images:
        raise OpenAIError(400, f"{embeds[0].where}: mixing raw image and embedding inputs is not allowed",
                          param=embeds[0].where, code="invalid_value")
