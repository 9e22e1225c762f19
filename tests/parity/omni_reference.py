"""What transformers and vLLM make of the same video with its own audio track (use_audio_in_video):
the Qwen2.5-Omni parity test's reference, run in a subprocess (vLLM in pytest's process would pin it
to one core).

    python tests/parity/omni_reference.py MODEL_DIR INPUT.npz OUTPUT.json

INPUT.npz holds ``spec`` (JSON: one entry per case, with the chat ``messages`` as the shim sends
them to llm, video parts marked ``use_audio_in_video``, and per video the ``video_info`` our
video_preprocessor answered) and, per video, ``<key>_frames`` (the frames it sent) and
``<key>_bytes`` (the container bytes). For each case:

- ``ours``: the llm model's own code: ``build_request`` -> ``add_video_audio`` (the video's track
  over its frames' window, decoded by video_pipeline.media.audio) -> ``render_prompt`` /
  ``multi_modal_data`` / ``mm_processor_kwargs``: the prompt text, each track's span and samples
  (saved for the HF side and the test);
- ``vllm``: offline vLLM given that prompt: ``prompt_token_ids`` and greedy ``token_ids``;
- ``hf``: transformers' Qwen2_5OmniProcessor (``use_audio_in_video=True``) with the model's chat
  template on the same frames and samples: ``input_ids``, ``video_grid_thw``, the audio token
  count, and the thinker's greedy ``generate`` tokens (float32).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

MAX_TOKENS = 8


def hf_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-style parts as transformers' chat template expects them."""
    out = []
    for message in messages:
        content = [{"type": "text", "text": p["text"]} if p["type"] == "text" else {"type": "video"}
                   for p in message["content"]]
        out.append({"role": message["role"], "content": content})
    return out


def ours(folder: str, spec: list[dict[str, Any]], data: Any) -> list[dict[str, Any]]:
    """Each case through the llm model's request code, as LlmHandler does it."""
    from transformers import AutoProcessor

    from video_pipeline import contract as C
    from video_pipeline.engines.prompt import mm_processor_kwargs, multi_modal_data, render_prompt
    from video_pipeline.llm_handler import add_video_audio, audio_in_video_of, build_request
    from video_pipeline.media.audio import MAX_AUDIO_SECONDS, read_audio_settings
    from video_pipeline.media.packing import pack
    from video_pipeline.steps import json_tensor

    processor = AutoProcessor.from_pretrained(folder)
    settings = read_audio_settings(folder)
    assert settings is not None
    out = []
    for case in spec:
        infos = [dict(v["info"]) for v in case["videos"]]
        inputs = {C.MESSAGES: json_tensor([case["messages"]]), C.VIDEO_INFO: json_tensor(infos),
                  C.VIDEO_FRAMES: pack([data[f"{v['key']}_frames"] for v in case["videos"]])}
        request = build_request(inputs, f"omni-{case['name']}")
        assert any(audio_in_video_of(request.messages))
        elements = [data[f"{v['key']}_bytes"].tobytes() for v in case["videos"]]
        infos = [v.metadata for v in request.videos]
        videos = add_video_audio(list(request.videos), infos, elements, settings, MAX_AUDIO_SECONDS)
        request = dataclasses.replace(request, videos=videos)
        prompt: dict[str, Any] = {"prompt": render_prompt(request, processor.tokenizer, processor.chat_template),
                                  "multi_modal_data": multi_modal_data(request),
                                  "mm_processor_kwargs": mm_processor_kwargs(request)}
        out.append({"prompt": prompt, "spans": [i[C.AUDIO_SPAN] for i in infos],
                    "audio": [v.audio.samples for v in videos], "frames": [v.frames for v in videos]})
    return out


def run_hf(folder: str, cases: list[dict[str, Any]], spec: list[dict[str, Any]]) -> list[dict[str, Any]]:
    import torch
    from transformers import AutoProcessor, Qwen2_5OmniForConditionalGeneration

    processor = AutoProcessor.from_pretrained(folder)
    model = Qwen2_5OmniForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    audio_id = processor.tokenizer.convert_tokens_to_ids(processor.audio_token)
    results = []
    for mine, case in zip(cases, spec, strict=True):
        text = processor.apply_chat_template(hf_messages(case["messages"]), tokenize=False,
                                             add_generation_prompt=True)
        batch = processor(text=[text], videos=mine["frames"], audio=mine["audio"], return_tensors="pt",
                          use_audio_in_video=True, videos_kwargs={"do_sample_frames": False})
        with torch.no_grad():
            generated = model.thinker.generate(**batch, use_audio_in_video=True, max_new_tokens=MAX_TOKENS,
                                               do_sample=False)
        ids = batch["input_ids"][0].tolist()
        results.append({"text": text, "input_ids": ids, "video_grid_thw": batch["video_grid_thw"].tolist(),
                        "video_second_per_grid": [float(x) for x in batch["video_second_per_grid"]],
                        "audio_tokens": ids.count(audio_id), "token_ids": generated[0, len(ids):].tolist()})
    return results


def run_vllm(folder: str, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from vllm import LLM, SamplingParams

    # No multimodal profiling run: it would encode a 300 s dummy audio and the largest video on CPU.
    llm = LLM(model=folder, enforce_eager=True, dtype="float32", seed=0, max_model_len=8192,
              max_num_batched_tokens=8192, kv_cache_memory_bytes=128 * 2**20,
              limit_mm_per_prompt={"video": 2, "audio": 2}, skip_mm_profiling=True)
    try:
        outs = llm.generate([c["prompt"] for c in cases],
                            SamplingParams(max_tokens=MAX_TOKENS, temperature=0, ignore_eos=True), use_tqdm=False)
        return [{"prompt_token_ids": list(o.prompt_token_ids), "token_ids": list(o.outputs[0].token_ids)}
                for o in outs]
    finally:
        llm.llm_engine.engine_core.shutdown()


def main() -> None:
    folder, inp, outp = sys.argv[1:4]
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    data = np.load(inp)
    spec = json.loads(str(data["spec"]))
    cases = ours(folder, spec, data)
    hf = run_hf(folder, cases, spec)
    vllm = run_vllm(folder, cases)
    Path(outp).write_text(json.dumps({
        "hf": hf, "vllm": vllm,
        "ours": [{"text": c["prompt"]["prompt"], "spans": c["spans"], "mm_processor_kwargs":
                  c["prompt"]["mm_processor_kwargs"], "audio_samples": [int(a.shape[0]) for a in c["audio"]]}
                 for c in cases],
    }))


if __name__ == "__main__":
    main()
