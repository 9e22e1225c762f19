"""Legacy Completions answers in OpenAI's shapes: the ``text_completion`` object and its SSE chunks.

A request with several prompts runs one llm request per prompt, concurrently; choice ``i`` of
prompt ``p`` is choice ``p * n + i`` of the answer, as in OpenAI's API and vLLM's. ``echo`` puts
the prompt in front of each choice's text (the first chunk of it, when streamed). Usage sums every
prompt. Stream: chunks as the choices' text arrives, the last chunk of a choice with its
``finish_reason``, then with ``stream_options.include_usage`` a last chunk with ``choices: []``
and the usage, then ``data: [DONE]``.

With ``logprobs`` a choice carries the engine's per-token logprobs in the legacy shape,
``{"tokens", "token_logprobs", "top_logprobs", "text_offset"}`` (:func:`legacy_logprobs`); each stream
chunk those of its own tokens, their offsets counted in the choice's whole text.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing, suppress
from dataclasses import dataclass
from typing import Any

from openai_frontend.backend.base import Delta
from openai_frontend.errors import from_exception
from openai_frontend.service import Completion, Service, Usage
from openai_frontend.sse import DONE, data_event

#: Deltas buffered per request while several prompts stream into one answer.
MERGE_BUFFER = 16


def usage_body(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def legacy_logprobs(entries: list[dict[str, Any]] | None, offset: int = 0) -> dict[str, Any] | None:
    """llm's ``logprobs`` (one entry per token) as a legacy Completions choice's, as vLLM answers them:
    ``tokens``, ``token_logprobs``, ``top_logprobs`` (per token ``{token: logprob}``, the sampled token
    first, then the most likely ones) and ``text_offset`` (where each token starts in the choice's text,
    the first at ``offset``); null when the request asked for none."""
    if entries is None:
        return None
    body: dict[str, list[Any]] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for entry in entries:
        token, logprob = str(entry.get("token", "")), float(entry.get("logprob", 0.0))
        top = {token: logprob}
        for alt in entry.get("top") or ():
            top.setdefault(str(alt.get("token", "")), float(alt.get("logprob", 0.0)))
        body["tokens"].append(token)
        body["token_logprobs"].append(logprob)
        body["top_logprobs"].append(top)
        body["text_offset"].append(offset)
        offset += len(token)
    return body


def completion_body(request_id: str, created: int, model: str, completions: Sequence[Completion],
                    prompts: Sequence[str], n: int, echo: bool) -> dict[str, Any]:
    """The text_completion object of every prompt's completion."""
    choices = [{"index": p * n + c.index, "text": (prompts[p] if echo else "") + c.text,
                "logprobs": legacy_logprobs(c.logprobs, len(prompts[p]) if echo else 0),
                "finish_reason": c.finish_reason}
               for p, completion in enumerate(completions) for c in completion.choices]
    return {"id": request_id, "object": "text_completion", "created": created, "model": model,
            "system_fingerprint": None, "choices": choices,
            "usage": usage_body(sum(c.usage.prompt_tokens for c in completions),
                                sum(c.usage.completion_tokens for c in completions))}


@dataclass(frozen=True)
class CompletionStream:
    """Formats one streamed completion of one or more prompts."""

    request_id: str
    model: str
    created: int
    n: int
    prompts: Sequence[str]
    echo: bool
    include_usage: bool
    continuous_usage: bool

    def chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        body: dict[str, Any] = {"id": self.request_id, "object": "text_completion", "created": self.created,
                                "model": self.model, "system_fingerprint": None, "choices": choices}
        if self.include_usage or self.continuous_usage:
            body["usage"] = usage if self.continuous_usage else None
        return data_event(body)

    async def events(self, streams: list[AsyncIterator[Delta]], service: Service, path: str,
                     started: float | None = None) -> AsyncIterator[bytes]:
        usages = [Usage() for _ in self.prompts]
        echoed: set[int] = set()
        sent: dict[int, int] = {}  # per choice, the length of its text so far: where its next tokens start
        first_text = True
        async with aclosing(merged(streams)) as deltas:  # closing it cancels every Triton request
            try:
                async for p, delta in deltas:
                    usages[p].add(delta)
                    index = p * self.n + delta.index
                    text = delta.text
                    if self.echo and index not in echoed:
                        text = self.prompts[p] + text
                        echoed.add(index)
                    if not text and not delta.finish_reason and not delta.logprobs:
                        continue
                    if text and first_text and started is not None:
                        service.metrics.time_to_first_token.observe(time.perf_counter() - started)
                        first_text = False
                    start = sent.get(index, 0) + len(text) - len(delta.text)  # after an echoed prompt
                    sent[index] = sent.get(index, 0) + len(text)
                    usage = usage_body(usages[p].prompt_tokens, usages[p].per_choice.get(delta.index, 0))
                    yield self.chunk([{"index": index, "text": text, "logprobs": legacy_logprobs(delta.logprobs, start),
                                       "finish_reason": delta.finish_reason}], usage)
                for usage in usages:
                    service.observe(usage)
                if self.include_usage:
                    body = {"id": self.request_id, "object": "text_completion", "created": self.created,
                            "model": self.model, "system_fingerprint": None, "choices": [],
                            "usage": usage_body(sum(u.prompt_tokens for u in usages),
                                                sum(u.completion_tokens for u in usages))}
                    yield data_event(body)
            except Exception as exc:  # noqa: BLE001 - headers are sent: the error goes in-band
                err = from_exception(exc)
                service.metrics.error(path, err.code)
                yield data_event(err.body())
            yield DONE


async def start_all(service: Service, requests: Sequence[Any]) -> list[AsyncIterator[Delta]]:
    """Each request's stream once its first delta has arrived (Service.start_stream), so an error any
    prompt meets before generating is the HTTP answer; on one failure the others are closed."""
    tasks = [asyncio.ensure_future(service.start_stream(r)) for r in requests]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if not isinstance(result, BaseException):
                await result.aclose()  # type: ignore[attr-defined]
        raise


async def merged(streams: list[AsyncIterator[Delta]]) -> AsyncIterator[tuple[int, Delta]]:
    """(stream index, delta) from every stream as they arrive; the first error ends it, and closing
    it closes every stream (cancelling their Triton requests)."""
    if len(streams) == 1:
        async with aclosing(streams[0]) as only:  # type: ignore[type-var]
            async for delta in only:
                yield 0, delta
        return
    queue: asyncio.Queue[tuple[int, Delta | None, BaseException | None]] = asyncio.Queue(MERGE_BUFFER)

    async def pump(i: int, stream: AsyncIterator[Delta]) -> None:
        try:
            async for delta in stream:
                await queue.put((i, delta, None))
            await queue.put((i, None, None))
        except Exception as exc:  # noqa: BLE001 - handed to the consumer
            await queue.put((i, None, exc))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    try:
        left = len(tasks)
        while left:
            i, delta, error = await queue.get()
            if error is not None:
                raise error
            if delta is None:
                left -= 1
                continue
            yield i, delta
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for stream in streams:
            with suppress(Exception):
                await stream.aclose()  # type: ignore[attr-defined]
