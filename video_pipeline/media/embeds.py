"""Image embedding inputs (vLLM's ``image_embeds`` content part), decoded safely and checked against the model.

A part's payload is what vLLM's docs send: a base64 string of one tensor (``torch.save`` or a ``.npy``
file), or an object of such strings and numeric JSON arrays for the model's metadata (Qwen-VL's
``image_grid_thw``). The llm model gets one JSON document per part (contract.IMAGE_EMBEDS) and only
when its model.json sets vLLM's ``enable_mm_embeds``.

Decoding never runs code: ``torch.load(weights_only=True)`` with sparse-tensor invariants checked
(and only dense tensors kept), ``numpy.load(allow_pickle=False)``. Every shape, dtype and value is
checked here against the served model (:class:`EmbedsSpec`, read from the engine) before vLLM sees
the tensors, so a wrong width, a grid that does not match the embedding's rows or a NaN is the
part's 400, never an engine step that fails for the whole batch.
"""

from __future__ import annotations

import binascii
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from video_pipeline.b64 import b64decode_strict
from video_pipeline.errors import InvalidInput, MediaTooLarge

EMBEDS_KEY = "image_embeds"
GRID_KEY = "image_grid_thw"
#: Model types whose image embeddings come with a (t, h, w) patch grid, vLLM's dict shape for them.
GRID_FAMILIES = frozenset({"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "glm4v"})
#: Rows (image tokens) one part may carry: Qwen2.5-VL's largest image (16384 x 28 x 28 px) is 16384 tokens.
MAX_EMBED_ROWS = 65536
_NUMPY_MAGIC = b"\x93NUMPY"
_FLOATS = ("float16", "bfloat16", "float32", "float64")


@dataclass(frozen=True)
class EmbedsSpec:
    """What the served model takes as image embeddings: the row width (the text model's input size,
    times the deepstack levels for Qwen3-VL), the spatial merge of its patch grid, and its dtype."""

    model_type: str
    width: int
    merge: int
    dtype: str  # torch dtype name, e.g. "float32", "bfloat16"

    @classmethod
    def from_hf_config(cls, hf_config: Any, width: int, dtype: Any) -> EmbedsSpec | None:
        """The spec of a vLLM engine's model (its hf_config, ``get_inputs_embeds_size()`` and dtype);
        None for a model type this server takes no embeddings for."""
        model_type = str(getattr(hf_config, "model_type", ""))
        if model_type not in GRID_FAMILIES:
            return None
        vision = getattr(hf_config, "vision_config", None)
        merge = int(getattr(vision, "spatial_merge_size", 2) or 2)
        deepstack = getattr(vision, "deepstack_visual_indexes", None) or []
        return cls(model_type, int(width) * (1 + len(deepstack)), merge, str(dtype).removeprefix("torch."))


def parse_payload(doc: bytes | str, index: int) -> dict[str, str | list[Any]]:
    """One part's payload as the llm model's input element carries it (JSON: a base64 string, or an
    object of base64 strings and numeric arrays); an empty object is a part named by its uuid alone."""
    where = f"image_embeds {index}"
    try:
        value = json.loads(doc)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput(f"{where}: not a JSON document") from None
    if isinstance(value, str):
        value = {EMBEDS_KEY: value}
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}: must be a base64 string or an object of them")
    for key, item in value.items():
        if isinstance(item, list):
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in item):
                raise InvalidInput(f"{where}: {key}: a JSON array must hold finite numbers only")
        elif not isinstance(item, str):
            raise InvalidInput(f"{where}: {key}: must be a base64 string or a numeric array")
    return value


