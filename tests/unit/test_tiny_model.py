"""The tiny offline model: builds fast, deterministically, and loads with transformers' AutoProcessor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from video_pipeline.engines import tiny_model

ARCHS = sorted(tiny_model.ARCHS)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {arch: tiny_model.build(arch, root / arch, seed=0) for arch in ARCHS}


@pytest.mark.parametrize("arch", ARCHS)
def test_build_writes_a_complete_model_folder_when_run(built: dict[str, Path], arch: str) -> None:
    folder = built[arch]
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "chat_template.jinja",
        "processor_config.json",
    ):
        assert (folder / name).is_file(), name
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == arch
    assert config["text_config"]["vocab_size"] == tiny_model.VOCAB_SIZE
    assert config["text_config"]["max_position_embeddings"] == tiny_model.MAX_POSITION_EMBEDDINGS
    assert tiny_model.is_complete(folder, arch, 0)
    assert not tiny_model.is_complete(folder, arch, 1)


@pytest.mark.parametrize("arch", ARCHS)
def test_auto_processor_loads_offline_and_expands_a_video_when_given_frames(
    built: dict[str, Path], arch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(built[arch])
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "<|vision_start|><|video_pad|><|vision_end|>What happens?" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")

    frames = np.random.default_rng(0).integers(0, 256, (8, 112, 112, 3), dtype=np.uint8)
    metadata = {"fps": 4.0, "duration": 2.0, "total_num_frames": 8, "frames_indices": list(range(8))}
    out = processor(
        text=[prompt],
        videos=[frames],
        videos_kwargs={"video_metadata": [metadata], "do_sample_frames": False},
        return_tensors="np",
    )
    video_pad = processor.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    # The tiny pixel budgets keep an 8x112x112 clip at 64 tokens for every arch.
    assert int((out["input_ids"] == video_pad).sum()) == 64


def test_tokenizer_decodes_every_id_and_ends_turns_with_im_end_when_built() -> None:
    tokenizer = tiny_model.build_tokenizer()
    assert len(tokenizer) == tiny_model.VOCAB_SIZE
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>"
    assert all(isinstance(tokenizer.decode([i]), str) for i in range(tiny_model.VOCAB_SIZE))
    text = "A red ball rolls, then stops."
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_build_is_byte_identical_when_repeated_with_the_same_seed(
    built: dict[str, Path], tmp_path: Path
) -> None:
    again = tiny_model.build("qwen2_vl", tmp_path / "again", seed=0)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (built["qwen2_vl"] / name).read_bytes(), name


def test_build_keeps_the_folder_when_it_already_holds_that_model(built: dict[str, Path]) -> None:
    weights = built["qwen2_vl"] / "model.safetensors"
    before = weights.stat().st_mtime_ns
    tiny_model.build("qwen2_vl", built["qwen2_vl"], seed=0)
    assert weights.stat().st_mtime_ns == before


def test_build_replaces_the_folder_when_the_seed_differs(tmp_path: Path) -> None:
    first = tiny_model.build("qwen2_vl", tmp_path / "m", seed=0)
    weights0 = (first / "model.safetensors").read_bytes()
    tiny_model.build("qwen2_vl", tmp_path / "m", seed=1)
    assert tiny_model.is_complete(tmp_path / "m", "qwen2_vl", 1)
    assert (tmp_path / "m" / "model.safetensors").read_bytes() != weights0
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary folders left behind


def test_build_raises_when_the_arch_is_unknown(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown arch"):
        tiny_model.build("llama", tmp_path / "m")


@pytest.mark.parametrize("arch", ARCHS)
def test_build_writes_the_real_checkpoints_processor_files_when_media_is_real(
    built: dict[str, Path], arch: str, tmp_path: Path
) -> None:
    folder = tiny_model.build(arch, tmp_path / arch, seed=0, media="real")
    expected = tiny_model.REAL_MEDIA[arch]
    for name, doc in expected.items():
        assert json.loads((folder / name).read_text()) == doc
    # The real layout: no processor_config.json; Qwen2(.5)-VL no video_preprocessor_config.json either.
    assert not (folder / "processor_config.json").exists()
    assert (folder / "video_preprocessor_config.json").exists() == ("video_preprocessor_config.json" in expected)
    # Same weights as the tiny-media build; the stamps tell the two apart.
    assert (folder / "model.safetensors").read_bytes() == (built[arch] / "model.safetensors").read_bytes()
    assert tiny_model.is_complete(folder, arch, 0, media="real")
    assert not tiny_model.is_complete(folder, arch, 0)
    assert not tiny_model.is_complete(built[arch], arch, 0, media="real")
