"""Parity of the non-Qwen video families: our media rules vs transformers' processor, and vLLM vs transformers.

For each family a tiny random-weight folder (video_pipeline.engines.tiny_families) and one
clip decoded by our decoder (8 frames, native size). tests/parity/families_reference.py runs
transformers and vLLM on the same frames and the clip's first frame as an image, in one
subprocess per family (vLLM in-process pins its process to one core), about 15-25 s each.

Known gaps are strict xfails, so each flips loudly once MediaSettings can express it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.videos import ClipSpec, make_video
from video_pipeline.engines import tiny_families
from video_pipeline.media.decode import decode_video
from video_pipeline.media.model_media import MediaSettings, load_media_settings
from video_pipeline.media.options import VideoOptions

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / ".tiny" / "families"
REFERENCE = Path(__file__).with_name("families_reference.py")
CLIP = ClipSpec(width=128, height=96, fps=25, num_frames=50)
NUM_FRAMES = 8

_TILED_IMAGE = pytest.mark.xfail(strict=True, reason="tiled images (LLaVA-OV anyres, InternVL crop_to_patches): "
                                 "the token count depends on the image size; 'fixed' counts one tile")
FAMILIES = ["llava_onevision", "internvl", "glm4v"]


@pytest.fixture(scope="session")
def clip() -> Any:
    return decode_video(make_video(CLIP), VideoOptions(num_frames=NUM_FRAMES, resize=False))


_runs: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="session")
def run_family(clip: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """family -> (settings, reference result); each family's subprocess runs once per session."""

    def run(family: str) -> tuple[MediaSettings, dict[str, Any]]:
        folder = tiny_families.build(family, TINY / family)
        if family not in _runs:
            work = tmp_path_factory.mktemp(f"parity_{family}")
            np.save(work / "frames.npy", clip.frames)
            (work / "meta.json").write_text(json.dumps({k: clip.metadata[k] for k in (
                "fps", "duration", "total_num_frames", "frames_indices")}))
            env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="0", HF_HUB_OFFLINE="1")
            proc = subprocess.run(
                [sys.executable, str(REFERENCE), family, str(folder), str(work / "frames.npy"),
                 str(work / "meta.json"), str(work / "out.json")],
                env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
            if proc.returncode != 0:
                pytest.fail(f"{REFERENCE.name} {family} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
            _runs[family] = json.loads((work / "out.json").read_text())
        return load_media_settings(folder), _runs[family]

    return run


def _xfail_for(**marks: pytest.MarkDecorator) -> list[Any]:
    return [pytest.param(f, marks=marks[f]) if f in marks else f for f in FAMILIES]


# --- our rules vs transformers' processor ---------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_media_settings_video_size_equals_hf_processor_when_8_native_frames(family: str, run_family: Any,
                                                                            clip: Any) -> None:
    settings, ref = run_family(family)
    t, h, w = clip.frames.shape[:3]
    assert list(settings.video_size(t, h, w)) == ref["video"]["hf_size"]


@pytest.mark.parametrize("family", FAMILIES)
def test_media_settings_video_tokens_equal_hf_placeholders_when_8_native_frames(family: str, run_family: Any,
                                                                                clip: Any) -> None:
    settings, ref = run_family(family)
    t, h, w = clip.frames.shape[:3]
    assert settings.video_tokens(t, *settings.video_size(t, h, w)) == ref["video"]["hf_placeholders"]


def test_media_settings_count_the_newline_once_per_video_when_llava_onevision(run_family: Any,
                                                                               clip: Any) -> None:
    settings, ref = run_family("llava_onevision")
    t, h, w = clip.frames.shape[:3]
    assert (settings.tokens_per_frame, settings.video_extra_tokens) == (196, 1)
    assert settings.video_tokens(t, h, w) == ref["video"]["hf_placeholders"] == 196 * t + 1


@pytest.mark.parametrize("family", _xfail_for(llava_onevision=_TILED_IMAGE, internvl=_TILED_IMAGE))
def test_media_settings_image_tokens_equal_hf_placeholders_when_one_image(family: str, run_family: Any,
                                                                          clip: Any) -> None:
    settings, ref = run_family(family)
    h, w = clip.frames.shape[1:3]
    assert list(settings.image_size(h, w)) == ref["image"]["hf_size"]
    assert settings.image_tokens(h, w) == ref["image"]["hf_placeholders"]


# --- vLLM vs transformers ----------------------------------------------------------------------------------


def _vllm_ids_as_hf(family: str, ref: dict[str, Any], kind: str, folder: Path) -> list[int]:
    """vLLM's prompt ids, with InternVL's video placeholders spelled as transformers spells them."""
    ids = list(ref[kind]["vllm_prompt_ids"])
    if family == "internvl" and kind == "video":
        # vLLM's InternS1 processor writes a video's features as <video>, transformers as <IMG_CONTEXT>;
        # both are replaced by the frames' embeddings, so generation is the same.
        vocab = json.loads((folder / "tokenizer.json").read_text())["added_tokens"]
        by_name = {tok["content"]: tok["id"] for tok in vocab}
        ids = [by_name["<IMG_CONTEXT>"] if i == by_name["<video>"] else i for i in ids]
    return ids


@pytest.mark.parametrize("kind", ["video", "image"])
@pytest.mark.parametrize("family", FAMILIES)
def test_vllm_prompt_ids_equal_hf_input_ids_when_same_media(family: str, kind: str, run_family: Any) -> None:
    _, ref = run_family(family)
    assert _vllm_ids_as_hf(family, ref, kind, TINY / family) == ref[kind]["hf_input_ids"]


@pytest.mark.parametrize("kind", ["video", "image"])
@pytest.mark.parametrize("family", FAMILIES)
def test_vllm_greedy_tokens_equal_hf_generate_when_float32(family: str, kind: str, run_family: Any) -> None:
    _, ref = run_family(family)
    assert len(ref[kind]["hf_tokens"]) == 8
    assert ref[kind]["vllm_tokens"] == ref[kind]["hf_tokens"]


# --- the builder ------------------------------------------------------------------------------------------


def test_tiny_families_build_is_deterministic_when_built_twice(tmp_path: Path) -> None:
    a = tiny_families.build("glm4v", tmp_path / "a")
    b = tiny_families.build("glm4v", tmp_path / "b")
    for name in ("model.safetensors", "config.json", "tokenizer.json", "processor_config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert tiny_families.is_complete(a, "glm4v")
    assert not tiny_families.is_complete(a, "glm4v", seed=1)