def load_tensor(data: str, where: str) -> Any:
    """A base64 ``torch.save`` or ``.npy`` tensor, loaded without running code; dense, on the CPU."""
    import numpy as np
    import torch

    try:
        raw = b64decode_strict(data)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{where}: not valid base64") from None
    if not raw:
        raise InvalidInput(f"{where}: empty")
    try:
        if raw[:6] == _NUMPY_MAGIC:
            array = np.load(io.BytesIO(raw), allow_pickle=False)
            if array.dtype.kind not in "fiub":
                raise InvalidInput(f"{where}: a .npy of {array.dtype} is not a numeric tensor")
            tensor = torch.from_numpy(np.ascontiguousarray(array))
        else:
            with torch.sparse.check_sparse_tensor_invariants():
                tensor = torch.load(io.BytesIO(raw), weights_only=True, map_location="cpu")
    except InvalidInput:
        raise
    except Exception as exc:  # noqa: BLE001 - unpickling refusals, truncated zips, bad headers: all the client's
        raise InvalidInput(f"{where}: not a tensor saved by torch.save or numpy.save "
                           f"({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(tensor, torch.Tensor):
        raise InvalidInput(f"{where}: holds a {type(tensor).__name__}, not one tensor")
    if tensor.layout != torch.strided or tensor.is_quantized:
        raise InvalidInput(f"{where}: must be a dense tensor (got layout {tensor.layout})")
    return tensor


def decode_part(doc: bytes | str, index: int, spec: EmbedsSpec) -> dict[str, Any]:
    """One part's tensors, each checked against ``spec``: ``image_embeds`` (rows, width) floats in the
    model's dtype and ``image_grid_thw`` (1, 3) int64 whose merged patches are the rows."""
    import torch

    where = f"image_embeds {index}"
    payload = parse_payload(doc, index)
    if not payload:
        raise InvalidInput(f"{where}: no embeddings (a uuid alone names embeddings sent before)")
    unknown = sorted(set(payload) - {EMBEDS_KEY, GRID_KEY})
    if unknown:
        raise InvalidInput(f"{where}: unknown key {unknown[0]!r}; {spec.model_type} takes {EMBEDS_KEY} and "
                           f"{GRID_KEY}")
    for key in (EMBEDS_KEY, GRID_KEY):
        if key not in payload:
            raise InvalidInput(f"{where}: {key} is required for {spec.model_type}")
    raw = payload[EMBEDS_KEY]
    if not isinstance(raw, str):
        raise InvalidInput(f"{where}: {EMBEDS_KEY} must be a base64 tensor, not a JSON array")
    embeds = load_tensor(raw, f"{where}: {EMBEDS_KEY}")
    if str(embeds.dtype).removeprefix("torch.") not in _FLOATS:
        raise InvalidInput(f"{where}: {EMBEDS_KEY} must be floating point (float16, bfloat16, float32), "
                           f"got {str(embeds.dtype).removeprefix('torch.')}")
    if embeds.ndim == 3 and embeds.shape[0] == 1:
        embeds = embeds[0]  # vLLM's deprecated batched single item
    if embeds.ndim != 2:
        raise InvalidInput(f"{where}: {EMBEDS_KEY} must be 2-D (tokens, {spec.width}), got shape "
                           f"{tuple(embeds.shape)}")
    rows, width = int(embeds.shape[0]), int(embeds.shape[1])
    if width != spec.width:
        raise InvalidInput(f"{where}: {EMBEDS_KEY} rows are {width} wide; this model takes {spec.width}")
    if rows < 1:
        raise InvalidInput(f"{where}: {EMBEDS_KEY} has no rows")
    if rows > MAX_EMBED_ROWS:
        raise MediaTooLarge(f"{where}: {EMBEDS_KEY} has {rows} rows; the limit is {MAX_EMBED_ROWS}")
    grid = _grid(payload[GRID_KEY], f"{where}: {GRID_KEY}")
    t, h, w = (int(x) for x in grid[0].tolist())
    if h % spec.merge or w % spec.merge:
        raise InvalidInput(f"{where}: {GRID_KEY} ({t}, {h}, {w}): h and w must be multiples of the model's "
                           f"spatial merge {spec.merge}")
    tokens = t * h * w // (spec.merge * spec.merge)
    if tokens != rows:
        raise InvalidInput(f"{where}: {GRID_KEY} ({t}, {h}, {w}) makes {tokens} image tokens, but "
                           f"{EMBEDS_KEY} has {rows} rows")
    embeds = embeds.to(getattr(torch, spec.dtype)).contiguous()
    if not bool(torch.isfinite(embeds).all()):
        raise InvalidInput(f"{where}: {EMBEDS_KEY} holds NaN or infinite values")
    return {EMBEDS_KEY: embeds, GRID_KEY: grid}


def _grid(value: str | list[Any], where: str) -> Any:
    import torch

    tensor = load_tensor(value, where) if isinstance(value, str) else torch.tensor(value)
    if tensor.dtype.is_floating_point or tensor.dtype == torch.bool or tensor.is_complex():
        if not tensor.dtype.is_floating_point or not bool(torch.all(tensor == tensor.round())):
            raise InvalidInput(f"{where}: must hold integers")
    grid = tensor.to(torch.int64).reshape(-1)
    if grid.numel() != 3:
        raise InvalidInput(f"{where}: must be (t, h, w) for one image, got shape {tuple(tensor.shape)}")
    if bool((grid < 1).any()) or bool((grid > 1 << 16).any()):
        raise InvalidInput(f"{where}: each of t, h, w must be from 1 to 65536, got {grid.tolist()}")
    return grid.reshape(1, 3)


def merge(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """vLLM's ``multi_modal_data["image"]`` for several parts: rows concatenated, grids stacked."""
    import torch

    return {EMBEDS_KEY: torch.cat([p[EMBEDS_KEY] for p in parts]),
            GRID_KEY: torch.cat([p[GRID_KEY] for p in parts])}


def nbytes(part: Mapping[str, Any]) -> int:
    """The memory one decoded part holds (for the llm model's cache of parts named by uuid)."""
    return sum(int(t.element_size() * t.numel()) for t in part.values())
