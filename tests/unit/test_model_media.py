"""The served model's media settings: read from its folder, and the sizing rules they imply."""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path

import pytest

from video_pipeline.errors import InvalidInput
from video_pipeline.media.model_media import (
    MAX_ASPECT_RATIO,
    MediaSettings,
    engine_limits,
    load_media_settings,
    served_model_folder,
)

SIZES = [1, 2, 15, 27, 28, 29, 61, 97, 120, 240, 333, 480, 720, 1080, 1920, 2160, 3840, 4321, 7680]
QWEN2 = MediaSettings()  # Qwen2-VL's processor class defaults
QWEN25_REAL = MediaSettings(family="qwen2_5_vl", video_min_pixels=3136, video_max_pixels=12845056,
                            image_min_pixels=3136, image_max_pixels=12845056)
QWEN3_REAL = MediaSettings(family="qwen3_vl", sizing="clip", patch_size=16, video_min_pixels=4096,
                           video_max_pixels=25165824, image_min_pixels=65536, image_max_pixels=16777216, fps=2.0,
                           max_video_tokens=768)
QWEN3_TINY = MediaSettings(family="qwen3_vl", sizing="clip", patch_size=16, video_min_pixels=4096,
                           video_max_pixels=262144, fps=2.0, max_video_tokens=768)
SETTINGS = [QWEN2, QWEN25_REAL, QWEN3_REAL, QWEN3_TINY,
            MediaSettings(video_min_pixels=3136, video_max_pixels=50176),
            MediaSettings(cap_pixels_per_frame=True),  # with 33+ frames the cap bites
            MediaSettings(family="qwen3_vl", sizing="clip", patch_size=16, cap_pixels_per_frame=True)]


def _cases():
    for (h, w), media, t in itertools.product(itertools.product(SIZES, SIZES), SETTINGS, (2, 8, 33, 500)):
        if max(h, w) / min(h, w) <= MAX_ASPECT_RATIO / 2:
            yield h, w, media, t


def test_video_size_returns_factor_multiples_that_are_a_fixed_point_when_sizes_vary() -> None:
    failures = []
    for h, w, media, t in _cases():
        oh, ow = media.video_size(t, h, w)
        # the model's processor runs the same rule on the frames we send: it must keep them
        if oh % media.factor or ow % media.factor or media.video_size(t, oh, ow) != (oh, ow):
            failures.append((h, w, media.family, t, oh, ow))
    assert not failures, failures[:10]


def test_video_size_keeps_the_clip_budget_when_the_family_counts_all_frames_together() -> None:
    # Issue 21, measured on tiny Qwen3-VL (12-s 320x240 clip): the processor made 128x192 for 8
    # frames and 64x96 for 24 frames (fps 2); per-frame sizing had sent 288x384.
    assert QWEN3_TINY.video_size(8, 240, 320) == (128, 192)
    assert QWEN3_TINY.video_tokens(8, 128, 192) == 4 * 4 * 6
    assert QWEN3_TINY.video_size(24, 240, 320) == (64, 96)
    assert QWEN3_TINY.video_tokens(24, 64, 96) == 12 * 2 * 3
    for t in (4, 16, 64, 256):
        h, w = QWEN3_REAL.video_size(t, 720, 1280)
        assert t * h * w <= QWEN3_REAL.video_max_pixels


def test_video_size_fits_each_frame_alone_when_the_family_budgets_per_frame() -> None:
    assert QWEN2.video_size(8, 480, 640) == QWEN2.video_size(500, 480, 640) == (476, 644)
    h, w = QWEN2.video_size(8, 2160, 3840)
    assert h * w <= QWEN2.video_max_pixels and abs(w / h - 16 / 9) < 0.1
    h, w = QWEN2.video_size(8, 61, 97)
    assert h * w >= QWEN2.video_min_pixels
    # the real Qwen2.5-VL folder allows 12.8 Mpx per frame: a 1080p frame keeps its size
    assert QWEN25_REAL.video_size(8, 1080, 1920) == (1092, 1932)


def test_video_size_clamps_a_request_budget_into_the_models_bounds_when_it_is_outside() -> None:
    media = MediaSettings(video_min_pixels=3136, video_max_pixels=50176)
    assert media.clamp_video_budget(None, None) == (3136, 50176)
    assert media.clamp_video_budget(None, 12544) == (3136, 12544)
    assert media.clamp_video_budget(10, 10**9) == (3136, 50176)
    assert media.clamp_video_budget(60000, None) == (50176, 50176)


def test_video_size_raises_invalid_input_when_the_frame_is_empty_or_too_thin() -> None:
    with pytest.raises(InvalidInput, match="empty"):
        QWEN2.video_size(4, 0, 10)
    with pytest.raises(InvalidInput, match="aspect ratio"):
        QWEN2.video_size(4, 10, 2010)


def test_video_size_raises_invalid_input_when_a_clip_family_gets_one_frame() -> None:
    with pytest.raises(InvalidInput, match="at least 2 frames"):
        QWEN3_TINY.video_size(1, 240, 320)


