"""The ``llm`` model's per-request logic: tensors -> GenerationRequest -> streamed outputs.

No Triton imports: the adapter (:class:`video_pipeline.triton_adapter.DecoupledModel`)
hands each request's inputs and a *sink* (send / finish / fail / is_cancelled);
the engine runs on its own event-loop thread (:class:`BackgroundEngine`).

A request with ``video`` (container bytes, paths, frame lists: what video_media takes) is
decoded by the ``media`` callable the handler got (in Triton: video_media through BLS,
:class:`video_pipeline.triton_adapter.BlsMedia`) on a worker thread, so the frames never
leave Triton; one response with the ``video_info`` follows, then generation as usual.

A request with ``audio`` (encoded audio, one element per audio part) is decoded on the same
worker (:mod:`video_pipeline.media.audio`, PyAV) to mono float32 at the rate of the served model's
feature extractor; a video part marked ``use_audio_in_video`` brings its own track too, over the
window its frames cover (its span in that video's ``video_info``). A model without a feature
extractor refuses audio.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import locale
import logging
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from video_pipeline import contract as C
from video_pipeline import tokenizing
from video_pipeline.contract import SamplingPlan, VideoInfo
from video_pipeline.engines.sampling import parse_sampling
from video_pipeline.engines.tools import ToolCallParser, tool_calling_of
from video_pipeline.engines.types import (
    AudioInput,
    GenerationDelta,
    GenerationRequest,
    TokenLogprob,
    VideoInput,
)
from video_pipeline.errors import EngineUnavailable, InvalidInput, MediaTooLarge, PipelineError
from video_pipeline.jsonfile import read_json
from video_pipeline.media import embeds
from video_pipeline.media.audio import MAX_AUDIO_SECONDS, AudioSettings, decode_audio, read_audio_settings
from video_pipeline.media.embeds import EmbedsSpec
from video_pipeline.media.packing import unpack
from video_pipeline.steps import Inputs, as_bytes_list, json_tensor, parse_json_list

logger = logging.getLogger(__name__)

ENGINE_ARGS_FILE = "model.json"
#: Media calls (BLS, each blocking a thread) in flight at once; video_media's instances bound the work.
MEDIA_WORKERS = 16

#: ``media(video, video_options, request_id) -> (packed video_frames, [video_info, ...])``; raises typed errors.
Media = Callable[[np.ndarray | None, np.ndarray | None, str], tuple[np.ndarray, list[dict[str, Any]]]]


class Sink(Protocol):
    def send(self, outputs: dict[str, np.ndarray]) -> None: ...
    def finish(self, outputs: dict[str, np.ndarray] | None = None) -> None: ...
    def fail(self, exc: BaseException) -> None: ...
    def is_cancelled(self) -> bool: ...


def load_engine_args(folder: Path) -> dict[str, Any]:
    """``model.json`` as vLLM engine args, unchanged but for one convenience: a relative
    ``model`` (or ``tokenizer``) path is resolved against the folder holding model.json."""
    path = folder / ENGINE_ARGS_FILE
    args = read_json(path, "holds the vLLM engine arguments")
    if not isinstance(args, dict) or "model" not in args:
        raise InvalidInput(f"{path} must be a JSON object with at least \"model\"")
    for key in ("model", "tokenizer"):
        value = args.get(key)
        if isinstance(value, str) and value.startswith("."):
            args[key] = str((folder / value).resolve())
    return args


def decode_image(data: bytes, index: int) -> np.ndarray:
    """Encoded image bytes -> RGB uint8 (H, W, 3), refusing decompression bombs."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return np.asarray(img.convert("RGB"))
    except Image.DecompressionBombError as exc:
        raise MediaTooLarge(str(exc), kind="image", index=index) from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidInput(f"not a decodable image ({exc})", kind="image", index=index) from None


#: Bytes of decoded images kept by uuid (vLLM's cache-hit shape for images: a part with a uuid and no
#: image); images are decoded here, not by video_decoder, so its cache does not hold them.
IMAGE_CACHE_BYTES = 256 << 20


