"""The body of POST /v1/videos and /v1/videos/sync: OpenAI's fields plus vLLM-Omni's extensions.

Both endpoints take ``multipart/form-data`` (as OpenAI's SDK and vLLM-Omni send it) and
JSON. In a form every value is a string: numbers are read as numbers, ``image_reference``
and ``extra_params`` as JSON, and the SDK's bracket notation (``input_reference[image_url]``,
``extra_params[key]``) as objects. Unknown fields are refused with a 400 naming them.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import model_validator

from openai_frontend.errors import bad_request
from openai_frontend.schemas.common import Strict

#: The form field that may carry the reference image as a file part.
INPUT_REFERENCE = "input_reference"
#: OpenAI's default clip length (its API takes "4", "8" or "12"; the SDK's VideoSeconds).
DEFAULT_SECONDS = "4"
_JSON_FIELDS = ("image_reference", "extra_params", INPUT_REFERENCE)
_BRACKETS = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\[([^\[\]]*)\]$")


class ImageReference(Strict):
    """An image by URL (``data:``, ``http(s)://``, ``file://``) or by the id of an uploaded file."""

    image_url: str | None = None
    file_id: str | None = None

    @model_validator(mode="after")
    def _one(self) -> ImageReference:
        if (self.image_url is None) == (self.file_id is None):
            raise ValueError("give exactly one of image_url or file_id")
        return self


class VideoCreateRequest(Strict):
    """One video request; generation fields are checked against the model by video_pipeline.generation."""

    prompt: str
    model: str | None = None
    seconds: str | int | float | None = None
    size: str | None = None
    user: str | None = None  # accepted, unused
    # vLLM-Omni's extensions
    width: int | None = None
    height: int | None = None
    num_frames: int | None = None
    fps: int | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    guidance_scale_2: float | None = None
    boundary_ratio: float | None = None
    flow_shift: float | None = None
    true_cfg_scale: float | None = None
    seed: int | None = None
    negative_prompt: str | None = None
    # the reference image: OpenAI's JSON form ({image_url | file_id}) or vLLM-Omni's image_reference;
    # a file part named input_reference is taken by the router
    input_reference: ImageReference | None = None
    image_reference: ImageReference | None = None
    extra_params: dict[str, Any] | None = None

    def generation_fields(self) -> dict[str, Any]:
        """The fields video_pipeline.generation.params.parse_request checks (None: not given)."""
        skip = {"prompt", "model", "user", INPUT_REFERENCE, "image_reference"}
        return {k: v for k, v in self.model_dump().items() if k not in skip}


class VideoRemixRequest(Strict):
    """``POST /v1/videos/{id}/remix``: OpenAI's one field; everything else comes from the source video."""

    prompt: str


def form_to_body(fields: dict[str, str]) -> dict[str, Any]:
    """Multipart text fields -> the JSON body they stand for (see the module docstring)."""
    body: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for name, value in fields.items():
        m = _BRACKETS.match(name)
        if m is not None:
            nested.setdefault(m[1], {})[m[2]] = _scalar(value) if m[1] == "extra_params" else value
            continue
        if name in _JSON_FIELDS:
            value = _json(name, value)
        body[name] = value
    for name, obj in nested.items():
        if name in body:
            raise bad_request(f"{name}: given both whole and as {name}[...] fields", name)
        body[name] = obj
    return body


def json_to_body(data: dict[str, Any]) -> dict[str, Any]:
    """A JSON body as given, except that ``image_reference`` and ``extra_params`` may also be JSON
    strings there (as vLLM-Omni's forms carry them)."""
    return {k: _json(k, v) if k in ("image_reference", "extra_params") and isinstance(v, str) else v
            for k, v in data.items()}


def _json(name: str, value: str) -> Any:
    if name == "image_reference" and not value.lstrip().startswith("{"):
        return {"image_url": value}  # a bare URL
    try:
        return json.loads(value)
    except ValueError as exc:
        raise bad_request(f"{name}: not valid JSON: {exc}", name, code="invalid_json") from None


def _scalar(value: str) -> Any:
    """``extra_params[key]`` values: JSON where they parse (numbers, booleans), else the string."""
    try:
        return json.loads(value)
    except ValueError:
        return value
