"""The media cache inside tritonserver: repeated requests hit it (Triton's own metrics say so),
different options miss, identical requests arriving together decode once, and answers stay the same.

Each test uses a clip no other test decodes (the cache lives as long as the session's server).
"""

from __future__ import annotations

import json
import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.videos import ClipSpec, make_video, read_indices
from video_pipeline import contract as C

pytestmark = pytest.mark.e2e

QUESTION = "What happens in the video?"


def _clip(frames: int, width: int = 160, height: int = 120) -> bytes:
    return make_video(ClipSpec(width=width, height=height, fps=10, num_frames=frames, gop=10))


def cache_metrics(triton) -> dict[str, float]:
    """The decoder's media-cache metrics on Triton's metrics endpoint."""
    with urllib.request.urlopen(f"http://{triton.host}:{triton.metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for name in ("hits_total", "misses_total", "bytes", "entries", "evictions_total"):
        m = re.search(rf'^vlt_media_cache_{name}\{{model="video_decoder"\}} (\S+)$', text, re.M)
        out[name] = float(m.group(1)) if m else 0.0
    return out


def _infer(triton, model: str, video: bytes, options: dict) -> grpcclient.InferResult:
    v = grpcclient.InferInput(C.VIDEO, [1], "BYTES")
    v.set_data_from_numpy(np.array([video], dtype=np.object_))
    o = grpcclient.InferInput(C.VIDEO_OPTIONS, [1], "BYTES")
    o.set_data_from_numpy(np.array([json.dumps(options).encode()], dtype=np.object_))
    with grpcclient.InferenceServerClient(triton.grpc_url) as client:
        return client.infer(model, [v, o])


def test_video_media_answers_from_the_cache_when_the_same_video_is_asked_again(triton) -> None:
    video = _clip(41)
    before = cache_metrics(triton)
    first = _infer(triton, "video_media", video, {"num_frames": 6})
    again = _infer(triton, "video_media", video, {"num_frames": 6})
    after = cache_metrics(triton)
    assert (after["misses_total"] - before["misses_total"], after["hits_total"] - before["hits_total"]) == (1, 1)
    assert after["bytes"] > 0 and after["entries"] >= 1
    assert np.array_equal(first.as_numpy(C.VIDEO_FRAMES), again.as_numpy(C.VIDEO_FRAMES))
    info1, info2 = (json.loads(r.as_numpy(C.VIDEO_INFO)[0]) for r in (first, again))
    assert (info1.pop("cache"), info2.pop("cache")) == ("miss", "hit")
    assert info1 == info2 and info1["uuid"].startswith("vlt-")


@pytest.mark.parametrize("other", [{"num_frames": 5}, {"num_frames": 6, "start": 1.0}, {"fps": 3},
                                   {"num_frames": 6, "max_pixels": 112 * 112}])
def test_video_media_misses_the_cache_when_the_sampling_options_differ(triton, other) -> None:
    video = _clip(42 + len(json.dumps(other)))  # a clip of its own per case
    _infer(triton, "video_media", video, {"num_frames": 6})
    before = cache_metrics(triton)
    out = _infer(triton, "video_decoder", video, other)
    after = cache_metrics(triton)
    assert after["misses_total"] - before["misses_total"] == 1 and after["hits_total"] == before["hits_total"]
    assert json.loads(out.as_numpy(C.VIDEO_METADATA)[0])["cache"] == "miss"
    assert read_indices(out.as_numpy(C.FRAMES)) == out.as_numpy(C.FRAME_INDICES).tolist()


def test_video_decoder_decodes_once_when_identical_requests_arrive_together(triton) -> None:
    # Long enough to decode that the requests overlap: 1080p-ish frames, every one of 120 asked for.
    video = make_video(ClipSpec(width=1280, height=720, fps=30, num_frames=120, gop=60))
    before = cache_metrics(triton)
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: _infer(triton, "video_decoder", video, {"num_frames": 120}), range(6)))
    after = cache_metrics(triton)
    assert after["misses_total"] - before["misses_total"] == 1
    assert after["hits_total"] - before["hits_total"] == 5
    statuses = sorted(json.loads(r.as_numpy(C.VIDEO_METADATA)[0])["cache"] for r in results)
    assert statuses == ["hit"] * 5 + ["miss"]
    frames = [r.as_numpy(C.FRAMES) for r in results]
    assert all(np.array_equal(f, frames[0]) for f in frames)
    assert read_indices(frames[0][::30]) == [0, 30, 60, 90]


def test_sdk_chat_second_question_hits_the_cache_and_answers_the_same_when_repeated(shim) -> None:
    client = shim.client()
    video = _clip(43)
    uploaded = client.files.create(file=("cache.mp4", video, "video/mp4"), purpose="vision")
    messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": uploaded.id}},
                                             {"type": "text", "text": QUESTION}]}]
    extra = {"media_io_kwargs": {"video": {"num_frames": 8}}, "mm_processor_kwargs": {"max_pixels": 112 * 112}}
    before = cache_metrics(shim.triton)
    answers = [client.chat.completions.create(model="tiny-qwen2-vl", messages=messages, max_tokens=12,
                                              temperature=0, extra_body=extra) for _ in range(2)]
    after = cache_metrics(shim.triton)
    assert (after["misses_total"] - before["misses_total"], after["hits_total"] - before["hits_total"]) == (1, 1)
    first, second = (a.model_dump() for a in answers)
    assert [first["video_plan"][0]["cache"], second["video_plan"][0]["cache"]] == ["miss", "hit"]
    assert first["choices"][0]["message"]["content"] == second["choices"][0]["message"]["content"] != ""
    assert first["usage"] == second["usage"]
    with urllib.request.urlopen(f"{shim.base_url}/metrics", timeout=10) as r:
        text = r.read().decode()
    assert re.search(r'^vlt_media_cache_total\{result="hit"\} [1-9]', text, re.M)
