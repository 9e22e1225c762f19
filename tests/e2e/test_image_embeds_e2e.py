"""image_embeds parts (issue 17.4) on the real stack: OpenAI SDK -> shim -> tritonserver -> llm -> vLLM CPU engine,
on a copy of the repository whose llm model.json sets vLLM's ``enable_mm_embeds`` (off by default: the session's
stack refuses them, see the last tests).

The embeddings are transformers' own: the tiny Qwen2-VL's vision tower on the image its processor prepares.
Sent in the exact JSON of vLLM's docs (a base64 ``torch.save`` tensor plus ``image_grid_thw``), they must give
the same prompt and the same greedy answer as the image itself sent as an ``image_url``."""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest

from tests.conftest import MODEL_REPOSITORY, Shim
from tests.servers import serving

pytestmark = pytest.mark.e2e

MODEL = "tiny-qwen2-vl"
MODELS = ["video_decoder", "video_preprocessor", "video_media", "llm"]
ASK = {"model": MODEL, "max_tokens": 12, "temperature": 0, "extra_body": {"ignore_eos": True}}


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (56, 84, 3), dtype=np.uint8)


def _png(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _b64(tensor: Any) -> str:
    import torch

    buf = io.BytesIO()
    torch.save(tensor, buf)
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def hf_embeds(tiny_model: Path) -> dict[int, tuple[Any, Any]]:
    """transformers' image embeddings (merged vision-tower output) and grid of each test image."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_model)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model, dtype=torch.float32).eval()
    out = {}
    for seed in (1, 2):
        batch = processor.image_processor(images=[_image(seed)], return_tensors="pt")
        with torch.no_grad():
            embeds = model.model.visual(batch["pixel_values"], grid_thw=batch["image_grid_thw"]).pooler_output
        out[seed] = (embeds.contiguous(), batch["image_grid_thw"][0])
    return out


@pytest.fixture(scope="module")
def embeds_shim(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shim]:
    """tritonserver on a copy of the repository with enable_mm_embeds in llm's model.json, and a shim on it."""
    from openai_frontend.app import create_app
    from openai_frontend.backend.triton import TritonBackend
    from openai_frontend.settings import Settings
    from video_pipeline.launch import TritonServer, free_port

    repo = tmp_path_factory.mktemp("embeds_repo")
    for name in MODELS:
        shutil.copytree(MODEL_REPOSITORY / name, repo / name)
    engine = json.loads((MODEL_REPOSITORY / "llm" / "1" / "model.json").read_text())
    engine.update(model=str(tiny_model.resolve()), enable_mm_embeds=True, kv_cache_memory_bytes=64 << 20,
                  max_num_seqs=4)
    (repo / "llm" / "1" / "model.json").write_text(json.dumps(engine))
    log = tmp_path_factory.mktemp("embeds_triton") / "tritonserver.log"
    server = TritonServer(repo, MODELS, log_path=log, ready_timeout_s=600)
    server.start()
    try:
        settings = Settings(model_repository=str(repo), port=free_port(),
                            files_dir=str(tmp_path_factory.mktemp("embeds_files")))
        app = create_app(settings, TritonBackend(server.grpc_url, timeout_s=120))
        with serving(app, settings.port, "embeds-shim") as url:
            yield Shim(url, settings, repo, server, app)
    finally:
        server.stop()


def _ask(shim: Shim, part: dict[str, Any], text: str = "What is in the image?") -> Any:
    return shim.client().chat.completions.create(
        messages=[{"role": "user", "content": [part, {"type": "text", "text": text}]}], **ASK)


def _embeds_part(embeds: Any, grid: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "image_embeds", "image_embeds": {"image_embeds": _b64(embeds), "image_grid_thw": _b64(grid)},
            **extra}


def test_sdk_chat_with_image_embeds_answers_as_the_image_itself_when_embeds_are_transformers_own(
        embeds_shim, hf_embeds) -> None:
    embeds, grid = hf_embeds[1]
    by_image = _ask(embeds_shim, {"type": "image_url", "image_url": {"url": _png(_image(1))}})
    by_embeds = _ask(embeds_shim, _embeds_part(embeds, grid))
    assert by_embeds.usage.prompt_tokens == by_image.usage.prompt_tokens
    assert by_embeds.choices[0].message.content == by_image.choices[0].message.content
    other = _ask(embeds_shim, _embeds_part(*hf_embeds[2]))
    assert other.choices[0].message.content != by_embeds.choices[0].message.content  # the embeddings reach it


def test_sdk_chat_takes_image_grid_thw_as_a_json_array_and_a_bare_tensor_for_one_image(embeds_shim, hf_embeds) -> None:
    embeds, grid = hf_embeds[1]
    as_tensor = _ask(embeds_shim, _embeds_part(embeds, grid))
    as_list = _ask(embeds_shim, {"type": "image_embeds",
                                 "image_embeds": {"image_embeds": _b64(embeds), "image_grid_thw": grid.tolist()}})
    assert as_list.choices[0].message.content == as_tensor.choices[0].message.content


def test_sdk_chat_streams_two_image_embeds_parts_in_their_order(embeds_shim, hf_embeds) -> None:
    parts = [_embeds_part(*hf_embeds[1]), _embeds_part(*hf_embeds[2])]
    by_images = [{"type": "image_url", "image_url": {"url": _png(_image(s))}} for s in (1, 2)]
    client = embeds_shim.client()
    messages = [{"role": "user", "content": [*parts, {"type": "text", "text": "Compare."}]}]
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        messages=messages, stream=True, **ASK) if c.choices)
    whole = client.chat.completions.create(
        messages=[{"role": "user", "content": [*by_images, {"type": "text", "text": "Compare."}]}], **ASK)
    assert text == whole.choices[0].message.content


