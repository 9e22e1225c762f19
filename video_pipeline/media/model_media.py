"""The served model's media settings, read once from its folder, and the sizing rules they imply.

video_decoder, video_preprocessor and the shim's budgets all size frames and count
tokens through one :class:`MediaSettings`, made by :func:`load_media_settings` from the
model folder's ``config.json`` (which family), ``processor_config.json`` (transformers 5
keeps both processors in it), ``video_preprocessor_config.json`` and
``preprocessor_config.json`` — read in the order transformers reads them, with the
family's class defaults for keys the folder leaves out. Values set explicitly
(config.pbtxt parameters named like the fields) override and are logged.

A contradictory folder (two files that disagree on a key, or a processor patch size
that is not the vision tower's) is a load error naming the files and keys. So the frames
we send are exactly the size the model's processor would make: it passes them through
untouched, and the token counts of budgets, ``dry_run`` and ``video_plan`` equal the
engine's.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from video_pipeline.errors import InvalidInput
from video_pipeline.media.audio import read_audio_settings
from video_pipeline.media.families import QWEN2_VL, Family, family_of

logger = logging.getLogger(__name__)

# Qwen-VL processors refuse aspect ratios beyond this.
MAX_ASPECT_RATIO = 200
SIZINGS = ("frame", "clip", "fixed", "none")
_CONFIG = "config.json"
_PROCESSOR = "processor_config.json"
_VIDEO = "video_preprocessor_config.json"
_IMAGE = "preprocessor_config.json"


@dataclass(frozen=True)
class MediaSettings:
    """How the served model's processor sizes media and counts its tokens."""

    family: str = QWEN2_VL.name
    sizing: str = "frame"  # "frame" | "clip" | "fixed" | "none" (no video or images) (media.families)
    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    video_min_pixels: int = 128 * 28 * 28  # per frame ("frame") or all frames together ("clip")
    video_max_pixels: int = 768 * 28 * 28
    image_min_pixels: int = 56 * 56
    image_max_pixels: int = 28 * 28 * 1280
    cap_pixels_per_frame: bool = False  # transformers' qwen-vl-utils-style per-frame cap
    max_video_tokens: int = 128000  # the cap's token budget (its meaning is the family's)
    fps: float | None = None  # the processor's default sampling rate (None: it has none; ours applies)
    min_frames: int = 4
    max_frames: int = 768
    frame_height: int = 0  # "fixed": every frame is resized to this size
    frame_width: int = 0
    tokens_per_frame: int = 0  # "fixed": video tokens per (temporal patch of) frame(s)
    video_extra_tokens: int = 0  # placeholder tokens a video adds once (LLaVA-OneVision's image_newline)
    # The feature extractor's sampling rate (video_pipeline.media.audio); None: the model takes no audio.
    audio_sampling_rate: int | None = None
    # Where each value came from (file:key, "default", "config.pbtxt"): shown, not compared.
    sources: dict[str, str] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if self.sizing not in SIZINGS:
            raise InvalidInput(f"media setting sizing must be one of {list(SIZINGS)}, got {self.sizing!r}")
        for name in ("patch_size", "merge_size", "temporal_patch_size", "video_min_pixels", "video_max_pixels",
                     "image_min_pixels", "image_max_pixels", "min_frames", "max_frames"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInput(f"media setting {name} must be a positive integer, got {value!r}"
                                   f"{self._from(name)}")
        for lo, hi in (("video_min_pixels", "video_max_pixels"), ("image_min_pixels", "image_max_pixels"),
                       ("min_frames", "max_frames")):
            if getattr(self, lo) > getattr(self, hi):
                raise InvalidInput(f"media settings contradict: {lo} {getattr(self, lo)}{self._from(lo)} exceeds "
                                   f"{hi} {getattr(self, hi)}{self._from(hi)}")
        if self.fps is not None and not (self.fps > 0 and math.isfinite(self.fps)):
            raise InvalidInput(f"media setting fps must be a positive number, got {self.fps!r}{self._from('fps')}")
        if self.sizing == "fixed" and min(self.frame_height, self.frame_width, self.tokens_per_frame) < 1:
            raise InvalidInput("fixed-size media settings need frame_height, frame_width and tokens_per_frame")
        if self.video_max_pixels < self.factor * self.factor and self.sizing != "fixed":
            raise InvalidInput(f"media setting video_max_pixels {self.video_max_pixels}{self._from('video_max_pixels')}"
                               f" is below one {self.factor}x{self.factor} patch")

    def _from(self, name: str) -> str:
        where = self.sources.get(name)
        return f" ({where})" if where else ""

    @property
    def factor(self) -> int:
        """Both sides of a frame are multiples of this (patch size x spatial merge)."""
        return self.patch_size * self.merge_size

    @property
    def takes_visual(self) -> bool:
        """False for an audio-only model (Qwen2-Audio): it takes no video and no images."""
        return self.sizing != "none"

    def _visual(self) -> None:
        if self.sizing == "none":
            raise InvalidInput(f"the served model ({self.family}) takes no video or images")

    @property
    def takes_pixel_budget(self) -> bool:
        """False for fixed-size families: a request's min/max pixels cannot change their frames."""
        return self.sizing != "fixed"

    # --- video -------------------------------------------------------------------------------

    def clamp_video_budget(self, min_pixels: int | None, max_pixels: int | None) -> tuple[int, int]:
        """A request's (min, max) pixels, defaults filled in and kept inside the model's own bounds
        (outside them the model's processor would resize our frames again)."""
        lo, hi = self.video_min_pixels, self.video_max_pixels
        want_lo = lo if min_pixels is None else min(max(min_pixels, lo), hi)
        want_hi = hi if max_pixels is None else min(max(max_pixels, lo), hi)
        return min(want_lo, want_hi), want_hi

    def video_size(self, num_frames: int, height: int, width: int,
                   min_pixels: int | None = None, max_pixels: int | None = None) -> tuple[int, int]:
        """(height, width) the model's processor gives ``num_frames`` frames of ``height`` x ``width``."""
        self._visual()
        if height < 1 or width < 1:
            raise InvalidInput(f"frame size {width}x{height} is empty")
        if self.sizing == "fixed":
            return self.frame_height, self.frame_width
        lo, hi = self.clamp_video_budget(min_pixels, max_pixels)
        f, tp = self.factor, self.temporal_patch_size
        t = max(1, num_frames)
        if self.sizing == "frame":
            if self.cap_pixels_per_frame:
                # transformers' Qwen2VLVideoProcessor: an even share of 90% of max_video_tokens per frame
                total = int(self.max_video_tokens * f * f * 0.9)
                hi = max(min(hi, total * tp // t), int(lo * 1.05))
            return _fixed_point(lambda h, w: _smart_resize(h, w, f, lo, hi), height, width)
        if self.cap_pixels_per_frame:
            # transformers' Qwen3VLVideoProcessor: max_video_tokens patches per frame at most
            per_frame = max(min(self.max_video_tokens * f * f, hi // t), int(lo * 1.05))
            hi = per_frame * t
        return _fixed_point(lambda h, w: _smart_resize_clip(t, h, w, tp, f, lo, hi), height, width)

    def video_tokens(self, num_frames: int, height: int, width: int) -> int:
        """Prompt tokens of ``num_frames`` frames already sized by :meth:`video_size`."""
        groups = math.ceil(max(0, num_frames) / self.temporal_patch_size)
        if self.sizing == "fixed":
            return groups * self.tokens_per_frame + self.video_extra_tokens
        return groups * (height // self.factor) * (width // self.factor) + self.video_extra_tokens

    # --- images ------------------------------------------------------------------------------

    def image_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) the model's image processor resizes an image to."""
        self._visual()
        if self.sizing == "fixed":
            return self.frame_height, self.frame_width
        f, lo, hi = self.factor, self.image_min_pixels, self.image_max_pixels
        return _fixed_point(lambda h, w: _smart_resize(h, w, f, lo, hi), height, width)

    def image_tokens(self, height: int, width: int) -> int:
        """Prompt tokens of an image of ``height`` x ``width`` (its original size)."""
        if self.sizing == "fixed":
            return self.tokens_per_frame
        h, w = self.image_size(height, width)
        return (h // self.factor) * (w // self.factor)

    # --- show ----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The effective values and where each came from (for /v1/models and the load log)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "sources"}
        out["patch_factor"] = self.factor
        out["sources"] = dict(self.sources)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MediaSettings:
        """The inverse of :meth:`to_dict` (a describe answer crossing the Triton boundary)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def key(self) -> dict[str, Any]:
        """What decides frame sizes: part of every media cache key."""
        out = asdict(self)
        out.pop("sources")
        out.pop("audio_sampling_rate")  # decides no frame; keeps the keys of audio-less models as they were
        return out


def _fixed_point(rule: Any, height: int, width: int) -> tuple[int, int]:
    """The size ``rule`` gives, re-applied until it no longer changes it. The processor runs the same
    rule on the frames we send: for all but very thin frames (where Qwen's smart_resize lands over
    the budget and would shrink its own output again) one application is already a fixed point."""
    h, w = rule(height, width)
    for _ in range(8):
        again = rule(h, w)
        if again == (h, w):
            break
        h, w = again
    return h, w


def _smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """transformers' Qwen2-VL ``smart_resize``: multiples of ``factor``, area in bounds, aspect kept."""
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise InvalidInput(f"frame aspect ratio {max(height, width) / min(height, width):.0f}:1 exceeds "
                           f"{MAX_ASPECT_RATIO}:1")
    h = round(height / factor) * factor
    w = round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return int(h), int(w)


def _smart_resize_clip(num_frames: int, height: int, width: int, temporal: int, factor: int,
                       min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """transformers' Qwen3-VL video ``smart_resize``: the budget counts frames x height x width."""
    if num_frames < temporal:
        raise InvalidInput(f"this model's video processor needs at least {temporal} frames per video, "
                           f"got {num_frames}; ask for more frames (num_frames or fps)")
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise InvalidInput(f"frame aspect ratio {max(height, width) / min(height, width):.0f}:1 exceeds "
                           f"{MAX_ASPECT_RATIO}:1")
    h = round(height / factor) * factor
    w = round(width / factor) * factor
    t = round(num_frames / temporal) * temporal
    if t * h * w > max_pixels:
        beta = math.sqrt(num_frames * height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif t * h * w < min_pixels:
        beta = math.sqrt(min_pixels / (num_frames * height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return int(h), int(w)


# --- reading a model folder ----------------------------------------------------------------------


def _read(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / name
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise InvalidInput(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{path} must hold a JSON object")
    return data


def _merged(folder: Path, docs: list[tuple[str, dict[str, Any] | None]]) -> tuple[dict[str, Any], dict[str, str]]:
    """One processor's keys from the files that may hold them; two files that disagree on a key we
    read are a load error naming both."""
    values: dict[str, Any] = {}
    where: dict[str, str] = {}
    for name, doc in docs:
        if doc is None:
            continue
        for key, (value, spelled) in _media_keys(doc, name).items():
            if key in values and values[key] != value:
                raise InvalidInput(f"model folder {folder}: {where[key]} is {values[key]!r} but {name}:{spelled} is "
                                   f"{value!r}; the processor files contradict each other")
            if key not in values:
                values[key], where[key] = value, f"{name}:{spelled}"
    return values, where


_MEDIA_KEYS = ("patch_size", "merge_size", "temporal_patch_size", "min_frames", "max_frames", "fps",
               "cap_pixels_per_frame", "max_video_tokens")


def _media_keys(doc: dict[str, Any], name: str) -> dict[str, tuple[Any, str]]:
    """The keys that decide sizes (value, key as spelled in the file), the pixel budget in one
    spelling: transformers' ``size.shortest_edge``/``longest_edge`` or the older ``min/max_pixels``."""
    out = {k: (doc[k], k) for k in _MEDIA_KEYS if k in doc}
    size = doc.get("size")
    size = size if isinstance(size, dict) else {}
    for edge, legacy in (("shortest_edge", "min_pixels"), ("longest_edge", "max_pixels")):
        a, b = size.get(edge), doc.get(legacy)
        if a is not None and b is not None and a != b:
            raise InvalidInput(f"{name}: size.{edge} is {a!r} but {legacy} is {b!r} in the same processor config")
        if a is not None:
            out[edge] = (a, f"size.{edge}")
        elif b is not None:
            out[edge] = (b, legacy)
    for key in ("height", "width"):
        if size.get(key) is not None:
            out[f"size_{key}"] = (size[key], f"size.{key}")
    return out


@dataclass(frozen=True)
class ModelFolder:
    """What a model folder says about its media, file by file (see :func:`load_media_settings`)."""

    path: Path
    config: dict[str, Any]
    video: dict[str, Any]
    video_where: dict[str, str]
    image: dict[str, Any]
    image_where: dict[str, str]
    video_class: str | None
    image_class: str | None


def read_model_folder(folder: Path) -> ModelFolder:
    """The processor settings of a model folder, resolved as transformers resolves them."""
    folder = Path(folder)
    config = _read(folder, _CONFIG)
    if config is None:
        raise InvalidInput(f"{folder / _CONFIG} is missing: the served model's folder needs it to tell its family")
    nested = _read(folder, _PROCESSOR) or {}
    nested_video = nested.get("video_processor") if isinstance(nested.get("video_processor"), dict) else None
    nested_image = nested.get("image_processor") if isinstance(nested.get("image_processor"), dict) else None
    video_doc, image_doc = _read(folder, _VIDEO), _read(folder, _IMAGE)
    # transformers reads a video processor from processor_config.json, else its own file, else
    # (older folders such as Qwen2.5-VL's) preprocessor_config.json.
    video_docs = [(f"{_PROCESSOR}:video_processor", nested_video), (_VIDEO, video_doc)]
    if nested_video is None and video_doc is None:
        video_docs.append((_IMAGE, image_doc))
    video, video_where = _merged(folder, video_docs)
    image, image_where = _merged(folder, [(f"{_PROCESSOR}:image_processor", nested_image), (_IMAGE, image_doc)])
    video_class = next((d.get("video_processor_type") for _, d in video_docs if d and d.get("video_processor_type")),
                       None)
    image_class = next((d.get("image_processor_type") for d in (nested_image, image_doc)
                        if d and d.get("image_processor_type")), None)
    return ModelFolder(folder, config, video, video_where, image, image_where, video_class, image_class)


def load_media_settings(folder: Path, overrides: dict[str, str] | None = None) -> MediaSettings:
    """The media settings of the model in ``folder``, ``overrides`` (field name -> value) on top."""
    found = read_model_folder(folder)
    model_type = str(found.config.get("model_type") or "")
    family = family_of(model_type)
    if family is None:
        raise InvalidInput(f"{found.path / _CONFIG}: model_type {model_type!r} is not a family this server knows "
                           f"the media rules of; known: {', '.join(known_model_types())}")
    _check_classes(found, family)
    settings = family.read(found) if family.read else family_settings(found, family)
    _check_vision(found, family, settings)
    audio = read_audio_settings(found.path)
    if audio is not None:
        settings = replace(settings, audio_sampling_rate=audio.sampling_rate,
                           sources={**settings.sources, "audio_sampling_rate": audio.source})
    return apply_overrides(settings, overrides or {})


def known_model_types() -> list[str]:
    from video_pipeline.media.families import FAMILIES

    return sorted(t for fam in FAMILIES for t in fam.model_types)


def _check_classes(found: ModelFolder, family: Family) -> None:
    for kind, cls, allowed in (("video", found.video_class, family.video_processors),
                               ("image", found.image_class, family.image_processors)):
        if cls and allowed and cls not in allowed:
            raise InvalidInput(f"model folder {found.path}: {kind}_processor_type {cls!r} is not what "
                               f"{family.name} uses ({', '.join(allowed)}); its media rules would not apply")


def family_settings(found: ModelFolder, family: Family) -> MediaSettings:
    """The Qwen-style reading: the processor JSON's keys, else the family's class defaults."""
    sources: dict[str, str] = {}

    def pick(doc: dict[str, Any], where: dict[str, str], defaults: dict[str, Any], key: str, name: str) -> Any:
        if key in doc:
            sources[name] = where[key]
            return doc[key]
        flat = dict(defaults)
        flat.update({"shortest_edge": defaults.get("size", {}).get("shortest_edge"),
                     "longest_edge": defaults.get("size", {}).get("longest_edge")})
        sources[name] = f"{family.name} default"
        return flat.get(key)

    v, vw, d = found.video, found.video_where, family.defaults
    i, iw, idf = found.image, found.image_where, family.image_defaults
    values = {
        "patch_size": pick(v, vw, d, "patch_size", "patch_size"),
        "merge_size": pick(v, vw, d, "merge_size", "merge_size"),
        "temporal_patch_size": pick(v, vw, d, "temporal_patch_size", "temporal_patch_size"),
        "video_min_pixels": pick(v, vw, d, "shortest_edge", "video_min_pixels"),
        "video_max_pixels": pick(v, vw, d, "longest_edge", "video_max_pixels"),
        "image_min_pixels": pick(i, iw, idf, "shortest_edge", "image_min_pixels"),
        "image_max_pixels": pick(i, iw, idf, "longest_edge", "image_max_pixels"),
        "cap_pixels_per_frame": bool(pick(v, vw, d, "cap_pixels_per_frame", "cap_pixels_per_frame") or False),
        "max_video_tokens": pick(v, vw, d, "max_video_tokens", "max_video_tokens"),
        "fps": pick(v, vw, d, "fps", "fps"),
        "min_frames": pick(v, vw, d, "min_frames", "min_frames"),
        "max_frames": pick(v, vw, d, "max_frames", "max_frames"),
    }
    image_patch = pick(i, iw, idf, "patch_size", "image_patch_size")
    image_merge = pick(i, iw, idf, "merge_size", "image_merge_size")
    sources.pop("image_patch_size")
    sources.pop("image_merge_size")
    if (image_patch, image_merge) != (values["patch_size"], values["merge_size"]):
        raise InvalidInput(f"model folder {found.path}: the image processor's patch_size x merge_size "
                           f"{image_patch}x{image_merge} differs from the video processor's "
                           f"{values['patch_size']}x{values['merge_size']}")
    if values["fps"] is not None:
        values["fps"] = float(values["fps"])
    return MediaSettings(family=family.name, sizing=family.sizing, sources=sources, **values)


def _check_vision(found: ModelFolder, family: Family, settings: MediaSettings) -> None:
    """The processor must cut patches the size the vision tower was built for."""
    vision = found.config.get("vision_config")
    if not isinstance(vision, dict):
        return
    for config_key, name in family.vision_keys.items():
        if config_key in vision and vision[config_key] != getattr(settings, name):
            raise InvalidInput(f"model folder {found.path}: {_CONFIG}:vision_config.{config_key} is "
                               f"{vision[config_key]!r} but the processor's {name} is {getattr(settings, name)!r} "
                               f"({settings.sources.get(name, 'default')})")


def apply_overrides(settings: MediaSettings, overrides: dict[str, str]) -> MediaSettings:
    """Explicit values (config.pbtxt parameters, strings) over the model folder's; each is logged."""
    if not overrides:
        return settings
    types = {f.name: f.type for f in fields(MediaSettings) if f.name not in ("sources", "family", "sizing")}
    changes: dict[str, Any] = {}
    sources = dict(settings.sources)
    for name, raw in overrides.items():
        if name not in types:
            raise InvalidInput(f"unknown media setting {name!r}; known: {sorted(types)}")
        if raw is None or raw == "":
            continue
        kind = str(types[name])
        try:
            if "bool" in kind:
                if str(raw).lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                value: Any = str(raw).lower() in ("true", "1")
            elif "float" in kind:
                value = float(raw)
            else:
                value = int(raw)
        except ValueError:
            raise InvalidInput(f"media setting {name} must be a {kind.split()[0]}, got {raw!r}") from None
        old = getattr(settings, name)
        logger.info("media setting %s = %r from config.pbtxt (the model folder says %r, %s)", name, value, old,
                    settings.sources.get(name, "default"))
        changes[name] = value
        sources[name] = "config.pbtxt"
    return replace(settings, sources=sources, **changes)


# --- where the served model is -------------------------------------------------------------------


def served_model_folder(path: Path) -> Path:
    """The model folder that ``path`` names: a folder, or an llm ``model.json`` whose ``model`` is a
    local folder (relative to the file) or a Hugging Face id (its cached snapshot, downloading the
    small config files when the hub is reachable)."""
    path = Path(path)
    if path.is_dir():
        return path
    if not path.is_file():
        raise InvalidInput(f"served_model {path} is neither a model folder nor an llm model.json")
    try:
        args = json.loads(path.read_text())
    except ValueError as exc:
        raise InvalidInput(f"{path} is not valid JSON: {exc}") from None
    model = args.get("model") if isinstance(args, dict) else None
    if not isinstance(model, str) or not model:
        raise InvalidInput(f"{path} names no \"model\"")
    local = (path.parent / model) if not Path(model).is_absolute() else Path(model)
    if local.is_dir():
        return local.resolve()
    return _hub_folder(model, args.get("revision"), path)


def _hub_folder(model: str, revision: Any, named_in: Path) -> Path:
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError
    except ImportError:
        raise InvalidInput(f"{named_in}: model {model!r} is not a local folder and huggingface_hub is not "
                           "installed to fetch its config") from None
    folder = None
    for name in (_CONFIG, _PROCESSOR, _VIDEO, _IMAGE):
        try:
            got = hf_hub_download(model, name, revision=revision if isinstance(revision, str) else None)
            folder = Path(got).parent
        except EntryNotFoundError:
            continue
        except Exception as exc:  # noqa: BLE001 - offline, unknown repo, no access: all say the same to an operator
            if name == _CONFIG:
                raise InvalidInput(f"{named_in}: cannot read {name} of model {model!r} ({type(exc).__name__}: "
                                   f"{exc}); set served_model to a local model folder") from None
    if folder is None:
        raise InvalidInput(f"{named_in}: model {model!r} has no {_CONFIG}")
    return folder


def engine_limits(model_json: Path | None) -> dict[str, Any]:
    """What the llm's model.json says that the shim's budgets must respect: ``max_model_len``,
    ``limit_mm_per_prompt`` and ``enable_mm_embeds`` (each absent when not set)."""
    if model_json is None or not Path(model_json).is_file():
        return {}
    try:
        args = json.loads(Path(model_json).read_text())
    except ValueError:
        return {}
    out: dict[str, Any] = {}
    if isinstance(args, dict):
        if isinstance(args.get("max_model_len"), int) and args["max_model_len"] > 0:
            out["max_model_len"] = args["max_model_len"]
        limits = args.get("limit_mm_per_prompt")
        if isinstance(limits, dict):
            out["limit_mm_per_prompt"] = {k: int(v) if isinstance(v, int) else v for k, v in limits.items()}
        if args.get("enable_mm_embeds") is True:
            out["enable_mm_embeds"] = True
    return out
