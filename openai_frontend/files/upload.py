"""POST /v1/files bodies: multipart/form-data parsed as it streams, the file part written to disk.

Memory stays flat whatever the upload's size: chunks go through python-multipart's
push parser into a :class:`~openai_frontend.files.store.Stager` in 1 MiB writes made
by one writer thread per upload (hash + write on one core while the event loop parses
on the other; at most 8 MiB in flight), the size cap is enforced while streaming, and
a failed or refused upload leaves nothing behind. Then the content must be what it claims:
magic bytes first, then a PyAV container probe.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header

from openai_frontend.errors import OpenAIError, bad_request
from openai_frontend.files.store import Staged, Stager

logger = logging.getLogger(__name__)

_FLUSH = 1024 * 1024
_IN_FLIGHT = 8 * _FLUSH  # bytes handed to the writer thread and not yet written
_MAX_FIELD = 64 * 1024  # the non-file fields are short strings
_FILE_FIELD = "file"


@dataclass
class Part:
    """One file part, staged on disk, with its claimed name and type."""

    staged: Staged
    head: bytes
    filename: str | None
    content_type: str


@dataclass
class Upload:
    """The parsed form: text fields, and the file parts staged on disk, by field name."""

    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, Part] = field(default_factory=dict)

    def discard(self) -> None:
        """Remove every staged file (a no-op for those the store has taken)."""
        for part in self.files.values():
            part.staged.path.unlink(missing_ok=True)


async def receive(stream: AsyncIterator[bytes], content_type: str, staging: Path, cap: int,
                  file_fields: frozenset[str] | None = frozenset({_FILE_FIELD}), max_files: int = 1) -> Upload:
    """Parse a multipart body from ``stream``, staging its file parts under ``staging``.

    Each file part holds at most ``cap`` bytes; ``file_fields`` names the fields that may be files
    (None: any field), and at most ``max_files`` file parts are taken.
    """
    mime, params = parse_options_header(content_type or "")
    if mime != b"multipart/form-data" or not params.get(b"boundary"):
        raise bad_request("the body must be multipart/form-data", code="invalid_content_type")
    form = _Form(staging, cap, file_fields, max_files)
    mp = MultipartParser(params[b"boundary"], form.callbacks())
    try:
        async for chunk in stream:
            mp.write(chunk)
            form.check()
            if form.pending_bytes >= _FLUSH:
                await form.flush()
        mp.finalize()
        form.check()
        await form.flush()
        await form.writer.drain()
        if form.open_part:
            raise bad_request("the multipart body ended in the middle of a part", code="invalid_multipart")
        for name, stager in form.stagers.items():
            staged = await asyncio.to_thread(stager.finish)
            form.upload.files[name] = Part(staged, stager.head, *form.claims[name])
        return form.upload
    except BaseException as exc:  # ours, the parser's errors, a client gone mid-body, a full disk, a cancel
        await form.abort()
        if isinstance(exc, (OpenAIError, OSError)) or not isinstance(exc, Exception):
            raise
        raise bad_request(f"the multipart body is malformed: {exc}", code="invalid_multipart") from None
    finally:
        form.writer.close()


class _Writer:
    """One thread per upload writing staged chunks in order, so hashing and writing overlap the parsing."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="upload-writer")
        self._inflight: deque[tuple[asyncio.Future, int]] = deque()
        self._bytes = 0

    async def submit(self, stager: Stager, data: bytearray) -> None:
        self._inflight.append((asyncio.wrap_future(self._pool.submit(stager.write, data)), len(data)))
        self._bytes += len(data)
        while self._bytes > _IN_FLIGHT:
            await self._wait_oldest()

    async def drain(self) -> None:
        while self._inflight:
            await self._wait_oldest()

    async def _wait_oldest(self) -> None:
        future, size = self._inflight[0]
        try:
            await asyncio.shield(future)
        finally:
            if future.done():
                self._inflight.popleft()
                self._bytes -= size

    async def settle(self) -> None:
        """Wait for every write already handed over, whatever its outcome (before the files go)."""
        futures = [f for f, _ in self._inflight]
        self._inflight.clear()
        self._bytes = 0
        await asyncio.gather(*futures, return_exceptions=True)

    def close(self) -> None:
        self._pool.shutdown(wait=False)


