"""Our media pipeline against transformers' and vLLM's own processors, on the REAL models' media values.

For Qwen2-VL, Qwen2.5-VL and Qwen3-VL a tiny random-weight model is built with the processor
files the real checkpoints ship (``tiny_model.build(..., media="real")``). Our pipeline
(video_decoder -> video_preprocessor, ``served_model`` = that folder) samples and sizes test
videos; a reference subprocess (tests/parity/reference.py) then runs transformers' processor and
``generate`` and offline vLLM on them. The tests check that

- the processor keeps the frames we send (already its size) and, given the same frames at their
  native size, makes the same grids: we size exactly as it would;
- our ``num_video_tokens`` is the number of video pad tokens transformers and vLLM expand;
- Qwen2.5-VL's ``second_per_grid_ts`` and Qwen3-VL's ``<t seconds>`` prompt text follow from our
  metadata as transformers computes them;
- vLLM given OUR prompt and OUR ``multi_modal_data`` makes transformers' prompt ids and greedy tokens;
- images are sized and counted by :class:`MediaSettings` as the image processor does.

No GPU and no hub: everything runs on CPU from a model built offline in seconds.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest

from tests.videos import ClipSpec, make_video, read_indices
from video_pipeline import contract as C
from video_pipeline.engines import tiny_model
from video_pipeline.media.model_media import MediaSettings, load_media_settings
from video_pipeline.media.packing import unpack
from video_pipeline.steps import DecoderStep, PreprocessorStep, json_tensor

ROOT = Path(__file__).resolve().parents[2]
ARCHS = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
MAX_NEW_TOKENS = 8
REFERENCE_TIMEOUT_S = 600

# Issue 21's clip: 12 s at 30 fps, 320x240. And a smaller, shorter one for a second video.
CLIP_12S = ClipSpec(width=320, height=240, fps=30, num_frames=360, gop=30)
CLIP_4S = ClipSpec(width=160, height=120, fps=25, num_frames=100, gop=25)
# Image sizes: landscape, one below Qwen3-VL's 65536-pixel minimum (upscaled), one odd-sized.
IMAGE_SIZES = ((240, 320), (60, 100), (150, 202))


@dataclass(frozen=True)
class Case:
    """One request: videos (clip, options), images (indices into IMAGE_SIZES) and the text."""

    name: str
    videos: tuple[tuple[ClipSpec, dict[str, Any]], ...] = ()
    images: tuple[int, ...] = ()
    text: str = "Describe it."


CASES = (
    Case("num_frames_8", videos=((CLIP_12S, {"num_frames": 8}),)),
    Case("fps_2", videos=((CLIP_12S, {"fps": 2}),)),  # 24 frames
    Case("window", videos=((CLIP_12S, {"start": 2.0, "end": 6.5, "fps": 2}),)),  # 9 frames: odd
    Case("two_videos", videos=((CLIP_12S, {"num_frames": 8}), (CLIP_4S, {"num_frames": 6})),
         text="What differs between the two videos?"),
    Case("one_image", images=(0,)),
    Case("images", images=(0, 1, 2), text="Compare the pictures."),
)
VIDEO_CASES = [c.name for c in CASES if c.videos]
IMAGE_CASES = [c.name for c in CASES if c.images]


@dataclass
class Sent:
    """What our pipeline made of one video: the frames it sends, its video_info, the native frames."""

    frames: np.ndarray
    info: dict[str, Any]
    native: np.ndarray


@dataclass
class ArchRun:
    """One arch's model, settings, our pipeline's output per case and the reference's answers."""

    arch: str
    folder: Path
    media: MediaSettings
    sent: dict[str, list[Sent]]
    images: list[np.ndarray]
    reference: dict[str, dict[str, Any]]
    seconds: dict[str, float]


def image(index: int) -> np.ndarray:
    h, w = IMAGE_SIZES[index]
    rng = np.random.default_rng(index)
    base = np.linspace(0, 255, w, dtype=np.float64)[None, :, None] * np.ones((h, 1, 3))
    return np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)