def test_sdk_chat_serves_image_embeds_named_by_their_uuid_alone_after_sending_them_once(embeds_shim,
                                                                                     hf_embeds) -> None:
    embeds, grid = hf_embeds[2]
    first = _ask(embeds_shim, _embeds_part(embeds, grid, uuid="emb-two"))
    again = _ask(embeds_shim, {"type": "image_embeds", "image_embeds": None, "uuid": "emb-two"})
    assert again.choices[0].message.content == first.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as caught:
        _ask(embeds_shim, {"type": "image_embeds", "uuid": "never-sent"})
    assert caught.value.body["param"] == "messages[0].content[0].image_embeds"  # type: ignore[index]
    assert "never-sent" in caught.value.body["message"]  # type: ignore[index]


@pytest.mark.parametrize(("mangle", "needle"), [
    (lambda e, g: {"image_embeds": _b64(e[:, :64]), "image_grid_thw": _b64(g)}, "this model takes 128"),
    (lambda e, g: {"image_embeds": _b64(e[:-1]), "image_grid_thw": _b64(g)}, "image tokens, but"),
    (lambda e, g: {"image_embeds": _b64(e.to(__import__("torch").int32)), "image_grid_thw": _b64(g)},
     "floating point"),
    (lambda e, g: {"image_embeds": _b64(e * float("nan")), "image_grid_thw": _b64(g)}, "NaN"),
    (lambda e, g: {"image_embeds": _b64(e)}, "image_grid_thw is required"),
    (lambda e, g: {"image_embeds": "not base64!", "image_grid_thw": _b64(g)}, "not valid base64"),
    (lambda e, g: {"image_embeds": base64.b64encode(b"\x80\x04K\x01.").decode(), "image_grid_thw": _b64(g)},
     "not a tensor"),
    (lambda e, g: {"image_embeds": _b64({"x": e}), "image_grid_thw": _b64(g)}, "not one tensor"),
    (lambda e, g: {"image_embeds": _b64(e.to_sparse()), "image_grid_thw": _b64(g)}, "dense"),
    (lambda e, g: {"image_embeds": _b64(e), "image_grid_thw": [1, 3, 3]}, "multiples of the model's spatial merge"),
    (lambda e, g: {"image_embeds": _b64(e), "image_grid_thw": _b64(g), "pixel_values": _b64(e)}, "unknown key"),
])
def test_sdk_chat_answers_400_naming_the_part_when_image_embeds_are_wrong(embeds_shim, hf_embeds, mangle,
                                                                        needle) -> None:
    embeds, grid = hf_embeds[1]
    with pytest.raises(openai.BadRequestError) as caught:
        _ask(embeds_shim, {"type": "image_embeds", "image_embeds": mangle(embeds, grid)})
    body = caught.value.body
    assert body["param"] == "messages[0].content[0].image_embeds", body  # type: ignore[index]
    assert needle in body["message"], body  # type: ignore[index]
    assert _ask(embeds_shim, _embeds_part(embeds, grid)).choices[0].message.content  # the engine lives on


def test_sdk_chat_answers_400_when_image_embeds_and_images_are_mixed(embeds_shim, hf_embeds) -> None:
    with pytest.raises(openai.BadRequestError, match="mixing raw image and embedding inputs"):
        embeds_shim.client().chat.completions.create(messages=[{"role": "user", "content": [
            _embeds_part(*hf_embeds[1]), {"type": "image_url", "image_url": {"url": _png(_image(2))}}]}], **ASK)


# --- off by default: the session's stack (the repository's own model.json) ---------------------------------------


def test_sdk_chat_answers_400_naming_enable_mm_embeds_when_the_server_has_them_off(shim, hf_embeds) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _ask(shim, _embeds_part(*hf_embeds[1]))
    assert caught.value.body["param"] == "messages[0].content[0].image_embeds"  # type: ignore[index]
    assert "enable_mm_embeds" in caught.value.body["message"]  # type: ignore[index]


def test_llm_refuses_its_image_embeds_input_when_the_engine_has_them_off(triton, hf_embeds) -> None:
    from tritonclient.utils import InferenceServerException

    from tests.e2e.test_llm import _inputs, stream
    from video_pipeline import contract as C

    embeds, grid = hf_embeds[1]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]}]
    doc = json.dumps({"image_embeds": _b64(embeds), "image_grid_thw": grid.tolist()}).encode()
    with pytest.raises(InferenceServerException) as caught:
        stream(triton.grpc_url, C.LLM.name, _inputs(messages=json.dumps(messages), image_embeds=[doc],
                                                    sampling_parameters=json.dumps({"max_tokens": 2})))
    doc = C.parse_error(caught.value.message())
    assert doc is not None and doc.triton_code == "INVALID_ARG" and (doc.kind, doc.index) == ("image_embeds", 0)
    assert "enable_mm_embeds" in doc.message and doc.message.startswith("image_embeds 0: ")
