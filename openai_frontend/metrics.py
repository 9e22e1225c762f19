"""Prometheus metrics of the shim, one registry per app (so tests can build many apps).

Requests, latency and errors are counted by an ASGI middleware that sees the
status and the end of every response, streams included; media and token
counts by the service as it handles them.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Paths get their own label; anything else is "other", so scanners cannot blow up label cardinality.
ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/models", "/health", "/health/ready", "/metrics")
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
        self.video_tokens = Counter("vlt_video_tokens", "Prompt tokens that stand for video", registry=r)
        self.prompt_tokens = Counter("vlt_prompt_tokens", "Prompt tokens", registry=r)
        self.completion_tokens = Counter("vlt_completion_tokens", "Generated tokens", registry=r)
        self.time_to_first_token = Histogram(
            "vlt_time_to_first_token_seconds", "Streamed requests: time from request to the first text",
            buckets=_LATENCY_BUCKETS, registry=r)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def error(self, path: str, code: str) -> None:
        self.errors.labels(endpoint=endpoint_label(path), code=code).inc()


def endpoint_label(path: str) -> str:
    return path if path in ENDPOINTS else "other"


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

        try:
            await self.app(scope, receive, timed_send)
        finally:
            self.metrics.requests.labels(endpoint=endpoint, status=str(status["code"])).inc()
            self.metrics.latency.labels(endpoint=endpoint).observe(time.perf_counter() - start)
