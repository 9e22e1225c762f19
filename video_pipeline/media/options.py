"""Per-request video options and server-side decode limits, validated once.

``VideoOptions`` is what a client may set for one video (the ``video_options``
JSON tensor, :class:`video_pipeline.contract.VideoOptionsDoc`), checked and with the
media models' defaults filled in; ``DecodeLimits`` is what the operator sets for the server
(config.pbtxt parameters). Unknown keys and bad values raise
:class:`~video_pipeline.errors.InvalidInput` naming the key.

Sampling semantics (documented in the README, "video_options"):

- neither ``num_frames`` nor ``fps``: ``fps = DEFAULT_FPS`` (2.0), capped by ``max_frames`` (768);
- ``num_frames`` only: exactly that many frames (fewer only if the window has fewer), spread
  uniformly from the first to the last frame of [start, end);
- ``fps`` only: one frame every 1/fps seconds from the window's first frame, capped by
  ``max_frames`` (re-spread uniformly when capped);
- both: fps wins the spacing, ``num_frames`` caps the count (``frame_cap`` = the smaller of
  ``num_frames`` and ``max_frames``), so the answer has whichever gives fewer frames, as vLLM's
  loader does. Nothing is ignored: the decoder reports the rule that applied in its
  ``sampling`` metadata (:func:`video_pipeline.media.sampling.sampling_plan`).
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import asdict, dataclass, fields
from typing import Any

from video_pipeline.contract import refuse_unknown
from video_pipeline.errors import InvalidInput, MediaTooLarge

DEFAULT_FPS = 2.0
DEFAULT_MAX_FRAMES = 768
SAMPLING_MODES = ("exact", "keyframe")


@dataclass(frozen=True)
class DecodeLimits:
    """Operator-set budgets that protect the server (decompression bombs, hangs)."""

    max_input_bytes: int = 2 * 1024**3
    max_width: int = 8192
    max_height: int = 8192
    max_frame_pixels: int = 8192 * 4320
    max_duration_s: float = 4 * 3600.0
    max_total_frames: int = 2_000_000
    max_sampled_frames: int = 2048
    max_output_bytes: int = 4 * 1024**3
    max_streams: int = 64
    decode_timeout_s: float = 120.0
    # FFmpeg decode threads per decode; 0 = let FFmpeg pick. The launcher sets it from the cores
    # (video_pipeline.launch.decoder_scale: max(1, cores // instances)).
    threads: int = 0
    # Decode slots on this machine (video_pipeline.media.cores): a decode splits its GOPs over the slots no
    # other decode holds. 1: never split. The launcher sets it from the cores (cores // threads).
    workers: int = 1

    def __post_init__(self) -> None:
        # A zero or negative budget would refuse every request with a misleading "too large"
        # error; refuse the configuration instead, at load, where the operator sees it.
        for f in fields(self):
            v = getattr(self, f.name)
            zero_ok = f.name in ("decode_timeout_s", "threads")  # 0: no timeout / FFmpeg picks
            is_number = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
            if not is_number or v < 0 or (v == 0 and not zero_ok):
                need = "non-negative" if zero_ok else "positive"
                raise InvalidInput(f"decode limit {f.name} must be a {need} number, got {v!r}")

    @classmethod
    def from_params(cls, params: dict[str, str]) -> DecodeLimits:
        """Builds limits from Triton ``parameters`` (strings); unknown keys are ignored by the caller."""
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in params and params[f.name] != "":
                kwargs[f.name] = _coerce(f.name, params[f.name], float if f.type == "float" else int)
        return cls(**kwargs)


@dataclass(frozen=True)
class VideoOptions:
    """How to sample and size one video. All times in seconds."""

    num_frames: int | None = None
    fps: float | None = None
    max_frames: int = DEFAULT_MAX_FRAMES
    start: float | None = None
    end: float | None = None
    mode: str = "exact"
    keyframe_tolerance: float = 1.0
    # The pixel budget as the served model's processor reads it (per frame, or for all frames
    # together: video_pipeline.media.model_media); None: the model's own bound.
    min_pixels: int | None = None
    max_pixels: int | None = None
    # Must equal the served model's patch size x merge when given (kept for clients that send it).
    patch_factor: int | None = None
    resize: bool = True  # False: keep native size (the preprocessor still sizes for the engine)

    def __post_init__(self) -> None:
        if self.num_frames is not None and self.num_frames < 1:
            raise InvalidInput(f"num_frames must be >= 1, got {self.num_frames}")
        if self.fps is not None and not (self.fps > 0 and math.isfinite(self.fps)):
            raise InvalidInput(f"fps must be a positive number, got {self.fps}")
        if self.max_frames < 1:
            raise InvalidInput(f"max_frames must be >= 1, got {self.max_frames}")
        for name in ("start", "end"):
            v = getattr(self, name)
            if v is not None and not (v >= 0 and math.isfinite(v)):
                raise InvalidInput(f"{name} must be a non-negative number of seconds, got {v}")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise InvalidInput(f"end ({self.end}) must be greater than start ({self.start})")
        if self.mode not in SAMPLING_MODES:
            raise InvalidInput(f"mode must be one of {list(SAMPLING_MODES)}, got {self.mode!r}")
        if not (self.keyframe_tolerance >= 0 and math.isfinite(self.keyframe_tolerance)):
            raise InvalidInput(f"keyframe_tolerance must be >= 0, got {self.keyframe_tolerance}")
        if self.patch_factor is not None and self.patch_factor < 1:
            raise InvalidInput(f"patch_factor must be >= 1, got {self.patch_factor}")
        if (self.min_pixels is not None and self.min_pixels < 1) or (self.max_pixels is not None and self.max_pixels < 1):
            raise InvalidInput("min_pixels and max_pixels must be >= 1")
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise InvalidInput(f"min_pixels ({self.min_pixels}) exceeds max_pixels ({self.max_pixels})")

    @property
    def frame_cap(self) -> int:
        """The most frames this request may produce."""
        if self.num_frames is not None and self.fps is None:
            return self.num_frames
        if self.num_frames is not None:
            return min(self.num_frames, self.max_frames)
        return self.max_frames

    def check_limits(self, limits: DecodeLimits) -> None:
        """Refuses requests whose own settings exceed the server's budget, before any decoding."""
        if self.frame_cap > limits.max_sampled_frames:
            raise MediaTooLarge(
                f"requested up to {self.frame_cap} frames; the server allows at most "
                f"{limits.max_sampled_frames} sampled frames per video"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> VideoOptions:
        """Validates a client's options; unknown keys and wrong types are errors, not ignored."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise InvalidInput(f"video options must be a JSON object, got {type(data).__name__}")
        known = {f.name: f for f in fields(cls)}
        refuse_unknown(data, known)
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if value is None:
                continue
            ftype = str(known[key].type)
            if "bool" in ftype:
                if not isinstance(value, bool):
                    raise InvalidInput(f"video option {key} must be a boolean, got {value!r}")
                kwargs[key] = value
            elif "str" in ftype:
                if not isinstance(value, str):
                    raise InvalidInput(f"video option {key} must be a string, got {value!r}")
                kwargs[key] = value
            elif "float" in ftype:
                kwargs[key] = _coerce(key, value, float)
            else:
                kwargs[key] = _coerce(key, value, int)
        # A budget given on one side only is fine: the model's bound fills the other side
        # (MediaSettings.clamp_video_budget keeps both inside the model's bounds).
        return cls(**kwargs)

    @classmethod
    def from_json(cls, raw: bytes | str | None) -> VideoOptions:
        if raw is None or raw in (b"", ""):
            return cls()
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"video options are not valid JSON: {exc}") from None
        return cls.from_dict(data)


_MAX_INT = 2**53  # the largest integer a JSON number carries exactly


def _coerce(key: str, value: Any, kind: type) -> Any:
    """int/float from JSON numbers (or numeric strings, for Triton parameters); bools are refused."""
    if isinstance(value, bool):
        raise InvalidInput(f"{key} must be a number, got {value!r}")
    try:
        if kind is int:
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                value = int(value)
            out_int = int(value)
            # JSON integers are unbounded; sizes derived from a 400-digit one overflow float math.
            if abs(out_int) > _MAX_INT:
                raise ValueError
            return out_int
        out = float(value)
        if not math.isfinite(out):
            raise ValueError
        return out
    except (TypeError, ValueError):
        raise InvalidInput(f"{key} must be {'an integer' if kind is int else 'a number'}, got {value!r}") from None
