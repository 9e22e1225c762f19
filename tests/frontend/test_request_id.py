"""Request ids, access logs and the new metrics on the fake backend; the playground's route and setting."""

from __future__ import annotations

import io
import json
import logging

import pytest
from fastapi.testclient import TestClient

from openai_frontend.app import create_app
from openai_frontend.logging_config import accepted_request_id, current_request_id
from openai_frontend.metrics import endpoint_label
from openai_frontend.settings import Settings
from tests.fakes import FakeBackend
from tests.frontend.conftest import MODEL, data_url
from tests.videos import ClipSpec, make_video
from video_pipeline.log_format import DefaultRequestId, JsonFormatter, formatter

CHAT = {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture
def json_log():
    """Everything logged under openai_frontend while the test runs, as parsed JSON lines."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(DefaultRequestId(current_request_id))
    log = logging.getLogger("openai_frontend")
    old_level = log.level
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        yield lambda: [json.loads(line) for line in buf.getvalue().splitlines()]
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)


def test_request_id_is_echoed_and_sent_to_the_backend_when_the_client_gives_one(client, backend) -> None:
    r = client.post("/v1/chat/completions", json=CHAT, headers={"X-Request-Id": "client-42"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "client-42"
    assert backend.requests[-1].request_id.startswith("client-42.")  # + a suffix that keeps it unique
    assert r.json()["id"].startswith("chatcmpl-")  # the OpenAI object id stays the shim's own


def test_engine_ids_differ_when_two_requests_carry_the_same_request_id(client, backend) -> None:
    for _ in range(2):
        assert client.post("/v1/chat/completions", json=CHAT, headers={"X-Request-Id": "dup"}).status_code == 200
    first, second = (r.request_id for r in backend.requests[-2:])
    assert first.startswith("dup.") and second.startswith("dup.") and first != second


def test_request_id_is_generated_when_the_client_gives_none_or_a_bad_one(client, backend) -> None:
    first = client.post("/v1/chat/completions", json=CHAT).headers["x-request-id"]
    second = client.post("/v1/chat/completions", json=CHAT,
                         headers={"X-Request-Id": "two words;&"}).headers["x-request-id"]
    assert first.startswith("req_") and second.startswith("req_") and first != second
    assert backend.requests[-1].request_id.startswith(second + ".")


def test_request_id_is_returned_on_errors_and_streams(client) -> None:
    bad = client.post("/v1/chat/completions", json={**CHAT, "model": "nope"}, headers={"X-Request-Id": "e-1"})
    assert bad.status_code == 404 and bad.headers["x-request-id"] == "e-1"
    with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True},
                       headers={"X-Request-Id": "s-1"}) as r:
        assert r.headers["x-request-id"] == "s-1" and "[DONE]" in r.read().decode()


def test_responses_api_passes_the_request_id_to_the_backend(client, backend) -> None:
    r = client.post("/v1/responses", json={"model": MODEL, "input": "Hi", "max_output_tokens": 4},
                    headers={"X-Request-Id": "resp-rid"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "resp-rid"
    assert backend.requests[-1].request_id.startswith("resp-rid.")


def test_access_log_line_is_json_with_the_request_id_when_requests_finish(client, json_log) -> None:
    client.post("/v1/chat/completions", json=CHAT, headers={"X-Request-Id": "log-me"})
    client.get("/health")  # probes log at debug level: not in an info log
    access = [x for x in json_log() if x["logger"] == "openai_frontend.access"]
    assert len(access) == 1, access
    (line,) = access
    assert line["request_id"] == "log-me" and line["path"] == "/v1/chat/completions" and line["status"] == 200
    assert line["method"] == "POST" and isinstance(line["duration_ms"], float) and line["level"] == "info"


def test_log_lines_written_inside_a_request_carry_its_id(client, backend, json_log) -> None:
    from video_pipeline.errors import EngineUnavailable

    backend.generate_error = EngineUnavailable("engine gone")
    r = client.post("/v1/chat/completions", json=CHAT, headers={"X-Request-Id": "fail-7"})
    assert r.status_code == 503
    warnings = [x for x in json_log() if x["level"] == "warning"]
    assert warnings and all(x["request_id"] == "fail-7" for x in warnings), warnings


def test_text_log_format_names_the_request_id_or_a_dash() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
    DefaultRequestId().filter(record)
    assert formatter("text").format(record).endswith("INFO x [-]: hello you")
    with pytest.raises(ValueError, match="log format"):
        formatter("xml")


def test_accepted_request_id_keeps_sane_tokens_only() -> None:
    assert accepted_request_id("abc-DEF_1.2:3/4") == "abc-DEF_1.2:3/4"
    for bad in ("", None, "a b", "x" * 129, "new\nline"):
        assert accepted_request_id(bad).startswith("req_")


def test_settings_refuse_an_unknown_log_format(tmp_path) -> None:
    with pytest.raises(ValueError, match="log_format"):
        Settings(log_format="xml", files_dir=str(tmp_path))
    assert Settings.load([], {"VLT_LOG_FORMAT": "json", "VLT_PLAYGROUND": "1"}).playground is True


def test_metrics_count_upload_bytes_media_time_and_label_id_routes(client) -> None:
    clip = make_video(ClipSpec(width=64, height=48, fps=10, num_frames=10))
    up = client.post("/v1/files", files={"file": ("c.mp4", clip, "video/mp4")}, data={"purpose": "vision"})
    assert up.status_code == 200
    client.get(f"/v1/files/{up.json()['id']}")
    body = {**CHAT, "messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": data_url(clip)}}, {"type": "text", "text": "Hi"}]}]}
    assert client.post("/v1/chat/completions", json=body).status_code == 200
    text = client.get("/metrics").text
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith("vlt_")}
    assert values["vlt_upload_bytes_total"] == len(clip)
    assert values["vlt_media_duration_seconds_count"] == 1
    assert values['vlt_requests_total{endpoint="/v1/files/{id}",status="200"}'] == 1
    assert "vlt_requests_in_flight" in values and "vlt_video_jobs_queued" in values


def test_endpoint_label_keeps_cardinality_bounded() -> None:
    assert endpoint_label("/v1/files/file-1") == "/v1/files/{id}"
    assert endpoint_label("/v1/files/file-1/content") == "/v1/files/{id}/content"
    assert endpoint_label("/v1/videos/video_1/content") == "/v1/videos/{id}/content"
    assert endpoint_label("/v1/videos/video_1/whatever") == "/v1/videos/{id}"
    assert endpoint_label("/v1/uploads/upload_1/parts") == "/v1/uploads/{id}/parts"
    assert endpoint_label("/v1/uploads/upload_1/complete") == "/v1/uploads/{id}/complete"
    assert endpoint_label("/v1/completions") == "/v1/completions"
    assert endpoint_label("/wp-admin") == "other"


def test_playground_is_off_by_default(client) -> None:
    assert client.get("/playground").status_code == 404


def test_playground_serves_one_self_contained_page_when_enabled(settings) -> None:
    with TestClient(create_app(settings.with_(playground=True), FakeBackend())) as c:
        r = c.get("/playground")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        page = r.text
        for element in ('id="video-file"', 'id="video-url"', 'id="ask"', 'id="answer"', 'id="generate"',
                        'id="gen-progress"', 'id="gen-video"'):
            assert element in page
        # nothing is fetched from anywhere else (no CDN): every src/href is relative or a fragment
        assert "http://" not in page.replace('placeholder="https://', "") and "//cdn" not in page
        assert c.get("/playground/", follow_redirects=False).status_code == 307


def test_metrics_report_the_video_job_queue_depth(settings) -> None:
    import time

    from tests.fakes import FakeVideoBackend

    videos = FakeVideoBackend(hold_at=1)

    def gauges(c: TestClient) -> tuple[float, float]:
        lines = dict(line.rsplit(" ", 1) for line in c.get("/metrics").text.splitlines()
                     if line.startswith("vlt_video_jobs_"))
        return float(lines["vlt_video_jobs_queued"]), float(lines["vlt_video_jobs_in_progress"])

    def until(c: TestClient, want: tuple[float, float]) -> None:
        deadline = time.monotonic() + 20
        while gauges(c) != want:
            assert time.monotonic() < deadline, gauges(c)
            time.sleep(0.02)

    with TestClient(create_app(settings.with_(videos_concurrency=1), FakeBackend(), video_backend=videos)) as c:
        for _ in range(2):
            assert c.post("/v1/videos", data={"prompt": "a fox"}).status_code == 200
        until(c, (1, 1))  # one holds the only slot, one waits
        videos.release()
        until(c, (0, 0))
