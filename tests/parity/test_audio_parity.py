"""Audio parity on a tiny offline Qwen2-Audio (video_pipeline.engines.tiny_audio): OUR decoded audio
(video_pipeline.media.audio, PyAV, resampled to the feature extractor's 16 kHz) and OUR llm request
code give vLLM's CPU engine the same prompt ids and greedy tokens as transformers' processor +
generate on the same samples. vLLM runs in a subprocess (tests/parity/audio_reference.py)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from fractions import Fraction
from typing import Any

import av
import numpy as np
import pytest

from tests.built_once import built_once
from tests.conftest import ROOT
from video_pipeline.engines import tiny_audio
from video_pipeline.media.audio import decode_audio, read_audio_settings


def _encode(codec: str, fmt: str, rate: int, layout: str, seconds: float, freq: float) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = layout
        channels = 2 if layout == "stereo" else 1
        n = int(seconds * rate)
        t = np.arange(n) / rate
        wave = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
        planes = np.stack([wave * (c + 1) / channels for c in range(channels)])
        size = stream.codec_context.frame_size or 1024
        for start in range(0, n, size):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planes[:, start:start + size]), format="fltp",
                                               layout=layout)
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def _chat(n_audio: int, text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [*([{"type": "audio"}] * n_audio), {"type": "text", "text": text}]}]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = built_once(ROOT / ".tiny" / "qwen2_audio", tiny_audio.build)
    settings = read_audio_settings(folder)
    assert settings is not None and settings.sampling_rate == 16000
    sources = [
        _encode("pcm_s16le", "wav", 44100, "stereo", 1.5, 440.0),  # stereo 44.1 kHz WAV
        _encode("aac", "mp4", 48000, "mono", 2.0, 880.0),  # AAC in MP4 (m4a)
        _encode("flac", "flac", 16000, "mono", 0.7, 220.0),  # already at the model's rate
    ]
    audios = [decode_audio(s, settings.sampling_rate).samples for s in sources]
    cases = [{"audio": [0], "messages": _chat(1, "What is this sound?")},
             {"audio": [1], "messages": _chat(1, "What is this sound?")},
             {"audio": [2, 0], "messages": _chat(2, "Compare them.")}]
    tmp = tmp_path_factory.mktemp("audio_parity")
    np.savez(tmp / "in.npz", messages=json.dumps(cases), **{f"audio_{i}": a for i, a in enumerate(audios)})
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "parity" / "audio_reference.py"), str(folder),
                           str(tmp / "in.npz"), str(tmp / "out.json")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return {"cases": cases, "audios": audios, **json.loads((tmp / "out.json").read_text())}


def test_audio_prompt_ids_equal_transformers_when_our_decoded_audio_goes_to_vllm(reference) -> None:
    for hf, ours in zip(reference["hf"], reference["vllm"], strict=True):
        assert ours["prompt_token_ids"] == hf["input_ids"]
        assert hf["audio_tokens"] > 0 and hf["input_features"][-1] == 3000


def test_audio_greedy_tokens_equal_transformers_when_our_decoded_audio_goes_to_vllm(reference) -> None:
    for hf, ours in zip(reference["hf"], reference["vllm"], strict=True):
        assert ours["token_ids"] == hf["token_ids"]


def test_audio_reaches_the_logits_when_the_sounds_differ(reference) -> None:
    first, second = reference["vllm"][0]["token_ids"], reference["vllm"][1]["token_ids"]
    assert first != second


def test_audio_token_count_follows_the_duration_when_decoded_at_16k(reference) -> None:
    # Whisper's frames: 100 per second, halved by the encoder's stride and again by its pooling.
    counts = [h["audio_tokens"] for h in reference["hf"]]
    assert counts[0] < counts[1]  # 1.5 s < 2.0 s
