"""Media URLs -> bytes: ``data:`` (strict base64, MIME checked, size-capped), http(s)
(timeouts, byte cap, loopback only when allowed), ``file://`` (confined to one
directory after resolving symlinks), ``data:video/jpeg`` frame lists, and file ids of
the Files API: a bare ``file-...`` or the URL form ``file-id://file-...``, and
``form://<field>``, a file part of the same multipart request.

A stricter SSRF policy (private ranges, DNS pinning) is later work; today's
policy is a scheme allowlist, a byte cap, timeouts, and no loopback unless the
operator allows it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from openai_frontend.errors import OpenAIError, bad_request
from openai_frontend.files.store import FileStore
from openai_frontend.files.upload import sniff
from openai_frontend.settings import Settings

Kind = Literal["video", "image"]

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)(?P<params>(?:;[^;,]*)*?);base64,(?P<data>.*)$", re.S)
_MAX_REDIRECTS = 5
FILE_ID_SCHEME = "file-id://"
FORM_SCHEME = "form://"
# Frame lists: vLLM's "data:video/jpeg;base64,<frame>,<frame>,..." (each frame a base64 image).
FRAME_LIST_MIME = "video/jpeg"


@dataclass(frozen=True)
class FrameList:
    """The still images of a ``data:video/jpeg`` URL, still encoded, in order."""

    frames: list[bytes]


@dataclass(frozen=True)
class MediaFetcher:
    """Resolves the media URLs of one app, with its settings and HTTP client."""

    settings: Settings
    http: httpx.AsyncClient
    files: FileStore | None = None

    async def fetch(self, url: str, kind: Kind, where: str, scope: str = "",
                    attachments: Mapping[str, Path] | None = None) -> bytes | FrameList:
        """Bytes of the video/image at ``url`` (a :class:`FrameList` for frame-list videos).

        ``scope`` is the tenant whose file ids are visible (see the Files API); ``attachments``
        are the staged file parts of a multipart request, by field name.
        """
        if not isinstance(url, str) or not url:
            raise bad_request(f"{where}: the URL must be a non-empty string", where)
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme == "data":
            return self._data_url(url, kind, where)
        if scheme in ("http", "https"):
            return await self._http(url, where)
        if scheme == "file":
            return await asyncio.to_thread(self._file, url, where)
        if url.startswith(FORM_SCHEME):
            return await asyncio.to_thread(self._attachment, url.removeprefix(FORM_SCHEME), kind, where,
                                           attachments or {})
        if url.startswith(FILE_ID_SCHEME) or url.startswith("file-"):
            return await asyncio.to_thread(self._stored, url.removeprefix(FILE_ID_SCHEME), kind, where, scope)
        raise bad_request(
            f"{where}: unsupported URL scheme {scheme or url[:20]!r}; use data:, http(s):// or file://", where,
            code="invalid_url",
        )

    # --- data: ------------------------------------------------------------------------------------

    def _data_url(self, url: str, kind: Kind, where: str) -> bytes | FrameList:
        m = _DATA_URL.match(url)
        if m is None:
            raise bad_request(f"{where}: a data URL must look like data:<mime>;base64,<data>", where,
                              code="invalid_url")
        mime = m["mime"].lower()
        if not mime.startswith(kind + "/") and not (kind == "video" and mime == FRAME_LIST_MIME):
            raise OpenAIError(415, f"{where}: a {kind} data URL must have a {kind}/* MIME type, got {mime}",
                              param=where, code="unsupported_media")
        data = m["data"]
        cap = self.settings.max_media_bytes
        if len(data) // 4 * 3 > cap:
            raise too_large(where, f"the data URL holds about {len(data) // 4 * 3} bytes", cap)
        if kind == "video" and mime == FRAME_LIST_MIME:
            parts = data.split(",")
            if len(parts) > self.settings.max_jpeg_frames:
                raise too_large(where, f"the frame list has {len(parts)} frames", self.settings.max_jpeg_frames,
                                unit="frames")
            return FrameList([_b64(p, f"{where} frame {i}") for i, p in enumerate(parts)])
        return _b64(data, where)

    # --- http(s) ----------------------------------------------------------------------------------

    async def _http(self, url: str, where: str) -> bytes:
        cap = self.settings.max_media_bytes
        for _ in range(_MAX_REDIRECTS + 1):
            await self._check_host(url, where)
            try:
                async with self.http.stream("GET", url) as r:
                    if r.is_redirect and "location" in r.headers:
                        url = urljoin(url, r.headers["location"])
                        if urlsplit(url).scheme not in ("http", "https"):
                            raise bad_request(f"{where}: redirected to a non-http(s) URL", where, code="invalid_url")
                        continue
                    if r.status_code != 200:
                        raise bad_request(f"{where}: could not fetch {_short(url)}: HTTP {r.status_code}", where,
                                          code="media_fetch_failed")
                    declared = r.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > cap:
                        raise too_large(where, f"{_short(url)} is {declared} bytes", cap)
                    buf = bytearray()
                    async for chunk in r.aiter_bytes():
                        buf += chunk
                        if len(buf) > cap:
                            raise too_large(where, f"{_short(url)} is larger", cap)
                    return bytes(buf)
            except httpx.TimeoutException:
                raise bad_request(f"{where}: timed out fetching {_short(url)} "
                                  f"(limit {self.settings.fetch_timeout_s:g} s)", where,
                                  code="media_fetch_failed") from None
            except httpx.HTTPError as exc:
                raise bad_request(f"{where}: could not fetch {_short(url)}: {exc or type(exc).__name__}", where,
                                  code="media_fetch_failed") from None
        raise bad_request(f"{where}: more than {_MAX_REDIRECTS} redirects", where, code="media_fetch_failed")

    async def _check_host(self, url: str, where: str) -> None:
        parts = urlsplit(url)
        host = parts.hostname
        if not host:
            raise bad_request(f"{where}: the URL has no host", where, code="invalid_url")
        if self.settings.allow_loopback_urls:
            return
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, parts.port or 80, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            raise bad_request(f"{where}: cannot resolve host {host!r}", where, code="media_fetch_failed") from None
        for info in infos:
            addr = ipaddress.ip_address(info[4][0].split("%", 1)[0])
            if addr.is_loopback or addr.is_unspecified:
                raise OpenAIError(403, f"{where}: media URLs may not point at this machine ({host})",
                                  param=where, code="url_not_allowed")

    # --- file ids (the Files API) ----------------------------------------------------------------------

    def _stored(self, file_id: str, kind: Kind, where: str, scope: str) -> bytes:
        record = self.files.get(file_id, scope, touch=True) if self.files is not None else None
        if record is None:
            raise file_not_found(file_id, where)
        if not record.mime.startswith(kind + "/"):
            raise OpenAIError(415, f"{where}: {file_id} is {record.mime}, not a {kind}", param=where,
                              code="unsupported_media")
        if record.bytes > self.settings.max_media_bytes:
            raise too_large(where, f"{file_id} is {record.bytes} bytes", self.settings.max_media_bytes)
        try:
            # The one read into memory: these bytes go to Triton as they are.
            return self.files.blob_path(record).read_bytes()  # type: ignore[union-attr]
        except FileNotFoundError:  # deleted or evicted between the lookup and the read
            raise file_not_found(file_id, where) from None

    def _attachment(self, name: str, kind: Kind, where: str, attachments: Mapping[str, Path]) -> bytes:
        path = attachments.get(name)
        if path is None:
            raise bad_request(f"{where}: no file part named {name[:80]!r} in this multipart request", where,
                              code="invalid_url")
        size = path.stat().st_size
        if size > self.settings.max_media_bytes:
            raise too_large(where, f"the file part {name!r} is {size} bytes", self.settings.max_media_bytes)
        data = path.read_bytes()
        found = sniff(data[:64])
        if found is None or found[0] != kind:
            raise OpenAIError(415, f"{where}: the file part {name!r} is not a {kind}", param=where,
                              code="unsupported_media")
        return data

    # --- file:// ---------------------------------------------------------------------------------

    def _file(self, url: str, where: str) -> bytes:
        root = self.settings.allowed_local_media_path
        if not root:
            raise OpenAIError(403, f"{where}: file:// URLs are disabled on this server "
                              "(the operator sets VLT_ALLOWED_LOCAL_MEDIA_PATH to allow one directory)",
                              param=where, code="url_not_allowed")
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise bad_request(f"{where}: file:// URLs must name a local path", where, code="invalid_url")
        allowed = Path(root).resolve()
        try:
            path = Path(unquote(parts.path)).resolve(strict=True)
        except (OSError, RuntimeError):
            raise bad_request(f"{where}: no such file: {unquote(parts.path)}", where, code="media_fetch_failed") from None
        if not path.is_relative_to(allowed):
            raise OpenAIError(403, f"{where}: {unquote(parts.path)} is outside the allowed media directory",
                              param=where, code="url_not_allowed")
        if not path.is_file():
            raise bad_request(f"{where}: not a file: {unquote(parts.path)}", where, code="media_fetch_failed")
        size = path.stat().st_size
        if size > self.settings.max_media_bytes:
            raise too_large(where, f"{path.name} is {size} bytes", self.settings.max_media_bytes)
        return path.read_bytes()


def file_not_found(file_id: str, where: str | None = None) -> OpenAIError:
    return OpenAIError(404, f"{where + ': ' if where else ''}no such file: {file_id[:80]!r}", param=where,
                       code="file_not_found")


def too_large(where: str, what: str, limit: int, unit: str = "bytes") -> OpenAIError:
    return OpenAIError(413, f"{where}: {what}; the limit is {limit} {unit}", param=where, code="media_too_large")


def _b64(data: str, where: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"{where}: the data URL is not valid base64", where, code="invalid_base64") from None


def _short(url: str, n: int = 120) -> str:
    return url if len(url) <= n else url[: n - 3] + "..."
