"""Errors cross the Triton boundary as one document (contract.ErrorDoc), built and read in one place each."""

from __future__ import annotations

import pytest

from video_pipeline import contract as C
from video_pipeline.errors import (
    DecodeTimeout,
    EngineUnavailable,
    InvalidInput,
    MediaTooLarge,
    PipelineError,
    UnsupportedMedia,
    from_doc,
)


@pytest.mark.parametrize("error", [
    InvalidInput("empty", kind="audio", index=1),
    MediaTooLarge("the video lasts 20000.0 s; the limit is 14400 s"),
    UnsupportedMedia("no decoder for the video codec (vp9)", kind="video", index=0),
    DecodeTimeout("decoding took longer than 120 s (the limit)"),
    EngineUnavailable("the inference engine is not healthy"),
    InvalidInput("invalid sampling parameters: temperature must be in [0, 2], got 5.0.", param="temperature",
                 code="decimal_above_max_value"),
    PipelineError("internal error (KeyError)"),
])
def test_error_document_round_trips_class_message_and_structure_when_encoded_and_parsed(error) -> None:
    message = error.to_doc().encode()
    assert message.startswith(str(error) + C.ERROR_MARK)  # Triton clients read the text first
    doc = C.parse_error(message)
    assert doc == error.to_doc()
    back = from_doc(doc)
    assert type(back) is type(error) and str(back) == str(error)
    assert (back.kind, back.index, back.param, back.code, back.transient) == (
        error.kind, error.index, error.param, error.code, error.transient)
    assert (back.triton_code, back.http_status, back.detail) == (error.triton_code, error.http_status, error.detail)


def test_error_document_is_found_when_an_ensemble_prefixes_it_and_the_text_quotes_the_mark() -> None:
    error = InvalidInput(f"the file is named 'a{C.ERROR_MARK}{{\"message\": \"x\"}}'", kind="video", index=2)
    doc = C.parse_error("in ensemble 'video_media', " + error.to_doc().encode())
    assert doc is not None and doc.message == str(error) and (doc.kind, doc.index) == ("video", 2)


@pytest.mark.parametrize("message", [
    "Request for unknown model: 'llm' is not found",
    f"text{C.ERROR_MARK}not json",
    f"text{C.ERROR_MARK}[1, 2]",
    f"text{C.ERROR_MARK}{{\"error\": \"InvalidInput\"}}",
])
def test_parse_error_answers_none_when_the_message_holds_no_document(message) -> None:
    assert C.parse_error(message) is None


def test_from_doc_keeps_the_code_and_status_when_the_class_is_unknown_here() -> None:
    doc = C.ErrorDoc(message="cancelled before it started", error="GenerationCancelled", triton_code="CANCELLED",
                     status=499, kind=None)
    err = from_doc(doc)
    assert type(err) is PipelineError and (err.triton_code, err.http_status, str(err)) == (
        "CANCELLED", 499, "cancelled before it started")


def test_at_marks_the_item_and_names_it_once_when_the_message_does_not() -> None:
    assert str(InvalidInput("empty", kind="audio", index=1)) == "audio 1: empty"
    err = InvalidInput("the data is not a video").at("video", 1)
    assert (str(err), err.detail, err.kind, err.index) == ("video 1: the data is not a video",
                                                           "the data is not a video", "video", 1)
    named = InvalidInput("audio 0: not audio").at("audio", 0)
    assert str(named) == "audio 0: not audio" and named.detail == "not audio"
    # an error that names its item already keeps it; one about all videos gets no number
    assert InvalidInput("x", kind="audio", index=3).at("video").kind == "audio"
    whole = MediaTooLarge("the videos hold 9 bytes; the limit is 8").at("video")
    assert (whole.kind, whole.index, str(whole)) == ("video", None, "the videos hold 9 bytes; the limit is 8")


def test_engine_unavailable_is_transient_unless_said_otherwise() -> None:
    assert EngineUnavailable("down").transient and not InvalidInput("bad").transient
    assert not EngineUnavailable("cancelled", transient=False).transient
