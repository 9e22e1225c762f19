"""Request ids end to end: the client's X-Request-Id comes back, reaches tritonserver as the request id of
the video_media and llm calls, and the models' log lines carry it; the shim's and Triton's metrics count."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.videos import ClipSpec, make_video

pytestmark = pytest.mark.e2e


def chat_with_video(shim, http_media, headers: dict[str, str]) -> httpx.Response:
    url = http_media.put("rid-clip.mp4", make_video(ClipSpec(width=160, height=120, fps=10, num_frames=40, gop=10)))
    body = {"model": "tiny-qwen2-vl", "max_tokens": 4, "temperature": 0,
            "media_io_kwargs": {"video": {"num_frames": 4}},
            "messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                                      {"type": "text", "text": "What happens?"}]}]}
    r = httpx.post(f"{shim.base_url}/v1/chat/completions", json=body, headers=headers, timeout=300)
    assert r.status_code == 200, r.text
    return r


def wait_for_log(triton, needles: list[str], timeout_s: float = 30) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        log = triton.log_tail(4000)
        if all(n in log for n in needles) or time.monotonic() > deadline:
            return log
        time.sleep(0.1)


def test_request_id_reaches_every_model_log_line_when_the_client_sends_one(shim, http_media) -> None:
    rid = f"e2e-rid-{time.monotonic_ns()}"
    r = chat_with_video(shim, http_media, {"X-Request-Id": rid})
    assert r.headers["x-request-id"] == rid
    # The engine's id is the X-Request-Id plus a unique suffix; llm's media models (BLS) run under that id.
    needles = [f"video_decoder: request {rid}.", f"video_preprocessor: request {rid}.", f"llm: request {rid}."]
    log = wait_for_log(shim.triton, needles)
    missing = [n for n in needles if n not in log]
    assert not missing, f"not in tritonserver's log: {missing}"


def test_request_id_is_generated_and_returned_when_the_client_sends_none(shim, http_media) -> None:
    r = chat_with_video(shim, http_media, {})
    rid = r.headers["x-request-id"]
    assert rid.startswith("req_") and rid != r.json()["id"]
    log = wait_for_log(shim.triton, [f"llm: request {rid}."])
    assert f"llm: request {rid}." in log


def test_metrics_count_media_time_and_triton_counts_each_model(shim, http_media) -> None:
    chat_with_video(shim, http_media, {})
    shim_metrics = httpx.get(f"{shim.base_url}/metrics").text
    count = next(float(line.split()[-1]) for line in shim_metrics.splitlines()
                 if line.startswith("vlt_media_duration_seconds_count"))
    assert count >= 1
    triton_metrics = httpx.get(f"http://127.0.0.1:{shim.triton.metrics_port}/metrics").text
    for model in ("video_decoder", "video_preprocessor", "video_media", "llm"):
        assert any(line.startswith("nv_inference_request_success{") and f'model="{model}"' in line
                   for line in triton_metrics.splitlines()), model
    # the names the README's Observability section documents (CPU ones; nv_gpu_* need a GPU)
    names = {line.split("{")[0].split(" ")[0] for line in triton_metrics.splitlines() if line.startswith("nv_")}
    documented = {"nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
                  "nv_inference_exec_count", "nv_inference_pending_request_count", "nv_inference_request_duration_us",
                  "nv_inference_queue_duration_us", "nv_inference_compute_input_duration_us",
                  "nv_inference_compute_infer_duration_us", "nv_inference_compute_output_duration_us",
                  "nv_cpu_utilization", "nv_cpu_memory_used_bytes"}
    assert documented <= names, documented - names
