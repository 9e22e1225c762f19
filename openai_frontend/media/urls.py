"""Media URLs -> bytes: ``data:`` (strict base64, MIME checked, size-capped), http(s)
(timeouts, byte cap, loopback only when allowed), ``file://`` (confined to one
directory after resolving symlinks), and ``data:video/jpeg`` frame lists.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from openai_frontend.errors import OpenAIError, bad_request
from openai_frontend.settings import Settings

Kind = Literal["video", "image"]

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)(?P<params>(?:;[^;,]*)*?);base64,(?P<data>.*)$", re.S)
_MAX_REDIRECTS = 5
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

    async def fetch(self, url: str, kind: Kind, where: str) -> bytes | FrameList:
        """Bytes of the video/image at ``url`` (a :class:`FrameList` for frame-list videos)."""
        if not isinstance(url, str) or not url:
            raise bad_request(f"{where}: the URL must be a non-empty string", where)
        scheme = url.split(":", 1)[0].lower() if ":" in url else ""
        if scheme == "data":
            return self._data_url(url, kind, where)
        if scheme in ("http", "https"):
            return await self._http(url, where)
        if scheme == "file":
            return await asyncio.to_thread(self._file, url, where)
        if scheme == "file-id" or url.startswith("file-"):
            raise files_api_needed(where)
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


def files_api_needed(where: str) -> OpenAIError:
    return OpenAIError(400, f"{where}: file ids need the Files API, which this server does not offer yet; "
                       "send the media as a data:, http(s):// or file:// URL", param=where,
                       code="unsupported_parameter")


def too_large(where: str, what: str, limit: int, unit: str = "bytes") -> OpenAIError:
    return OpenAIError(413, f"{where}: {what}; the limit is {limit} {unit}", param=where, code="media_too_large")


def _b64(data: str, where: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"{where}: the data URL is not valid base64", where, code="invalid_base64") from None


def _short(url: str, n: int = 120) -> str:
    return url if len(url) <= n else url[: n - 3] + "..."
