"""Tiny, random-weight model folders of the non-Qwen video families vLLM serves, built offline.

Like :mod:`video_pipeline.engines.tiny_model` (same tokenizer design, seeded weights,
temporary folder renamed into place), with transformers' own config classes at tiny
widths but the REAL checkpoints' media settings, so the frame sizes and token counts
the parity tests compare are the real models'.

How each family sizes and counts video (transformers 5.19, vLLM 0.32):

``llava_onevision`` (llava-hf/llava-onevision-qwen2-0.5b-ov-hf; SigLIP + Qwen2)
    Every frame resized to 384x384 (``LlavaOnevisionVideoProcessor.size``, bicubic, no
    crop), patch 14 -> 27x27 features, bilinear 2x2 pooling (vLLM ``apply_pooling``,
    ``ceil(27/2)``) -> 14x14 = 196 tokens per frame, no temporal merging, and ONE
    ``image_newline`` token after the last frame: ``196 * T + 1`` ``<video>`` tokens.
    No default frame count or fps (``do_sample_frames`` False). vLLM takes a bare
    (T, H, W, 3) array. Images are "anyres_max_9": a 384 base view plus 384 tiles on the
    best grid pinpoint, unpadded features plus one newline per row; the count depends
    on the image's size (not a fixed number).

``internvl`` (OpenGVLab/InternVL3-1B-hf; InternViT + Qwen2)
    Every frame resized to 448x448 (the checkpoint's ``size``; the class default is
    384), patch 14 -> 32x32, pixel shuffle 0.5 -> ``image_seq_length`` 256
    ``<IMG_CONTEXT>`` tokens per frame, no temporal merging. The processor writes each
    frame as ``Frame{i}: <img>`` + 256 x ``<IMG_CONTEXT>`` + ``</img>``, frames joined by
    ``\\n`` (those words are prompt tokens too). No default frame count. vLLM takes a bare
    array; vLLM's prompt carries ``<video>`` ids where transformers' carries
    ``<IMG_CONTEXT>`` (its embeddings replace both, so generation is the same). Images
    are tiled (``crop_to_patches``, 1..12 tiles of 448 plus a thumbnail when > 1):
    ``256 * tiles + 2`` tokens, by the image's aspect ratio.

``glm4v`` (zai-org/GLM-4.1V-9B-Thinking)
    Qwen3-VL's "clip" smart resize: sides multiples of 28 (patch 14 x merge 2), and
    frames x height x width within [12544, 47040000] (``Glm4vVideoProcessor.size``).
    Temporal patch 2: ``ceil(T/2)`` groups of ``(h/28)*(w/28)`` ``<|image|>`` tokens, each
    group written ``<|begin_of_image|>...<|end_of_image|>{second}`` (the integer second
    of the group's first frame) inside ``<|begin_of_video|>...<|end_of_video|>``.
    Samples at 2 fps, at most 300 s (``max_duration``), an odd count padded with its
    last frame. vLLM needs ``(frames, metadata)`` (``video_needs_metadata``) with
    ``fps``, ``frames_indices`` and ``do_sample_frames`` False for sampled frames.
    Images: smart resize of ONE frame pair, so the budget [12544, 28*28*15000] counts
    2 x height x width.

Values not in the real checkpoints' JSON come from the installed processor classes'
defaults (which is what transformers uses for them too).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from video_pipeline.engines.tiny_model import (
    MAX_POSITION_EMBEDDINGS,
    TEXT_HIDDEN,
    TINY_TEXT,
    VOCAB_SIZE,
    build_once,
    byte_level_tokenizer,
    is_stamped,
    qwen_text,
    rename_weights,
    save_processor,
    save_seeded,
    token_ids,
)

logger = logging.getLogger(__name__)

#: Bumped whenever the builder's output changes, so stale folders are rebuilt.
BUILDER_VERSION = 3
STAMP_FILE = "tiny_family.json"

# What llava-onevision's and InternVL's Qwen2 text models add to tiny_model.qwen_text.
_QWEN2_TEXT = {
    "model_type": "qwen2",
    "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0},
    # Wider than the default 0.02, so greedy text varies with the input instead of repeating one token.
    "initializer_range": 0.1,
}

# llava-onevision-qwen2-*-ov-hf's chat template, verbatim (transformers' conversion script): images,
# then videos, then text; list content only (a string message renders nothing).
_LLAVA_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{# Render all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>\n' }}{% endfor %}"
    "{# Render all text next #}{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] }}{% endgeneration %}{% endfor %}{% endif %}"
    "{{'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# InternVL3-hf's template (Qwen2 chat, one placeholder per image/video part; canonical part types only).
_INTERNVL_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# GLM-4.1V's template, without the thinking and tool parts.
_GLM4V_TEMPLATE = (
    "[gMASK]<sop>{% for message in messages %}{{ '<|' + message['role'] + '|>\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<|begin_of_image|><|image|><|end_of_image|>' }}"
    "{% elif content['type'] == 'video' %}{{ '<|begin_of_video|><|video|><|end_of_video|>' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

_QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


@dataclass(frozen=True)
class _Family:
    specials: tuple[str, ...]
    eos: str
    pad: str
    template: str
    named_tokens: dict[str, str] = field(default_factory=dict)  # tokenizer attribute -> token


FAMILIES: dict[str, _Family] = {
    "llava_onevision": _Family(
        specials=(*_QWEN_SPECIALS, "<image>", "<video>"), eos="<|im_end|>", pad="<|endoftext|>",
        template=_LLAVA_TEMPLATE,
    ),
    "internvl": _Family(
        specials=(*_QWEN_SPECIALS, "<img>", "</img>", "<IMG_CONTEXT>", "<video>"), eos="<|im_end|>",
        pad="<|endoftext|>", template=_INTERNVL_TEMPLATE,
        named_tokens={"start_image_token": "<img>", "end_image_token": "</img>",
                      "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"},
    ),
    "glm4v": _Family(
        specials=("<|endoftext|>", "[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>",
                  "<|observation|>", "<|begin_of_image|>", "<|end_of_image|>", "<|begin_of_video|>",
                  "<|end_of_video|>", "<|image|>", "<|video|>"),
        eos="<|endoftext|>", pad="<|endoftext|>", template=_GLM4V_TEMPLATE,
    ),
}


def is_complete(out: str | os.PathLike[str], family: str, seed: int = 0) -> bool:
    """True when ``out`` already holds a finished build of ``family`` with ``seed``."""
    return is_stamped(out, STAMP_FILE, _stamp(family, seed))


def build(family: str, out: str | os.PathLike[str], seed: int = 0) -> Path:
    """Build the tiny ``family`` model into ``out`` unless it is already there; return ``out``.

    Assembled in a sibling temporary folder and renamed into place (see tiny_model.build).
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {sorted(FAMILIES)}")
    return build_once(out, lambda tmp: _WRITERS[family](tmp, seed), STAMP_FILE, _stamp(family, seed),
                      f"tiny {family} (seed {seed})")


