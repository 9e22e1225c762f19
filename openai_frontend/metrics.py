"""Prometheus metrics of the shim, one registry per app (so tests can build many apps).

Requests, latency and errors are counted by an ASGI middleware that sees the
status and the end of every response, streams included; media and token
counts by the service as it handles them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Paths get their own label; anything else is "other", so scanners cannot blow up label cardinality.
ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/completions", "/v1/models", "/health", "/health/ready",
             "/metrics", "/v1/files", "/v1/videos", "/v1/uploads", "/playground", "/tokenize", "/detokenize",
             "/version", "/ping")
# Paths with an id in them are labelled by their route ("/v1/files/{id}", "/v1/videos/{id}/content").
_ID_ROUTES = ("/v1/files/", "/v1/videos/", "/v1/uploads/")
_ID_ACTIONS = ("content", "parts", "complete", "cancel", "remix")
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("vlt_requests", "HTTP requests by endpoint and status", ["endpoint", "status"],
                                registry=r)
        self.latency = Histogram("vlt_request_duration_seconds", "Time from request to the last byte of the answer",
                                 ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r)
        self.errors = Counter("vlt_errors", "Error answers (4xx/5xx, and errors inside a stream) by endpoint and code",
                              ["endpoint", "code"], registry=r)
        self.videos = Counter("vlt_videos", "Videos decoded for requests", registry=r)
        self.frames = Counter("vlt_video_frames", "Frames sent to the engine", registry=r)
        self.images = Counter("vlt_images", "Images sent to the engine", registry=r)
        self.media_cache = Counter("vlt_media_cache", "Videos by what tritonserver's media cache did "
                                   "(hit, miss, off), as the video_media answers say", ["result"], registry=r)
        self.video_tokens = Counter("vlt_video_tokens", "Prompt tokens that stand for video", registry=r)
        self.prompt_tokens = Counter("vlt_prompt_tokens", "Prompt tokens", registry=r)
        self.completion_tokens = Counter("vlt_completion_tokens", "Generated tokens", registry=r)
        self.time_to_first_token = Histogram(
            "vlt_time_to_first_token_seconds", "Streamed requests: time from request to the first text",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("vlt_requests_in_flight", "HTTP requests being handled (streams until their last byte)",
                               registry=r)
        self.media_duration = Histogram(
            "vlt_media_duration_seconds", "Time of the video_media call (decode + preprocess in tritonserver), "
            "as the shim waits for it", buckets=_LATENCY_BUCKETS, registry=r)
        self.upload_bytes = Counter("vlt_upload_bytes", "Bytes of files accepted by POST /v1/files", registry=r)
        # Video generation jobs by state; the jobs' owner sets them (inc/dec, or set_function on its queue).
        self.video_jobs_queued = Gauge("vlt_video_jobs_queued", "Video generation jobs waiting to start", registry=r)
        self.video_jobs_running = Gauge("vlt_video_jobs_in_progress", "Video generation jobs running", registry=r)

    def add_triton_pool(self, healthy: Callable[[], float]) -> Counter:
        """The metrics of several tritonservers (--triton-url a,b,...), registered only for a pool:
        a gauge reading ``healthy()`` at scrape time, and the counter of requests per endpoint it returns."""
        gauge = Gauge("vlt_triton_endpoints_healthy", "Tritonserver endpoints whose llm and video_media are ready",
                      registry=self.registry)
        gauge.set_function(healthy)
        return Counter("vlt_triton_requests", "Requests sent to each tritonserver endpoint (generations, media "
                       "calls; a failover counts on both)", ["endpoint"], registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def error(self, path: str, code: str) -> None:
        self.errors.labels(endpoint=endpoint_label(path), code=code).inc()


def endpoint_label(path: str) -> str:
    if path in ENDPOINTS:
        return path
    for prefix in _ID_ROUTES:
        if path.startswith(prefix) and len(path) > len(prefix):
            rest = path[len(prefix):].split("/", 1)
            return prefix + "{id}" + ("/" + rest[1] if len(rest) > 1 and rest[1] in _ID_ACTIONS else "")
    return "other"


class MetricsMiddleware:
    """Counts every request and times it to its last body byte (streams included)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = endpoint_label(scope.get("path", ""))
        start = time.perf_counter()
        status = {"code": 500}

        async def timed_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, timed_send)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(endpoint=endpoint, status=str(status["code"])).inc()
            self.metrics.latency.labels(endpoint=endpoint).observe(time.perf_counter() - start)
