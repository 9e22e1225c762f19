"""Audio: container bytes -> mono float32 samples at the model's rate (PyAV), and the model's rate.

The llm model decodes a request's audio parts here (and, for audio-visual models asked for
``use_audio_in_video``, each video's own track over the window its frames cover) and hands
vLLM ``multi_modal_data["audio"] = [(samples, sampling_rate), ...]``: the rate is already the
feature extractor's, so vLLM's processor does not resample again.

Channels are averaged into one (as librosa's ``to_mono`` and vLLM's own audio loader do),
then FFmpeg's resampler converts the rate. :func:`probe_audio` reads only the header (the
shim's budgets); :func:`decode_audio` enforces the duration limit while decoding, so a header
that lies about its length cannot make it decode more than the limit.
"""

from __future__ import annotations

import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from video_pipeline.errors import InvalidInput, MediaTooLarge, UnsupportedMedia

logger = logging.getLogger(__name__)

#: Longest audio the llm decodes when nobody set a limit (the shim's VLT_MAX_AUDIO_DURATION_S
#: refuses longer ones from their headers before they get here). 10 minutes at 16 kHz is 38 MB.
MAX_AUDIO_SECONDS = 600.0
#: FFmpeg's stream analysis stops at this deadline (a header probe must not take seconds).
PROBE_TIMEOUT_S = 2.0
_PROCESSOR = "processor_config.json"
_PREPROCESSOR = "preprocessor_config.json"


@dataclass(frozen=True)
class AudioSettings:
    """What the served model's feature extractor wants: its sampling rate, where that was read."""

    sampling_rate: int
    feature_extractor: str  # its class, e.g. WhisperFeatureExtractor
    chunk_length: float | None  # seconds one feature window holds (Whisper: 30), when it says
    source: str  # file:key the rate came from


def read_audio_settings(folder: str | Path) -> AudioSettings | None:
    """The feature extractor of the model in ``folder`` (None: the model takes no audio).

    transformers 5 keeps it under ``processor_config.json``'s ``feature_extractor``; older folders
    (Qwen2-Audio, Qwen2.5-Omni) in ``preprocessor_config.json``, beside the image processor's keys."""
    folder = Path(folder)
    for name, key in ((_PROCESSOR, "feature_extractor"), (_PREPROCESSOR, None)):
        path = folder / name
        if not path.is_file():
            continue
        try:
            doc = json.loads(path.read_text())
        except ValueError as exc:
            raise InvalidInput(f"{path} is not valid JSON: {exc}") from None
        doc = doc.get(key) if key and isinstance(doc, dict) else doc
        if not isinstance(doc, dict) or "sampling_rate" not in doc:
            continue
        if not ("feature_extractor_type" in doc or "feature_size" in doc):
            continue
        rate = doc["sampling_rate"]
        if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
            raise InvalidInput(f"{path}: sampling_rate must be a positive integer, got {rate!r}")
        chunk = doc.get("chunk_length")
        return AudioSettings(
            sampling_rate=rate,
            feature_extractor=str(doc.get("feature_extractor_type") or "unknown"),
            chunk_length=float(chunk) if isinstance(chunk, (int, float)) and not isinstance(chunk, bool) else None,
            source=f"{name}:{key + '.' if key else ''}sampling_rate",
        )
    return None


@dataclass(frozen=True)
class AudioFacts:
    """What a container's header says about its first audio stream."""

    duration: float | None  # seconds
    sample_rate: int
    channels: int
    codec: str


@dataclass(frozen=True)
class AudioClip:
    """Decoded audio: mono float32 samples at ``sampling_rate``, covering ``start``..``end`` seconds."""

    samples: np.ndarray  # float32 (N,)
    sampling_rate: int
    start: float
    end: float
    source_rate: int
    channels: int
    codec: str

    def span(self) -> dict[str, Any]:
        """The clip as a sampling plan shows it."""
        return {"start": round(self.start, 6), "end": round(self.end, 6), "sampling_rate": self.sampling_rate,
                "num_samples": int(self.samples.shape[0]), "source_sample_rate": self.source_rate,
                "channels": self.channels, "codec": self.codec}


