"""The sampling plan of a request's videos, as answers show it (our extension field ``video_plan``).

One entry per video, in the order the request names them: which frames the model
saw (their indices in the source and their timestamps), the size they were
resized to, how many prompt tokens they cost, the sampling rule that applied with
every default filled in, and whether the media cache served them. A video whose own audio
track went with it (``mm_processor_kwargs.use_audio_in_video``) shows that track's span under
``audio``: ``start``/``end`` seconds, ``sampling_rate``, ``num_samples``. Built from the
``video_info`` the media pipeline returns, so it describes exactly what reached
the engine.
"""

from __future__ import annotations

from typing import Any

from video_pipeline.contract import VideoInfo


def video_plan(infos: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``video_plan`` of an answer, from the request's video_info documents."""
    return [_entry(i, VideoInfo.from_dict(info)) for i, info in enumerate(infos)]


def _entry(index: int, info: VideoInfo) -> dict[str, Any]:
    entry = _video_entry(index, info)
    return {**entry, "audio": dict(info.audio)} if isinstance(info.audio, dict) else entry


def _video_entry(index: int, info: VideoInfo) -> dict[str, Any]:
    # video_plan's own keys; "source" repeats the source facts under vLLM's names, as video_info has them
    return {
        "index": index,
        "num_frames": int(info.num_frames or 0),
        "frame_indices": [int(x) for x in info.frames_indices or []],
        "timestamps": [float(x) for x in info.timestamps or []],
        "width": int(info.width or 0),
        "height": int(info.height or 0),
        "video_tokens": int(info.num_video_tokens or 0),
        "source": {
            "fps": info.fps,
            "duration": info.duration,
            "total_num_frames": info.total_num_frames,
        },
        "sampling": info.sampling.to_dict() if info.sampling is not None else None,
        "cache": info.cache,
    }


def video_tokens(infos: list[dict[str, Any]]) -> int:
    """The prompt tokens the videos will cost (the placeholders the processor expands them to)."""
    return sum(int(VideoInfo.from_dict(i).num_video_tokens or 0) for i in infos)