class _Form:
    """python-multipart callbacks collecting fields and feeding each file part to a Stager."""

    def __init__(self, staging: Path, cap: int, file_fields: frozenset[str] | None, max_files: int) -> None:
        self.staging = staging
        self.cap = cap
        self.file_fields = file_fields
        self.max_files = max_files
        self.upload = Upload()
        self.stagers: dict[str, Stager] = {}
        self.claims: dict[str, tuple[str | None, str]] = {}  # field -> (filename, content type)
        self.stager: Stager | None = None  # the file part being received
        self.received: dict[str, int] = {}  # bytes received per file part, written or not
        # File bytes waiting for the next off-loop write, per stager (one chunk may end one part and start the next).
        self.pending: list[tuple[Stager, bytearray]] = []
        self.pending_bytes = 0
        self.writer = _Writer()
        self.open_part = False
        self._error: OpenAIError | None = None
        self._headers: dict[str, str] = {}
        self._hname = b""
        self._hvalue = b""
        self._name = ""
        self._value = bytearray()

    def callbacks(self) -> dict:
        return {"on_part_begin": self._begin, "on_part_data": self._data, "on_part_end": self._end,
                "on_header_field": self._hfield, "on_header_value": self._hval, "on_header_end": self._hend,
                "on_headers_finished": self._headers_done}

    def check(self) -> None:
        if self._error is not None:
            raise self._error

    async def flush(self) -> None:
        pending, self.pending, self.pending_bytes = self.pending, [], 0
        for stager, data in pending:  # each bytearray is handed over whole and never touched again here
            await self.writer.submit(stager, data)

    async def abort(self) -> None:
        await asyncio.shield(self.writer.settle())
        for stager in self.stagers.values():
            stager.abort()

    def _fail(self, err: OpenAIError) -> None:
        if self._error is None:
            self._error = err

    def _begin(self) -> None:
        self.open_part = True
        self._headers, self._value, self._name = {}, bytearray(), ""

    def _hfield(self, data: bytes, start: int, end: int) -> None:
        self._hname += data[start:end]

    def _hval(self, data: bytes, start: int, end: int) -> None:
        self._hvalue += data[start:end]

    def _hend(self) -> None:
        self._headers[self._hname.decode("latin-1").lower()] = self._hvalue.decode("utf-8", "replace")
        self._hname, self._hvalue = b"", b""

    def _headers_done(self) -> None:
        _, params = parse_options_header(self._headers.get("content-disposition", ""))
        self._name = params.get(b"name", b"").decode("utf-8", "replace")
        filename = params.get(b"filename")
        if filename is None or (self.file_fields is not None and self._name not in self.file_fields):
            return
        if self._name in self.stagers or self._name in self.upload.fields:
            self._fail(bad_request(f"{self._name}: given more than once", self._name))
            return
        if len(self.stagers) >= self.max_files:
            self._fail(bad_request(f"{self._name}: at most {self.max_files} file part(s) per request", self._name,
                                   code="too_many_media"))
            return
        self.stager = self.stagers[self._name] = Stager(self.staging, self.cap)
        self.received[self._name] = 0
        content_type = self._headers.get("content-type", "").split(";")[0].strip().lower()
        self.claims[self._name] = (filename.decode("utf-8", "replace"), content_type)

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._error is not None:
            return
        if self.stager is not None:
            self.received[self._name] += end - start
            if self.received[self._name] > self.cap:
                self._fail(OpenAIError(413, f"{self._name}: larger than this server's limit of {self.cap} bytes",
                                       param=self._name, code="file_too_large"))
                return
            if not self.pending or self.pending[-1][0] is not self.stager:
                self.pending.append((self.stager, bytearray()))
            buffer = self.pending[-1][1]
            buffer += memoryview(data)[start:end]  # in place, no intermediate bytes
            self.pending_bytes += end - start
        else:
            self._value += data[start:end]
            if len(self._value) > self._field_cap():
                self._fail(bad_request(f"{self._name}: longer than {self._field_cap()} bytes", self._name))

    def _field_cap(self) -> int:
        # The chat payload is a whole JSON request (URLs, text); upload fields are short strings.
        return self.cap if self.file_fields is None else _MAX_FIELD

    def _end(self) -> None:
        self.open_part = False
        if self.stager is not None:
            self.stager = None
        elif self._name:
            if self._name in self.upload.fields or self._name in self.stagers:
                self._fail(bad_request(f"{self._name}: given more than once", self._name))
            self.upload.fields[self._name] = self._value.decode("utf-8", "replace")


