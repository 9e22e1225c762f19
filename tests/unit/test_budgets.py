"""The shim's budget checks: the header probe, and the token estimate against the real media steps."""

from __future__ import annotations

import json

import pytest

from openai_frontend.budgets import check_context, header_facts, resolved_options
from openai_frontend.errors import OpenAIError
from tests.conftest import MODEL_REPOSITORY
from tests.videos import ClipSpec, make_video
from video_pipeline import contract as C
from video_pipeline.media.facts import estimate_video_tokens, probe_video
from video_pipeline.media.model_media import MediaSettings
from video_pipeline.media.options import DecodeLimits
from video_pipeline.steps import DecoderStep, PreprocessorStep, json_tensor, resolve_parameters


def _params(model: str) -> dict[str, str]:
    params = C.config_parameters((MODEL_REPOSITORY / model / "config.pbtxt").read_text())
    return resolve_parameters(params, MODEL_REPOSITORY / model)


@pytest.fixture(scope="module")
def steps() -> tuple[DecoderStep, PreprocessorStep]:
    params = {k: v for k, v in _params("video_decoder").items() if not k.startswith("cache_")}
    return DecoderStep(params), PreprocessorStep(_params("video_preprocessor"))


@pytest.fixture(scope="module")
def qwen3_steps() -> tuple[DecoderStep, PreprocessorStep]:
    """Media steps serving tiny Qwen3-VL, whose video budget counts all frames together."""
    from tests.conftest import ROOT, build_tiny_model

    folder = build_tiny_model("qwen3_vl", ROOT / ".tiny" / "qwen3_vl")
    params = {"served_model": str(folder)}
    return DecoderStep({**params, "cache_max_bytes": "0"}), PreprocessorStep(params)


def _real_tokens(steps, clip: bytes, options: dict) -> int:
    decoder, preprocessor = steps
    opts = json_tensor([options])
    out = preprocessor({**decoder({C.VIDEO: _bytes(clip), C.VIDEO_OPTIONS: opts}), C.VIDEO_OPTIONS: opts})
    return json.loads(out[C.VIDEO_INFO][0])["num_video_tokens"]


def _bytes(data: bytes):  # noqa: ANN202
    import numpy as np

    arr = np.empty(1, dtype=np.object_)
    arr[0] = data
    return arr


@pytest.mark.parametrize(("spec", "options"), [
    (ClipSpec(width=160, height=120, fps=10, num_frames=40), {}),
    (ClipSpec(width=160, height=120, fps=10, num_frames=40), {"num_frames": 8, "max_pixels": 112 * 112}),
    (ClipSpec(width=160, height=120, fps=10, num_frames=40), {"fps": 1, "start": 1, "end": 3}),
    (ClipSpec(width=320, height=240, fps=25, num_frames=100), {"fps": 4}),
    (ClipSpec(width=320, height=240, fps=25, num_frames=100), {"fps": 50, "max_frames": 30}),
    (ClipSpec(width=128, height=96, fps=30, num_frames=90, container="mkv"), {"fps": 2, "min_pixels": 3136}),
    (ClipSpec(width=96, height=128, fps=24, num_frames=48, container="webm", codec="libvpx-vp9"), {}),
])
@pytest.mark.parametrize("arch", ["qwen2_vl", "qwen3_vl"])
def test_token_estimate_from_the_header_equals_what_the_media_steps_produce(request, arch, spec, options) -> None:
    steps = request.getfixturevalue("steps" if arch == "qwen2_vl" else "qwen3_steps")
    clip = make_video(spec)
    facts = probe_video(clip)
    assert (facts.width, facts.height) == (spec.width, spec.height)
    estimate = estimate_video_tokens(facts, resolved_options(options, steps[1], "v"), steps[1].media)
    assert estimate == _real_tokens(steps, clip, options)


@pytest.mark.parametrize("data", [b"", b"\x00" * 100, b"<html>not a video</html>", make_video(ClipSpec())[:300]])
def test_header_facts_answer_none_when_the_bytes_are_no_readable_video(data) -> None:
    assert header_facts(data, DecodeLimits()) is None  # the decoder names the fault


def test_video_tokens_count_temporal_pairs_of_patches() -> None:
    media = MediaSettings()
    assert media.video_tokens(8, 84, 112) == 4 * 3 * 4
    assert media.video_tokens(7, 84, 112) == 4 * 3 * 4


def test_context_check_names_every_video_and_the_context_when_the_videos_do_not_fit() -> None:
    check_context([("a", 10), ("b", 20)], 30, estimated=True)
    check_context([("a", 10**9)], None, estimated=True)  # unknown context: the engine decides
    with pytest.raises(OpenAIError) as info:
        check_context([("a", 10), ("b", 25)], 30, estimated=True)
    err = info.value
    assert err.status == 400 and err.code == "context_length_exceeded" and err.param == "a"
    assert "about 35 tokens (a: 10, b: 25)" in err.message and "context of 30 tokens" in err.message
