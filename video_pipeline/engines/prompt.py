"""Prompt text and multi-modal data from a request, with the model's own chat template.

Nothing here knows an architecture: the chat template decides where the media
placeholders go (Qwen: ``<|vision_start|><|video_pad|><|vision_end|>``), and
vLLM's processor expands each placeholder into the video's tokens (and any
per-frame text, such as InternVL's ``Frame1: <img>...</img>``). So the same
code serves Qwen2-VL, Qwen2.5-VL, Qwen3-VL, LLaVA-OneVision, InternVL and
GLM-4.1V (tests/parity checks each against transformers).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from video_pipeline.contract import VideoInfo
from video_pipeline.engines.types import GenerationRequest
from video_pipeline.errors import InvalidInput
from video_pipeline.media import embeds

logger = logging.getLogger(__name__)

# OpenAI names accepted for each part kind; the template sees only the canonical one.
_TEXT_TYPES = frozenset({"text", "input_text"})
_IMAGE_TYPES = frozenset({"image", "image_url", "input_image"})
_VIDEO_TYPES = frozenset({"video", "video_url", "input_video"})
_AUDIO_TYPES = frozenset({"audio", "audio_url", "input_audio"})
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


@dataclass(frozen=True)
class MediaTokenIds:
    """Placeholder token ids whose count in the (expanded) prompt is the media's token cost.

    ``video_span`` (start, end): image placeholders between these two count as video tokens.
    GLM-4.1V's processor writes a video's features as ``<|image|>`` tokens inside
    ``<|begin_of_video|>...<|end_of_video|>`` (its ``<|video|>`` is gone after expansion).
    """

    video: int | None
    image: int | None
    video_span: tuple[int, int] | None = None

    @classmethod
    def from_model(cls, hf_config: Any, tokenizer: Any) -> MediaTokenIds:
        """Ids from the model config (``video_token_id``), else the tokenizer's named video token
        (InternVL's ``<video>``, which vLLM repeats for each of a video's features), else Qwen's
        token names. A config naming ``video_start_token_id`` and ``video_end_token_id`` (GLM-4.1V)
        gives the span."""
        video = _config_id(hf_config, "video_token_id")
        if video is None:
            named = getattr(tokenizer, "video_token_id", None)
            video = named if isinstance(named, int) else _vocab_id(tokenizer, "<|video_pad|>")
        image = _config_id(hf_config, "image_token_id")
        if image is None:
            image = _vocab_id(tokenizer, "<|image_pad|>")
        start, end = _config_id(hf_config, "video_start_token_id"), _config_id(hf_config, "video_end_token_id")
        span = (start, end) if start is not None and end is not None else None
        return cls(video=video, image=image, video_span=span)

    def count(self, prompt_token_ids: Sequence[int] | None) -> tuple[int, int]:
        """(video tokens, image tokens) in ``prompt_token_ids``."""
        if not prompt_token_ids:
            return 0, 0
        video = image = 0
        in_video = False
        start, end = self.video_span or (None, None)
        for t in prompt_token_ids:
            if t == start:
                in_video = True
            elif t == end:
                in_video = False
            elif self.video is not None and t == self.video:
                video += 1
            elif self.image is not None and t == self.image:
                if in_video:
                    video += 1
                else:
                    image += 1
        return video, image


def normalize_messages(messages: Any) -> list[dict[str, Any]]:
    """Validate OpenAI-style chat messages and canonicalize their parts.

    Text parts become ``{"type": "text", "text": ...}``, media parts
    ``{"type": "video"}`` / ``{"type": "image"}`` / ``{"type": "audio", "audio": ""}`` (URLs
    are dropped: the media arrive decoded, in order). Raises :class:`InvalidInput` on anything else.
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
        if role == "tool":
            out.append(_tool_message(message, f"messages[{i}]"))
            continue
        content = message.get("content")
        calls = _tool_calls(message, f"messages[{i}]") if role == "assistant" else []
        if content is None and calls:
            content = ""  # a turn that only called tools (vLLM renders it with empty content too)
        if isinstance(content, str):
            out.append({"role": role, "content": content, **({"tool_calls": calls} if calls else {})})
            continue
        if not isinstance(content, Sequence) or isinstance(content, bytes):
            raise InvalidInput(f"messages[{i}].content must be a string or a list of parts")
        parts = [_normalize_part(part, f"messages[{i}].content[{j}]") for j, part in enumerate(content)]
        out.append({"role": role, "content": parts, **({"tool_calls": calls} if calls else {})})
    return out


