"""What a video request may ask: sizes, frame counts, seconds, model-specific fields, extra_params."""

from __future__ import annotations

import pytest

from tests.fakes import tiny_wan_capabilities
from video_pipeline.generation.params import (
    Capabilities,
    GenerationParams,
    InvalidParameter,
    format_seconds,
    frames_for_seconds,
    parse_request,
    parse_size,
)

CAPS = tiny_wan_capabilities()


def parse(raw: dict, caps: Capabilities = CAPS, *, image: bool = False, prompt: object = "a fox") -> GenerationParams:
    return parse_request(prompt, raw, caps, has_image=image)


def refused(raw: dict, caps: Capabilities = CAPS, *, image: bool = False, prompt: object = "a fox") -> InvalidParameter:
    with pytest.raises(InvalidParameter) as info:
        parse(raw, caps, image=image, prompt=prompt)
    return info.value


def test_parse_fills_the_models_defaults_when_only_a_prompt_is_given() -> None:
    p = parse({})
    assert (p.width, p.height, p.num_frames, p.fps, p.num_inference_steps) == (64, 64, 9, 16, 4)
    assert 0 <= p.seed < 2**32 and p.guidance_scale is None and p.extra_params == {}
    assert len({parse({}).seed for _ in range(5)}) > 1  # drawn per request, and reported back


def test_parse_reads_size_as_width_by_height_and_agrees_with_width_and_height() -> None:
    p = parse({"size": "96x64", "width": 96})
    assert (p.width, p.height, p.size) == (96, 64, "96x64")
    assert parse_size(" 832X480 ") == (832, 480)
    assert refused({"size": "64x64", "height": 96}).param == "size"


@pytest.mark.parametrize("size", ["48x64", "64x33", "16x64", "544x64"])
def test_parse_refuses_sizes_off_the_models_grid_or_limits(size: str) -> None:
    err = refused({"size": size})
    assert err.param == "size" and ("multiple of 32" in str(err) or "from 32 to 512" in str(err))


def test_parse_accepts_only_frame_counts_of_the_form_4k_plus_1_up_to_the_limit() -> None:
    assert parse({"num_frames": 1}).num_frames == 1
    assert parse({"num_frames": 65}).num_frames == 65
    for bad in (2, 10, 64):
        assert "4k+1" in str(refused({"num_frames": bad}))
    assert "at most 65" in str(refused({"num_frames": 69}))
    assert refused({"num_frames": 0}).param == "num_frames"


def test_seconds_become_the_shortest_valid_frame_count_that_lasts_that_long() -> None:
    assert frames_for_seconds(4, 16, 4) == 65  # 64 frames would be 4 s; 65 is the next 4k+1
    assert frames_for_seconds(5, 16, 4) == 81  # Wan's own default: 81 frames at 16 fps
    assert frames_for_seconds(0.5, 16, 4) == 9
    assert frames_for_seconds(1, 24, 1) == 24
    p = parse({"seconds": "2", "fps": 8})
    assert (p.num_frames, format_seconds(p.seconds)) == (17, "2.125")
    assert parse({"seconds": 1, "num_frames": 5}).num_frames == 5  # num_frames wins, as in vLLM-Omni
    assert "at most 65" in str(refused({"seconds": "8"}))
    for bad in ("0", "-2", "four", True, "nan"):
        assert refused({"seconds": bad}).param == "seconds"


def test_parse_refuses_fields_the_model_does_not_support_naming_them() -> None:
    err = refused({"guidance_scale_2": 2.0, "boundary_ratio": 0.9})
    assert err.param == "guidance_scale_2" and "guidance_scale_2, boundary_ratio" in str(err)
    two_stage = tiny_wan_capabilities(supported=(*CAPS.supported, "guidance_scale_2", "boundary_ratio"))
    p = parse({"guidance_scale_2": 2.0, "boundary_ratio": 0.9}, two_stage)
    assert (p.guidance_scale_2, p.boundary_ratio) == (2.0, 0.9)
    assert refused({"resolution": "720p"}).param == "resolution"


@pytest.mark.parametrize(("raw", "param"), [
    ({"guidance_scale": -1}, "guidance_scale"),
    ({"guidance_scale": "lots"}, "guidance_scale"),
    ({"flow_shift": 0}, "flow_shift"),
    ({"num_inference_steps": 101}, "num_inference_steps"),
    ({"num_inference_steps": 2.5}, "num_inference_steps"),
    ({"seed": -1}, "seed"),
    ({"seed": True}, "seed"),
    ({"fps": 241}, "fps"),
    ({"negative_prompt": 3}, "negative_prompt"),
    ({"width": "wide"}, "width"),
])
def test_parse_refuses_bad_values_naming_the_field(raw: dict, param: str) -> None:
    assert refused(raw).param == param


def test_parse_takes_numbers_written_as_strings_as_forms_send_them() -> None:
    p = parse({"width": "96", "num_frames": "13", "guidance_scale": "4.5", "seed": "12", "flow_shift": "3"})
    assert (p.width, p.num_frames, p.guidance_scale, p.seed, p.flow_shift) == (96, 13, 4.5, 12, 3.0)


def test_extra_params_pass_only_pipeline_arguments_the_server_does_not_set_itself() -> None:
    assert parse({"extra_params": {"max_sequence_length": 32}}).extra_params == {"max_sequence_length": 32}
    assert "request fields" in str(refused({"extra_params": {"num_frames": 9}}))
    assert "callback_on_step_end" in str(refused({"extra_params": {"callback_on_step_end": 1}}))
    assert "takes no bogus" in str(refused({"extra_params": {"bogus": 1}}))
    assert refused({"extra_params": [1]}).param == "extra_params"


def test_parse_checks_the_prompt_and_the_reference_image_against_the_models_modes() -> None:
    assert refused({}, prompt="").param == "prompt"
    assert refused({}, prompt=None).param == "prompt"
    assert refused({}, prompt="x" * 20001).param == "prompt"
    assert parse({}, image=True).prompt == "a fox"
    t2v_only = tiny_wan_capabilities(image_to_video=False)
    assert "text only" in str(refused({}, t2v_only, image=True))
    i2v_only = tiny_wan_capabilities(text_to_video=False)
    assert "input_reference" in str(refused({}, i2v_only))


def test_params_round_trip_through_their_json_as_the_model_receives_them() -> None:
    p = parse({"size": "96x64", "num_frames": 13, "seed": 5, "guidance_scale": 3.0,
               "extra_params": {"max_sequence_length": 16}})
    again = parse_request(p.prompt, p.to_json(), CAPS, has_image=False)
    assert again == p
    assert "prompt" not in p.to_json() and "boundary_ratio" not in p.to_json()


def test_capabilities_round_trip_through_json() -> None:
    assert Capabilities.from_json(CAPS.to_json()) == CAPS
    assert Capabilities.from_json({**CAPS.to_json(), "added_later": 1}) == CAPS
