"""Build a tiny, random-weight, audio-visual Qwen2.5-Omni model folder offline.

The audio-visual sibling of :mod:`video_pipeline.engines.tiny_model` and
:mod:`video_pipeline.engines.tiny_audio`: transformers' own ``Qwen2_5OmniConfig`` with a tiny
thinker (a 1-layer Whisper-style audio encoder, a 2-block Qwen2.5-VL vision tower, a 2-layer
text model) and no talker / token2wav (``enable_audio_output: false``: vLLM serves the thinker
only and skips those weights anyway), seeded random weights saved as the real checkpoints name
them (``thinker.*``), a byte-level BPE tokenizer with Qwen2.5-Omni's specials
(``<|AUDIO|>``, ``<|IMAGE|>``, ``<|VIDEO|>``, ``<|vision_bos|>`` ...) and the real model's
media files: one ``preprocessor_config.json`` holding the Qwen2-VL image processor's keys and
the ``WhisperFeatureExtractor``'s (128 mel bins, 16 kHz, 300-second windows), as
Qwen/Qwen2.5-Omni-7B ships it.

vLLM's CPU engine (``Qwen2_5OmniForConditionalGeneration`` -> its thinker) and transformers both
load it; the output is gibberish but real (tests/parity/test_omni_parity.py).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from video_pipeline.engines.tiny_model import (
    MAX_POSITION_EMBEDDINGS,
    VOCAB_SIZE,
    byte_level_tokenizer,
    write_folder,
)

logger = logging.getLogger(__name__)

BUILDER_VERSION = 2
STAMP_FILE = "tiny_model.json"
SAMPLING_RATE = 16000
TEXT_HIDDEN = 128

# Qwen2.5-Omni's special tokens in its own id order (151643...): they take the top ids of the vocab.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_bos|>",
    "<|vision_eos|>",
    "<|vision_pad|>",
    "<|IMAGE|>",
    "<|VIDEO|>",
)

# The tokenizer attributes Qwen2_5OmniProcessor reads (the real tokenizer_config.json's keys).
TOKEN_ATTRIBUTES = {
    "audio_token": "<|AUDIO|>",
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
    "image_token": "<|IMAGE|>",
    "video_token": "<|VIDEO|>",
    "vision_bos_token": "<|vision_bos|>",
    "vision_eos_token": "<|vision_eos|>",
}

# Qwen2.5-Omni-7B's chat template (its long system prompt shortened), also matching the
# OpenAI-style image_url/video_url/audio_url part types.
CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% set image_count = namespace(value=0) %}"
    "{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or content['type'] == 'image_url' or 'image' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif content['type'] == 'audio' or content['type'] == 'audio_url' or 'audio' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "{% if add_audio_id %}Audio {{ audio_count.value }}: {% endif %}"
    "<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif content['type'] == 'video' or content['type'] == 'video_url' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

#: Qwen/Qwen2.5-Omni-7B's preprocessor_config.json: the image processor's and the Whisper feature
#: extractor's keys in one file (no video processor file: transformers builds it from this one, and
#: Qwen2_5OmniProcessor then passes its own per-frame video budget, 128..768 x 28 x 28).
REAL_PREPROCESSOR: dict[str, Any] = {
    "chunk_length": 300, "dither": 0.0, "feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 128,
    "hop_length": 160, "image_mean": _CLIP_MEAN, "image_std": _CLIP_STD,
    "image_processor_type": "Qwen2VLImageProcessor", "max_pixels": 12845056, "merge_size": 2, "min_pixels": 3136,
    "n_fft": 400, "n_samples": 4800000, "nb_max_frames": 30000, "padding_side": "right", "padding_value": 0.0,
    "patch_size": 14, "processor_class": "Qwen2_5OmniProcessor", "return_attention_mask": True,
    "sampling_rate": SAMPLING_RATE, "temporal_patch_size": 2,
}


def _stamp(seed: int) -> dict[str, Any]:
    return {"arch": "qwen2_5_omni", "seed": seed, "builder_version": BUILDER_VERSION}


def is_complete(out: str | os.PathLike[str], seed: int = 0) -> bool:
    """True when ``out`` already holds a finished build with ``seed``."""
    try:
        return json.loads((Path(out) / STAMP_FILE).read_text()) == _stamp(seed)
    except (OSError, ValueError):
        return False


def build(out: str | os.PathLike[str], seed: int = 0) -> Path:
    """Build the tiny Qwen2.5-Omni model into ``out`` unless it is already there; return ``out``.

    Assembled in a sibling temporary folder and renamed into place, as tiny_model does."""
    out = Path(out)
    if is_complete(out, seed):
        return out
    write_folder(out, lambda tmp: _write_model(tmp, seed), STAMP_FILE, _stamp(seed))
    return out


def build_tokenizer() -> Any:
    """Byte-level BPE over the bytes, merges up to the vocab, Qwen2.5-Omni's specials on top."""
    return byte_level_tokenizer(VOCAB_SIZE, SPECIAL_TOKENS, MAX_POSITION_EMBEDDINGS, CHAT_TEMPLATE, dict(TOKEN_ATTRIBUTES))


def _write_model(out: Path, seed: int) -> None:
    import torch
    import transformers

    tokenizer = build_tokenizer()
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    thinker = {
        "audio_config": {
            "num_mel_bins": REAL_PREPROCESSOR["feature_size"], "encoder_layers": 1, "encoder_attention_heads": 2,
            "encoder_ffn_dim": 128, "d_model": 64, "output_dim": TEXT_HIDDEN, "max_source_positions": 1500,
            "n_window": 100,
        },
        "vision_config": {
            "depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 2, "out_hidden_size": TEXT_HIDDEN,
            "fullatt_block_indexes": [1], "window_size": 112, "patch_size": 14, "spatial_merge_size": 2,
            "temporal_patch_size": 2, "in_channels": 3, "tokens_per_second": 25,
        },
        "text_config": {
            "vocab_size": VOCAB_SIZE, "hidden_size": TEXT_HIDDEN, "intermediate_size": 2 * TEXT_HIDDEN,
            "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
            "max_position_embeddings": MAX_POSITION_EMBEDDINGS, "tie_word_embeddings": False,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [8, 12, 12]},
            "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        "audio_token_index": ids["<|AUDIO|>"], "image_token_index": ids["<|IMAGE|>"],
        "video_token_index": ids["<|VIDEO|>"], "audio_start_token_id": ids["<|audio_bos|>"],
        "audio_end_token_id": ids["<|audio_eos|>"], "vision_start_token_id": ids["<|vision_bos|>"],
        "vision_end_token_id": ids["<|vision_eos|>"], "position_id_per_seconds": 25, "seconds_per_chunk": 2,
        "tie_word_embeddings": False,
    }
    config = transformers.Qwen2_5OmniConfig(thinker_config=thinker, enable_audio_output=False)
    config.eos_token_id = ids["<|im_end|>"]
    config.pad_token_id = ids["<|endoftext|>"]
    torch.manual_seed(seed)
    model = transformers.Qwen2_5OmniForConditionalGeneration(config).eval()
    model = model.to(torch.bfloat16)
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=ids["<|endoftext|>"], eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    (out / "preprocessor_config.json").write_text(json.dumps(REAL_PREPROCESSOR, indent=2) + "\n")
    # transformers' Qwen2_5OmniForConditionalGeneration.from_pretrained insists on the talker's speaker
    # table; with no talker there are no speakers.
    torch.save({}, out / "spk_dict.pt")