class ImageCache:
    """Decoded images (or image_embeds parts) by their (tenant-namespaced) uuid, least recently used
    out first; thread-safe. ``size`` tells an item's bytes (default: a numpy array's ``nbytes``).

    Per llm process, so it lives as long as the model: a uuid-only image part after a restart (or
    on another tritonserver) is answered "not cached", as vLLM answers a cache miss."""

    def __init__(self, max_bytes: int = IMAGE_CACHE_BYTES, size: Callable[[Any], int] | None = None) -> None:
        self.max_bytes = max_bytes
        self._size = size or (lambda item: int(item.nbytes))
        self._items: OrderedDict[str, tuple[Any, str, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, name: str, image: Any, content_uuid: str) -> None:
        size = self._size(image)
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(name, None)
            if old is not None:
                self._bytes -= old[2]
            self._items[name] = (image, content_uuid, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, _, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped

    def get(self, name: str) -> tuple[Any, str] | None:
        with self._lock:
            item = self._items.get(name)
            if item is None:
                return None
            self._items.move_to_end(name)
            return item[0], item[1]


_PART_TYPES = {"image": ("image", "image_url", "input_image"), "audio": ("audio", "input_audio", "audio_url")}


def image_uuids_of(messages: Any, kind: str = "image") -> list[str | None]:
    """The uuid (contract.MEDIA_UUID) of each image (or ``kind``: audio) part of chat ``messages``, in
    order, or None."""
    out: list[str | None] = []
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and part.get("type") in _PART_TYPES[kind]:
                value = part.get(C.MEDIA_UUID)
                if value is not None and (not isinstance(value, str) or not value):
                    raise InvalidInput(f"{C.MEDIA_UUID} must be a non-empty string", kind=kind, index=len(out))
                out.append(value)
    return out


def by_uuid(elements: list[bytes], uuids: list[str | None], cache: ImageCache | None, kind: str, noun: str,
            tag: str, decode: Callable[[bytes, int], Any], empty: Callable[[bytes], bool] = lambda data: not data,
            ) -> tuple[list[Any], list[str | None]]:
    """The request's media items of one ``kind`` decoded, and vLLM's uuid of each (its content's
    sha256 behind ``vlt-<tag>-``; None for items named by no uuid). An item with a uuid is kept in ``cache`` under it; an
    ``empty`` element with a uuid is taken from there (InvalidInput naming the uuid and ``noun`` when
    nothing is cached under it)."""
    uuids = (uuids + [None] * len(elements))[: len(elements)]
    items: list[Any] = []
    vllm_uuids: list[str | None] = []
    for i, (data, name) in enumerate(zip(elements, uuids, strict=True)):
        if name is not None and empty(data):
            found = cache.get(name) if cache is not None else None
            if found is None:
                raise InvalidInput(f"uuid {name.split(':', 1)[-1][:80]!r}: no {noun} cached under this uuid; "
                                   f"send the {noun.split()[0]} with it", kind=kind, index=i)
            items.append(found[0])
            vllm_uuids.append(found[1])
            continue
        try:
            item = decode(data, i)
        except PipelineError as exc:
            raise exc.at(kind, i) from None
        content = None
        if name is not None:
            content = f"vlt-{tag}-" + hashlib.sha256(data).hexdigest()[:40]
            if cache is not None:
                cache.put(name, item, content)
        items.append(item)
        vllm_uuids.append(content)
    return items, vllm_uuids


def request_images(encoded: list[bytes], uuids: list[str | None],
                   cache: ImageCache | None) -> tuple[list[np.ndarray], list[str | None]]:
    """The request's images decoded, and vLLM's uuid of each (:func:`by_uuid`)."""
    return by_uuid(encoded, uuids, cache, "image", "image is", "img", decode_image)


def videos_of(frames: np.ndarray | None, infos: list[Any]) -> list[VideoInput]:
    """The videos of packed ``frames`` and their ``video_info`` documents."""
    if not infos:
        return []
    if frames is None:
        raise InvalidInput(f"'{C.VIDEO_INFO}' given without '{C.VIDEO_FRAMES}'")
    try:
        docs = [VideoInfo.from_dict(i) for i in infos]
        shapes = [(int(d.num_frames), int(d.height), int(d.width)) for d in docs]  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InvalidInput(f"each {C.VIDEO_INFO} needs num_frames, height and width") from None
    return [VideoInput(frames=np.ascontiguousarray(clip), metadata=info)
            for info, clip in zip(infos, unpack(frames, shapes), strict=True)]


def audio_in_video_of(messages: Any) -> list[bool]:
    """Per video part of chat ``messages``, in order: whether it asks for its own audio track
    (contract.USE_AUDIO_IN_VIDEO)."""
    out: list[bool] = []
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and part.get("type") in ("video", "video_url", "input_video"):
                value = part.get(C.USE_AUDIO_IN_VIDEO, False)
                if not isinstance(value, bool):
                    raise InvalidInput(f"{C.USE_AUDIO_IN_VIDEO} must be true or false", kind="video", index=len(out))
                out.append(value)
    return out


def video_window(info: dict[str, Any]) -> tuple[float, float | None]:
    """(start, end) seconds of the window a video's frames were sampled from (its video_info)."""
    doc = VideoInfo.from_dict(info)
    sampling = doc.sampling or SamplingPlan()
    start, end, duration = sampling.start, sampling.end, doc.duration
    if end is None and isinstance(duration, (int, float)) and duration > 0:
        end = float(duration)
    return float(start or 0.0), None if end is None else float(end)


def decode_request_audio(encoded: list[bytes], settings: AudioSettings, max_seconds: float,
                         uuids: list[str | None] | None = None,
                         cache: ImageCache | None = None) -> tuple[list[AudioInput], list[str | None]]:
    """The request's audio parts, decoded to the model's rate (errors name ``audio <i>``), and vLLM's
    uuid of each, cached by uuid as images are (:func:`by_uuid`)."""
    def decode(data: bytes, i: int) -> AudioInput:
        if not data:
            raise InvalidInput("empty", kind="audio", index=i)
        clip = decode_audio(data, settings.sampling_rate, max_seconds=max_seconds, what=f"audio {i}")
        return AudioInput(clip.samples, clip.sampling_rate)

    return by_uuid(encoded, uuids or [], cache, "audio", "audio is", "aud", decode)


def request_embeds(docs: list[bytes], uuids: list[str | None], spec: EmbedsSpec | None, takes: bool,
                   cache: ImageCache | None) -> tuple[list[dict[str, Any]], list[str | None]]:
    """The request's image_embeds parts decoded and checked against the model (errors name
    ``image_embeds <i>``), and vLLM's uuid of each, cached by uuid as images are (:func:`by_uuid`;
    an empty payload, "{}", with a uuid names embeddings sent before)."""
    if not takes:
        raise InvalidInput("embedding inputs are off on this server; the llm's model.json must set "
                           "\"enable_mm_embeds\": true (vLLM's --enable-mm-embeds)", kind="image_embeds", index=0)
    if spec is None:
        raise InvalidInput("this model takes no image embeddings here (only Qwen-VL-style models with an "
                           "image_grid_thw)", kind="image_embeds", index=0)
    return by_uuid(docs, uuids, cache, "image_embeds", "embeddings are", "emb",
                   lambda doc, i: embeds.decode_part(doc, i, spec),
                   empty=lambda doc: not embeds.parse_payload(doc or b"{}", 0))


def add_video_audio(videos: list[VideoInput], infos: list[dict[str, Any]], elements: list[bytes],
                    settings: AudioSettings, max_seconds: float) -> list[VideoInput]:
    """Each video with its own audio track over its frames' window; the span goes into its video_info."""
    out = []
    for i, (video, info) in enumerate(zip(videos, infos, strict=True)):
        data = elements[i] if i < len(elements) else b""
        if not data:
            raise InvalidInput(f"{C.USE_AUDIO_IN_VIDEO} needs the video's bytes (not a path, a cached uuid or a "
                               "frame list)", kind="video", index=i)
        start, end = video_window(info)
        try:
            clip = decode_audio(data, settings.sampling_rate, start=start, end=end, max_seconds=max_seconds,
                                what=f"video {i}")
        except PipelineError as exc:
            raise exc.at("video", i) from None
        info.update(VideoInfo(audio=clip.span()).to_dict())
        out.append(dataclasses.replace(video, audio=AudioInput(clip.samples, clip.sampling_rate)))
    return out


def build_request(inputs: Inputs, request_id: str, image_cache: ImageCache | None = None) -> GenerationRequest:
    """Validates one request's tensors into a :class:`GenerationRequest`; images named by a uuid
    alone come from ``image_cache``."""
    prompts = as_bytes_list(inputs.get(C.TEXT_INPUT), C.TEXT_INPUT)
    messages_docs = parse_json_list(inputs.get(C.MESSAGES), C.MESSAGES)
    if bool(prompts) == bool(messages_docs):
        raise InvalidInput(f"give exactly one of '{C.TEXT_INPUT}' (a raw prompt) or '{C.MESSAGES}' (chat JSON)")
    prompt = None
    if prompts:
        try:
            prompt = prompts[0].decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"{C.TEXT_INPUT} is not valid UTF-8") from None
    videos = videos_of(inputs.get(C.VIDEO_FRAMES), parse_json_list(inputs.get(C.VIDEO_INFO), C.VIDEO_INFO))
    images, image_uuids = request_images(list(as_bytes_list(inputs.get(C.IMAGE), C.IMAGE)),
                                         image_uuids_of(messages_docs[0] if messages_docs else None), image_cache)
    raw_sampling = as_bytes_list(inputs.get(C.SAMPLING_PARAMETERS), C.SAMPLING_PARAMETERS)
    sampling = parse_sampling(raw_sampling[0] if raw_sampling else None)
    stream_arr = inputs.get(C.STREAM)
    stream = bool(stream_arr.reshape(-1)[0]) if stream_arr is not None and stream_arr.size else False
    template_kwargs = tokenizing.chat_template_kwargs_of(inputs.get(C.CHAT_TEMPLATE_KWARGS))
    if template_kwargs and prompt is not None:
        raise InvalidInput(f"'{C.CHAT_TEMPLATE_KWARGS}' needs '{C.MESSAGES}' (a raw prompt has no chat template)")
    tool_docs = parse_json_list(inputs.get(C.TOOLS), C.TOOLS)
    if tool_docs and prompt is not None:
        raise InvalidInput(f"'{C.TOOLS}' needs '{C.MESSAGES}' (a raw prompt has no chat template)")
    tools, tool_calling = tool_calling_of(tool_docs[0]) if tool_docs else ([], None)
    return GenerationRequest(
        request_id=request_id or f"req-{uuid.uuid4().hex}",
        prompt=prompt,
        messages=messages_docs[0] if messages_docs else None,
        videos=videos,
        images=images,
        image_uuids=image_uuids if any(image_uuids) else (),
        sampling=sampling,
        stream=stream,
        chat_template_kwargs=template_kwargs,
        tools=tools,
        tool_calling=tool_calling,
    )


def delta_outputs(delta: GenerationDelta, text: str | None = None,
                  logprobs: tuple[TokenLogprob, ...] | None = None,
                  tool_calls: list[dict[str, Any]] | None = None) -> dict[str, np.ndarray]:
    """One llm response for ``delta`` (``text`` and ``logprobs``: a whole choice's, instead of the delta's;
    ``tool_calls``: what the request's tool parser found in it)."""
    outputs = {
        C.TEXT_OUTPUT: np.array([(delta.text if text is None else text).encode()], dtype=np.object_),
        C.FINISH_REASON: np.array([(delta.finish_reason or "").encode()], dtype=np.object_),
        C.CHOICE_INDEX: np.array([delta.index], dtype=np.uint32),
        C.NUM_INPUT_TOKENS: np.array([delta.prompt_tokens], dtype=np.uint32),
        C.NUM_OUTPUT_TOKENS: np.array([delta.completion_tokens], dtype=np.uint32),
        C.NUM_VIDEO_TOKENS: np.array([delta.video_tokens], dtype=np.uint32),
    }
    logprobs = delta.logprobs if logprobs is None else logprobs
    if logprobs is not None:
        outputs[C.LOGPROBS] = json_tensor([[t.to_json() for t in logprobs]])
    if tool_calls:
        outputs[C.TOOL_CALLS] = json_tensor([tool_calls])
    return outputs


def media_error(exc: PipelineError) -> PipelineError:
    """An error of the request's media step, marked as about its videos unless it names its item (an
    audio or image_embeds part, or the video the decoder numbered): the shim names that part."""
    return exc.at("video")


class LlmHandler:
    """Owns the engine; answers each request through its sink.

    ``media`` (optional) decodes a request's ``video`` input; without it such requests are refused.
    """

    def __init__(self, engine: Any, media: Media | None = None, audio: AudioSettings | None = None,
                 max_audio_seconds: float = MAX_AUDIO_SECONDS) -> None:
        self.engine = engine  # a BackgroundEngine (or anything with its submit/check_health/shutdown)
        self.media = media
        self.audio = audio  # the served model's feature extractor; None: it takes no audio
        self.max_audio_seconds = max_audio_seconds
        self.images = ImageCache()
        self.embeds = ImageCache(size=embeds.nbytes)
        self.sounds = ImageCache(size=lambda item: int(item.samples.nbytes))  # decoded audio parts by uuid
        self._media_pool = ThreadPoolExecutor(MEDIA_WORKERS, thread_name_prefix="llm-media")
        # Requests still in their media step, by id: an abort request must stop them too.
        self._decoding: dict[str, set[threading.Event]] = {}
        self._decoding_lock = threading.Lock()

    @classmethod
    def from_model_dir(cls, folder: Path, media: Media | None = None) -> LlmHandler:
        # The stub runs in the C locale; torch's inductor then fails decoding its own files.
        locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
        os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
        from video_pipeline.engines.background import BackgroundEngine
        from video_pipeline.media.model_media import served_model_folder

        args = load_engine_args(folder)
        audio = read_audio_settings(served_model_folder(folder / ENGINE_ARGS_FILE))
        logger.info("starting vLLM with %s (audio: %s)", args, audio or "none")
        return cls(BackgroundEngine.vllm(args), media, audio)

    def submit(self, inputs: Inputs, request_id: str, sink: Sink) -> None:
        abort_ids = as_bytes_list(inputs.get(C.ABORT_REQUEST_ID), C.ABORT_REQUEST_ID)
        if abort_ids:
            self._abort(abort_ids[0].decode("utf-8", "replace"), sink)
            return
        if inputs.get(C.TOKENIZE) is not None or inputs.get(C.TOKEN_IDS) is not None:
            self._tokenize(inputs, request_id, sink)
            return
        video = inputs.get(C.VIDEO)
        audio = list(as_bytes_list(inputs.get(C.AUDIO), C.AUDIO))
        image_embeds = list(as_bytes_list(inputs.get(C.IMAGE_EMBEDS), C.IMAGE_EMBEDS))
        if image_embeds and inputs.get(C.IMAGE) is not None:
            raise InvalidInput("mixing raw image and embedding inputs is not allowed", kind="image_embeds", index=0)
        if video is None and not audio and not image_embeds:
            request = build_request(inputs, request_id, self.images)
            if any(audio_in_video_of(request.messages)):
                raise InvalidInput(f"{C.USE_AUDIO_IN_VIDEO} needs the video's container bytes (the '{C.VIDEO}' "
                                   "input), not decoded frames", kind="video", index=0)
            self._generate(request, sink)
            return
        if video is not None and (inputs.get(C.VIDEO_FRAMES) is not None or inputs.get(C.VIDEO_INFO) is not None):
            raise InvalidInput(f"give '{C.VIDEO}' (decoded here) or '{C.VIDEO_FRAMES}' + '{C.VIDEO_INFO}', not both")
        if video is not None and self.media is None:
            raise InvalidInput(f"this llm model takes no '{C.VIDEO}' input (it has no media model)")
        request = build_request(inputs, request_id, self.images)  # the rest is checked before any decoding
        tracks = audio_in_video_of(request.messages)
        if any(tracks) and video is None:
            raise InvalidInput(f"{C.USE_AUDIO_IN_VIDEO} needs the video's container bytes (the '{C.VIDEO}' "
                               "input), not decoded frames", kind="video", index=0)
        if self.audio is None and (audio or any(tracks)):
            kind, index = ("audio", 0) if audio else ("video", tracks.index(True))
            raise InvalidInput("this model takes no audio (its folder has no feature extractor)", kind=kind,
                               index=index)
        stop = threading.Event()
        with self._decoding_lock:
            self._decoding.setdefault(request.request_id, set()).add(stop)
        try:
            self._media_pool.submit(self._decode_then_generate, request, video, inputs.get(C.VIDEO_OPTIONS),
                                    request_id, sink, stop, audio, any(tracks), image_embeds)
        except RuntimeError:  # the pool is shut down
            self._forget(request.request_id, stop)
            raise EngineUnavailable("the model is shutting down") from None

    def _decode_then_generate(self, request: GenerationRequest, video: np.ndarray | None,
                              options: np.ndarray | None, request_id: str, sink: Sink, stop: threading.Event,
                              audio: list[bytes] | None = None, video_audio: bool = False,
                              image_embeds: list[bytes] | None = None) -> None:
        """On a media worker: decode, answer the video_info, then hand the request to the engine."""
        try:
            infos: list[dict[str, Any]] | None = None
            try:
                if video is not None:
                    frames, infos = self.media(video, options, request_id)  # type: ignore[misc]
                    videos = videos_of(frames, infos)
                    if video_audio:
                        videos = add_video_audio(videos, infos, list(as_bytes_list(video, C.VIDEO)),
                                                 self.audio, self.max_audio_seconds)  # type: ignore[arg-type]
                    request = dataclasses.replace(request, videos=videos)
                if audio:
                    audios, audio_uuids = decode_request_audio(audio, self.audio,  # type: ignore[arg-type]
                                                               self.max_audio_seconds,
                                                               image_uuids_of(request.messages, "audio"), self.sounds)
                    request = dataclasses.replace(request, audios=audios,
                                                  audio_uuids=audio_uuids if any(audio_uuids) else ())
                if image_embeds:
                    engine = getattr(self.engine, "engine", self.engine)
                    parts, uuids = request_embeds(image_embeds, image_uuids_of(request.messages),
                                                  getattr(engine, "embeds_spec", None),
                                                  bool(getattr(engine, "takes_embeds", False)), self.embeds)
                    request = dataclasses.replace(request, image_embeds=parts,
                                                  image_uuids=uuids if any(uuids) else ())
            except PipelineError as exc:
                sink.fail(media_error(exc))
                return
            if stop.is_set() or sink.is_cancelled():
                logger.info("request %s cancelled by the client while decoding: not generated", request.request_id)
                sink.finish()
                return
            if infos is not None:
                sink.send({C.VIDEO_INFO: json_tensor(infos)})
            self._generate(request, sink)
        except Exception as exc:  # noqa: BLE001 - this request's error only
            sink.fail(exc)
        finally:
            self._forget(request.request_id, stop)

    def _forget(self, request_id: str, stop: threading.Event) -> None:
        with self._decoding_lock:
            same = self._decoding.get(request_id)
            if same is not None:
                same.discard(stop)
                if not same:
                    del self._decoding[request_id]

    def _generate(self, request: GenerationRequest, sink: Sink) -> None:
        texts: dict[int, list[str]] = {}
        logprobs: dict[int, list[TokenLogprob]] = {}
        tools = self._tool_parser(request)
        if tools is not None:  # vLLM's adjustments for tool calling: required/named's grammar, special tokens
            request = dataclasses.replace(request, sampling={**request.sampling, **tools.sampling})
        token_ids: dict[int, list[int]] = {}  # per choice, for the tool parser

        def on_delta(delta: GenerationDelta) -> None:
            if request.stream and tools is not None:
                if delta.logprobs is not None:
                    logprobs.setdefault(delta.index, []).extend(delta.logprobs)
                parsed = tools.stream(delta.index, delta.text, delta.token_ids, delta.finish_reason)
                if parsed is None:  # held back (a tool call's markup may be starting); the next response has it
                    return
                content, calls, finish = parsed
                held = logprobs.pop(delta.index, None)
                sink.send(delta_outputs(dataclasses.replace(delta, finish_reason=finish), content,
                                        None if held is None else tuple(held), calls))
                return
            if request.stream:
                sink.send(delta_outputs(delta))
                return
            texts.setdefault(delta.index, []).append(delta.text)
            if delta.logprobs is not None:
                logprobs.setdefault(delta.index, []).extend(delta.logprobs)
            if tools is not None:
                token_ids.setdefault(delta.index, []).extend(delta.token_ids)
            if delta.finished:  # one response per choice, with its whole text (and its tokens' logprobs)
                joined = logprobs.pop(delta.index, None)
                text = "".join(texts.pop(delta.index))
                calls = None
                if tools is not None:
                    text, calls, finish = tools.final(delta.index, text, token_ids.pop(delta.index, []),
                                                      delta.finish_reason)
                    delta = dataclasses.replace(delta, finish_reason=finish)
                sink.send(delta_outputs(delta, text, None if joined is None else tuple(joined), calls))

        def on_done(error: PipelineError | None) -> None:
            if error is None and sink.is_cancelled():
                logger.info("request %s cancelled by the client: aborted in the engine", request.request_id)
            if error is not None:
                sink.fail(error)
            else:
                sink.finish()

        self.engine.submit(request, on_delta, on_done, is_cancelled=sink.is_cancelled)

    def _tool_parser(self, request: GenerationRequest) -> ToolCallParser | None:
        """The request's tool-call parsing (vLLM's parsers, with the engine's tokenizer), or None."""
        if request.tool_calling is None:
            return None
        engine = getattr(self.engine, "engine", self.engine)
        return ToolCallParser(request.tool_calling, getattr(engine, "tokenizer", None))

    def _tokenize(self, inputs: Inputs, request_id: str, sink: Sink) -> None:
        """A ``tokenize`` (text_input or messages, text only) or ``token_ids`` (detokenize) request:
        one response from the engine's tokenizer and chat template, on a worker; nothing generated."""
        media = [n for n in (C.VIDEO, C.VIDEO_FRAMES, C.VIDEO_INFO, C.IMAGE, C.AUDIO, C.IMAGE_EMBEDS)
                 if inputs.get(n) is not None]
        if media:
            raise InvalidInput(f"'{C.TOKENIZE}' and '{C.TOKEN_IDS}' take text only, not '{media[0]}'")
        engine = getattr(self.engine, "engine", self.engine)
        ids = inputs.get(C.TOKEN_IDS)
        answer: Callable[[], dict[str, np.ndarray]]
        if ids is not None:
            given = [n for n in (C.TOKENIZE, C.TEXT_INPUT, C.MESSAGES) if inputs.get(n) is not None]
            if given:
                raise InvalidInput(f"'{C.TOKEN_IDS}' (detokenize) comes alone, not with '{given[0]}'")
            answer = lambda: tokenizing.text_outputs(tokenizing.detokenize(engine, ids), int(ids.size))  # noqa: E731
        else:
            options = tokenizing.tokenize_options(inputs.get(C.TOKENIZE))
            request = build_request(inputs, request_id)
            answer = lambda: tokenizing.tokens_outputs(tokenizing.tokenize(engine, request, options))  # noqa: E731

        def run() -> None:
            try:
                sink.finish(answer())
            except Exception as exc:  # noqa: BLE001 - this request's error only
                sink.fail(exc)

        try:
            self._media_pool.submit(run)
        except RuntimeError:  # the pool is shut down
            raise EngineUnavailable("the model is shutting down") from None

    def _abort(self, target: str, sink: Sink) -> None:
        """An abort request: stops the running request ``target``; answers finish_reason "abort"
        when one was running, "" when none was (already finished, or never seen)."""
        if not target:
            raise InvalidInput(f"{C.ABORT_REQUEST_ID} is empty")
        with self._decoding_lock:
            decoding = list(self._decoding.get(target, ()))
        for stop in decoding:
            stop.set()
        stopped = self.engine.cancel_by_id(target) + len(decoding)
        logger.info("abort request for %s: %d running request(s) stopped", target, stopped)
        reason = b"abort" if stopped else b""
        zero = np.array([0], dtype=np.uint32)
        sink.send({
            C.TEXT_OUTPUT: np.array([b""], dtype=np.object_),
            C.FINISH_REASON: np.array([reason], dtype=np.object_),
            C.CHOICE_INDEX: zero, C.NUM_INPUT_TOKENS: zero, C.NUM_OUTPUT_TOKENS: zero, C.NUM_VIDEO_TOKENS: zero,
        })
        sink.finish()

    def healthy(self) -> bool:
        try:
            self.engine.check_health(timeout=10)
            return True
        except Exception:  # noqa: BLE001 - any failure means "not healthy"
            logger.exception("engine health check failed")
            return False

    def shutdown(self) -> None:
        self._media_pool.shutdown(wait=False, cancel_futures=True)
        self.engine.shutdown()

