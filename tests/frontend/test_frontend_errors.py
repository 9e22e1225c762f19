"""Errors in OpenAI's shape, naming the problem; never a traceback."""

from __future__ import annotations

import base64

import httpx
import pytest
from fastapi.testclient import TestClient

from openai_frontend.app import create_app
from tests.fakes import FakeBackend
from tests.frontend.conftest import MODEL, data_url
from video_pipeline.errors import EngineUnavailable, InvalidInput, MediaTooLarge, UnsupportedMedia

VIDEO = b"\x00\x00\x00\x18ftypmp42"


def chat(client, *parts, **body):
    return client.post("/v1/chat/completions",
                       json={"model": MODEL, "messages": [{"role": "user", "content": list(parts)}], **body})


def video(url):
    return {"type": "video_url", "video_url": {"url": url}}


def error_of(r) -> dict:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


def test_chat_answers_400_when_the_body_is_not_json(client) -> None:
    r = client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert error_of(r)["code"] == "invalid_json" and "not valid JSON" in error_of(r)["message"]


def test_chat_answers_400_when_the_body_is_not_an_object(client) -> None:
    r = client.post("/v1/chat/completions", json=[1, 2])
    assert r.status_code == 400 and error_of(r)["type"] == "invalid_request_error"


def test_chat_answers_400_naming_the_part_when_its_type_is_unknown(client, backend) -> None:
    r = chat(client, {"type": "text", "text": "hi"}, {"type": "hologram_url", "hologram_url": {"url": "x"}})
    assert r.status_code == 400
    err = error_of(r)
    assert err["param"] == "messages[0].content[1].type"
    assert "hologram_url" in err["message"] and "video_url" in err["message"] and "audio_url" in err["message"]
    assert backend.requests == []


def test_chat_answers_400_naming_the_field_when_a_part_lacks_its_url(client) -> None:
    r = chat(client, {"type": "video_url", "video_url": {}})
    assert r.status_code == 400 and error_of(r)["param"] == "messages[0].content[0].video_url.url"


def test_chat_answers_400_naming_a_wrongly_typed_parameter(client) -> None:
    r = chat(client, {"type": "text", "text": "hi"}, temperature="hot")
    assert r.status_code == 400 and error_of(r)["param"] == "temperature"


def test_chat_answers_400_when_an_unsupported_parameter_is_given(client) -> None:
    r = chat(client, {"type": "text", "text": "hi"}, functions=[{"name": "f"}])
    assert r.status_code == 400
    assert error_of(r) == {"message": "unsupported parameter: functions", "type": "invalid_request_error",
                           "param": "functions", "code": "unsupported_parameter"}


def test_chat_answers_404_model_not_found_when_the_model_is_unknown(client) -> None:
    r = client.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 404
    err = error_of(r)
    assert err["code"] == "model_not_found" and err["param"] == "model" and "gpt-4o" in err["message"]


def test_chat_answers_400_too_many_media_when_videos_exceed_the_limit(client, settings, backend) -> None:
    r = chat(client, *[video(data_url(VIDEO))] * (settings.max_videos + 1))
    assert r.status_code == 400 and error_of(r)["code"] == "too_many_media"
    assert str(settings.max_videos) in error_of(r)["message"]
    assert backend.media_calls == []


def test_chat_answers_400_too_many_media_when_images_across_messages_exceed_the_limit(client, settings) -> None:
    image = {"type": "image_url", "image_url": {"url": data_url(b"x", "image/png")}}
    messages = [{"role": "user", "content": [image] * settings.max_images},
                {"role": "user", "content": [image]}]
    r = client.post("/v1/chat/completions", json={"model": MODEL, "messages": messages})
    assert r.status_code == 400 and error_of(r)["code"] == "too_many_media"


