"""Models, health, metrics, settings, the Triton tensors a request becomes, and cancellation."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from openai_frontend.app import create_app
from openai_frontend.backend.base import LlmRequest
from openai_frontend.backend.triton import (
    delta_from,
    error_from_status,
    error_from_stream,
    llm_inputs,
    media_inputs,
)
from openai_frontend.settings import Settings, served_model_name_from
from tests.fakes import FakeBackend
from tests.frontend.conftest import MODEL, data_url
from video_pipeline import contract as C
from video_pipeline.errors import (
    EngineUnavailable,
    InvalidInput,
    MediaTooLarge,
    PipelineError,
    UnsupportedMedia,
)


def test_models_lists_the_served_model_when_asked(client) -> None:
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    assert [(m["id"], m["object"]) for m in body["data"]] == [(MODEL, "model")]
    assert client.get(f"/v1/models/{MODEL}").json()["id"] == MODEL
    assert client.get("/v1/models/other").status_code == 404


def test_health_is_live_and_ready_follows_the_backend_when_triton_is_down(client, backend) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/health/ready").status_code == 200
    backend.is_ready = False
    r = client.get("/health/ready")
    assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"
    assert client.get("/health").status_code == 200


def test_metrics_count_requests_errors_videos_frames_and_video_tokens_when_requests_ran(client) -> None:
    video = {"type": "video_url", "video_url": {"url": data_url(b"v")}}
    body = {"model": MODEL, "messages": [{"role": "user", "content": [video, video]}],
            "media_io_kwargs": {"video": {"num_frames": 6}}}
    assert client.post("/v1/chat/completions", json=body).status_code == 200
    assert client.post("/v1/chat/completions", json={**body, "model": "nope"}).status_code == 404
    text = client.get("/metrics").text
    assert 'vlt_requests_total{endpoint="/v1/chat/completions",status="200"} 1.0' in text
    assert 'vlt_requests_total{endpoint="/v1/chat/completions",status="404"} 1.0' in text
    assert 'vlt_errors_total{code="model_not_found",endpoint="/v1/chat/completions"} 1.0' in text
    assert "vlt_videos_total 2.0" in text and "vlt_video_frames_total 12.0" in text
    assert "vlt_video_tokens_total 36.0" in text  # 2 videos x 3 temporal patches x 6
    assert 'vlt_request_duration_seconds_count{endpoint="/v1/chat/completions"} 2.0' in text


def test_chat_answers_503_and_readiness_fails_when_tritonserver_is_down(settings) -> None:
    from openai_frontend.backend.triton import TritonBackend
    from video_pipeline.launch import free_port

    backend = TritonBackend(f"127.0.0.1:{free_port()}", timeout_s=5)  # nothing listens there
    with TestClient(create_app(settings, backend)) as client:
        assert client.get("/health/ready").status_code == 503
        for stream in (False, True):
            r = client.post("/v1/chat/completions", json={"model": MODEL, "stream": stream,
                                                          "messages": [{"role": "user", "content": "Hi"}]})
            assert r.status_code == 503, r.text
            assert r.json()["error"]["type"] == "server_error" and "Traceback" not in r.text
        r = client.post("/v1/chat/completions", json={"model": MODEL, "messages": [
            {"role": "user", "content": [{"type": "video_url", "video_url": {"url": data_url(b"v")}}]}]})
        assert r.status_code == 503, r.text


# --- the tensors a request becomes ----------------------------------------------------------------


def _as_dict(inputs):
    return {t.name(): t for t in inputs}


def test_llm_inputs_carry_contract_names_and_types_when_a_request_has_videos_and_images() -> None:
    frames = np.zeros((6, 56, 84, 3), np.uint8)
    infos = [{"num_frames": 2, "height": 56, "width": 84}, {"num_frames": 4, "height": 28, "width": 28}]
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "video"}, {"type": "image"}]}]
    request = LlmRequest("r1", messages, {"max_tokens": 3}, True, frames, infos, [b"png"])
    inputs = _as_dict(llm_inputs(request))
    assert set(inputs) == {C.MESSAGES, C.SAMPLING_PARAMETERS, C.STREAM, C.VIDEO_FRAMES, C.VIDEO_INFO, C.IMAGE}
    assert {n: (t.datatype(), t.shape()) for n, t in inputs.items()} == {
        C.MESSAGES: ("BYTES", [1]), C.SAMPLING_PARAMETERS: ("BYTES", [1]), C.STREAM: ("BOOL", [1]),
        C.VIDEO_FRAMES: ("UINT8", [6, 56, 84, 3]), C.VIDEO_INFO: ("BYTES", [2]), C.IMAGE: ("BYTES", [1]),
    }
    contract = {t.name for t in C.LLM.inputs}
    assert set(inputs) <= contract


def test_llm_inputs_leave_media_tensors_out_when_the_request_is_text_only() -> None:
    inputs = _as_dict(llm_inputs(LlmRequest("r", [{"role": "user", "content": "hi"}], {}, False)))
    assert set(inputs) == {C.MESSAGES, C.SAMPLING_PARAMETERS, C.STREAM}


def test_media_inputs_carry_one_options_json_per_video_when_given_several() -> None:
    inputs = _as_dict(media_inputs([b"a", b"bb"], [{"num_frames": 4}, {}]))
    assert {n: (t.datatype(), t.shape()) for n, t in inputs.items()} == {
        C.VIDEO: ("BYTES", [2]), C.VIDEO_OPTIONS: ("BYTES", [2])}


def test_delta_from_reads_every_llm_output_when_given_a_response() -> None:
    outputs = {C.TEXT_OUTPUT: np.array([b"hi"], object), C.FINISH_REASON: np.array([b"length"], object),
               C.CHOICE_INDEX: np.array([1], np.uint32), C.NUM_INPUT_TOKENS: np.array([70], np.uint32),
               C.NUM_OUTPUT_TOKENS: np.array([12], np.uint32), C.NUM_VIDEO_TOKENS: np.array([48], np.uint32)}
    d = delta_from(outputs)
    assert (d.text, d.finish_reason, d.index, d.prompt_tokens, d.completion_tokens, d.video_tokens) == (
        "hi", "length", 1, 70, 12, 48)
    outputs[C.FINISH_REASON] = np.array([b""], object)
    assert delta_from(outputs).finish_reason is None


@pytest.mark.parametrize(("status", "message", "kind"), [
    ("StatusCode.INVALID_ARGUMENT", "unexpected shape for input 'video'", InvalidInput),
    ("StatusCode.UNIMPLEMENTED", "not implemented", UnsupportedMedia),
    ("StatusCode.UNAVAILABLE", "failed to connect to all addresses", EngineUnavailable),
    ("StatusCode.INTERNAL", "boom", PipelineError),
])
def test_triton_statuses_map_to_typed_errors_when_the_error_is_tritons_own(status, message, kind) -> None:
    err = error_from_status(status, message)
    assert type(err) is kind and message in str(err)


@pytest.mark.parametrize("error", [
    InvalidInput("the video is corrupt"),
    MediaTooLarge("the video lasts 20000.0 s; the limit is 14400 s"),
    UnsupportedMedia("no decoder for the video codec (x)"),
    EngineUnavailable("the inference engine is not healthy"),
    PipelineError("internal error (KeyError)"),
])
def test_triton_errors_map_to_the_typed_error_their_document_names_whatever_the_status(error) -> None:
    # BLS and ensembles report INTERNAL whatever the model said; a stream's in-band errors have no status
    for err in (error_from_status("StatusCode.INTERNAL", error.to_doc().encode()),
                error_from_stream(error.to_doc().encode())):
        assert type(err) is type(error) and str(err) == str(error)


def test_stream_errors_without_a_document_read_as_unavailable_when_tritonserver_refuses() -> None:
    err = error_from_stream("Request for unknown model: 'llm' is not found")
    assert type(err) is EngineUnavailable and err.transient and "unknown model" in str(err)


# --- settings ---------------------------------------------------------------------------------------


def test_settings_take_flags_over_env_over_defaults_when_all_are_given(tmp_path) -> None:
    env = {"VLT_PORT": "9000", "VLT_MAX_VIDEOS": "2", "VLT_FOLLOW_REDIRECTS": "true"}
    s = Settings.load(["--port", "9100"], env)
    assert (s.port, s.max_videos, s.follow_redirects, s.host) == (9100, 2, True, "127.0.0.1")


@pytest.mark.parametrize(("argv", "env"), [
    ([], {"VLT_MAX_VIDEOS": "many"}), (["--max-videos", "0"], {}), ([], {"VLT_FOLLOW_REDIRECTS": "maybe"}),
    (["--allowed-local-media-path", "/no/such/dir"], {}),
])
def test_settings_refuse_to_start_when_a_value_is_bad(argv, env) -> None:
    with pytest.raises((ValueError, SystemExit)):
        Settings.load(argv, env)


def test_served_model_name_comes_from_the_llm_engine_args_when_not_set(tmp_path) -> None:
    (tmp_path / "llm" / "1").mkdir(parents=True)
    (tmp_path / "llm" / "1" / "model.json").write_text(json.dumps({"model": "/m", "served_model_name": "mine"}))
    assert served_model_name_from(tmp_path) == "mine"
    assert Settings(model_repository=str(tmp_path)).model_name == "mine"
    assert Settings(model_repository=str(tmp_path), served_model_name="x").model_name == "x"


# --- cancellation -------------------------------------------------------------------------------


async def _run_asgi(app, body: dict, *, disconnect_after_chunks: int | None = None,
                    disconnect_after_s: float | None = None, stall: bool = False,
                    path: str = "/v1/chat/completions") -> tuple[list[dict], int, int]:
    """Drives one request through the ASGI app; the client leaves after some body chunks or some time.

    ``stall``: once the client leaves, writes block (a full socket buffer), so the stream is
    cancelled while the generators sit at a ``yield``, not inside the backend.
    """
    raw = json.dumps(body).encode()
    sent: list[dict] = []
    chunks = 0
    gone = asyncio.Event()
    request_done = False

    async def receive() -> dict:
        nonlocal request_done
        if not request_done:
            request_done = True
            return {"type": "http.request", "body": raw, "more_body": False}
        if disconnect_after_s is not None:
            await asyncio.sleep(disconnect_after_s)
            gone.set()
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        nonlocal chunks
        sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            chunks += 1
            if disconnect_after_chunks is not None and chunks >= disconnect_after_chunks:
                gone.set()
                if stall:
                    await asyncio.Event().wait()

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "headers": [(b"content-type", b"application/json"),
                                              (b"content-length", str(len(raw)).encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "root_path": ""}
    await asyncio.wait_for(app(scope, receive, send), timeout=10)
    # Generation must be over when the app returns, not later when a garbage collector gets to it:
    # returns (messages sent, body chunks sent, generations closed early by then).
    return sent, chunks, app.state.service.backend.closed_early


@pytest.mark.parametrize("stall", [False, True])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses"])
def test_stream_cancels_generation_when_the_client_disconnects_mid_stream(settings, path, stall) -> None:
    # 5 chunks: chat's role chunk + 4 deltas; responses' 4 opening events + 1 delta
    hang_after = 4 if path == "/v1/chat/completions" else 1
    backend = FakeBackend(chunks=["a"] * 50, hang_after=None if stall else hang_after)
    if path == "/v1/chat/completions":
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    else:
        body = {"model": MODEL, "input": "Hi", "stream": True}
    _, chunks, closed = asyncio.run(_run_asgi(create_app(settings, backend), body, disconnect_after_chunks=5,
                                              stall=stall, path=path))
    assert chunks == 5 and closed == 1
    assert backend.finished == 0


@pytest.mark.parametrize("stream", [False, True])
def test_request_is_cancelled_when_the_client_disconnects_before_the_first_token(settings, stream) -> None:
    backend = FakeBackend(hang_after=0)  # the engine never answers (a long prefill)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "stream": stream}
    sent, _, closed = asyncio.run(_run_asgi(create_app(settings, backend), body, disconnect_after_s=0.2))
    assert closed == 1
    assert sent[0]["status"] == 499  # nobody reads it; the point is that generation stopped
    assert backend.closed_early == 1 and backend.finished == 0
