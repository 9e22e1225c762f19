"""What a video request may ask of a model, and the one validation both sides run.

The ``video_generator`` model describes itself as :class:`Capabilities` (which modes,
which request fields its pipeline takes, the size and frame-count rules, limits and
defaults). :func:`parse_request` turns a request's fields into :class:`GenerationParams`
against them. The OpenAI shim runs it before queueing a job, so a bad request is a 400
at once rather than a failed job later; the model runs it again for every request, so
Triton clients get the same answers. Pure Python: no torch, no HTTP.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from video_pipeline.errors import InvalidInput

#: Request fields beyond the prompt, in the names vLLM-Omni's /v1/videos uses.
FIELDS = (
    "negative_prompt", "size", "width", "height", "num_frames", "seconds", "fps", "num_inference_steps",
    "guidance_scale", "guidance_scale_2", "boundary_ratio", "flow_shift", "true_cfg_scale", "seed", "extra_params",
)
#: Fields every model takes: they are about the request or the encoding, not the pipeline.
ALWAYS = frozenset({"size", "width", "height", "num_frames", "seconds", "fps", "seed", "extra_params"})
#: Pipeline call arguments the server sets itself; extra_params may not name them.
RESERVED = frozenset({
    "prompt", "image", "height", "width", "num_frames", "num_inference_steps", "guidance_scale",
    "guidance_scale_2", "true_cfg_scale", "negative_prompt", "generator", "output_type", "return_dict",
    "callback_on_step_end", "callback_on_step_end_tensor_inputs", "callback", "callback_steps",
    "latents", "prompt_embeds", "negative_prompt_embeds", "image_embeds", "num_videos_per_prompt",
})
MAX_SEED = 2**63 - 1
MAX_FPS = 240
MAX_PROMPT_CHARS = 20000

_SIZE = re.compile(r"^\s*(\d{1,6})\s*[xX]\s*(\d{1,6})\s*$")


class InvalidParameter(InvalidInput):
    """A request field with a bad value; ``param`` names it (the shim's error object carries it)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


@dataclass(frozen=True)
class Capabilities:
    """One model's answer to "what may I ask you": JSON both ways (the model's ``describe``)."""

    model: str
    text_to_video: bool
    image_to_video: bool
    #: request fields (of :data:`FIELDS`) this model honours
    supported: tuple[str, ...]
    #: pipeline call arguments extra_params may set
    call_parameters: tuple[str, ...]
    size_multiple: int
    #: num_frames must be frame_step * k + 1
    frame_step: int
    min_size: int
    max_width: int
    max_height: int
    max_frames: int
    max_inference_steps: int
    default_width: int
    default_height: int
    default_num_frames: int
    default_fps: int
    default_inference_steps: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Capabilities:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        for key in ("supported", "call_parameters"):
            values[key] = tuple(values.get(key) or ())
        return cls(**values)


@dataclass(frozen=True)
class GenerationParams:
    """A validated request: every size resolved, only what the client set for the rest."""

    prompt: str
    width: int
    height: int
    num_frames: int
    fps: int
    num_inference_steps: int
    seed: int
    negative_prompt: str | None = None
    guidance_scale: float | None = None
    guidance_scale_2: float | None = None
    boundary_ratio: float | None = None
    flow_shift: float | None = None
    true_cfg_scale: float | None = None
    extra_params: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def seconds(self) -> float:
        return self.num_frames / self.fps

    def to_json(self) -> dict[str, Any]:
        """The request fields that reproduce these parameters (prompt excluded)."""
        out = {k: v for k, v in asdict(self).items() if k != "prompt" and v is not None}
        if not out.get("extra_params"):
            out.pop("extra_params", None)
        return out


def format_seconds(seconds: float) -> str:
    """A clip length as OpenAI writes it ("4"), with as many decimals as it needs ("4.0625")."""
    return f"{round(seconds, 4):g}"


def parse_size(value: Any) -> tuple[int, int]:
    """``"WIDTHxHEIGHT"`` -> (width, height)."""
    m = _SIZE.match(value) if isinstance(value, str) else None
    if m is None:
        raise InvalidParameter("size", f"must look like WIDTHxHEIGHT, e.g. 832x480 (got {str(value)[:40]!r})")
    return int(m[1]), int(m[2])


def frames_for_seconds(seconds: float, fps: int, frame_step: int) -> int:
    """The smallest valid frame count (``frame_step * k + 1``) that lasts at least ``seconds``."""
    wanted = max(1, math.ceil(seconds * fps - 1e-9))
    return frame_step * max(0, math.ceil((wanted - 1) / frame_step)) + 1


def parse_request(prompt: Any, raw: dict[str, Any], caps: Capabilities, *, has_image: bool) -> GenerationParams:
    """``raw`` (request fields, None meaning absent) checked against ``caps``.

    Raises :class:`InvalidParameter` naming the first field that is wrong, unknown or
    not supported by this model; fields a model does not take are refused, never ignored.
    """
    raw = {k: v for k, v in raw.items() if v is not None}
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise InvalidParameter(unknown[0], f"unknown parameter(s) {', '.join(unknown)}")
    unsupported = [k for k in FIELDS if k in raw and k not in caps.supported and k not in ALWAYS]
    if unsupported:
        raise InvalidParameter(unsupported[0], f"not supported by model {caps.model}: {', '.join(unsupported)}")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidParameter("prompt", "must be a non-empty string")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidParameter("prompt", f"is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
    if has_image and not caps.image_to_video:
        raise InvalidParameter("input_reference", f"model {caps.model} generates from text only; "
                                                  "it takes no reference image")
    if not has_image and not caps.text_to_video:
        raise InvalidParameter("input_reference", f"model {caps.model} generates from an image: give "
                                                  "input_reference or image_reference")

    width, height = _dimensions(raw, caps)
    fps = _int(raw, "fps", 1, MAX_FPS, caps.default_fps)
    num_frames = _num_frames(raw, caps, fps)
    steps = _int(raw, "num_inference_steps", 1, caps.max_inference_steps, caps.default_inference_steps)
    seed = _int(raw, "seed", 0, MAX_SEED, None)
    return GenerationParams(
        prompt=prompt,
        width=width,
        height=height,
        num_frames=num_frames,
        fps=fps,
        num_inference_steps=steps,
        seed=random.SystemRandom().randrange(2**32) if seed is None else seed,
        negative_prompt=_str(raw, "negative_prompt"),
        guidance_scale=_float(raw, "guidance_scale", 0.0, 100.0),
        guidance_scale_2=_float(raw, "guidance_scale_2", 0.0, 100.0),
        boundary_ratio=_float(raw, "boundary_ratio", 0.0, 1.0),
        flow_shift=_float(raw, "flow_shift", 0.0, 100.0, exclusive_min=True),
        true_cfg_scale=_float(raw, "true_cfg_scale", 0.0, 100.0),
        extra_params=_extra(raw.get("extra_params"), caps),
    )


def _dimensions(raw: dict[str, Any], caps: Capabilities) -> tuple[int, int]:
    width = _int(raw, "width", 1, None, None)
    height = _int(raw, "height", 1, None, None)
    if "size" in raw:
        w, h = parse_size(raw["size"])
        if (width is not None and width != w) or (height is not None and height != h):
            raise InvalidParameter("size", f"{raw['size']} disagrees with width/height ({width}x{height})")
        width, height = w, h
    width = caps.default_width if width is None else width
    height = caps.default_height if height is None else height
    for name, value, limit in (("width", width, caps.max_width), ("height", height, caps.max_height)):
        param = "size" if "size" in raw else name
        if value < caps.min_size or value > limit:
            raise InvalidParameter(param, f"{name} must be from {caps.min_size} to {limit} (got {value})")
        if value % caps.size_multiple:
            raise InvalidParameter(param, f"{name} must be a multiple of {caps.size_multiple} for model "
                                          f"{caps.model} (got {value})")
    return width, height


def _num_frames(raw: dict[str, Any], caps: Capabilities, fps: int) -> int:
    rule = f"{caps.frame_step}k+1 (1, {caps.frame_step + 1}, {2 * caps.frame_step + 1}, ...)"
    if "num_frames" in raw:
        n = _int(raw, "num_frames", 1, None, None) or 1  # present, so never the default
        if (n - 1) % caps.frame_step:
            raise InvalidParameter("num_frames", f"model {caps.model} makes {rule} frames (got {n})")
        if n > caps.max_frames:
            raise InvalidParameter("num_frames", f"{n} frames; model {caps.model} makes at most {caps.max_frames}")
        return n
    if "seconds" in raw:  # as vLLM-Omni does: num_frames, when given, wins over seconds
        seconds = _seconds(raw["seconds"])
        n = frames_for_seconds(seconds, fps, caps.frame_step)
        if n > caps.max_frames:
            raise InvalidParameter("seconds", f"{format_seconds(seconds)} s at {fps} fps is {n} frames; model "
                                              f"{caps.model} makes at most {caps.max_frames}")
        return n
    return caps.default_num_frames


def _seconds(value: Any) -> float:
    try:
        seconds = float(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else math.nan
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidParameter("seconds", f"must be a positive number of seconds (got {str(value)[:40]!r})")
    return seconds


def _int(raw: dict[str, Any], name: str, low: int, high: int | None, default: int | None) -> int | None:
    if name not in raw:
        return default
    value = raw[name]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameter(name, f"must be an integer (got {str(value)[:40]!r})")
    if value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise InvalidParameter(name, f"must be {bound} (got {value})")
    return value


def _float(raw: dict[str, Any], name: str, low: float, high: float, *, exclusive_min: bool = False) -> float | None:
    if name not in raw:
        return None
    value = raw[name]
    try:
        number = float(value) if not isinstance(value, bool) and isinstance(value, (int, float, str)) else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise InvalidParameter(name, f"must be a number (got {str(value)[:40]!r})")
    if number < low or number > high or (exclusive_min and number == low):
        raise InvalidParameter(name, f"must be {'above' if exclusive_min else 'from'} {low:g} "
                                     f"{'and at most' if exclusive_min else 'to'} {high:g} (got {number:g})")
    return number


def _str(raw: dict[str, Any], name: str) -> str | None:
    if name not in raw:
        return None
    if not isinstance(raw[name], str):
        raise InvalidParameter(name, "must be a string")
    return raw[name]


def _extra(value: Any, caps: Capabilities) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidParameter("extra_params", "must be a JSON object")
    reserved = sorted(k for k in value if k in RESERVED)
    if reserved:
        raise InvalidParameter("extra_params", f"{', '.join(reserved)} cannot be set through extra_params "
                                               "(use the request fields)")
    unknown = sorted(k for k in value if k not in caps.call_parameters)
    if unknown:
        raise InvalidParameter("extra_params", f"model {caps.model}'s pipeline takes no {', '.join(unknown)}; it "
                                               f"takes {', '.join(caps.call_parameters) or 'no extra parameters'}")
    return dict(value)
