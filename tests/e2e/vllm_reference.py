"""Reference greedy output from vanilla offline vLLM for given frames and chat messages.

Independent of our prompt code: the prompt comes from the model's own processor
(``apply_chat_template``), the video goes in as ``(frames, metadata)``.

    python tests/e2e/vllm_reference.py INPUT.npz MODEL_DIR  ->  prints {"text": ...} as JSON
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np


def main() -> None:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    from transformers import AutoProcessor
    from vllm import LLM, SamplingParams

    data = np.load(sys.argv[1], allow_pickle=False)
    model = sys.argv[2]
    messages = json.loads(str(data["messages"]))
    sampling = json.loads(str(data["sampling"]))
    infos = json.loads(str(data["infos"]))
    videos, t = [], 0
    for info in infos:
        n, h, w = info["num_frames"], info["height"], info["width"]
        meta = {k: info[k] for k in ("fps", "duration", "total_num_frames", "frames_indices", "video_backend",
                                     "do_sample_frames")}
        videos.append((np.ascontiguousarray(data["frames"][t : t + n, :h, :w]), meta))
        t += n
    processor = AutoProcessor.from_pretrained(model)
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    llm = LLM(model=model, enforce_eager=True, dtype="float32", seed=0, max_model_len=16384,
              max_num_batched_tokens=16384, kv_cache_memory_bytes=256 * 2**20,
              limit_mm_per_prompt={"video": 4, "image": 4})
    out = llm.generate({"prompt": prompt, "multi_modal_data": {"video": videos}}, SamplingParams(**sampling))
    print(json.dumps({"text": out[0].outputs[0].text, "token_ids": list(out[0].outputs[0].token_ids)}))
    llm.llm_engine.engine_core.shutdown()


if __name__ == "__main__":
    main()
