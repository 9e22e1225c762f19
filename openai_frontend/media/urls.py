"""Media URLs -> bytes, safe by default.

- ``data:``: a MIME type we accept (:data:`VIDEO_MIMES`, :data:`IMAGE_MIMES`, any ``audio/*``), the size
  capped before the base64 is decoded, strict base64; ``data:video/jpeg`` frame lists;
- ``http(s)://``: :mod:`openai_frontend.media.fetch` (address policy, redirects, timeouts,
  byte caps while streaming, concurrency slots);
- ``file://`` and bare paths (``/data/clip.mp4``, ``clips/a.mp4``): refused unless
  ``allowed_local_media_path`` is set; then resolved (symlinks too) and confined to it,
  regular files only;
- file ids of the Files API: a bare ``file-...``, the URL forms ``file-id://file-...`` and
  ``vllm-file://file-...`` (vLLM's scheme), and ``form://<field>``, a file part of the same
  multipart request.

Media uuids (vLLM's ``uuid`` on a part) are namespaced by tenant here (:func:`scoped_uuid`).

Every byte read counts against the request's :class:`~openai_frontend.budgets.RequestBudget`.
"""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import mimetypes
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

import httpx

from openai_frontend.budgets import RequestBudget
from openai_frontend.errors import OpenAIError, bad_request
from openai_frontend.files.store import FileStore
from openai_frontend.files.upload import sniff
from openai_frontend.media.fetch import HttpFetcher
from openai_frontend.settings import Settings, env_name
from video_pipeline.b64 import b64decode_strict

Kind = Literal["video", "image", "audio"]

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,31}):")
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)(?P<params>(?:;[^;,]*)*?);base64,(?P<data>.*)$", re.S)
FILE_ID_SCHEME = "file-id://"
VLLM_FILE_SCHEME = "vllm-file://"
#: What a file id looks like (the Files API's ids): a URL naming one must name exactly one.
FILE_ID = re.compile(r"file-[A-Za-z0-9_-]{1,128}")
#: The longest media uuid a client may give (vLLM sets none; ours keeps keys and messages sane).
MAX_UUID_CHARS = 256
FORM_SCHEME = "form://"
# Frame lists: vLLM's "data:video/jpeg;base64,<frame>,<frame>,..." (each frame a base64 image).
FRAME_LIST_MIME = "video/jpeg"
#: data: MIME types we take: containers the decoder opens, images engines read.
VIDEO_MIMES = frozenset({
    "video/mp4", "video/x-m4v", "video/quicktime", "video/webm", "video/x-matroska", "video/matroska",
    "video/x-msvideo", "video/avi", "video/mpeg", "video/mp2t", "video/3gpp", "video/3gpp2", "video/ogg",
    "video/x-flv", FRAME_LIST_MIME,
})
IMAGE_MIMES = frozenset({"image/png", "image/jpeg", "image/jpg", "image/webp", "image/gif", "image/bmp"})
#: Audio: containers and streams PyAV opens (the llm decodes them); a video's MIME type is audio too (its track).
AUDIO_MIMES = frozenset({
    "audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave", "audio/mpeg", "audio/mp3", "audio/mp4",
    "audio/x-m4a", "audio/m4a", "audio/aac", "audio/flac", "audio/x-flac", "audio/ogg", "audio/opus",
    "audio/webm", "audio/3gpp", "audio/amr", "audio/aiff", "audio/x-aiff", "audio/basic",
}) | (VIDEO_MIMES - {FRAME_LIST_MIME})
_MIMES: dict[str, frozenset[str]] = {"video": VIDEO_MIMES, "image": IMAGE_MIMES, "audio": AUDIO_MIMES}
#: OpenAI's ``input_audio.format`` -> the MIME type its data is read as.
AUDIO_FORMATS = {
    "wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac", "ogg": "audio/ogg", "opus": "audio/ogg",
    "m4a": "audio/mp4", "mp4": "audio/mp4", "aac": "audio/aac", "webm": "audio/webm", "aiff": "audio/aiff",
}


@dataclass(frozen=True)
class FrameList:
    """The still images of a ``data:video/jpeg`` URL, still encoded, in order."""

    frames: list[bytes]


