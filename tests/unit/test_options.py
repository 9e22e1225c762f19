"""VideoOptions (per request) and DecodeLimits (per server): parsed and validated once."""

from __future__ import annotations

import json

import pytest

from video_pipeline.errors import InvalidInput, MediaTooLarge
from video_pipeline.media.options import (
    DEFAULT_MAX_FRAMES,
    DecodeLimits,
    VideoOptions,
)

# --- parsing ---------------------------------------------------------------------


def test_from_json_returns_defaults_when_raw_is_empty() -> None:
    for raw in (None, b"", "", "{}", b"{}", "null"):
        assert VideoOptions.from_json(raw) == VideoOptions()


def test_from_json_parses_every_field_when_all_given() -> None:
    raw = {
        "num_frames": 8,
        "fps": 1.5,
        "max_frames": 64,
        "start": 1,
        "end": 4.5,
        "mode": "keyframe",
        "keyframe_tolerance": 0.25,
        "min_pixels": 3136,
        "max_pixels": 50176,
        "patch_factor": 14,
        "resize": False,
    }
    opts = VideoOptions.from_json(json.dumps(raw))
    assert opts.to_dict() == {**raw, "start": 1.0}
    assert isinstance(opts.start, float) and isinstance(opts.num_frames, int)


def test_from_dict_treats_null_as_default_when_value_is_none() -> None:
    assert VideoOptions.from_dict({"fps": None, "num_frames": None}) == VideoOptions()


def test_from_dict_accepts_numeric_strings_when_they_come_from_triton_parameters() -> None:
    opts = VideoOptions.from_dict({"num_frames": "12", "fps": "0.5", "start": "2"})
    assert (opts.num_frames, opts.fps, opts.start) == (12, 0.5, 2.0)


def test_from_dict_accepts_integral_floats_when_field_is_int() -> None:
    assert VideoOptions.from_dict({"num_frames": 8.0}).num_frames == 8


def test_defaults_match_the_documented_constants_when_nothing_given() -> None:
    opts = VideoOptions()
    assert (opts.num_frames, opts.fps, opts.max_frames) == (None, None, DEFAULT_MAX_FRAMES)
    # the pixel budget and patch factor are the served model's unless a request sets them
    assert (opts.min_pixels, opts.max_pixels, opts.patch_factor) == (None, None, None)
    assert opts.mode == "exact" and opts.resize is True


# --- bad options: InvalidInput naming the key ---------------------------------------------


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        ('{"num_frame": 8}', "num_frame"),
        ('{"fps": 2, "bogus": 1, "zzz": 2}', "bogus"),
        ('{"num_frames": "eight"}', "num_frames"),
        ('{"num_frames": 2.5}', "num_frames"),
        ('{"num_frames": [8]}', "num_frames"),
        ('{"num_frames": {"n": 8}}', "num_frames"),
        ('{"fps": "fast"}', "fps"),
        ('{"fps": "nan"}', "fps"),
        ('{"fps": "inf"}', "fps"),
        ('{"fps": 1e400}', "fps"),
        ('{"start": "later"}', "start"),
        ('{"mode": 1}', "mode"),
        ('{"mode": "fastest"}', "mode"),
        ('{"resize": "no"}', "resize"),
        ('{"resize": 0}', "resize"),
        ('{"num_frames": true}', "num_frames"),
        ('{"fps": false}', "fps"),
        ('{"max_frames": true}', "max_frames"),
        ('{"start": true}', "start"),
        ('{"num_frames": 0}', "num_frames"),
        ('{"num_frames": -3}', "num_frames"),
        ('{"fps": 0}', "fps"),
        ('{"fps": -1}', "fps"),
        ('{"max_frames": 0}', "max_frames"),
        ('{"start": -1}', "start"),
        ('{"end": -0.5}', "end"),
        ('{"start": 3, "end": 3}', "end"),
        ('{"start": 5, "end": 2}', "end"),
        ('{"keyframe_tolerance": -1}', "keyframe_tolerance"),
        ('{"patch_factor": 0}', "patch_factor"),
        ('{"min_pixels": 0}', "min_pixels"),
        ('{"min_pixels": 5000, "max_pixels": 4000}', "min_pixels"),
        # A 400-digit integer: valid JSON, but sizes derived from it overflow float math.
        ('{"min_pixels": 1' + "0" * 400 + ', "max_pixels": 1' + "0" * 400 + "}", "min_pixels"),
        ('{"patch_factor": 1' + "0" * 400 + "}", "patch_factor"),
    ],
)
def test_from_json_raises_invalid_input_naming_the_key_when_value_is_bad(raw: str, names: str) -> None:
    with pytest.raises(InvalidInput) as err:
        VideoOptions.from_json(raw)
    assert type(err.value) is InvalidInput
    assert names in str(err.value)