def _stamp(family: str, seed: int) -> dict[str, Any]:
    return {"family": family, "seed": seed, "builder_version": BUILDER_VERSION}


# --- tokenizer -------------------------------------------------------------------------------------


def build_tokenizer(family: str) -> Any:
    """tiny_model's byte-level BPE (256 bytes, deterministic merges) with ``family``'s specials on top."""
    fam = FAMILIES[family]
    return byte_level_tokenizer(VOCAB_SIZE, fam.specials, MAX_POSITION_EMBEDDINGS, fam.template,
                                dict(fam.named_tokens) or None, eos=fam.eos, pad=fam.pad)


def _ids(tokenizer: Any, family: str) -> dict[str, int]:
    return token_ids(tokenizer, FAMILIES[family].specials)


# --- families ---------------------------------------------------------------------------------------


def _write_llava_onevision(out: Path, seed: int) -> None:
    import transformers

    tokenizer = build_tokenizer("llava_onevision")
    ids = _ids(tokenizer, "llava_onevision")
    image_processor = transformers.LlavaOnevisionImageProcessor()  # class defaults = the 0.5b-ov-hf checkpoint's
    config = transformers.LlavaOnevisionConfig(
        text_config=qwen_text(ids, **_QWEN2_TEXT),
        vision_config={"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 384, "patch_size": 14,
                       "vision_use_head": False},
        image_token_index=ids["<image>"],
        video_token_index=ids["<video>"],
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9",
        image_grid_pinpoints=image_processor.image_grid_pinpoints,
        tie_word_embeddings=False,
    )
    processor = transformers.LlavaOnevisionProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=transformers.LlavaOnevisionVideoProcessor(),
        num_image_tokens=(384 // 14) ** 2,  # 729, as the checkpoint's processor_config.json
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        chat_template=_LLAVA_TEMPLATE,
    )
    _save(out, seed, config, "LlavaOnevisionForConditionalGeneration", processor, tokenizer,
          eos=[ids["<|im_end|>"], ids["<|endoftext|>"]], pad=ids["<|endoftext|>"])
    # transformers 5.19 saves SigLIP without its "vision_model." level (it strips it on load); the real
    # checkpoint and vLLM 0.32's loader keep it.
    rename_weights(out, "vision_tower.", "vision_tower.vision_model.")


