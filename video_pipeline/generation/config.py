"""``pipeline.json``: which diffusers pipeline the ``video_generator`` model runs, and how.

The file sits beside ``model.py`` (``model_repository/video_generator/1/pipeline.json``)::

    {
      "served_model_name": "Wan2.2-TI2V-5B",
      "model": "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
      "text_to_video": "WanPipeline",
      "image_to_video": "WanImageToVideoPipeline",
      "from_pretrained": {"dtype": "bfloat16"},
      "device": "cuda",
      "setup": {"vae.enable_tiling": {}},
      "defaults": {"height": 704, "width": 1280, "num_frames": 121, "num_inference_steps": 50,
                   "guidance_scale": 5.0},
      "fps": 24,
      "encoder": {"preset": "slow"},
      "limits": {"max_width": 1280, "max_height": 1280, "max_frames": 121, "max_inference_steps": 100}
    }

``from_pretrained`` and ``defaults`` pass through to diffusers unchanged, so every
option of the pipeline works and a bad one fails the model load with diffusers' own
message. Two conveniences: a relative ``model`` path is resolved against the folder of
pipeline.json (as the llm model's model.json is), and ``dtype`` (or ``torch_dtype``) may be a
string (or a per-component dict of strings). Unknown keys fail the load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from video_pipeline.errors import InvalidInput
from video_pipeline.jsonfile import read_json

CONFIG_FILE = "pipeline.json"

_LIMITS = {"max_width": 1920, "max_height": 1920, "max_frames": 257, "max_inference_steps": 200}
_KEYS = {"served_model_name", "model", "text_to_video", "image_to_video", "from_pretrained", "device", "setup",
         "defaults", "fps", "encoder", "limits", "torch_threads"}


@dataclass(frozen=True)
class PipelineConfig:
    """``pipeline.json``, checked; see the module docstring."""

    model: str
    served_model_name: str
    text_to_video: str | None = None
    image_to_video: str | None = None
    from_pretrained: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    setup: dict[str, dict[str, Any]] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    fps: int = 16
    #: libx264 options over video_pipeline.generation.encode.X264_OPTIONS (crf, preset, threads, ...)
    encoder: dict[str, str] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=lambda: dict(_LIMITS))
    #: torch.set_num_threads for this model's process; 0 leaves torch's choice
    torch_threads: int = 0


def load_config(folder: Path) -> PipelineConfig:
    """Reads and checks ``folder/pipeline.json``; every mistake is an :class:`InvalidInput` naming it."""
    path = folder / CONFIG_FILE
    data = read_json(path, "names the diffusers pipeline to serve")
    return parse_config(data, folder, str(path))


def parse_config(data: Any, folder: Path, where: str = CONFIG_FILE) -> PipelineConfig:
    if not isinstance(data, dict) or not isinstance(data.get("model"), str) or not data["model"]:
        raise InvalidInput(f"{where} must be a JSON object with at least \"model\" (a folder or hub id)")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise InvalidInput(f"{where}: unknown key(s) {unknown}; known: {sorted(_KEYS)}")
    model = data["model"]
    if model.startswith("."):
        model = str((folder / model).resolve())
    t2v, i2v = data.get("text_to_video"), data.get("image_to_video")
    for key, value in (("text_to_video", t2v), ("image_to_video", i2v)):
        if value is not None and (not isinstance(value, str) or not value.isidentifier()):
            raise InvalidInput(f"{where}: {key} must name a diffusers pipeline class, e.g. WanPipeline")
    if not t2v and not i2v:
        raise InvalidInput(f"{where}: give text_to_video, image_to_video or both (diffusers pipeline class names)")
    for key in ("from_pretrained", "setup", "defaults", "encoder", "limits"):
        if not isinstance(data.get(key, {}), dict):
            raise InvalidInput(f"{where}: {key} must be a JSON object")
    setup = data.get("setup", {})
    for method, kwargs in setup.items():
        if not isinstance(kwargs, dict):
            raise InvalidInput(f"{where}: setup.{method} must be an object of keyword arguments")
    limits = {**_LIMITS, **data.get("limits", {})}
    bad = sorted(set(limits) - set(_LIMITS))
    if bad:
        raise InvalidInput(f"{where}: unknown limit(s) {bad}; known: {sorted(_LIMITS)}")
    for key, value in limits.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInput(f"{where}: limits.{key} must be a positive integer")
    encoder = data.get("encoder", {})
    for key, value in encoder.items():
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise InvalidInput(f"{where}: encoder.{key} must be a string or a number (an x264 option)")
    fps = data.get("fps", 16)
    threads = data.get("torch_threads", 0)
    if isinstance(fps, bool) or not isinstance(fps, int) or not 1 <= fps <= 240:
        raise InvalidInput(f"{where}: fps must be an integer from 1 to 240")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise InvalidInput(f"{where}: torch_threads must be a non-negative integer")
    device = data.get("device", "auto")
    if not isinstance(device, str) or not device:
        raise InvalidInput(f"{where}: device must be a string such as auto, cuda, cuda:1 or cpu")
    name = data.get("served_model_name") or Path(data["model"]).name
    return PipelineConfig(
        model=model, served_model_name=str(name), text_to_video=t2v or None, image_to_video=i2v or None,
        from_pretrained=dict(data.get("from_pretrained", {})), device=device, setup=dict(setup),
        defaults=dict(data.get("defaults", {})), fps=fps, encoder={k: str(v) for k, v in encoder.items()},
        limits=limits, torch_threads=threads,
    )
