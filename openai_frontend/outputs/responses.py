"""Responses API answers in OpenAI's shapes: the response object and its named SSE events.

Stream: response.created, response.in_progress, response.output_item.added,
response.content_part.added, response.output_text.delta..., response.output_text.done,
response.content_part.done, response.output_item.done, then response.completed
(or response.incomplete when max_output_tokens cut the answer short). Every
event carries a ``sequence_number``. No ``[DONE]``: the Responses API has none.

Our extension: a request with videos gets ``video_plan`` (see
:mod:`openai_frontend.outputs.plan`) on the response object; ``dry_run``
answers the plan and the video token count without running the model.

With function tools, each call the llm's tool parser finds is a ``function_call`` output item (after the
message, when there is text): streamed as response.output_item.added, response.function_call_arguments.delta...,
response.function_call_arguments.done, response.output_item.done; the message item then opens at its
first text, and is left out when the model only called tools.

With ``include: ["message.output_text.logprobs"]`` (and ``top_logprobs``) the output_text part
carries the engine's per-token logprobs, and each text delta event those of its own tokens.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from openai_frontend.backend.base import Delta
from openai_frontend.errors import from_exception
from openai_frontend.outputs.chat import token_entry
from openai_frontend.outputs.plan import video_plan, video_tokens
from openai_frontend.schemas.responses import ResponsesRequest
from openai_frontend.service import Completion, Service, Usage
from openai_frontend.sse import named_event
from openai_frontend.tools import (
    StreamedCalls,
    message_calls,
    output_item,
    response_tool_choice,
    response_tools,
)


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


def _text_part(text: str, logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": output_logprobs(logprobs)}


def output_logprobs(entries: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """llm's ``logprobs`` as an output_text part's: ``[{token, logprob, bytes, top_logprobs: [...]}]``."""
    return [{**token_entry(e), "top_logprobs": [token_entry(t) for t in e.get("top") or ()]}
            for e in entries or ()]


def stream_logprobs(entries: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """llm's ``logprobs`` as a text delta event's: ``[{token, logprob, top_logprobs: [{token, logprob}]}]``."""
    def short(e: dict[str, Any]) -> dict[str, Any]:
        return {"token": str(e.get("token", "")), "logprob": float(e.get("logprob", 0.0))}

    return [{**short(e), "top_logprobs": [short(t) for t in e.get("top") or ()]} for e in entries or ()]


@dataclass
class ResponseBuilder:
    """The response object of one request, as it evolves from in_progress to done."""

    request: ResponsesRequest
    response_id: str
    model: str
    message_id: str
    created_at: int = field(default_factory=lambda: int(time.time()))
    infos: list[dict[str, Any]] | None = None  # the request's video_info: the response's video_plan

    def message(self, text: str | None, status: str, logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        content = [] if text is None else [_text_part(text, logprobs)]
        return {"id": self.message_id, "type": "message", "status": status, "role": "assistant", "content": content}

    def body(self, *, status: str, output: list[dict[str, Any]], usage: Usage | None = None,
             incomplete: dict[str, str] | None = None, error: dict[str, Any] | None = None) -> dict[str, Any]:
        r = self.request
        tools = r.tool_calling()
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
            "parallel_tool_calls": r.parallel_tool_calls is not False,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": False,
            "temperature": r.temperature,
            "text": {"format": (r.text.format if r.text is not None and r.text.format else None) or {"type": "text"}},
            "top_logprobs": r.top_logprobs or 0,
            "tool_choice": response_tool_choice((tools or {}).get("tool_choice", r.tool_choice)),
            "tools": response_tools((tools or {}).get("tools", [])),
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

    @property
    def has_tools(self) -> bool:
        """Whether the model may call tools: its output items then open as its output shows them."""
        tools = self.request.tool_calling()
        return tools is not None and tools["tool_choice"] != "none"

    def completed(self, completion: Completion) -> dict[str, Any]:
        choice = completion.choices[0]
        status, incomplete = _status(choice.finish_reason)
        output = [self.message(choice.text, status, choice.logprobs)] if choice.text or not choice.tool_calls else []
        output += [output_item(call, f"fc_{uuid.uuid4().hex}") for call in message_calls(choice.tool_calls)]
        return self.body(status=status, output=output, usage=completion.usage, incomplete=incomplete)

    async def events(self, deltas: AsyncIterator[Delta], service: Service, path: str,
                     started: float | None = None) -> AsyncIterator[bytes]:
        async with aclosing(deltas):  # closing it cancels the Triton request on an early exit
            seq = 0

            def event(kind: str, **fields: Any) -> bytes:
                nonlocal seq
                out = named_event({"type": kind, "sequence_number": seq, **fields})
                seq += 1
                return out

            # Output items open in the order the model's output shows them: the message (at once, unless
            # the request has tools: then at its first text), then one function_call item per call.
            ids = {"item_id": self.message_id, "output_index": 0, "content_index": 0}
            opened: list[str] = []  # output_index -> "message" or a call's item id
            calls, call_items = StreamedCalls(), {}  # call index -> (item id, output_index)

            def open_message() -> list[bytes]:
                ids["output_index"] = len(opened)
                opened.append("message")
                return [event("response.output_item.added", output_index=ids["output_index"],
                              item=self.message(None, "in_progress")),
                        event("response.content_part.added", **ids, part=_text_part(""))]

            yield event("response.created", response=self.body(status="in_progress", output=[]))
            yield event("response.in_progress", response=self.body(status="in_progress", output=[]))
            if not self.has_tools:
                for e in open_message():
                    yield e
            usage = Usage()
            text: list[str] = []
            logprobs: list[dict[str, Any]] = []
            finish: str | None = None
            try:
                async for delta in deltas:
                    usage.add(delta)
                    logprobs.extend(delta.logprobs or ())
                    if delta.text or delta.logprobs:  # each delta event carries its own tokens' logprobs
                        if not text and started is not None:
                            service.metrics.time_to_first_token.observe(time.perf_counter() - started)
                        if "message" not in opened:
                            for e in open_message():
                                yield e
                        text.append(delta.text)
                        yield event("response.output_text.delta", **ids, delta=delta.text,
                                    logprobs=stream_logprobs(delta.logprobs))
                    for index, new, fragment in calls.add(delta.tool_calls or []):
                        if new:
                            call_items[index] = (f"fc_{uuid.uuid4().hex}", len(opened))
                            opened.append(call_items[index][0])
                            yield event("response.output_item.added", output_index=call_items[index][1],
                                        item=output_item(calls.calls[index], call_items[index][0], "in_progress"))
                        if fragment:
                            yield event("response.function_call_arguments.delta", item_id=call_items[index][0],
                                        output_index=call_items[index][1], delta=fragment)
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
            if not opened:  # neither text nor calls: an empty message, as without tools
                for e in open_message():
                    yield e
            output: list[dict[str, Any]] = []
            for index, kind in enumerate(opened):
                if kind == "message":
                    yield event("response.output_text.done", **ids, text=whole, logprobs=stream_logprobs(logprobs))
                    yield event("response.content_part.done", **ids, part=_text_part(whole, logprobs))
                    item = self.message(whole, status, logprobs)
                else:
                    call = next(calls.calls[i] for i, (item_id, _) in call_items.items() if item_id == kind)
                    item = output_item(call, kind)
                    yield event("response.function_call_arguments.done", item_id=kind, output_index=index,
                                name=item["name"], arguments=item["arguments"])
                yield event("response.output_item.done", output_index=index, item=item)
                output.append(item)
            final = self.body(status=status, output=output, usage=usage, incomplete=incomplete)
            yield event("response.completed" if status == "completed" else "response.incomplete", response=final)
