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

import logging
from pathlib import Path
from typing import Any

from video_pipeline.engines.tiny_model import (
    CLIP_MEAN,
    CLIP_STD,
    TEXT_HIDDEN,
    VISION_2_BLOCKS,
    Builder,
    chatml_template,
    media_parts,
    mrope,
    qwen_text,
    save_seeded,
    token_ids,
    write_real_processor,
)

logger = logging.getLogger(__name__)

BUILDER_VERSION = 2
SAMPLING_RATE = 16000

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
CHAT_TEMPLATE = chatml_template(("audio", "image", "video"), media_parts(
    ("image", "Picture", "add_vision_id", "<|vision_bos|><|IMAGE|><|vision_eos|>"),
    ("audio", "Audio", "add_audio_id", "<|audio_bos|><|AUDIO|><|audio_eos|>"),
    ("video", "Video", "add_vision_id", "<|vision_bos|><|VIDEO|><|vision_eos|>"),
))

#: Qwen/Qwen2.5-Omni-7B's preprocessor_config.json: the image processor's and the Whisper feature
#: extractor's keys in one file (no video processor file: transformers builds it from this one, and
#: Qwen2_5OmniProcessor then passes its own per-frame video budget, 128..768 x 28 x 28).
REAL_PREPROCESSOR: dict[str, Any] = {
    "chunk_length": 300, "dither": 0.0, "feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 128,
    "hop_length": 160, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
    "image_processor_type": "Qwen2VLImageProcessor", "max_pixels": 12845056, "merge_size": 2, "min_pixels": 3136,
    "n_fft": 400, "n_samples": 4800000, "nb_max_frames": 30000, "padding_side": "right", "padding_value": 0.0,
    "patch_size": 14, "processor_class": "Qwen2_5OmniProcessor", "return_attention_mask": True,
    "sampling_rate": SAMPLING_RATE, "temporal_patch_size": 2,
}


def _write_model(out: Path, seed: int) -> None:
    import torch
    import transformers

    tokenizer = build_tokenizer()
    ids = token_ids(tokenizer, SPECIAL_TOKENS)
    thinker = {
        "audio_config": {
            "num_mel_bins": REAL_PREPROCESSOR["feature_size"], "encoder_layers": 1, "encoder_attention_heads": 2,
            "encoder_ffn_dim": 128, "d_model": 64, "output_dim": TEXT_HIDDEN, "max_source_positions": 1500,
            "n_window": 100,
        },
        "vision_config": {
            **VISION_2_BLOCKS, "fullatt_block_indexes": [1], "window_size": 112, "patch_size": 14,
            "spatial_merge_size": 2, "temporal_patch_size": 2, "in_channels": 3, "tokens_per_second": 25,
        },
        "text_config": qwen_text(ids, rope_parameters=mrope((8, 12, 12))),
        "audio_token_index": ids["<|AUDIO|>"], "image_token_index": ids["<|IMAGE|>"],
        "video_token_index": ids["<|VIDEO|>"], "audio_start_token_id": ids["<|audio_bos|>"],
        "audio_end_token_id": ids["<|audio_eos|>"], "vision_start_token_id": ids["<|vision_bos|>"],
        "vision_end_token_id": ids["<|vision_eos|>"], "position_id_per_seconds": 25, "seconds_per_chunk": 2,
        "tie_word_embeddings": False,
    }
    config = transformers.Qwen2_5OmniConfig(thinker_config=thinker, enable_audio_output=False)
    save_seeded(out, seed, config, "Qwen2_5OmniForConditionalGeneration",
                eos=[ids["<|im_end|>"], ids["<|endoftext|>"]], pad=ids["<|endoftext|>"], bos=ids["<|endoftext|>"])
    write_real_processor(out, tokenizer, CHAT_TEMPLATE, {"preprocessor_config.json": REAL_PREPROCESSOR})
    # transformers' Qwen2_5OmniForConditionalGeneration.from_pretrained insists on the talker's speaker
    # table; with no talker there are no speakers.
    torch.save({}, out / "spk_dict.pt")


_BUILDER = Builder("qwen2_5_omni", BUILDER_VERSION, SPECIAL_TOKENS, CHAT_TEMPLATE, _write_model, TOKEN_ATTRIBUTES)
#: ``build(out, seed=0) -> Path`` (kept when already there), ``is_complete(out, seed=0)``, ``build_tokenizer()``.
build = _BUILDER.build
is_complete = _BUILDER.is_complete
build_tokenizer = _BUILDER.tokenizer
