"""Per-request logic of the media models, as plain callables on numpy dicts.

Each step validates its configuration at construction (model load) and its
inputs per request, raising typed errors from :mod:`video_pipeline.errors`.
Media tensors carry N >= 0 videos packed (:mod:`video_pipeline.media.packing`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

from video_pipeline import contract as C
from video_pipeline.cache import CacheObserver, Entry, MediaCache, cache_key, content_hash, default_root
from video_pipeline.contract import VideoMetadata, VideoOptionsDoc
from video_pipeline.errors import InvalidInput, MediaTooLarge, PipelineError
from video_pipeline.media.decode import DecodedVideo, decode_video
from video_pipeline.media.frame_list import decode_frame_list
from video_pipeline.media.frame_list import split as split_frame_list
from video_pipeline.media.gpu_decode import BACKEND_PARAM, DecodeBackend, select_backend
from video_pipeline.media.model_media import (
    MediaSettings,
    apply_overrides,
    engine_limits,
    load_media_settings,
    served_model_folder,
)
from video_pipeline.media.options import DEFAULT_FPS, DecodeLimits, VideoOptions
from video_pipeline.media.packing import pack, split, unpack
from video_pipeline.media.preprocess import preprocess

logger = logging.getLogger(__name__)

Inputs = dict[str, "np.ndarray | None"]
Outputs = dict[str, np.ndarray]

# Per-request defaults an operator may set (config.pbtxt "default_<key>"); the pixel budget's
# defaults are otherwise the served model's own bounds.
_DEFAULTABLE = VideoOptionsDoc.defaultable()
# Where the served model is: its folder, or the llm model's model.json (relative paths: from this
# model's folder). Its processor files decide frame sizes and token counts (MediaSettings); config
# parameters named like a MediaSettings field override what the folder says (and are logged).
SERVED_MODEL = "served_model"
MEDIA_FIELDS = tuple(f.name for f in fields(MediaSettings) if f.name not in ("family", "sizing", "sources"))
# Keys Triton itself reads from a model's parameters.
_TRITON_KEYS = {"EXECUTION_ENV_PATH"}
# The decoder's media cache (video_pipeline.cache): its size (0: off) and folder ("": one per server in /dev/shm).
_CACHE_KEYS = ("cache_max_bytes", "cache_dir")
# Limits that only bound effort, never change what a decode returns: left out of cache keys.
_EFFORT_ONLY = ("decode_timeout_s", "threads")
# A video given by path instead of bytes (contract.MEDIA_PATH), read under the decoder's media_root
# (config parameter, or this environment variable when the parameter is empty; neither: paths refused).
PATH_KEY = C.MEDIA_PATH
MEDIA_ROOT_ENV = "VLT_DECODER_MEDIA_ROOT"
# The Files API's content-addressed blobs (openai_frontend.files.store): blobs/ab/<62 more hex digits>.
_BLOB = re.compile(r"(?:^|/)blobs/([0-9a-f]{2})/([0-9a-f]{62})$")


def as_bytes_list(arr: np.ndarray | None, name: str) -> list[bytes]:
    """A BYTES tensor as a list of bytes (empty when the input is absent)."""
    if arr is None:
        return []
    out = []
    for value in arr.reshape(-1):
        if isinstance(value, str):
            out.append(value.encode())
        elif isinstance(value, (bytes, bytearray, np.bytes_)):
            out.append(bytes(value))
        else:
            raise InvalidInput(f"input '{name}' must be BYTES")
    return out


def json_tensor(items: list[Any]) -> np.ndarray:
    """A BYTES tensor holding one compact JSON document per element."""
    return np.array([json.dumps(x, separators=(",", ":")).encode() for x in items], dtype=np.object_)


def parse_json_list(arr: np.ndarray | None, name: str) -> list[Any]:
    out = []
    for raw in as_bytes_list(arr, name):
        try:
            out.append(json.loads(raw))
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"{name} is not valid JSON: {exc}") from None
    return out


def check_params(params: dict[str, str], allowed: set[str]) -> None:
    """Unknown config.pbtxt parameters fail the model load instead of being ignored."""
    unknown = sorted(set(params) - allowed - _TRITON_KEYS)
    if unknown:
        raise InvalidInput(f"unknown parameter(s) {unknown}; known: {sorted(allowed)}")


def _option_defaults(params: dict[str, str]) -> dict[str, Any]:
    """Model-level defaults for per-request options (e.g. the model's patch factor)."""
    out: dict[str, Any] = {k: params[f"default_{k}"] for k in _DEFAULTABLE if params.get(f"default_{k}")}
    VideoOptions.from_dict(out)  # fail the model load on bad defaults
    return out


def resolve_parameters(params: dict[str, str], model_dir: str | Path | None) -> dict[str, str]:
    """A model's parameters with a relative ``served_model`` made absolute from the model's folder
    (``model_dir``: the folder holding config.pbtxt)."""
    served = params.get(SERVED_MODEL)
    if not served or Path(served).is_absolute() or model_dir is None:
        return dict(params)
    return {**params, SERVED_MODEL: str((Path(model_dir) / served).resolve())}


def media_settings(params: dict[str, str]) -> tuple[MediaSettings, Path | None]:
    """The served model's media settings (and its model.json, if named) from a step's parameters."""
    overrides = {k: params[k] for k in MEDIA_FIELDS if params.get(k)}
    where = params.get(SERVED_MODEL) or ""
    if not where:
        settings = apply_overrides(MediaSettings(), overrides)
        logger.info("no %s configured: media settings are %s's processor defaults", SERVED_MODEL, settings.family)
        return settings, None
    path = Path(where)
    settings = load_media_settings(served_model_folder(path), overrides)
    logger.info("media settings of %s: %s", where, json.dumps(settings.to_dict(), default=str))
    return settings, (path if path.is_file() else None)


def check_request_media(opts: VideoOptions, media: MediaSettings) -> None:
    """A request's settings the served model cannot take are refused, naming them."""
    if opts.patch_factor is not None and opts.patch_factor != media.factor:
        raise InvalidInput(f"patch_factor {opts.patch_factor} does not match the served model's patch size x merge "
                           f"({media.patch_size}x{media.merge_size} = {media.factor}); leave it out")
    one_patch = media.factor * media.factor
    if media.takes_pixel_budget and opts.max_pixels is not None and opts.max_pixels < one_patch:
        raise InvalidInput(f"max_pixels {opts.max_pixels} is below one {media.factor}x{media.factor} patch "
                           f"({one_patch} pixels), the least the served model can see")


def video_options(
    inputs: Inputs, n: int, defaults: dict[str, Any], media: MediaSettings | None = None
) -> list[VideoOptions]:
    """Options for each of ``n`` videos: none given, one shared, or one per video."""
    docs = parse_json_list(inputs.get(C.VIDEO_OPTIONS), C.VIDEO_OPTIONS)
    if len(docs) not in (0, 1, n):
        raise InvalidInput(f"{C.VIDEO_OPTIONS} must hold 1 or {n} elements (one per video), got {len(docs)}")
    out = []
    for i in range(n):
        doc = docs[i] if len(docs) == n else (docs[0] if docs else {})
        if doc is None:
            doc = {}
        if not isinstance(doc, dict):
            raise InvalidInput(f"{C.VIDEO_OPTIONS} must be JSON objects")
        # how to sample it, not where the video is or what kind of bytes it is
        sampling = VideoOptionsDoc.from_dict(doc).sampling()
        media = media or MediaSettings()
        # The model's processor's frame cap is the default cap (an operator's default_max_frames wins).
        model_default = VideoOptionsDoc(max_frames=media.max_frames)
        opts = VideoOptions.from_dict({**model_default.to_dict(), **defaults, **sampling.to_dict()})
        check_request_media(opts, media)
        out.append(opts)
    return out


class DecoderStep:
    """``video_decoder``: N containers -> packed sampled RGB frames, timestamps, metadata.

    With ``cache_max_bytes`` > 0 each video's output is kept in a :class:`MediaCache` shared
    by every decoder instance, keyed by the sha256 of its bytes and all the options that
    decide the output; each video's metadata says ``cache`` (``hit``/``miss``/``off``) and
    ``cache_key`` (the key, also the identity the preprocessor derives vLLM's uuid from).
    """

    def __init__(self, params: dict[str, str], observer: CacheObserver | None = None,
                 backend: DecodeBackend | None = None) -> None:
        check_params(
            params,
            {f.name for f in fields(DecodeLimits)} | {f"default_{k}" for k in _DEFAULTABLE} | set(MEDIA_FIELDS)
            | set(_CACHE_KEYS) | {"media_root", SERVED_MODEL, BACKEND_PARAM},
        )
        # PyAV, or NVDEC with PyAV as fallback (video_pipeline.media.gpu_decode); ``backend``: tests.
        self.backend = backend or select_backend(params.get(BACKEND_PARAM) or "pyav")
        self.limits = DecodeLimits.from_params(params)
        root = params.get("media_root") or os.environ.get(MEDIA_ROOT_ENV, "")
        self.media_root = Path(root).resolve() if root else None
        self.defaults = _option_defaults(params)
        self.media, _ = media_settings(params)
        self.cache = _cache(params, observer)
        limits = {k: v for k, v in asdict(self.limits).items() if k not in _EFFORT_ONLY}
        self._key_base = {"decoder": decoder_version(), "limits": limits, "media": self.media.key(),
                          "backend": self.backend.key()}

    def __call__(self, inputs: Inputs) -> Outputs:
        videos: list[bytes | Path] = list(as_bytes_list(inputs.get(C.VIDEO), C.VIDEO))
        options = video_options(inputs, len(videos), self.defaults, self.media)
        for i, path in enumerate(video_paths(inputs, len(videos))):
            if path is not None:
                if videos[i]:
                    raise InvalidInput(f"give its bytes or a path in {C.VIDEO_OPTIONS}, not both", kind="video",
                                       index=i)
                videos[i] = self._confined(path, i)
        total = sum(v.stat().st_size if isinstance(v, Path) else len(v) for v in videos)
        if total > self.limits.max_input_bytes:
            raise MediaTooLarge(f"the videos hold {total} bytes; the limit is {self.limits.max_input_bytes}")
        lists = frame_lists(inputs, len(videos))
        uuids = video_uuids(inputs, len(videos))
        decoded = []
        for i, (data, opts) in enumerate(zip(videos, options, strict=True)):
            try:
                if lists[i] is not None:
                    if isinstance(data, Path):
                        data = data.read_bytes()
                    decoded.append(decode_frame_list(split_frame_list(data), lists[i], self.limits))
                    continue
                if uuids[i] is not None and not data:
                    decoded.append(self._cached(uuids[i], opts))  # type: ignore[arg-type]
                    continue
                decoded.append(self._decode(data, opts, uuids[i]))
            except PipelineError as exc:  # about this video; its number named when there are several
                raise exc.at("video", i if len(videos) > 1 else None) from None
        metadata = [{**d.metadata, **VideoMetadata(num_frames=int(d.frames.shape[0])).to_dict()} for d in decoded]
        return {
            C.FRAMES: pack([d.frames for d in decoded]),
            C.TIMESTAMPS: np.concatenate([d.timestamps for d in decoded]) if decoded else np.zeros(0),
            C.FRAME_INDICES: (
                np.concatenate([d.frame_indices for d in decoded]) if decoded else np.zeros(0, np.int64)
            ),
            C.VIDEO_METADATA: json_tensor(metadata),
        }

    def _confined(self, path: str, i: int) -> Path:
        """The file a path names, if it is a regular file under ``media_root`` (symlinks resolved)."""
        if self.media_root is None:
            raise InvalidInput("this video_decoder takes no paths (no media_root is configured)", kind="video",
                               index=i)
        if not isinstance(path, str) or not path or "\x00" in path:
            raise InvalidInput(f"{PATH_KEY} must be a non-empty string", kind="video", index=i)
        real = (self.media_root / path).resolve()
        if not real.is_relative_to(self.media_root):
            raise InvalidInput(f"{path[:200]!r} is outside this decoder's media_root", kind="video", index=i)
        if not real.is_file():
            raise InvalidInput(f"no such file under media_root: {path[:200]!r}", kind="video", index=i)
        return real

    def _decode(self, data: bytes | Path, opts: VideoOptions, uuid: str | None = None) -> DecodedVideo:
        source = str(data) if isinstance(data, Path) else data
        if not isinstance(data, Path) and not data:
            return decode_video(data, opts, self.limits, self.media)  # the decoder's own "empty" error
        opts.check_limits(self.limits)  # a request over budget is refused, cached or not
        digest = _file_hash(data) if isinstance(data, Path) else content_hash(data)
        key = cache_key(self._key_base, digest, _canonical(opts, self.media))
        if uuid is not None:
            # Recorded before decoding: a failed decode leaves an alias whose entry never appears,
            # which a uuid-only request answers as "nothing cached", as it should.
            self.cache.alias(uuid, digest)

        def compute() -> Entry:
            video = self.backend.decode(source, opts, self.limits, self.media)
            return Entry({"frames": video.frames, "timestamps": video.timestamps,
                          "frame_indices": video.frame_indices}, video.metadata)

        return _from_cache(key, *self.cache.get_or_compute(key, compute))

    def _cached(self, uuid: str, opts: VideoOptions) -> DecodedVideo:
        """A video named by its uuid alone (vLLM's cache-hit shape): the entry of the content the
        uuid was last sent with, for these options; InvalidInput naming the uuid when none is cached."""
        shown = uuid.split(":", 1)[-1][:80]
        if not self.cache.enabled:
            raise InvalidInput(f"uuid {shown!r}: no media is cached on this server (its media cache is off); "
                               "send the media with the uuid")
        opts.check_limits(self.limits)
        digest = self.cache.resolve(uuid)
        if digest is None:
            raise InvalidInput(f"uuid {shown!r}: no media is cached under this uuid; send the media with it")
        key = cache_key(self._key_base, digest, _canonical(opts, self.media))

        def missing() -> Entry:
            raise InvalidInput(f"uuid {shown!r}: its media is not cached with these options (or was evicted); "
                               "send the media with the uuid")

        return _from_cache(key, *self.cache.get_or_compute(key, missing))

    def close(self) -> None:
        """At model unload: the last decoder instance removes the per-server cache folder."""
        self.cache.close()


def _from_cache(key: str, entry: Entry, status: str) -> DecodedVideo:
    """A decoded video as the cache holds it, its metadata saying how the cache served it and under which key."""
    return DecodedVideo(
        frames=np.asarray(entry.arrays["frames"]),
        timestamps=np.asarray(entry.arrays["timestamps"]),
        frame_indices=np.asarray(entry.arrays["frame_indices"]),
        metadata={**entry.meta, **VideoMetadata(cache=status, cache_key=key).to_dict()},
    )


def _docs(inputs: Inputs) -> list[VideoOptionsDoc | None]:
    """Each video_options element as a document (None: not a JSON object; video_options refuses it)."""
    return [VideoOptionsDoc.from_dict(doc) if isinstance(doc, dict) else None
            for doc in parse_json_list(inputs.get(C.VIDEO_OPTIONS), C.VIDEO_OPTIONS)]


def video_paths(inputs: Inputs, n: int) -> list[str | None]:
    """The ``path`` of each of ``n`` videos in its options (None: its bytes are in ``video``)."""
    docs = _docs(inputs)
    if len(docs) != n:  # a shared options document names no one video's file
        return [None] * n
    return [doc.path if doc is not None else None for doc in docs]


def video_uuids(inputs: Inputs, n: int) -> list[str | None]:
    """The media uuid (contract.MEDIA_UUID) of each of ``n`` videos in its options, or None."""
    docs = _docs(inputs)
    if len(docs) != n:  # a shared options document names no one video
        return [None] * n
    out: list[str | None] = []
    for i, doc in enumerate(docs):
        value = doc.uuid if doc is not None else None
        if value is not None and (not isinstance(value, str) or not value):
            raise InvalidInput(f"{C.MEDIA_UUID} must be a non-empty string", kind="video", index=i)
        out.append(value)
    return out


def frame_lists(inputs: Inputs, n: int) -> list[dict[str, Any] | None]:
    """For each of ``n`` videos: its options as sent when its ``video`` element is a frame list
    (``"frame_list": true``, contract.FRAME_LIST), else None. A frame list has its own rate, so it is
    sampled by the request's options alone, not the decoder's defaults."""
    docs = parse_json_list(inputs.get(C.VIDEO_OPTIONS), C.VIDEO_OPTIONS)
    out: list[dict[str, Any] | None] = []
    for i in range(n):
        doc = docs[i] if len(docs) == n else (docs[0] if len(docs) == 1 else None)
        flag = VideoOptionsDoc.from_dict(doc).frame_list if isinstance(doc, dict) else None
        if flag is not None and not isinstance(flag, bool):
            raise InvalidInput(f"{C.FRAME_LIST} must be true or false, got {flag!r}", kind="video", index=i)
        out.append(doc if flag else None)
    return out


def _file_hash(path: Path) -> str:
    """sha256 of a file's bytes: the Files API's blobs are named by it (that store alone writes there),
    any other file is read and hashed."""
    m = _BLOB.search(path.as_posix())
    if m:
        return m[1] + m[2]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _canonical(opts: VideoOptions, media: MediaSettings) -> dict[str, Any]:
    """The options as a cache key sees them: every field, with the default sampling and pixel budget
    spelled out, so {} and {"fps": 2} (the same decode) share an entry and nothing that differs does."""
    lo, hi = media.clamp_video_budget(opts.min_pixels, opts.max_pixels)
    fps = DEFAULT_FPS if opts.num_frames is None and opts.fps is None else opts.fps
    # only keyframe mode reads the tolerance: elsewhere it is the default, whatever was sent
    tolerance = opts.keyframe_tolerance if opts.mode == "keyframe" else VideoOptions().keyframe_tolerance
    canonical = VideoOptionsDoc(fps=fps, keyframe_tolerance=tolerance, min_pixels=lo, max_pixels=hi,
                                patch_factor=media.factor)
    return {**opts.to_dict(), **canonical.to_dict()}


def _cache(params: dict[str, str], observer: CacheObserver | None) -> MediaCache:
    raw = params.get("cache_max_bytes") or "0"
    try:
        max_bytes = int(raw)
    except ValueError:
        raise InvalidInput(f"cache_max_bytes must be an integer number of bytes, got {raw!r}") from None
    if max_bytes < 0:
        raise InvalidInput(f"cache_max_bytes must be >= 0 (0 turns the cache off), got {max_bytes}")
    folder = params.get("cache_dir") or ""
    return MediaCache(Path(folder) if folder else default_root(), max_bytes, owned=not folder, observer=observer)


@functools.cache
def decoder_version() -> str:
    """What decides a decode besides its input and options: our media code and PyAV/FFmpeg's
    versions. Part of every cache key, so a persistent cache folder never serves output an
    older decoder made."""
    import av

    from video_pipeline import contract
    from video_pipeline.media import decode, model_media, options, resize, sampling

    digest = hashlib.sha256()
    for module in (decode, sampling, options, resize, model_media, contract):  # contract: the metadata's keys
        digest.update(Path(str(module.__file__)).read_bytes())
    digest.update(json.dumps([av.__version__, av.library_versions], default=str).encode())
    return digest.hexdigest()[:16]


class PreprocessorStep:
    """``video_preprocessor``: packed frames -> packed engine-sized frames + engine metadata.

    Asked to ``describe`` (alone), it answers one ``video_info`` element: the effective media
    settings and the engine's limits from model.json, for clients such as the shim's budgets.
    ``media`` given (the shim, from such an answer) stands for the served model's folder.
    """

    def __init__(self, params: dict[str, str], media: MediaSettings | None = None,
                 engine: dict[str, Any] | None = None) -> None:
        check_params(params, {f"default_{k}" for k in _DEFAULTABLE} | set(MEDIA_FIELDS) | {SERVED_MODEL})
        self.defaults = _option_defaults(params)
        if media is not None:
            self.media, self.engine = media, dict(engine or {})
        else:
            self.media, model_json = media_settings(params)
            self.engine = engine_limits(model_json)

    def describe(self) -> dict[str, Any]:
        """What a ``describe`` request answers."""
        return {"media": self.media.to_dict(), "engine": self.engine}

    def __call__(self, inputs: Inputs) -> Outputs:
        describe = inputs.get(C.DESCRIBE)
        if describe is not None and bool(np.asarray(describe).reshape(-1)[:1].any()):
            return {C.VIDEO_FRAMES: pack([]), C.VIDEO_INFO: json_tensor([self.describe()])}
        metadata = parse_json_list(inputs.get(C.VIDEO_METADATA), C.VIDEO_METADATA)
        n = len(metadata)
        if n == 0:
            return {C.VIDEO_FRAMES: pack([]), C.VIDEO_INFO: json_tensor([])}
        frames = inputs.get(C.FRAMES)
        timestamps = inputs.get(C.TIMESTAMPS)
        indices = inputs.get(C.FRAME_INDICES)
        if frames is None or timestamps is None or indices is None:
            raise InvalidInput("frames, timestamps and frame_indices are required with video_metadata")
        shapes = []
        for doc in metadata:
            if not isinstance(doc, dict):
                raise InvalidInput("video_metadata elements must be JSON objects")
            meta = VideoMetadata.from_dict(doc)
            try:
                shapes.append((int(meta.num_frames), int(meta.output_height), int(meta.output_width)))  # type: ignore[arg-type]
            except (TypeError, ValueError):
                raise InvalidInput("video_metadata needs num_frames, output_height and output_width") from None
        counts = [s[0] for s in shapes]
        per_video = unpack(frames, shapes)
        ts = split(timestamps.reshape(-1), counts)
        idx = split(indices.reshape(-1), counts)
        options = video_options(inputs, n, self.defaults, self.media)
        sized, infos = [], []
        for i in range(n):
            f, info = preprocess(per_video[i], ts[i], idx[i], metadata[i], options[i], self.media)
            sized.append(f)
            infos.append(info)
        return {C.VIDEO_FRAMES: pack(sized), C.VIDEO_INFO: json_tensor(infos)}
