"""What transformers and vLLM make of the same media: the parity tests' reference, run in a subprocess.

    python tests/parity/reference.py INPUT.npz OUTPUT.json

INPUT.npz holds ``spec`` (JSON, see :func:`tests.parity.test_qwen_parity.run_reference`) and the
arrays it names. For each case the runner reports:

- ``hf``: transformers' processor on the frames our pipeline sends (already sized) with the same
  metadata, and the model's own chat template: ``video_grid_thw``, ``image_grid_thw``,
  ``second_per_grid_ts`` (Qwen2.5-VL), ``input_ids``, the decoded prompt ``text`` (Qwen3-VL's
  ``<t seconds>`` are visible in it), and ``generate``'s greedy tokens (float32);
- ``hf_native``: the same processor on the frames at their native (decoded, unresized) size: its
  grids and ids must equal ``hf``'s if we size exactly as the processor would;
- ``vllm``: offline vLLM given OUR prompt and OUR ``multi_modal_data``, built from the
  preprocessor's tensors by the ``llm`` model's own code (``build_request`` ->
  ``render_prompt`` / ``multi_modal_data`` / ``multi_modal_uuids``): ``prompt_token_ids`` and
  greedy ``token_ids``.

One process per model runs every case (vLLM batched in one ``generate``): vLLM in the pytest
process would pin it to one core (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), and a process per case
would pay the engine start each time. ``seconds`` in the output times each stage.
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

_CANONICAL = {"video_url": "video", "input_video": "video", "image_url": "image", "input_image": "image",
              "input_text": "text"}


def hf_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-style parts as transformers' chat templates expect them (``{"type": "video"}`` ...)."""
    out = []
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            content = [
                {"type": "text", "text": p["text"]} if _CANONICAL.get(p["type"], p["type"]) == "text"
                else {"type": _CANONICAL.get(p["type"], p["type"])}
                for p in content
            ]
        out.append({"role": message["role"], "content": content})
    return out


def _hf_metadata(info: dict[str, Any]) -> dict[str, Any]:
    return {k: info[k] for k in ("fps", "duration", "total_num_frames", "frames_indices")}


def _processor_outputs(processor: Any, prompt: str, videos: list[np.ndarray], metas: list[dict[str, Any]],
                       images: list[np.ndarray]) -> tuple[dict[str, Any], Any]:
    kwargs: dict[str, Any] = {"text": [prompt], "return_tensors": "pt"}
    if videos:
        kwargs["videos"] = videos
        kwargs["videos_kwargs"] = {"video_metadata": metas, "do_sample_frames": False}
    if images:
        kwargs["images"] = images
    batch = processor(**kwargs)
    ids = batch["input_ids"][0].tolist()
    out: dict[str, Any] = {"input_ids": ids, "text": processor.tokenizer.decode(ids)}
    for key in ("video_grid_thw", "image_grid_thw", "second_per_grid_ts"):
        if key in batch:
            value = batch[key]
            out[key] = value.tolist() if hasattr(value, "tolist") else list(value)
    return out, batch


def run_hf(spec: dict[str, Any], data: Any) -> list[dict[str, Any]]:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(spec["model"])
    model = AutoModelForImageTextToText.from_pretrained(spec["model"], dtype=torch.float32).eval()
    results = []
    for case in spec["cases"]:
        prompt = processor.apply_chat_template(hf_messages(case["messages"]), tokenize=False,
                                               add_generation_prompt=True)
        metas = [_hf_metadata(v["info"]) for v in case["videos"]]
        images = [data[key] for key in case["images"]]
        sent = [data[v["frames"]] for v in case["videos"]]
        hf, batch = _processor_outputs(processor, prompt, sent, metas, images)
        with torch.no_grad():
            generated = model.generate(**batch, max_new_tokens=spec["max_new_tokens"], do_sample=False)
        hf["generated"] = generated[0, batch["input_ids"].shape[1]:].tolist()
        result: dict[str, Any] = {"name": case["name"], "hf": hf}
        native = [data[v["native"]] for v in case["videos"] if v.get("native")]
        if case["videos"] and len(native) == len(case["videos"]):
            result["hf_native"], _ = _processor_outputs(processor, prompt, native, metas, images)
        results.append(result)
    return results


def run_vllm(spec: dict[str, Any], data: Any) -> list[dict[str, Any]]:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from vllm import LLM, SamplingParams

    from video_pipeline import contract as C
    from video_pipeline.engines.prompt import (
        multi_modal_data,
        multi_modal_uuids,
        render_prompt,
        resolve_chat_template,
    )
    from video_pipeline.llm_handler import build_request
    from video_pipeline.media.packing import pack
    from video_pipeline.steps import json_tensor

    llm = LLM(model=spec["model"], enforce_eager=True, dtype="float32", seed=0, max_model_len=16384,
              max_num_batched_tokens=16384, kv_cache_memory_bytes=256 * 2**20, **spec.get("engine_args", {}))
    try:
        tokenizer = llm.get_tokenizer()
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
        outputs = llm.generate(prompts, params, use_tqdm=False, tokenization_kwargs={"add_special_tokens": False})
        return [{"prompt_token_ids": list(o.prompt_token_ids), "token_ids": list(o.outputs[0].token_ids)}
                for o in outputs]
    finally:
        llm.llm_engine.engine_core.shutdown()


def main() -> None:
    data = np.load(sys.argv[1], allow_pickle=False)
    spec = json.loads(str(data["spec"]))
    started = time.perf_counter()
    results = run_hf(spec, data)
    hf_done = time.perf_counter()
    for result, vllm in zip(results, run_vllm(spec, data), strict=True):
        result["vllm"] = vllm
    seconds = {"hf": round(hf_done - started, 2), "vllm": round(time.perf_counter() - hf_done, 2)}
    Path(sys.argv[2]).write_text(json.dumps({"cases": results, "seconds": seconds}))


if __name__ == "__main__":
    main()
