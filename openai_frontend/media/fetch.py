"""Downloading http(s) media: the policy around httpx, which does the HTTP.

- the URL: an allowed scheme (``allowed_media_schemes``), no credentials, a host in
  ``allowed_media_domains`` when that list is set, at most :data:`MAX_URL_CHARS`;
- the address: checked inside the connection by :mod:`~openai_frontend.media.netpolicy`
  (the socket goes to the address that was checked);
- redirects: refused unless ``follow_redirects``; then each hop is checked like the first,
  at most ``max_redirects`` of them;
- time: connect, per-read and whole-download timeouts; the whole one includes waiting for a slot;
- size: the byte caps are counted while the body streams in (a Content-Length above the cap
  fails at once, a smaller one is not trusted);
- concurrency: slots per request, per media host and for the whole server;
- transient failures: an answer 5xx/408/429, or a connection that failed before any byte of the body,
  is tried again by the shim's retry policy (``fetch_retries``, jittered backoff, at least the server's
  Retry-After), within the whole-download timeout; the host's slot is given back while waiting.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING
from urllib.parse import urljoin

import httpx

from openai_frontend.errors import OpenAIError, bad_request
from openai_frontend.media.netpolicy import (
    AddressNotAllowed,
    NetPolicy,
    PinnedTransport,
    Resolver,
    domain_allowed,
    parse_allow_rules,
    parse_domains,
    system_resolver,
)
from openai_frontend.retry import TRANSIENT_STATUSES, RetryPolicy, retry_after_s
from openai_frontend.settings import Settings, env_name

if TYPE_CHECKING:
    from openai_frontend.budgets import RequestBudget

logger = logging.getLogger(__name__)

MAX_URL_CHARS = 8192
_HEADERS = {"User-Agent": "video-llm-triton", "Accept-Encoding": "identity"}


def media_client(settings: Settings, resolver: Resolver = system_resolver) -> httpx.AsyncClient:
    """The HTTP client media downloads use: every connection checked by the settings' address policy."""
    policy = NetPolicy(parse_allow_rules(settings.allowed_media_networks), resolver)
    limits = httpx.Limits(max_connections=settings.fetch_concurrency, max_keepalive_connections=8)
    return httpx.AsyncClient(transport=PinnedTransport(policy, limits=limits), follow_redirects=False,
                             trust_env=False, headers=_HEADERS, timeout=timeouts(settings))


def timeouts(settings: Settings) -> httpx.Timeout:
    return httpx.Timeout(connect=settings.fetch_connect_timeout_s, read=settings.fetch_timeout_s,
                         write=settings.fetch_timeout_s, pool=settings.fetch_timeout_s)


