"""Prompt building with the model's chat template, media mapping and media-token counting."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from video_pipeline.engines import tiny_model
from video_pipeline.engines.prompt import (
    MediaTokenIds,
    count_media_parts,
    multi_modal_data,
    normalize_messages,
    render_prompt,
)
from video_pipeline.engines.types import GenerationRequest, VideoInput
from video_pipeline.engines.vllm_engine import check_raw_placeholders
from video_pipeline.errors import InvalidInput

SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return tiny_model.build_tokenizer()


def video(seed: int = 0, t: int = 4) -> VideoInput:
    frames = np.random.default_rng(seed).integers(0, 256, (t, 28, 28, 3), dtype=np.uint8)
    return VideoInput.from_frames(frames, fps=2.0)


def chat(content: Any, **kwargs: Any) -> GenerationRequest:
    return GenerationRequest(request_id="r", messages=[{"role": "user", "content": content}], **kwargs)


def test_render_prompt_places_video_then_text_when_messages_have_a_video_part(tokenizer: Any) -> None:
    request = chat([{"type": "video"}, {"type": "text", "text": "What happens?"}], videos=[video()])
    text = render_prompt(request, tokenizer, tiny_model.CHAT_TEMPLATE)
    assert text == f"{SYSTEM}<|im_start|>user\n{VIDEO}What happens?<|im_end|>\n<|im_start|>assistant\n"


def test_render_prompt_keeps_part_order_when_videos_and_images_interleave(tokenizer: Any) -> None:
    parts = [
        {"type": "text", "text": "A:"},
        {"type": "video_url", "video_url": {"url": "ignored"}},
        {"type": "image"},
        {"type": "text", "text": "B:"},
        {"type": "video"},
    ]
    image = np.zeros((28, 28, 3), dtype=np.uint8)
    request = chat(parts, videos=[video(1), video(2)], images=[image])
    text = render_prompt(request, tokenizer, tiny_model.CHAT_TEMPLATE)
    assert f"A:{VIDEO}{IMAGE}B:{VIDEO}<|im_end|>" in text
    data = multi_modal_data(request)
    assert [v[0] for v in data["video"]] == [request.videos[0].frames, request.videos[1].frames]
    assert data["image"][0] is image


def test_render_prompt_uses_the_given_system_message_when_one_is_first(tokenizer: Any) -> None:
    request = GenerationRequest(
        request_id="r",
        messages=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    )
    text = render_prompt(request, tokenizer, tiny_model.CHAT_TEMPLATE)
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n")


def test_render_prompt_omits_the_assistant_header_when_add_generation_prompt_is_false(tokenizer: Any) -> None:
    request = chat("Hi", chat_template_kwargs={"add_generation_prompt": False})
    assert not render_prompt(request, tokenizer, tiny_model.CHAT_TEMPLATE).endswith("assistant\n")


def test_render_prompt_returns_a_raw_prompt_verbatim_when_given_one(tokenizer: Any) -> None:
    request = GenerationRequest(request_id="r", prompt=f"{VIDEO}describe", videos=[video()])
    assert render_prompt(request, tokenizer, tiny_model.CHAT_TEMPLATE) == f"{VIDEO}describe"


@pytest.mark.parametrize(
    ("parts", "videos"), [([{"type": "video"}], 0), ([{"type": "text", "text": "x"}], 1)]
)
def test_render_prompt_raises_invalid_input_when_video_parts_and_videos_differ(
    tokenizer: Any, parts: list[dict[str, Any]], videos: int
) -> None:
    request = chat(parts, videos=[video(i) for i in range(videos)])
    with pytest.raises(InvalidInput, match="video"):
        render_prompt(request, tokenizer, tiny_model.CHAT_TEMPLATE)


def test_render_prompt_raises_invalid_input_when_the_template_fails(tokenizer: Any) -> None:
    template = "{{ raise_exception('only user turns') }}"
    with pytest.raises(InvalidInput, match="chat template"):
        render_prompt(chat("Hi"), tokenizer, template)


@pytest.mark.parametrize(
    "messages",
    [
        [],
        "hello",
        [{"role": "robot", "content": "x"}],
        [{"role": "user", "content": 3}],
        [{"role": "user", "content": [{"type": "hologram"}]}],
        [{"role": "user", "content": [{"type": "text", "text": 3}]}],
        ["not a message"],
    ],
)
def test_normalize_messages_raises_invalid_input_when_malformed(messages: Any) -> None:
    with pytest.raises(InvalidInput):
        normalize_messages(messages)


def test_normalize_messages_canonicalizes_openai_part_types_when_given_aliases() -> None:
    out = normalize_messages(
        [
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "t"},
                    {"type": "image_url", "image_url": {"url": "data:..."}},
                    {"type": "video_url", "video_url": {"url": "file://x"}},
                    "bare string",
                ],
            }
        ]
    )
    assert out[0]["content"] == [
        {"type": "text", "text": "t"},
        {"type": "image"},
        {"type": "video"},
        {"type": "text", "text": "bare string"},
    ]
    assert count_media_parts(out) == (1, 1)


def test_multi_modal_data_is_empty_when_the_request_has_no_media() -> None:
    assert multi_modal_data(GenerationRequest(request_id="r", prompt="x")) == {}


def test_media_token_ids_count_placeholders_when_the_prompt_is_expanded(tokenizer: Any) -> None:
    ids = MediaTokenIds.from_model(object(), tokenizer)  # a config without ids: fall back to token names
    video_pad = tokenizer.convert_tokens_to_ids("<|video_pad|>")
    image_pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert (ids.video, ids.image) == (video_pad, image_pad)
    assert ids.count([1, video_pad, video_pad, 2, image_pad, video_pad]) == (3, 1)
    assert ids.count(None) == (0, 0)


def test_media_token_ids_prefer_the_config_when_it_names_them(tokenizer: Any) -> None:
    class Config:
        video_token_id = 7
        image_token_id = 8

    assert MediaTokenIds.from_model(Config(), tokenizer) == MediaTokenIds(video=7, image=8)


def test_check_raw_placeholders_raises_when_a_raw_prompt_lacks_the_video_placeholder(tokenizer: Any) -> None:
    ids = MediaTokenIds.from_model(object(), tokenizer)
    request = GenerationRequest(request_id="r", prompt="describe", videos=[video()])
    with pytest.raises(InvalidInput, match="placeholder"):
        check_raw_placeholders(request.prompt or "", request, tokenizer, ids)
    ok = GenerationRequest(request_id="r", prompt=f"{VIDEO}describe", videos=[video()])
    check_raw_placeholders(ok.prompt or "", ok, tokenizer, ids)


def test_media_token_ids_count_image_tokens_inside_a_video_span_as_video_when_the_config_names_one(
    tokenizer: Any,
) -> None:
    # GLM-4.1V: a video's features are <|image|> tokens between begin/end-of-video markers.
    class Config:
        image_token_id = 8
        video_start_token_id = 20
        video_end_token_id = 21

    ids = MediaTokenIds.from_model(Config(), tokenizer)
    assert ids.video_span == (20, 21)
    assert ids.count([1, 8, 8, 20, 8, 8, 8, 21, 8, 2]) == (3, 3)


def test_media_token_ids_use_the_tokenizers_video_token_when_the_config_has_none(tokenizer: Any) -> None:
    # InternVL: no video_token_id in the config; vLLM repeats the tokenizer's <video> per feature.
    class Named:
        video_token_id = 99

        def get_vocab(self) -> dict[str, int]:
            return {}

    ids = MediaTokenIds.from_model(object(), Named())
    assert (ids.video, ids.image) == (99, None)
    assert ids.count([99, 99, 5, 99]) == (3, 0)


def test_render_prompt_sends_string_content_as_a_text_part_when_the_template_drops_strings(tokenizer: Any) -> None:
    from video_pipeline.engines.prompt import render_prompt

    # A LLaVA-OneVision-style template: it renders only list content.
    template = ("{% for m in messages %}<{{ m['role'] }}>{% for c in m['content'] | selectattr('type', 'equalto', "
                "'text') %}{{ c['text'] }}{% endfor %}{% endfor %}")
    text = render_prompt(chat("what is here?"), tokenizer, template)
    assert "what is here?" in text
