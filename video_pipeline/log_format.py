"""Log lines as text or JSON, with a request id, for the shim and the Triton models alike.

``VLT_LOG_FORMAT=json`` gives one JSON object per line (``ts``, ``level``, ``logger``,
``message``, ``request_id`` and any ``extra=`` fields), which log pipelines can index
without parsing; ``text`` (the default) gives one readable line. The shim and the
models' Python stubs read the same variable, so tritonserver's log and the shim's
carry the same fields.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from typing import Any

FORMATS = ("text", "json")
LOG_FORMAT_ENV = "VLT_LOG_FORMAT"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"

# Attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName",
                                                                          "color_message"}  # uvicorn's ANSI copy


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and value not in (None, "", "-"):
                out[key] = value if isinstance(value, (str, int, float, bool)) else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class DefaultRequestId(logging.Filter):
    """Gives every record a ``request_id`` (``-`` when it has none), so the text format never fails."""

    def __init__(self, current: Any = None) -> None:
        super().__init__()
        self._current = current  # a callable returning the request id of the running request, if any

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = (self._current() if self._current else "") or "-"
        return True


def formatter(fmt: str) -> logging.Formatter:
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)


def configure(level: str | int = "INFO", fmt: str | None = None, current_request_id: Any = None) -> None:
    """Routes every logger through one stderr handler in ``fmt`` (default: ``$VLT_LOG_FORMAT`` or text)."""
    fmt = (fmt or os.environ.get(LOG_FORMAT_ENV) or "text").lower()
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(fmt))
    handler.addFilter(DefaultRequestId(current_request_id))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
