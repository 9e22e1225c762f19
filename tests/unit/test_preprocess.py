"""The preprocessor: engine sizing, metadata shape, and no double resizing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.videos import ClipSpec, make_video
from video_pipeline.errors import InvalidInput
from video_pipeline.media.options import VideoOptions
from video_pipeline.media.preprocess import preprocess
from video_pipeline.steps import DecoderStep, PreprocessorStep


@pytest.mark.parametrize("options", [{"num_frames": 8, "max_pixels": 112 * 112}, {"num_frames": 4},
                                     {"num_frames": 4, "min_pixels": 200000}, {"num_frames": 3, "resize": False}])
def test_preprocess_keeps_decoder_sized_frames_when_options_are_the_same(options: dict) -> None:
    video = make_video(ClipSpec(width=160, height=120, fps=10, num_frames=40))
    opts = np.array([json.dumps(options).encode()], dtype=np.object_)
    decoded = DecoderStep({})({"video": np.array([video], dtype=np.object_), "video_options": opts})
    out = PreprocessorStep({})({**decoded, "video_options": opts})
    info = json.loads(out["video_info"][0])
    if options.get("resize", True):
        assert out["video_frames"].shape == decoded["frames"].shape  # fitted once, in the decoder
    assert (info["height"], info["width"]) == out["video_frames"].shape[1:3]
    assert info["height"] % 28 == 0 and info["width"] % 28 == 0
    assert info["num_video_tokens"] == -(-info["num_frames"] // 2) * (info["height"] // 28) * (info["width"] // 28)


def test_preprocess_raises_a_budget_below_the_models_minimum_to_it_when_only_max_pixels_is_given() -> None:
    # The model's processor enlarges frames below its minimum, so smaller frames would be resized
    # again and counted wrong: the request's budget is kept inside the model's bounds.
    frames = np.zeros((4, 120, 160, 3), np.uint8)
    opts = VideoOptions.from_dict({"max_pixels": 112 * 112})
    assert (opts.min_pixels, opts.max_pixels) == (None, 112 * 112)
    sized, info = preprocess(frames, np.arange(4) / 2, np.arange(4), {"fps": 2.0}, opts)
    assert (info["sampling"]["min_pixels"], info["sampling"]["max_pixels"]) == (128 * 28 * 28, 128 * 28 * 28)
    assert sized.shape[1] * sized.shape[2] >= 128 * 28 * 28


def test_preprocess_reports_vllm_metadata_keys_when_given_frames() -> None:
    frames = np.zeros((4, 56, 84, 3), np.uint8)
    sized, info = preprocess(frames, np.array([0.0, 0.5, 1.0, 1.5]), np.arange(4), {"fps": 2.0}, VideoOptions())
    for key in ("fps", "duration", "total_num_frames", "frames_indices", "video_backend", "do_sample_frames"):
        assert key in info
    assert info["do_sample_frames"] is False and sized.shape[0] == 4


def test_preprocess_refuses_mismatched_inputs_when_counts_differ() -> None:
    with pytest.raises(InvalidInput, match="timestamps"):
        preprocess(np.zeros((2, 28, 28, 3), np.uint8), np.zeros(3), np.arange(2), {}, VideoOptions())


def test_preprocess_reports_a_positive_fps_when_the_source_rate_is_unknown() -> None:
    frames = np.zeros((3, 28, 28, 3), np.uint8)
    _, info = preprocess(frames, np.array([0.0, 0.5, 1.0]), np.arange(3), {"fps": 0.0}, VideoOptions())
    assert info["fps"] == 2.0
