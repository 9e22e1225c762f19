"""Model families: how each one's processor sizes video frames and images and counts their tokens.

One :class:`Family` per processor design, keyed by the ``model_type`` values of the
model's ``config.json`` that use it. A family names:

- ``sizing``: the rule (see :mod:`video_pipeline.media.model_media`):
  ``"frame"`` — each frame fitted alone into [min, max] pixels (Qwen2-VL, Qwen2.5-VL);
  ``"clip"`` — the pixels of all frames together fitted into [min, max] (Qwen3-VL, whose
  video processor treats ``size.longest_edge`` as a budget for frames x height x width);
  ``"fixed"`` — every frame resized to one size, a fixed number of tokens per frame;
  ``"none"`` — an audio-only model (Qwen2-Audio): no video, no images (its audio settings come
  from the feature extractor, video_pipeline.media.audio);
- ``defaults``: the processor class's own values, used for keys the model folder leaves out
  (transformers does the same), spelled as in the processor's JSON;
- ``video_processor`` / ``image_processor``: the transformers class names the family's
  processor JSON may declare (a different one is a load error: the rules would not apply);
- ``read``: for a family whose JSON layout the Qwen-style reading cannot express (a fixed
  ``size: {height, width}``, InternVL's ``image_seq_length``, GLM-4.1V's frame-pair image
  budget), the function that reads its folder instead.

``video_tokens`` counts placeholder tokens only (LLaVA-OneVision's one ``image_newline`` per
video included: ``196 * T + 1``), not the words InternVL (``Frame{i}: <img>...</img>``, about
6-10 tokens a frame) and GLM-4.1V (``<|begin_of_image|>...<|end_of_image|>{second}``, about 3
a frame pair) write around each frame, so a context estimate is that much short. Not
expressible yet (strict xfails in tests/parity/test_families.py): the tiled images of
LLaVA-OneVision (anyres) and InternVL (``crop_to_patches``, up to 12 tiles + a thumbnail),
whose token counts depend on the image's size (``image_tokens`` counts one tile).

The numbers come from transformers' processor classes (5.x); the parity tests
(tests/parity) check them against the installed transformers and vLLM.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # model_media imports this module; the readers import it lazily
    from video_pipeline.media.model_media import MediaSettings, ModelFolder


@dataclass(frozen=True)
class Family:
    """The media rules one processor design follows."""

    name: str
    sizing: str  # "frame" | "clip" | "fixed"
    model_types: tuple[str, ...]
    defaults: dict[str, Any] = field(default_factory=dict)  # video processor class defaults
    image_defaults: dict[str, Any] = field(default_factory=dict)  # image processor class defaults
    video_processors: tuple[str, ...] = ()
    image_processors: tuple[str, ...] = ()
    # Keys of config.json's vision_config that must agree with the processor's (config key -> processor key).
    vision_keys: dict[str, str] = field(default_factory=dict)
    # A family whose processor JSON the Qwen-style reading cannot express reads its folder itself.
    read: Callable[[ModelFolder], MediaSettings] | None = None


_QWEN_VISION_KEYS = {"patch_size": "patch_size", "spatial_merge_size": "merge_size",
                     "temporal_patch_size": "temporal_patch_size"}

QWEN2_VL = Family(
    name="qwen2_vl",
    sizing="frame",
    model_types=("qwen2_vl",),
    # transformers' Qwen2VLVideoProcessor / Qwen2VLImageProcessor class attributes.
    defaults={"size": {"shortest_edge": 128 * 28 * 28, "longest_edge": 768 * 28 * 28}, "patch_size": 14,
              "merge_size": 2, "temporal_patch_size": 2, "min_frames": 4, "max_frames": 768,
              "cap_pixels_per_frame": False, "max_video_tokens": 128000, "fps": None},
    image_defaults={"size": {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280}, "patch_size": 14,
                    "merge_size": 2, "temporal_patch_size": 2},
    video_processors=("Qwen2VLVideoProcessor",),
    image_processors=("Qwen2VLImageProcessor", "Qwen2VLImageProcessorFast"),
    vision_keys=_QWEN_VISION_KEYS,
)

# Qwen2.5-VL uses Qwen2-VL's processors unchanged (its vision tower differs, not its media math).
QWEN2_5_VL = Family(
    name="qwen2_5_vl",
    sizing="frame",
    model_types=("qwen2_5_vl",),
    defaults=QWEN2_VL.defaults,
    image_defaults=QWEN2_VL.image_defaults,
    video_processors=QWEN2_VL.video_processors,
    image_processors=QWEN2_VL.image_processors,
    vision_keys=_QWEN_VISION_KEYS,
)

QWEN3_VL = Family(
    name="qwen3_vl",
    sizing="clip",
    model_types=("qwen3_vl", "qwen3_vl_moe"),
    # transformers' Qwen3VLVideoProcessor class attributes; its images use Qwen2-VL's processor.
    defaults={"size": {"shortest_edge": 128 * 32 * 32, "longest_edge": 768 * 32 * 32}, "patch_size": 16,
              "merge_size": 2, "temporal_patch_size": 2, "min_frames": 4, "max_frames": 768,
              "cap_pixels_per_frame": False, "max_video_tokens": 768, "fps": 2},
    image_defaults={"size": {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 1280}, "patch_size": 16,
                    "merge_size": 2, "temporal_patch_size": 2},
    video_processors=("Qwen3VLVideoProcessor",),
    image_processors=("Qwen2VLImageProcessor", "Qwen2VLImageProcessorFast"),
    vision_keys=_QWEN_VISION_KEYS,
)


# --- families with their own readers ------------------------------------------------------------


def _invalid(message: str) -> Exception:
    from video_pipeline.errors import InvalidInput

    return InvalidInput(message)


def _processor_doc(found: ModelFolder) -> dict[str, Any]:
    """processor_config.json's own (top-level) keys, such as InternVL's ``image_seq_length``."""
    path = found.path / "processor_config.json"
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else {}


def _raw_video_key(found: ModelFolder, key: str) -> Any:
    """A video processor key our generic reading does not keep (processor_config.json first)."""
    nested = _processor_doc(found).get("video_processor")
    for doc in (nested if isinstance(nested, dict) else None, _json(found, "video_preprocessor_config.json")):
        if doc and key in doc:
            return doc[key]
    return None


def _json(found: ModelFolder, name: str) -> dict[str, Any] | None:
    path = found.path / name
    return json.loads(path.read_text()) if path.is_file() else None


def _square(value: Any, what: str) -> int:
    """An int, or a [h, w] pair with h == w (InternVL's config spells sizes as pairs)."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise _invalid(f"{what} must be square, got {value!r}")
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _invalid(f"{what} must be a positive integer, got {value!r}")
    return value


def _fixed_size(found: ModelFolder, family: Family, vision_size: int) -> tuple[int, int, dict[str, str]]:
    """The video processor's ``size: {height, width}`` (else the class default), checked against the
    vision tower's input size: vLLM pools features on the tower's grid, so other sizes break it."""
    sources: dict[str, str] = {}
    hw = []
    for key in ("height", "width"):
        name = f"size_{key}"
        if name in found.video:
            hw.append(found.video[name])
            sources[f"frame_{key}"] = found.video_where[name]
        else:
            hw.append(family.defaults["size"][key])
            sources[f"frame_{key}"] = f"{family.name} default"
    if hw[0] != vision_size or hw[1] != vision_size:
        raise _invalid(f"model folder {found.path}: the video processor resizes frames to {hw[1]}x{hw[0]} but "
                       f"config.json:vision_config.image_size is {vision_size}")
    return hw[0], hw[1], sources


def read_llava_onevision(found: ModelFolder) -> MediaSettings:
    """LLaVA-OneVision: frames resized to the tower's square input, features pooled 2x2 per frame."""
    from video_pipeline.media.model_media import MediaSettings

    vision = found.config.get("vision_config") or {}
    size = _square(vision.get("image_size", 384), "config.json:vision_config.image_size")
    patch = _square(vision.get("patch_size", 14), "config.json:vision_config.patch_size")
    stride = _square(found.config.get("spatial_pool_stride", 2), "config.json:spatial_pool_stride")
    height, width, sources = _fixed_size(found, LLAVA_ONEVISION, size)
    # vLLM LlavaOnevision _get_num_frame_tokens: ceil(grid / stride) ** 2 (bilinear pooling).
    tokens = math.ceil(size // patch / stride) ** 2
    # vLLM and transformers end each video with one image_newline token (196*T + 1).
    sources.update(tokens_per_frame="config.json:vision_config (image_size, patch_size)",
                   video_extra_tokens="llava_onevision: one image_newline per video",
                   patch_size="config.json:vision_config.patch_size")
    return MediaSettings(family=LLAVA_ONEVISION.name, sizing="fixed", patch_size=patch, merge_size=stride,
                         temporal_patch_size=1, video_min_pixels=height * width, video_max_pixels=height * width,
                         image_min_pixels=height * width, image_max_pixels=height * width, fps=None,
                         min_frames=1, max_frames=768, frame_height=height, frame_width=width,
                         tokens_per_frame=tokens, video_extra_tokens=1, sources=sources)


def read_internvl(found: ModelFolder) -> MediaSettings:
    """InternVL (HF-native): frames resized to the tower's square input, ``image_seq_length`` tokens each."""
    from video_pipeline.media.model_media import MediaSettings

    vision = found.config.get("vision_config") or {}
    size = _square(vision.get("image_size", 448), "config.json:vision_config.image_size")
    patch = _square(vision.get("patch_size", 14), "config.json:vision_config.patch_size")
    ratio = found.config.get("downsample_ratio", 0.5)
    height, width, sources = _fixed_size(found, INTERNVL, size)
    expected = round((size // patch) ** 2 * ratio**2)
    seq = _processor_doc(found).get("image_seq_length")
    if seq is None:
        seq, sources["tokens_per_frame"] = expected, "config.json:vision_config (image_size, patch_size, downsample)"
    else:
        sources["tokens_per_frame"] = "processor_config.json:image_seq_length"
    if seq != expected:
        raise _invalid(f"model folder {found.path}: processor_config.json:image_seq_length is {seq!r} but the vision "
                       f"tower makes {expected} tokens per {size}x{size} frame")
    merge = round(1 / ratio)
    return MediaSettings(family=INTERNVL.name, sizing="fixed", patch_size=patch, merge_size=merge,
                         temporal_patch_size=1, video_min_pixels=height * width, video_max_pixels=height * width,
                         image_min_pixels=height * width, image_max_pixels=height * width, fps=None,
                         min_frames=1, max_frames=768, frame_height=height, frame_width=width,
                         tokens_per_frame=seq, sources=sources)


def read_glm4v(found: ModelFolder) -> MediaSettings:
    """GLM-4.1V: Qwen3-VL's clip sizing for video; its image budget counts one frame pair (2 x h x w)."""
    from video_pipeline.media.model_media import family_settings

    settings = family_settings(found, GLM4V)
    tp = settings.temporal_patch_size
    sources = dict(settings.sources)
    for name in ("image_min_pixels", "image_max_pixels"):
        sources[name] += f" / temporal_patch_size {tp}"
    duration = _raw_video_key(found, "max_duration")
    duration = GLM4V.defaults["max_duration"] if duration is None else duration
    fps = settings.fps or 2.0
    # Glm4vVideoProcessor.sample_frames: fps frames a second, at most max_duration * fps, an odd count
    # padded with its last frame.
    max_frames = int(duration * fps)
    max_frames += max_frames % 2
    sources["max_frames"] = "max_duration x fps"
    return replace(settings, image_min_pixels=max(1, settings.image_min_pixels // tp),
                   image_max_pixels=settings.image_max_pixels // tp, min_frames=tp, max_frames=max_frames,
                   sources=sources)


LLAVA_ONEVISION = Family(
    name="llava_onevision",
    sizing="fixed",
    model_types=("llava_onevision",),
    # transformers' LlavaOnevisionVideoProcessor class attributes (= llava-onevision-qwen2-*-ov-hf).
    defaults={"size": {"height": 384, "width": 384}},
    image_defaults={"size": {"height": 384, "width": 384}},
    video_processors=("LlavaOnevisionVideoProcessor",),
    image_processors=("LlavaOnevisionImageProcessor", "LlavaOnevisionImageProcessorFast",
                      "LlavaOnevisionImageProcessorPil"),
    read=read_llava_onevision,
)

INTERNVL = Family(
    name="internvl",
    sizing="fixed",
    model_types=("internvl",),
    # transformers' InternVLVideoProcessor class default is 384; InternVL3-*-hf folders say 448.
    defaults={"size": {"height": 384, "width": 384}},
    image_defaults={"size": {"height": 384, "width": 384}},
    video_processors=("InternVLVideoProcessor",),
    image_processors=("GotOcr2ImageProcessor", "GotOcr2ImageProcessorFast", "GotOcr2ImageProcessorPil"),
    read=read_internvl,
)

GLM4V = Family(
    name="glm4v",
    sizing="clip",
    model_types=("glm4v",),
    # transformers' Glm4vVideoProcessor / Glm4vImageProcessor class attributes (= GLM-4.1V-9B-Thinking's).
    defaults={"size": {"shortest_edge": 112 * 112, "longest_edge": 28 * 28 * 2 * 30000}, "patch_size": 14,
              "merge_size": 2, "temporal_patch_size": 2, "min_frames": 2, "max_frames": 600,
              "cap_pixels_per_frame": False, "max_video_tokens": 128000, "fps": 2, "max_duration": 300},
    image_defaults={"size": {"shortest_edge": 112 * 112, "longest_edge": 28 * 28 * 15000}, "patch_size": 14,
                    "merge_size": 2, "temporal_patch_size": 2},
    video_processors=("Glm4vVideoProcessor",),
    image_processors=("Glm4vImageProcessor", "Glm4vImageProcessorFast", "Glm4vImageProcessorPil"),
    vision_keys=_QWEN_VISION_KEYS,
    read=read_glm4v,
)

def read_audio_only(found: ModelFolder) -> MediaSettings:
    """An audio-only model's settings: nothing visual to read (the audio rate is read for every family)."""
    from video_pipeline.media.model_media import MediaSettings

    return MediaSettings(family=QWEN2_AUDIO.name, sizing="none")


QWEN2_AUDIO = Family(name="qwen2_audio", sizing="none", model_types=("qwen2_audio",), read=read_audio_only)

#: Qwen2_5OmniProcessor's own ``videos_kwargs`` size, handed to its video processor on every call: it
#: wins over the folder's files (Qwen2.5-Omni-7B's preprocessor_config.json says 3136..12845056, the
#: image processor's budget, which transformers would otherwise take for video too).
_OMNI_VIDEO_SIZE = {"shortest_edge": 128 * 28 * 28, "longest_edge": 768 * 28 * 28}


def read_qwen2_5_omni(found: ModelFolder) -> MediaSettings:
    """Qwen2.5-Omni: Qwen2.5-VL's per-frame sizing, at the processor's own video budget; the vision
    tower's keys are checked under ``thinker_config`` (the audio rate is read for every family)."""
    from video_pipeline.media.model_media import family_settings

    settings = family_settings(found, QWEN2_5_OMNI)
    thinker = found.config.get("thinker_config")
    vision = thinker.get("vision_config") if isinstance(thinker, dict) else None
    for config_key, name in _QWEN_VISION_KEYS.items():
        if isinstance(vision, dict) and config_key in vision and vision[config_key] != getattr(settings, name):
            raise _invalid(f"model folder {found.path}: config.json:thinker_config.vision_config.{config_key} is "
                           f"{vision[config_key]!r} but the processor's {name} is {getattr(settings, name)!r}")
    where = "Qwen2_5OmniProcessor videos_kwargs default (over the folder's files)"
    return replace(settings, video_min_pixels=_OMNI_VIDEO_SIZE["shortest_edge"],
                   video_max_pixels=_OMNI_VIDEO_SIZE["longest_edge"],
                   sources={**settings.sources, "video_min_pixels": where, "video_max_pixels": where})


QWEN2_5_OMNI = Family(
    name="qwen2_5_omni",
    sizing="frame",
    model_types=("qwen2_5_omni", "qwen2_5_omni_thinker"),
    defaults={**QWEN2_VL.defaults, "size": dict(_OMNI_VIDEO_SIZE)},
    image_defaults=QWEN2_VL.image_defaults,
    video_processors=QWEN2_VL.video_processors,
    image_processors=QWEN2_VL.image_processors,
    vision_keys=_QWEN_VISION_KEYS,
    read=read_qwen2_5_omni,
)

FAMILIES: tuple[Family, ...] = (QWEN2_VL, QWEN2_5_VL, QWEN3_VL, LLAVA_ONEVISION, INTERNVL, GLM4V, QWEN2_AUDIO,
                                QWEN2_5_OMNI)


def family_of(model_type: str) -> Family | None:
    """The family whose processors a ``config.json`` ``model_type`` uses (None: not one we know)."""
    for fam in FAMILIES:
        if model_type in fam.model_types:
            return fam
    return None
