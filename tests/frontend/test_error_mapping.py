"""The shim's side of the error documents: typed errors become OpenAI's error bodies with ``param`` and
``code`` from the error's data, the failing part is named from its kind and index, wrong JSON types are
``invalid_type``, and transient failures (tritonserver unavailable, media hosts answering 5xx/429) are retried
within the retry policy."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator

import pytest
from fastapi.testclient import TestClient

from openai_frontend.app import create_app
from openai_frontend.backend.base import Delta, LlmRequest, MediaFailed
from openai_frontend.media.fetch import media_client
from openai_frontend.retry import RetryPolicy
from openai_frontend.settings import Settings
from tests.fakes import FakeBackend
from tests.frontend.conftest import MODEL, data_url
from video_pipeline.errors import EngineUnavailable, InvalidInput, UnsupportedMedia

VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(100)
FAST = {"retry_backoff_s": 0.01}


def video(url: str) -> dict:
    return {"type": "video_url", "video_url": {"url": url}}


def chat(client: TestClient, *parts: dict, **body: object):
    return client.post("/v1/chat/completions", json={
        "model": MODEL, "messages": [{"role": "user", "content": list(parts) or "hi"}], **body})


def error_of(r) -> dict:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


@pytest.mark.parametrize(("error", "param", "code"), [
    (InvalidInput("invalid sampling parameters: temperature must be in [0, 2], got 5.0.", param="temperature",
                  code="decimal_above_max_value"), "temperature", "decimal_above_max_value"),
    (InvalidInput("This model's maximum context length is 16384 tokens. However, you requested 20000 tokens",
                  param="max_tokens", code="context_length_exceeded"), "max_tokens", "context_length_exceeded"),
    (InvalidInput("This model's maximum context length is 16384 tokens. However, your prompt ...",
                  param="text_input", code="context_length_exceeded"), "prompt", "context_length_exceeded"),
])
def test_chat_answers_the_engines_param_and_code_when_the_llm_model_refuses(settings, error, param, code) -> None:
    with TestClient(create_app(settings, FakeBackend(generate_error=error))) as client:
        for stream in (False, True):
            r = chat(client, {"type": "text", "text": "hi"}, stream=stream)
            assert r.status_code == 400, r.text
            err = error_of(r)
            assert (err["param"], err["code"], err["message"]) == (param, code, str(error))


def test_chat_names_the_part_from_the_errors_kind_and_index_when_one_of_several_videos_is_bad(settings) -> None:
    error = UnsupportedMedia("no decoder for the video codec (vp9)", kind="video", index=1)
    with TestClient(create_app(settings, FakeBackend(generate_error=MediaFailed(error)))) as client:
        r = chat(client, video(data_url(VIDEO)), {"type": "text", "text": "and"}, video(data_url(VIDEO)))
    assert r.status_code == 415, r.text
    where = "messages[0].content[2].video_url"
    assert (error_of(r)["param"], error_of(r)["message"]) == (where, f"{where}: no decoder for the video codec (vp9)")


def test_chat_names_no_part_when_the_error_is_about_all_of_several_videos(settings) -> None:
    error = InvalidInput("the videos hold 9 bytes; the limit is 8").at("video")
    with TestClient(create_app(settings, FakeBackend(generate_error=MediaFailed(error)))) as client:
        r = chat(client, video(data_url(VIDEO)), video(data_url(VIDEO)))
    assert r.status_code == 400 and error_of(r)["param"] is None and error_of(r)["message"] == str(error)


@pytest.mark.parametrize(("body", "param"), [
    ({"temperature": "hot"}, "temperature"),
    ({"max_tokens": 1.5}, "max_tokens"),
    ({"n": "two"}, "n"),
    ({"stop": 5}, "stop"),
    ({"stop_token_ids": "1,2"}, "stop_token_ids"),
])
def test_chat_answers_invalid_type_when_a_field_has_the_wrong_json_type(client, body, param) -> None:
    r = chat(client, **body)
    assert r.status_code == 400 and (error_of(r)["param"], error_of(r)["code"]) == (param, "invalid_type"), r.text


def test_chat_answers_invalid_value_when_a_field_has_the_right_type_and_a_wrong_value(client) -> None:
    r = client.post("/v1/chat/completions", json={"model": MODEL, "messages": []})
    assert r.status_code == 400 and error_of(r)["code"] != "invalid_type", r.text


# --- tritonserver unavailable at the start of a generation ---------------------------------------------


class FlakyBackend(FakeBackend):
    """Refuses the first ``failures`` generations as unavailable, before answering anything."""

    def __init__(self, failures: int, error: EngineUnavailable | None = None) -> None:
        super().__init__()
        self.failures = failures
        self.error = error or EngineUnavailable("tritonserver cannot serve the request: failed to connect")
        self.attempts: list[str] = []

    async def generate(self, request: LlmRequest) -> AsyncIterator[Delta]:
        self.attempts.append(request.request_id)
        if len(self.attempts) <= self.failures:
            raise self.error
        async for delta in super().generate(request):
            yield delta


def test_chat_is_sent_again_under_a_new_id_when_tritonserver_is_unavailable_before_answering(settings) -> None:
    backend = FlakyBackend(failures=1)
    with TestClient(create_app(settings.with_(**FAST), backend)) as client:
        r = chat(client)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Hello world!"
    first, second = backend.attempts
    assert second == f"{first}-retry1"


def test_chat_answers_503_after_the_bounded_retries_when_tritonserver_stays_unavailable(settings) -> None:
    backend = FlakyBackend(failures=100)
    with TestClient(create_app(settings.with_(**FAST, triton_retries=2), backend)) as client:
        for stream in (False, True):
            r = chat(client, stream=stream)
            assert r.status_code == 503 and error_of(r)["code"] == "unavailable", r.text
    assert len(backend.attempts) == 6  # 3 attempts each


def test_chat_is_not_sent_again_when_the_failure_is_not_transient_or_retries_are_off(settings) -> None:
    backend = FlakyBackend(failures=1, error=EngineUnavailable("the request was cancelled", transient=False))
    with TestClient(create_app(settings.with_(**FAST), backend)) as client:
        assert chat(client).status_code == 503
    assert len(backend.attempts) == 1
    backend = FlakyBackend(failures=1)
    with TestClient(create_app(settings.with_(**FAST, triton_retries=0), backend)) as client:
        assert chat(client).status_code == 503
    assert len(backend.attempts) == 1
    backend = FlakyBackend(failures=1, error=InvalidInput("bad"))  # type: ignore[arg-type]
    with TestClient(create_app(settings.with_(**FAST), backend)) as client:
        assert chat(client).status_code == 400
    assert len(backend.attempts) == 1


def test_a_stream_is_never_sent_again_once_text_was_streamed(settings) -> None:
    backend = FakeBackend(generate_error=EngineUnavailable("the engine died"), error_after=1)
    with TestClient(create_app(settings.with_(**FAST), backend)) as client:
        r = chat(client, stream=True)
    assert r.status_code == 200 and '"error"' in r.text and len(backend.requests) == 1


def test_retry_policy_waits_grow_with_jitter_within_the_cap_and_honour_retry_after() -> None:
    policy = RetryPolicy(retries=3, backoff_s=0.5, max_wait_s=1.5)
    for _ in range(50):
        assert 0.25 <= policy.wait_s(0) <= 0.5 and 0.5 <= policy.wait_s(1) <= 1.0 and policy.wait_s(5) == 1.5
    assert policy.wait_s(0, retry_after_s=1.2) == 1.2 and policy.wait_s(0, retry_after_s=60) == 1.5


# --- media hosts answering 5xx / 429 ---------------------------------------------------------------------


@pytest.fixture
def fetching(settings: Settings, http_media):
    """``fetching(**settings changes)`` -> (client, backend): the app with its real media client, allowed to
    reach the local media server."""
    made: list[TestClient] = []

    def build(**changes: object) -> tuple[TestClient, FakeBackend]:
        s = settings.with_(**{"allowed_media_networks": f"127.0.0.1:{http_media.port}", **FAST, **changes})
        backend = FakeBackend()
        client = TestClient(create_app(s, backend, http=media_client(s)), raise_server_exceptions=False)
        made.append(client.__enter__())
        return client, backend

    yield build
    for client in made:
        client.__exit__(None, None, None)


def flaky_route(http_media, name: str, failures: int, status: int = 503, headers: dict | None = None):
    """A URL answering ``status`` ``failures`` times, then the video; the count of requests it got."""
    seen = [0]
    lock = threading.Lock()

    def answer(request) -> None:
        with lock:
            seen[0] += 1
            failing = seen[0] <= failures
        request.send_response(status if failing else 200)
        for key, value in (headers or {}).items() if failing else ():
            request.send_header(key, value)
        body = b"busy" if failing else VIDEO
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    return http_media.route(name, answer), seen


@pytest.mark.parametrize("status", [503, 429, 408, 502])
def test_media_download_is_tried_again_when_the_host_answers_a_transient_status(fetching, http_media,
                                                                                status) -> None:
    url, seen = flaky_route(http_media, f"flaky-{status}.mp4", failures=1, status=status)
    client, backend = fetching()
    r = chat(client, video(url))
    assert r.status_code == 200, r.text
    assert seen[0] == 2 and backend.requests[0].videos == [VIDEO]


def test_media_download_answers_400_naming_the_url_after_the_bounded_retries(fetching, http_media) -> None:
    url, seen = flaky_route(http_media, "always-503.mp4", failures=100, headers={"Retry-After": "0"})
    client, _ = fetching(fetch_retries=2)
    r = chat(client, video(url))
    err = error_of(r)
    assert r.status_code == 400 and err["param"] == "messages[0].content[0].video_url", r.text
    assert err["code"] == "media_fetch_failed" and url in err["message"] and "HTTP 503 (tried 3 times)" in err["message"]
    assert seen[0] == 3


def test_media_download_is_not_tried_again_when_the_answer_is_a_clients_error(fetching, http_media) -> None:
    url, seen = flaky_route(http_media, "gone-404.mp4", failures=100, status=404)
    client, _ = fetching()
    r = chat(client, video(url))
    assert r.status_code == 400 and "HTTP 404" in error_of(r)["message"] and seen[0] == 1
