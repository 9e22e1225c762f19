"""Responses API answers in OpenAI's shapes: the response object and its named SSE events.

Stream: response.created, response.in_progress, response.output_item.added,
response.content_part.added, response.output_text.delta..., response.output_text.done,
response.content_part.done, response.output_item.done, then response.completed
(or response.incomplete when max_output_tokens cut the answer short). Every
event carries a ``sequence_number``. No ``[DONE]``: the Responses API has none.

Our extension: a request with videos gets ``video_plan`` (see
:mod:`openai_frontend.outputs.plan`) on the response object; ``dry_run``
answers the plan and the video token count without running the model.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from openai_frontend.backend.base import Delta
from openai_frontend.errors import from_exception
from openai_frontend.outputs.plan import video_plan, video_tokens
from openai_frontend.schemas.responses import ResponsesRequest
from openai_frontend.service import Completion, Service, Usage
from openai_frontend.sse import named_event


def usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0, "video_tokens": usage.video_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.total_tokens,
    }


def _status(finish_reason: str | None) -> tuple[str, dict[str, str] | None]:
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    return "completed", None


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


@dataclass
class ResponseBuilder:
    """The response object of one request, as it evolves from in_progress to done."""

    request: ResponsesRequest
    response_id: str
    model: str
    message_id: str
    created_at: int = field(default_factory=lambda: int(time.time()))
    infos: list[dict[str, Any]] | None = None  # the request's video_info: the response's video_plan

    def message(self, text: str | None, status: str) -> dict[str, Any]:
        content = [] if text is None else [_text_part(text)]
        return {"id": self.message_id, "type": "message", "status": status, "role": "assistant", "content": content}

    def body(self, *, status: str, output: list[dict[str, Any]], usage: Usage | None = None,
             incomplete: dict[str, str] | None = None, error: dict[str, Any] | None = None) -> dict[str, Any]:
        r = self.request
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": False,
            "error": error,
            "incomplete_details": incomplete,
            "instructions": r.instructions,
            "max_output_tokens": r.max_output_tokens,
            "max_tool_calls": None,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": False,
            "temperature": r.temperature,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": r.top_p,
            "truncation": "disabled",
            "usage": None if usage is None else usage_body(usage),
            "user": r.user,
            "metadata": r.metadata or {},
            **({"video_plan": video_plan(self.infos)} if self.infos else {}),
        }

    def dry_run(self) -> dict[str, Any]:
        """A dry run's answer: no output, the videos' plan and token cost. The model did not run,
        so the text's tokens are not counted: ``input_tokens`` and ``total_tokens`` are null."""
        infos = self.infos or []
        body = self.body(status="completed", output=[])
        body["usage"] = {
            "input_tokens": None,
            "input_tokens_details": {"cached_tokens": 0, "video_tokens": video_tokens(infos)},
            "output_tokens": 0,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": None,
        }
        body["dry_run"] = True
        body["video_plan"] = video_plan(infos)
        return body

    def completed(self, completion: Completion) -> dict[str, Any]:
        choice = completion.choices[0]
        status, incomplete = _status(choice.finish_reason)
        return self.body(status=status, output=[self.message(choice.text, status)], usage=completion.usage,
                         incomplete=incomplete)

    async def events(self, deltas: AsyncIterator[Delta], service: Service, path: str,
                     started: float | None = None) -> AsyncIterator[bytes]:
        async with aclosing(deltas):  # closing it cancels the Triton request on an early exit
            seq = 0

            def event(kind: str, **fields: Any) -> bytes:
                nonlocal seq
                out = named_event({"type": kind, "sequence_number": seq, **fields})
                seq += 1
                return out

            ids = {"item_id": self.message_id, "output_index": 0, "content_index": 0}
            yield event("response.created", response=self.body(status="in_progress", output=[]))
            yield event("response.in_progress", response=self.body(status="in_progress", output=[]))
            yield event("response.output_item.added", output_index=0, item=self.message(None, "in_progress"))
            yield event("response.content_part.added", **ids, part=_text_part(""))
            usage = Usage()
            text: list[str] = []
            finish: str | None = None
            try:
                async for delta in deltas:
                    usage.add(delta)
                    if delta.text:
                        if not text and started is not None:
                            service.metrics.time_to_first_token.observe(time.perf_counter() - started)
                        text.append(delta.text)
                        yield event("response.output_text.delta", **ids, delta=delta.text, logprobs=[])
                    finish = delta.finish_reason or finish
            except Exception as exc:  # noqa: BLE001 - headers are sent: the error goes in-band
                err = from_exception(exc)
                service.metrics.error(path, err.code)
                yield event("error", code=err.code, message=err.message, param=err.param)
                failed = {"code": err.code, "message": err.message}
                yield event("response.failed", response=self.body(status="failed", output=[], usage=usage, error=failed))
                return
            service.observe(usage)
            whole = "".join(text)
            status, incomplete = _status(finish)
            yield event("response.output_text.done", **ids, text=whole, logprobs=[])
            yield event("response.content_part.done", **ids, part=_text_part(whole))
            item = self.message(whole, status)
            yield event("response.output_item.done", output_index=0, item=item)
            final = self.body(status=status, output=[item], usage=usage, incomplete=incomplete)
            yield event("response.completed" if status == "completed" else "response.incomplete", response=final)