@pytest.mark.parametrize(("url", "status", "needle"), [
    ("data:video/mp4;base64,@@@@", 400, "base64"),
    ("data:image/png;base64,AAAA", 415, "video/*"),
    ("data:video/mp4,rawbytes", 400, "data:<mime>;base64"),
    ("ftp://example.com/a.mp4", 400, "scheme"),
    ("file-abc123", 404, "no such file"),
    ("file-id://file-abc123", 404, "no such file"),
])
def test_chat_answers_4xx_naming_the_problem_when_a_video_url_is_bad(client, url, status, needle) -> None:
    r = chat(client, video(url))
    assert r.status_code == status, r.text
    err = error_of(r)
    assert needle in err["message"] and err["param"] == "messages[0].content[0].video_url"


def test_chat_answers_413_when_a_data_url_exceeds_the_media_cap(settings) -> None:
    backend = FakeBackend()
    with TestClient(create_app(settings.with_(max_media_bytes=1000), backend)) as client:
        r = chat(client, video(data_url(b"x" * 2000)))
    assert r.status_code == 413 and error_of(r)["code"] == "media_too_large"


def test_chat_answers_413_when_the_body_exceeds_its_cap(settings) -> None:
    with TestClient(create_app(settings.with_(max_body_bytes=100), FakeBackend())) as client:
        r = chat(client, {"type": "text", "text": "x" * 200})
    assert r.status_code == 413


@pytest.mark.parametrize(("error", "status", "code"), [
    (InvalidInput("video 0: the data is not a video (invalid data found)"), 400, "invalid_request"),
    (UnsupportedMedia("no decoder for the video codec (foo)"), 415, "unsupported_media"),
    (MediaTooLarge("the video lasts 20000.0 s; the limit is 14400 s"), 413, "media_too_large"),
    (EngineUnavailable("tritonserver cannot serve the request: connection refused"), 503, "unavailable"),
])
def test_chat_passes_the_media_model_message_through_when_media_fail(settings, error, status, code) -> None:
    with TestClient(create_app(settings, FakeBackend(media_error=error))) as client:
        r = chat(client, video(data_url(VIDEO)))
    assert r.status_code == status
    err = error_of(r)
    assert err["code"] == code and str(error) in err["message"]
    assert err["type"] == ("server_error" if status >= 500 else "invalid_request_error")


def test_chat_answers_400_with_the_engine_message_when_generation_is_refused_before_streaming(settings) -> None:
    backend = FakeBackend(generate_error=InvalidInput("invalid sampling parameters: n must be 1 when using greedy"))
    with TestClient(create_app(settings, backend)) as client:
        r = chat(client, {"type": "text", "text": "hi"}, stream=True, n=2, temperature=0)
    assert r.status_code == 400 and "greedy" in error_of(r)["message"]


def test_chat_answers_500_without_a_traceback_when_the_backend_breaks_unexpectedly(settings) -> None:
    backend = FakeBackend(generate_error=ZeroDivisionError("secret internals"))
    with TestClient(create_app(settings, backend), raise_server_exceptions=False) as client:
        r = chat(client, {"type": "text", "text": "hi"})
    assert r.status_code == 500
    err = error_of(r)
    assert "Traceback" not in r.text and "secret internals" not in r.text and "ZeroDivisionError" in err["message"]


def test_unknown_route_answers_openai_shaped_404(client) -> None:
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and error_of(r)["code"] == "not_found"


# --- file:// --------------------------------------------------------------------------------------


def test_chat_reads_a_file_url_when_it_is_inside_the_allowed_directory(client, backend, media_dir) -> None:
    (media_dir / "clip.mp4").write_bytes(VIDEO)
    r = chat(client, video((media_dir / "clip.mp4").as_uri()))
    assert r.status_code == 200, r.text
    assert backend.media_calls[0][0] == [VIDEO]


def test_chat_answers_403_when_a_file_url_leaves_the_allowed_directory_through_a_symlink(
        client, media_dir, tmp_path) -> None:
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(VIDEO)
    (media_dir / "link.mp4").symlink_to(secret)
    for url in ((media_dir / "link.mp4").as_uri(), f"file://{media_dir}/../secret.mp4"):
        r = chat(client, video(url))
        assert r.status_code == 403, url
        assert "outside the allowed media directory" in error_of(r)["message"]


