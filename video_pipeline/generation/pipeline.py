"""The diffusers pipeline behind ``video_generator``: loading, describing, one generation at a time.

:class:`DiffusersGenerator` loads the pipeline classes ``pipeline.json`` names (the
image-to-video one shares the text-to-video one's modules),
derives what the model can be asked (:class:`~video_pipeline.generation.params.Capabilities`)
from the pipelines themselves, and runs one request at a time (a pipeline keeps
per-call state). Progress is reported and cancellation honoured through diffusers'
``callback_on_step_end``: raising from it stops within one step and skips the VAE decode.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from video_pipeline.errors import InvalidInput, PipelineError
from video_pipeline.generation.config import PipelineConfig
from video_pipeline.generation.encode import to_uint8
from video_pipeline.generation.params import RESERVED, Capabilities, GenerationParams

logger = logging.getLogger(__name__)

# setup methods that place the weights themselves; the pipeline is then not moved to the device
_OFFLOAD = ("enable_model_cpu_offload", "enable_sequential_cpu_offload", "enable_group_offload")


class GenerationCancelled(PipelineError):
    """The client cancelled (or aborted) the request; the pipeline stopped between steps."""

    triton_code = "CANCELLED"
    http_status = 499


def torch_dtype(value: Any) -> Any:
    """``"bfloat16"`` -> ``torch.bfloat16`` (``"auto"`` and dtypes pass through), per component for a dict."""
    import torch

    if isinstance(value, dict):
        return {k: torch_dtype(v) for k, v in value.items()}
    if not isinstance(value, str) or value == "auto":
        return value
    dtype = getattr(torch, value.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise InvalidInput(f"from_pretrained.dtype: {value!r} is not a torch dtype (e.g. bfloat16)")
    return dtype


class DiffusersGenerator:
    """One diffusers pipeline (plus its image-to-video twin), used by one request at a time."""

    def __init__(self, config: PipelineConfig) -> None:
        import diffusers
        import torch

        self.config = config
        diffusers.utils.logging.disable_progress_bar()  # bars would flood tritonserver's log
        if config.torch_threads:
            torch.set_num_threads(config.torch_threads)
        self.device = config.device
        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        kwargs = dict(config.from_pretrained)
        for key in ("dtype", "torch_dtype"):  # diffusers 0.42 says dtype; older ones torch_dtype
            if key in kwargs:
                kwargs[key] = torch_dtype(kwargs[key])
        first = config.text_to_video or config.image_to_video or ""  # parsing guarantees one of them
        logger.info("loading %s from %s (%s)", first, config.model, kwargs)
        try:
            pipe = _pipeline_class(diffusers, first).from_pretrained(config.model, **kwargs)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise InvalidInput(f"cannot load {config.model} as {first}: {exc}") from None
        if not any(m in config.setup for m in _OFFLOAD):
            pipe.to(self.device)
        for method, method_kwargs in config.setup.items():
            _call_setup(pipe, method, method_kwargs)
        pipes = [pipe]
        if config.text_to_video and config.image_to_video:
            # built on the same modules after setup: device, offload hooks and tiling carry over
            pipes.append(twin(_pipeline_class(diffusers, config.image_to_video), pipe))
        for p in pipes:
            p.set_progress_bar_config(disable=True)
        self.text_to_video = pipes[0] if config.text_to_video else None
        self.image_to_video = pipes[-1] if config.image_to_video else None
        self.capabilities = describe(config, [p for p in (self.text_to_video, self.image_to_video) if p is not None])
        self._lock = threading.Lock()

    def generate(self, params: GenerationParams, image: Any | None, on_step: Callable[[int, int], None],
                 should_stop: Callable[[], bool]) -> np.ndarray:
        """Frames ``[T, H, W, 3]`` uint8 for ``params`` (from ``image`` when given); ``on_step(done, total)``
        after every denoising step; :class:`GenerationCancelled` once ``should_stop()`` says so."""
        import torch

        pipe = self.image_to_video if image is not None else self.text_to_video
        if pipe is None:
            raise InvalidInput("this model cannot generate " + ("from an image" if image is not None else "from text"))

        def step_end(p: Any, i: int, _t: Any, _kw: dict[str, Any]) -> dict[str, Any]:
            on_step(i + 1, int(p.num_timesteps))
            if should_stop():
                raise GenerationCancelled(f"cancelled after step {i + 1} of {p.num_timesteps}")
            return {}

        kwargs = {**self.config.defaults, **_call_args(params)}
        if image is not None:
            kwargs["image"] = image
        with self._lock, _overrides(pipe, params):
            if should_stop():
                raise GenerationCancelled("cancelled before it started")
            try:
                out = pipe(**kwargs, generator=torch.Generator(device="cpu").manual_seed(params.seed),
                           output_type="np", return_dict=True, callback_on_step_end=step_end)
            except GenerationCancelled:
                raise
            except (ValueError, TypeError) as exc:
                raise InvalidInput(f"the pipeline refused the request: {exc}") from None
            except Exception as exc:
                logger.exception("generation failed")
                raise PipelineError(f"generation failed: {type(exc).__name__}: {exc}") from None
        frames = to_uint8(out.frames)
        if frames.shape[:3] != (params.num_frames, params.height, params.width):
            raise PipelineError(f"the pipeline made frames of shape {frames.shape}, not "
                                f"{params.num_frames}x{params.height}x{params.width}")
        return frames


def _pipeline_class(diffusers: Any, name: str) -> Any:
    cls = getattr(diffusers, name, None)
    if not isinstance(cls, type) or not hasattr(cls, "from_pretrained"):
        raise InvalidInput(f"diffusers {diffusers.__version__} has no pipeline class {name!r}")
    return cls


def twin(cls: Any, pipe: Any) -> Any:
    """``cls`` built on ``pipe``'s components and settings (no second copy of the weights).

    Like diffusers' ``from_pipe``, but without its cast of every module to one dtype
    (float32 unless told), which would undo a bfloat16 load and the float32 modules Wan keeps.
    """
    params = inspect.signature(cls.__init__).parameters
    components = pipe.components
    kwargs = {k: v for k, v in components.items() if k in params}
    kwargs.update({k: v for k, v in pipe.config.items()
                   if k in params and k not in components and not k.startswith("_")})
    return cls(**kwargs)


def _call_setup(pipe: Any, method: str, kwargs: dict[str, Any]) -> None:
    """``setup`` entries: ``"enable_model_cpu_offload"`` or ``"vae.enable_tiling"`` with keyword arguments."""
    target = pipe
    *path, name = method.split(".")
    for part in path:
        target = getattr(target, part, None)
    fn = getattr(target, name, None)
    if not callable(fn):
        raise InvalidInput(f"setup: {type(pipe).__name__} has no method {method}")
    fn(**kwargs)


def _call_args(params: GenerationParams) -> dict[str, Any]:
    args: dict[str, Any] = {
        "prompt": params.prompt, "height": params.height, "width": params.width, "num_frames": params.num_frames,
        "num_inference_steps": params.num_inference_steps,
    }
    for key in ("negative_prompt", "guidance_scale", "guidance_scale_2", "true_cfg_scale"):
        value = getattr(params, key)
        if value is not None:
            args[key] = value
    return {**args, **params.extra_params}


class _overrides:  # noqa: N801 - used as a context manager
    """Per-request pipeline settings that are not call arguments (boundary_ratio, flow_shift), undone after."""

    def __init__(self, pipe: Any, params: GenerationParams) -> None:
        self.pipe = pipe
        self.params = params
        self.undo: list[Callable[[], None]] = []

    def __enter__(self) -> None:
        pipe, params = self.pipe, self.params
        if params.boundary_ratio is not None:
            old = pipe.config.boundary_ratio
            pipe.register_to_config(boundary_ratio=params.boundary_ratio)
            self.undo.append(lambda: pipe.register_to_config(boundary_ratio=old))
        if params.flow_shift is not None:
            scheduler = pipe.scheduler
            key = _shift_key(scheduler)
            pipe.scheduler = type(scheduler).from_config(scheduler.config, **{key: params.flow_shift})
            self.undo.append(lambda: setattr(pipe, "scheduler", scheduler))

    def __exit__(self, *exc: object) -> None:
        for undo in reversed(self.undo):
            undo()


def _shift_key(scheduler: Any) -> str | None:
    config = getattr(scheduler, "config", {})
    for key in ("flow_shift", "shift"):
        if key in config:
            return key
    return None


def describe(config: PipelineConfig, pipes: list[Any]) -> Capabilities:
    """What these pipelines can be asked, from their call signatures, components and configs."""
    signatures = [inspect.signature(p.__call__).parameters for p in pipes]
    common = set.intersection(*(set(s) for s in signatures))
    supported = {k for k in ("negative_prompt", "num_inference_steps", "guidance_scale", "true_cfg_scale")
                 if k in common}
    two_stage = all(getattr(p, "transformer_2", None) is not None and "boundary_ratio" in p.config for p in pipes)
    if two_stage:
        supported.add("boundary_ratio")
        if "guidance_scale_2" in common:
            supported.add("guidance_scale_2")
    if all(_shift_key(p.scheduler) for p in pipes):
        supported.add("flow_shift")
    call_parameters = sorted(k for k in common if k not in RESERVED and k != "self"
                             and signatures[0][k].kind not in (inspect.Parameter.VAR_KEYWORD,
                                                               inspect.Parameter.VAR_POSITIONAL))
    first = pipes[0]
    spatial = int(getattr(first, "vae_scale_factor_spatial", None) or getattr(first, "vae_scale_factor", 8))
    patch = getattr(getattr(getattr(first, "transformer", None), "config", None), "patch_size", None) or 1
    patch = int(patch[-1]) if isinstance(patch, (list, tuple)) else int(patch)
    multiple = max(2, spatial * patch)
    frame_step = int(getattr(first, "vae_scale_factor_temporal", 1) or 1)

    def default(name: str) -> int:
        value = config.defaults.get(name, signatures[0][name].default if name in signatures[0] else None)
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"pipeline.json: give defaults.{name} (the pipeline has no integer default)")
        return value

    caps = Capabilities(
        model=config.served_model_name,
        text_to_video=config.text_to_video is not None,
        image_to_video=config.image_to_video is not None,
        supported=tuple(sorted(supported)),
        call_parameters=tuple(call_parameters),
        size_multiple=multiple,
        frame_step=frame_step,
        min_size=multiple,
        max_width=config.limits["max_width"],
        max_height=config.limits["max_height"],
        max_frames=config.limits["max_frames"],
        max_inference_steps=config.limits["max_inference_steps"],
        default_width=default("width"),
        default_height=default("height"),
        default_num_frames=default("num_frames"),
        default_fps=config.fps,
        default_inference_steps=default("num_inference_steps"),
    )
    _check_defaults(caps)
    return caps


def _check_defaults(caps: Capabilities) -> None:
    """The defaults must themselves be a valid request, or every request without sizes would fail."""
    from video_pipeline.generation.params import parse_request

    try:
        parse_request("check", {}, caps, has_image=not caps.text_to_video)
    except InvalidInput as exc:
        raise InvalidInput(f"pipeline.json defaults or limits are not a valid request: {exc}") from None