def _write_internvl(out: Path, seed: int) -> None:
    import transformers

    tokenizer = build_tokenizer("internvl")
    ids = _ids(tokenizer, "internvl")
    config = transformers.InternVLConfig(
        text_config=qwen_text(ids, **_QWEN2_TEXT),
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": [448, 448], "patch_size": [14, 14]},
        image_token_id=ids["<IMG_CONTEXT>"],
        image_seq_length=256,
        downsample_ratio=0.5,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )
    # InternVL3-1B-hf's preprocessor_config.json: 448x448, ImageNet mean/std, 1..12 tiles.
    common = {"size": {"height": 448, "width": 448}, "image_mean": [0.485, 0.456, 0.406],
              "image_std": [0.229, 0.224, 0.225]}
    processor = transformers.InternVLProcessor(
        image_processor=transformers.GotOcr2ImageProcessor(crop_to_patches=False, min_patches=1, max_patches=12,
                                                           **common),
        tokenizer=tokenizer,
        video_processor=transformers.InternVLVideoProcessor(**common),
        image_seq_length=256,
        chat_template=_INTERNVL_TEMPLATE,
    )
    _save(out, seed, config, "InternVLForConditionalGeneration", processor, tokenizer,
          eos=[ids["<|im_end|>"], ids["<|endoftext|>"]], pad=ids["<|endoftext|>"])


def _write_glm4v(out: Path, seed: int) -> None:
    import transformers

    tokenizer = build_tokenizer("glm4v")
    ids = _ids(tokenizer, "glm4v")
    eos = [ids["<|endoftext|>"], ids["<|user|>"], ids["<|observation|>"]]
    config = transformers.Glm4vConfig(
        text_config={**TINY_TEXT, "pad_token_id": ids["<|endoftext|>"], "eos_token_id": eos, "initializer_range": 0.1,
                     # GLM-4.1V rotates half of each head (64 of 128 dims: [8, 12, 12]); here 32 of 64.
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                                         "mrope_section": [4, 6, 6]}},
        vision_config={"depth": 1, "hidden_size": 64, "intermediate_size": 128, "num_heads": 2,
                       "out_hidden_size": TEXT_HIDDEN, "image_size": 336, "patch_size": 14, "spatial_merge_size": 2,
                       "temporal_patch_size": 2},
        image_token_id=ids["<|image|>"],
        video_token_id=ids["<|video|>"],
        image_start_token_id=ids["<|begin_of_image|>"],
        image_end_token_id=ids["<|end_of_image|>"],
        video_start_token_id=ids["<|begin_of_video|>"],
        video_end_token_id=ids["<|end_of_video|>"],
        tie_word_embeddings=False,
    )
    # GLM-4.1V-9B-Thinking's processor JSON equals the installed classes' defaults (patch 14, merge 2,
    # temporal 2; images [112*112, 28*28*15000]; video [112*112, 28*28*2*30000], 2 fps, 300 s).
    processor = transformers.Glm4vProcessor(
        image_processor=transformers.Glm4vImageProcessor(),
        tokenizer=tokenizer,
        video_processor=transformers.Glm4vVideoProcessor(),
        chat_template=_GLM4V_TEMPLATE,
    )
    _save(out, seed, config, "Glm4vForConditionalGeneration", processor, tokenizer, eos=eos,
          pad=ids["<|endoftext|>"])


def _save(out: Path, seed: int, config: Any, model_class: str, processor: Any, tokenizer: Any, *,
          eos: list[int], pad: int) -> None:
    """Seeded weights (greedy text kept printable) and the processor, with its standalone files too."""
    save_seeded(out, seed, config, model_class, eos=eos, pad=pad, favour=tokenizer)
    save_processor(processor, out)


_WRITERS = {"llava_onevision": _write_llava_onevision, "internvl": _write_internvl, "glm4v": _write_glm4v}


def main(argv: list[str] | None = None) -> int:
    """``python -m video_pipeline.engines.tiny_families --family internvl --out .tiny/internvl``"""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", required=True, choices=sorted(FAMILIES))
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    logger.info("tiny %s at %s", args.family, build(args.family, args.out, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
