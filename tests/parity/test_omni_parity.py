"""use_audio_in_video parity on a tiny offline Qwen2.5-Omni (video_pipeline.engines.tiny_omni).

Videos with an AAC track go through OUR pipeline: video_decoder -> video_preprocessor (the
qwen2_5_omni media family sizes the frames) and the llm model's request code (build_request ->
add_video_audio, which decodes each video's own track over its frames' window at the feature
extractor's 16 kHz -> render_prompt / multi_modal_data / mm_processor_kwargs). vLLM's CPU engine
given that request makes the same prompt ids (video and audio tokens interleaved in 2-second
chunks) and greedy tokens as transformers' Qwen2_5OmniProcessor (use_audio_in_video=True) and
the thinker's generate on the same frames and samples. vLLM runs in a subprocess
(tests/parity/omni_reference.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from tests.built_once import built_once
from tests.conftest import ROOT
from tests.videos import ClipSpec, make_video
from video_pipeline import contract as C
from video_pipeline.engines import tiny_omni
from video_pipeline.media.model_media import load_media_settings
from video_pipeline.media.packing import unpack
from video_pipeline.steps import DecoderStep, PreprocessorStep, json_tensor

CLIP_4S = ClipSpec(width=160, height=120, fps=25, num_frames=100, gop=25, audio="aac")
CLIP_6S = ClipSpec(width=320, height=240, fps=30, num_frames=180, gop=30, audio="aac")
# (name, videos as (clip, options), text)
CASES = (
    ("whole", ((CLIP_4S, {}),), "What happens?"),
    ("window", ((CLIP_6S, {"start": 1.0, "end": 4.5}),), "What is heard?"),  # 7 frames: odd
    ("two_videos", ((CLIP_4S, {}), (CLIP_6S, {"start": 1.0, "end": 4.5})), "Compare them."),
)
REFERENCE_TIMEOUT_S = 900


def _pipeline(folder: Any, videos: tuple[tuple[ClipSpec, dict[str, Any]], ...]) -> list[tuple[np.ndarray, dict]]:
    params = {"served_model": str(folder), "cache_max_bytes": "0"}
    decoder, preprocessor = DecoderStep(params), PreprocessorStep({"served_model": str(folder)})
    data = np.array([make_video(spec) for spec, _ in videos], dtype=np.object_)
    options = json_tensor([opts for _, opts in videos])
    out = preprocessor({**decoder({C.VIDEO: data, C.VIDEO_OPTIONS: options}), C.VIDEO_OPTIONS: options})
    infos = [json.loads(raw) for raw in out[C.VIDEO_INFO]]
    frames = unpack(out[C.VIDEO_FRAMES], [(i["num_frames"], i["height"], i["width"]) for i in infos])
    return [(np.ascontiguousarray(f), i) for f, i in zip(frames, infos, strict=True)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = built_once(ROOT / ".tiny" / "qwen2_5_omni", tiny_omni.build)
    arrays: dict[str, np.ndarray] = {}
    spec = []
    for name, videos, text in CASES:
        entries, content = [], []
        for i, ((clip, _), (frames, info)) in enumerate(zip(videos, _pipeline(folder, videos), strict=True)):
            key = f"{name}_v{i}"
            arrays[f"{key}_frames"] = frames
            arrays[f"{key}_bytes"] = np.frombuffer(make_video(clip), dtype=np.uint8)
            entries.append({"key": key, "info": info})
            content.append({"type": "video_url", "video_url": {"url": f"file-{i}"}, C.USE_AUDIO_IN_VIDEO: True})
        content.append({"type": "text", "text": text})
        spec.append({"name": name, "videos": entries, "messages": [{"role": "user", "content": content}]})
    tmp = tmp_path_factory.mktemp("omni_parity")
    np.savez(tmp / "in.npz", spec=np.array(json.dumps(spec)), **arrays)
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "parity" / "omni_reference.py"), str(folder),
                           str(tmp / "in.npz"), str(tmp / "out.json")], capture_output=True, text=True,
                          timeout=REFERENCE_TIMEOUT_S, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-6000:]
    return {"folder": folder, "spec": spec, **json.loads((tmp / "out.json").read_text())}


def _ids(folder: Any) -> dict[str, int]:
    tok = tiny_omni.build_tokenizer()
    return {name: tok.convert_tokens_to_ids(t) for name, t in tiny_omni.TOKEN_ATTRIBUTES.items()}


def test_omni_folder_is_the_qwen2_5_omni_media_family_with_the_processors_video_budget(reference) -> None:
    media = load_media_settings(reference["folder"])
    assert media.family == "qwen2_5_omni" and media.sizing == "frame"
    # Qwen2_5OmniProcessor's videos_kwargs size wins over the file's 3136..12845056.
    assert (media.video_min_pixels, media.video_max_pixels) == (128 * 28 * 28, 768 * 28 * 28)
    assert (media.image_min_pixels, media.image_max_pixels) == (3136, 12845056)
    assert media.audio_sampling_rate == 16000


def test_omni_prompt_text_equals_the_models_chat_template(reference) -> None:
    for hf, ours in zip(reference["hf"], reference["ours"], strict=True):
        assert ours["text"] == hf["text"]
        assert ours["mm_processor_kwargs"] == {"use_audio_in_video": True}


def test_omni_prompt_ids_equal_transformers_when_our_video_and_its_track_go_to_vllm(reference) -> None:
    for hf, vllm in zip(reference["hf"], reference["vllm"], strict=True):
        assert vllm["prompt_token_ids"] == hf["input_ids"]


def test_omni_greedy_tokens_equal_transformers_when_our_video_and_its_track_go_to_vllm(reference) -> None:
    for hf, vllm in zip(reference["hf"], reference["vllm"], strict=True):
        assert vllm["token_ids"] == hf["token_ids"]


def test_omni_audio_is_interleaved_inside_each_video_span(reference) -> None:
    ids = _ids(reference["folder"])
    for hf, case in zip(reference["hf"], reference["spec"], strict=True):
        seq = hf["input_ids"]
        assert hf["audio_tokens"] > 0
        starts = [i for i, t in enumerate(seq) if t == ids["vision_bos_token"]]
        assert len(starts) == len(case["videos"])
        for start, video in zip(starts, case["videos"], strict=True):
            end = seq.index(ids["vision_eos_token"], start)
            span = seq[start + 1:end]
            assert span[0] == ids["audio_bos_token"] and span[-1] == ids["audio_eos_token"]
            inner = span[1:-1]
            assert inner.count(ids["video_token"]) == video["info"]["num_video_tokens"]
            # 2-second chunks: with more than one chunk, audio tokens come before the last video tokens.
            last_video = max(i for i, t in enumerate(inner) if t == ids["video_token"])
            assert ids["audio_token"] in inner[:last_video]


def test_omni_audio_track_covers_the_frames_window(reference) -> None:
    for ours, case in zip(reference["ours"], reference["spec"], strict=True):
        for span, n, video in zip(ours["spans"], ours["audio_samples"], case["videos"], strict=True):
            sampling = video["info"]["sampling"]
            start = sampling.get("start") or 0.0
            end = sampling.get("end") or video["info"]["duration"]
            assert span["start"] == pytest.approx(start) and span["sampling_rate"] == 16000
            assert span["num_samples"] == n
            # The whole window (AAC's last frame may end a few ms early).
            assert abs(n - round((end - start) * 16000)) <= 400


def test_omni_audio_token_count_follows_the_window(reference) -> None:
    whole, window = reference["hf"][0]["audio_tokens"], reference["hf"][1]["audio_tokens"]
    assert whole == 100  # 4 s: 25 tokens a second
    assert window == 87  # 3.5 s
    assert reference["hf"][2]["audio_tokens"] == whole + window