@dataclass(frozen=True)
class StoredVideo:
    """An uploaded video that tritonserver's decoder reads itself (``triton_files_dir`` is set): its
    path here, for the header checks, and as the decoder sees it, sent instead of its bytes."""

    local: Path
    remote: str


@dataclass(frozen=True)
class MediaFetcher:
    """Resolves the media URLs of one app, with its settings and HTTP client."""

    settings: Settings
    http: httpx.AsyncClient
    files: FileStore | None = None
    web: HttpFetcher = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "web", HttpFetcher(self.settings, self.http))

    async def fetch(self, url: str, kind: Kind, where: str, scope: str = "",
                    attachments: Mapping[str, Path] | None = None,
                    budget: RequestBudget | None = None) -> bytes | FrameList | StoredVideo:
        """Bytes of the video/image at ``url`` (a :class:`FrameList` for frame-list videos, a
        :class:`StoredVideo` for an uploaded video the decoder can read itself).

        ``scope`` is the tenant whose file ids are visible (see the Files API); ``attachments``
        are the staged file parts of a multipart request, by field name; ``budget`` is what the
        request may still spend (a fresh one when not given).
        """
        if not isinstance(url, str) or not url:
            raise bad_request(f"{where}: the URL must be a non-empty string", where)
        budget = budget or RequestBudget(self.settings)
        m = _SCHEME.match(url)
        scheme = m[1].lower() if m else ""
        if scheme == "data":
            return self._data_url(url, kind, where, budget)
        if scheme in ("http", "https"):
            return await self.web.get(url, where, budget)
        if scheme == "file":
            return await asyncio.to_thread(self._file_url, url, where, budget)
        if url.startswith(FORM_SCHEME):
            return await asyncio.to_thread(self._attachment, url.removeprefix(FORM_SCHEME), kind, where,
                                           attachments or {}, budget)
        if scheme == "vllm-file":
            file_id = file_id_of(url, where)
            return await asyncio.to_thread(self._stored, file_id, kind, where, scope, budget)
        if url.startswith(FILE_ID_SCHEME) or url.startswith("file-"):
            return await asyncio.to_thread(self._stored, url.removeprefix(FILE_ID_SCHEME), kind, where, scope, budget)
        if not scheme:  # a bare path
            return await asyncio.to_thread(self._local, url, url, where, budget)
        raise bad_request(
            f"{where}: unsupported URL scheme {scheme[:20]!r}; use data:, http(s)://, file://, vllm-file:// or a file id", where,
            code="invalid_url",
        )

    def kind_of(self, url: str, where: str, scope: str = "") -> Kind:
        """What a file part holds: a stored file by the type its record has, a data: URL by its MIME type;
        415 for anything but a video, an image or audio (a PDF, say: no media this server reads)."""
        if url.startswith("data:"):
            m = _DATA_URL.match(url)
            if m is None:
                raise bad_request(f"{where}: a data URL must look like data:<mime>;base64,<data>", where,
                                  code="invalid_url")
            mime, what = m["mime"].lower(), "the data"
        else:
            file_id = stored_file_id(url, where)
            record = self.files.get(file_id, scope) if self.files is not None else None
            if record is None:
                raise file_not_found(file_id, where)
            mime, what = record.mime, file_id
        kind = mime.split("/", 1)[0]
        if kind not in _MIMES:
            raise OpenAIError(415, f"{where}: {what} is {mime[:80]}; a file part here must hold a video, an image "
                              "or audio", param=where, code="unsupported_media")
        return kind  # type: ignore[return-value]

    # --- data: ------------------------------------------------------------------------------------

    def _data_url(self, url: str, kind: Kind, where: str, budget: RequestBudget) -> bytes | FrameList:
        m = _DATA_URL.match(url)
        if m is None:
            raise bad_request(f"{where}: a data URL must look like data:<mime>;base64,<data>", where,
                              code="invalid_url")
        mime = m["mime"].lower()
        if mime not in _MIMES[kind] and not (kind == "audio" and mime.startswith("audio/")):
            raise OpenAIError(415, f"{where}: a {kind} data URL must have a {kind}/* MIME type this server takes "
                              f"({', '.join(sorted(_MIMES[kind]))}); got {mime[:80]}", param=where,
                              code="unsupported_media")
        data = m["data"]
        size = len(data) // 4 * 3  # what the base64 decodes to, known before decoding it
        cap, setting = ((self.settings.max_audio_bytes, "max_audio_bytes") if kind == "audio"
                        else (self.settings.max_media_bytes, "max_media_bytes"))
        if size > cap:
            raise too_large(where, f"the data URL holds about {size} bytes", cap, setting=setting)
        budget.spend(size, where)
        if mime == FRAME_LIST_MIME:
            parts = data.split(",")
            if len(parts) > self.settings.max_jpeg_frames:
                raise too_large(where, f"the frame list has {len(parts)} frames", self.settings.max_jpeg_frames,
                                unit="frames", setting="max_jpeg_frames")
            return FrameList([_b64(p, f"{where} frame {i}") for i, p in enumerate(parts)])
        return _b64(data, where)

    # --- file ids (the Files API) ----------------------------------------------------------------------

    def _stored(self, file_id: str, kind: Kind, where: str, scope: str,
                budget: RequestBudget) -> bytes | StoredVideo:
        record = self.files.get(file_id, scope, touch=True) if self.files is not None else None
        if record is None:
            raise file_not_found(file_id, where)
        if not record.mime.startswith(kind + "/") and not (kind == "audio" and record.mime.startswith("video/")):
            raise OpenAIError(415, f"{where}: {file_id} is {record.mime}, not a {kind}", param=where,
                              code="unsupported_media")
        if record.bytes > self.settings.max_media_bytes:
            raise too_large(where, f"{file_id} is {record.bytes} bytes", self.settings.max_media_bytes)
        budget.spend(record.bytes, where)
        blob = self.files.blob_path(record)  # type: ignore[union-attr]
        if kind == "video" and self.settings.triton_files_dir:
            inside = os.path.relpath(blob.resolve(), Path(self.settings.files_dir).resolve())
            if not inside.startswith(".."):  # a store of another layout: send the bytes
                if not blob.is_file():
                    raise file_not_found(file_id, where)
                return StoredVideo(blob, str(Path(self.settings.triton_files_dir) / inside))
        try:
            # The one read into memory: these bytes go to Triton as they are.
            return blob.read_bytes()
        except FileNotFoundError:  # deleted or evicted between the lookup and the read
            raise file_not_found(file_id, where) from None

    def _attachment(self, name: str, kind: Kind, where: str, attachments: Mapping[str, Path],
                    budget: RequestBudget) -> bytes:
        path = attachments.get(name)
        if path is None:
            raise bad_request(f"{where}: no file part named {name[:80]!r} in this multipart request", where,
                              code="invalid_url")
        size = path.stat().st_size
        if size > self.settings.max_media_bytes:
            raise too_large(where, f"the file part {name!r} is {size} bytes", self.settings.max_media_bytes)
        budget.spend(size, where)
        data = path.read_bytes()
        found = sniff(data[:64])
        if kind != "audio" and (found is None or found[0] != kind):  # audio: the header probe decides
            raise OpenAIError(415, f"{where}: the file part {name!r} is not a {kind}", param=where,
                              code="unsupported_media")
        return data

    # --- file:// and bare paths ------------------------------------------------------------------

    def _file_url(self, url: str, where: str, budget: RequestBudget) -> bytes:
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise bad_request(f"{where}: file:// URLs must name a local path", where, code="invalid_url")
        return self._local(unquote(parts.path), url, where, budget)

    def _local(self, raw: str, shown: str, where: str, budget: RequestBudget) -> bytes:
        """A file inside ``allowed_local_media_path``; ``raw`` is absolute or relative to that directory."""
        root = self.settings.allowed_local_media_path
        shown = shown[:200]
        if not root:
            raise OpenAIError(403, f"{where}: file:// URLs and local paths are disabled on this server "
                              f"(the operator sets {env_name('allowed_local_media_path')} to allow one directory)",
                              param=where, code="url_not_allowed")
        allowed = Path(root).resolve()
        try:
            if "\x00" in raw:
                raise ValueError("NUL in path")
            # Symlinks resolved; an absolute raw replaces allowed. Not strict: a path outside is
            # refused whether or not it exists, so answers tell nothing about files out there.
            path = (allowed / raw).resolve()
        except (OSError, RuntimeError, ValueError):
            raise bad_request(f"{where}: no such file: {shown!r}", where, code="media_fetch_failed") from None
        if not path.is_relative_to(allowed):
            raise OpenAIError(403, f"{where}: {shown!r} is outside the allowed media directory", param=where,
                              code="url_not_allowed")
        try:
            mode = path.stat().st_mode
        except OSError:
            raise bad_request(f"{where}: no such file: {shown!r}", where, code="media_fetch_failed") from None
        # Checked before opening: opening a FIFO would block, a device would never end.
        if not stat.S_ISREG(mode):
            raise bad_request(f"{where}: not a regular file: {shown!r}", where, code="media_fetch_failed")
        try:
            # O_NOFOLLOW: the resolved name must still be no symlink when it is opened.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise bad_request(f"{where}: cannot read {shown!r}: {exc.strerror}", where,
                              code="media_fetch_failed") from None
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):  # swapped since the check above
                raise bad_request(f"{where}: not a regular file: {shown!r}", where, code="media_fetch_failed")
            if info.st_size > self.settings.max_media_bytes:
                raise too_large(where, f"{path.name} is {info.st_size} bytes", self.settings.max_media_bytes)
            budget.spend(info.st_size, where)
            return f.read(info.st_size)


