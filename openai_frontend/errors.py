"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

Everything a client can get wrong becomes an :class:`OpenAIError` with a 4xx
status and a message naming the problem; the core's typed errors
(:mod:`video_pipeline.errors`) map by their ``http_status``, with the ``param`` and
``code`` they carry; anything else is a 500 whose details stay in the server log,
never a traceback to the client.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from video_pipeline.errors import PipelineError

logger = logging.getLogger(__name__)

_CODES = {
    400: "invalid_request",
    403: "forbidden",
    404: "not_found",
    408: "timeout",
    413: "media_too_large",
    415: "unsupported_media",
    500: "internal_error",
    503: "unavailable",
}


class OpenAIError(Exception):
    """An error answer: HTTP status plus OpenAI's error object."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type_: str | None = None) -> None:
        # Whatever a message quotes must survive UTF-8 encoding (a lone surrogate would turn the answer into a 500).
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code or _CODES.get(status, "error")
        self.type = type_ or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


def unsupported(param: str, why: str = "is not supported") -> OpenAIError:
    return OpenAIError(400, f"{param} {why}", param=param, code="unsupported_parameter")


def model_not_found(name: str, served: str) -> OpenAIError:
    return OpenAIError(
        404, f"The model '{name}' does not exist; this server serves '{served}'", param="model",
        code="model_not_found",
    )


def from_exception(exc: BaseException, param: str | None = None) -> OpenAIError:
    """The client-facing error for any exception; unexpected ones are logged with their traceback."""
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, PipelineError):
        status = exc.http_status
        if status >= 500 and status != 503:
            logger.error("request failed: %s", exc)
        return OpenAIError(status, str(exc), param=param or exc.param, code=exc.code)
    logger.error("unexpected error", exc_info=exc)
    return OpenAIError(500, f"internal error ({type(exc).__name__}); see the server log")


def from_validation(exc: ValidationError, prefix: str = "") -> OpenAIError:
    """The first pydantic error as a 400 naming the parameter (``messages[0].content``)."""
    err = exc.errors(include_url=False)[0]
    param = format_loc(err.get("loc", ()), prefix)
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return OpenAIError(400, f"unsupported parameter: {param}", param=param, code="unsupported_parameter")
    if kind == "missing":
        return OpenAIError(400, f"{param}: required", param=param, code="missing_required_parameter")
    value = err.get("input")
    shown = "" if isinstance(value, (dict, list)) else f" (got {value!r:.80})"
    code = "invalid_type" if is_type_error(kind) else "invalid_value"
    return OpenAIError(400, f"{param}: {err.get('msg', 'invalid value')}{shown}", param=param, code=code)


def is_type_error(kind: str) -> bool:
    """Whether a pydantic error type says the value has the wrong JSON type (OpenAI's ``invalid_type``:
    a string for a number, a number for a list, 1.5 for an integer ...) rather than a wrong value."""
    return kind.endswith(("_type", "_parsing")) or kind in ("int_from_float", "model_attributes_type")


# Segments pydantic adds to a location for union members and validators, not field names.
_NOISE = {"str", "int", "float", "bool", "list", "dict", "none", "function-after", "function-before",
          "function-plain", "function-wrap", "literal", "tagged-union"}


def format_loc(loc: tuple[Any, ...] | list[Any], prefix: str = "") -> str:
    out = prefix
    for seg in loc:
        if isinstance(seg, int):
            out += f"[{seg}]"
            continue
        seg = str(seg)
        # Union members show up by type or class name (ours start upper case; fields never do).
        if "[" in seg or seg.lower() in _NOISE or seg[:1].isupper():
            continue
        out += f".{seg}" if out else seg
    return out or "body"
