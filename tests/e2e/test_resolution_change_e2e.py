"""A mid-stream resolution change through the real stack: 10 frames of 64x64 then one of 8000x4500 (36 Mpx, over
the default 8192x4320-pixel limit) as ``data:video/mp2t`` is a 413 naming the frame, as the same frame in an mp4
is (issue 20.2); the stack keeps answering afterwards."""

from __future__ import annotations

import base64

import openai
import pytest

from tests.videos import ClipSpec, make_resolution_change, make_video


def ask(url: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                         {"type": "text", "text": "What happens?"}]}]


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def test_chat_is_413_naming_the_frame_when_an_mpeg_ts_grows_past_the_pixel_limit_mid_stream(shim) -> None:
    ts = make_resolution_change(small=(64, 64), num_small=10, big=(8000, 4500))
    client = shim.client()
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="tiny-qwen2-vl", messages=ask(data_url(ts, "video/mp2t")), max_tokens=4,
                                       extra_body={"media_io_kwargs": {"video": {"num_frames": 11}}})
    assert info.value.status_code == 413, info.value.body
    assert "8000x4500" in info.value.body["message"]
    small = make_video(ClipSpec(width=64, height=64, fps=10, num_frames=10, gop=5))
    r = client.chat.completions.create(model="tiny-qwen2-vl", messages=ask(data_url(small, "video/mp4")), max_tokens=4,
                                       extra_body={"media_io_kwargs": {"video": {"num_frames": 4}}})
    assert r.choices[0].message.content is not None
