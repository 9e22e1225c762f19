"""User-facing sampling parameters -> vLLM ``SamplingParams``, validated once.

:func:`parse_sampling` checks names and types (pure, no vLLM);
:func:`to_sampling_params` lets vLLM check ranges and builds the object. Both
raise :class:`~video_pipeline.errors.InvalidInput` with a message for the client.

Values may be JSON numbers/bools or their string spelling (``"0.7"``,
``"true"``): Triton's vLLM-backend clients send strings. ``null`` means "not
given". An unset ``max_tokens`` generates up to the model's context length,
as OpenAI's API does (vLLM's own default is 16).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from video_pipeline.errors import InvalidInput

_INT, _FLOAT, _BOOL, _STOP, _INT_LIST = "int", "float", "bool", "stop", "int_list"

#: Accepted parameter -> kind. Anything else is refused, so typos fail loudly.
SAMPLING_FIELDS: dict[str, str] = {
    "max_tokens": _INT,
    "min_tokens": _INT,
    "n": _INT,
    "temperature": _FLOAT,
    "top_p": _FLOAT,
    "top_k": _INT,
    "min_p": _FLOAT,
    "seed": _INT,
    "presence_penalty": _FLOAT,
    "frequency_penalty": _FLOAT,
    "repetition_penalty": _FLOAT,
    "stop": _STOP,
    "stop_token_ids": _INT_LIST,
    "ignore_eos": _BOOL,
    "skip_special_tokens": _BOOL,
    "include_stop_str_in_output": _BOOL,
}


def parse_sampling(raw: Mapping[str, Any] | str | bytes | None) -> dict[str, Any]:
    """Validated, typed sampling parameters from a mapping or its JSON text; unset keys are left out."""
    if raw is None:
        return {}
    if isinstance(raw, (str, bytes)):
        if not raw.strip():
            return {}
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise InvalidInput(f"sampling parameters are not valid JSON: {exc}") from exc
    if not isinstance(raw, Mapping):
        raise InvalidInput("sampling parameters must be a JSON object")
    unknown = sorted(str(k) for k in raw if k not in SAMPLING_FIELDS)
    if unknown:
        raise InvalidInput(f"unknown sampling parameter(s): {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if value is None:
            continue
        values[name] = _coerce(name, SAMPLING_FIELDS[name], value)
    return values


def to_sampling_params(
    values: Mapping[str, Any], *, defaults: Mapping[str, Any] | None = None, stream: bool = True
) -> Any:
    """vLLM ``SamplingParams`` from parsed ``values`` over the model's ``defaults``.

    ``defaults`` are the model's generation-config defaults (vLLM's
    ``model_config.get_diff_sampling_param()``), as vLLM's OpenAI server applies
    them. ``stream`` picks DELTA output (one chunk per step) or FINAL_ONLY
    (one chunk per choice at the end).
    """
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    merged = {k: v for k, v in (defaults or {}).items() if k in SAMPLING_FIELDS}
    merged.update(values)
    merged.setdefault("max_tokens", None)
    kind = RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY
    try:
        return SamplingParams(**merged, output_kind=kind)
    except (ValueError, TypeError, vllm_client_error()) as exc:
        raise InvalidInput(f"invalid sampling parameters: {exc}") from exc


def vllm_client_error() -> type[Exception]:
    """vLLM's base class of request errors (``ValueError`` on releases before it existed)."""
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:
        return ValueError
    return VLLMClientError


def _coerce(name: str, kind: str, value: Any) -> Any:
    if kind == _INT:
        return _to_int(name, value)
    if kind == _FLOAT:
        return _to_float(name, value)
    if kind == _BOOL:
        return _to_bool(name, value)
    if kind == _INT_LIST:
        if not isinstance(value, list):
            raise InvalidInput(f"{name} must be a list of integers")
        return [_to_int(name, v) for v in value]
    # stop: a string or a list of strings
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise InvalidInput(f"{name} must be a string or a list of strings")


def _to_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise InvalidInput(f"{name} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise InvalidInput(f"{name} must be an integer, got {value!r}")


def _to_float(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise InvalidInput(f"{name} must be a number, got {value!r}")
    if isinstance(value, (int, float)):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            raise InvalidInput(f"{name} must be a number, got {value!r}") from None
    else:
        raise InvalidInput(f"{name} must be a number, got {value!r}")
    if not math.isfinite(result):
        raise InvalidInput(f"{name} must be finite, got {value!r}")
    return result


def _to_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise InvalidInput(f"{name} must be true or false, got {value!r}")