class _Slots:
    """At most ``n`` holders per key at once; keys without holders are forgotten."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._held: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        semaphore, users = self._held.setdefault(key, (asyncio.Semaphore(self.n), [0]))
        users[0] += 1
        try:
            async with semaphore:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._held[key]


class HttpFetcher:
    """http(s) downloads for one app: its settings, its client, its server-wide slots."""

    def __init__(self, settings: Settings, client: httpx.AsyncClient) -> None:
        self.settings = settings
        self.client = client
        self.schemes = {x.strip() for x in settings.allowed_media_schemes.split(",") if x.strip()}
        self.domains = parse_domains(settings.allowed_media_domains)
        self._server_slots: asyncio.Semaphore | None = None  # made in the app's event loop
        self._host_slots = _Slots(settings.fetch_concurrency_per_host)
        self.retry = RetryPolicy(settings.fetch_retries, settings.retry_backoff_s)

    async def get(self, url: str, where: str, budget: RequestBudget) -> bytes:
        """The body at ``url``; 4xx in OpenAI's shape for anything the policy or the server refuses."""
        s = self.settings
        if self._server_slots is None:
            self._server_slots = asyncio.Semaphore(s.fetch_concurrency)
        try:
            async with asyncio.timeout(s.fetch_total_timeout_s), budget.fetch_slots, self._server_slots:
                return await self._follow(url, where, budget)
        except TimeoutError:
            raise bad_request(f"{where}: downloading {_short(url)} took longer than {s.fetch_total_timeout_s:g} s "
                              f"(the limit, {env_name('fetch_total_timeout_s')})", where,
                              code="media_fetch_failed") from None

    async def _follow(self, url: str, where: str, budget: RequestBudget) -> bytes:
        s = self.settings
        hops = s.max_redirects if s.follow_redirects else 0
        for _ in range(hops + 1):
            host = self.check_url(url, where)
            location = await self._get_retrying(url, host, where, budget)
            if isinstance(location, bytes):
                return location
            url = location
        raise bad_request(f"{where}: more than {hops} redirects (the limit, {env_name('max_redirects')})", where,
                          code="media_fetch_failed")

    def check_url(self, url: str, where: str) -> str:
        """Refuses what the URL alone shows is not allowed; returns its ``host:port``."""
        if len(url) > MAX_URL_CHARS:
            raise bad_request(f"{where}: the URL has {len(url)} characters; the limit is {MAX_URL_CHARS}", where,
                              code="invalid_url")
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise bad_request(f"{where}: not a valid URL ({exc})", where, code="invalid_url") from None
        if parsed.scheme not in self.schemes:
            raise OpenAIError(403, f"{where}: {parsed.scheme or 'scheme-less'} URLs are not allowed here; "
                              f"allowed: {', '.join(sorted(self.schemes)) or 'none'} "
                              f"({env_name('allowed_media_schemes')})", param=where, code="url_not_allowed")
        if parsed.userinfo:
            raise bad_request(f"{where}: media URLs may not carry credentials (user:password@)", where,
                              code="invalid_url")
        host = parsed.raw_host.decode("ascii").lower()
        if not host:
            raise bad_request(f"{where}: the URL has no host", where, code="invalid_url")
        if self.domains and not domain_allowed(host, self.domains):
            raise OpenAIError(403, f"{where}: {host[:253]} is not an allowed media host "
                              f"({env_name('allowed_media_domains')})", param=where, code="url_not_allowed")
        return f"{host}:{parsed.port or (443 if parsed.scheme == 'https' else 80)}"

    async def _get_retrying(self, url: str, host: str, where: str, budget: RequestBudget) -> bytes | str:
        """:meth:`_get_once`, tried again after a transient failure while the retry policy allows."""
        for retry in itertools.count():
            async with self._host_slots.hold(host):
                try:
                    return await self._get_once(url, where, budget)
                except _Transient as failure:
                    if retry >= self.retry.retries:
                        raise failure.error(retry + 1) from None
                    wait = self.retry.wait_s(retry, failure.retry_after_s)
                    logger.info("%s: %s; trying again in %.2f s", where, failure.message, wait)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def _get_once(self, url: str, where: str, budget: RequestBudget) -> bytes | str:
        """The body, or the next URL when the answer is a redirect we follow; :class:`_Transient` when
        trying again may succeed (nothing of the body was counted yet)."""
        s = self.settings
        cap = s.max_media_bytes
        received = 0
        try:
            async with self.client.stream("GET", url, headers=_HEADERS, timeout=timeouts(s)) as r:
                if r.is_redirect:
                    target = urljoin(url, r.headers.get("location", ""))
                    if not s.follow_redirects:
                        raise bad_request(
                            f"{where}: {_short(url)} redirects (HTTP {r.status_code}) to {_short(target)}; this "
                            f"server does not follow redirects ({env_name('follow_redirects')}); give the final URL",
                            where, code="media_fetch_failed")
                    return target
                if r.status_code in TRANSIENT_STATUSES:
                    raise _Transient(f"could not fetch {_short(url)}: HTTP {r.status_code}", where,
                                     retry_after_s(r.headers.get("retry-after")))
                if r.status_code != 200:
                    raise bad_request(f"{where}: could not fetch {_short(url)}: HTTP {r.status_code}", where,
                                      code="media_fetch_failed")
                declared = r.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > cap:
                    raise OpenAIError(413, f"{where}: {_short(url)} is {declared} bytes; the limit is {cap} bytes "
                                      f"({env_name('max_media_bytes')})", param=where, code="media_too_large")
                body = bytearray()
                async for chunk in r.aiter_bytes():
                    body += chunk
                    received += len(chunk)
                    budget.spend(len(chunk), where)
                    if len(body) > cap:
                        raise OpenAIError(413, f"{where}: {_short(url)} is larger than {cap} bytes (the limit, "
                                          f"{env_name('max_media_bytes')})", param=where, code="media_too_large")
                return bytes(body)
        except AddressNotAllowed as exc:
            # For a host name the category is told, not the address (no map of internal DNS).
            what = f"{exc.address}: it is" if exc.literal else f"{exc.host[:253]}: it resolves to"
            raise OpenAIError(403, f"{where}: media URLs may not reach {what} {exc.reason} "
                              f"({env_name('allowed_media_networks')} allows networks)", param=where,
                              code="url_not_allowed") from None
        except httpx.TimeoutException:
            raise bad_request(f"{where}: timed out fetching {_short(url)} (connect limit "
                              f"{s.fetch_connect_timeout_s:g} s, read limit {s.fetch_timeout_s:g} s)", where,
                              code="media_fetch_failed") from None
        except httpx.InvalidURL as exc:
            raise bad_request(f"{where}: not a valid URL ({exc})", where, code="invalid_url") from None
        except httpx.HTTPError as exc:
            what = f"could not fetch {_short(url)}: {exc or type(exc).__name__}"
            if received == 0 and isinstance(exc, httpx.TransportError):  # connect/protocol failure, before the body
                raise _Transient(what, where) from None
            raise bad_request(f"{where}: {what}", where, code="media_fetch_failed") from None


class _Transient(Exception):
    """A download failure that trying again may cure (the answer's status, or the connection)."""

    def __init__(self, message: str, where: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.where = where
        self.retry_after_s = retry_after_s

    def error(self, attempts: int) -> OpenAIError:
        """The client's error once no attempt is left."""
        tried = f" (tried {attempts} times)" if attempts > 1 else ""
        return bad_request(f"{self.where}: {self.message}{tried}", self.where, code="media_fetch_failed")


def _short(url: str, n: int = 120) -> str:
    return url if len(url) <= n else url[: n - 3] + "..."
