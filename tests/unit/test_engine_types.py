"""Engine request types: media and request validation, vLLM's video item form."""

from __future__ import annotations

import numpy as np
import pytest

from video_pipeline.engines.types import VIDEO_METADATA_KEYS, GenerationRequest, VideoInput
from video_pipeline.errors import InvalidInput


def clip(t: int = 4, h: int = 28, w: int = 28) -> np.ndarray:
    return np.zeros((t, h, w, 3), dtype=np.uint8)


def metadata(t: int = 4, **extra: object) -> dict[str, object]:
    return {"fps": 2.0, "duration": t / 2.0, "total_num_frames": t, "frames_indices": list(range(t)), **extra}


def test_video_input_fills_backend_and_no_resampling_when_metadata_omits_them() -> None:
    video = VideoInput(clip(), metadata())
    assert video.metadata["do_sample_frames"] is False
    assert video.metadata["video_backend"] == "pyav"


def test_video_input_as_vllm_passes_only_the_keys_vllm_reads_when_metadata_has_extras() -> None:
    frames = clip()
    video = VideoInput(frames, metadata(timestamps=[0.0, 0.5, 1.0, 1.5], num_video_tokens=4))
    item_frames, item_meta = video.as_vllm()
    assert item_frames is frames
    assert set(item_meta) == set(VIDEO_METADATA_KEYS)


def test_video_input_from_frames_spaces_indices_by_the_source_rate_when_subsampled() -> None:
    video = VideoInput.from_frames(clip(4), fps=2.0, source_fps=30.0)
    assert video.metadata["frames_indices"] == [0, 15, 30, 45]
    assert video.metadata["fps"] == 30.0
    assert video.metadata["duration"] == 2.0


@pytest.mark.parametrize(
    "frames",
    [
        np.zeros((4, 28, 28, 3), dtype=np.float32),
        np.zeros((28, 28, 3), dtype=np.uint8),
        np.zeros((4, 28, 28, 4), dtype=np.uint8),
        np.zeros((0, 28, 28, 3), dtype=np.uint8),
        [[1, 2, 3]],
    ],
)
def test_video_input_raises_invalid_input_when_frames_are_malformed(frames: object) -> None:
    with pytest.raises(InvalidInput):
        VideoInput(frames, metadata())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [
        {"fps": 0.0},
        {"fps": "2"},
        {"frames_indices": [0, 1]},
    ],
)
def test_video_input_raises_invalid_input_when_metadata_is_wrong(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        VideoInput(clip(), {**metadata(), **bad})


def test_video_input_raises_invalid_input_when_metadata_lacks_a_key() -> None:
    meta = metadata()
    del meta["frames_indices"]
    with pytest.raises(InvalidInput, match="frames_indices"):
        VideoInput(clip(), meta)


def test_generation_request_raises_when_both_or_neither_prompt_and_messages_are_given() -> None:
    with pytest.raises(InvalidInput):
        GenerationRequest(request_id="r")
    with pytest.raises(InvalidInput):
        GenerationRequest(request_id="r", prompt="x", messages=[{"role": "user", "content": "x"}])


def test_generation_request_raises_when_request_id_is_empty() -> None:
    with pytest.raises(InvalidInput):
        GenerationRequest(request_id="", prompt="x")


def test_generation_request_raises_when_an_image_is_not_uint8_hwc() -> None:
    with pytest.raises(InvalidInput):
        GenerationRequest(request_id="r", prompt="x", images=[np.zeros((2, 28, 28, 3), dtype=np.uint8)])


def test_generation_request_freezes_media_lists_into_tuples_when_built() -> None:
    request = GenerationRequest(request_id="r", prompt="x", videos=[VideoInput(clip(), metadata())])
    assert isinstance(request.videos, tuple)
    assert request.stream is True
