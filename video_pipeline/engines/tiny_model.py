"""Build a tiny, random-weight, video-capable Qwen-VL model folder offline.

Tests and benchmarks need a real model that vLLM and transformers load without
the Hugging Face hub. This module makes one from transformers' own config
classes: a byte-level BPE tokenizer with the Qwen special tokens, a 2-layer text
model and a 1-2 block vision tower, weights drawn from a seeded generator.
The output is gibberish, but real: the video reaches the logits, so different
videos give different greedy tokens. The output head is damped for every token
that is not printable ASCII, so greedy text stays readable and runs to
``max_tokens`` (it never picks <|im_end|>).

The same seed and arch always give the same folder (weights, tokenizer,
configs); :func:`build` skips the work when the folder already holds that model.

``media="tiny"`` (the default) gives tiny pixel budgets, so clips cost few tokens.
``media="real"`` writes the processor files the real checkpoints ship instead (their
values and their file layout: see :data:`REAL_MEDIA`), so tests can check our media
sizing against transformers' and vLLM's processors on a realistic configuration.
``scripts/build_tiny_model.py`` is the command-line entry point.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Bumped whenever the builder's output changes, so stale folders are rebuilt.
BUILDER_VERSION = 2
#: Written last; its presence (with matching content) marks a complete folder.
STAMP_FILE = "tiny_model.json"
MEDIA = ("tiny", "real")

VOCAB_SIZE = 512
TEXT_HIDDEN = 128
HEAD_DIM = 64
MAX_POSITION_EMBEDDINGS = 32768
#: The text model of every tiny build (2 layers, 2 heads, one KV head), before its family's settings.
TINY_TEXT: dict[str, Any] = {
    "vocab_size": VOCAB_SIZE, "hidden_size": TEXT_HIDDEN, "intermediate_size": 2 * TEXT_HIDDEN,
    "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
    "max_position_embeddings": MAX_POSITION_EMBEDDINGS,
}

# Qwen's special tokens, in Qwen's own id order; they take the top ids of the vocab.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

def chatml_template(counters: Sequence[str], parts: str) -> str:
    """A Qwen ChatML chat template: a default system turn, then each message's string content, or its list
    content part by part: ``parts`` (a Jinja ``{% if %}``/``{% elif %}`` chain, one branch per media kind,
    counting into ``<kind>_count`` for each of ``counters``), text parts as they are."""
    return (
        "".join("{% set " + kind + "_count = namespace(value=0) %}" for kind in counters)
        + "{% for message in messages %}"
        "{% if loop.first and message['role'] != 'system' %}"
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "{% endif %}"
        "<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
        "{% else %}{% for content in message['content'] %}"
        + parts
        + "{% elif 'text' in content %}{{ content['text'] }}"
        "{% endif %}{% endfor %}<|im_end|>\n"
        "{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


def media_parts(*media: tuple[str, str, str, str]) -> str:
    """The ``parts`` of :func:`chatml_template` for ``(kind, label, flag, tokens)`` media kinds, in that order:
    a part of ``kind`` (OpenAI's ``<kind>_url`` type too) is ``tokens``, after ``"<label> <n>: "`` when the
    template variable ``flag`` is set."""
    return "".join(
        ("{% if " if i == 0 else "{% elif ")
        + f"content['type'] == '{kind}' or content['type'] == '{kind}_url' or '{kind}' in content %}}"
        + "{% set " + kind + "_count.value = " + kind + "_count.value + 1 %}"
        + "{% if " + flag + " %}" + label + " {{ " + kind + "_count.value }}: {% endif %}"
        + tokens
        for i, (kind, label, flag, tokens) in enumerate(media)
    )


# Qwen2-VL-Instruct's chat template, extended to accept OpenAI-style
# image_url/video_url part types. The same template serves all three archs:
# vLLM expands each <|video_pad|> (Qwen3-VL: with per-frame timestamps).
CHAT_TEMPLATE = chatml_template(("image", "video"), media_parts(
    ("image", "Picture", "add_vision_id", "<|vision_start|><|image_pad|><|vision_end|>"),
    ("video", "Video", "add_vision_id", "<|vision_start|><|video_pad|><|vision_end|>"),
))


#: The 2-block vision tower of the Qwen2.5-VL generation and after (Qwen3-VL, Qwen2.5-Omni's thinker).
VISION_2_BLOCKS: dict[str, Any] = {
    "depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 2, "out_hidden_size": TEXT_HIDDEN,
}


@dataclass(frozen=True)
class _Arch:
    """What differs between the three Qwen-VL generations."""

    #: transformers' class names: ``<prefix>Config``, ``<prefix>ForConditionalGeneration``, ``<prefix>Processor``.
    prefix: str
    video_processor_class: str
    patch_size: int
    mrope_section: tuple[int, int, int]
    vision: dict[str, Any]
    text_extra: dict[str, Any]
    # Qwen3-VL's video budget counts the pixels of all frames together.
    video_max_units: int
    mrope_interleaved: bool = False

    @property
    def model_class(self) -> str:
        return f"{self.prefix}ForConditionalGeneration"


ARCHS: dict[str, _Arch] = {
    "qwen2_vl": _Arch(
        prefix="Qwen2VL", video_processor_class="Qwen2VLVideoProcessor", patch_size=14, mrope_section=(8, 12, 12),
        vision={"depth": 1, "embed_dim": 64, "hidden_size": TEXT_HIDDEN, "num_heads": 2, "mlp_ratio": 2},
        text_extra={}, video_max_units=64,
    ),
    "qwen2_5_vl": _Arch(
        prefix="Qwen2_5_VL", video_processor_class="Qwen2VLVideoProcessor", patch_size=14, mrope_section=(8, 12, 12),
        vision={**VISION_2_BLOCKS, "fullatt_block_indexes": [1], "window_size": 112, "tokens_per_second": 2},
        text_extra={}, video_max_units=64,
    ),
    "qwen3_vl": _Arch(
        prefix="Qwen3VL", video_processor_class="Qwen3VLVideoProcessor", patch_size=16, mrope_section=(12, 10, 10),
        vision={**VISION_2_BLOCKS, "num_position_embeddings": 64, "deepstack_visual_indexes": [0]},
        text_extra={"head_dim": HEAD_DIM}, video_max_units=256, mrope_interleaved=True,
    ),
}

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _qwen2_vl_preprocessor(processor_class: str) -> dict[str, Any]:
    """Qwen2-VL's and Qwen2.5-VL's preprocessor_config.json (the same but for the processor class)."""
    return {
        "min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
        "merge_size": 2, "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
        "image_processor_type": "Qwen2VLImageProcessor", "processor_class": processor_class,
    }


#: The processor files the real checkpoints ship (file name -> JSON), copied from
#: Qwen/Qwen2-VL-7B-Instruct, Qwen/Qwen2.5-VL-7B-Instruct and Qwen/Qwen3-VL-8B-Instruct.
#: Qwen2(.5)-VL ship only preprocessor_config.json: transformers then builds the video
#: processor from it too (per-frame budget min_pixels..max_pixels). Qwen3-VL ships its video
#: processor apart; its fps 2, min_frames 4 and max_frames 768 are the class's defaults.
REAL_MEDIA: dict[str, dict[str, dict[str, Any]]] = {
    "qwen2_vl": {"preprocessor_config.json": _qwen2_vl_preprocessor("Qwen2VLProcessor")},
    "qwen2_5_vl": {"preprocessor_config.json": _qwen2_vl_preprocessor("Qwen2_5_VLProcessor")},
    "qwen3_vl": {
        "preprocessor_config.json": {
            "size": {"longest_edge": 16777216, "shortest_edge": 65536}, "patch_size": 16,
            "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5], "processor_class": "Qwen3VLProcessor",
            "image_processor_type": "Qwen2VLImageProcessorFast",
        },
        "video_preprocessor_config.json": {
            "size": {"longest_edge": 25165824, "shortest_edge": 4096}, "patch_size": 16,
            "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5], "processor_class": "Qwen3VLProcessor",
            "video_processor_type": "Qwen3VLVideoProcessor",
        },
    },
}


def is_complete(out: str | os.PathLike[str], arch: str, seed: int = 0, media: str = "tiny") -> bool:
    """True when ``out`` already holds a finished build of ``arch`` with ``seed`` and ``media``."""
    return is_stamped(out, STAMP_FILE, _stamp(arch, seed, media))


def build(arch: str, out: str | os.PathLike[str], seed: int = 0, media: str = "tiny") -> Path:
    """Build the tiny ``arch`` model into ``out`` unless it is already there; return ``out``.

    ``media`` picks the processor files: ``"tiny"`` budgets, or the ``"real"``
    checkpoint's (:data:`REAL_MEDIA`); weights and tokenizer are the same either way.
    The folder is assembled in a sibling temporary directory and renamed into
    place, so concurrent builders and interrupted runs never leave a half-built
    folder that looks complete.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {sorted(ARCHS)}")
    if media not in MEDIA:
        raise ValueError(f"unknown media {media!r}; choose one of {list(MEDIA)}")
    return build_once(out, lambda tmp: _write_model(arch, tmp, seed, media), STAMP_FILE, _stamp(arch, seed, media),
                      f"tiny {arch} model (seed {seed}, {media} media)")


def is_stamped(out: str | os.PathLike[str], stamp_file: str, stamp: dict[str, Any]) -> bool:
    """True when ``out`` holds a finished build: its ``stamp_file`` (written last) says ``stamp``."""
    try:
        return bool(json.loads((Path(out) / stamp_file).read_text()) == stamp)
    except (OSError, ValueError):
        return False


def build_once(out: str | os.PathLike[str], write: Any, stamp_file: str, stamp: dict[str, Any], what: str) -> Path:
    """``out`` as a Path, once it holds the build ``stamp`` names: kept when it already does, else made
    by :func:`write_folder` with ``write(tmp)``. ``what`` names the build in the debug log."""
    out = Path(out)
    if is_stamped(out, stamp_file, stamp):
        logger.debug("%s already at %s", what, out)
        return out
    started = time.perf_counter()
    write_folder(out, write, stamp_file, stamp)
    logger.debug("built %s at %s in %.1f s", what, out, time.perf_counter() - started)
    return out


def write_folder(out: Path, write: Any, stamp_file: str, stamp: dict[str, Any]) -> None:
    """Builds a model folder with ``write(tmp)`` in a sibling temporary directory, stamps it last and
    renames it into place, so concurrent builders and interrupted runs never leave a half-built folder
    that looks complete."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write(tmp)
        (tmp / stamp_file).write_text(json.dumps(stamp, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        # mkdtemp (and safetensors) make private files; a server may run as another user.
        tmp.chmod(0o755)
        for path in tmp.iterdir():
            path.chmod(0o644)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _stamp(arch: str, seed: int, media: str = "tiny") -> dict[str, Any]:
    stamp = arch_stamp(arch, seed, BUILDER_VERSION)
    if media != "tiny":  # the default build's stamp (and so its folder) stays as it always was
        stamp["media"] = media
    return stamp


def arch_stamp(arch: str, seed: int, builder_version: int) -> dict[str, Any]:
    """The stamp of a Qwen builder's folder (this module's, :class:`Builder`'s)."""
    return {"arch": arch, "seed": seed, "builder_version": builder_version}


@dataclass(frozen=True)
class Builder:
    """The builder of one more tiny Qwen model (tiny_audio's Qwen2-Audio, tiny_omni's Qwen2.5-Omni): its
    folder's stamp, the check that a folder holds its build, the build, its tokenizer."""

    arch: str
    #: Bumped whenever the builder's output changes, so stale folders are rebuilt.
    version: int
    special_tokens: tuple[str, ...]
    chat_template: str
    #: ``write(folder, seed)``: the model's files.
    write: Callable[[Path, int], None]
    #: Tokenizer attribute -> special token, for the processors that read them.
    token_attributes: Mapping[str, str] = field(default_factory=dict)

    def stamp(self, seed: int) -> dict[str, Any]:
        return arch_stamp(self.arch, seed, self.version)

    def is_complete(self, out: str | os.PathLike[str], seed: int = 0) -> bool:
        """True when ``out`` already holds a finished build with ``seed``."""
        return is_stamped(out, STAMP_FILE, self.stamp(seed))

    def build(self, out: str | os.PathLike[str], seed: int = 0) -> Path:
        """Build the model into ``out`` unless it is already there; return ``out``. Assembled in a sibling
        temporary folder and renamed into place (:func:`write_folder`)."""
        return build_once(out, lambda tmp: self.write(tmp, seed), STAMP_FILE, self.stamp(seed),
                          f"tiny {self.arch} model (seed {seed})")

    def tokenizer(self) -> Any:
        """Byte-level BPE over the bytes, merges up to the vocab, the model's specials on top."""
        return byte_level_tokenizer(VOCAB_SIZE, self.special_tokens, MAX_POSITION_EMBEDDINGS, self.chat_template,
                                    dict(self.token_attributes) or None)


def token_ids(tokenizer: Any, tokens: Sequence[str]) -> dict[str, int]:
    """``tokens`` -> their ids in ``tokenizer``."""
    return {tok: tokenizer.convert_tokens_to_ids(tok) for tok in tokens}


def mrope(section: Sequence[int], interleaved: bool = False) -> dict[str, Any]:
    """Qwen-VL's multimodal rotary embedding (theta 1e6) over ``section`` (temporal, height, width dims)."""
    return {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": list(section),
            **({"mrope_interleaved": True} if interleaved else {})}


def qwen_text(ids: Mapping[str, int], **extra: Any) -> dict[str, Any]:
    """:data:`TINY_TEXT` with Qwen's ids (bos and pad <|endoftext|>, eos <|im_end|>), untied, then ``extra``."""
    return {**TINY_TEXT, "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"], "tie_word_embeddings": False, **extra}