# --- what the bytes are ------------------------------------------------------------------------------

_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\]")


def clean_filename(name: str | None) -> str:
    """The client's filename as metadata; path-like names are refused (never used as a path anyway)."""
    if not name or not name.strip():
        raise bad_request("file: the file part needs a filename", "file")
    if _UNSAFE_NAME.search(name) or name.strip() in (".", "..") or len(name) > 255:
        raise bad_request(f"file: filename {name[:80]!r} must be a plain name (no path, no control characters)",
                          "file", code="invalid_filename")
    return name.strip()


# (magic at offset, kind, mime); the PyAV probe below has the last word.
_MAGIC: list[tuple[int, bytes, str, str]] = [
    (4, b"ftyp", "video", "video/mp4"),
    (0, b"\x1a\x45\xdf\xa3", "video", "video/webm"),
    (0, b"\x00\x00\x01\xba", "video", "video/mpeg"),
    (0, b"FLV", "video", "video/x-flv"),
    (0, b"OggS", "audio", "audio/ogg"),
    (0, b"ID3", "audio", "audio/mpeg"),
    (0, b"fLaC", "audio", "audio/flac"),
    (0, b"\x89PNG\r\n\x1a\n", "image", "image/png"),
    (0, b"\xff\xd8\xff", "image", "image/jpeg"),
    (0, b"GIF8", "image", "image/gif"),
    (0, b"BM", "image", "image/bmp"),
    (0, b"\x47", "video", "video/mp2t"),  # one byte ("G"): last, or every GIF would be a transport stream
]
_RIFF = {b"AVI ": ("video", "video/x-msvideo"), b"WAVE": ("audio", "audio/wav"), b"WEBP": ("image", "image/webp")}


def sniff(head: bytes) -> tuple[str, str] | None:
    """(kind, mime) from the first bytes, or None when they are no media container we know."""
    if head[:4] == b"RIFF" and head[8:12] in _RIFF:
        return _RIFF[head[8:12]]
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free"):  # QuickTime files without ftyp
        return "video", "video/quicktime"
    for offset, magic, kind, mime in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return kind, mime
    return None


def probe(path: Path, kind: str) -> bool:
    """Whether PyAV opens ``path`` and finds a stream of ``kind`` (image decoders are video streams)."""
    import av

    try:
        with av.open(str(path), mode="r") as container:
            if kind == "audio":
                return bool(container.streams.audio)
            return bool(container.streams.video)
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError):
        return False


def check_content(staged: Staged, head: bytes, claimed: str) -> str:
    """The stored MIME type of a staged upload, or 415 when it is not the media it claims to be."""
    found = sniff(head)
    if found is None:
        raise OpenAIError(415, "file: not a video, image or audio file this server can read "
                          f"(claimed {claimed or 'no type'})", param="file", code="unsupported_media")
    kind, mime = found
    if claimed and claimed != "application/octet-stream" and not claimed.startswith(("video/", "image/", "audio/")):
        raise OpenAIError(415, f"file: Content-Type {claimed} is not video/*, image/* or audio/*", param="file",
                          code="unsupported_media")
    if not probe(staged.path, kind):
        raise OpenAIError(415, f"file: looks like {mime} but is not a readable {kind} container", param="file",
                          code="unsupported_media")
    return mime
