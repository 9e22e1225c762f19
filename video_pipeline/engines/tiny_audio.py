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

import logging
from pathlib import Path

from video_pipeline.engines.tiny_model import (
    Builder,
    chatml_template,
    qwen_text,
    rename_weights,
    save_seeded,
    token_ids,
)

logger = logging.getLogger(__name__)

BUILDER_VERSION = 1
SAMPLING_RATE = 16000
#: Seconds of audio one feature window holds (vLLM requires the real model's 30).
CHUNK_LENGTH = 30
NUM_MEL_BINS = 80

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|audio_bos|>",
    "<|AUDIO|>",
    "<|audio_eos|>",
)

# Qwen2-Audio-7B-Instruct's template, also matching {"type": "audio"} parts (vLLM's and ours).
CHAT_TEMPLATE = chatml_template(("audio",), (
    "{% if content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
))


def _write_model(out: Path, seed: int) -> None:
    import transformers

    tokenizer = build_tokenizer()
    ids = token_ids(tokenizer, SPECIAL_TOKENS)
    frames = CHUNK_LENGTH * SAMPLING_RATE // 160  # mel frames of one window (hop 160)
    config = transformers.Qwen2AudioConfig(
        audio_config={
            "num_mel_bins": NUM_MEL_BINS, "encoder_layers": 1, "encoder_attention_heads": 2,
            "encoder_ffn_dim": 128, "d_model": 64, "max_source_positions": frames // 2,
        },
        text_config=qwen_text(ids),
        audio_token_index=ids["<|AUDIO|>"],
    )
    save_seeded(out, seed, config, "Qwen2AudioForConditionalGeneration", eos=[ids["<|im_end|>"], ids["<|endoftext|>"]],
                pad=ids["<|endoftext|>"], bos=ids["<|endoftext|>"])
    # transformers 5 writes the text model as language_model.model.model.*; the real checkpoints (and
    # vLLM's loader, and transformers reading them back) use language_model.model.*.
    rename_weights(out, "language_model.model.model.", "language_model.model.")
    extractor = transformers.WhisperFeatureExtractor(
        feature_size=NUM_MEL_BINS, sampling_rate=SAMPLING_RATE, hop_length=160, chunk_length=CHUNK_LENGTH,
        n_fft=400, return_attention_mask=True,
    )
    processor = transformers.Qwen2AudioProcessor(feature_extractor=extractor, tokenizer=tokenizer,
                                                 chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(out)
    extractor.save_pretrained(out)  # preprocessor_config.json, for readers older than transformers 5


_BUILDER = Builder("qwen2_audio", BUILDER_VERSION, SPECIAL_TOKENS, CHAT_TEMPLATE, _write_model)
#: ``build(out, seed=0) -> Path`` (kept when already there), ``is_complete(out, seed=0)``, ``build_tokenizer()``.
build = _BUILDER.build
is_complete = _BUILDER.is_complete
build_tokenizer = _BUILDER.tokenizer
