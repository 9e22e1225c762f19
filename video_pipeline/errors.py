"""Typed errors raised by the core.

Each maps to one Triton error code in :mod:`video_pipeline.triton_adapter` and to
one HTTP status in the OpenAI shim, so a bad request fails alone and clearly.

Besides its message, an error can say what it is about, as data rather than text:

- ``kind`` and ``index``: the media item at fault (``"video"``, ``"image"``, ``"audio"``,
  ``"image_embeds"``; the index counts the items of that kind in request order). Given to the
  constructor, they also lead the message: ``InvalidInput("empty", kind="audio", index=1)``
  reads ``"audio 1: empty"``; :meth:`PipelineError.at` marks an error raised elsewhere.
- ``param`` and ``code``: the request parameter at fault (a sampling key such as
  ``"temperature"``) and OpenAI's error code for it (``"invalid_value"``, ``"invalid_type"``,
  ``"context_length_exceeded"``, ...).
- ``transient``: retrying the same request may succeed (the engine or the server was
  unavailable for a moment); true for :class:`EngineUnavailable` unless said otherwise.

They cross the Triton boundary as one JSON document (:class:`video_pipeline.contract.ErrorDoc`):
:meth:`PipelineError.to_doc` and :func:`from_doc`.
"""

from __future__ import annotations

from video_pipeline.contract import ErrorDoc


class PipelineError(Exception):
    """Base class: a request-level failure with a message safe to show a client."""

    #: Triton error code name (pb_utils.TritonError.<code>)
    triton_code = "INTERNAL"
    #: HTTP status the OpenAI shim answers with
    http_status = 500
    #: whether the same request may succeed if sent again
    transient = False

    def __init__(self, message: str = "", *, kind: str | None = None, index: int | None = None,
                 param: str | None = None, code: str | None = None, transient: bool | None = None) -> None:
        super().__init__(f"{kind} {index}: {message}" if kind is not None and index is not None else message)
        self.kind = kind
        self.index = index
        self.param = param
        self.code = code
        if transient is not None:
            self.transient = transient

    @property
    def detail(self) -> str:
        """The message without the ``"<kind> <index>: "`` that names the item (the shim names it its own way)."""
        text = str(self)
        return text.removeprefix(f"{self.kind} {self.index}: ") if self.index is not None else text

    def at(self, kind: str, index: int | None = None) -> PipelineError:
        """This error, marked as about item ``index`` of ``kind`` (unless it names an item already); with an
        index, the message gains ``"<kind> <index>: "`` when it does not start with it."""
        if self.kind is not None:
            return self
        self.kind, self.index = kind, index
        text = str(self)
        if index is not None and not text.startswith(f"{kind} {index}:"):
            self.args = (f"{kind} {index}: {text}",)
        return self

    def to_doc(self) -> ErrorDoc:
        """The error as the document our models put in their Triton errors."""
        return ErrorDoc(message=str(self), error=type(self).__name__, triton_code=self.triton_code,
                        status=self.http_status, code=self.code, param=self.param, kind=self.kind,
                        index=self.index, transient=self.transient)


class InvalidInput(PipelineError):
    """The request or its media is malformed (corrupt, truncated, empty, bad option)."""

    triton_code = "INVALID_ARG"
    http_status = 400


class UnsupportedMedia(PipelineError):
    """Well-formed media we cannot handle (codec without a decoder, no video stream)."""

    triton_code = "UNSUPPORTED"
    http_status = 415


class MediaTooLarge(InvalidInput):
    """Media exceeds a configured budget (resolution, frames, duration, bytes)."""

    http_status = 413


class DecodeTimeout(InvalidInput):
    """Decoding ran past its wall-clock limit."""

    http_status = 408


class EngineUnavailable(PipelineError):
    """The inference engine is down or shutting down."""

    triton_code = "UNAVAILABLE"
    http_status = 503
    transient = True


_BY_NAME: dict[str, type[PipelineError]] = {
    cls.__name__: cls
    for cls in (PipelineError, InvalidInput, UnsupportedMedia, MediaTooLarge, DecodeTimeout, EngineUnavailable)
}


def from_doc(doc: ErrorDoc) -> PipelineError:
    """The typed error a document describes (its class by name; an unknown name keeps the document's
    Triton code and status on a plain :class:`PipelineError`)."""
    cls = _BY_NAME.get(doc.error)
    exc = (cls or PipelineError)(doc.message, param=doc.param, code=doc.code, transient=doc.transient)
    exc.kind, exc.index = doc.kind, doc.index  # the message names the item already
    if cls is None:
        exc.triton_code, exc.http_status = doc.triton_code, doc.status
    return exc

