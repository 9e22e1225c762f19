"""Build a tiny, random-weight Wan 2.2 TI2V-class pipeline folder offline.

Tests and ``make serve`` need a real diffusers video pipeline that loads without the
Hugging Face hub and generates in well under a second on a CPU. This module makes one
with diffusers' own classes, sized as diffusers' tests size them
(``tests/pipelines/wan/test_wan_22_image_to_video.py``, the TI2V-5B case), with local
stand-ins for what those tests fetch from the hub: a unigram T5 tokenizer built in code
and a tiny ``UMT5EncoderModel``.

The layout is Wan2.2-TI2V-5B's: a 48-channel VAE (16x spatial, 4x temporal), one
transformer with ``expand_timesteps``, the UniPC flow scheduler. So the same folder
serves text-to-video as ``WanPipeline`` and image-to-video as ``WanImageToVideoPipeline``
(the reference image becomes the first latent frame), exactly like the real checkpoint.
The output is noise, but real: the prompt, the image and the seed all reach the pixels.

The same seed always gives the same folder; :func:`build` skips the work when the folder
already holds that build. ``scripts/build_tiny_wan.py`` is the command-line entry point.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Bumped whenever the builder's output changes, so stale folders are rebuilt.
BUILDER_VERSION = 1
#: Written last; its presence (with matching content) marks a complete folder.
STAMP_FILE = "tiny_wan.json"

TEXT_DIM = 32
# A real RoPE table: with diffusers' test value (32) each side is capped at 512 px.
ROPE_MAX_SEQ_LEN = 1024

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_PUNCT = ".,!?'-:;()\"/"


def is_complete(out: str | os.PathLike[str], seed: int = 0) -> bool:
    """True when ``out`` already holds a finished build with ``seed``."""
    try:
        stamp = json.loads((Path(out) / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return False
    return stamp == _stamp(seed)


def build(out: str | os.PathLike[str], seed: int = 0) -> Path:
    """Build the tiny pipeline into ``out`` unless it is already there; return ``out``.

    Assembled in a sibling temporary directory and renamed into place, so concurrent
    builders and interrupted runs never leave a half-built folder that looks complete.
    """
    out = Path(out)
    if is_complete(out, seed):
        logger.debug("tiny Wan (seed %d) already at %s", seed, out)
        return out
    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        make_pipeline(seed).save_pretrained(tmp, safe_serialization=True)
        (tmp / STAMP_FILE).write_text(json.dumps(_stamp(seed), indent=2) + "\n")
        # mkdtemp and safetensors make private files; the server may run as another user.
        for path in [tmp, *tmp.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.debug("built tiny Wan (seed %d) at %s in %.1f s", seed, out, time.perf_counter() - started)
    return out


def _stamp(seed: int) -> dict[str, Any]:
    return {"arch": "wan2.2-ti2v", "seed": seed, "builder_version": BUILDER_VERSION}


def build_tokenizer() -> Any:
    """A unigram T5 tokenizer over letters, digits and punctuation (about 130 pieces)."""
    from transformers import T5Tokenizer

    pieces = ["<pad>", "</s>", "<unk>", "\u2581"]
    pieces += list(_LETTERS) + ["\u2581" + c for c in _LETTERS]
    pieces += list("0123456789") + ["\u2581" + d for d in "0123456789"]
    pieces += list(_PUNCT)
    vocab = [(p, 0.0 if i < 3 else -float(i)) for i, p in enumerate(pieces)]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)


def make_pipeline(seed: int = 0) -> Any:
    """The tiny ``WanPipeline`` in memory, weights drawn from ``seed``."""
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=32, feed_forward_proj="gated-gelu",
        pad_token_id=0, eos_token_id=1, dropout_rate=0.0,
    )).eval()
    torch.manual_seed(seed)
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=48, in_channels=12, out_channels=12, is_residual=True, patch_size=2,
        latents_mean=[0.0] * 48, latents_std=[1.0] * 48, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
        scale_factor_spatial=16, scale_factor_temporal=4, temperal_downsample=[False, True, True],
    )
    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=48, out_channels=48,
        text_dim=TEXT_DIM, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=ROPE_MAX_SEQ_LEN,
    )
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                       transformer=transformer, transformer_2=None, boundary_ratio=None, expand_timesteps=True)
