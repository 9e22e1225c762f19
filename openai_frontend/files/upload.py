"""POST /v1/files bodies: multipart/form-data parsed as it streams, the file part written to disk.

Memory stays flat whatever the upload's size: chunks go through python-multipart's
push parser into a :class:`~openai_frontend.files.store.Stager` in 1 MiB writes made
by one writer thread per upload (hash + write on one core while the event loop parses
on the other; at most 8 MiB in flight), the size cap is enforced while streaming, and
a failed or refused upload leaves nothing behind. Then the content must be what it claims:
magic bytes first, then a header probe with a time limit, the one the media models use
(:mod:`video_pipeline.media.facts` for videos and images, ``probe_audio`` for audio).

A hostile body is bounded in every dimension (boundary, header lines, parts, text fields,
names), each a 400 naming the limit, and the parser is fed :data:`SLICE` bytes at a time with
the event loop given back in between, so no body holds the loop for long. Content-Disposition
is read by our own parser: filenames are kept exactly as sent or refused, never altered.
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
from urllib.parse import unquote_to_bytes

from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError

from openai_frontend.errors import OpenAIError, bad_request
from openai_frontend.files.store import Staged, Stager
from video_pipeline.errors import DecodeTimeout, MediaTooLarge, PipelineError
from video_pipeline.media.audio import probe_audio
from video_pipeline.media.facts import probe_image, probe_video
from video_pipeline.media.options import DecodeLimits

logger = logging.getLogger(__name__)

_FLUSH = 1024 * 1024
_IN_FLIGHT = 8 * _FLUSH  # bytes handed to the writer thread and not yet written
_FILE_FIELD = "file"

#: Bytes parsed between two yields to the event loop (a 10 MB body of tiny parts is ~150 of them).
SLICE = 64 * 1024
#: RFC 2046 5.1.1: a boundary is 1 to 70 characters.
MAX_BOUNDARY = 70
#: Header lines per part (Content-Disposition and Content-Type are all a form needs).
MAX_HEADERS = 8
#: Bytes of one header line, and of one part's header lines together.
MAX_HEADER_LINE = 8 * 1024
MAX_HEADER_BYTES = 16 * 1024
#: Parts besides the file parts (an upload has two or three fields, a chat form one).
MAX_PARTS = 64
#: Bytes of all the text fields together, unless the caller gives another ``max_field``.
MAX_FIELD = 64 * 1024
#: Characters of a field name or a filename.
MAX_NAME = 255

# RFC 2046's bchars: DIGIT / ALPHA / ' ( ) + _ , - . / : = ? and space, the last one not a space.
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]*[0-9A-Za-z'()+_,\-./:=?]")
_BOUNDARY_RULE = f"RFC 2046 allows 1 to {MAX_BOUNDARY} of DIGIT ALPHA '()+_,-./:=? and space (not last)"

# python-multipart's own limit errors, as ours.
_PARSER_LIMITS = {
    "Maximum header size exceeded": f"a part's header line is longer than {MAX_HEADER_LINE} bytes",
    "Maximum header count exceeded": f"a part has more than {MAX_HEADERS} header lines",
}


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


def invalid(message: str, param: str | None = None, code: str = "invalid_multipart") -> OpenAIError:
    return bad_request(message, param, code=code)


async def receive(stream: AsyncIterator[bytes], content_type: str, staging: Path, cap: int,
                  file_fields: frozenset[str] | None = frozenset({_FILE_FIELD}), max_files: int = 1,
                  max_field: int = MAX_FIELD) -> Upload:
    """Parse a multipart body from ``stream``, staging its file parts under ``staging``.

    Each file part holds at most ``cap`` bytes; ``file_fields`` names the fields that may be files
    (None: any field), and at most ``max_files`` file parts are taken; the text fields hold at most
    ``max_field`` bytes together. Every refusal is an :class:`OpenAIError` (a 400 naming the limit, a 413
    for a file over ``cap``); an ``OSError`` while staging (a full disk) is re-raised unchanged; either way
    nothing staged is left behind.
    """
    boundary = _boundary_of(content_type)
    form = _Form(staging, cap, file_fields, max_files, max_field)
    try:
        mp = MultipartParser(boundary, form.callbacks(), max_header_count=MAX_HEADERS,
                             max_header_size=MAX_HEADER_LINE)
        async for chunk in stream:
            # request.stream() hands over whatever is buffered without yielding: parse it a slice at a
            # time and let the loop run in between, or a body of a million tiny parts holds it for seconds.
            for start in range(0, len(chunk), SLICE):
                mp.write(chunk[start:start + SLICE] if len(chunk) > SLICE else chunk)
                if form.pending_bytes >= _FLUSH:
                    await form.flush()
                await asyncio.sleep(0)
        mp.finalize()
        await form.flush()
        await form.writer.drain()
        if form.open_part:
            raise invalid("the multipart body ended in the middle of a part")
        for name, stager in form.stagers.items():
            staged = await asyncio.to_thread(stager.finish)
            form.upload.files[name] = Part(staged, stager.head, *form.claims[name])
        return form.upload
    except BaseException as exc:  # ours, the parser's errors, a client gone mid-body, a full disk, a cancel
        await form.abort()
        if isinstance(exc, (OpenAIError, OSError)) or not isinstance(exc, Exception):
            raise
        if isinstance(exc, MultipartParseError) and exc.args and exc.args[0] in _PARSER_LIMITS:
            raise invalid(_PARSER_LIMITS[exc.args[0]]) from None
        raise invalid(f"the multipart body is malformed: {exc}") from None
    finally:
        form.writer.close()


def _boundary_of(content_type: str) -> bytes:
    """The boundary of a multipart/form-data Content-Type, checked against RFC 2046 before any parser sees it."""
    try:
        mime, params = parse_header_params(content_type.encode("latin-1"))
    except (UnicodeEncodeError, BadHeader):
        mime, params = b"", {}
    boundary = params.get("boundary", b"")
    if mime != b"multipart/form-data" or not boundary:
        raise bad_request("the body must be multipart/form-data with a boundary", code="invalid_content_type")
    text = boundary.decode("latin-1")
    if len(text) > MAX_BOUNDARY:
        raise invalid(f"the multipart boundary is {len(text)} characters; {_BOUNDARY_RULE}")
    if not _BOUNDARY.fullmatch(text):
        raise invalid(f"the multipart boundary {text!r} has characters that {_BOUNDARY_RULE}")
    return boundary


# --- Content-Disposition and Content-Type parameters (RFC 7578, RFC 6266, RFC 9110) ----------------------


class BadHeader(ValueError):
    """A header value that is not ``type *( ; name=value )``; ``params`` holds those read before the fault."""

    def __init__(self, message: str, params: dict[str, bytes]) -> None:
        super().__init__(message)
        self.params = params


_TYPE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z/]+")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_QUOTED = re.compile(rb'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_QUOTED_PAIR = re.compile(rb'\\([\\"])')
# An unquoted value: a token, leniently widened to any byte but space, controls, quote and semicolon
# (clients send raw UTF-8 and bchars like / = unquoted).
_BARE = re.compile(rb'[^\x00-\x20\x7f";]+')
_WS = re.compile(rb"[ \t]*")


def parse_header_params(value: bytes) -> tuple[bytes, dict[str, bytes]]:
    """``(type, {parameter: value})`` of a header such as ``form-data; name="a"; filename="b.mp4"``.

    The type and parameter names are lowercased; values are the bytes as sent, a quoted string's ``\\"`` and
    ``\\\\`` unescaped and nothing else touched (no trimming, no basename, no %-decoding). An unclosed quote, a
    repeated parameter or anything else that is no parameter raises :class:`BadHeader`.
    """
    params: dict[str, bytes] = {}
    pos = _WS.match(value, 0).end()
    m = _TYPE.match(value, pos)
    if m is None:
        raise BadHeader("has no type", params)
    kind = m[0].lower()
    pos = _WS.match(value, m.end()).end()
    while pos < len(value):
        if value[pos:pos + 1] != b";":
            raise BadHeader(f"has {value[pos:pos + 20]!r} where a ';' belongs", params)
        pos = _WS.match(value, pos + 1).end()
        if pos == len(value):
            break  # a trailing ';'
        m = _TOKEN.match(value, pos)
        if m is None:
            raise BadHeader(f"has {value[pos:pos + 20]!r} where a parameter belongs", params)
        key = m[0].decode("ascii").lower()
        pos = _WS.match(value, m.end()).end()
        if value[pos:pos + 1] != b"=":
            raise BadHeader(f"parameter {key} has no value", params)
        pos = _WS.match(value, pos + 1).end()
        if value[pos:pos + 1] == b'"':
            m = _QUOTED.match(value, pos)
            if m is None:
                raise BadHeader(f"parameter {key} has an unclosed quote", params)
            found = _QUOTED_PAIR.sub(rb"\1", m[1])
        else:
            m = _BARE.match(value, pos)
            if m is None:
                raise BadHeader(f"parameter {key} has no value", params)
            found = m[0]
        if key in params:
            raise BadHeader(f"parameter {key} is given twice", params)
        params[key] = found
        pos = _WS.match(value, m.end()).end()
    return kind, params


_EXT_VALUE = re.compile(rb"([!#$&+\-.^_`|~0-9A-Za-z]*)'[^']*'((?:[!#$&+\-.^_`|~0-9A-Za-z]|%[0-9A-Fa-f]{2})*)")


def _control(text: str) -> str | None:
    """The first control character (C0, DEL, C1) of ``text``, or None."""
    for ch in text:
        if ch < " " or "\x7f" <= ch <= "\x9f":
            return ch
    return None


def _filename_of(params: dict[str, bytes], name: str) -> str | None:
    """The part's filename exactly as sent: RFC 5987's ``filename*`` (UTF-8 only) over ``filename`` (raw UTF-8);
    None when it has neither. Control characters, bytes that are not UTF-8 and over-long names are refused."""
    if "filename*" in params:
        m = _EXT_VALUE.fullmatch(params["filename*"])
        if m is None:
            raise invalid(f"{name}: filename* must be RFC 5987's charset''percent-encoded-value", name)
        if m[1].lower() != b"utf-8":
            raise invalid(f"{name}: filename* must be UTF-8, not {m[1].decode('ascii')!r}", name)
        raw = unquote_to_bytes(m[2])
    elif "filename" in params:
        raw = params["filename"]
    else:
        return None
    try:
        filename = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid(f"{name}: the filename is not valid UTF-8", name, code="invalid_filename") from None
    bad = _control(filename)
    if bad is not None:
        raise invalid(f"{name}: the filename has a control character (U+{ord(bad):04X}); send a plain name",
                      name, code="invalid_filename")
    if len(filename) > MAX_NAME:
        raise invalid(f"{name}: the filename is {len(filename)} characters; at most {MAX_NAME}", name,
                      code="invalid_filename")
    return filename


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
    """python-multipart callbacks collecting fields and feeding each file part to a Stager.

    A limit crossed raises from inside the callback, so the parser stops at the byte that crossed it.
    """

    def __init__(self, staging: Path, cap: int, file_fields: frozenset[str] | None, max_files: int,
                 max_field: int) -> None:
        self.staging = staging
        self.cap = cap
        self.file_fields = file_fields
        self.max_files = max_files
        self.max_field = max_field
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
        self.parts = 0
        self.field_bytes = 0  # of all the text fields so far
        self._headers: dict[str, bytes] = {}
        self._header_bytes = 0
        self._hname = b""
        self._hvalue = b""
        self._name = ""
        self._value = bytearray()

    def callbacks(self) -> dict:
        return {"on_part_begin": self._begin, "on_part_data": self._data, "on_part_end": self._end,
                "on_header_field": self._hfield, "on_header_value": self._hval, "on_header_end": self._hend,
                "on_headers_finished": self._headers_done}

    async def flush(self) -> None:
        pending, self.pending, self.pending_bytes = self.pending, [], 0
        for stager, data in pending:  # each bytearray is handed over whole and never touched again here
            await self.writer.submit(stager, data)

    async def abort(self) -> None:
        await asyncio.shield(self.writer.settle())
        for stager in self.stagers.values():
            stager.abort()

    def _begin(self) -> None:
        self.open_part = True
        self.parts += 1
        if self.parts > MAX_PARTS + self.max_files:
            raise invalid(f"the body has more than {MAX_PARTS + self.max_files} parts (at most {MAX_PARTS} "
                          f"besides {self.max_files} file part(s))", code="too_many_parts")
        self._headers, self._header_bytes, self._value, self._name = {}, 0, bytearray(), ""

    def _count_header(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > MAX_HEADER_BYTES:
            raise invalid(f"a part's headers are longer than {MAX_HEADER_BYTES} bytes together")

    def _hfield(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._hname += data[start:end]

    def _hval(self, data: bytes, start: int, end: int) -> None:
        self._count_header(end - start)
        self._hvalue += data[start:end]

    def _hend(self) -> None:
        name = self._hname.decode("latin-1").lower()
        if name in ("content-disposition", "content-type") and name in self._headers:
            raise invalid(f"a part has {name} twice")
        self._headers[name] = self._hvalue.strip(b" \t")
        self._hname, self._hvalue = b"", b""

    def _headers_done(self) -> None:
        disposition = self._headers.get("content-disposition")
        if disposition is None:
            raise invalid("a part has no Content-Disposition header (RFC 7578: form-data; name=...)")
        try:
            kind, params = parse_header_params(disposition)
        except BadHeader as exc:
            known = exc.params.get("name", b"").decode("utf-8", "replace") or None
            raise invalid(f"{known or 'a part'}: its Content-Disposition {exc}", known) from None
        self._name = name = _field_name(kind, params)
        filename = _filename_of(params, name)
        if filename is None or (self.file_fields is not None and name not in self.file_fields):
            return
        if name in self.stagers or name in self.upload.fields:
            raise bad_request(f"{name}: given more than once", name)
        if len(self.stagers) >= self.max_files:
            raise bad_request(f"{name}: at most {self.max_files} file part(s) per request", name,
                              code="too_many_media")
        self.stager = self.stagers[name] = Stager(self.staging, self.cap)
        self.received[name] = 0
        content_type = self._headers.get("content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        self.claims[name] = (filename, content_type)

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self.stager is not None:
            self.received[self._name] += end - start
            if self.received[self._name] > self.cap:
                raise OpenAIError(413, f"{self._name}: larger than this server's limit of {self.cap} bytes",
                                  param=self._name, code="file_too_large")
            if not self.pending or self.pending[-1][0] is not self.stager:
                self.pending.append((self.stager, bytearray()))
            buffer = self.pending[-1][1]
            buffer += memoryview(data)[start:end]  # in place, no intermediate bytes
            self.pending_bytes += end - start
        else:
            self.field_bytes += end - start
            if self.field_bytes > self.max_field:
                raise bad_request(f"{self._name}: the text fields are longer than {self.max_field} bytes "
                                  "together", self._name, code="field_too_long")
            self._value += data[start:end]

    def _end(self) -> None:
        self.open_part = False
        if self.stager is not None:
            self.stager = None
            return
        name = self._name
        if name in self.upload.fields or name in self.stagers:
            raise bad_request(f"{name}: given more than once", name)
        try:
            self.upload.fields[name] = self._value.decode("utf-8")
        except UnicodeDecodeError:
            raise bad_request(f"{name}: not valid UTF-8", name) from None


def _field_name(kind: bytes, params: dict[str, bytes]) -> str:
    """A part's field name: from ``form-data; name=...``, non-empty UTF-8 of at most MAX_NAME characters."""
    if kind != b"form-data":
        raise invalid(f"a part's Content-Disposition is {kind.decode('latin-1')!r}; it must be form-data")
    raw = params.get("name")
    if not raw:
        raise invalid("a part's Content-Disposition has no name (RFC 7578: form-data; name=...)")
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid("a part's name is not valid UTF-8") from None
    if len(name) > MAX_NAME:
        raise invalid(f"a part's name is {len(name)} characters; at most {MAX_NAME}")
    bad = _control(name)
    if bad is not None:
        raise invalid(f"a part's name {name[:80]!r} has a control character (U+{ord(bad):04X})")
    return name


