"""Typed errors raised by the core.

Each maps to one Triton error code in :mod:`video_pipeline.triton_adapter` and to
one HTTP status in the OpenAI shim, so a bad request fails alone and clearly.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: a request-level failure with a message safe to show a client."""

    #: Triton error code name (pb_utils.TritonError.<code>)
    triton_code = "INTERNAL"
    #: HTTP status the OpenAI shim answers with
    http_status = 500


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
