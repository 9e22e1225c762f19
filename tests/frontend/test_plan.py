"""The sampling plan in answers (``video_plan``), dry runs, and the shim's media-cache counters."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from tests.fakes import FakeBackend
from tests.frontend.conftest import MODEL, data_url, sse_data, sse_named
from video_pipeline.media.packing import pack

VIDEO = b"\x00\x00\x00\x18ftypmp42"


class PlanBackend(FakeBackend):
    """The fake backend, answering video_info as the real media pipeline does (plan fields included)."""

    cache_results: list[str] = []

    async def media(self, videos: list[bytes], options: list[dict[str, Any]]) -> tuple[np.ndarray, list[dict]]:
        self.media_calls.append((list(videos), [dict(o) for o in options]))
        clips, infos = [], []
        for i, opts in enumerate(options):
            t = int(opts.get("num_frames") or 4)
            clips.append(np.full((t, 56, 84, 3), i, dtype=np.uint8))
            infos.append({
                "num_frames": t, "height": 56, "width": 84, "fps": 10.0, "duration": 4.0, "total_num_frames": 40,
                "frames_indices": [5 * k for k in range(t)], "timestamps": [0.5 * k for k in range(t)],
                "video_backend": "pyav", "do_sample_frames": False, "num_video_tokens": -(-t // 2) * 6,
                "sampling": {"rule": "num_frames", "fps": None, "num_frames": t, "max_frames": None,
                             "capped_by": None, "start": opts.get("start"), "end": opts.get("end"),
                             "mode": "exact", "min_pixels": 3136, "max_pixels": 50176},
                "cache": self.cache_results[i % len(self.cache_results)] if self.cache_results else "miss",
                "uuid": f"vlt-{i}",
            })
        return pack(clips), infos


@pytest.fixture
def backend() -> PlanBackend:
    return PlanBackend()


def chat(client, **body):
    return client.post("/v1/chat/completions", json={"model": MODEL, **body})


def respond(client, **body):
    return client.post("/v1/responses", json={"model": MODEL, **body})


def two_videos() -> list[dict]:
    return [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": data_url(VIDEO), "start": 1, "end": 3}},
        {"type": "video_url", "video_url": {"url": data_url(VIDEO)}},
        {"type": "text", "text": "?"}]}]


def test_chat_answers_the_sampling_plan_of_each_video_when_not_streaming(client, backend) -> None:
    body = chat(client, messages=two_videos(), media_io_kwargs={"video": {"num_frames": 4}}).json()
    plan = body["video_plan"]
    assert [p["index"] for p in plan] == [0, 1]
    first = plan[0]
    assert first["frame_indices"] == [0, 5, 10, 15] and first["timestamps"] == [0.0, 0.5, 1.0, 1.5]
    assert (first["width"], first["height"], first["num_frames"], first["video_tokens"]) == (84, 56, 4, 12)
    assert first["sampling"]["start"] == 1.0 and first["sampling"]["end"] == 3.0
    assert first["source"] == {"fps": 10.0, "duration": 4.0, "total_num_frames": 40}
    assert first["cache"] == "miss"
    assert body["usage"]["prompt_tokens_details"]["video_tokens"] == 24 == sum(p["video_tokens"] for p in plan)
    # the uuid the pipeline derived reaches the llm request (vLLM's multi_modal_uuids)
    assert [i["uuid"] for i in backend.requests[0].infos] == ["vlt-0", "vlt-1"]


def test_chat_answers_no_plan_when_the_request_has_no_video(client, backend) -> None:
    body = chat(client, messages=[{"role": "user", "content": "Hi"}]).json()
    assert "video_plan" not in body and body["choices"]


def test_chat_puts_the_plan_in_the_usage_chunk_when_streaming_with_include_usage(client, backend) -> None:
    r = chat(client, messages=two_videos(), stream=True, stream_options={"include_usage": True})
    chunks = [json.loads(d) for d in sse_data(r.text) if d != "[DONE]"]
    assert chunks[-1]["choices"] == [] and [p["index"] for p in chunks[-1]["video_plan"]] == [0, 1]
    assert all("video_plan" not in c for c in chunks[:-1])


def test_chat_dry_run_answers_plan_and_video_tokens_without_running_the_model(client, backend) -> None:
    r = chat(client, messages=two_videos(), dry_run=True, max_tokens=5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert backend.media_calls and not backend.requests  # decoded, never generated
    assert body["dry_run"] is True and body["object"] == "chat.completion" and body["choices"] == []
    assert body["usage"] == {"prompt_tokens": None, "completion_tokens": 0, "total_tokens": None,
                             "prompt_tokens_details": {"video_tokens": 24}}
    assert [p["num_frames"] for p in body["video_plan"]] == [4, 4]


def test_chat_refuses_a_dry_run_when_streaming(client, backend) -> None:
    r = chat(client, messages=two_videos(), dry_run=True, stream=True)
    assert r.status_code == 400 and r.json()["error"]["param"] == "dry_run"
    assert not backend.media_calls


def test_responses_answers_the_plan_and_a_dry_run_when_asked(client, backend) -> None:
    content = [{"type": "input_video", "video_url": data_url(VIDEO), "start": 2, "end": 4},
               {"type": "input_text", "text": "?"}]
    body = respond(client, input=[{"role": "user", "content": content}]).json()
    assert body["status"] == "completed" and body["video_plan"][0]["sampling"]["start"] == 2.0
    dry = respond(client, input=[{"role": "user", "content": content}], dry_run=True).json()
    assert dry["dry_run"] is True and dry["output"] == [] and len(backend.requests) == 1
    assert dry["usage"]["input_tokens_details"]["video_tokens"] == 12 and dry["usage"]["input_tokens"] is None
    assert dry["video_plan"] == body["video_plan"]


def test_responses_stream_carries_the_plan_in_the_final_response_when_streaming(client, backend) -> None:
    content = [{"type": "input_video", "video_url": data_url(VIDEO)}, {"type": "input_text", "text": "?"}]
    r = respond(client, input=[{"role": "user", "content": content}], stream=True)
    events = sse_named(r.text)
    assert events[-1][0] == "response.completed"
    assert events[-1][1]["response"]["video_plan"][0]["num_frames"] == 4


def test_metrics_count_media_cache_results_when_the_pipeline_reports_them(client, backend) -> None:
    backend.cache_results = ["miss", "hit"]
    chat(client, messages=two_videos())
    text = client.get("/metrics").text
    assert 'vlt_media_cache_total{result="miss"} 1.0' in text
    assert 'vlt_media_cache_total{result="hit"} 1.0' in text