def png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def run_pipeline(folder: Path, case: Case) -> list[Sent]:
    """video_decoder -> video_preprocessor on the case's videos (cache off), and the same frames
    decoded at native size (``resize: false``)."""
    params = {"served_model": str(folder), "cache_max_bytes": "0"}
    decoder, preprocessor = DecoderStep(params), PreprocessorStep({"served_model": str(folder)})
    videos = np.array([make_video(spec) for spec, _ in case.videos], dtype=np.object_)
    options = [opts for _, opts in case.videos]
    decoded = decoder({C.VIDEO: videos, C.VIDEO_OPTIONS: json_tensor(options)})
    out = preprocessor({**decoded, C.VIDEO_OPTIONS: json_tensor(options)})
    infos = [json.loads(raw) for raw in out[C.VIDEO_INFO]]
    sized = unpack(out[C.VIDEO_FRAMES], [(i["num_frames"], i["height"], i["width"]) for i in infos])
    native_out = decoder({C.VIDEO: videos, C.VIDEO_OPTIONS: json_tensor([{**o, "resize": False} for o in options])})
    native_meta = [json.loads(raw) for raw in native_out[C.VIDEO_METADATA]]
    native = unpack(native_out[C.FRAMES],
                    [(m["num_frames"], m["output_height"], m["output_width"]) for m in native_meta])
    return [Sent(np.ascontiguousarray(f), info, np.ascontiguousarray(n))
            for f, info, n in zip(sized, infos, native, strict=True)]


def run_reference(folder: Path, sent: dict[str, list[Sent]], images: list[np.ndarray],
                  work: Path) -> dict[str, Any]:
    """One reference subprocess for all cases of one model (see tests/parity/reference.py)."""
    arrays: dict[str, np.ndarray] = {}
    cases = []
    for case in CASES:
        content: list[dict[str, Any]] = []
        videos = []
        for i, item in enumerate(sent[case.name]):
            key = f"{case.name}_v{i}"
            arrays[key], arrays[f"{key}_native"] = item.frames, item.native
            videos.append({"frames": key, "native": f"{key}_native", "info": item.info})
            content.append({"type": "video_url", "video_url": {"url": f"file-{i}"}})
        for j in case.images:
            arrays[f"img{j}"] = images[j]
            arrays[f"img{j}_png"] = np.frombuffer(png(images[j]), dtype=np.uint8)
            content.append({"type": "image_url", "image_url": {"url": f"image-{j}"}})
        content.append({"type": "text", "text": case.text})
        cases.append({"name": case.name, "messages": [{"role": "user", "content": content}], "videos": videos,
                      "images": [f"img{j}" for j in case.images]})
    # No multimodal profiling run: it would encode dummy media at the real budgets' maximum (a
    # 12.8-megapixel image for Qwen2-VL) on CPU; it decides no output.
    spec = {"model": str(folder), "max_new_tokens": MAX_NEW_TOKENS, "cases": cases,
            "engine_args": {"limit_mm_per_prompt": {"video": 2, "image": 3}, "skip_mm_profiling": True}}
    np.savez(work / "input.npz", spec=np.array(json.dumps(spec)), **arrays)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "parity" / "reference.py"),
                           str(work / "input.npz"), str(work / "output.json")],
                          capture_output=True, text=True, timeout=REFERENCE_TIMEOUT_S, env=env, cwd=ROOT)
    if done.returncode != 0:
        raise AssertionError(f"reference run failed ({done.returncode}):\n{done.stderr[-6000:]}")
    return json.loads((work / "output.json").read_text())


@pytest.fixture(scope="module")
def real_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model of each arch with the real checkpoint's processor files (~3 s each)."""
    root = tmp_path_factory.mktemp("real_media")
    return {arch: tiny_model.build(arch, root / arch, seed=0, media="real") for arch in ARCHS}


@pytest.fixture(scope="module")
def parity(real_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], ArchRun]:
    """``parity(arch)``: that arch's run, made once per test module (one reference process per arch)."""
    runs: dict[str, ArchRun] = {}

    def get(arch: str) -> ArchRun:
        if arch not in runs:
            work = tmp_path_factory.mktemp(f"parity_{arch}")
            folder = real_models[arch]
            sent = {case.name: run_pipeline(folder, case) for case in CASES}
            images = [image(i) for i in range(len(IMAGE_SIZES))]
            answer = run_reference(folder, sent, images, work)
            runs[arch] = ArchRun(arch, folder, load_media_settings(folder), sent, images,
                                 {c["name"]: c for c in answer["cases"]}, answer["seconds"])
        return runs[arch]

    return get


def video_pad_count(ids: list[int]) -> int:
    pad = tiny_model.build_tokenizer().convert_tokens_to_ids("<|video_pad|>")
    return sum(1 for t in ids if t == pad)


