"""POST /v1/responses end to end with the real OpenAI SDK (client.responses.create)."""

from __future__ import annotations

import base64

import openai
import pytest

from tests.videos import ClipSpec, make_video

pytestmark = pytest.mark.e2e

SMALL = {"media_io_kwargs": {"video": {"num_frames": 8}}, "mm_processor_kwargs": {"max_pixels": 112 * 112}}
VIDEO_TOKENS = 48  # see test_openai_chat.py


@pytest.fixture(scope="module")
def clip() -> bytes:
    return make_video(ClipSpec(width=160, height=120, fps=10, num_frames=40, gop=10))


def test_sdk_responses_answers_with_output_text_and_usage_when_given_a_video(shim, http_media, clip) -> None:
    url = http_media.put("resp.mp4", clip)
    r = shim.client().responses.create(
        model="tiny-qwen2-vl", instructions="Answer briefly.", max_output_tokens=10, temperature=0,
        input=[{"role": "user", "content": [{"type": "input_video", "video_url": url},
                                            {"type": "input_text", "text": "What happens?"}]}],
        extra_body=SMALL)
    assert r.object == "response" and r.model == "tiny-qwen2-vl"
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.output_text and r.output[0].content[0].text == r.output_text
    assert r.usage.output_tokens == 10 and r.usage.input_tokens > VIDEO_TOKENS
    assert r.usage.input_tokens_details.video_tokens == VIDEO_TOKENS


def test_sdk_responses_takes_a_plain_string_input_when_text_only(shim) -> None:
    r = shim.client().responses.create(model="tiny-qwen2-vl", input="Say hi.", max_output_tokens=4, temperature=0)
    assert r.output_text and r.usage.input_tokens_details.video_tokens == 0


def test_sdk_responses_streams_the_event_sequence_when_stream_is_true(shim, clip) -> None:
    data_url = f"data:video/mp4;base64,{base64.b64encode(clip).decode()}"
    events = list(shim.client().responses.create(
        model="tiny-qwen2-vl", max_output_tokens=8, temperature=0, stream=True,
        input=[{"role": "user", "content": [{"type": "input_video", "video_url": data_url},
                                            {"type": "input_text", "text": "What happens?"}]}],
        extra_body=SMALL))
    types = [e.type for e in events]
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.incomplete"]
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) >= 2
    done = next(e for e in events if e.type == "response.output_text.done")
    assert done.text == "".join(deltas)
    final = events[-1].response
    assert final.output_text == done.text and final.usage.output_tokens == 8
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_sdk_responses_raises_not_found_when_given_an_unknown_file_id(shim) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        shim.client().responses.create(model="tiny-qwen2-vl", input=[
            {"role": "user", "content": [{"type": "input_file", "file_id": "file-123"},
                                         {"type": "input_text", "text": "What is in it?"}]}])
    assert "no such file" in info.value.body["message"]
