"""User-facing sampling parameters -> vLLM ``SamplingParams``, validated once.

:func:`parse_sampling` checks names and types (pure, no vLLM);
:func:`to_sampling_params` lets vLLM check ranges and builds the object. Both
raise :class:`~video_pipeline.errors.InvalidInput` with a message for the client,
naming the parameter as data (``param``) with OpenAI's error ``code`` for it
(``invalid_type``, ``invalid_value``, ``decimal_above_max_value`` ...).

Values may be JSON numbers/bools or their string spelling (``"0.7"``,
``"true"``): Triton's vLLM-backend clients send strings. ``null`` means "not
given". An unset ``max_tokens`` generates up to the model's context length,
as OpenAI's API does (vLLM's own default is 16).

Beyond the plain numbers, vLLM's request features travel under their
``SamplingParams`` names: ``structured_outputs`` (an object with exactly one of
``json``, ``regex``, ``choice``, ``grammar``, ``json_object``, ``structural_tag``
plus vLLM's options, field for field ``StructuredOutputsParams``), ``logprobs``
(top tokens per position; 0: only the sampled token's), ``logit_bias`` (token id
-> bias in [-100, 100]), ``allowed_token_ids`` and ``bad_words``. Errors about
these name them first (``"logit_bias: ..."``) and as data: ``param`` is the key, or
the field of ``structured_outputs`` at fault (``"structured_outputs.regex"``), so a
client's layer can name its own parameter without reading the message.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from video_pipeline.errors import InvalidInput

_INT, _FLOAT, _BOOL, _STOP, _INT_LIST = "int", "float", "bool", "stop", "int_list"
_STR_LIST, _BIAS, _STRUCTURED = "str_list", "bias", "structured"

STRUCTURED_OUTPUTS = "structured_outputs"
#: The constraints of vLLM's StructuredOutputsParams, exactly one per request, and the kind of each.
STRUCTURED_CONSTRAINTS: dict[str, str] = {
    "json": "schema", "regex": "str", "choice": "str_list", "grammar": "str", "json_object": "true",
    "structural_tag": "str",
}
#: Its options (any of them, beside the constraint).
STRUCTURED_OPTIONS: dict[str, str] = {
    "disable_any_whitespace": "bool", "disable_additional_properties": "bool", "whitespace_pattern": "str",
}
#: Sampling keys whose errors (ours and vLLM's) start with the key, ``"<key>: ..."``.
NAMED_KEYS = (STRUCTURED_OUTPUTS, "logprobs", "logit_bias", "allowed_token_ids", "bad_words")
#: vLLM clamps biases to this range; we refuse values outside it, as OpenAI documents it.
MAX_BIAS = 100.0

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
    "logprobs": _INT,
    "logit_bias": _BIAS,
    "allowed_token_ids": _INT_LIST,
    "bad_words": _STR_LIST,
    STRUCTURED_OUTPUTS: _STRUCTURED,
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
        raise InvalidInput(f"unknown sampling parameter(s): {', '.join(unknown)}", param=unknown[0],
                           code="unknown_parameter")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if value is None:
            continue
        try:
            values[name] = _coerce(name, SAMPLING_FIELDS[name], value)
        except InvalidInput as exc:  # named as data: the key, and OpenAI's code (invalid_type for a wrong type)
            exc.param, exc.code = exc.param or name, exc.code or "invalid_value"
            raise
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
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

    merged = {k: v for k, v in (defaults or {}).items() if k in SAMPLING_FIELDS}
    merged.update(values)
    merged.setdefault("max_tokens", None)
    kind = RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY
    structured = merged.pop(STRUCTURED_OUTPUTS, None)
    if structured is not None:
        try:
            merged[STRUCTURED_OUTPUTS] = StructuredOutputsParams(**structured)
        except (ValueError, TypeError, vllm_client_error()) as exc:
            raise InvalidInput(f"{STRUCTURED_OUTPUTS}: {error_text(exc)}", param=STRUCTURED_OUTPUTS,
                               code="invalid_value") from exc
    try:
        return SamplingParams(**merged, output_kind=kind)
    except (ValueError, TypeError, vllm_client_error()) as exc:
        key = getattr(exc, "parameter", None)
        if key in NAMED_KEYS:
            raise InvalidInput(f"{key}: {error_text(exc)}", param=key, code="invalid_value") from exc
        raise refused(exc, merged) from exc


def error_text(exc: BaseException) -> str:
    """vLLM's message without the ``(parameter=..., value=...)`` tail its validation errors add."""
    return str(exc.args[0]) if exc.args and isinstance(exc.args[0], str) else str(exc)


#: OpenAI's documented bounds of its sampling parameters: only to give vLLM's refusals of a value outside
#: them OpenAI's codes (decimal_above_max_value, integer_below_min_value ...); vLLM decides what it takes.
OPENAI_BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "temperature": (0.0, 2.0), "top_p": (0.0, 1.0), "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0), "n": (1, None), "max_tokens": (1, None), "min_tokens": (0, None),
}