@pytest.mark.parametrize("raw", ["{", "not json", '{"fps": }', b"\xff\xfe\x00", "{'fps': 2}"])
def test_from_json_raises_invalid_input_when_json_is_invalid(raw: str | bytes) -> None:
    with pytest.raises(InvalidInput, match="not valid JSON"):
        VideoOptions.from_json(raw)


@pytest.mark.parametrize("raw", ["[1, 2]", '"fps"', "3"])
def test_from_json_raises_invalid_input_when_json_is_not_an_object(raw: str) -> None:
    with pytest.raises(InvalidInput, match="JSON object"):
        VideoOptions.from_json(raw)


def test_from_dict_lists_known_keys_when_key_is_unknown() -> None:
    with pytest.raises(InvalidInput) as err:
        VideoOptions.from_dict({"frames": 8})
    assert "frames" in str(err.value) and "num_frames" in str(err.value)


def test_from_dict_raises_invalid_input_when_key_is_not_a_string() -> None:
    with pytest.raises(InvalidInput, match="unknown video option"):
        VideoOptions.from_dict({1: 2, "x": 3})  # type: ignore[dict-item]


# --- frame cap and server limits ------------------------------------------------------


@pytest.mark.parametrize(
    ("opts", "cap"),
    [
        (VideoOptions(), DEFAULT_MAX_FRAMES),
        (VideoOptions(num_frames=5000), 5000),
        (VideoOptions(fps=2, max_frames=10), 10),
        (VideoOptions(fps=2, num_frames=4, max_frames=10), 4),
        (VideoOptions(fps=2, num_frames=40, max_frames=10), 10),
    ],
)
def test_frame_cap_follows_the_documented_semantics_when_options_vary(opts: VideoOptions, cap: int) -> None:
    assert opts.frame_cap == cap


def test_check_limits_raises_media_too_large_when_num_frames_exceeds_server_limit() -> None:
    with pytest.raises(MediaTooLarge, match="5000"):
        VideoOptions(num_frames=5000).check_limits(DecodeLimits())


def test_check_limits_raises_media_too_large_when_max_frames_exceeds_server_limit() -> None:
    with pytest.raises(MediaTooLarge, match="max_sampled_frames|sampled frames"):
        VideoOptions(max_frames=100).check_limits(DecodeLimits(max_sampled_frames=50))


def test_check_limits_passes_when_request_within_limits() -> None:
    VideoOptions(num_frames=16).check_limits(DecodeLimits(max_sampled_frames=16))


def test_decode_limits_from_params_coerces_strings_when_given_triton_parameters() -> None:
    limits = DecodeLimits.from_params({"max_width": "1920", "decode_timeout_s": "2.5", "max_height": ""})
    assert limits.max_width == 1920 and limits.decode_timeout_s == 2.5
    assert limits.max_height == DecodeLimits().max_height


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"max_width": "wide"}, "max_width"),
        ({"max_width": "0"}, "max_width"),
        ({"max_streams": "-1"}, "max_streams"),
        ({"max_duration_s": "inf"}, "max_duration_s"),
        ({"decode_timeout_s": "-1"}, "decode_timeout_s"),
        ({"threads": "-2"}, "threads"),
    ],
)
def test_decode_limits_raises_invalid_input_naming_the_key_when_value_is_bad(
    params: dict[str, str], names: str
) -> None:
    with pytest.raises(InvalidInput) as err:
        DecodeLimits.from_params(params)
    assert names in str(err.value)


def test_decode_limits_allows_zero_when_zero_means_unlimited_or_automatic() -> None:
    limits = DecodeLimits(decode_timeout_s=0, threads=0)
    assert limits.decode_timeout_s == 0 and limits.threads == 0


def test_decode_limits_raises_invalid_input_when_a_budget_is_a_bool() -> None:
    with pytest.raises(InvalidInput, match="max_streams"):
        DecodeLimits(max_streams=True)