def _tool_message(message: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A ``role: "tool"`` message as chat templates take it (vLLM's shape): its ``tool_call_id`` and
    its content as one string (text parts joined by newlines)."""
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidInput(f"{where}.tool_call_id: a tool message needs the id of the call it answers")
    content = message.get("content")
    if content is None:
        content = ""
    elif not isinstance(content, str):
        if not isinstance(content, Sequence) or isinstance(content, bytes):
            raise InvalidInput(f"{where}.content must be a string or a list of text parts")
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") not in _TEXT_TYPES or not isinstance(
                    part.get("text"), str):
                raise InvalidInput(f"{where}.content[{j}]: a tool message takes only text parts")
            texts.append(part["text"])
        content = "\n".join(texts)
    return {"role": "tool", "content": content, "tool_call_id": call_id}


def _tool_calls(message: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    """An assistant message's ``tool_calls`` as chat templates take them: ``arguments`` as an object
    (vLLM parses the JSON string too; here arguments that are not a JSON object are refused)."""
    calls = message.get("tool_calls")
    if calls is None:
        return []
    if not isinstance(calls, Sequence) or isinstance(calls, (str, bytes)):
        raise InvalidInput(f"{where}.tool_calls must be a list")
    out = []
    for j, call in enumerate(calls):
        at = f"{where}.tool_calls[{j}]"
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or call.get("type", "function") != "function":
            raise InvalidInput(f"{at}: only function tool calls are supported ({{\"type\": \"function\", "
                               "\"function\": {\"name\", \"arguments\"}}})")
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"{at}.function.name: required")
        out.append({**({"id": call["id"]} if isinstance(call.get("id"), str) else {}), "type": "function",
                    "function": {"name": name, "arguments": tool_arguments(function.get("arguments"),
                                                                             f"{at}.function.arguments")}})
    return out


def tool_arguments(raw: Any, where: str) -> dict[str, Any]:
    """A tool call's ``arguments`` (a JSON string, as OpenAI sends them, or an object) as an object."""
    if raw is None or raw == "":
        return {}
    value = raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise InvalidInput(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{where}: must be a JSON object, got {type(value).__name__}")
    return dict(value)


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


def count_audio_parts(messages: Sequence[Mapping[str, Any]]) -> int:
    """Audio parts in normalized messages."""
    return sum(1 for m in messages if not isinstance(m["content"], str) for p in m["content"] if p["type"] == "audio")


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
    carried = len(request.images) + len(request.image_embeds)
    if images != carried:
        raise InvalidInput(f"messages have {images} image part(s) but the request carries {carried} image(s)")
    audios = count_audio_parts(messages)
    if audios != len(request.audios):
        raise InvalidInput(
            f"messages have {audios} audio part(s) but the request carries {len(request.audios)} audio item(s)"
        )
    if _drops_string_content(tokenizer, chat_template):
        # (tool messages stay strings: templates render their content as one, as vLLM sends it)
        messages = [{**m, "content": [{"type": "text", "text": m["content"]}]}
                    if isinstance(m["content"], str) and m["role"] != "tool" else m for m in messages]
    kwargs = dict(request.chat_template_kwargs)
    kwargs.setdefault("add_generation_prompt", True)
    # vLLM's server hands the request's tools to apply_chat_template the same way (tools=...), also
    # with tool_choice "none"; a template that has no tools section renders without them.
    if request.tools:
        kwargs["tools"] = [dict(t) for t in request.tools]
    try:
        text = tokenizer.apply_chat_template(messages, chat_template=chat_template, tokenize=False, **kwargs)
    except Exception as exc:  # jinja2 raises TemplateError subclasses and, via raise_exception(), others
        raise InvalidInput(f"chat template failed: {exc}") from exc
    if not isinstance(text, str):
        raise InvalidInput("chat template did not render to text")
    return text


_PROBE = "vlt-probe-7f3a"
_STRING_CONTENT: dict[str | None, bool] = {}


def _drops_string_content(tokenizer: Any, chat_template: str | None) -> bool:
    """True when the template renders only list content (LLaVA-OneVision's iterates
    ``message['content'] | selectattr('type', ...)``, so a string message silently vanishes):
    string messages then go to it as one text part, as vLLM's server sends them."""
    key = chat_template if chat_template is not None else getattr(tokenizer, "chat_template", None)
    if key not in _STRING_CONTENT:
        try:
            text = tokenizer.apply_chat_template([{"role": "user", "content": _PROBE}], chat_template=chat_template,
                                                 tokenize=False, add_generation_prompt=False)
            _STRING_CONTENT[key] = isinstance(text, str) and _PROBE not in text
        except Exception:  # a template that refuses the probe is judged on the real messages instead
            logger.debug("chat template probe failed", exc_info=True)
            _STRING_CONTENT[key] = False
    return _STRING_CONTENT[key]


def multi_modal_data(request: GenerationRequest) -> dict[str, list[Any]]:
    """``multi_modal_data`` for vLLM: videos as ``(frames, metadata)``, images as arrays, audio as
    ``(samples, sampling_rate)`` (the audio parts, or with use_audio_in_video the videos' own tracks).

    The tuple form is the one every family accepts: Qwen2.5-VL, Qwen3-VL and
    GLM-4.1V fail on bare frames ("Video metadata is required"); for the others
    (Qwen2-VL, LLaVA-OneVision, InternVL) vLLM's parser drops the metadata and
    passes the frames alone.
    """
    data: dict[str, list[Any]] = {}
    if request.videos:
        data["video"] = [v.as_vllm() for v in request.videos]
    if request.images:
        data["image"] = list(request.images)
    elif request.image_embeds:
        data["image"] = embeds.merge(request.image_embeds)  # type: ignore[assignment]
    if request.audios:
        data["audio"] = [a.as_vllm() for a in request.audios]
    elif request.use_audio_in_video:
        # vLLM's audio-visual processors (Qwen2.5-Omni, Qwen3-Omni) pair audio i with video i.
        data["audio"] = [v.audio.as_vllm() for v in request.videos if v.audio is not None]
    return data


def mm_processor_kwargs(request: GenerationRequest) -> dict[str, Any]:
    """The prompt's per-request ``mm_processor_kwargs`` for vLLM (empty when none apply)."""
    return {"use_audio_in_video": True} if request.use_audio_in_video else {}


def multi_modal_uuids(request: GenerationRequest) -> dict[str, list[str | None]] | None:
    """``multi_modal_uuids`` for vLLM: each video's ``uuid`` from its metadata, or None.

    The media pipeline derives a video's uuid from the sha256 of its bytes and every option
    that decides its frames (video_preprocessor's ``video_info.uuid``), so vLLM keys its
    processor and prefix caches by it instead of hashing the frames again, and a repeated
    video reuses that work. A video without one (a frame list, a client's own frames) gets
    None: vLLM hashes it as before. A client calling ``llm`` directly vouches for its uuids,
    as with vLLM's own ``uuid`` content field.
    Images named by a client's uuid carry one too (``request.image_uuids``: their content's sha256,
    never the client's string, so a uuid re-used for other media cannot meet stale features).
    """
    out: dict[str, list[str | None]] = {}
    uuids = [VideoInfo.from_dict(v.metadata).uuid for v in request.videos]
    if any(isinstance(u, str) and u for u in uuids):
        out["video"] = [u if isinstance(u, str) and u else None for u in uuids]
    if any(request.image_uuids):
        out["image"] = [u or None for u in request.image_uuids]
    if any(request.audio_uuids):
        out["audio"] = [u or None for u in request.audio_uuids]
    return out or None


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
    if kind in _AUDIO_TYPES:
        # The "audio" key too: Qwen2-Audio's own template tests `'audio' in content`, not the type.
        return {"type": "audio", "audio": ""}
    raise InvalidInput(f"{where}.type must be text, image, video or audio, got {kind!r}")


def _config_id(hf_config: Any, attr: str) -> int | None:
    value = getattr(hf_config, attr, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _vocab_id(tokenizer: Any, token: str) -> int | None:
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    return vocab.get(token)
