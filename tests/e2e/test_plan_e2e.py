"""The sampling plan end to end: time ranges pick exactly the right frames (read from their pixels),
answers show the plan, and a dry run's token estimate is what the model then counts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.videos import ClipSpec, make_video, read_indices
from video_pipeline import contract as C

pytestmark = pytest.mark.e2e

# 30 s at 10 fps, a keyframe every 2 s, B-frames: every frame shows its own index.
SPEC = ClipSpec(width=160, height=120, fps=10, num_frames=300, gop=20, bframes=True)
SMALL = {"mm_processor_kwargs": {"max_pixels": 112 * 112}}


@pytest.fixture(scope="module")
def clip() -> bytes:
    return make_video(SPEC)


def _decoder(triton, video: bytes, options: dict) -> grpcclient.InferResult:
    v = grpcclient.InferInput(C.VIDEO, [1], "BYTES")
    v.set_data_from_numpy(np.array([video], dtype=np.object_))
    o = grpcclient.InferInput(C.VIDEO_OPTIONS, [1], "BYTES")
    o.set_data_from_numpy(np.array([json.dumps(options).encode()], dtype=np.object_))
    with grpcclient.InferenceServerClient(triton.grpc_url) as client:
        return client.infer("video_decoder", [v, o])


@pytest.mark.parametrize(("start", "end", "fps", "expected"), [
    (12.0, 15.0, 2, [120, 125, 130, 135, 140, 145]),
    (21.3, 22.0, 10, [213, 214, 215, 216, 217, 218, 219]),
    (28.0, None, 1, [280, 290]),
])
def test_decoder_returns_exactly_the_frames_of_the_window_when_start_and_end_are_given(triton, clip, start, end, fps,
                                                                                        expected) -> None:
    r = _decoder(triton, clip, {"start": start, "end": end, "fps": fps})
    assert read_indices(r.as_numpy(C.FRAMES)) == expected  # the pixels say which frames these are
    assert r.as_numpy(C.FRAME_INDICES).tolist() == expected
    np.testing.assert_allclose(r.as_numpy(C.TIMESTAMPS), SPEC.times[expected], atol=1e-3)
    meta = json.loads(r.as_numpy(C.VIDEO_METADATA)[0])
    assert meta["indexed"] == "window" and meta["total_num_frames"] == 300
    assert meta["sampling"]["start"] == start and meta["sampling"]["rule"] == "fps"


def test_sdk_chat_answers_the_plan_of_a_time_range_when_the_part_has_start_and_end(shim, clip) -> None:
    import base64

    url = "data:video/mp4;base64," + base64.b64encode(clip).decode()
    part = {"type": "video_url", "video_url": {"url": url, "start": 12.0, "end": 15.0}}
    r = shim.client().chat.completions.create(
        model="tiny-qwen2-vl", max_tokens=4, temperature=0,
        messages=[{"role": "user", "content": [part, {"type": "text", "text": "What happens?"}]}],
        extra_body={**SMALL, "media_io_kwargs": {"video": {"fps": 2}}})
    (plan,) = r.model_dump()["video_plan"]
    assert plan["frame_indices"] == [120, 125, 130, 135, 140, 145]
    assert plan["timestamps"] == pytest.approx([12.0, 12.5, 13.0, 13.5, 14.0, 14.5])
    assert plan["width"] % 28 == 0 and plan["height"] % 28 == 0 and plan["width"] * plan["height"] <= 112 * 112
    assert plan["video_tokens"] == r.usage.prompt_tokens_details.video_tokens  # the plan's count is vLLM's
    assert plan["sampling"]["fps"] == 2 and plan["sampling"]["max_pixels"] == 112 * 112
    assert plan["source"]["total_num_frames"] == 300


def test_sdk_dry_run_estimates_the_video_tokens_the_model_then_counts_when_asked_first(shim, clip) -> None:
    import base64

    url = "data:video/mp4;base64," + base64.b64encode(clip).decode()
    messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url, "end": 8.0}},
                                             {"type": "text", "text": "Describe it."}]}]
    client = shim.client()
    dry = client.chat.completions.create(model="tiny-qwen2-vl", messages=messages, max_tokens=4,
                                         extra_body={**SMALL, "dry_run": True}).model_dump()
    assert dry["dry_run"] is True and dry["choices"] == []
    (plan,) = dry["video_plan"]
    assert plan["num_frames"] == 16 and plan["sampling"]["rule"] == "fps" and plan["sampling"]["fps"] == 2.0
    assert plan["frame_indices"] == list(range(0, 80, 5))  # the documented default: 2 fps
    real = client.chat.completions.create(model="tiny-qwen2-vl", messages=messages, max_tokens=4,
                                          extra_body=SMALL)
    assert dry["usage"]["prompt_tokens_details"]["video_tokens"] == real.usage.prompt_tokens_details.video_tokens
    assert real.model_dump()["video_plan"][0]["cache"] == "hit"  # the dry run warmed the cache

    responses = client.responses.create(
        model="tiny-qwen2-vl", extra_body={**SMALL, "dry_run": True},
        input=[{"role": "user", "content": [{"type": "input_video", "video_url": url, "end": 8.0},
                                            {"type": "input_text", "text": "Describe it."}]}]).model_dump()
    assert responses["dry_run"] is True and responses["output"] == []
    assert responses["video_plan"][0]["frame_indices"] == plan["frame_indices"]


def test_sdk_usage_and_plan_agree_on_video_tokens_when_asked_as_the_readme_shows(shim) -> None:
    """The README's first video request (a 4-s 160x120 clip, 8 frames): usage and video_plan count the
    same tokens (issue 20.8: they once said 216 and 280), sized by the tiny model's processor files."""
    import base64

    clip = make_video(ClipSpec(width=160, height=120, fps=10, num_frames=40))
    url = "data:video/mp4;base64," + base64.b64encode(clip).decode()
    r = shim.client().chat.completions.create(
        model="tiny-qwen2-vl", max_tokens=4, temperature=0,
        messages=[{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                               {"type": "text", "text": "What happens in the video?"}]}],
        extra_body={"media_io_kwargs": {"video": {"num_frames": 8}}})
    body = r.model_dump()
    (plan,) = body["video_plan"]
    # 8 frames of 160x120 fitted into 3136..50176 pixels per frame: 112x168, 4 temporal pairs x 4 x 6 patches
    assert (plan["height"], plan["width"], plan["video_tokens"]) == (112, 168, 96)
    assert body["usage"]["prompt_tokens_details"]["video_tokens"] == plan["video_tokens"]
