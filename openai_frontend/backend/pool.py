"""Several tritonservers behind one shim: health-checked, round robin, with cache affinity for media.

Each endpoint is a :class:`~openai_frontend.backend.triton.TritonBackend` (its own gRPC channel). A
background task asks every endpoint whether ``llm`` and ``video_media`` are ready every
:data:`HEALTH_INTERVAL_S` (each probe bounded by :data:`HEALTH_TIMEOUT_S`); a request that fails with
:class:`~video_pipeline.errors.EngineUnavailable` (gRPC UNAVAILABLE: nothing listening, the server
gone; or the model not ready) marks its endpoint down at once, and the next probe that finds it ready
brings it back. An endpoint not probed yet is tried as if it were up.

Where a request goes:

- with media: by rendezvous (highest-random-weight) hashing of the request's affinity key, the
  sha256 of its first video (of its first image when it has no video; an uploaded file's blob name,
  which is that sha256; its media uuid when the client gave one), so every question about one video reaches the same tritonserver, whose
  decoder cache and vLLM prefix cache hold it, and adding or losing an endpoint moves only that
  endpoint's share. The score hashes the endpoint's URL with the key, so every shim replica that
  lists the same URLs picks the same endpoint. When the preferred one is down: the next in that order.
- without media: round robin over the endpoints that are up.

A request that fails as unavailable before its first answer is sent to the next candidate; once it
has answered, an error is the client's (nothing is replayed). With no endpoint up, the first
candidate is tried anyway, so the client gets that server's own error. ``describe_media`` assumes
one served model per pool (every endpoint serves the same model repository): the first answer is
kept. An abort by request id goes to the endpoint running that request.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing, suppress
from dataclasses import dataclass
from typing import Any

import numpy as np

from openai_frontend.backend.base import Backend, Delta, LlmRequest, TokenizeRequest
from openai_frontend.backend.triton import TritonBackend
from video_pipeline import contract as C
from video_pipeline.contract import VideoOptionsDoc
from video_pipeline.errors import EngineUnavailable

logger = logging.getLogger(__name__)

HEALTH_INTERVAL_S = 2.0  # between readiness probes of every endpoint
HEALTH_TIMEOUT_S = 1.0  # of one endpoint's probe
_HASH_IN_THREAD = 1 << 20  # bodies above this are hashed off the event loop (hashlib releases the GIL)
# The Files API's blobs are named by their sha256 (<root>/blobs/ab/cdef...), as video_decoder reads them
# (video_pipeline.steps._BLOB): a video sent by path and the same bytes sent inline share one key.
_BLOB = re.compile(r"(?:^|/)blobs/([0-9a-f]{2})/([0-9a-f]{62})$")

UP, DOWN, UNKNOWN = "up", "down", "unknown"


@dataclass(eq=False)
class Endpoint:
    """One tritonserver of the pool and what the shim knows of it."""

    url: str
    backend: Backend
    state: str = UNKNOWN  # up | down | unknown (not probed yet: tried as if up)
    error: str = ""  # why it is down
    changed_at: float = 0.0  # time.time() of the last state change
    in_flight: int = 0  # generations running there now

    @property
    def usable(self) -> bool:
        return self.state != DOWN


def rendezvous_score(url: str, key: str) -> int:
    """The weight of endpoint ``url`` for ``key``: the same in every process (not Python's salted hash)."""
    digest = hashlib.blake2b(f"{url}\n{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous_order(urls: Sequence[str], key: str) -> list[str]:
    """``urls`` from the most to the least preferred for ``key`` (highest random weight first)."""
    return sorted(urls, key=lambda u: rendezvous_score(u, key), reverse=True)


async def affinity_key(videos: Sequence[bytes], options: Sequence[Mapping[str, Any]], images: Sequence[bytes],
                       messages: Sequence[Mapping[str, Any]] = ()) -> str:
    """What a request's endpoint is chosen by, from its first video, else its first image:
    ``uuid:<uuid>`` when the client named it by a media uuid (a later request may send the uuid alone,
    which only the endpoint that cached it can serve), else ``sha256:<hex>`` of its bytes (of a blob
    sent by path: its name, the same sha256), ``path:<path>`` for another path; "" without media."""
    if videos:
        doc = VideoOptionsDoc.from_dict(options[0] if options else {})
        if doc.uuid:
            return f"uuid:{doc.uuid}"
        if doc.path:
            m = _BLOB.search(str(doc.path))
            return f"sha256:{m[1]}{m[2]}" if m else f"path:{doc.path}"
        data = videos[0]
    elif images:
        uuid = next((p.get(C.MEDIA_UUID) for p in _image_parts(messages)), None)
        if uuid:
            return f"uuid:{uuid}"
        data = images[0]
    else:
        return ""
    data = bytes(data)
    if len(data) > _HASH_IN_THREAD:
        digest = await asyncio.to_thread(hashlib.sha256, data)
    else:
        digest = hashlib.sha256(data)
    return f"sha256:{digest.hexdigest()}"


def _image_parts(messages: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [p for m in messages if isinstance(m.get("content"), list) for p in m["content"]
            if isinstance(p, Mapping) and p.get("type") == "image"]


class TritonPool:
    """A :class:`~openai_frontend.backend.base.Backend` over several tritonservers (see the module doc)."""

    def __init__(self, endpoints: Mapping[str, Backend], *, interval_s: float = HEALTH_INTERVAL_S,
                 timeout_s: float = HEALTH_TIMEOUT_S) -> None:
        if not endpoints:
            raise ValueError("a Triton pool needs at least one endpoint")
        self.endpoints = [Endpoint(url, backend) for url, backend in endpoints.items()]
        self._by_url = {e.url: e for e in self.endpoints}
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.frames_through_shim = all(getattr(e.backend, "frames_through_shim", False) for e in self.endpoints)
        self._turn = itertools.count()
        self._running: dict[str, Endpoint] = {}  # request id -> the endpoint generating it
        self._described: dict[str, Any] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._on_request: Callable[[str], None] = lambda _url: None

    @classmethod
    def connect(cls, urls: Sequence[str], *, timeout_s: float = 600.0, frames_through_shim: bool = False,
                **kwargs: Any) -> TritonPool:
        """A pool of one :class:`TritonBackend` per gRPC URL."""
        return cls({u: TritonBackend(u, timeout_s=timeout_s, frames_through_shim=frames_through_shim,
                                     channel_args=pool_channel_args()) for u in urls}, **kwargs)

    def use_metrics(self, metrics: Any) -> None:
        """Reports to ``metrics`` (openai_frontend.metrics.Metrics): endpoints up, requests per endpoint."""
        requests = metrics.add_triton_pool(lambda: sum(e.state == UP for e in self.endpoints))
        self._on_request = lambda url: requests.labels(endpoint=url).inc()

    # --- health ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Starts the background readiness probes (also started by the first request)."""
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="triton-pool-health")

    async def _watch(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.interval_s)

    async def check(self) -> None:
        """Probes every endpoint once, concurrently, and records what each answered."""
        await asyncio.gather(*(self._probe(e) for e in self.endpoints))

    async def _probe(self, endpoint: Endpoint) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                ready = await endpoint.backend.ready()
            reason = "" if ready else "llm or video_media is not ready"
        except TimeoutError:
            ready, reason = False, f"no readiness answer within {self.timeout_s:g} s"
        except Exception as exc:  # noqa: BLE001 - any failure of a probe means "not ready"
            ready, reason = False, f"readiness probe failed: {exc}"
        if ready:
            self._set(endpoint, UP)
        else:
            self._set(endpoint, DOWN, reason)

    def _set(self, endpoint: Endpoint, state: str, error: str = "") -> None:
        endpoint.error = error
        if endpoint.state == state:
            return
        endpoint.state, endpoint.changed_at = state, time.time()
        if state == DOWN:
            logger.warning("tritonserver %s is down: %s", endpoint.url, error)
        else:
            logger.info("tritonserver %s is %s", endpoint.url, state)

    async def ready(self) -> bool:
        """True when at least one endpoint's models are ready (every endpoint probed now)."""
        await self.start()
        await self.check()
        return any(e.state == UP for e in self.endpoints)

    def endpoint_states(self) -> dict[str, dict[str, Any]]:
        """What /health/ready reports per endpoint: state, why it is down, generations running there."""
        return {e.url: {"state": e.state, "error": e.error or None, "in_flight": e.in_flight}
                for e in self.endpoints}

    # --- choosing -------------------------------------------------------------------------------

    def order(self, key: str) -> list[Endpoint]:
        """Every endpoint, most preferred first for affinity ``key``."""
        return [self._by_url[u] for u in rendezvous_order([e.url for e in self.endpoints], key)]

    def candidates(self, key: str) -> list[Endpoint]:
        """Where a request with affinity ``key`` ("" : none) is tried, in turn."""
        if key:
            every = self.order(key)
            usable = [e for e in every if e.usable]
        else:
            every = self.endpoints
            usable = [e for e in every if e.usable]
            if usable:  # the turn goes round the endpoints that are up, so each gets an equal share
                i = next(self._turn) % len(usable)
                usable = usable[i:] + usable[:i]
        return usable or every[:1]

    async def _first_available(self, key: str, call: Callable[[Endpoint], Any]) -> Any:
        """``call(endpoint)`` on the candidates for ``key`` until one is not unavailable."""
        await self.start()
        last: EngineUnavailable | None = None
        for endpoint in self.candidates(key):
            try:
                return await call(endpoint)
            except EngineUnavailable as exc:
                self._failed(endpoint, exc)
                last = exc
        raise last if last is not None else EngineUnavailable("no tritonserver endpoint")

    def _failed(self, endpoint: Endpoint, exc: EngineUnavailable) -> None:
        self._set(endpoint, DOWN, str(exc))

    async def failover(self, key: str, stream: Callable[[Endpoint], AsyncIterator[Any]],
                       request_id: str = "") -> AsyncIterator[Any]:
        """The items of ``stream(endpoint)`` from the first candidate for ``key`` that does not fail
        as unavailable before its first item; ``request_id`` is kept on the endpoint while it runs."""
        await self.start()
        last: EngineUnavailable | None = None
        for endpoint in self.candidates(key):
            self._on_request(endpoint.url)
            answered = False
            endpoint.in_flight += 1
            if request_id:
                self._running[request_id] = endpoint
            try:
                async with aclosing(stream(endpoint)) as items:  # type: ignore[type-var]
                    async for item in items:
                        answered = True
                        yield item
                return
            except EngineUnavailable as exc:
                if answered:
                    raise
                self._failed(endpoint, exc)
                last = exc
                logger.info("request %s: %s is unavailable; trying the next tritonserver", request_id or "-",
                            endpoint.url)
            finally:
                endpoint.in_flight -= 1
                if request_id and self._running.get(request_id) is endpoint:
                    del self._running[request_id]
        raise last if last is not None else EngineUnavailable("no tritonserver endpoint")

    # --- the Backend protocol ----------------------------------------------------------------------

    async def describe_media(self) -> dict[str, Any]:
        # One served model per pool: every endpoint serves the same model repository.
        if self._described is None:
            self._described = await self._first_available("", lambda e: e.backend.describe_media())
        return self._described

    async def media(self, videos: list[bytes], options: list[dict[str, Any]]) -> tuple[np.ndarray, list[dict]]:
        key = await affinity_key(videos, options, [])

        async def call(endpoint: Endpoint) -> tuple[np.ndarray, list[dict]]:
            self._on_request(endpoint.url)
            return await endpoint.backend.media(videos, options)

        return await self._first_available(key, call)

    async def generate(self, request: LlmRequest) -> AsyncIterator[Delta]:
        key = await affinity_key(request.videos, request.video_options, request.images, request.messages)
        async with aclosing(self.failover(key, lambda e: e.backend.generate(request),
                                          request.request_id)) as deltas:
            async for delta in deltas:
                yield delta

    async def tokenize(self, request: TokenizeRequest) -> dict[str, Any]:
        return await self._first_available("", lambda e: e.backend.tokenize(request))

    async def detokenize(self, token_ids: list[int], request_id: str) -> str:
        return await self._first_available("", lambda e: e.backend.detokenize(token_ids, request_id))

    def running_on(self, request_id: str) -> str | None:
        """The URL of the endpoint generating ``request_id`` now (None when none is)."""
        endpoint = self._running.get(request_id)
        return endpoint.url if endpoint is not None else None

    async def abort(self, request_id: str) -> bool:
        """Asks the endpoint running ``request_id`` to stop it; False when no endpoint runs it."""
        endpoint = self._running.get(request_id)
        if endpoint is None:
            return False
        await endpoint.backend.abort(request_id)  # type: ignore[attr-defined]
        return True

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        await asyncio.gather(*(e.backend.close() for e in self.endpoints), return_exceptions=True)


def pool_channel_args(max_backoff_ms: int = 2000) -> list[tuple[str, Any]]:
    """tritonclient's default channel options, plus reconnect backoff capped near the probe interval:
    gRPC's default (up to 120 s) would keep a restarted tritonserver looking down for minutes."""
    from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions  # what tritonclient sets by default

    keepalive = KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", min(500, max_backoff_ms)),
        ("grpc.min_reconnect_backoff_ms", min(1000, max_backoff_ms)),
        ("grpc.max_reconnect_backoff_ms", max_backoff_ms),
    ]


def backend_for(urls: Sequence[str], *, timeout_s: float = 600.0) -> Backend:
    """The backend for ``--triton-url``'s list: one URL, a :class:`TritonBackend` (as before); several, a pool."""
    if len(urls) == 1:
        return TritonBackend(urls[0], timeout_s=timeout_s)
    return TritonPool.connect(urls, timeout_s=timeout_s)


def video_backend_for_pool(pool: TritonPool) -> Any:
    """Video generation on a pool: round robin over its endpoints' video_generator models, failing over
    like generation; each endpoint's abort stays on it."""
    from openai_frontend.videos.backend import TritonVideoBackend, UnavailableVideoBackend

    backends = {e.url: TritonVideoBackend(e.backend) for e in pool.endpoints if isinstance(e.backend, TritonBackend)}
    if not backends:
        return UnavailableVideoBackend()
    return PoolVideoBackend(pool, backends)


class PoolVideoBackend:
    """:class:`~openai_frontend.videos.backend.VideoBackend` over a pool's video_generator models."""

    def __init__(self, pool: TritonPool, backends: Mapping[str, Any]) -> None:
        self.pool = pool
        self.backends = dict(backends)

    async def capabilities(self) -> Any:
        # Like describe_media: one model per pool, the first answer kept (by TritonVideoBackend itself).
        return await self.pool._first_available("", lambda e: self.backends[e.url].capabilities())

    async def generate(self, request: Any) -> AsyncIterator[Any]:
        async with aclosing(self.pool.failover("", lambda e: self.backends[e.url].generate(request))) as events:
            async for event in events:
                yield event
