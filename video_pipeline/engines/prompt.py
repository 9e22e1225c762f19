"""Prompt text and multi-modal data from a request, with the model's own chat template.

Nothing here knows an architecture: the chat template decides where the media
placeholders go (Qwen: ``<|vision_start|><|video_pad|><|vision_end|>``), and
vLLM's processor expands each placeholder into the video's tokens. So the same
code serves Qwen2-VL, Qwen2.5-VL and Qwen3-VL.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from video_pipeline.engines.types import GenerationRequest
from video_pipeline.errors import InvalidInput

logger = logging.getLogger(__name__)

# OpenAI names accepted for each part kind; the template sees only the canonical one.
_TEXT_TYPES = frozenset({"text", "input_text"})
_IMAGE_TYPES = frozenset({"image", "image_url", "input_image"})
_VIDEO_TYPES = frozenset({"video", "video_url", "input_video"})
_ROLES = frozenset({"system", "developer", "user", "assistant"})


@dataclass(frozen=True)
class MediaTokenIds:
    """Placeholder token ids whose count in the (expanded) prompt is the media's token cost."""

    video: int | None
    image: int | None

    @classmethod
    def from_model(cls, hf_config: Any, tokenizer: Any) -> MediaTokenIds:
        """Ids from the model config (``video_token_id``), else from Qwen's token names."""
        return cls(
            video=_token_id(hf_config, tokenizer, "video_token_id", "<|video_pad|>"),
            image=_token_id(hf_config, tokenizer, "image_token_id", "<|image_pad|>"),
        )

    def count(self, prompt_token_ids: Sequence[int] | None) -> tuple[int, int]:
        """(video tokens, image tokens) in ``prompt_token_ids``."""
        if not prompt_token_ids:
            return 0, 0
        video = sum(1 for t in prompt_token_ids if t == self.video) if self.video is not None else 0
        image = sum(1 for t in prompt_token_ids if t == self.image) if self.image is not None else 0
        return video, image


def normalize_messages(messages: Any) -> list[dict[str, Any]]:
    """Validate OpenAI-style chat messages and canonicalize their parts.

    Text parts become ``{"type": "text", "text": ...}``, media parts
    ``{"type": "video"}`` / ``{"type": "image"}`` (URLs are dropped: the media
    arrive decoded, in order). Raises :class:`InvalidInput` on anything else.
    """
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)) or not messages:
        raise InvalidInput("messages must be a non-empty list")
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidInput(f"messages[{i}] must be an object")
        role = message.get("role")
        if role not in _ROLES:
            raise InvalidInput(f"messages[{i}].role must be one of {sorted(_ROLES)}, got {role!r}")
        # OpenAI's "developer" is the system prompt under a new name; Qwen templates know only "system".
        role = "system" if role == "developer" else role
        content = message.get("content")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        if not isinstance(content, Sequence) or isinstance(content, bytes):
            raise InvalidInput(f"messages[{i}].content must be a string or a list of parts")
        parts = [_normalize_part(part, f"messages[{i}].content[{j}]") for j, part in enumerate(content)]
        out.append({"role": role, "content": parts})
    return out


def count_media_parts(messages: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """(video parts, image parts) in normalized messages."""
    videos = images = 0
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            continue
        videos += sum(1 for p in content if p["type"] == "video")
        images += sum(1 for p in content if p["type"] == "image")
    return videos, images


def render_prompt(request: GenerationRequest, tokenizer: Any, chat_template: str | None) -> str:
    """The prompt text for ``request``: its raw prompt, or its messages through the chat template.

    Checks that messages name exactly as many videos and images as the request carries.
    """
    if request.prompt is not None:
        return request.prompt
    messages = normalize_messages(request.messages)
    videos, images = count_media_parts(messages)
    if videos != len(request.videos):
        raise InvalidInput(
            f"messages have {videos} video part(s) but the request carries {len(request.videos)} video(s)"
        )
    if images != len(request.images):
        raise InvalidInput(
            f"messages have {images} image part(s) but the request carries {len(request.images)} image(s)"
        )
    kwargs = dict(request.chat_template_kwargs)
    kwargs.setdefault("add_generation_prompt", True)
    try:
        text = tokenizer.apply_chat_template(messages, chat_template=chat_template, tokenize=False, **kwargs)
    except Exception as exc:  # jinja2 raises TemplateError subclasses and, via raise_exception(), others
        raise InvalidInput(f"chat template failed: {exc}") from exc
    if not isinstance(text, str):
        raise InvalidInput("chat template did not render to text")
    return text


def multi_modal_data(request: GenerationRequest) -> dict[str, list[Any]]:
    """``multi_modal_data`` for vLLM: videos as ``(frames, metadata)``, images as arrays.

    The tuple form is the one every Qwen-VL arch accepts: Qwen2.5-VL and
    Qwen3-VL fail on bare frames ("Video metadata is required"), Qwen2-VL
    ignores the metadata.
    """
    data: dict[str, list[Any]] = {}
    if request.videos:
        data["video"] = [v.as_vllm() for v in request.videos]
    if request.images:
        data["image"] = list(request.images)
    return data


def multi_modal_uuids(request: GenerationRequest) -> dict[str, list[str | None]] | None:
    """``multi_modal_uuids`` for vLLM: each video's ``uuid`` from its metadata, or None.

    The media pipeline derives a video's uuid from the sha256 of its bytes and every option
    that decides its frames (video_preprocessor's ``video_info.uuid``), so vLLM keys its
    processor and prefix caches by it instead of hashing the frames again, and a repeated
    video reuses that work. A video without one (a frame list, a client's own frames) gets
    None: vLLM hashes it as before. A client calling ``llm`` directly vouches for its uuids,
    as with vLLM's own ``uuid`` content field.
    """
    uuids = [v.metadata.get("uuid") for v in request.videos]
    if not any(isinstance(u, str) and u for u in uuids):
        return None
    return {"video": [u if isinstance(u, str) and u else None for u in uuids]}


def resolve_chat_template(
    model: str, tokenizer: Any, *, revision: str | None, trust_remote_code: bool
) -> str | None:
    """The model's chat template: the processor's first (what vLLM's server uses), then the tokenizer's."""
    try:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(
            model, revision=revision, trust_remote_code=trust_remote_code
        )
        template = getattr(processor, "chat_template", None)
        if isinstance(template, str):
            return template
    except Exception:  # text-only models have no processor; the tokenizer's template is then the one
        logger.debug("no processor chat template for %s", model, exc_info=True)
    template = getattr(tokenizer, "chat_template", None)
    return template if isinstance(template, str) else None


def _normalize_part(part: Any, where: str) -> dict[str, Any]:
    if isinstance(part, str):
        return {"type": "text", "text": part}
    if not isinstance(part, Mapping):
        raise InvalidInput(f"{where} must be an object")
    kind = part.get("type")
    if kind in _TEXT_TYPES:
        text = part.get("text")
        if not isinstance(text, str):
            raise InvalidInput(f"{where}.text must be a string")
        return {"type": "text", "text": text}
    if kind in _VIDEO_TYPES:
        return {"type": "video"}
    if kind in _IMAGE_TYPES:
        return {"type": "image"}
    raise InvalidInput(f"{where}.type must be text, image or video, got {kind!r}")


def _token_id(hf_config: Any, tokenizer: Any, attr: str, token: str) -> int | None:
    value = getattr(hf_config, attr, None)
    if isinstance(value, int):
        return value
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    return vocab.get(token)