def refused(exc: BaseException, values: Mapping[str, Any] | None = None) -> InvalidInput:
    """vLLM's refusal of sampling parameters as an InvalidInput naming the parameter as data (vLLM's own
    ``parameter``, else the sampling key its message starts with, as vLLM's messages do) with OpenAI's code."""
    text = error_text(exc)
    key = getattr(exc, "parameter", None) or text.split(" ", 1)[0]
    if key not in SAMPLING_FIELDS:
        return InvalidInput(f"invalid sampling parameters: {text}")
    value = getattr(exc, "value", None)
    return InvalidInput(f"invalid sampling parameters: {text}", param=key,
                        code=bound_code(key, (values or {}).get(key) if value is None else value))


def bound_code(key: str, value: Any) -> str:
    """OpenAI's code for a refused ``value`` of ``key``: above or below its documented bound, else invalid_value."""
    low, high = OPENAI_BOUNDS.get(key, (None, None))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "invalid_value"
    number = "integer" if SAMPLING_FIELDS.get(key) == _INT else "decimal"
    if high is not None and value > high:
        return f"{number}_above_max_value"
    if low is not None and value < low:
        return f"{number}_below_min_value"
    return "invalid_value"


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
            raise InvalidInput(f"{name} must be a list of integers", code="invalid_type")
        return [_to_int(name, v) for v in value]
    if kind == _STR_LIST:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise InvalidInput(f"{name}: must be a list of strings", code="invalid_type")
        return list(value)
    if kind == _BIAS:
        return _logit_bias(value)
    if kind == _STRUCTURED:
        return _structured(value)
    # stop: a string or a list of strings
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise InvalidInput(f"{name} must be a string or a list of strings", code="invalid_type")


def _to_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise InvalidInput(f"{name} must be an integer, got {value!r}", code="invalid_type")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise InvalidInput(f"{name} must be an integer, got {value!r}", code="invalid_type")


def _to_float(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise InvalidInput(f"{name} must be a number, got {value!r}", code="invalid_type")
    if isinstance(value, (int, float)):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            raise InvalidInput(f"{name} must be a number, got {value!r}", code="invalid_type") from None
    else:
        raise InvalidInput(f"{name} must be a number, got {value!r}", code="invalid_type")
    if not math.isfinite(result):
        raise InvalidInput(f"{name} must be finite, got {value!r}")
    return result


def _to_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise InvalidInput(f"{name} must be true or false, got {value!r}", code="invalid_type")


def _logit_bias(value: Any) -> dict[int, float]:
    """``{token id: bias}``; ids as JSON object keys are strings (OpenAI's shape)."""
    if not isinstance(value, Mapping):
        raise InvalidInput("logit_bias: must be an object mapping token ids to biases")
    out: dict[int, float] = {}
    for key, bias in value.items():
        token = key.strip() if isinstance(key, str) else key
        if isinstance(token, bool) or not (isinstance(token, int) or (isinstance(token, str) and token.isdigit())):
            raise InvalidInput(f"logit_bias: keys must be token ids (non-negative integers), got {str(key)[:40]!r}")
        number = _to_float(f"logit_bias: the bias of token {token}", bias)
        if abs(number) > MAX_BIAS:
            raise InvalidInput(f"logit_bias: the bias of token {token} must be between -100 and 100, got {bias!r}")
        out[int(token)] = number
    return out


def _structured(value: Any) -> dict[str, Any]:
    """vLLM's ``StructuredOutputsParams`` fields, checked by name and type (vLLM compiles them)."""
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise InvalidInput(f"{STRUCTURED_OUTPUTS}: not valid JSON: {exc}") from exc
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{STRUCTURED_OUTPUTS}: must be an object")
    fields = {**STRUCTURED_CONSTRAINTS, **STRUCTURED_OPTIONS}
    unknown = sorted(str(k) for k in value if k not in fields)
    if unknown:
        raise InvalidInput(f"{STRUCTURED_OUTPUTS}: unknown field(s) {', '.join(unknown)}; it takes one of "
                           f"{', '.join(STRUCTURED_CONSTRAINTS)} and the options {', '.join(STRUCTURED_OPTIONS)}")
    out = {k: v for k, v in value.items() if v is not None}
    given = [k for k in STRUCTURED_CONSTRAINTS if k in out]
    if len(given) != 1:
        raise InvalidInput(f"{STRUCTURED_OUTPUTS}: give exactly one of {', '.join(STRUCTURED_CONSTRAINTS)}"
                           + (f" (got {', '.join(given)})" if given else ""))
    for name, item in out.items():
        where = f"{STRUCTURED_OUTPUTS}.{name}"  # the field at fault, as data too
        kind = fields[name]
        if kind == "schema" and not isinstance(item, (Mapping, str)):
            raise InvalidInput(f"{where}: must be a JSON schema (an object, or its JSON text)", param=where,
                               code="invalid_type")
        if kind == "schema" and isinstance(item, Mapping):
            out[name] = dict(item)
        if kind == "str" and not isinstance(item, str):
            raise InvalidInput(f"{where}: must be a string", param=where, code="invalid_type")
        if kind == "str_list" and (not isinstance(item, list) or not all(isinstance(v, str) for v in item)):
            raise InvalidInput(f"{where}: must be a list of strings", param=where, code="invalid_type")
        if kind == "true" and item is not True:
            raise InvalidInput(f"{where}: must be true when given", param=where)
        if kind == "bool" and not isinstance(item, bool):
            raise InvalidInput(f"{where}: must be true or false", param=where, code="invalid_type")
    return out
