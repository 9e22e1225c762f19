"""The fast paths for big request bodies: strict base64 (pybase64 or the standard library) and the lone-surrogate
scan of parse_json, with the answers the slow paths gave."""

from __future__ import annotations

import base64
import binascii
import json

import pytest

from openai_frontend.errors import OpenAIError
from openai_frontend.schemas.common import parse_json
from video_pipeline.b64 import b64decode_strict


@pytest.mark.parametrize("text", ["", "QUJD", "QUI=", "QU==", base64.b64encode(bytes(range(256)) * 40).decode()])
def test_b64decode_strict_decodes_what_the_standard_library_decodes(text) -> None:
    assert b64decode_strict(text) == base64.b64decode(text, validate=True) == b64decode_strict(text.encode())


@pytest.mark.parametrize("text", ["QUJ", "Q===", "QUJD\n", " QUJD", "QUJ*", "QUJDé", "=", "QQ=", "-_8=", "QUJDQQ==QUJD"])
def test_b64decode_strict_refuses_what_is_not_well_padded_standard_base64(text) -> None:
    with pytest.raises(ValueError):  # binascii.Error is one
        b64decode_strict(text)
    assert issubclass(binascii.Error, ValueError)


@pytest.mark.parametrize("raw", [
    b'{"a": "\\ud800"}', b'{"a": "x\\uDBFFy"}', b'{"a": ["ok", {"b": "\\udc00"}]}',
    '{"a": "\udc80"}'.encode("utf-8", "surrogatepass"),  # surrogate bytes (CESU-8 style)
])
def test_parse_json_refuses_lone_surrogates_however_they_are_written(raw) -> None:
    with pytest.raises(OpenAIError) as info:
        parse_json(raw)
    assert info.value.status == 400 and "lone surrogate" in str(info.value)


@pytest.mark.parametrize("raw", [
    b'{"a": "\\ud83d\\ude00"}',  # a surrogate pair: one character
    b'{"a": "\\u00e9 \\\\ud800"}',  # an escaped backslash then "ud800": plain text
    json.dumps({"url": "data:video/mp4;base64," + "QUJD" * 250_000}).encode(),
    "{\"a\": \"\u00ed\u00a0 caf\u00e9\"}".encode(),  # the characters behind \xed / \xa0 in UTF-8 are fine
])
def test_parse_json_accepts_surrogate_pairs_and_text_that_only_looks_like_one(raw) -> None:
    assert parse_json(raw) == json.loads(raw)
