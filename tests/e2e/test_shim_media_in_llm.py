"""The shim on the real stack with videos decoded inside tritonserver (llm's `video` input): a client's
disconnect aborts the generation within a second; the older frames-through-the-shim path answers alike."""

from __future__ import annotations

import logging
import re
import time

import pytest

from tests.e2e.test_openai_chat import SMALL, ask, data_url, video_part
from tests.videos import ClipSpec, make_video

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def clip() -> bytes:
    return make_video(ClipSpec(width=160, height=120, fps=10, num_frames=30, gop=10))


def test_client_disconnect_mid_stream_with_a_video_aborts_generation_within_a_second(shim, clip, caplog) -> None:
    """As the text-only disconnect test, with a video the llm model decoded itself; latency from the
    client's close to the engine's abort, over a few attempts (2.51 drops some stream cancels, and
    then the shim's explicit abort, sent at once, stops it)."""
    caplog.set_level(logging.INFO, logger="openai_frontend")
    latencies: list[float] = []
    for attempt in range(4):
        header_id = f"vdisconnect-{attempt}-{time.monotonic_ns()}"
        stream_ = shim.client().chat.completions.create(
            model="tiny-qwen2-vl", messages=ask(video_part(data_url(clip))), max_tokens=3000, temperature=0,
            stream=True, extra_body={**SMALL, "max_tokens": 3000, "ignore_eos": True},
            extra_headers={"X-Request-Id": header_id})
        got = 0
        for chunk in stream_:
            got += bool(chunk.choices and chunk.choices[0].delta.content)
            if got >= 3:
                break
        stream_.close()
        closed = time.monotonic()
        pattern = re.compile(rf"request ({re.escape(header_id)}\.[0-9a-f]+) ended early")
        deadline = closed + 30
        while (found := pattern.search(caplog.text)) is None:
            assert time.monotonic() < deadline, f"the shim did not cancel {header_id} (aborts so far: {latencies})"
            time.sleep(0.02)
        rid = found[1]
        deadline = closed + 15
        while time.monotonic() < deadline:
            log = shim.triton.log_tail(3000)
            if (f"request {rid} cancelled by the client: aborted in the engine" in log
                    or f"abort request for {rid}: 1 running request(s) stopped" in log):
                latencies.append(time.monotonic() - closed)
                break
            time.sleep(0.02)
        if latencies and min(latencies) < 1.0:
            break
    assert latencies, "the engine never aborted a video request whose client left (4 attempts)"
    assert min(latencies) < 1.0, f"aborts took {latencies} s"


def test_frames_through_the_shim_and_bytes_to_llm_give_the_same_answer_when_asked_the_same(shim, clip,
                                                                                          monkeypatch) -> None:
    backend = shim.app.state.service.backend
    client = shim.client()

    def ask_once():
        return client.chat.completions.create(model="tiny-qwen2-vl", messages=ask(video_part(data_url(clip))),
                                              max_tokens=6, temperature=0, extra_body=SMALL)

    new = ask_once()
    monkeypatch.setattr(backend, "frames_through_shim", True)
    old = ask_once()
    assert new.choices[0].message.content == old.choices[0].message.content
    assert new.usage.prompt_tokens == old.usage.prompt_tokens
    assert new.model_extra["video_plan"] == old.model_extra["video_plan"]