# --- what the bytes are ------------------------------------------------------------------------------

_PATH_CHARS = re.compile(r"[/\\]")


def clean_filename(name: str | None) -> str:
    """The client's filename as metadata, exactly as sent (never used as a path): an empty, blank, path-like or
    over-long name, or one with control characters, is refused, never trimmed or cut to a basename."""
    if not name or not name.strip():
        raise bad_request("file: the file part needs a filename", "file", code="invalid_filename")
    if (_PATH_CHARS.search(name) or _control(name) is not None or name.strip() in (".", "..")
            or len(name) > MAX_NAME):
        raise bad_request(f"file: filename {name[:80]!r} must be a plain name (no path, no control characters, "
                          f"at most {MAX_NAME} characters)", "file", code="invalid_filename")
    return name


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


def readable(path: Path, kind: str) -> bool:
    """Whether ``path`` holds readable media of ``kind`` by its header, as the media models will read it:
    a video's first video stream (video_pipeline.media.facts), an image's header (PIL), an audio track.
    Budgets are not checked here but where the file is used, and a header that cannot be read within the
    probe's time limit is given the benefit of the doubt: the decoder has the last word."""
    try:
        if kind == "video":
            probe_video(path, _UPLOAD_LIMITS)
        elif kind == "image":
            probe_image(path)
        else:
            probe_audio(path)
    except DecodeTimeout as exc:
        logger.info("upload probe of %s ran out of time (%s); stored unchecked", kind, exc)
    except MediaTooLarge:
        pass  # readable, only large (PIL's decompression-bomb guard): the budgets refuse it when it is used
    except PipelineError:
        return False
    return True


# What only bounds the probe here: the file's size is the upload's cap, budgets are checked when it is used.
_UPLOAD_LIMITS = DecodeLimits(max_input_bytes=2**62, max_streams=2**62)


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
    if not readable(staged.path, kind):
        raise OpenAIError(415, f"file: looks like {mime} but is not a readable {kind} container", param="file",
                          code="unsupported_media")
    return mime