def test_chat_answers_403_when_file_urls_are_not_enabled(settings, media_dir) -> None:
    (media_dir / "clip.mp4").write_bytes(VIDEO)
    with TestClient(create_app(settings.with_(allowed_local_media_path=""), FakeBackend())) as client:
        r = chat(client, video((media_dir / "clip.mp4").as_uri()))
    assert r.status_code == 403 and "VLT_ALLOWED_LOCAL_MEDIA_PATH" in error_of(r)["message"]


def test_chat_answers_400_when_a_file_url_names_a_missing_file(client, media_dir) -> None:
    r = chat(client, video((media_dir / "nope.mp4").as_uri()))
    assert r.status_code == 400 and "no such file" in error_of(r)["message"]


# --- http(s) --------------------------------------------------------------------------------------


def _http_app(settings, handler):
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    backend = FakeBackend()
    return TestClient(create_app(settings.with_(follow_redirects=True), backend, http=http)), backend


def test_chat_downloads_an_http_video_following_redirects_when_the_url_is_allowed(settings) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/old.mp4":
            return httpx.Response(302, headers={"location": "/clip.mp4"})
        return httpx.Response(200, content=VIDEO)

    client, backend = _http_app(settings, handler)
    with client:
        r = chat(client, video("http://media.test/old.mp4"))
    assert r.status_code == 200, r.text
    assert backend.media_calls[0][0] == [VIDEO]


@pytest.mark.parametrize(("response", "status", "needle"), [
    (httpx.Response(404), 400, "HTTP 404"),
    (httpx.Response(200, content=b"x" * 3000), 413, "limit"),
    (httpx.Response(200, headers={"content-length": "999999"}, content=b"x"), 413, "limit"),
])
def test_chat_answers_4xx_when_an_http_video_cannot_be_fetched(settings, response, status, needle) -> None:
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: response))
    app = create_app(settings.with_(max_media_bytes=2000), FakeBackend(), http=http)
    with TestClient(app) as client:
        r = chat(client, video("http://media.test/clip.mp4"))
    assert r.status_code == status, r.text
    assert needle in error_of(r)["message"]


def test_chat_answers_400_when_the_media_host_is_unreachable(settings) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    client, _ = _http_app(settings, handler)
    with client:
        r = chat(client, video("http://media.test/clip.mp4"))
    assert r.status_code == 400 and "connection refused" in error_of(r)["message"]


def test_chat_answers_403_when_an_http_url_points_at_loopback_and_loopback_is_not_allowed(client) -> None:
    for url in ("http://127.0.0.1:9/clip.mp4", "http://localhost:9/clip.mp4", "http://[::1]:9/clip.mp4"):
        r = chat(client, video(url))
        assert r.status_code == 403, url
        assert error_of(r)["code"] == "url_not_allowed"


def test_chat_answers_400_when_a_frame_list_holds_something_that_is_not_an_image(client) -> None:
    bad = "data:video/jpeg;base64," + base64.b64encode(b"not a jpeg").decode()
    r = chat(client, video(bad))
    assert r.status_code == 400 and "not a decodable image" in error_of(r)["message"]


def test_chat_names_the_failing_part_when_one_of_several_videos_is_bad(settings) -> None:
    backend = FakeBackend(media_error=InvalidInput("the data is not a video", kind="video", index=1))
    with TestClient(create_app(settings, backend)) as client:
        r = chat(client, video(data_url(VIDEO)), {"type": "text", "text": "and"}, video(data_url(VIDEO)))
    err = error_of(r)
    assert r.status_code == 400 and err["param"] == "messages[0].content[2].video_url"
    assert err["message"] == "messages[0].content[2].video_url: the data is not a video"
