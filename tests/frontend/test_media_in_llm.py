"""Videos decoded inside tritonserver: the shim sends container bytes (or paths, or frame lists) to llm
once, reads the plan from llm's video_info response, and maps llm's media errors to the part's 4xx."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from openai_frontend.app import create_app
from openai_frontend.backend.base import LlmRequest, MediaFailed
from openai_frontend.backend.triton import error_from_stream, llm_inputs
from tests.fakes import FakeBackend
from tests.frontend.conftest import MODEL, data_url, sse_data
from video_pipeline import contract as C
from video_pipeline.errors import InvalidInput, MediaTooLarge, UnsupportedMedia

VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(32)


def chat(client, *parts, **body):
    return client.post("/v1/chat/completions",
                       json={"model": MODEL, "messages": [{"role": "user", "content": [*parts, {"type": "text",
                                                                                                "text": "?"}]}],
                             **body})


def video(url):
    return {"type": "video_url", "video_url": {"url": url}}


def test_llm_inputs_carry_the_container_bytes_and_options_when_llm_decodes() -> None:
    req = LlmRequest("r", [{"role": "user", "content": "?"}], {}, True, videos=[VIDEO, b""],
                     video_options=[{"num_frames": 4}, {"path": "/f/blob"}])
    by_name = {t.name(): t for t in llm_inputs(req)}
    assert C.VIDEO in by_name and C.VIDEO_OPTIONS in by_name
    assert C.VIDEO_FRAMES not in by_name and C.VIDEO_INFO not in by_name
    assert by_name[C.VIDEO].shape() == [2] and by_name[C.VIDEO].datatype() == "BYTES"


@pytest.mark.parametrize(("message", "kind"), [
    ("not a decodable video container", InvalidInput),
    ("the video is 9000x9000; the limit is 8192x8192", MediaTooLarge),
    ("no decoder for the video codec (vp9)", UnsupportedMedia),
])
def test_stream_error_becomes_media_failed_with_the_typed_error_when_it_is_about_a_video(message, kind) -> None:
    err = error_from_stream(kind(message).at("video").to_doc().encode())
    assert isinstance(err, MediaFailed) and type(err.error) is kind and str(err.error) == message


def test_stream_error_stays_a_generation_error_when_it_is_about_no_media_item() -> None:
    error = InvalidInput("the prompt is longer than the model's context", code="context_length_exceeded")
    assert not isinstance(error_from_stream(error.to_doc().encode()), MediaFailed)


@pytest.mark.parametrize(("error", "status"), [
    (UnsupportedMedia("no decoder for the video codec (vp9)"), 415),
    (MediaTooLarge("the video is 9000x9000; the limit is 8192x8192"), 413),
    (InvalidInput("not a decodable video container"), 400),
])
def test_chat_answers_the_parts_4xx_when_llm_refuses_its_video(settings, error, status) -> None:
    backend = FakeBackend(media_error=error)
    with TestClient(create_app(settings, backend), raise_server_exceptions=False) as client:
        for stream in (False, True):
            r = chat(client, video(data_url(VIDEO)), stream=stream)
            assert r.status_code == status, r.text
            err = r.json()["error"]
            assert err["param"] == "messages[0].content[0].video_url"
            assert err["message"] == f"messages[0].content[0].video_url: {error}"


def test_chat_sends_each_video_to_llm_once_and_no_frames_when_llm_decodes(client, backend) -> None:
    r = chat(client, video(data_url(VIDEO)), media_io_kwargs={"video": {"num_frames": 6}})
    assert r.status_code == 200, r.text
    (req,) = backend.requests
    assert req.videos == [VIDEO] and req.video_options == [{"num_frames": 6}] and req.frames is None
    # the plan came back from llm's video_info response
    assert r.json()["video_plan"][0]["num_frames"] == 6 and r.json()["usage"]["prompt_tokens_details"][
        "video_tokens"] == 18


def test_chat_stream_shows_llms_plan_in_the_usage_chunk_when_include_usage_is_set(client, backend) -> None:
    r = chat(client, video(data_url(VIDEO)), stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200
    chunks = [json.loads(d) for d in sse_data(r.text) if d != "[DONE]"]
    assert chunks[-1]["video_plan"][0]["num_frames"] == 4
    assert all(c["choices"] == [] or "video_info" not in json.dumps(c) for c in chunks)


def test_dry_run_decodes_through_video_media_and_never_calls_llm(client, backend) -> None:
    r = chat(client, video(data_url(VIDEO)), dry_run=True)
    assert r.status_code == 200, r.text
    assert backend.requests == [] and len(backend.media_calls) == 1
    assert r.json()["video_plan"][0]["num_frames"] == 4


def test_frames_through_shim_backend_sends_video_medias_frames_to_llm(client, backend) -> None:
    backend.frames_through_shim = True
    r = chat(client, video(data_url(VIDEO)))
    assert r.status_code == 200, r.text
    (req,) = backend.requests
    assert req.videos == [] and isinstance(req.frames, np.ndarray) and req.frames.shape == (4, 56, 84, 3)