def _write_model(name: str, out: Path, seed: int, media: str = "tiny") -> None:
    import transformers

    arch = ARCHS[name]
    tokenizer = build_tokenizer()
    ids = token_ids(tokenizer, SPECIAL_TOKENS)
    config = getattr(transformers, f"{arch.prefix}Config")(
        text_config=qwen_text(ids, rope_parameters=mrope(arch.mrope_section, arch.mrope_interleaved),
                              **arch.text_extra),
        vision_config={
            "patch_size": arch.patch_size,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "in_channels": 3,
            **arch.vision,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    config.bos_token_id = ids["<|endoftext|>"]
    save_seeded(out, seed, config, arch.model_class, eos=[ids["<|im_end|>"], ids["<|endoftext|>"]],
                pad=ids["<|endoftext|>"], bos=ids["<|endoftext|>"], favour=tokenizer)

    if media == "real":
        write_real_processor(out, tokenizer, CHAT_TEMPLATE, REAL_MEDIA[name])
        return
    save_processor(_processor(arch, tokenizer), out)


def save_processor(processor: Any, out: Path) -> None:
    """Saves ``processor`` in ``out``, and its image and video processors' own files too: transformers 5 keeps
    both inside processor_config.json; older readers (transformers 4.x, other tools) look for these files."""
    processor.save_pretrained(out)
    processor.image_processor.save_pretrained(out)
    processor.video_processor.save_pretrained(out)


def save_seeded(out: Path, seed: int, config: Any, model_class: str, *, eos: list[int], pad: int,
                bos: int | None = None, favour: Any = None) -> None:
    """Saves transformers' ``model_class`` for ``config`` in ``out`` with seeded random weights (the same seed,
    the same bytes), in bfloat16 like the real checkpoints (vLLM on CPU downcasts float32 anyway, one warning
    per weight). The config ends at ``eos[0]`` and pads with ``pad``; generation stops at any of ``eos``.
    With ``favour`` (the model's tokenizer) greedy text stays printable (:func:`favour_printable`)."""
    import torch
    import transformers

    config.eos_token_id = eos[0]
    config.pad_token_id = pad
    # Seeded CPU generator: the same seed gives bit-identical weights.
    torch.manual_seed(seed)
    model = getattr(transformers, model_class)(config).eval()
    if favour is not None:
        favour_printable(model, favour)
    model = model.to(torch.bfloat16)
    model.generation_config = transformers.GenerationConfig(
        **({} if bos is None else {"bos_token_id": bos}), eos_token_id=eos, pad_token_id=pad)
    model.save_pretrained(out, safe_serialization=True)


def favour_printable(model: Any, tokenizer: Any) -> None:
    """Shrink the output-head rows of every special token and every token that is not printable ASCII.

    With random weights greedy decoding would otherwise emit stray UTF-8
    fragments and, now and then, <|im_end|>. Damped rows keep greedy text
    readable and make generations run to ``max_tokens`` (finish reason
    "length") unless a stop string or stop token is given.
    """
    import torch

    specials = set(tokenizer.get_added_vocab().values())
    damped = [i for i in range(VOCAB_SIZE)
              if i in specials or not all(32 <= b < 127 for b in tokenizer.decode([i]).encode("utf-8", "replace"))]
    with torch.no_grad():
        model.get_output_embeddings().weight[damped] *= 0.05


def rename_weights(out: Path, old: str, new: str) -> None:
    """Rewrite weight names starting with ``old`` to start with ``new`` in ``out``'s safetensors."""
    from safetensors.torch import load_file, save_file

    path = out / "model.safetensors"
    weights = load_file(path)
    save_file({(new + k[len(old):]) if k.startswith(old) else k: v for k, v in weights.items()}, path,
              metadata={"format": "pt"})


def _processor(arch: _Arch, tokenizer: Any) -> Any:
    import transformers

    factor = 2 * arch.patch_size
    size = {"shortest_edge": factor * factor * 4, "longest_edge": factor * factor * 64}
    video_size = {
        "shortest_edge": factor * factor * 4,
        "longest_edge": factor * factor * arch.video_max_units,
    }
    common = {"patch_size": arch.patch_size, "merge_size": 2, "temporal_patch_size": 2}
    image_processor = transformers.Qwen2VLImageProcessor(size=size, **common)
    video_processor = getattr(transformers, arch.video_processor_class)(
        size=video_size, cap_pixels_per_frame=False, **common
    )
    return getattr(transformers, f"{arch.prefix}Processor")(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def write_real_processor(out: Path, tokenizer: Any, chat_template: str, files: Mapping[str, Any]) -> None:
    """The real checkpoint's layout: tokenizer files, the chat template, its processor JSON ``files`` (name ->
    document; no processor_config.json, so transformers reads each processor from its own file)."""
    tokenizer.save_pretrained(out)
    (out / "chat_template.jinja").write_text(chat_template)
    for file_name, doc in files.items():
        (out / file_name).write_text(json.dumps(doc, indent=2) + "\n")


def build_tokenizer() -> Any:
    """Byte-level BPE: 256 byte symbols, deterministic merges up to the vocab, Qwen specials on top."""
    return byte_level_tokenizer(VOCAB_SIZE, SPECIAL_TOKENS, MAX_POSITION_EMBEDDINGS, CHAT_TEMPLATE)


def byte_level_tokenizer(vocab_size: int, special_tokens: Sequence[str], max_positions: int, chat_template: str,
                         extra_special_tokens: dict[str, str] | None = None, *, eos: str = "<|im_end|>",
                         pad: str = "<|endoftext|>") -> Any:
    """The tiny models' tokenizer: byte-level BPE over the 256 bytes, deterministic merges up to
    ``vocab_size`` minus the specials, ``special_tokens`` on top (by default Qwen's eos/pad spelling)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_chars = _bytes_to_unicode()
    vocab = {byte_chars[b]: b for b in range(256)}
    # Fill the ids between the bytes and the specials with merges, so every id the
    # random model can emit decodes to text (an unknown id would break detokenizing).
    letters = "etaoinshrdlucmfwypvbgkqjxz"
    merges: list[tuple[str, str]] = []
    for first in " " + letters:
        for second in letters:
            if len(vocab) == vocab_size - len(special_tokens):
                break
            pair = (byte_chars[ord(first)], second)
            merges.append(pair)
            vocab[pair[0] + pair[1]] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(tok, special=True, normalized=False) for tok in special_tokens])
    if backend.get_vocab_size() != vocab_size:
        raise RuntimeError(f"tokenizer has {backend.get_vocab_size()} ids, expected {vocab_size}")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=eos, pad_token=pad, unk_token=None, bos_token=None,
        model_max_length=max_positions, clean_up_tokenization_spaces=False, split_special_tokens=False,
        chat_template=chat_template, **({"extra_special_tokens": extra_special_tokens} if extra_special_tokens else {}),
    )


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table that byte-level BPE vocabularies use."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    table: dict[int, str] = {}
    extra = 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table
