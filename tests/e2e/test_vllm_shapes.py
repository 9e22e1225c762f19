"""vLLM's documented request shapes through the OpenAI SDK on the real stack: a media part's
``uuid`` (with its media, then alone: vLLM's cache-hit shape), ``vllm-file://<id>`` URLs, and
their refusals. The JSON is vLLM's, verbatim but for the URLs."""

from __future__ import annotations

import io

import openai
import pytest

from tests.e2e.test_openai_chat import QUESTION, SMALL, data_url
from tests.videos import ClipSpec, make_video

pytestmark = pytest.mark.e2e
MODEL = "tiny-qwen2-vl"


@pytest.fixture(scope="module")
def clip() -> bytes:
    return make_video(ClipSpec(width=160, height=120, fps=10, num_frames=30, gop=10))


def _png() -> bytes:
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((56, 56, 3), 90, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _ask(client, part: dict):
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": [part, {"type": "text", "text": QUESTION}]}],
        max_tokens=6, temperature=0, extra_body=SMALL)


def test_video_url_with_uuid_then_the_uuid_alone_answers_the_same_from_the_caches(shim, http_media, clip) -> None:
    client = shim.client()
    url = http_media.put("uuid-clip.mp4", clip)
    first = _ask(client, {"type": "video_url", "video_url": {"url": url}, "uuid": "e2e-clip-1"})
    again = _ask(client, {"type": "video_url", "video_url": None, "uuid": "e2e-clip-1"})
    assert again.choices[0].message.content == first.choices[0].message.content
    assert again.usage.prompt_tokens == first.usage.prompt_tokens


def test_image_url_with_uuid_then_the_uuid_alone_answers_the_same(shim) -> None:
    client = shim.client()
    first = _ask(client, {"type": "image_url", "image_url": {"url": data_url(_png(), "image/png")},
                          "uuid": "e2e-img-1"})
    again = _ask(client, {"type": "image_url", "image_url": None, "uuid": "e2e-img-1"})
    assert again.choices[0].message.content == first.choices[0].message.content
    assert again.usage.prompt_tokens == first.usage.prompt_tokens


def test_vllm_file_url_reads_an_uploaded_video_by_path(shim, clip) -> None:
    client = shim.client()
    uploaded = client.files.create(file=("clip.mp4", clip, "video/mp4"), purpose="vision")
    by_url = _ask(client, {"type": "video_url", "video_url": {"url": f"vllm-file://{uploaded.id}"}})
    by_id = _ask(client, {"type": "video_url", "video_url": {"url": uploaded.id}})
    assert by_url.choices[0].message.content == by_id.choices[0].message.content


def test_responses_input_video_takes_a_uuid_and_vllm_file_ids(shim, clip) -> None:
    client = shim.client()
    uploaded = client.files.create(file=("clip.mp4", clip, "video/mp4"), purpose="vision")
    for part in ({"type": "input_video", "video_url": f"vllm-file://{uploaded.id}", "uuid": "e2e-resp-1"},
                 {"type": "input_video", "uuid": "e2e-resp-1"},
                 {"type": "input_file", "file_id": f"vllm-file://{uploaded.id}"}):
        r = client.responses.create(model=MODEL, max_output_tokens=6, temperature=0, extra_body=SMALL,
                                    input=[{"role": "user", "content": [part, {"type": "input_text",
                                                                               "text": QUESTION}]}])
        assert r.status in ("completed", "incomplete") and r.output_text  # incomplete: max_output_tokens


@pytest.mark.parametrize(("part", "needle"), [
    ({"type": "video_url", "video_url": None, "uuid": "e2e-never-sent"}, "'e2e-never-sent'"),
    ({"type": "image_url", "image_url": None, "uuid": "e2e-never-sent-img"}, "'e2e-never-sent-img'"),
    ({"type": "video_url", "video_url": {"url": "vllm-file://"}}, "vllm-file://<file id>"),
])
def test_sdk_gets_a_400_naming_the_uuid_or_url_when_nothing_is_cached_or_it_is_malformed(shim, part, needle):
    with pytest.raises(openai.BadRequestError) as info:
        _ask(shim.client(), part)
    assert needle in info.value.message
