"""Chat Completions answers in exactly OpenAI's shapes: the completion object and its SSE chunks.

Stream: a role chunk per choice, content chunks, a finish chunk per choice
(empty delta + finish_reason), then with ``stream_options.include_usage`` a
last chunk with ``choices: []`` and the usage (every other chunk then carries
``"usage": null``), then ``data: [DONE]``.

Our extension: a request with videos gets ``video_plan`` (see
:mod:`openai_frontend.outputs.plan`) beside ``usage`` in the completion and in
the stream's usage chunk; ``dry_run`` answers the plan and the video token count
without running the model (:func:`dry_run_body`).

Tool calls (openai_frontend.tools): ``message.tool_calls`` (content null when there is no text) and
``finish_reason: "tool_calls"``; streamed as chunks whose delta holds ``tool_calls`` as OpenAI streams
them (index, id, type and function.name first, then argument fragments).

Logprobs (``logprobs: true``, ``top_logprobs``) come from the engine per token; each content
chunk carries those of its own tokens, the completion those of the whole choice.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from openai_frontend.backend.base import Delta
from openai_frontend.errors import from_exception
from openai_frontend.outputs.plan import video_plan, video_tokens
from openai_frontend.service import Choice, Completion, Service, Usage
from openai_frontend.sse import DONE, data_event
from openai_frontend.tools import message_calls


def usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"video_tokens": usage.video_tokens},
    }


def token_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """One token of llm's ``logprobs`` in OpenAI's shape: token, logprob, bytes (of its text, UTF-8)."""
    token = str(entry.get("token", ""))
    return {"token": token, "logprob": float(entry.get("logprob", 0.0)),
            "bytes": list(token.encode("utf-8", "replace"))}


def logprobs_body(entries: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """A choice's ``logprobs``: ``{"content": [{token, logprob, bytes, top_logprobs}], "refusal": null}``,
    or null when the request asked for none."""
    if entries is None:
        return None
    content = [{**token_entry(e), "top_logprobs": [token_entry(t) for t in e.get("top") or ()]} for e in entries]
    return {"content": content, "refusal": None}


def completion_body(request_id: str, created: int, model: str, completion: Completion,
                    infos: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The chat.completion object; ``infos`` (the request's video_info) add its ``video_plan``."""
    return _with_plan({
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": c.index,
                "message": message_body(c),
                "logprobs": logprobs_body(c.logprobs),
                "finish_reason": c.finish_reason,
            }
            for c in completion.choices
        ],
        "usage": usage_body(completion.usage),
    }, infos)


def message_body(choice: Choice) -> dict[str, Any]:
    """A choice's message: its text, and the calls the llm's tool parser found (content null when the
    model only called tools, as OpenAI answers)."""
    if not choice.tool_calls:
        return {"role": "assistant", "content": choice.text, "refusal": None}
    return {"role": "assistant", "content": choice.text or None, "refusal": None,
            "tool_calls": message_calls(choice.tool_calls)}


def dry_run_body(request_id: str, created: int, model: str, infos: list[dict[str, Any]]) -> dict[str, Any]:
    """A dry run's answer: no choices, the videos' plan and token cost. The model did not run, so
    the text's tokens are not counted: ``prompt_tokens`` and ``total_tokens`` are null."""
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [],
        "usage": {
            "prompt_tokens": None,
            "completion_tokens": 0,
            "total_tokens": None,
            "prompt_tokens_details": {"video_tokens": video_tokens(infos)},
        },
        "dry_run": True,
        "video_plan": video_plan(infos),
    }


def _with_plan(body: dict[str, Any], infos: list[dict[str, Any]] | None) -> dict[str, Any]:
    if infos:
        body["video_plan"] = video_plan(infos)
    return body


@dataclass(frozen=True)
class ChunkStream:
    """Formats one streamed completion."""

    request_id: str
    model: str
    n: int
    include_usage: bool
    continuous_usage: bool
    created: int
    infos: list[dict[str, Any]] | None = None  # the request's video_info: the usage chunk's video_plan

    def chunk(self, choices: list[dict[str, Any]], usage: Usage | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": self.request_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
        }
        if self.include_usage or self.continuous_usage:
            body["usage"] = usage_body(usage) if usage is not None and self.continuous_usage else None
        return data_event(body)

    @staticmethod
    def choice(index: int, delta: dict[str, Any], finish_reason: str | None = None,
               logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return {"index": index, "delta": delta, "logprobs": logprobs_body(logprobs), "finish_reason": finish_reason}

    async def events(self, deltas: AsyncIterator[Delta], service: Service, path: str,
                     started: float | None = None) -> AsyncIterator[bytes]:
        async with aclosing(deltas):  # closing it cancels the Triton request on an early exit
            usage = Usage()
            first_text = True
            try:
                for i in range(self.n):
                    yield self.chunk([self.choice(i, {"role": "assistant", "content": ""})], usage)
                async for delta in deltas:
                    usage.add(delta)
                    if delta.text or delta.logprobs:  # each chunk carries its own tokens' logprobs
                        if first_text and started is not None:
                            service.metrics.time_to_first_token.observe(time.perf_counter() - started)
                            first_text = False
                        yield self.chunk([self.choice(delta.index, {"content": delta.text},
                                                      logprobs=delta.logprobs)], usage)
                    if delta.tool_calls:  # OpenAI's delta calls: index, id, type, function.name, then arguments
                        yield self.chunk([self.choice(delta.index, {"tool_calls": delta.tool_calls})], usage)
                    if delta.finish_reason:
                        yield self.chunk([self.choice(delta.index, {}, delta.finish_reason)], usage)
                service.observe(usage)
                if self.include_usage:
                    yield self._usage_chunk(usage)
            except Exception as exc:  # noqa: BLE001 - headers are sent: the error goes in-band
                err = from_exception(exc)
                service.metrics.error(path, err.code)
                yield data_event(err.body())
            yield DONE

    def _usage_chunk(self, usage: Usage) -> bytes:
        body = {
            "id": self.request_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [],
            "usage": usage_body(usage),
        }
        return data_event(_with_plan(body, self.infos))


def now() -> int:
    return int(time.time())