def image_pad_count(ids: list[int]) -> int:
    pad = tiny_model.build_tokenizer().convert_tokens_to_ids("<|image_pad|>")
    return sum(1 for t in ids if t == pad)


# --- videos --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", VIDEO_CASES)
@pytest.mark.parametrize("arch", ARCHS)
def test_processor_keeps_our_frames_when_given_them_already_sized(
    parity: Callable[[str], ArchRun], arch: str, case: str
) -> None:
    run = parity(arch)
    patch, tp = run.media.patch_size, run.media.temporal_patch_size
    want = [[math.ceil(s.info["num_frames"] / tp), s.info["height"] // patch, s.info["width"] // patch]
            for s in run.sent[case]]
    assert run.reference[case]["hf"]["video_grid_thw"] == want
    for s in run.sent[case]:
        assert s.frames.shape == (s.info["num_frames"], s.info["height"], s.info["width"], 3)
        assert s.info["height"] % run.media.factor == 0 and s.info["width"] % run.media.factor == 0


@pytest.mark.parametrize("case", VIDEO_CASES)
@pytest.mark.parametrize("arch", ARCHS)
def test_decoder_sizes_frames_as_the_processor_would_when_it_gets_the_native_frames(
    parity: Callable[[str], ArchRun], arch: str, case: str
) -> None:
    run = parity(arch)
    ref = run.reference[case]
    clips = [spec for spec, _ in next(c for c in CASES if c.name == case).videos]
    for s, clip in zip(run.sent[case], clips, strict=True):
        assert s.native.shape[1:3] == (clip.height, clip.width)
        # The same source frames both ways: only the size differs.
        assert read_indices(s.native) == read_indices(s.frames) == s.info["frames_indices"]
    assert ref["hf_native"]["video_grid_thw"] == ref["hf"]["video_grid_thw"]
    assert ref["hf_native"]["input_ids"] == ref["hf"]["input_ids"]


@pytest.mark.parametrize("case", VIDEO_CASES)
@pytest.mark.parametrize("arch", ARCHS)
def test_video_info_counts_the_video_tokens_hf_and_vllm_expand_when_given_our_frames(
    parity: Callable[[str], ArchRun], arch: str, case: str
) -> None:
    run = parity(arch)
    ref = run.reference[case]
    ours = [s.info["num_video_tokens"] for s in run.sent[case]]
    assert ours == [run.media.video_tokens(s.info["num_frames"], s.info["height"], s.info["width"])
                    for s in run.sent[case]]
    merge = run.media.merge_size**2
    assert ours == [t * h * w // merge for t, h, w in ref["hf"]["video_grid_thw"]]
    assert video_pad_count(ref["hf"]["input_ids"]) == sum(ours)
    assert video_pad_count(ref["vllm"]["prompt_token_ids"]) == sum(ours)


@pytest.mark.parametrize("case", VIDEO_CASES)
def test_second_per_grid_ts_follows_our_metadata_when_qwen2_5_vl(
    parity: Callable[[str], ArchRun], case: str
) -> None:
    run = parity("qwen2_5_vl")
    # transformers' Qwen2_5_VLProcessor: temporal_patch_size / sampled_fps, where sampled_fps is
    # len(frames_indices) / total_num_frames * fps — the mean rate over the WHOLE source, not the
    # spacing of the sampled frames. So 8 frames of the 12-s clip (1.71 s apart: 3.43 s per grid)
    # give 3.0, and the window's 9 frames at 2 fps (1.0 s per grid) give 2.67. Upstream's rule, not
    # ours to change: vLLM calls the same processor, and our metadata is the true one.
    want = [run.media.temporal_patch_size
            / (len(s.info["frames_indices"]) / s.info["total_num_frames"] * s.info["fps"])
            for s in run.sent[case]]
    assert run.reference[case]["hf"]["second_per_grid_ts"] == pytest.approx(want)


@pytest.mark.parametrize("case", VIDEO_CASES)
def test_prompt_timestamps_are_our_frame_times_when_qwen3_vl(
    parity: Callable[[str], ArchRun], case: str
) -> None:
    run = parity("qwen3_vl")
    text = run.reference[case]["hf"]["text"]
    want = ""
    for s in run.sent[case]:
        times = list(s.info["timestamps"])
        if len(times) % 2:
            times.append(times[-1])  # the processor pads the last temporal patch with its last frame
        want += "".join(f"<{(a + b) / 2:.1f} seconds>" for a, b in zip(times[::2], times[1::2], strict=True))
    assert "".join(re.findall(r"<\d+\.\d seconds>", text)) == want


@pytest.mark.parametrize("case", [c.name for c in CASES])
@pytest.mark.parametrize("arch", ARCHS)
def test_vllm_makes_hf_prompt_and_greedy_tokens_when_given_our_prompt_and_media(
    parity: Callable[[str], ArchRun], arch: str, case: str
) -> None:
    ref = parity(arch).reference[case]
    assert ref["vllm"]["prompt_token_ids"] == ref["hf"]["input_ids"]
    assert len(ref["hf"]["generated"]) == MAX_NEW_TOKENS
    assert ref["vllm"]["token_ids"] == ref["hf"]["generated"]


# --- images --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", IMAGE_CASES)
@pytest.mark.parametrize("arch", ARCHS)
def test_media_settings_size_images_as_the_processor_does_when_given_images(
    parity: Callable[[str], ArchRun], arch: str, case: str
) -> None:
    run = parity(arch)
    ref = run.reference[case]
    sizes = [IMAGE_SIZES[j] for j in next(c for c in CASES if c.name == case).images]
    patch = run.media.patch_size
    want = [[1, h // patch, w // patch] for h, w in (run.media.image_size(*s) for s in sizes)]
    assert ref["hf"]["image_grid_thw"] == want
    tokens = sum(run.media.image_tokens(*s) for s in sizes)
    assert image_pad_count(ref["hf"]["input_ids"]) == tokens
    assert image_pad_count(ref["vllm"]["prompt_token_ids"]) == tokens


# --- sizing where the budgets bind (transformers only: no frames are processed) -------------------

# (frames, height, width): small, HD and 4K clips long enough for Qwen3-VL's clip budget to bind,
# odd sizes, a thin strip, frames smaller than one patch.
SHAPES = ((8, 240, 320), (24, 256, 320), (9, 479, 641), (768, 1080, 1920), (300, 720, 1280), (64, 2160, 3840),
          (2, 20, 20), (4, 12, 1900), (1000, 1080, 1920), (33, 3000, 40))


@pytest.mark.parametrize("cap", [False, True], ids=["uncapped", "capped"])
@pytest.mark.parametrize("arch", ARCHS)
def test_media_settings_size_videos_like_the_processor_resize_when_budgets_bind(
    real_models: dict[str, Path], arch: str, cap: bool
) -> None:
    import torch
    from transformers import AutoProcessor
    from transformers.video_processing_utils import BaseVideoProcessor

    vp = AutoProcessor.from_pretrained(real_models[arch]).video_processor
    media = load_media_settings(real_models[arch])
    # The real folders leave cap_pixels_per_frame out: transformers 5.19 then does not cap (it
    # warns that a later release will). "capped" checks our cap math for when it does.
    assert not vp.cap_pixels_per_frame and not media.cap_pixels_per_frame
    if cap:
        vp.cap_pixels_per_frame = True
        media = replace(media, cap_pixels_per_frame=True)
    got, want = [], []
    # The processor's own resize (its budget and per-frame cap rules), with the pixel work stubbed:
    # BaseVideoProcessor.resize is what it calls with the size it chose.
    with mock.patch.object(BaseVideoProcessor, "resize", lambda self, image, size, **kw: (size.height, size.width)):
        for t, h, w in SHAPES:
            videos = torch.zeros((1, 1, 3, 1, 1), dtype=torch.uint8).expand(1, t, 3, h, w)
            want.append(vp.resize(videos=videos, size=vp.size, resample=vp.resample,
                                  factor=vp.patch_size * vp.merge_size, temporal_factor=vp.temporal_patch_size,
                                  cap_pixels_per_frame=vp.cap_pixels_per_frame))
            got.append(media.video_size(t, h, w))
    assert got == want


@pytest.mark.parametrize("arch", ARCHS)
def test_media_settings_count_image_tokens_like_the_processor_when_sizes_vary(
    real_models: dict[str, Path], arch: str
) -> None:
    from transformers import AutoProcessor

    ip = AutoProcessor.from_pretrained(real_models[arch]).image_processor
    media = load_media_settings(real_models[arch])
    sizes = [(h, w) for h, _, w in ((s[1], 0, s[2]) for s in SHAPES)] + [(5000, 5000), (28, 28), (57, 3000)]
    want = [ip.get_number_of_image_patches(h, w, {}) // ip.merge_size**2 for h, w in sizes]
    assert [media.image_tokens(h, w) for h, w in sizes] == want
