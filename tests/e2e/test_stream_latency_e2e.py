"""First-token latency of streamed chats interleaved with long non-streamed ones, through the shim on the
session's stack (issue 20.3): each stream's first content chunk must arrive well before its last, not after the
whole generation. The tiny model makes 2000 tokens in a few seconds on CPU.

Known failure (xfail, not strict): in about 1 stream in 3 the first chunk arrives only near the end. The same
happens with Triton's own clients (sync gRPC ``start_stream`` and HTTP ``generate_stream`` straight to ``llm``),
while the llm stub hands its first response to the response sender within 10 ms of ``execute``: the hold is
inside tritonserver 2.51's response delivery, not in the shim, tritonclient.grpc.aio or vLLM (DELTA output: the
2000 chunks are never merged)."""

from __future__ import annotations

import time

import pytest

TOKENS = 2000
EXTRA = {"ignore_eos": True}


def ask() -> list[dict]:
    return [{"role": "user", "content": "Tell me everything."}]


@pytest.mark.xfail(reason="tritonserver 2.51 sometimes holds a decoupled model's responses back (issue 20.3)",
                   strict=False)
def test_streamed_chats_get_their_first_chunk_early_when_interleaved_with_long_non_streamed_ones(shim) -> None:
    client = shim.client()
    ratios = []
    for i in range(6):
        if i % 2 == 0:
            r = client.chat.completions.create(model="tiny-qwen2-vl", messages=ask(), max_tokens=TOKENS,
                                               temperature=0, extra_body=EXTRA)
            assert r.usage.completion_tokens == TOKENS
        start = time.perf_counter()
        first = last = None
        chunks = 0
        for chunk in client.chat.completions.create(model="tiny-qwen2-vl", messages=ask(), max_tokens=TOKENS,
                                                    temperature=0, stream=True, extra_body=EXTRA):
            if chunk.choices and chunk.choices[0].delta.content:
                now = time.perf_counter() - start
                first = now if first is None else first
                last = now
                chunks += 1
        assert first is not None and last is not None and chunks > 1
        ratios.append(round(first / last, 3))
    assert all(r < 0.3 for r in ratios), f"first chunk at these fractions of each stream's time: {ratios}"
