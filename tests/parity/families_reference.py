"""What transformers and vLLM make of our pipeline's media, for one tiny non-Qwen family model.

Run as a subprocess (vLLM with ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` pins its process to one
core, so never inside pytest's own process)::

    python tests/parity/families_reference.py FAMILY INPUT.npz OUTPUT.json

INPUT.npz holds ``spec`` (JSON: ``model`` and ``cases``, see
:func:`tests.parity.test_families.run_reference`) and the arrays it names. For each case:

- ``hf``: transformers' processor on the frames our pipeline sends (already sized), with our
  ``video_info`` as metadata, and the model's own chat template: the size and count of the
  frames / tiles it produced, ``input_ids``, the placeholder count, ``generate``'s greedy tokens;
- ``hf_native``: the same processor on the frames at their native (decoded, unresized) size;
- ``vllm``: offline vLLM given OUR prompt and OUR ``multi_modal_data``, built from the
  preprocessor's tensors by the ``llm`` model's own code (``build_request`` ->
  ``render_prompt`` / ``multi_modal_data`` / ``multi_modal_uuids``): ``prompt_token_ids``,
  greedy ``token_ids``, one case per ``generate``, and ``media_tokens``: the (video, image) token
  counts the ``llm`` model reports (``MediaTokenIds`` from vLLM's config and tokenizer); then ``batched_videos_error``: what one
  ``generate`` of every video case together raised (None: nothing).

One process per family runs every case. ``seconds`` times
each stage.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# Run as a script from a checkout: the package and tests/ importable without installing.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.parity.reference import hf_messages  # noqa: E402


def hf_parts(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """:func:`hf_messages`, with string content as one text part: how transformers' docs (and
    vLLM's server) give messages to templates that iterate parts, such as LLaVA-OneVision's."""
    return [{**m, "content": [{"type": "text", "text": m["content"]}]} if isinstance(m["content"], str) else m
            for m in hf_messages(messages)]


def placeholder_ids(family: str, config: Any) -> dict[str, int]:
    """The token id transformers repeats for each video / image feature."""
    if family == "llava_onevision":
        return {"video": config.video_token_index, "image": config.image_token_index}
    # InternVL writes a video's frames with the image context token; GLM-4.1V's video groups are
    # <|image|> tokens too.
    return {"video": config.image_token_id, "image": config.image_token_id}


def _hf_media(family: str, kind: str, batch: Any) -> tuple[list[int], int]:
    """(height, width) of what the processor made of each frame / image tile, and how many."""
    if family == "glm4v":
        t, h, w = batch["video_grid_thw" if kind == "video" else "image_grid_thw"][0].tolist()
        return [h * 14, w * 14], t
    if family == "llava_onevision":
        pixels = batch["pixel_values_videos" if kind == "video" else "pixel_values"]
        return list(pixels.shape[-2:]), int(pixels.shape[1])
    return list(batch["pixel_values"].shape[-2:]), int(batch["pixel_values"].shape[0])


def _process(processor: Any, family: str, prompt: str, videos: list[np.ndarray], metas: list[dict[str, Any]],
             images: list[np.ndarray], placeholders: dict[str, int]) -> tuple[dict[str, Any], Any]:
    kwargs: dict[str, Any] = {"text": [prompt], "return_tensors": "pt"}
    if videos:
        kwargs["videos"] = videos
        kwargs["videos_kwargs"] = {"video_metadata": metas, "do_sample_frames": False}
    if images:
        kwargs["images"] = images
    batch = processor(**kwargs)
    ids = batch["input_ids"][0].tolist()
    kind = "video" if videos else "image"
    size, count = _hf_media(family, kind, batch)
    return {"input_ids": ids, "size": size, "count": count, "placeholders": ids.count(placeholders[kind])}, batch


def run_hf(family: str, spec: dict[str, Any], data: Any) -> list[dict[str, Any]]:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(spec["model"])
    model = AutoModelForImageTextToText.from_pretrained(spec["model"], dtype=torch.float32).eval()
    placeholders = placeholder_ids(family, model.config)
    results = []
    for case in spec["cases"]:
        prompt = processor.apply_chat_template(hf_parts(case["messages"]), tokenize=False,
                                               add_generation_prompt=True)
        metas = [{k: v["info"][k] for k in ("fps", "duration", "total_num_frames", "frames_indices")}
                 for v in case["videos"]]
        images = [data[key] for key in case["images"]]
        hf, batch = _process(processor, family, prompt, [data[v["frames"]] for v in case["videos"]], metas,
                             images, placeholders)
        with torch.no_grad():
            generated = model.generate(**batch, max_new_tokens=spec["max_new_tokens"], do_sample=False)
        hf["generated"] = generated[0, batch["input_ids"].shape[1]:].tolist()
        result: dict[str, Any] = {"name": case["name"], "hf": hf}
        if case["videos"]:
            result["hf_native"], _ = _process(processor, family, prompt, [data[v["native"]] for v in case["videos"]],
                                              metas, images, placeholders)
        results.append(result)
    return results


def run_vllm(spec: dict[str, Any], data: Any) -> tuple[list[dict[str, Any]], str | None]:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM, SamplingParams

    from video_pipeline import contract as C
    from video_pipeline.engines.prompt import (
        MediaTokenIds,
        multi_modal_data,
        multi_modal_uuids,
        render_prompt,
        resolve_chat_template,
    )
    from video_pipeline.llm_handler import build_request
    from video_pipeline.media.packing import pack
    from video_pipeline.steps import json_tensor

    llm = LLM(model=spec["model"], enforce_eager=True, dtype="float32", seed=0, max_model_len=8192,
              max_num_batched_tokens=8192, kv_cache_memory_bytes=256 * 2**20,
              limit_mm_per_prompt={"video": 1, "image": 1}, skip_mm_profiling=True)
    try:
        tokenizer = llm.get_tokenizer()
        # What the llm model reports as a response's video / image tokens (VllmEngine's own ids).
        media_ids = MediaTokenIds.from_model(llm.llm_engine.model_config.hf_config, tokenizer)
        template = resolve_chat_template(spec["model"], tokenizer, revision=None, trust_remote_code=False)
        prompts = []
        for case in spec["cases"]:
            inputs: dict[str, Any] = {C.MESSAGES: json_tensor([case["messages"]])}
            if case["videos"]:
                inputs[C.VIDEO_INFO] = json_tensor([v["info"] for v in case["videos"]])
                inputs[C.VIDEO_FRAMES] = pack([data[v["frames"]] for v in case["videos"]])
            if case["images"]:
                inputs[C.IMAGE] = np.array([data[f"{key}_png"].tobytes() for key in case["images"]], dtype=np.object_)
            request = build_request(inputs, f"parity-{case['name']}")
            prompt: dict[str, Any] = {"prompt": render_prompt(request, tokenizer, template)}
            mm_data = multi_modal_data(request)
            if mm_data:
                prompt["multi_modal_data"] = mm_data
                uuids = multi_modal_uuids(request)
                if uuids:
                    prompt["multi_modal_uuids"] = uuids
            prompts.append(prompt)
        params = SamplingParams(temperature=0.0, max_tokens=spec["max_new_tokens"])
        results = []
        # One case per generate: vLLM 0.32's LLaVA-OneVision fails on videos of different lengths
        # encoded in one step (see batched_videos below).
        for prompt in prompts:
            (out,) = llm.generate([prompt], params, use_tqdm=False, tokenization_kwargs={"add_special_tokens": False})
            results.append({"prompt": prompt["prompt"], "prompt_token_ids": list(out.prompt_token_ids),
                            "token_ids": list(out.outputs[0].token_ids),
                            "media_tokens": list(media_ids.count(out.prompt_token_ids))})
        return results, _batched_videos(llm, [p for p, c in zip(prompts, spec["cases"], strict=True) if c["videos"]],
                                        params)
    finally:
        llm.llm_engine.engine_core.shutdown()


def _batched_videos(llm: Any, prompts: list[dict[str, Any]], params: Any) -> str | None:
    """Every video case in ONE generate (two requests' videos of different lengths in one encoder
    step, as concurrent requests meet in a server): None when it works, else the error. Last: a
    failure can leave the in-process engine unusable. The frames are reversed and sent without
    uuids, so neither the prefix cache nor the encoder cache can skip encoding them again."""
    fresh = [{"prompt": p["prompt"], "multi_modal_data": {"video": [(np.ascontiguousarray(f[::-1]), m)
                                                                    for f, m in p["multi_modal_data"]["video"]]}}
             for p in prompts]
    try:
        llm.generate(fresh, params, use_tqdm=False, tokenization_kwargs={"add_special_tokens": False})
    except Exception as exc:  # noqa: BLE001 - recorded for the test to judge
        return f"{type(exc).__name__}: {str(exc)[-600:]}"
    return None


def main() -> None:
    family = sys.argv[1]
    data = np.load(sys.argv[2], allow_pickle=False)
    spec = json.loads(str(data["spec"]))
    started = time.perf_counter()
    results = run_hf(family, spec, data)
    hf_done = time.perf_counter()
    vllm_results, batched_error = run_vllm(spec, data)
    for result, vllm in zip(results, vllm_results, strict=True):
        result["vllm"] = vllm
    seconds = {"hf": round(hf_done - started, 2), "vllm": round(time.perf_counter() - hf_done, 2)}
    Path(sys.argv[3]).write_text(json.dumps({"family": family, "cases": results, "batched_videos_error": batched_error,
                                             "seconds": seconds}))


if __name__ == "__main__":
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    main()