def test_image_tokens_follow_the_image_bounds_when_asked_for_an_image() -> None:
    media = MediaSettings(image_min_pixels=3136, image_max_pixels=50176)
    h, w = media.image_size(480, 640)
    assert h * w <= 50176 and media.image_tokens(480, 640) == (h // 28) * (w // 28)


# --- reading model folders -------------------------------------------------------------------------


def _folder(tmp_path: Path, model_type: str, files: dict[str, dict], vision: dict | None = None) -> Path:
    folder = tmp_path / model_type
    folder.mkdir()
    config = {"model_type": model_type, "vision_config": vision or {"patch_size": 14, "spatial_merge_size": 2,
                                                                    "temporal_patch_size": 2}}
    (folder / "config.json").write_text(json.dumps(config))
    for name, doc in files.items():
        (folder / name).write_text(json.dumps(doc))
    return folder


QWEN25_HUB = {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
              "merge_size": 2, "image_processor_type": "Qwen2VLImageProcessor",
              "processor_class": "Qwen2_5_VLProcessor"}
QWEN3_HUB_IMAGE = {"size": {"longest_edge": 16777216, "shortest_edge": 65536}, "patch_size": 16,
                   "temporal_patch_size": 2, "merge_size": 2, "image_processor_type": "Qwen2VLImageProcessorFast",
                   "processor_class": "Qwen3VLProcessor"}
QWEN3_HUB_VIDEO = {"size": {"longest_edge": 25165824, "shortest_edge": 4096}, "patch_size": 16,
                   "temporal_patch_size": 2, "merge_size": 2, "video_processor_type": "Qwen3VLVideoProcessor",
                   "processor_class": "Qwen3VLProcessor"}
QWEN3_VISION = {"patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2}


def test_load_reads_the_video_budget_from_preprocessor_config_when_the_folder_has_no_video_file(tmp_path) -> None:
    media = load_media_settings(_folder(tmp_path, "qwen2_5_vl", {"preprocessor_config.json": QWEN25_HUB}))
    assert media == QWEN25_REAL
    assert media.sources["video_max_pixels"] == "preprocessor_config.json:max_pixels"
    assert media.sources["fps"] == "qwen2_5_vl default"


def test_load_reads_a_clip_budget_when_the_model_is_qwen3_vl(tmp_path) -> None:
    folder = _folder(tmp_path, "qwen3_vl", {"preprocessor_config.json": QWEN3_HUB_IMAGE,
                                            "video_preprocessor_config.json": QWEN3_HUB_VIDEO}, QWEN3_VISION)
    media = load_media_settings(folder)
    assert media == QWEN3_REAL
    assert media.sources["video_max_pixels"] == "video_preprocessor_config.json:size.longest_edge"
    assert media.factor == 32 and media.to_dict()["patch_factor"] == 32


def test_load_matches_what_transformers_reads_when_given_the_same_folder(tmp_path) -> None:
    from transformers import AutoImageProcessor, AutoVideoProcessor

    cases = [
        _folder(tmp_path, "qwen2_5_vl", {"preprocessor_config.json": QWEN25_HUB}),
        _folder(tmp_path, "qwen3_vl", {"preprocessor_config.json": QWEN3_HUB_IMAGE,
                                       "video_preprocessor_config.json": QWEN3_HUB_VIDEO}, QWEN3_VISION),
    ]
    for folder in cases:
        ours = load_media_settings(folder)
        video, image = AutoVideoProcessor.from_pretrained(folder), AutoImageProcessor.from_pretrained(folder)
        assert (video.size.shortest_edge, video.size.longest_edge) == (ours.video_min_pixels, ours.video_max_pixels)
        assert (image.size.shortest_edge, image.size.longest_edge) == (ours.image_min_pixels, ours.image_max_pixels)
        assert (video.patch_size, video.merge_size, video.temporal_patch_size) == (
            ours.patch_size, ours.merge_size, ours.temporal_patch_size)
        assert (video.min_frames, video.max_frames, bool(video.cap_pixels_per_frame)) == (
            ours.min_frames, ours.max_frames, ours.cap_pixels_per_frame)


def test_load_raises_naming_both_files_when_the_processor_files_contradict(tmp_path) -> None:
    nested = {"video_processor": {**QWEN3_HUB_VIDEO, "size": {"longest_edge": 262144, "shortest_edge": 4096}}}
    folder = _folder(tmp_path, "qwen3_vl", {"processor_config.json": nested,
                                            "video_preprocessor_config.json": QWEN3_HUB_VIDEO}, QWEN3_VISION)
    with pytest.raises(InvalidInput, match=r"processor_config.json:video_processor:size.longest_edge is 262144 "
                                           r"but video_preprocessor_config.json:size.longest_edge is 25165824"):
        load_media_settings(folder)


def test_load_raises_naming_the_key_when_the_patch_size_is_not_the_vision_towers(tmp_path) -> None:
    folder = _folder(tmp_path, "qwen2_5_vl", {"preprocessor_config.json": {**QWEN25_HUB, "patch_size": 16}})
    with pytest.raises(InvalidInput, match=r"config.json:vision_config.patch_size is 14 but the processor's "
                                           r"patch_size is 16 \(preprocessor_config.json:patch_size\)"):
        load_media_settings(folder)


@pytest.mark.parametrize(("files", "model_type", "match"), [
    ({"preprocessor_config.json": {**QWEN25_HUB, "min_pixels": 10**8}}, "qwen2_5_vl", "video_min_pixels .* exceeds"),
    ({"preprocessor_config.json": {**QWEN25_HUB, "max_pixels": "lots"}}, "qwen2_5_vl", "video_max_pixels must be"),
    ({"preprocessor_config.json": QWEN25_HUB}, "gpt2", "model_type 'gpt2' is not a family"),
    ({"preprocessor_config.json": {**QWEN25_HUB, "size": {"longest_edge": 1}}}, "qwen2_5_vl",
     "size.longest_edge is 1 but max_pixels"),
    ({"video_preprocessor_config.json": {**QWEN3_HUB_VIDEO}}, "qwen2_vl", "video_processor_type 'Qwen3VL"),
])
def test_load_raises_a_clear_error_when_the_folder_is_wrong(tmp_path, files, model_type, match) -> None:
    with pytest.raises(InvalidInput, match=match):
        load_media_settings(_folder(tmp_path, model_type, files))


def test_load_raises_naming_config_json_when_it_is_missing(tmp_path) -> None:
    with pytest.raises(InvalidInput, match="config.json is missing"):
        load_media_settings(tmp_path)


def test_overrides_replace_the_folders_values_and_are_logged_when_set_explicitly(tmp_path, caplog) -> None:
    folder = _folder(tmp_path, "qwen2_5_vl", {"preprocessor_config.json": QWEN25_HUB})
    with caplog.at_level(logging.INFO, logger="video_pipeline.media.model_media"):
        media = load_media_settings(folder, {"video_max_pixels": "602112", "cap_pixels_per_frame": "true"})
    assert media.video_max_pixels == 602112 and media.cap_pixels_per_frame is True
    assert media.sources["video_max_pixels"] == "config.pbtxt"
    assert "video_max_pixels = 602112 from config.pbtxt" in caplog.text and "12845056" in caplog.text
    with pytest.raises(InvalidInput, match="unknown media setting 'max_pixels'"):
        load_media_settings(folder, {"max_pixels": "1"})
    with pytest.raises(InvalidInput, match="video_max_pixels must be"):
        load_media_settings(folder, {"video_max_pixels": "many"})


def test_served_model_folder_follows_model_json_when_given_the_llm_engine_args(tmp_path) -> None:
    folder = _folder(tmp_path, "qwen2_5_vl", {"preprocessor_config.json": QWEN25_HUB})
    llm = tmp_path / "llm" / "1"
    llm.mkdir(parents=True)
    (llm / "model.json").write_text(json.dumps({"model": "../../qwen2_5_vl", "max_model_len": 4096,
                                               "limit_mm_per_prompt": {"video": 2, "image": {"count": 3}}}))
    assert served_model_folder(llm / "model.json") == folder.resolve()
    assert served_model_folder(folder) == folder
    assert engine_limits(llm / "model.json") == {"max_model_len": 4096,
                                                 "limit_mm_per_prompt": {"video": 2, "image": {"count": 3}}}
    with pytest.raises(InvalidInput, match="neither a model folder nor"):
        served_model_folder(tmp_path / "nothing")


def test_media_steps_take_config_overrides_and_describe_them_when_parameters_force_a_value(tmp_path) -> None:
    import numpy as np

    from video_pipeline import contract as C
    from video_pipeline.steps import DecoderStep, PreprocessorStep

    folder = _folder(tmp_path, "qwen2_5_vl", {"preprocessor_config.json": QWEN25_HUB})
    params = {"served_model": str(folder), "video_max_pixels": "602112"}
    decoder, preprocessor = DecoderStep({**params, "cache_max_bytes": "0"}), PreprocessorStep(params)
    assert decoder.media == preprocessor.media and decoder.media.video_max_pixels == 602112
    out = preprocessor({C.DESCRIBE: np.array([True])})
    described = json.loads(out[C.VIDEO_INFO][0])
    assert described["media"]["video_max_pixels"] == 602112
    assert described["media"]["sources"]["video_max_pixels"] == "config.pbtxt"
    assert described["media"]["sources"]["video_min_pixels"] == "preprocessor_config.json:min_pixels"
    assert described["engine"] == {}  # a folder, not a model.json: no engine limits to report
    assert out[C.VIDEO_FRAMES].shape[0] == 0


@pytest.mark.parametrize(("options", "match"), [
    ({"patch_factor": 32}, "patch_factor 32 does not match the served model's patch size x merge"),
    ({"max_pixels": 100}, "max_pixels 100 is below one 28x28 patch"),
])
def test_media_steps_refuse_request_settings_when_the_model_cannot_take_them(options, match) -> None:
    from video_pipeline.errors import InvalidInput as Invalid
    from video_pipeline.steps import json_tensor, video_options

    with pytest.raises(Invalid, match=match):
        video_options({"video_options": json_tensor([options])}, 1, {}, MediaSettings())
