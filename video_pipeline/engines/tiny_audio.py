"""Build a tiny, random-weight, audio-capable Qwen2-Audio model folder offline.

The audio sibling of :mod:`video_pipeline.engines.tiny_model`: transformers' own
``Qwen2AudioConfig`` (a 1-layer Whisper-style encoder, a 2-layer Qwen2 text model),
seeded random weights, a byte-level BPE tokenizer with Qwen's specials plus
``<|audio_bos|>``/``<|AUDIO|>``/``<|audio_eos|>``, and a ``Qwen2AudioProcessor`` whose
``WhisperFeatureExtractor`` is the real one (80 mel bins here, 30-second windows at 16 kHz:
vLLM's Qwen2-Audio input schema insists on the encoder's 3000 mel frames).

vLLM's CPU engine and transformers both load it; the output is gibberish but real:
different sounds give different greedy tokens (tests/parity/test_audio_parity.py).
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

BUILDER_VERSION = 1
STAMP_FILE = "tiny_model.json"
SAMPLING_RATE = 16000
#: Seconds of audio one feature window holds (vLLM requires the real model's 30).
CHUNK_LENGTH = 30
NUM_MEL_BINS = 80
TEXT_HIDDEN = 128

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|audio_bos|>",
    "<|AUDIO|>",
    "<|audio_eos|>",
)

# Qwen2-Audio-7B-Instruct's template, also matching {"type": "audio"} parts (vLLM's and ours).
CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _stamp(seed: int) -> dict[str, Any]:
    return {"arch": "qwen2_audio", "seed": seed, "builder_version": BUILDER_VERSION}


def is_complete(out: str | os.PathLike[str], seed: int = 0) -> bool:
    """True when ``out`` already holds a finished build with ``seed``."""
    try:
        return json.loads((Path(out) / STAMP_FILE).read_text()) == _stamp(seed)
    except (OSError, ValueError):
        return False


def build(out: str | os.PathLike[str], seed: int = 0) -> Path:
    """Build the tiny Qwen2-Audio model into ``out`` unless it is already there; return ``out``.

    Assembled in a sibling temporary folder and renamed into place, as tiny_model does."""
    out = Path(out)
    if is_complete(out, seed):
        return out
    write_folder(out, lambda tmp: _write_model(tmp, seed), STAMP_FILE, _stamp(seed))
    return out


def _rename_weights(out: Path, old: str, new: str) -> None:
    from safetensors.torch import load_file, save_file

    path = out / "model.safetensors"
    weights = load_file(path)
    save_file({(new + k[len(old):]) if k.startswith(old) else k: v for k, v in weights.items()}, path,
              metadata={"format": "pt"})


def build_tokenizer() -> Any:
    """Byte-level BPE over the bytes, merges up to the vocab, the Qwen and audio specials on top."""
    return byte_level_tokenizer(VOCAB_SIZE, SPECIAL_TOKENS, MAX_POSITION_EMBEDDINGS, CHAT_TEMPLATE)


def _write_model(out: Path, seed: int) -> None:
    import torch
    import transformers

    tokenizer = build_tokenizer()
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    frames = CHUNK_LENGTH * SAMPLING_RATE // 160  # mel frames of one window (hop 160)
    config = transformers.Qwen2AudioConfig(
        audio_config={
            "num_mel_bins": NUM_MEL_BINS, "encoder_layers": 1, "encoder_attention_heads": 2,
            "encoder_ffn_dim": 128, "d_model": 64, "max_source_positions": frames // 2,
        },
        text_config={
            "vocab_size": VOCAB_SIZE, "hidden_size": TEXT_HIDDEN, "intermediate_size": 2 * TEXT_HIDDEN,
            "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
            "max_position_embeddings": MAX_POSITION_EMBEDDINGS, "tie_word_embeddings": False,
            "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        audio_token_index=ids["<|AUDIO|>"],
    )
    config.eos_token_id = ids["<|im_end|>"]
    config.pad_token_id = ids["<|endoftext|>"]
    torch.manual_seed(seed)
    model = transformers.Qwen2AudioForConditionalGeneration(config).eval()
    model = model.to(torch.bfloat16)
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=ids["<|endoftext|>"], eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
    )
    model.save_pretrained(out, safe_serialization=True)
    # transformers 5 writes the text model as language_model.model.model.*; the real checkpoints (and
    # vLLM's loader, and transformers reading them back) use language_model.model.*.
    _rename_weights(out, "language_model.model.model.", "language_model.model.")
    extractor = transformers.WhisperFeatureExtractor(
        feature_size=NUM_MEL_BINS, sampling_rate=SAMPLING_RATE, hop_length=160, chunk_length=CHUNK_LENGTH,
        n_fft=400, return_attention_mask=True,
    )
    processor = transformers.Qwen2AudioProcessor(feature_extractor=extractor, tokenizer=tokenizer,
                                                 chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(out)
    extractor.save_pretrained(out)  # preprocessor_config.json, for readers older than transformers 5
