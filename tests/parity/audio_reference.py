"""What transformers and vLLM make of the same decoded audio: the audio parity test's reference,
run in a subprocess (vLLM in pytest's process would pin it to one core).

    python tests/parity/audio_reference.py MODEL_DIR INPUT.npz OUTPUT.json

INPUT.npz holds ``audio_<i>`` (float32 mono at the model's rate, decoded by OUR
video_pipeline.media.audio) and ``messages`` (JSON: one chat per case, audio parts as the shim
sends them to llm). For each case:

- ``vllm``: offline vLLM given OUR prompt and OUR ``multi_modal_data`` (the llm model's own
  code: GenerationRequest -> render_prompt / multi_modal_data): ``prompt_token_ids`` and greedy
  ``token_ids``;
- ``hf``: transformers' Qwen2AudioProcessor on the same text and samples (``input_ids``,
  ``input_features`` shape, audio token count) and ``generate``'s greedy tokens (float32).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

MAX_TOKENS = 8


def main() -> None:
    folder, inp, outp = sys.argv[1:4]
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    data = np.load(inp)
    cases = json.loads(str(data["messages"]))
    audios = [data[f"audio_{i}"] for i in range(len([k for k in data.files if k.startswith("audio_")]))]

    from transformers import AutoProcessor

    from video_pipeline.engines.prompt import multi_modal_data, render_prompt
    from video_pipeline.engines.types import AudioInput, GenerationRequest

    processor = AutoProcessor.from_pretrained(folder)
    rate = processor.feature_extractor.sampling_rate
    prompts, texts, case_audio = [], [], []
    for case in cases:
        items = [AudioInput(audios[i], rate) for i in case["audio"]]
        request = GenerationRequest(request_id="parity", messages=case["messages"], audios=items)
        text = render_prompt(request, processor.tokenizer, processor.chat_template)
        prompts.append({"prompt": text, "multi_modal_data": multi_modal_data(request)})
        texts.append(text)
        case_audio.append([audios[i] for i in case["audio"]])

    import torch
    from transformers import Qwen2AudioForConditionalGeneration

    model = Qwen2AudioForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    hf = []
    for text, items in zip(texts, case_audio, strict=True):
        inputs = processor(text=text, audio=items, sampling_rate=rate, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=MAX_TOKENS, do_sample=False)
        ids = inputs["input_ids"][0].tolist()
        hf.append({"input_ids": ids, "input_features": list(inputs["input_features"].shape),
                   "audio_tokens": ids.count(processor.tokenizer.convert_tokens_to_ids("<|AUDIO|>")),
                   "token_ids": out[0, len(ids):].tolist()})

    from vllm import LLM, SamplingParams

    llm = LLM(model=folder, enforce_eager=True, dtype="float32", seed=0, max_model_len=4096,
              kv_cache_memory_bytes=128 * 2**20, limit_mm_per_prompt={"audio": 2})
    outs = llm.generate(prompts, SamplingParams(max_tokens=MAX_TOKENS, temperature=0, ignore_eos=True))
    vllm = [{"prompt_token_ids": list(o.prompt_token_ids), "token_ids": list(o.outputs[0].token_ids)} for o in outs]
    Path(outp).write_text(json.dumps({"hf": hf, "vllm": vllm, "texts": texts}))
    llm.llm_engine.engine_core.shutdown()


if __name__ == "__main__":
    main()
