"""What transformers and vLLM make of the same frames and image, for one tiny family model.

Run as a subprocess (vLLM with ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` pins its process to one
core, so never inside pytest's own process)::

    python tests/parity/families_reference.py FAMILY MODEL_DIR FRAMES.npy META.json OUT.json

FRAMES.npy holds decoded (T, H, W, 3) uint8 frames, META.json the decoder's metadata. The
first frame doubles as the image. OUT.json gets, per modality ("video", "image"):
transformers' processed size, placeholder count, input_ids and greedy tokens, and vLLM's
prompt_token_ids and greedy tokens, plus timings.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

MAX_TOKENS = 8
PROMPT_TEXT = "Describe this."


def _placeholder_ids(family: str, config: Any, tokenizer: Any) -> dict[str, int]:
    """The token id transformers repeats for each video / image feature."""
    if family == "llava_onevision":
        return {"video": config.video_token_index, "image": config.image_token_index}
    if family == "internvl":  # frames of a video are written with the image context token too
        return {"video": config.image_token_id, "image": config.image_token_id}
    return {"video": config.image_token_id, "image": config.image_token_id}  # glm4v: <|image|> in both


def _hf_size(family: str, kind: str, inputs: Any) -> list[int]:
    """(height, width) of what transformers' processor made of each frame / image tile."""
    if family == "glm4v":
        t, h, w = (inputs["video_grid_thw"] if kind == "video" else inputs["image_grid_thw"])[0].tolist()
        return [h * 14, w * 14]
    key = "pixel_values_videos" if (family == "llava_onevision" and kind == "video") else "pixel_values"
    return list(inputs[key].shape[-2:])


def _hf_tiles(family: str, kind: str, inputs: Any) -> int:
    """Frames (video) or tiles (image) transformers' processor produced."""
    if family == "glm4v":
        return int((inputs["video_grid_thw"] if kind == "video" else inputs["image_grid_thw"])[0][0])
    if family == "llava_onevision":
        return int(inputs["pixel_values_videos" if kind == "video" else "pixel_values"].shape[1])
    return int(inputs["pixel_values"].shape[0])


def run(family: str, model: str, frames_path: str, meta_path: str, out_path: str) -> None:
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    timings: dict[str, float] = {}
    started = time.perf_counter()
    frames = np.load(frames_path)
    meta = json.loads(Path(meta_path).read_text())
    image = Image.fromarray(frames[0])
    # What a sampled clip says about itself (GLM-4.1V's prompt carries each frame pair's second).
    video_meta = {"fps": meta["fps"], "duration": meta["duration"], "total_num_frames": meta["total_num_frames"],
                  "frames_indices": meta["frames_indices"], "video_backend": "pyav", "do_sample_frames": False}

    processor = AutoProcessor.from_pretrained(model)
    hf_model = AutoModelForImageTextToText.from_pretrained(model, dtype=torch.float32).eval()
    placeholders = _placeholder_ids(family, hf_model.config, processor.tokenizer)
    timings["hf_load_s"] = time.perf_counter() - started

    result: dict[str, Any] = {"family": family, "processor": type(processor).__name__}
    prompts: dict[str, str] = {}
    for kind in ("video", "image"):
        t0 = time.perf_counter()
        messages = [{"role": "user", "content": [{"type": kind}, {"type": "text", "text": PROMPT_TEXT}]}]
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompts[kind] = prompt
        if kind == "video":
            kwargs: dict[str, Any] = {"videos": [frames]}
            if family == "glm4v":
                kwargs.update(video_metadata=[{k: v for k, v in video_meta.items() if k != "do_sample_frames"}],
                              do_sample_frames=False)
        else:
            kwargs = {"images": [image]}
        inputs = processor(text=[prompt], return_tensors="pt", **kwargs)
        ids = inputs["input_ids"][0].tolist()
        with torch.no_grad():
            out = hf_model.generate(**inputs, max_new_tokens=MAX_TOKENS, do_sample=False)
        result[kind] = {
            "prompt": prompt,
            "hf_size": _hf_size(family, kind, inputs),
            "hf_tiles": _hf_tiles(family, kind, inputs),
            "hf_placeholders": ids.count(placeholders[kind]),
            "hf_input_ids": ids,
            "hf_tokens": out[0, len(ids):].tolist(),
        }
        timings[f"hf_{kind}_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    del hf_model
    from vllm import LLM, SamplingParams

    llm = LLM(model=model, enforce_eager=True, dtype="float32", max_model_len=8192,
              kv_cache_memory_bytes=256 * 2**20, limit_mm_per_prompt={"video": 2, "image": 2}, seed=0)
    timings["vllm_load_s"] = time.perf_counter() - t0
    # vLLM takes a bare (T, H, W, 3) array unless the model needs the clip's metadata.
    video_item: Any = (frames, video_meta) if family == "glm4v" else frames
    items = {"video": video_item, "image": image}
    params = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True)
    for kind in ("video", "image"):
        t0 = time.perf_counter()
        (got,) = llm.generate([{"prompt": prompts[kind], "multi_modal_data": {kind: items[kind]}}], params,
                              use_tqdm=False)
        result[kind]["vllm_prompt_ids"] = list(got.prompt_token_ids)
        result[kind]["vllm_tokens"] = list(got.outputs[0].token_ids)
        timings[f"vllm_{kind}_s"] = time.perf_counter() - t0
    llm.llm_engine.engine_core.shutdown()
    timings["total_s"] = time.perf_counter() - started
    result["timings"] = timings
    Path(out_path).write_text(json.dumps(result))


if __name__ == "__main__":
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    run(*sys.argv[1:6])