def probe_audio(data: bytes | Path, what: str = "audio") -> AudioFacts:
    """The header facts of ``data``'s first audio stream, decoding nothing.

    :class:`UnsupportedMedia` when no demuxer opens it or it has no audio stream."""
    import av

    try:
        source = str(data) if isinstance(data, Path) else io.BytesIO(data)
        with av.open(source, mode="r", metadata_errors="ignore", timeout=PROBE_TIMEOUT_S) as container:
            if not container.streams.audio:
                kinds = sorted({s.type for s in container.streams}) or ["no streams"]
                raise UnsupportedMedia(f"{what}: no audio track (the data holds {', '.join(kinds)})")
            stream = container.streams.audio[0]
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1e6
            ctx = stream.codec_context
            return AudioFacts(duration if duration is not None and math.isfinite(duration) else None,
                              int(ctx.sample_rate or 0), int(ctx.channels or 0), str(ctx.name or ""))
    except UnsupportedMedia:
        raise
    except Exception as exc:  # noqa: BLE001 - anything FFmpeg cannot open is not audio we take
        raise UnsupportedMedia(f"{what}: not audio this server can decode ({_short(exc)})") from None


def decode_audio(data: bytes | Path, sampling_rate: int, *, start: float | None = None, end: float | None = None,
                 max_seconds: float = MAX_AUDIO_SECONDS, what: str = "audio") -> AudioClip:
    """Mono float32 samples of ``data``'s first audio stream at ``sampling_rate``, from ``start``
    to ``end`` seconds (of the stream; defaults: all of it).

    Raises :class:`UnsupportedMedia` (not audio, no audio track), :class:`InvalidInput` (broken
    data, an empty window) and :class:`MediaTooLarge` (more than ``max_seconds`` in the window).
    """
    import av

    if sampling_rate < 1:
        raise InvalidInput(f"{what}: sampling rate must be positive, got {sampling_rate}")
    lo = max(0.0, float(start or 0.0))
    hi = None if end is None else float(end)
    if hi is not None and hi <= lo:
        raise InvalidInput(f"{what}: the window {lo:g}..{hi:g} s is empty")
    try:
        source = str(data) if isinstance(data, Path) else io.BytesIO(data)
        container = av.open(source, mode="r", metadata_errors="ignore", timeout=PROBE_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001
        raise UnsupportedMedia(f"{what}: not audio this server can decode ({_short(exc)})") from None
    with container:
        if not container.streams.audio:
            kinds = sorted({s.type for s in container.streams}) or ["no streams"]
            raise UnsupportedMedia(f"{what}: no audio track (the data holds {', '.join(kinds)})")
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        source_rate, channels = int(ctx.sample_rate or 0), int(ctx.channels or 0)
        # Planar float at the source layout first: channels are averaged here, as librosa does
        # (FFmpeg's own downmix weighs them differently), then the rate is converted.
        resampler = av.AudioResampler(format="fltp", rate=sampling_rate)
        skip = int(round(lo * sampling_rate))
        keep = None if hi is None else int(round((hi - lo) * sampling_rate))
        limit = int(math.floor(max_seconds * sampling_rate)) + 1
        chunks: list[np.ndarray] = []
        seen = kept = 0
        try:
            for frame in _frames(container, stream):
                for out in resampler.resample(frame):
                    seen, kept = _take(out, chunks, seen, kept, skip, keep)
                if kept >= limit:
                    raise MediaTooLarge(f"{what}: the audio lasts more than {max_seconds:g} s; the limit is "
                                        f"{max_seconds:g} s")
                if keep is not None and kept >= keep:
                    break
            else:
                for out in resampler.resample(None):
                    seen, kept = _take(out, chunks, seen, kept, skip, keep)
        except (MediaTooLarge, InvalidInput):
            raise
        except Exception as exc:  # noqa: BLE001 - a broken stream is the client's data
            raise InvalidInput(f"{what}: not decodable audio ({_short(exc)})") from None
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if keep is not None:
        samples = samples[:keep]
    if samples.shape[0] > limit - 1:
        raise MediaTooLarge(f"{what}: the audio lasts more than {max_seconds:g} s; the limit is {max_seconds:g} s")
    if samples.shape[0] == 0:
        why = f"nothing between {lo:g} and {hi if hi is not None else 'the end'} s" if lo or hi else "no samples"
        raise InvalidInput(f"{what}: the audio has {why}")
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    return AudioClip(samples, sampling_rate, lo, lo + samples.shape[0] / sampling_rate, source_rate, channels,
                     str(ctx.name or ""))


def _frames(container: Any, stream: Any) -> Any:
    for packet in container.demux(stream):
        yield from packet.decode()


def _take(frame: Any, chunks: list[np.ndarray], seen: int, kept: int, skip: int,
          keep: int | None) -> tuple[int, int]:
    """Appends the part of ``frame`` (planar float) after ``skip`` samples, averaged to mono."""
    planes = frame.to_ndarray()
    mono = planes.mean(axis=0, dtype=np.float32) if planes.ndim == 2 else planes.astype(np.float32)
    n = mono.shape[0]
    first = max(0, skip - seen)
    if first < n and (keep is None or kept < keep):
        part = mono[first:]
        chunks.append(part)
        kept += part.shape[0]
    return seen + n, kept


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
