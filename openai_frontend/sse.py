"""Server-Sent Events that stop generating when the client leaves.

Starlette's StreamingResponse notices a gone client only when a write fails
(ASGI 2.4) and then leaves the body iterator to the garbage collector; here the
stream races a disconnect listener and always closes its iterator, so the
backend's generator runs its ``finally`` at once and cancels the Triton request,
even while the engine is still computing the prompt.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

logger = logging.getLogger(__name__)

T = TypeVar("T")

DONE = b"data: [DONE]\n\n"


def data_event(payload: dict[str, Any]) -> bytes:
    """``data: {json}\\n\\n`` (Chat Completions chunks)."""
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def named_event(payload: dict[str, Any]) -> bytes:
    """``event: <type>\\ndata: {json}\\n\\n`` (Responses events, named by their ``type``)."""
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return b"event: " + payload["type"].encode() + b"\ndata: " + body + b"\n\n"


class ClientGone(Exception):
    """The client disconnected before the answer was ready."""


class EventStreamResponse(StreamingResponse):
    def __init__(self, events: AsyncIterator[bytes], headers: dict[str, str] | None = None) -> None:
        super().__init__(events, status_code=200, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})})
        self.events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = asyncio.ensure_future(self._stream(send))
        listener = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            await asyncio.wait({stream, listener}, return_when=asyncio.FIRST_COMPLETED)
            if not stream.done():
                logger.info("client disconnected mid-stream; cancelling generation")
        finally:
            listener.cancel()
            stream.cancel()
            # Let the stream unwind before closing its iterator (closing a running generator fails).
            await asyncio.wait({stream})
            await self.events.aclose()  # type: ignore[attr-defined]
        error = None if stream.cancelled() else stream.exception()
        if error is not None and not isinstance(error, OSError):  # OSError: the client went away
            raise error

    async def _stream(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async for chunk in self.events:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Runs ``work``; cancels it (and raises :class:`ClientGone`) if the client disconnects first."""
    task = asyncio.ensure_future(work)
    listener = asyncio.ensure_future(_wait_for_disconnect(request.receive))
    try:
        done, _ = await asyncio.wait({task, listener}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):  # noqa: BLE001 - the client is gone; nobody to tell
            pass
        raise ClientGone()
    finally:
        listener.cancel()
        if not task.done():
            task.cancel()