def stored_file_id(value: str, where: str) -> str:
    """A file part's id of the Files API (bare, or vLLM's ``vllm-file://<id>``); 404 for anything else, so
    that no URL the fetcher would follow passes as one."""
    file_id = file_id_of(value, where).removeprefix(FILE_ID_SCHEME)
    if not FILE_ID.fullmatch(file_id):
        raise file_not_found(file_id, where)
    return file_id


def file_data_url(data: str, filename: str | None, where: str) -> str:
    """A file part's ``file_data`` as the data: URL the fetcher reads: as it is when it is one, else base64
    whose MIME type its ``filename`` tells (by the extension) or its first bytes do."""
    if data.startswith("data:"):
        return data
    mime = mimetypes.guess_type(filename)[0] if filename else None
    if mime is None or mime.split("/")[0] not in ("video", "image", "audio"):
        found = sniff(_b64(data[:88], where))  # 88 base64 characters: the first 66 bytes
        mime = found[1] if found is not None else mime
    if mime is None:
        raise OpenAIError(415, f"{where}: cannot tell what the file holds; give its filename with an extension, "
                          "or a data: URL", param=where, code="unsupported_media")
    return f"data:{mime};base64,{data}"


def file_id_of(value: str, where: str) -> str:
    """The file id a ``vllm-file://<id>`` URL names (vLLM's form of a file id); a bare ``file-...``
    passes as it is. 400 for a malformed URL: an empty id, a path, a query, anything but one id."""
    if not value.startswith(VLLM_FILE_SCHEME):
        return value
    file_id = value[len(VLLM_FILE_SCHEME):]
    if not FILE_ID.fullmatch(file_id):
        raise bad_request(f"{where}: a vllm-file URL must be vllm-file://<file id> (file-...), got "
                          f"{value[:80]!r}", where, code="invalid_url")
    return file_id


def scoped_uuid(scope: str, uuid: str, where: str) -> str:
    """A client's media uuid as the caches know it: ``<tenant tag>:<uuid>``, the tag a digest of
    the tenant (the files scope header's value), so one tenant's uuid never names another's media."""
    if not uuid or len(uuid) > MAX_UUID_CHARS:
        raise bad_request(f"{where}: a uuid must be 1 to {MAX_UUID_CHARS} characters", where, code="invalid_value")
    tag = hashlib.sha256(scope.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{tag}:{uuid}"


def file_not_found(file_id: str, where: str | None = None) -> OpenAIError:
    return OpenAIError(404, f"{where + ': ' if where else ''}no such file: {file_id[:80]!r}", param=where,
                       code="file_not_found")


def too_large(where: str, what: str, limit: int, unit: str = "bytes", setting: str = "max_media_bytes") -> OpenAIError:
    return OpenAIError(413, f"{where}: {what}; the limit is {limit} {unit} ({env_name(setting)})", param=where,
                       code="media_too_large")


def _b64(data: str, where: str) -> bytes:
    try:
        return b64decode_strict(data)
    except (binascii.Error, ValueError):
        raise bad_request(f"{where}: the data URL is not valid base64", where, code="invalid_base64") from None
