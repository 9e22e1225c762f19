"""Request ids and the shim's logs.

Every HTTP request gets an id: the client's ``X-Request-Id`` when it is a sane token,
else a new ``req_<hex>``. The id goes back in the response's ``X-Request-Id``, on every
log line written while the request runs (a context variable), and to tritonserver as
the request id of the ``video_media`` and ``llm`` calls, whose model adapters log it,
so one grep follows a request from the shim through Triton into the engine.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from contextvars import ContextVar
from typing import Any

from video_pipeline import log_format

REQUEST_ID_HEADER = "X-Request-Id"
_HEADER_KEY = REQUEST_ID_HEADER.lower().encode()
# A client's id is echoed into headers and logs: printable, no spaces, bounded.
_SANE = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")

_current: ContextVar[str] = ContextVar("vlt_request_id", default="")
access_log = logging.getLogger("openai_frontend.access")
# Probes and scrapes arrive every few seconds; their access lines are debug-level.
_QUIET_PATHS = ("/health", "/health/ready", "/metrics")


def current_request_id() -> str:
    """The id of the HTTP request being handled ("" outside one)."""
    return _current.get()


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex}"


def engine_request_id() -> str:
    """The engine's id of this HTTP request's generation: its X-Request-Id (so logs are searched by it) plus
    a random suffix, unique even when a client sends one id twice, so that aborting one request (its
    client left) can never stop another that carries the same, client-chosen id."""
    return f"{current_request_id() or 'req'}.{uuid.uuid4().hex[:12]}"


def accepted_request_id(value: str | None) -> str:
    """The client's id if it is a sane token, else a new one."""
    return value if value and _SANE.fullmatch(value) else new_request_id()


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    """The shim's logging: one stderr handler, text or JSON lines, each with the request id."""
    log_format.configure(level, fmt, current_request_id)


class RequestIdMiddleware:
    """Assigns the request id, returns it as ``X-Request-Id`` and writes one access log line per request."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == _HEADER_KEY), None)
        request_id = accepted_request_id(given)
        token = _current.set(request_id)
        start = time.perf_counter()
        status = {"code": 500}

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != _HEADER_KEY]
                message = {**message, "headers": [*headers, (_HEADER_KEY, request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            ms = (time.perf_counter() - start) * 1000
            path = scope.get("path", "")
            level = logging.DEBUG if path in _QUIET_PATHS and status["code"] < 400 else logging.INFO
            access_log.log(level, "%s %s %d %.1f ms", scope.get("method", ""), path, status["code"], ms,
                           extra={"method": scope.get("method", ""), "path": path,
                                  "status": status["code"], "duration_ms": round(ms, 1)})
            _current.reset(token)
